"""``edgecl models``: statuses and their reasons derived from ``current`` and the history (no stale
"rolled back"), and a mistyped version is one error line naming the known versions."""

import json
import os
import subprocess
import sys

import pytest

from edgecl.cli import main
from edgecl.models.registry import Registry


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def state(tmp_path):
    """A registry with v0001..v0003 (plain files: no model needs to load here)."""
    reg = Registry(tmp_path / "state" / "models")
    for i in range(3):
        src = tmp_path / f"m{i}.onnx"
        src.write_bytes(bytes([i]) * 64)
        reg.stage({"model.onnx": src}, {"reason": f"gate passed {i + 1}"})
    return tmp_path / "state"


def _listed(capsys, state) -> dict:
    code, out, _ = _run(capsys, "models", "list", "--json", "--state-dir", state)
    assert code == 0
    return {v["version"]: (v["status"], v["reason"]) for v in json.loads(out.strip().splitlines()[-1])}


def _text_line(capsys, state, version) -> str:
    code, out, _ = _run(capsys, "models", "list", "--state-dir", state)
    assert code == 0
    return next(line for line in out.splitlines() if f" {version} " in line)


def test_rolled_back_marker_follows_the_current_pointer(capsys, state):
    reg = Registry(state / "models")
    reg.promote("v0001")
    reg.promote("v0002")
    assert reg.rollback() == "v0001"
    assert _listed(capsys, state) == {"v0001": ("promoted", "gate passed 1"),
                                      "v0002": ("retired", "rolled back"),
                                      "v0003": ("staged", "gate passed 3")}
    assert _text_line(capsys, state, "v0002").endswith("(rolled back)")
    reg.promote("v0002")  # promoted again: no longer rolled back
    assert _listed(capsys, state)["v0002"] == ("promoted", "gate passed 2")
    line = _text_line(capsys, state, "v0002")
    assert line.startswith("* v0002 promoted") and "rolled back" not in line
    reg.promote("v0003")  # superseded by an ordinary promotion: retired, not rolled back
    assert _listed(capsys, state) == {"v0001": ("retired", "gate passed 1"),
                                      "v0002": ("retired", "gate passed 2"),
                                      "v0003": ("promoted", "gate passed 3")}


def test_rollback_killed_after_its_switch_reads_rolled_back(capsys, state):
    reg = Registry(state / "models")
    for v in ("v0001", "v0002", "v0003"):
        reg.promote(v)
    # a rollback killed right after switching `current`: history and statuses not written
    os.symlink("v0002", state / "models" / ".current-tmp")
    os.replace(state / "models" / ".current-tmp", state / "models" / "current")
    assert _listed(capsys, state) == {"v0001": ("retired", "gate passed 1"),
                                      "v0002": ("promoted", "gate passed 2"),
                                      "v0003": ("retired", "rolled back")}


def test_legacy_rolled_back_reason_is_not_shown_on_a_current_version(capsys, state):
    reg = Registry(state / "models")
    reg.promote("v0001")
    path = state / "models" / "v0001" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.pop("status_reason", None)
    manifest["reason"] = "rolled back"  # how an older edgecl marked it, never cleared
    path.write_text(json.dumps(manifest))
    assert _listed(capsys, state)["v0001"] == ("promoted", "")


@pytest.mark.parametrize("argv", [("promote", "v0009"), ("promote", "v0009", "--no-load-check"),
                                  ("verify", "v0009")])
def test_unknown_version_is_one_line_naming_the_known_ones(capsys, state, argv):
    code, out, err = _run(capsys, "models", *argv, "--state-dir", state)
    assert code == 2 and out == ""
    assert err == "error: unknown version v0009 (known: v0001, v0002, v0003)\n"
    assert not (state / "models" / "current").exists()


def test_bad_version_names_and_files_are_one_line(capsys, state, tmp_path):
    code, _, err = _run(capsys, "models", "promote", "9", "--state-dir", state)  # 9 is v0009
    assert code == 2 and err == "error: unknown version v0009 (known: v0001, v0002, v0003)\n"
    code, _, err = _run(capsys, "models", "promote", "v9.1", "--state-dir", state)
    assert code == 2 and err == ("error: invalid model version name 'v9.1' (expected e.g. v0001; "
                                 "known: v0001, v0002, v0003)\n")
    code, _, err = _run(capsys, "models", "rollback", "--state-dir", state)
    assert code == 2 and err == "error: no earlier intact version to roll back to\n"
    code, _, err = _run(capsys, "models", "add", tmp_path / "nope.onnx", "--state-dir", state)
    assert code == 2 and err == f"error: cannot add {tmp_path / 'nope.onnx'}: file not found\n"
    code, _, err = _run(capsys, "models", "verify", "--state-dir", state)
    assert code == 2 and err == ("error: no current model version to verify; name one (known: "
                                 "v0001, v0002, v0003)\n")


def test_unknown_version_from_the_real_command_has_no_traceback(state):
    proc = subprocess.run([sys.executable, "-m", "edgecl.cli", "models", "promote", "v0042",
                           "--state-dir", str(state)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, YOLO_OFFLINE="1"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: unknown version v0042 (known: v0001, v0002, v0003)"


def test_verify_and_rollback_say_what_a_damaged_file_means(capsys, state, caplog):
    """A damaged calibrator was called 'an engine built from the version's model'; a rollback
    past a damaged version printed 'rolled back to v0001' without naming the one it skipped."""
    import json

    from edgecl.cli import main

    reg = Registry(state / "models")
    for version in ("v0001", "v0002", "v0003"):
        reg.promote(version)
    record = state / "models" / "v0003" / "round_record.json"
    manifest_path = state / "models" / "v0003" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    record.write_text('{"round": 3}')
    from edgecl.models.base import sha256_file

    manifest["files"]["round_record.json"] = sha256_file(record)
    manifest_path.write_text(json.dumps(manifest))
    record.write_text('{"round": 4}')
    assert main(["models", "verify", "--state-dir", str(state)]) == 1
    out = capsys.readouterr().out
    assert "round_record.json does not match its manifest sha256 (a record beside the model: " \
           "not used; the version still serves)" in out
    (state / "models" / "v0002" / "model.onnx").write_bytes(b"damaged")
    assert reg.rollback() == "v0001"
    assert "rollback: v0002 skipped, it cannot serve (" in caplog.text


def test_verify_all_checks_every_version_a_rollback_could_reach(capsys, state):
    """'models verify' checked the current version only: a damaged older version was found
    only when a rollback skipped it."""
    from edgecl.cli import main

    reg = Registry(state / "models")
    for version in ("v0001", "v0002", "v0003"):
        reg.promote(version)
    (state / "models" / "v0001" / "model.onnx").write_bytes(b"damaged")
    assert main(["models", "verify", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.strip() == "v0003: ok"
    assert main(["models", "verify", "--all", "--state-dir", str(state)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("v0001: ") and "model.onnx does not match its manifest sha256" in lines[0]
    assert lines[1:] == ["v0002: ok", "v0003: ok"]
    assert main(["models", "verify", "--all", "--json", "--state-dir", str(state)]) == 1
    import json

    said = capsys.readouterr()
    reports = json.loads(said.out)
    assert said.err.startswith("v0001: ") and "does not match its manifest sha256" in said.err
    assert [(r["version"], r["ok"], r["can_serve"]) for r in reports] == [
        ("v0001", False, False), ("v0002", True, True), ("v0003", True, True)]
    assert main(["models", "verify", "v0002", "--all", "--state-dir", str(state)]) == 2
