"""``edgecl models``: add loads and warms (or refuses with one line), promote/rollback, verify, prune."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecl.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """ONNX files as ``yolo export`` writes them: fixed batch 4, rectangular 160x256."""
    from ultralytics.engine.exporter import Exporter

    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_detection_model(2, names={0: "car", 1: "drone"})
    model.task = "detect"
    out = tmp_path_factory.mktemp("exports")
    made = {}
    for name, overrides in (("batch4", {"batch": 4, "imgsz": 64}), ("rect", {"batch": 1, "imgsz": (160, 256)})):
        with tempfile.TemporaryDirectory() as tmp:
            model.pt_path = str(Path(tmp) / "model.pt")
            produced = Exporter(overrides=dict(format="onnx", device="cpu", simplify=False, **overrides))(
                model=model)
            made[name] = out / f"{name}.onnx"
            made[name].write_bytes(Path(produced).read_bytes())
    return made


def _versions(capsys, state):
    code, out, _ = run_cli(capsys, "models", "list", "--json", "--state-dir", state)
    assert code == 0
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["garbage", "truncated", "text", "yaml", "engine", "classifier"])
def test_bad_model_files_are_refused_with_one_line(capsys, tmp_path, exports, kind):
    state = tmp_path / "state"
    path = tmp_path / ("m.yaml" if kind == "yaml" else "m.engine" if kind == "engine" else "m.onnx")
    if kind in ("garbage", "engine"):
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(exports["batch4"].read_bytes()[:40_000])
    elif kind in ("text", "yaml"):
        path.write_text("nc: 2\nthis is not a model\n")
    else:
        import onnx
        from onnx import TensorProto, helper

        shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, 10])
        graph = helper.make_graph(
            [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Expand", ["m", "shape"], ["output0"])], "g",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 10])], initializer=[shape])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        onnx.save(proto, str(path))
    code, out, err = run_cli(capsys, "models", "add", path, "--state-dir", state)
    assert code == 2
    assert err.startswith("error: cannot add") and err.count("\n") == 1, err
    assert {"yaml": "expected one of .pt, .onnx, .engine",
            "classifier": "not a YOLO detection head"}.get(kind, "") in err
    assert not state.exists()  # nothing staged, and no empty state directory left behind


def test_no_traceback_from_the_real_command(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("definitely not protobuf")
    proc = subprocess.run([sys.executable, "-m", "edgecl.cli", "models", "add", str(bad),
                           "--state-dir", str(tmp_path / "s")], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, YOLO_OFFLINE="1"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error: cannot add")


def test_fixed_batch_and_rectangular_exports_are_added_and_promoted(capsys, tmp_path, exports):
    state = tmp_path / "state"
    code, out, err = run_cli(capsys, "models", "add", exports["batch4"], "--state-dir", state)
    assert code == 0, err
    code, out, err = run_cli(capsys, "models", "add", exports["rect"], "--promote", "--state-dir", state)
    assert code == 0 and "promoted v0002" in out, err
    code, out, err = run_cli(capsys, "models", "promote", "v0001", "--state-dir", state)
    assert code == 0, err
    listed = {v["version"]: v["status"] for v in _versions(capsys, state)}
    assert listed == {"v0001": "promoted", "v0002": "retired"}
    manifests = {v: json.loads((state / "models" / v / "manifest.json").read_text()) for v in listed}
    assert manifests["v0001"]["input"] == {"hw": [64, 64], "batch": 4, "dtype": "float32"}
    assert manifests["v0002"]["input"] == {"hw": [160, 256], "batch": 1, "dtype": "float32"}
    assert manifests["v0001"]["classes"] == {"0": "car", "1": "drone"}


def test_promote_and_rollback_with_a_dangling_current(capsys, tmp_path, exports):
    state = tmp_path / "state"
    for name in ("batch4", "rect"):  # two files: the same one again adds nothing
        assert run_cli(capsys, "models", "add", exports[name], "--promote", "--state-dir", state)[0] == 0
    current = state / "models" / "current"
    os.remove(current)
    os.symlink("v0009", current)
    code, out, err = run_cli(capsys, "models", "promote", "v0009", "--state-dir", state)
    assert code == 2 and err.count("\n") == 1 and os.readlink(current) == "v0009"
    code, out, err = run_cli(capsys, "models", "list", "--state-dir", state)
    assert code == 0 and "*" not in out  # nothing is current, and the list says why
    assert err.startswith("warning: ") and "points at v0009, which does not exist" in err
    code, out, err = run_cli(capsys, "models", "rollback", "--state-dir", state)
    assert code == 0 and "rolled back to v0002" in out and os.readlink(current) == "v0002"


def test_adding_the_same_file_again_adds_nothing(capsys, tmp_path, exports):
    """Before: each add of one file staged another 5 MB copy (v0002, v0003, ...), which prune
    keeps while it is staged."""
    state = tmp_path / "state"
    assert run_cli(capsys, "models", "add", exports["batch4"], "--state-dir", state)[0] == 0
    code, out, err = run_cli(capsys, "models", "add", exports["batch4"], "--state-dir", state)
    assert (code, out) == (0, f"{exports['batch4']} is already v0001 (the same file): nothing added\n")
    code, out, err = run_cli(capsys, "models", "add", exports["batch4"], "--promote",
                             "--state-dir", state)
    assert code == 0 and out.splitlines()[-1] == "promoted v0001"
    assert sorted(p.name for p in (state / "models").iterdir() if p.name.startswith("v")) == ["v0001"]
    # a version whose copy was damaged since is no reason to refuse the good file
    stored = state / "models" / "v0001" / "model.onnx"
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    code, out, err = run_cli(capsys, "models", "add", exports["batch4"], "--state-dir", state)
    assert code == 0 and out.startswith("staged v0002")


def test_promoting_the_current_version_again_says_nothing_changed(capsys, tmp_path, exports):
    """Before: 'promoted v0001' for a version already current (a script's repeated step)."""
    state = tmp_path / "state"
    assert run_cli(capsys, "models", "add", exports["batch4"], "--promote", "--state-dir", state)[0] == 0
    history = (state / "models" / "history.json").read_text()
    code, out, err = run_cli(capsys, "models", "promote", "v0001", "--state-dir", state)
    assert (code, out, err) == (0, "v0001 is already the current version; nothing changed\n", "")
    assert (state / "models" / "history.json").read_text() == history


def test_a_version_typed_short_names_the_registrys_version(capsys, tmp_path, exports):
    """Before: 'invalid model version name 'v1' (expected e.g. v0001 ...)' for v1 or 1."""
    state = tmp_path / "state"
    for name in ("batch4", "rect"):
        assert run_cli(capsys, "models", "add", exports[name], "--state-dir", state)[0] == 0
    code, out, err = run_cli(capsys, "models", "promote", "v1", "--no-load-check", "--state-dir", state)
    assert (code, out) == (0, "promoted v0001\n")
    code, out, err = run_cli(capsys, "models", "promote", "2", "--no-load-check", "--state-dir", state)
    assert (code, out) == (0, "promoted v0002\n")
    code, out, err = run_cli(capsys, "models", "verify", "V00001", "--json", "--state-dir", state)
    assert code == 0 and json.loads(out)["version"] == "v0001"
    for typo in ("v0", "vv1", "v1a"):
        code, out, err = run_cli(capsys, "models", "promote", typo, "--state-dir", state)
        assert code == 2 and f"invalid model version name {typo!r}" in err and "v0001, v0002" in err


def test_verify_detects_flipped_bytes(capsys, tmp_path, exports):
    state = tmp_path / "state"
    assert run_cli(capsys, "models", "add", exports["batch4"], "--promote", "--state-dir", state)[0] == 0
    code, out, _ = run_cli(capsys, "models", "verify", "--json", "--state-dir", state)
    assert code == 0 and json.loads(out)["ok"] is True
    model = state / "models" / "v0001" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    code, out, _ = run_cli(capsys, "models", "verify", "--json", "--state-dir", state)
    assert code == 1 and "does not match its manifest sha256" in json.loads(out)["problems"][0]
    code, out, err = run_cli(capsys, "models", "promote", "v0001", "--state-dir", state)
    assert code == 2 and "integrity" in err


def test_prune_json(capsys, tmp_path):
    from edgecl.models.registry import Registry

    reg = Registry(tmp_path / "state" / "models")
    src = tmp_path / "m.onnx"
    for i in range(4):
        src.write_bytes(bytes([i]) * 100)
        reg.promote(reg.stage({"model.onnx": src}, {"parent": reg.current()}))
    code, out, err = run_cli(capsys, "models", "prune", "--json", "--state-dir", tmp_path / "state",
                             "export.keep_promoted=1")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["kept"] == ["v0003", "v0004"] and result["pruned"] == ["v0001", "v0002"]
    assert result["freed_bytes"] == 200
    assert result["engine_cache"] == {"kept": 0, "removed": 0, "freed_bytes": 0}


def _promoted_openvino_version(tmp_path, state):
    """A promoted version of placeholder files that serves ``openvino/model.xml``, beside its
    ``model.onnx``: ``(registry, version)``."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    from edgecl.models.registry import Registry

    files = {}
    for name in ("model.onnx", "openvino/model.xml", "openvino/model.bin"):
        files[name] = tmp_path / name.replace("/", "_")
        files[name].write_bytes(name.encode())
    registry = Registry(state / "models")
    version = registry.stage(files, {"serve": "openvino/model.xml", "serve_engine": "openvino"})
    registry.promote(version)
    return registry, version


def test_a_version_whose_served_engine_is_gone_serves_its_onnx_model_and_says_so(capsys, tmp_path):
    state = tmp_path / "state"
    registry, version = _promoted_openvino_version(tmp_path, state)
    (state / "models" / version / "openvino" / "model.xml").unlink()
    assert registry.model_path(version).name == "model.onnx"
    code, out, err = run_cli(capsys, "models", "list", "--state-dir", state)
    assert code == 0 and out.count("\n") == 1, out
    assert "openvino/model.xml is missing: ONNX Runtime FP32 serves instead" in out
    assert f"see 'edgecl models verify {version}'" in out
    row = _versions(capsys, state)[0]
    assert row["engine"] == "onnx" and "model.xml is missing" in row["serve_problem"]
    code, out, err = run_cli(capsys, "models", "verify", "--state-dir", state)
    assert code == 1 and "openvino/model.xml is missing (an engine built from" in out
    code, out, err = run_cli(capsys, "models", "verify", "--state-dir", state, "--json")
    assert code == 1 and json.loads(out.strip().splitlines()[-1])["can_serve"] is True


def test_a_version_whose_model_is_gone_says_it_cannot_serve_although_its_engine_is_there(
        capsys, tmp_path):
    """Before: 'models list' showed the version serving OpenVINO with no note, while a start
    refused it (its model.onnx is what it falls back to and is checked) and rolled back."""
    state = tmp_path / "state"
    registry, version = _promoted_openvino_version(tmp_path, state)
    (state / "models" / version / "model.onnx").unlink()
    code, out, err = run_cli(capsys, "models", "list", "--state-dir", state)
    assert code == 0 and "[cannot serve: " in out and "model.onnx is missing" in out, out
    assert "(a start rolls back from it)" in out


def test_verify_all_checks_a_version_whose_manifest_is_damaged(capsys, tmp_path):
    """Before: 'models verify --all' left such a version out and said 'ok' (exit 0), while
    'models list' showed it corrupt and a start rolled back from it."""
    from edgecl.models.registry import Registry

    state = tmp_path / "state"
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    registry = Registry(state / "models")
    good, bad = registry.stage({"model.onnx": onnx}, {}), registry.stage({"model.onnx": onnx}, {})
    (state / "models" / bad / "manifest.json").write_bytes(b"{\"files\": 3")
    code, out, err = run_cli(capsys, "models", "verify", "--all", "--state-dir", state)
    assert code == 1 and out.splitlines()[0] == f"{good}: ok"
    assert out.splitlines()[1].startswith(f"{bad}: corrupt manifest ")


def test_verify_of_a_current_pointing_at_a_deleted_version_says_so(capsys, tmp_path):
    """Before: 'error: unknown version v0001' (exit 2, nothing listed) of the very pointer
    it was asked to check, while status sent the operator to it."""
    import shutil

    state, version = _promoted_placeholder(tmp_path)
    shutil.rmtree(state / "models" / version)
    code, out, _ = run_cli(capsys, "models", "verify", "--state-dir", state)
    assert code == 1
    assert out.strip() == (f"current: {state / 'models' / 'current'} points at {version}, which "
                           f"does not exist; no earlier version is kept: 'edgecl models add "
                           f"--promote FILE' serves a copy you trust (the version's own "
                           f"model.onnx or model.pt, if intact)")


def _promoted_placeholder(tmp_path):
    """A state directory whose one promoted version is a placeholder ``model.onnx``:
    ``(state, version)``."""
    from edgecl.models.registry import Registry

    state = tmp_path / "state"
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    registry = Registry(state / "models")
    version = registry.stage({"model.onnx": onnx}, {})
    registry.promote(version)
    return state, version


def test_a_version_with_nothing_left_to_serve_says_why(capsys, tmp_path):
    state, version = _promoted_placeholder(tmp_path)
    (state / "models" / version / "model.onnx").unlink()
    code, out, err = run_cli(capsys, "models", "list", "--state-dir", state)
    assert code == 0 and "[cannot serve: " in out and "model.onnx is missing" in out, out


def test_reading_a_missing_state_dir_creates_nothing(tmp_path, run_edgecl):
    """A typo in --state-dir: list/verify/prune/rollback refuse in one line (before, `models
    list` created STATE/models/.lock); only `models add` starts a new state directory."""
    missing = tmp_path / "typo"
    for action in (["list"], ["verify"], ["prune"], ["rollback"]):
        code, _, err = run_edgecl(["models", *action, "--state-dir", str(missing)])
        assert code == 2 and err.strip().splitlines() == [
            f"error: {missing}: no such state directory (start a device there with 'edgecl run "
            f"--state-dir {missing} ...', 'edgecl models add MODEL.pt --promote --state-dir "
            f"{missing}' or 'edgecl labels import --state-dir {missing} FOLDER', "
            f"or check --state-dir)"]
    assert not missing.exists()


def test_reading_a_state_dir_with_no_registry_yet_writes_nothing(tmp_path, run_edgecl):
    """A device that has only imported labels has no STATE/models yet: `models list` and
    `models verify` read it as a registry with no version (before, both created
    STATE/models/.lock)."""
    state = tmp_path / "state"
    state.mkdir()
    code, out, _ = run_edgecl(["models", "list", "--state-dir", str(state)])
    assert code == 0 and out.startswith("no trained versions yet")
    code, out, _ = run_edgecl(["models", "list", "--json", "--state-dir", str(state)])
    assert code == 0 and json.loads(out) == []
    code, out, _ = run_edgecl(["models", "verify", "--state-dir", str(state)])
    # before: exit 2, 'no current model version to verify; name one', with none to name
    assert code == 0 and out == ("no model version yet: nothing to verify (a first round, or "
                                 "'edgecl models add PATH --promote', makes one)\n")
    code, out, _ = run_edgecl(["models", "verify", "--all", "--json", "--state-dir", str(state)])
    assert code == 0 and json.loads(out) == []
    assert list(state.iterdir()) == []


def test_a_refused_first_model_leaves_no_state_dir(tmp_path, run_edgecl):
    """`models add` of a missing or unusable file into a new state directory: refused, and the
    directory it would have started is not left behind (a later `models list` said 'no model
    versions yet' instead of 'no such state directory')."""
    state = tmp_path / "new"
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"junk")
    for path in (tmp_path / "missing.pt", bad):
        code, _, err = run_edgecl(["models", "add", str(path), "--state-dir", str(state)])
        assert code == 2 and err.count("\n") == 1 and not state.exists()


def test_a_first_model_whose_names_are_refused_leaves_no_state_dir(tmp_path, run_edgecl):
    """Before: an ONNX export whose class names clash ('Car' and 'car') as the first model made
    a new state directory holding a 10 MB rejected version (the .pt was refused before)."""
    from edgecl.models.export import export_onnx
    from edgecl.ultra import build_detection_model

    path = tmp_path / "dup.onnx"
    names = {0: "Car", 1: "car"}
    export_onnx(build_detection_model(2, names=names), path, imgsz=64, names=names)
    state = tmp_path / "new"
    code, _, err = run_edgecl(["models", "add", str(path), "--state-dir", str(state)])
    assert code == 2 and err.count("\n") == 1 and err.rstrip().endswith("; nothing was added")
    assert not state.exists()


def test_models_list_says_what_a_versions_acc_averages(capsys, tmp_path):
    """Before: 'acc=0.005 (accepted: ACC over the 2 classes with >= 5 held-out boxes 0.011)',
    two ACCs on one line with nothing to say that the first averages every held-out class."""
    from edgecl.models.registry import Registry

    state = tmp_path / "state"
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    registry = Registry(state / "models")
    per_class = {"car": 0.02, "person": 0.0, "bicycle": 0.0, "van": 0.0}
    registry.stage({"model.onnx": onnx}, {"metrics": {"acc": 0.005, "kind": "classes",
                                                      "per_class_map50_95": per_class}})
    registry.stage({"model.onnx": onnx}, {"metrics": {"acc": 0.25, "kind": "tasks",
                                                      "per_task_map50_95": {"t1": 0.25}}})
    registry.stage({"model.onnx": onnx}, {"metrics": {"acc": "0.3"}})  # hand-edited: not shown
    code, out, err = run_cli(capsys, "models", "list", "--state-dir", state)
    lines = out.splitlines()
    assert code == 0 and lines[0].endswith(" ACC 0.005 over 4 classes"), out
    assert lines[1].endswith(" ACC 0.250 over 1 task") and "ACC" not in lines[2], out


@pytest.mark.parametrize("field, value, said", [
    ("serve", "../v0001/model.onnx", "'serve' is '../v0001/model.onnx', none of its model files"),
    ("serve", 5, "'serve' is '5', none of its model files"),
    ("serve", "calibrator.json", "'serve' is 'calibrator.json', none of its model files"),
    ("files", {"model.onnx": 12}, "the sha256 of model.onnx is '12', not 64 hex digits")])
def test_verify_reports_manifest_fields_list_and_serving_read_otherwise(capsys, tmp_path, field,
                                                                        value, said):
    """Before: 'models list' flagged serve '../v0001/model.onnx' and sent the user to 'models
    verify', which said ok; serve 5 was shown as ONNX Runtime with no note; a numeric sha256
    read as a mismatch."""
    state, version = _promoted_placeholder(tmp_path)
    path = state / "models" / version / "manifest.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **{field: value})))
    code, out, _ = run_cli(capsys, "models", "verify", version, "--state-dir", state)
    assert code == 1 and f"manifest of {version}: {said}" in out, out
    assert "a record beside" not in out and "an engine built" not in out  # no note of another kind
    if field == "serve" and value == 5:
        code, out, _ = run_cli(capsys, "models", "list", "--state-dir", state)
        assert "[manifest 'serve' is '5', not a file name: ONNX Runtime" in out, out


def test_a_sha256_written_in_capitals_is_the_same_sha256(capsys, tmp_path):
    state, version = _promoted_placeholder(tmp_path)
    path = state / "models" / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"] = {k: v.upper() for k, v in manifest["files"].items()}
    path.write_text(json.dumps(manifest))
    code, out, _ = run_cli(capsys, "models", "verify", version, "--state-dir", state)
    assert code == 0 and out.strip() == f"{version}: ok", out  # before: "not 64 hex digits"


def test_an_engine_without_its_checkpoint_is_said_to_be_unlearnable_up_front(capsys, tmp_path,
                                                                            exports, caplog):
    """Before: 'models add --promote model.onnx' and 'run' said nothing; every round then failed
    with 'current version v0001 has no model.pt to fine-tune'."""
    from edgecl.config import load_config
    from edgecl.continual.round import unlearnable_current
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.models.registry import Registry
    from edgecl.ultra import build_detection_model

    state = tmp_path / "state"
    code, out, err = run_cli(capsys, "models", "add", exports["batch4"], "--promote",
                             "--state-dir", state)
    assert code == 0 and "promoted v0001" in out
    assert err == ("warning: v0001 holds no .pt checkpoint, so no learning round can fine-tune it "
                   "while it serves; set model.path to the ultralytics .pt checkpoint it was "
                   "exported from, or add that checkpoint instead\n")
    cfg = load_config(None, [f"state_dir={state}"])
    registry = Registry(state / "models")
    assert unlearnable_current(cfg, registry) == (
        "current version v0001 has no model.pt to fine-tune (an exported engine); set model.path "
        "to the ultralytics .pt checkpoint it was exported from, or promote that checkpoint "
        "('edgecl models add --promote FILE.pt')")
    pt = save_checkpoint(build_detection_model(2, names={0: "car", 1: "drone"}), tmp_path / "m.pt",
                         meta={"names": {0: "car", 1: "drone"}, "imgsz": 64})
    assert unlearnable_current(load_config(None, [f"state_dir={state}", f"model.path={pt}"]),
                               registry) is None
    code, out, err = run_cli(capsys, "models", "add", exports["rect"], "--state-dir", state,
                             f"model.path={pt}")
    assert code == 0 and err == ""
    caplog.set_level("WARNING")
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2

    cv2.imwrite(str(frames / "a.jpg"), np.full((64, 64, 3), 90, np.uint8))
    code, out, err = run_cli(capsys, "run", "--state-dir", state, "--frames", "1", "--source",
                             f"dir://{frames}", "server.enabled=false", "model.imgsz=64")
    assert code == 0, err
    said = [r.getMessage() for r in caplog.records if "no round can learn" in r.getMessage()]
    assert said == ["learner: no round can learn: current version v0001 has no model.pt to "
                    "fine-tune (an exported engine); set model.path to the ultralytics .pt "
                    "checkpoint it was exported from, or promote that checkpoint ('edgecl models "
                    "add --promote FILE.pt')"]


def test_an_add_refused_for_its_class_ids_stages_nothing(capsys, tmp_path):
    """Before: each 'models add' refused for its class ids staged a full copy of the model as a
    rejected version (kept up to export.keep_rejected), and said 'staged as v0002 and
    rejected'."""
    from edgecl.bench.console_load import tiny_model

    state = tmp_path / "state"
    first = tiny_model(tmp_path / "first.pt", {0: "car", 1: "truck"})
    swapped = tiny_model(tmp_path / "swapped.pt", {0: "truck", 1: "car"})
    code, _, err = run_cli(capsys, "models", "add", first, "--promote", "--state-dir", state)
    assert code == 0, err
    for _ in range(3):
        code, out, err = run_cli(capsys, "models", "add", swapped, "--state-dir", state)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"error: {swapped}: class id 0 is 'truck'")
        assert "; nothing was added (use a model trained with these class ids" in err
    assert sorted(p.name for p in (state / "models").glob("v0*")) == ["v0001"]
    assert json.loads((state / "classes.json").read_text())["classes"][0]["name"] == "car"


