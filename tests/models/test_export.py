"""ONNX export through ultralytics' Exporter: I/O names, shapes, metadata, atomic replace."""

from __future__ import annotations

import ast
import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecl import __version__
from edgecl.models.export import export_onnx
from edgecl.ultra import build_detection_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_export_runs_in_onnxruntime_with_metadata(tmp_path):
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    model = build_detection_model(3, names={0: "a", 1: "b", 2: "c"})
    before = copy.deepcopy(model.state_dict())
    path = tmp_path / "v1" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"old version")
    stats = {}
    out = export_onnx(model, path, imgsz=64, names={0: "car", 1: "truck", 2: "drone"}, stats=stats)
    assert out == path and os.listdir(path.parent) == ["model.onnx"]
    assert stats["export_s"] > 0 and stats["ider_folded"] is False
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert ast.literal_eval(meta["names"]) == {0: "car", 1: "truck", 2: "drone"}
    assert ast.literal_eval(meta["imgsz"]) == [64, 64]
    assert meta["stride"] == "32" and meta["task"] == "detect"
    assert meta["edgecl_version"] == __version__
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, list(inp.shape)) == ("images", [1, 3, 64, 64])
    anchors = 8 * 8 + 4 * 4 + 2 * 2  # strides 8, 16, 32 at 64 px
    assert (outp.name, list(outp.shape)) == ("output0", [1, 4 + 3, anchors])
    x = torch.rand(1, 3, 64, 64)
    got = session.run(None, {"images": x.numpy()})[0]
    model.eval()
    with torch.no_grad():
        expected = model(x)[0].numpy()
    np.testing.assert_allclose(got[:, 4:], expected[:, 4:], atol=1e-4)
    np.testing.assert_allclose(got[:, :4], expected[:, :4], atol=1e-2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.names == {0: "a", 1: "b", 2: "c"}


def test_the_exporters_scratch_folder_is_beside_the_destination(tmp_path, monkeypatch):
    """Before: in the system temp folder, where a learner killed mid-export (OOM killer,
    kill -9) left a 10 MB model.onnx for good; beside the destination (a round's work folder)
    the next round clears it."""
    import tempfile

    from ultralytics.engine import exporter

    seen = []

    class Stopped(Exception):
        pass

    def exporting(self, model=None):
        seen.append(Path(model.pt_path).parent)
        raise Stopped

    monkeypatch.setattr(exporter.Exporter, "__call__", exporting)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    with pytest.raises(Stopped):
        export_onnx(build_detection_model(1), tmp_path / "work" / "model.onnx", imgsz=64)
    assert seen[0].parent == tmp_path / "work" and seen[0].name.startswith(".edgecl-export-")
    pytest.importorskip("openvino", reason="openvino is not installed")
    from edgecl.models.export_openvino import ExportError, export_openvino

    with pytest.raises((Stopped, ExportError)):
        export_openvino(build_detection_model(1), tmp_path / "work" / "openvino", imgsz=64)
    assert seen[1].parent == tmp_path / "work" and seen[1].name.startswith(".edgecl-export-ov-")
    assert not any((tmp_path / "system-tmp").iterdir())


def test_a_failed_export_leaves_no_ultralytics_failure_line(tmp_path, monkeypatch, capfd):
    """Before: a full disk during the export wrote ultralytics' own line, with an emoji and
    terminal colour codes, to the log ("ERROR ❌ \\x1b[34m\\x1b[1mONNX:\\x1b[0m export failure
    ..."), above edgecl's one line saying the same."""
    import errno

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        export_onnx(build_detection_model(1), tmp_path / "model.onnx", imgsz=64)
    out, err = capfd.readouterr()
    assert "export failure" not in out + err and "\x1b[" not in out + err
    import logging

    assert not logging.getLogger("ultralytics").filters  # only for the export's time
