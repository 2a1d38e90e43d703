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
    assert "report a bug" not in message and "miniz" not in message  # torch's, not the user's
    if content == "truncated":  # before: torch's 'PytorchStreamReader failed ... miniz error'
        assert message == (f"cannot read checkpoint {path}: the file is cut short (its zip "
                           f"archive ends before its central directory: a copy or a download "
                           f"that did not finish); copy it again from where it was made")


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


@pytest.mark.parametrize("train_args, expected", [
    ({"imgsz": 128}, 128),          # what ultralytics' trainer records
    ({"imgsz": 100}, 128),          # rounded up to the stride, as ultralytics trains it
    ({"imgsz": [96, 128]}, 128),    # a rectangular size: its longer side
    ({"imgsz": "big"}, None),       # unusable: the configuration's model.imgsz applies
    (None, None),
])
def test_an_ultralytics_checkpoint_is_served_at_the_size_it_was_trained_at(tmp_path, train_args,
                                                                            expected):
    """Before, a user's 640 px checkpoint without edgecl metadata was silently served at the
    configuration's model.imgsz (160)."""
    path = save_checkpoint(build_detection_model(2, names={0: "car", 1: "drone"}),
                           tmp_path / "m.pt", meta={"imgsz": 64})
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    del ckpt["edgecl"]
    ckpt["model"].args = {}
    if train_args is not None:
        ckpt["train_args"] = train_args
    torch.save(ckpt, path)
    assert load_checkpoint(path)[1].get("imgsz") == expected
    assert load_checkpoint(save_checkpoint(build_detection_model(1, names={0: "car"}),
                                           tmp_path / "e.pt", meta={"imgsz": 64}))[1]["imgsz"] == 64


# --- checkpoints of other kinds of models: refused with one line wherever a .pt enters ---------

EXPECTED = ("edgecl runs object detection models "
            "(ultralytics DetectionModel: YOLOv5u/v8/v9/v10/11/12/26)")


def _other_model(kind: str):
    """A tiny model of another ultralytics task built from its packaged yaml (no download)."""
    from ultralytics.nn import tasks

    cls, cfg = {"seg": (tasks.SegmentationModel, "yolo11n-seg.yaml"),
                "seg26": (tasks.SegmentationModel, "yolo26n-seg.yaml"),
                "pose": (tasks.PoseModel, "yolo11n-pose.yaml"),
                "obb": (tasks.OBBModel, "yolo11n-obb.yaml"),
                "cls": (tasks.ClassificationModel, "yolo11n-cls.yaml"),
                "rtdetr": (tasks.RTDETRDetectionModel, "rtdetr-l.yaml")}[kind]
    model = cls(cfg, nc=2, verbose=False)
    model.names = {0: "car", 1: "drone"}
    return model


OTHER_KINDS = {  # kind -> what the refusal says the file is
    "seg": "a segmentation model (SegmentationModel)",
    "seg26": "a segmentation model (SegmentationModel)",
    "pose": "a pose model (PoseModel)",
    "obb": "an oriented-box (OBB) model (OBBModel)",
    "cls": "a classification model (ClassificationModel)",
    "rtdetr": "an RT-DETR transformer detector (RTDETRDetectionModel)",
}


@pytest.fixture(scope="module")
def other_checkpoints(tmp_path_factory):
    """Each kind saved as ultralytics' trainer saves ``best.pt`` (the model in ``ema``, half),
    under a neutral file name: recognition is by class, not by name."""
    out = tmp_path_factory.mktemp("other_kinds")
    paths = {}
    for kind in OTHER_KINDS:
        model = _other_model(kind)
        task = {"seg": "segment", "seg26": "segment", "pose": "pose", "obb": "obb",
                "cls": "classify", "rtdetr": "detect"}[kind]
        paths[kind] = out / f"best_{kind}.pt"
        torch.save({"model": None, "ema": model.half(), "train_args": {"task": task, "imgsz": 64},
                    "date": "2026-01-01", "version": "8.4.0"}, paths[kind])
    return paths


@pytest.mark.parametrize("kind", sorted(OTHER_KINDS))
def test_other_kinds_of_checkpoint_are_refused_at_load_with_one_line(other_checkpoints, kind):
    """Before: seg and cls failed at warm-up (AttributeError, IndexError), pose and OBB were
    served as detectors (keypoints, rotation dropped), RT-DETR served normalised boxes."""
    path = other_checkpoints[kind]
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"cannot load {path}: {OTHER_KINDS[kind]}; {EXPECTED}"


