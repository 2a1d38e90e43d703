"""A user's first model: every way ultralytics (or a user) writes a .pt, and the files that are
not one, give a model or one line saying what the file is; class names seed a registry that
agrees with the model on the next start."""

from __future__ import annotations

import copy
import sys
import types
import unicodedata
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from edgecl.errors import LabelError, ModelLoadError
from edgecl.models.checkpoint import load_checkpoint
from edgecl.models.classes import ClassRegistry, names_conflict
from edgecl.ultra import build_detection_model

NAMES = {0: "car", 1: "drone"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return build_detection_model(2, names=dict(NAMES))


def _trainer_layout(net, **changes) -> dict:
    """A checkpoint as ultralytics' trainer writes ``last.pt``/``best.pt`` (the model half)."""
    ckpt = {"epoch": -1, "best_fitness": None, "model": copy.deepcopy(net).half(), "ema": None,
            "updates": None, "optimizer": None, "train_args": {"imgsz": 64, "task": "detect"},
            "train_metrics": None, "date": "2026-01-01T00:00:00", "version": "8.4.0"}
    ckpt.update(changes)
    return ckpt


def _message(path) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# --- what ultralytics and users write -------------------------------------------------------

def test_a_bare_detection_model_saved_with_torch_save_loads(tmp_path, detector):
    """``torch.save(yolo.model, PATH)``; before: "is not a model checkpoint (found DetectionModel)"."""
    path = tmp_path / "bare.pt"
    torch.save(copy.deepcopy(detector), path)
    model, meta = load_checkpoint(path)
    assert type(model).__name__ == "DetectionModel" and meta["names"] == NAMES


def test_a_file_named_like_an_ultralytics_asset_is_the_file_itself(tmp_path, detector):
    """ultralytics' ``torch_safe_load`` resolves a path through ``attempt_download_asset``: a
    user's ``yolov5n.pt`` became a download of the COCO ``yolov5nu.pt``, or failed offline."""
    folder = tmp_path / "v5"  # no 'u' in the path, as the asset rewrite wants
    folder.mkdir()
    path = folder / "yolov5n.pt"
    torch.save(_trainer_layout(detector), path)
    assert load_checkpoint(path)[1]["names"] == NAMES
    assert sorted(p.name for p in folder.iterdir()) == ["yolov5n.pt"]


def test_trainer_and_model_save_layouts_load(tmp_path, detector):
    from ultralytics import YOLO

    ema_only = tmp_path / "last.pt"  # a checkpoint written during training: 'model' None
    torch.save(_trainer_layout(detector, model=None, ema=copy.deepcopy(detector)), ema_only)
    model, meta = load_checkpoint(ema_only)
    assert meta["names"] == NAMES and meta["imgsz"] == 64
    assert next(model.parameters()).dtype == torch.float32
    half = tmp_path / "best.pt"
    torch.save(_trainer_layout(detector), half)
    assert next(load_checkpoint(half)[0].parameters()).dtype == torch.float32
    saved = tmp_path / "saved.pt"
    yolo = YOLO("yolo11n.yaml")
    yolo.model.names = {i: f"class {i}" for i in range(80)}
    yolo.save(saved)
    assert load_checkpoint(saved)[1]["names"][79] == "class 79"
    pickled = tmp_path / "yolo.pt"  # torch.save of the YOLO object itself
    torch.save(yolo, pickled)
    assert type(load_checkpoint(pickled)[0]).__name__ == "DetectionModel"


def test_a_yolov10_checkpoint_of_the_older_class_name_loads(tmp_path, monkeypatch):
    """YOLOv10 checkpoints pickle ``YOLOv10DetectionModel``, which ultralytics' own loader maps
    onto ``DetectionModel``; before: "Can't get attribute 'YOLOv10DetectionModel'"."""
    from ultralytics.nn import tasks

    class YOLOv10DetectionModel(tasks.DetectionModel):
        pass

    YOLOv10DetectionModel.__module__ = tasks.__name__
    YOLOv10DetectionModel.__qualname__ = "YOLOv10DetectionModel"
    model = build_detection_model(2, cfg="yolov10n.yaml", names=dict(NAMES))
    model.__class__ = YOLOv10DetectionModel
    path = tmp_path / "yolov10n-own.pt"
    with monkeypatch.context() as patch:
        patch.setattr(tasks, "YOLOv10DetectionModel", YOLOv10DetectionModel, raising=False)
        torch.save(_trainer_layout(model), path)
    loaded, meta = load_checkpoint(path)
    assert type(loaded).__name__ == "DetectionModel" and meta["names"] == NAMES
    assert type(loaded.model[-1]).__name__ == "v10Detect"


# --- files that are not a checkpoint: one line saying what they are -------------------------

def _module(name: str, monkeypatch) -> types.ModuleType:
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def _pickled_with_missing_code(path, detector, monkeypatch, where: str):
    """A checkpoint holding a class of ``where`` (module or module.Class), gone after saving."""
    module_name, _, cls_name = where.rpartition(".")

    class Missing(torch.nn.Module):
        def forward(self, x):
            return x

    Missing.__module__, Missing.__qualname__, Missing.__name__ = module_name, cls_name, cls_name
    model = copy.deepcopy(detector)
    model.model[0] = torch.nn.Sequential(Missing(), model.model[0])
    with monkeypatch.context() as patch:
        if module_name in sys.modules:
            patch.setattr(sys.modules[module_name], cls_name, Missing, raising=False)
        else:
            for i in range(1, module_name.count(".") + 2):
                _module(".".join(module_name.split(".")[:i]), patch)
            setattr(sys.modules[module_name], cls_name, Missing)
        torch.save(_trainer_layout(model), path)


@pytest.mark.parametrize("case, expected", [
    ("state_dict", "holds only weights (a state_dict), not the model: load them into their "
                   "ultralytics model and save it with model.save(PATH)"),
    ("state_dict_in_model", "holds only weights (a state_dict)"),
    ("folder", "is a folder, not a checkpoint file"),
    ("onnx", "is an ONNX model, not an ultralytics .pt checkpoint: give the .pt file it was "
             "exported from"),
    ("engine", "is a TensorRT engine, not an ultralytics .pt checkpoint"),
    ("torchscript", "a TorchScript export, not an ultralytics .pt checkpoint"),
    ("yolov5_repo", "a checkpoint of the YOLOv5 repository (github.com/ultralytics/yolov5, module "
                    "'models"),  # 'models' or, when a package of that name imports, 'models.yolo'
    ("newer_ultralytics", "it needs ultralytics.nn.modules.block.FutureBlock, which ultralytics "),
    ("newer_ultralytics_module", "it needs ultralytics.nn.modules.future, which ultralytics "),
    ("own_code", "it needs the Python module 'dronelab', which is not installed"),
    ("zip", "the file is empty, truncated or not a PyTorch checkpoint"),
    ("empty", "the file is empty"),
    # before: "the file is truncated or not a PyTorch checkpoint"
    ("onnx_named_pt", "it looks like an ONNX model (a protobuf), not a PyTorch checkpoint: name "
                      "it .onnx"),
])
def test_files_that_are_not_a_checkpoint_say_what_they_are(tmp_path, detector, monkeypatch, capfd,
                                                           case, expected):
    """Before: "not a model checkpoint (no 'model' module)", "checkpoint not found" for a folder,
    an unpickling error for an export, "No module named 'models'", "Can't get attribute ...",
    and torch's warnings on stderr for a TorchScript file."""
    path = tmp_path / {"folder": "weights.pt", "onnx": "best.onnx", "engine": "best.engine"}.get(
        case, "best.pt")
    if case == "state_dict":
        torch.save(detector.state_dict(), path)
    elif case == "state_dict_in_model":
        torch.save({"model": detector.state_dict(), "epoch": 3}, path)
    elif case == "folder":
        path.mkdir()
    elif case in ("onnx", "engine", "onnx_named_pt"):
        path.write_bytes(b"\x08\x07\x12\x07pytorch")
    elif case == "torchscript":
        with warnings.catch_warnings():  # torch's notice that TorchScript is deprecated
            warnings.simplefilter("ignore")
            torch.jit.script(torch.nn.Conv2d(3, 8, 3)).save(str(path))
    elif case == "yolov5_repo":
        _pickled_with_missing_code(path, detector, monkeypatch, "models.yolo.Model")
    elif case == "newer_ultralytics":
        _pickled_with_missing_code(path, detector, monkeypatch,
                                   "ultralytics.nn.modules.block.FutureBlock")
    elif case == "newer_ultralytics_module":
        _pickled_with_missing_code(path, detector, monkeypatch, "ultralytics.nn.modules.future.Gate")
    elif case == "own_code":
        _pickled_with_missing_code(path, detector, monkeypatch, "dronelab.layers.Gate")
    elif case == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "not a model")
    else:
        path.write_bytes(b"")
    capfd.readouterr()
    assert expected in _message(path)
    assert capfd.readouterr().err == ""  # no warning, no ultralytics banner


