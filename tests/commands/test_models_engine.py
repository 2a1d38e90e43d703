"""``edgecl models list``: the engine that serves each version, and the INT8 gate's say (text and
--json), from hand-made manifests (placeholder model files: nothing loads)."""

from __future__ import annotations

import json
import re

import pytest

from edgecl.cli import main
from edgecl.models.registry import Registry

REFUSED = "class truck: mAP50-95 0.361 -> 0.313 (drop 0.048 > 0.01)"
ACCEPTED = "every class within 0.01 of FP32 (largest drop 0.000, class car)"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def state(tmp_path, monkeypatch):
    """v0001 old manifest (onnx), v0002 onnx with INT8 refused, v0003 rejected (model.pt only),
    v0004 openvino-int8 accepted and current."""
    monkeypatch.setattr("edgecl.models.registry._runnable_here", lambda name: True)
    reg = Registry(tmp_path / "state" / "models")

    def stage(names, meta, status="staged"):
        files = {}
        for i, name in enumerate(names):
            src = tmp_path / f"src-{len(reg.versions())}-{i}"
            src.write_bytes(name.encode())
            files[name] = src
        return reg.stage(files, meta, status=status)

    stage(["model.pt", "model.onnx"], {"reason": "initial"})
    stage(["model.pt", "model.onnx"], {
        "reason": "gate passed", "serve": "model.onnx", "serve_engine": "onnx",
        "int8": {"accepted": False, "engine": "onnx-int8", "reason": REFUSED, "drops": {"truck": 0.048}}})
    stage(["model.pt"], {"reason": "gate: truck AP fell"}, status="rejected")
    stage(["model.pt", "model.onnx", "openvino-int8/model.xml", "openvino-int8/model.bin"], {
        "reason": "gate passed", "serve": "openvino-int8/model.xml", "serve_engine": "openvino-int8",
        "int8": {"accepted": True, "engine": "openvino-int8", "reason": ACCEPTED, "drops": {"car": 0.0}}})
    reg.promote("v0004")
    return tmp_path / "state"


def test_models_list_json_has_engine_and_int8(capsys, state):
    code, out, _ = _run(capsys, "models", "list", "--json", "--state-dir", state)
    assert code == 0
    rows = {r["version"]: r for r in json.loads(out.strip().splitlines()[-1])}
    assert {v: (r["engine"], r["engine_label"], r["engine_file"]) for v, r in rows.items()} == {
        "v0001": ("onnx", "ONNX Runtime", "model.onnx"),
        "v0002": ("onnx", "ONNX Runtime FP32", "model.onnx"),
        "v0003": (None, None, None),
        "v0004": ("openvino-int8", "OpenVINO INT8", "openvino-int8/model.xml"),
    }
    assert rows["v0001"]["int8"] is None and rows["v0003"]["int8"] is None
    assert rows["v0002"]["int8"] == {"accepted": False, "reason": REFUSED, "refused": True}
    assert rows["v0004"]["int8"] == {"accepted": True, "reason": ACCEPTED, "refused": False}
    assert rows["v0004"]["status"] == "promoted" and rows["v0004"]["current"] is True


def test_models_list_text_has_an_engine_column(capsys, state):
    code, out, _ = _run(capsys, "models", "list", "--state-dir", state)
    assert code == 0
    lines = {line[2:7]: line for line in out.splitlines()}
    assert lines["v0004"].startswith("* v0004 promoted  OpenVINO INT8 ")
    assert lines["v0002"].startswith("  v0002 staged    ONNX Runtime FP32 ")
    assert lines["v0002"].endswith(f"(gate passed) [INT8 refused: {REFUSED}]")
    assert lines["v0001"].startswith("  v0001 staged    ONNX Runtime      ")
    assert lines["v0003"].startswith("  v0003 rejected  -                 ")
    assert "INT8 refused" not in lines["v0004"]
    # the engine column has one width: the creation times line up
    assert len({re.search(r"\d{4}-\d\d-\d\dT", line).start() for line in lines.values()}) == 1


def test_models_list_text_shows_a_run_of_pruned_versions_as_one_line(capsys, tmp_path, monkeypatch):
    """Before: a device that learnt for months listed up to 100 pruned versions, one per line,
    above the few that serve."""
    monkeypatch.setattr("edgecl.models.registry._runnable_here", lambda name: True)
    reg = Registry(tmp_path / "state" / "models")
    for i in range(6):
        src = tmp_path / f"m{i}.pt"
        src.write_bytes(b"x%d" % i)
        reg.promote(reg.stage({"model.pt": src}, {"reason": "gate passed"}))
    reg.prune(keep_promoted=2)   # keeps v0005 (parent) and v0006 (current)
    code, out, _ = _run(capsys, "models", "list", "--state-dir", tmp_path / "state")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3, out
    assert lines[0] == "  v0001..v0004 pruned    (4 versions whose files were removed; --all lists each)"
    assert lines[1].startswith("  v0005 ") and lines[2].startswith("* v0006 ")
    code, out, _ = _run(capsys, "models", "list", "--all", "--state-dir", tmp_path / "state")
    assert [line[2:7] for line in out.splitlines()] == [f"v000{i}" for i in range(1, 7)]
