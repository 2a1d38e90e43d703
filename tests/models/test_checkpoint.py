"""Checkpoints: ultralytics layout, atomic writes, IDER adapters, one-line load errors."""

from __future__ import annotations

import os

import pytest
import torch

from edgecl.calibration.ider import attach_prior_adapter, has_prior_adapter, prior_adapters
from edgecl.errors import ModelLoadError
from edgecl.models.checkpoint import load_checkpoint, save_checkpoint
from edgecl.ultra import build_detection_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _out(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)[0]


def test_round_trip_plain(tmp_path):
    torch.manual_seed(0)
    model = build_detection_model(2, names={0: "car", 1: "drone"})
    x = torch.rand(1, 3, 64, 64)
    path = save_checkpoint(model, tmp_path / "v1" / "model.pt", meta={"imgsz": 64, "parent": None})
    assert os.listdir(path.parent) == ["model.pt"]  # no temp file left behind
    raw = torch.load(path, map_location="cpu", weights_only=False)
    assert {"model", "train_args", "date", "version", "edgecl"} <= set(raw)
    loaded, meta = load_checkpoint(path)
    assert torch.equal(_out(loaded, x), _out(model, x))
    assert meta["names"] == {0: "car", 1: "drone"} and meta["imgsz"] == 64
    assert meta["ider_adapter"] is False and meta["parent"] is None


def test_round_trip_ider_adapted(tmp_path):
    torch.manual_seed(0)
    model = attach_prior_adapter(build_detection_model(3))
    for adapter in prior_adapters(model):
        torch.nn.init.normal_(adapter.adapter.weight)
    x = torch.rand(1, 3, 64, 64)
    path = save_checkpoint(model, tmp_path / "model.pt", meta={"ider": True})
    loaded, meta = load_checkpoint(path)
    assert has_prior_adapter(loaded) and meta["ider_adapter"] is True and meta["ider"] is True
    assert torch.equal(_out(loaded, x), _out(model, x))


def test_failed_save_keeps_old_file(tmp_path, monkeypatch):
    model = build_detection_model(2)
    path = save_checkpoint(model, tmp_path / "model.pt", meta={"n": 1})
    old = path.read_bytes()

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, path, meta={"n": 2})
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["model.pt"]


@pytest.mark.parametrize("content", ["truncated", "random", "tensor", "no_model"])
def test_bad_files_raise_one_line_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        good = save_checkpoint(build_detection_model(2), tmp_path / "good.pt", meta={})
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif content == "random":
        path.write_bytes(os.urandom(4096))
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        torch.save({"epoch": 3}, path)
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("change, match", [
    (lambda c: c.update(edgecl="xyz"), "'edgecl' metadata is not a mapping"),
    (lambda c: c.update(edgecl=[1, 2]), "'edgecl' metadata is not a mapping"),
    (lambda c: c.update(edgecl={"names": {"x": None}}), "class id 'x' is not an integer"),
    (lambda c: c.update(edgecl={"names": {0: None}}), "class 0 has no usable name"),
    (lambda c: c.update(edgecl={"names": 5}), "class names are a int"),
    (lambda c: c.update(edgecl={"imgsz": "big"}), "'imgsz' metadata 'big'"),
    (lambda c: c.update(edgecl={"imgsz": 10 ** 9}), "not a positive image size"),
])
def test_odd_checkpoint_metadata_is_one_line(tmp_path, change, match):
    path = save_checkpoint(build_detection_model(2, names={0: "car", 1: "drone"}),
                           tmp_path / "m.pt", meta={"imgsz": 64})
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    change(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(ModelLoadError, match=match) as err:  # before: ValueError, TypeError, ...
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_list_names_and_no_names_load(tmp_path):
    path = save_checkpoint(build_detection_model(2, names={0: "car", 1: "drone"}),
                           tmp_path / "m.pt", meta={"imgsz": 64})
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    del ckpt["edgecl"]
    ckpt["model"].names = ["car", "drone"]  # YOLOv5-style checkpoints keep a list
    torch.save(ckpt, path)
    model, meta = load_checkpoint(path)
    assert meta["names"] == model.names == {0: "car", 1: "drone"}
    ckpt["model"].names = None
    torch.save(ckpt, path)
    assert load_checkpoint(path)[1]["names"] == {0: "0", 1: "1"}  # numbered as ultralytics does