# --- class names of a user's checkpoint -----------------------------------------------------

def _with_names(tmp_path, detector, names, name="m.pt"):
    model = copy.deepcopy(detector)
    model.names = names
    path = tmp_path / name
    torch.save(_trainer_layout(model), path)
    return path


def test_names_are_cleaned_as_the_registry_keeps_them(tmp_path, detector):
    """Before, ``'人 '`` and a decomposed ``'café'`` seeded ``'人'`` and ``'café'`` (NFC), and the
    device refused its next start: "class id 0 is '人 ', but this device's class registry has
    '人' there"."""
    decomposed = unicodedata.normalize("NFD", "caf\u00e9")
    path = _with_names(tmp_path, detector, {0: "\u4eba ", 1: decomposed})
    model, meta = load_checkpoint(path)
    assert meta["names"] == model.names == {0: "\u4eba", 1: "caf\u00e9"}
    registry = ClassRegistry(tmp_path / "state")
    registry.seed(meta["names"])
    assert names_conflict(registry.names(), load_checkpoint(path)[1]["names"]) is None


@pytest.mark.parametrize("names, expected", [
    ({0: "car", 1: "car"}, "classes 0 'car' and 1 'car' have one name (case aside)"),
    ({0: "car", 1: "Car"}, "classes 0 'car' and 1 'Car' have one name (case aside)"),
    ({0: "car", 1: "   "}, "class 1: class name is empty"),
    ({0: "car", 1: "car\u200b"}, "class 1: class name 'car\\u200b' contains an invisible"),
    ({0: "car", 1: "drone", 2: "boat"}, "its head detects 2 classes, but its class names "
                                        "(model.names) are for ids 0, 1, 2"),
    ({0: "car"}, "its head detects 2 classes, but its class names (model.names) are for ids 0;"),
    ({0: "car", 2: "drone"}, "are for ids 0, 2; edgecl needs one name per class id 0..1"),
])
def test_names_that_cannot_name_a_device_class_are_refused_at_load(tmp_path, detector, names,
                                                                   expected):
    """Before, duplicates loaded and were refused only when seeding (``models add`` had staged the
    file by then), ``car`` beside ``Car`` seeded both (the next start was refused), a third name
    for a two-class head failed at warm-up ("IndexError: index 5 is out of bounds") and a
    missing one was accepted, its class left without a name."""
    message = _message(_with_names(tmp_path, detector, names))
    assert expected in message and "save it again" in message