def test_an_add_whose_names_the_registry_cannot_take_stages_nothing(capsys, tmp_path):
    """Names the registry cannot take ('truck' beside 'Truck'): refused before a copy is
    staged (before: staged as v0002 and rejected)."""
    from edgecl.bench.console_load import tiny_model

    state = tmp_path / "state"
    first = tiny_model(tmp_path / "first.pt", {0: "car"})
    gap = tiny_model(tmp_path / "twice.pt", {0: "car", 1: "truck", 2: "Truck"})
    assert run_cli(capsys, "models", "add", first, "--promote", "--state-dir", state)[0] == 0
    code, out, err = run_cli(capsys, "models", "add", gap, "--state-dir", state)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "class names are not unique" in err and err.rstrip().endswith("; nothing was added")
    assert sorted(p.name for p in (state / "models").glob("v0*")) == ["v0001"]


def test_a_checkpoint_named_with_a_capital_suffix_is_the_base_of_rounds(tmp_path):
    from edgecl.config import load_config
    from edgecl.continual.round import base_checkpoint
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    pt = save_checkpoint(build_detection_model(2, names={0: "car", 1: "drone"}),
                         tmp_path / "MINE.PT", meta={"names": {0: "car", 1: "drone"}, "imgsz": 64})
    assert base_checkpoint(load_config(None, [f"model.path={pt}"])) == pt