@pytest.mark.parametrize("kind", sorted(OTHER_KINDS))
def test_models_add_refuses_other_kinds_with_one_line(other_checkpoints, kind, run_edgecl,
                                                      tmp_path):
    path = other_checkpoints[kind]
    code, out, err = run_edgecl(["models", "add", "--state-dir", tmp_path / "s", path])
    assert code == 2 and out == ""
    assert err == f"error: cannot load {path}: {OTHER_KINDS[kind]}; {EXPECTED}\n"
    assert not (tmp_path / "s" / "models").is_dir() or not any(
        p.name.startswith("v") for p in (tmp_path / "s" / "models").iterdir())


def test_run_refuses_a_pose_checkpoint_before_serving(other_checkpoints, run_edgecl, tmp_path):
    """``--model`` (and ``model.path``, which a pretrained start also seeds the learner from)."""
    path = other_checkpoints["pose"]
    frames = tmp_path / "frames"
    frames.mkdir()
    code, _, err = run_edgecl(["run", "--state-dir", tmp_path / "s", "--source",
                               f"dir://{frames}", "--frames", 1, f"model.path={path}"])
    assert code == 2
    assert err.strip().splitlines()[-1] == f"error: cannot load {path}: a pose model (PoseModel); {EXPECTED}"


@pytest.mark.parametrize("cfg, what", [
    ("yolo11n-pose.yaml", "a pose model (its head is Pose)"),
    ("yolo11n-seg.yaml", "a segmentation model (its head is Segment)"),
    # before: "(DetectionModel with a Classify head)", which a classifier is not
    ("yolo11n-cls.yaml", "a classification model (its head is Classify)"),
])
def test_a_detection_model_with_another_head_is_refused(tmp_path, cfg, what):
    """A DetectionModel built from a pose/seg yaml (``--model yolo11n-pose.yaml``) or pickled
    that way keeps its head: refused by the head's class."""
    from edgecl.models.backends import load_backend

    with pytest.raises(ModelLoadError) as info:
        load_backend(cfg)
    assert str(info.value) == f"cannot load {cfg}: {what}; {EXPECTED}"
    path = tmp_path / "odd.pt"
    torch.save({"model": build_detection_model(2, cfg=cfg)}, path)
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"cannot load {path}: {what}; {EXPECTED}"


@pytest.mark.parametrize("cfg", ["yolo11n.yaml", "yolov8n.yaml", "yolov10n.yaml", "yolo26n.yaml"])
def test_detection_checkpoints_of_every_family_still_load(tmp_path, cfg):
    from edgecl.models.checkpoint import detection_model_problem

    model = build_detection_model(2, cfg=cfg)
    assert detection_model_problem(model) is None
    path = tmp_path / "m.pt"
    torch.save({"model": model}, path)
    assert load_checkpoint(path)[1]["names"] == {0: "0", 1: "1"}


def test_a_detector_without_its_architecture_is_refused_at_load(tmp_path):
    """Before: a checkpoint whose DetectionModel had lost its 'yaml' was added, served and
    trained, and the round's ONNX export ended in a traceback ("'DetectionModel' object has no
    attribute 'yaml'")."""
    from edgecl.ultra import build_detection_model

    model = build_detection_model(2, names={0: "car", 1: "drone"})
    del model.yaml
    path = tmp_path / "no_yaml.pt"
    torch.save({"model": model, "train_args": {"imgsz": 64}}, path)
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"cannot load {path}: a DetectionModel without its architecture ('yaml'), from which "
        f"ultralytics exports and rebuilds it: save it with ultralytics (model.save or its "
        f"trainer); {EXPECTED}")


@pytest.mark.parametrize("channels", [1, 4])
def test_a_detector_for_other_than_3_channel_images_is_refused_at_load(tmp_path, channels):
    """Before: a 1-channel (thermal) or 4-channel model was added, then every frame failed in
    PyTorch: "weight of size [16, 1, 3, 3], expected input[1, 3, 64, 64] to have 1 channels"."""
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolo11n.yaml", ch=channels, nc=2, verbose=False)
    model.names = {0: "car", 1: "person"}
    path = tmp_path / f"ch{channels}.pt"
    torch.save({"model": model, "train_args": {"imgsz": 64}}, path)
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"cannot load {path}: a DetectionModel for {channels}-channel images; edgecl feeds every "
        f"model 3-channel frames (a thermal camera's single channel is repeated three times, as "
        f"ultralytics reads such images): train it with ch=3; {EXPECTED}")