def test_an_edgecl_checkpoint_keeps_its_registry_names(tmp_path, detector):
    from edgecl.models.checkpoint import save_checkpoint

    model = copy.deepcopy(detector)
    model.names = {0: "car", 1: "drone "}  # edgecl's names are the registry's, never re-cleaned
    path = save_checkpoint(model, tmp_path / "v.pt", meta={"imgsz": 64})
    assert load_checkpoint(path)[1]["names"] == {0: "car", 1: "drone "}


def test_seed_compares_names_as_the_registry_stores_them(tmp_path):
    """Before: ``car`` beside ``Car`` were both seeded, and a name in another case under another
    id raised KeyError instead of ConflictError."""
    from edgecl.errors import ConflictError

    registry = ClassRegistry(tmp_path)
    with pytest.raises(LabelError, match="class names are not unique: Car / car name ids 0 and 1$"):
        registry.seed({0: "car", 1: "Car"})
    assert registry.names() == {}
    registry.seed({0: "car"})
    with pytest.raises(ConflictError, match="class 'CAR' has id 0 in the class registry but 1"):
        registry.seed({1: "CAR"})
    assert names_conflict({0: "caf\u00e9", 1: "\u4eba"},
                          {0: unicodedata.normalize("NFD", " Caf\u00e9"), 1: "\u4eba "}) is None


def test_ultralytics_never_installs_what_a_checkpoint_names(monkeypatch):
    from edgecl.ultra import ensure_offline

    monkeypatch.delenv("YOLO_AUTOINSTALL", raising=False)
    ensure_offline()
    import os

    assert os.environ["YOLO_AUTOINSTALL"] == "False"


# --- the entry points ----------------------------------------------------------------------

def test_models_add_refuses_duplicate_names_before_staging(tmp_path, detector, run_edgecl):
    """Before: staged as v0001 and rejected (a copy of the file kept in the state directory)."""
    path = _with_names(tmp_path, detector, {0: "car", 1: "car"})
    state = tmp_path / "s"
    code, out, err = run_edgecl(["models", "add", "--state-dir", state, "--promote", path])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "classes 0 'car' and 1 'car' have one name" in err
    assert not state.exists()