def test_a_model_added_without_promote_is_named_by_run_and_no_round_trains_past_it(
        capsys, tmp_path):
    """Before: 'models add yours.pt' (no --promote) staged it; 'run' then said "no model" and
    'learn' trained a YOLO11n from scratch, promoted over the user's own, still staged, model."""
    import cv2

    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    names = {0: "car"}
    pt = save_checkpoint(build_detection_model(1, names=names), tmp_path / "yours.pt",
                         meta={"names": names, "imgsz": 64})
    state = tmp_path / "state"
    code, out, err = run_cli(capsys, "models", "add", pt, "--state-dir", state)
    assert code == 0 and "staged v0001" in out, err
    hint = (f"no model is serving: v0001 (yours.pt, added with 'edgecl models add') is staged, "
            f"not promoted; 'edgecl models promote v0001 --state-dir {state}' serves it and "
            f"rounds learn on top of it")
    images = tmp_path / "src" / "images"
    images.mkdir(parents=True)
    (tmp_path / "src" / "labels").mkdir()
    for k in range(12):
        cv2.imwrite(str(images / f"f{k}.jpg"), np.full((64, 64, 3), 20 * k, np.uint8))
        (tmp_path / "src" / "labels" / f"f{k}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    code, _, err = run_cli(capsys, "run", "--source", f"dir://{images.parent}", "--frames", "1",
                           "--state-dir", state)
    assert code == 2 and err.strip().splitlines()[-1] == f"error: {hint}"
    code, _, err = run_cli(capsys, "labels", "import", "--state-dir", state, images.parent,
                           "memory.holdout_fraction=0.5")
    assert code == 0, err
    code, out, err = run_cli(capsys, "learn", "--state-dir", state, "--json",
                             "memory.holdout_fraction=0.5", "learner.imgsz=64")
    assert code != 0 and (
        f"no round trains a model of its own past your own: v0001 (yours.pt, added with "
        f"'edgecl models add') is staged, not promoted; 'edgecl models promote v0001 "
        f"--state-dir {state}' makes rounds learn on top of it (model.path: yolo11n.yaml "
        f"learns from scratch)") in out + err
    assert _versions(capsys, state)[0]["status"] == "staged" and len(_versions(capsys, state)) == 1