def test_a_device_restarts_with_the_checkpoint_it_started_from(tmp_path, detector, run_edgecl):
    """The second start of a device whose checkpoint names a class with a trailing space was
    refused (the registry had stored the name cleaned)."""
    import cv2
    import numpy as np

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.jpg"), np.full((64, 64, 3), 114, np.uint8))
    path = _with_names(tmp_path, detector, {0: "fire truck ", 1: "drone"})
    state = tmp_path / "s"
    for _ in range(2):
        code, _, err = run_edgecl(["run", "--state-dir", state, "--source", f"dir://{frames}",
                                   "--frames", 1, "--quiet", f"model.path={path}",
                                   "model.imgsz=64"])
        assert code == 0, err
    assert ClassRegistry(state).names() == {0: "fire truck", 1: "drone"}


def test_a_file_that_is_not_a_zip_archive_is_never_unpickled(tmp_path):
    """Before: a plain pickle named .pt was unpickled (running the code it names) and only then
    refused as "not a PyTorch checkpoint"."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "best.pt"
    path.write_bytes(pickle.dumps(Payload()))
    assert "a pickle, not the zip archive torch.save writes" in _message(path)
    assert not marker.exists()
    # a zip archive's trailer appended to the pickle: torch.load goes by the first bytes
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    path.write_bytes(pickle.dumps(Payload()) + (tmp_path / "empty.zip").read_bytes())
    assert "it was not unpickled" in _message(path)
    assert not marker.exists()


def test_a_checkpoint_of_non_finite_weights_is_refused_at_load(tmp_path, detector):
    """Before: 'edgecl learn model.path=nan.pt' trained on it for the round's budget, then
    rejected the round as 'training failed: nan_loss'; the trainer's EMA weights are read too."""
    broken = copy.deepcopy(detector)
    with torch.no_grad():
        broken.model[-1].cv2[0][-1].bias[1] = float("-inf")
    torch.save(_trainer_layout(detector, ema=broken.half()), tmp_path / "best.pt")
    message = _message(tmp_path / "best.pt")
    assert message == (f"{tmp_path / 'best.pt'}: its weights hold NaN or infinity (in "
                       f"model.23.cv2.0.2.bias): they are damaged (a float16 overflow in "
                       f"training, say)")


class _Payload:
    """What a hostile checkpoint hides: unpickling it calls ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["top", "train_args"])
def test_a_checkpoint_whose_pickle_would_run_code_is_refused_with_nothing_run(tmp_path, detector,
                                                                               where):
    """Before: a checkpoint was unpickled in full (weights_only=False, as ultralytics does): a
    working detector with os.system hidden in its train_args was added and promoted, the
    command it held run at 'models add', 'run --model' and every round."""
    marker = tmp_path / "ran"
    path = tmp_path / "best.pt"
    payload = _Payload(marker)
    torch.save(payload if where == "top" else _trainer_layout(detector, train_args=payload), path)
    message = _message(path)
    assert message == (f"cannot load {path}: its pickle calls posix.system, which no model is "
                       f"made of (only torch's, ultralytics' and edgecl's classes are); refused "
                       f"with nothing of it run. Save the weights again from a copy you trust")
    assert not marker.exists()


def test_a_fused_model_saved_loads_and_detects_as_before(tmp_path, detector):
    """Before: a model fused for speed and saved (ultralytics' ``fuse()`` binds
    ``conv.forward = conv.forward_fuse``, which pickles as ``getattr``) was refused as
    untrusted, at 'models add' and 'run --model' alike."""
    fused = copy.deepcopy(detector).eval().fuse(verbose=False)
    path = tmp_path / "fused.pt"
    torch.save(_trainer_layout(fused), path)
    model, meta = load_checkpoint(path)
    assert meta["names"] == NAMES
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.float().eval()(image)[0], fused.float()(image)[0])


@pytest.mark.parametrize("recorded, warned", [
    (100000, "its train_args.imgsz 100000 is no image size (1 to {top} px): it is served at the "
             "configured model.imgsz"),
    ("big", "its train_args.imgsz 'big' is no image size (1 to {top} px): it is served at the "
            "configured model.imgsz"),
    (100, None), ([96, 160], None)])
def test_a_checkpoints_unusable_image_size_is_said_with_the_size_served(tmp_path, detector, caplog,
                                                                        recorded, warned):
    """Before: a checkpoint whose train_args.imgsz was 0 or 100000 was served at another size
    with no word; a usable one (100, [96, 160]) is served rounded up to a multiple of 32."""
    from edgecl.models.base import MAX_IMAGE_SIDE

    path = tmp_path / "best.pt"
    torch.save(_trainer_layout(detector, train_args={"imgsz": recorded, "task": "detect"}), path)
    _, meta = load_checkpoint(path)
    if warned is None:
        assert meta["imgsz"] == (160 if isinstance(recorded, list) else 128)
        assert "no image size" not in caplog.text
    else:
        assert "imgsz" not in meta
        assert caplog.messages == [f"{path}: " + warned.format(top=MAX_IMAGE_SIDE)]


class _Call:
    """A pickle that calls ``func(*args)`` as it loads (``REDUCE``)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _constructors(marker):
    """What a hostile checkpoint may call beyond os.system: classes of ultralytics and torch
    whose constructors act (ultralytics' YOLO loads another file in full), and a callback."""
    from ultralytics.models.yolo.model import YOLO
    from ultralytics.nn.modules import Conv
    from ultralytics.utils.callbacks import base

    inner = marker.parent / "inner.pt"
    torch.save({"model": _Payload(marker)}, inner)
    return {"ultralytics.models.yolo.model.YOLO": (YOLO, (str(inner),)),
            "ultralytics.nn.modules.conv.Conv": (Conv, (3, 8)),
            "ultralytics.utils.callbacks.base.on_train_start": (base.on_train_start, (None,))}