def test_run_with_model_on_a_device_with_a_current_version_says_what_it_serves(
        capsys, caplog, tmp_path):
    """Before: a service started with '--model yours.pt' served that file after every restart,
    the device's learnt version unserved, said only in an info line."""
    import cv2

    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    names = {0: "car"}
    pt = save_checkpoint(build_detection_model(1, names=names), tmp_path / "yours.pt",
                         meta={"names": names, "imgsz": 64})
    state = tmp_path / "state"
    assert run_cli(capsys, "models", "add", "--promote", pt, "--state-dir", state)[0] == 0
    images = tmp_path / "imgs"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.full((64, 64, 3), 90, np.uint8))
    code, _, err = run_cli(capsys, "run", "--source", f"dir://{images}", "--model", pt,
                           "--state-dir", state, "--quiet", "learner.enabled=false",
                           "model.imgsz=64")
    assert code == 0, err
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
            and "--model" in r.getMessage()]
    assert said == [f"--model {pt} is served for this run, not the device's current version "
                    f"v0001 (what its rounds learnt, which they go on learning on top of); "
                    f"without --model a run serves v0001"]


def test_adding_a_checkpoint_the_learner_settings_do_not_fit_warns_at_once(capsys, tmp_path):
    """Before: a P6 checkpoint was added without a word, and 'run' then refused to start
    ("learner.imgsz=160 is not a multiple of 64")."""
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    names = {0: "car"}
    pt = save_checkpoint(build_detection_model(1, cfg="yolov8n-p6.yaml", names=names),
                         tmp_path / "p6.pt", meta={"names": names, "imgsz": 64})
    code, out, err = run_cli(capsys, "models", "add", pt, "--state-dir", tmp_path / "state",
                             "learner.imgsz=160")
    assert code == 0 and "staged v0001" in out
    assert err.strip() == ("warning: no round can fine-tune it with this configuration: "
                           "learner.imgsz=160 is not a multiple of 64, the largest stride of "
                           "p6.pt (a P6 model): set learner.imgsz to 128 or 192")


def test_rollback_says_the_samples_it_gives_back_wait_for_new_ones(capsys, tmp_path, exports):
    """A rollback's retired versions had learnt samples 1-10: the command says they are learnt
    again by the next round, which they no longer start by themselves."""
    from edgecl.continual.round_state import LearnerState, load_state, save_state

    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample

    state = tmp_path / "state"
    for name in ("batch4", "rect"):  # two files: the same one again adds nothing
        assert run_cli(capsys, "models", "add", exports[name], "--promote", "--state-dir", state)[0] == 0
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.3, seed=2),
                      names={0: "car"}) as memory:
        for i in range(12):
            memory.add(Sample(np.full((24, 24, 3), i * 20, np.uint8),
                              np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32), task="t0"))
        training = sum(r.id <= 10 for r in memory.records(held_out=False))
    assert 0 < training < 10  # some of ids 1-10 are held out, which no round learns
    save_state(state, LearnerState(round=2, last_sample_id=10))
    code, out, err = run_cli(capsys, "models", "rollback", "--state-dir", state)
    assert code == 0, err
    assert out.splitlines() == [
        "rolled back to v0001",
        f"the {training} training sample(s) the versions rolled back had learnt (ids 1-10, "
        f"held-out ones aside) are learnt again by the next round, which starts when new "
        f"samples arrive or on 'edgecl learn'; 'edgecl labels withdraw ID' takes a wrong answer "
        f"out first"]
    progress = load_state(state)
    assert (progress.last_sample_id, progress.trigger_from_id) == (0, 10)