@pytest.mark.parametrize("name", ["ultralytics.models.yolo.model.YOLO",
                                  "ultralytics.nn.modules.conv.Conv",
                                  "ultralytics.utils.callbacks.base.on_train_start"])
def test_a_checkpoint_whose_pickle_calls_a_class_of_ultralytics_is_refused(tmp_path, detector,
                                                                            name):
    """Before: any class of torch or ultralytics could be called as the file loaded: a pickle
    calling YOLO("inner.pt") had ultralytics load another file in full, and its os.system ran
    (the error then called the file damaged)."""
    marker = tmp_path / "ran"
    func, args = _constructors(marker)[name]
    path = tmp_path / "best.pt"
    torch.save(_trainer_layout(detector, model=_Call(func, args)), path)
    assert _message(path) == (f"cannot load {path}: its pickle calls {name}(...), which no saved "
                              f"model calls (a layer is made without calling its class); refused "
                              f"with nothing of it run. Save the weights again from a copy you "
                              f"trust")
    assert not marker.exists()


class _Method:
    """A pickle that looks a method up on a layer and hands it back: ``getattr(layer, name)``."""

    def __init__(self, layer, name: str):
        self.layer, self.name = layer, name

    def __reduce__(self):
        return getattr, (self.layer, self.name)


@pytest.mark.parametrize("name", ["save", "register_forward_hook", "__class__", "_apply"])
def test_a_pickle_that_looks_up_a_layers_other_methods_is_refused(tmp_path, detector, name):
    """A fused layer's ``forward_*`` is what a checkpoint may look up: a pickle can call what it
    gets, and a model's ``save`` would write where the file says."""
    layer = detector.model[0]
    path = tmp_path / "m.pt"
    torch.save(_trainer_layout(detector, model=_Method(layer, name)), path)
    assert _message(path) == (f"cannot load {path}: its pickle calls builtins.getattr("
                              f"ultralytics.nn.modules.conv.Conv, {name!r}), which no model is "
                              f"made of (only torch's, ultralytics' and edgecl's classes are); "
                              f"refused with nothing of it run. Save the weights again from a "
                              f"copy you trust")


def test_an_ema_saved_as_weights_leaves_the_model_beside_it_in_use(tmp_path, detector):
    """Before: 'ema' saved as a state_dict hid the 'model' beside it: "not a model checkpoint
    (no 'model' module)"."""
    path = tmp_path / "best.pt"
    torch.save(_trainer_layout(detector, ema=copy.deepcopy(detector).state_dict()), path)
    assert load_checkpoint(path)[1]["names"] == NAMES


def test_a_checkpoint_with_a_flipped_bit_inside_is_refused(tmp_path, detector):
    """Before: a .pt whose weights a card or a transfer changed (its zip CRC fails) loaded with
    the changed weights, was added and promoted, and 'models verify' said ok (the sha256 was
    taken of the damaged file)."""
    path = tmp_path / "best.pt"
    torch.save(_trainer_layout(detector), path)
    with zipfile.ZipFile(path) as archive:
        big = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    start = big.header_offset + 30 + len(big.filename.encode()) + 64  # inside its stored bytes
    local_extra = int.from_bytes(data[big.header_offset + 28:big.header_offset + 30], "little")
    start += local_extra
    for i in range(start, start + 100):
        data[i] ^= 0x01
    path.write_bytes(bytes(data))
    assert _message(path) == (f"cannot read checkpoint {path}: damaged: the checksum of "
                              f"{big.filename} inside it fails (changed on disk or in a "
                              f"transfer); copy the file again from where it was made")