def test_a_model_file_named_with_a_terminal_escape_is_shown_escaped(capsys, tmp_path, exports):
    """Before: 'models add' printed 'staged v0001 from m<ESC>[2J<U+202E>...' raw: the terminal
    cleared, and the rest read backwards (the skip lines of imports were already escaped)."""
    path = tmp_path / "m\x1b[2J\u202ekp.onnx"
    path.write_bytes(exports["batch4"].read_bytes())
    code, out, err = run_cli(capsys, "models", "add", path, "--state-dir", tmp_path / "state")
    assert code == 0 and "\x1b" not in out and "\u202e" not in out
    assert out.splitlines()[0] == f"staged v0001 from {tmp_path}/m\\x1b[2J\\u202ekp.onnx"


def test_models_list_names_the_fleet_round_a_version_came_from(tmp_path, capsys):
    """Before: a fleet-adopted version read like a local round's in 'models list' (only
    /api/models gave its origin)."""
    from edgecl.models.registry import Registry

    state = tmp_path / "state"
    src = tmp_path / "m.onnx"
    src.write_bytes(b"onnx")
    registry = Registry(state / "models")
    local = registry.stage({"model.onnx": src}, {"origin": "round 1"})
    fleet = registry.stage({"model.onnx": src}, {"origin": "fleet round 3", "parent": local,
                                                  "fleet": {"round": 3,
                                                            "server": "10.0.0.5:9092"}})
    code, out, _ = run_cli(capsys, "models", "list", "--state-dir", state)
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and "[fleet round 3 of 10.0.0.5:9092]" in lines[fleet]
    assert "fleet" not in lines[local]
    code, out, _ = run_cli(capsys, "models", "list", "--state-dir", state, "--json")
    assert {v["version"]: v["origin"] for v in json.loads(out.splitlines()[-1])} == {
        local: "round 1", fleet: "fleet round 3"}


def test_a_staged_candidate_can_be_discarded_and_a_served_version_cannot(capsys, tmp_path,
                                                                          exports):
    """Before: a candidate added without --promote stayed staged for the device's life (prune
    keeps a person's staged versions) and no command rejected it."""
    state = tmp_path / "state"
    assert run_cli(capsys, "models", "add", exports["batch4"], "--promote", "--state-dir", state)[0] == 0
    assert run_cli(capsys, "models", "add", exports["rect"], "--state-dir", state)[0] == 0
    code, out, err = run_cli(capsys, "models", "discard", "2", "--state-dir", state)
    assert (code, out) == (0, "discarded v0002: no start promotes it, and 'edgecl models prune' "
                              "removes its files with the rejected versions beyond "
                              "export.keep_rejected\n")
    listed = {v["version"]: (v["status"], v.get("reason")) for v in _versions(capsys, state)}
    assert listed["v0002"] == ("rejected", "discarded by a person (edgecl models discard)")
    for version, why in (("v0002", "cannot discard v0002: it is rejected"),
                         ("v0001", "cannot discard v0001: it is the current version (roll back "
                                   "first: edgecl models rollback)"),
                         ("v0009", "unknown version v0009")):
        code, out, err = run_cli(capsys, "models", "discard", version, "--state-dir", state)
        assert code == 2 and why in err and "Traceback" not in err
    assert run_cli(capsys, "models", "prune", "--state-dir", state, "export.keep_rejected=0")[0] == 0
    assert not (state / "models" / "v0002" / "model.onnx").exists()


def test_adding_a_pipe_or_a_device_is_refused_without_reading_it(tmp_path, run_edgecl):
    """Before: 'models add /dev/zero' (or a link to it, or a named pipe) read it for its hash
    for ever, with no word."""
    import os

    os.mkfifo(tmp_path / "ff.onnx")
    (tmp_path / "zero.pt").symlink_to("/dev/zero")
    for path in (tmp_path / "ff.onnx", tmp_path / "zero.pt"):
        code, _, err = run_edgecl(["models", "add", str(path), "--state-dir",
                                   str(tmp_path / "state")])
        assert code == 2 and err.strip() == (f"error: cannot add: {path} is not a regular file "
                                             f"(a FIFO, a device or a socket)")
    assert not (tmp_path / "state").exists()
