"""Model checkpoints in ultralytics' ``.pt`` layout, written atomically.

A checkpoint is the dict ultralytics saves (``model``, ``train_args``, ``date``,
``version``, ...) plus an ``edgecl`` entry with our metadata (names, imgsz, ider flag,
parent version ...).  ``model`` is a float32 CPU copy of the DetectionModel.  When IDER's
prior adapter is attached it is saved with it (``edgecl.ider_adapter`` is then True) and
loading needs ``edgecl`` importable (the adapter class lives in
``edgecl.models.prior_adapter``); plain ultralytics can load it only after
``fold_prior``.  Checkpoints are pickles: :class:`CheckpointUnpickler` makes only what models
are made of, and refuses any other name in the file before it is looked up.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import pickle
import re
import reprlib
import warnings
from datetime import datetime, timezone
from pathlib import Path

from edgecl.atomic import atomic_write_with
from edgecl.errors import ModelLoadError, special_file_problem
from edgecl.models.base import (DETECTION_ONLY, MAX_IMAGE_SIDE, OTHER_HEADS, TASK_KINDS,
                                not_a_detector)
from edgecl.ultra import ensure_offline

log = logging.getLogger(__name__)

# Transient attributes a trained model may carry that must not be pickled.
_TRANSIENT_ATTRS = ("criterion",)


def _train_args(model) -> dict:
    args = getattr(model, "args", None)
    if args is None:
        return {}
    items = vars(args) if hasattr(args, "__dict__") else dict(args)
    return {k: str(v) if isinstance(v, Path) else v for k, v in items.items()}


def _model_copy(model):
    """Float32 CPU copy of a model, without transient state, in eval mode."""
    from edgecl.models.prior_adapter import set_priors

    clone = copy.deepcopy(model).cpu().float().eval()
    for attr in _TRANSIENT_ATTRS:
        if getattr(clone, attr, None) is not None:
            setattr(clone, attr, None)
    set_priors(clone, None)
    return clone


def save_checkpoint(model, path: str | os.PathLike, *, meta: dict) -> Path:
    """Save a model as an ultralytics-compatible checkpoint, atomically.

    Args:
        model: ultralytics DetectionModel (not modified; a CPU float copy is saved).
        path: destination ``.pt`` file.
        meta: edgecl metadata (e.g. ``names``, ``imgsz``, ``parent``); ``names`` and
            ``ider_adapter`` are filled in from the model when absent.

    Returns:
        The destination path.

    Raises:
        OSError: the directory is not writable or the disk is full (nothing is replaced).
    """
    ensure_offline()
    import torch
    from ultralytics import __version__ as ultralytics_version

    from edgecl import __version__
    from edgecl.models.prior_adapter import has_prior_adapter

    clone = _model_copy(model)
    edgecl_meta = {"names": dict(getattr(clone, "names", {}) or {}),
                   "ider_adapter": has_prior_adapter(clone), "edgecl_version": __version__, **meta}
    ckpt = {"date": datetime.now(timezone.utc).isoformat(), "version": ultralytics_version,
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", "epoch": -1,
            "best_fitness": None, "model": clone, "ema": None, "updates": None,
            "optimizer": None, "train_args": _train_args(model), "train_metrics": None,
            "edgecl": edgecl_meta}
    path = Path(path)
    atomic_write_with(path, lambda fh: torch.save(ckpt, fh))
    return path


# ultralytics model classes that are not plain object detectors (most are DetectionModel
# subclasses whose forward returns other outputs): class name -> what it is. Matched by name
# along the class's MRO, so classes an older or newer ultralytics lacks cost nothing.
_OTHER_MODELS = {
    "YOLOESegModel": "a YOLOE segmentation model",
    "YOLOEModel": "a YOLOE open-vocabulary detector",
    "WorldModel": "a YOLO-World open-vocabulary detector",
    "RTDETRDetectionModel": "an RT-DETR transformer detector",
    "SemanticSegmentationModel": TASK_KINDS["semantic"],
    "SegmentationModel": TASK_KINDS["segment"],
    "PoseModel": TASK_KINDS["pose"],
    "OBBModel": TASK_KINDS["obb"],
    "DepthModel": TASK_KINDS["depth"],
    "ClassificationModel": TASK_KINDS["classify"],
}


def _first_match(obj, table: dict[str, str]) -> str | None:
    return next((table[c.__name__] for c in type(obj).__mro__ if c.__name__ in table), None)


def detection_model_problem(model) -> str | None:
    """Say what a loaded model is when it is not a plain ultralytics object detector.

    Recognised by the model's class and its head's class (``SegmentationModel``/``Segment``,
    ``PoseModel``/``Pose``, ``OBBModel``/``OBB``, ``ClassificationModel``/``Classify``,
    ``RTDETRDetectionModel``/``RTDETRDecoder``, ``WorldModel``, ``YOLOEModel`` ...), never by
    the file name.

    Args:
        model: the module a checkpoint holds (or one built from a model yaml).

    Returns:
        ``None`` for a ``DetectionModel`` with a ``Detect`` (or ``v10Detect``) head, its
        architecture (``model.yaml``) and 3 input channels, else what it is, e.g. ``"a pose
        model (PoseModel)"``.
    """
    cls = type(model).__name__
    kind = _first_match(model, _OTHER_MODELS)
    if kind is not None:
        return f"{kind} ({cls})"
    if not any(c.__name__ == "DetectionModel" for c in type(model).__mro__):
        return f"not an ultralytics detection model ({cls})"
    layers = getattr(model, "model", None)
    try:
        head = layers[-1]
    except (TypeError, IndexError, KeyError):
        return f"not an ultralytics detection model ({cls} without layers)"
    head_name = type(head).__name__
    kind = _first_match(head, OTHER_HEADS)  # a DetectionModel built from a pose/seg yaml
    if kind is not None:  # built from a pose/seg/cls yaml or pickled so: named by its head
        return f"{kind} (its head is {head_name})"
    if not any(c.__name__ == "Detect" for c in type(head).__mro__):
        return f"not an object detector ({cls} with a {head_name} head)"
    if not isinstance(getattr(model, "yaml", None), dict):  # ultralytics exports from it
        return (f"a {cls} without its architecture ('yaml'), from which ultralytics exports "
                f"and rebuilds it: save it with ultralytics (model.save or its trainer)")
    channels = _input_channels(model)
    if channels not in (None, 3):  # before: PyTorch's "expected input[1, 3, 64, 64] to have 1"
        return (f"a {cls} for {channels}-channel images; edgecl feeds every model 3-channel "
                f"frames (a thermal camera's single channel is repeated three times, as "
                f"ultralytics reads such images): train it with ch=3")
    return None


def nonfinite_tensor(model) -> str | None:
    """Name the first floating-point parameter or buffer of a module holding NaN or infinity.

    Args:
        model: a torch ``nn.Module``.

    Returns:
        The tensor's name (``"model.0.conv.weight"``), or None when every tensor is finite.
    """
    import torch

    tensors = [*model.named_parameters(), *model.named_buffers()]
    return next((name for name, t in tensors
                 if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)


ZEROED_KERNEL_MIN_VALUES = 64
"""Smallest convolution kernel :func:`zeroed_kernel` looks at."""


def zeroed_kernel(named_arrays) -> str | None:
    """Name the first convolution kernel whose every value is 0: a weights file zero-filled by a
    card fault or a copy cut short and padded (an ONNX model's external data, an OpenVINO
    ``.bin``). Its outputs stay finite, so the NaN check passes it, yet it detects nothing. No
    trained detector has a whole kernel of zeros.

    Args:
        named_arrays: ``(name, array)`` pairs of the model's weights; a kernel is a float array
            of 4 dimensions and at least :data:`ZEROED_KERNEL_MIN_VALUES` values (an INT8
            model's integer kernels are not looked at: quantising rounds a weakly trained
            class head's small weights to 0).

    Returns:
        The kernel's name, or None.
    """
    import numpy as np

    for name, array in named_arrays:
        arr = np.asarray(array)
        if (arr.ndim == 4 and arr.dtype.kind == "f" and arr.size >= ZEROED_KERNEL_MIN_VALUES
                and not np.any(arr)):
            return str(name)
    return None


def _input_channels(model) -> int | None:
    """The channels a model's first convolution takes (None where it has none)."""
    from torch import nn

    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else None


def _one_line(exc: BaseException, max_chars: int = 160) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > max_chars:
        first = first[: max_chars - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_checkpoint(path: str | os.PathLike):
    """Load a checkpoint saved by :func:`save_checkpoint` (or by ultralytics).

    The file is read as ultralytics' own loader reads it (the module paths of older ultralytics
    releases, YOLOv9's ``Silence``, YOLOv10's ``YOLOv10DetectionModel``: :func:`_read`), so the
    checkpoints ultralytics loads, edgecl loads. The trainer's layout (``model``, ``ema``: the
    EMA weights when set), ``model.save()`` files and a bare ``torch.save(model)`` are taken.
    A user's checkpoint (one without edgecl metadata) has its class names cleaned as the class
    registry keeps them (surrounding spaces, Unicode NFC), and is refused when two ids share a
    name (case aside) or a name is unusable.

    Args:
        path: the ``.pt`` file.

    Returns:
        ``(model, meta)``: the DetectionModel (float32, CPU, eval mode) and the ``edgecl``
        metadata (for a plain ultralytics checkpoint: ``names`` from the model).

    Raises:
        ModelLoadError: one line naming the file: it is missing, a folder, an exported model
            (ONNX, TensorRT, OpenVINO, TorchScript), empty, truncated or corrupt, a bare
            ``state_dict``, a checkpoint of code this ultralytics lacks (the YOLOv5 repository,
            a newer ultralytics), or not a model checkpoint; or it holds another kind of model
            than an object detector (segmentation, pose, OBB, classification, RT-DETR,
            YOLO-World, YOLOE ...: :func:`detection_model_problem`); or its weights hold NaN or
            infinity; or its class names cannot name a device's classes.
    """
    ensure_offline()
    from torch import nn

    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():  # a FIFO, a device, a link that loops: said as such
        raise ModelLoadError(special_file_problem(path) or f"checkpoint not found: {path}")
    exported = _EXPORTS.get(path.suffix.lower())
    if exported is not None:
        raise ModelLoadError(f"{path} is {exported}, not an ultralytics .pt checkpoint: give the .pt "
                             f"file it was exported from (trainable weights)")
    ckpt = _read(path)
    if isinstance(ckpt, nn.Module) and hasattr(ckpt, "model"):  # torch.save(detection_model)
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict):
        raise ModelLoadError(f"{path} is not a model checkpoint (found {type(ckpt).__name__})")
    # the trainer's EMA where it is a model (a state_dict saved as 'ema' is no model: before,
    # it hid the 'model' beside it, "not a model checkpoint (no 'model' module)")
    model = ckpt.get("ema") if isinstance(ckpt.get("ema"), nn.Module) else ckpt.get("model")
    if not isinstance(model, nn.Module) or not hasattr(model, "model"):
        if any(_is_state_dict(v) for v in (ckpt, ckpt.get("model"), ckpt.get("state_dict"))):
            raise ModelLoadError(f"{path} holds only weights (a state_dict), not the model: load "
                                 f"them into their ultralytics model and save it with "
                                 f"model.save(PATH), or give the trainer's weights/best.pt")
        raise ModelLoadError(f"{path} is not a model checkpoint (no 'model' module)")
    problem = detection_model_problem(model)
    if problem is not None:
        raise not_a_detector(path, problem)
    model = _compatible(model.float().eval())
    damaged = nonfinite_tensor(model)
    if damaged is not None:  # before: a round trained on it, then failed on a NaN loss
        raise ModelLoadError(f"{path}: its weights hold NaN or infinity (in {damaged}): they are "
                             f"damaged (a float16 overflow in training, say)")
    stored = ckpt.get("edgecl")
    if stored is not None and not isinstance(stored, dict):
        raise ModelLoadError(f"{path}: its 'edgecl' metadata is not a mapping "
                             f"(found {type(stored).__name__})")
    meta = dict(stored or {})
    if "names" not in meta:
        meta["names"] = getattr(model, "names", None)
    meta["names"] = _checked_names(meta["names"], path) or {  # numbered, as ultralytics does
        i: str(i) for i in range(int(getattr(model.model[-1], "nc", 0)))}
    if stored is None:  # a user's checkpoint: its names are about to name the device's classes
        meta["names"] = _class_names(meta["names"], getattr(model.model[-1], "nc", None), path)
    model.names = dict(meta["names"])
    if "imgsz" not in meta:  # an ultralytics checkpoint: the size it was trained at
        trained = _trained_image_size(ckpt, model, path)
        if trained is not None:
            meta["imgsz"] = trained
    if "imgsz" in meta and not _is_image_size(meta["imgsz"]):
        raise ModelLoadError(f"{path}: its 'imgsz' metadata {str(meta['imgsz'])[:40]!r} is not a "
                             f"positive image size")
    return model, meta


# Model files that are not checkpoints, by suffix: what they are
_EXPORTS = {".onnx": "an ONNX model", ".engine": "a TensorRT engine", ".xml": "an OpenVINO model",
            ".bin": "OpenVINO weights", ".torchscript": "a TorchScript export",
            ".tflite": "a TFLite model"}

# Modules of the YOLOv5 repository (github.com/ultralytics/yolov5), whose checkpoints pickle them
_YOLOV5_REPO_MODULES = ("models",)


def _read(path: Path):
    """Unpickle a checkpoint as ultralytics' own loader does, or raise a one-line ModelLoadError.

    The module paths of older ultralytics releases and the classes it renamed are mapped with
    ultralytics' ``temporary_modules`` and the table of ``ultralytics.nn.tasks.torch_safe_load``
    (:data:`_LEGACY_MODULES`, :data:`_LEGACY_ATTRIBUTES`). ``torch_safe_load`` itself is not
    called on a user's file: it resolves the path through ``attempt_download_asset`` (a file
    named ``yolov5n.pt`` is replaced by a download of ``yolov5nu.pt``) and pip-installs a module
    the file names. torch's warnings (a TorchScript archive) stay off the console: the error says
    what the file is.
    """
    import torch
    from ultralytics.nn.tasks import temporary_modules

    problem = _not_a_zip_checkpoint(path) or _damaged_member(path)
    if problem:
        raise ModelLoadError(f"cannot read checkpoint {path}: {problem}")
    attributes = {old: new for old, new in _LEGACY_ATTRIBUTES.items() if _resolves(new)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with temporary_modules(modules=_LEGACY_MODULES, attributes=attributes):
                ckpt = torch.load(str(path), map_location="cpu", weights_only=False,
                                  pickle_module=_pickle_module())
        except RefusedGlobal as exc:
            root = str(exc).split(".")[0]
            if root in _YOLOV5_REPO_MODULES or not _importable(root):  # say what the file is
                raise ModelLoadError(_unreadable(path, ModuleNotFoundError(root, name=root))) from None
            what = (f"calls {exc}, which no saved model calls (a layer is made without "
                    f"calling its class)" if str(exc).endswith("(...)") else
                    f"calls {exc}, which no model is made of (only torch's, ultralytics' and "
                    f"edgecl's classes are)")
            raise ModelLoadError(f"cannot load {path}: its pickle {what}; refused with nothing "
                                 f"of it run. Save the weights again from a copy you trust") from None
        except Exception as exc:  # torch.load raises many kinds for a damaged or foreign file
            if "torchscript" in str(exc).lower():
                raise ModelLoadError(TORCHSCRIPT_PROBLEM.format(path=path)) from None
            raise ModelLoadError(_unreadable(path, exc)) from None
    if isinstance(ckpt, torch.jit.ScriptModule):
        raise ModelLoadError(TORCHSCRIPT_PROBLEM.format(path=path))
    from ultralytics.engine.model import Model

    return ckpt.model if isinstance(ckpt, Model) else ckpt  # torch.save(YOLO(...))


TORCHSCRIPT_PROBLEM = ("cannot load {path}: a TorchScript export, not an ultralytics .pt "
                       "checkpoint; give the .pt file it was exported from")

_SAFE_OTHER_GLOBALS = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.ndarray",
    "numpy.dtype", "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath",
    "pathlib.PurePosixPath", "pathlib.PureWindowsPath", "argparse.Namespace",
    "types.SimpleNamespace", "datetime.datetime", "datetime.date", "datetime.timedelta",
    "datetime.timezone", "collections.defaultdict",
    *(f"builtins.{t}" for t in ("list", "dict", "set", "frozenset", "tuple", "int", "float",
                                "complex", "str", "bool", "bytes", "bytearray", "slice", "range"))})
"""What a checkpoint's pickle may name besides torch's and ultralytics' classes: numpy arrays and
scalars, paths and namespaces (a trainer's arguments), dates, a callbacks table and Python's
plain containers and numbers."""


class RefusedGlobal(pickle.UnpicklingError):
    """A checkpoint's pickle names something that no model is made of (a function such as
    ``posix.system``): refused before it is looked up, so nothing of it runs."""


_IMPORTABLE_ROOTS = frozenset({"torch", "ultralytics", "edgecl", "numpy", "pathlib", "argparse",
                               "types", "datetime", "collections", "builtins", "_codecs"})
"""Top-level modules a checkpoint's pickle may make edgecl import (importing any other module
named in a file, ``antigravity`` say, would already run its code)."""


class CheckpointUnpickler(pickle._Unpickler):
    """The unpickler of a checkpoint: it makes only what models are made of.

    A name in the pickle resolves when it is one of torch's own safe globals (tensors,
    storages, dtypes: ``torch._weights_only_unpickler``), a class of torch, ultralytics or
    edgecl (a layer a round adapted), an ultralytics training callback (``torch.save(YOLO(...))``
    keeps them), or one of :data:`_SAFE_OTHER_GLOBALS`; ``getattr`` resolves to
    :func:`_model_method` (a layer's own bound method). Anything else raises
    :class:`RefusedGlobal` before it is looked up. Before, a checkpoint was unpickled in full
    (``weights_only=False``, as ultralytics does): a pickle naming ``os.system`` ran it as the
    file loaded, at ``models add``, ``run --model`` and a round. The usual restricted-unpickler
    pattern of Python's ``pickle`` documentation, given to ``torch.load`` as its
    ``pickle_module``.

    What a pickle calls (``REDUCE``, ``INST``, ``OBJ``) is bounded further, as in torch's
    ``weights_only`` unpickler: a layer is made without its ``__init__`` (``NEWOBJ``), so only
    torch's safe globals, plain value types and :func:`_model_method` may be called (before,
    a pickle calling ``ultralytics.YOLO("other.pt")`` had ultralytics load another file in
    full, and that file's code ran). The pure-Python unpickler is used for that: its opcodes
    can be overridden; a checkpoint's pickle holds no tensor data, so it loads in tens of
    milliseconds all the same.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_reduce(self) -> None:
        """``REDUCE``: call the callable below the arguments on the stack, when it may be."""
        _refuse_call(self.stack[-2])
        super().load_reduce()

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _instantiate(self, klass, args) -> None:
        """``INST`` / ``OBJ`` (protocols 0 and 1): call a class, when it may be."""
        _refuse_call(klass)
        super()._instantiate(klass, args)

    def find_class(self, module: str, name: str):
        """The object ``module.name`` of the pickle, when a model may be made of it.

        Raises:
            RefusedGlobal: anything else.
            ModuleNotFoundError, AttributeError: a name the installed packages lack.
        """
        import _compat_pickle  # the Python 2 names that protocol 2 writes ('__builtin__.set')

        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        safe = _torch_safe_globals().get(full)
        if safe is not None:
            return safe
        if full == "builtins.getattr":  # a bound method a layer holds (fused: forward_fuse)
            return _model_method
        if module.split(".")[0] not in _IMPORTABLE_ROOTS:
            raise RefusedGlobal(full)
        obj = super().find_class(module, name)
        where = str(getattr(obj, "__module__", ""))
        model_class = isinstance(obj, type) and where.startswith(MODEL_CLASS_MODULES)
        # torch.save(YOLO(...)) keeps the model's training callbacks: functions that take a
        # trainer, which nothing in a checkpoint can give
        callback = callable(obj) and where.startswith("ultralytics.utils.callbacks.")
        if model_class or callback or full in _SAFE_OTHER_GLOBALS or full.startswith(
                "numpy.dtypes."):
            return obj
        raise RefusedGlobal(full)


MODEL_CLASS_MODULES = ("torch.", "ultralytics.", "edgecl.")
"""Where the classes a checkpoint is made of are defined."""


def _model_method(obj: object, name: object):
    """``getattr`` as a checkpoint's pickle may call it: a layer's own forward method, bound to
    the layer (ultralytics' ``fuse()`` sets ``conv.forward = conv.forward_fuse``, its exporter
    ``forward_split``: they pickle as ``getattr(conv, "forward_fuse")``; before, every fused and
    saved model was refused as untrusted).

    Only ``forward`` and ``forward_*`` are given: a pickle can call what it gets, and another
    method of a model (``save``, ``train``) would write files or reach the network.

    Args:
        obj: a layer the pickle made (an instance of a torch, ultralytics or edgecl class).
        name: the method's name.

    Returns:
        The bound method.

    Raises:
        RefusedGlobal: anything else (another object, another name, an attribute that is no
            function of the layer's class): nothing is looked up.
    """
    import torch

    cls = type(obj)
    forward = isinstance(name, str) and (name == "forward" or name.startswith("forward_"))
    method = getattr(cls, name, None) if forward else None
    if (not isinstance(obj, torch.nn.Module) or not inspect.isfunction(method)
            or not str(getattr(method, "__module__", "")).startswith(MODEL_CLASS_MODULES)):
        raise RefusedGlobal(f"builtins.getattr({cls.__module__}.{cls.__qualname__}, "
                            f"{reprlib.repr(name)})")
    return getattr(obj, name)


CALLABLE_VALUE_TYPES = frozenset({"collections.OrderedDict",
                                  "ultralytics.utils.IterableSimpleNamespace"})
"""Classes besides :data:`_SAFE_OTHER_GLOBALS` a checkpoint's pickle calls to make a value:
a layer's parameter tables, a trainer's arguments."""


def _refuse_call(func) -> None:
    """Refuse a call a checkpoint's pickle makes, unless it makes a value: one of torch's safe
    globals (a tensor rebuilt, ``torch.Size``), :func:`_model_method`, a plain value type
    (:data:`_SAFE_OTHER_GLOBALS`, numpy's dtypes, :data:`CALLABLE_VALUE_TYPES`).

    Raises:
        RefusedGlobal: any other call (a class's constructor of torch or ultralytics, a
            training callback): nothing of it runs.
    """
    if id(func) in _callable_ids():
        return
    module = str(getattr(func, "__module__", ""))
    if module.startswith("numpy.dtypes") and isinstance(func, type):
        return
    raise RefusedGlobal(f"{module}.{getattr(func, '__qualname__', type(func).__name__)}(...)")


@functools.lru_cache(maxsize=1)
def _callable_ids() -> frozenset[int]:
    """The ids of what a checkpoint's pickle may call (:func:`_refuse_call`), built once."""
    import importlib

    allowed = [_model_method, *_torch_safe_globals().values()]
    for full in (*_SAFE_OTHER_GLOBALS, *CALLABLE_VALUE_TYPES):
        module, _, name = full.rpartition(".")
        try:
            allowed.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # numpy.core or numpy._core: one of them
            continue
    return frozenset(id(obj) for obj in allowed)


def _importable(module: str) -> bool:
    """Whether a top-level module is installed (found, not imported: nothing of it runs)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def _torch_safe_globals() -> dict:
    """torch's own allow-list of its ``weights_only`` loads (name -> object); empty where this
    torch has none (then only the rules of :class:`CheckpointUnpickler` admit a name). Built
    once: every name of every checkpoint is looked up in it."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
    except ImportError:
        return {}
    return _get_allowed_globals()


def _pickle_module():
    """A module object holding :class:`CheckpointUnpickler`, for ``torch.load(pickle_module=)``."""
    import types

    module = types.ModuleType("edgecl_checkpoint_pickle")
    module.Unpickler = CheckpointUnpickler
    module.load = lambda fh, **kwargs: CheckpointUnpickler(fh, **kwargs).load()
    module.__name__ = "edgecl_checkpoint_pickle"
    return module


ZIP_MAGIC = b"PK\x03\x04"
"""How a file torch.save writes begins (a zip archive's first local header), as torch.load
checks."""


def _damaged_member(path: Path) -> str | None:
    """Why a checkpoint's zip archive is damaged inside, or None: a member whose CRC-32 fails
    (a bit flipped on a card or in a transfer). Before, such a file loaded with the flipped
    weights, and was added, promoted and verified as ok (its sha256 was taken of the damaged
    file). An archive whose structure is broken is left to ``torch.load``, which says so."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return None
    if bad is None:
        return None
    return (f"damaged: the checksum of {bad} inside it fails (changed on disk or in a "
            f"transfer); copy the file again from where it was made")


def _not_a_zip_checkpoint(path: Path) -> str | None:
    """Why a file is not unpickled, or None for the zip archive ``torch.save`` writes.

    Anything else is refused unread: unpickling runs the code a pickle names while it loads,
    whatever is refused after (a plain pickle named ``.pt`` did). The first bytes decide, as
    ``torch.load`` decides (a zip trailer appended to a pickle would pass a look at the end).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(ZIP_MAGIC))
    except OSError as exc:
        return f"{exc.strerror or exc}"
    if head == ZIP_MAGIC:
        return None
    if not head:
        return "the file is empty"
    if head[:1] == b"\x08":  # a protobuf's first field, as an ONNX model begins (ir_version)
        return "it looks like an ONNX model (a protobuf), not a PyTorch checkpoint: name it .onnx"
    if head[:1] == b"\x80":
        return ("a pickle, not the zip archive torch.save writes (PyTorch's format before 1.6, "
                "or a plain pickle): it was not unpickled; load it with the torch that wrote it "
                "and save it again with a current one")
    return ("the file is truncated or not a PyTorch checkpoint (not the zip archive torch.save "
            "writes; it was not unpickled)")


# ultralytics' map of moved modules and renamed classes (``torch_safe_load``): old -> new
_LEGACY_MODULES = {"ultralytics.yolo.utils": "ultralytics.utils",
                   "ultralytics.yolo.v8": "ultralytics.models.yolo",
                   "ultralytics.yolo.data": "ultralytics.data"}
_LEGACY_ATTRIBUTES = {"ultralytics.nn.modules.block.Silence": "torch.nn.Identity",  # YOLOv9e
                      "ultralytics.nn.tasks.YOLOv10DetectionModel": "ultralytics.nn.tasks.DetectionModel",
                      "ultralytics.utils.loss.v10DetectLoss": "ultralytics.utils.loss.E2EDetectLoss",
                      "pathlib.WindowsPath": "pathlib.PosixPath"}  # a checkpoint trained on Windows


def _resolves(dotted: str) -> bool:
    """Whether ``module.attribute`` exists in the installed packages."""
    import importlib

    module, _, name = dotted.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def _unreadable(path: Path, exc: BaseException) -> str:
    """One line saying why a checkpoint file cannot be unpickled, and what edgecl needs."""
    from ultralytics import __version__ as installed

    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    # a name the module lacks, in the C unpickler's words or the pure-Python one's
    lacked = re.search(r"Can't get attribute '([^']+)' on <module '([^']+)'", str(exc))
    absent = re.search(r"module '([^']+)' has no attribute '([^']+)'", str(exc))
    attribute = (f"{lacked[2]}.{lacked[1]}" if lacked else
                 f"{absent[1]}.{absent[2]}" if absent else None)
    if missing and missing.split(".")[0] in _YOLOV5_REPO_MODULES:
        return (f"cannot load {path}: a checkpoint of the YOLOv5 repository "
                f"(github.com/ultralytics/yolov5, module '{missing}'), which the ultralytics package "
                f"cannot load; {DETECTION_ONLY}: train it again with ultralytics (yolov5nu.yaml "
                f"keeps YOLOv5's design)")
    if missing or attribute:
        needed = attribute or missing
        if needed.startswith("ultralytics."):
            return (f"cannot load {path}: it needs {needed}, which ultralytics {installed} here "
                    f"lacks (saved by a newer ultralytics, or by modified code); edgecl needs a "
                    f"checkpoint this ultralytics loads")
        what = f"the Python module {needed!r}, which is not installed" if missing else (
            f"{needed!r}, which its installed module lacks")
        return (f"cannot load {path}: it needs {what} (a model of its own code, not an "
                f"ultralytics checkpoint)")
    said = _one_line(exc)
    if "central directory" in said:  # torch's zip reader on a file cut short
        return (f"cannot read checkpoint {path}: the file is cut short (its zip archive ends "
                f"before its central directory: a copy or a download that did not finish); "
                f"copy it again from where it was made")
    # torch's own advice ("an internal miniz error ... please report a bug to PyTorch") is
    # not the user's: its first sentence says what failed
    said = re.split(r"\.\s+(?=This is an internal|If you are seeing)", said)[0]
    return (f"cannot read checkpoint {path}: the file is empty, truncated or not a PyTorch "
            f"checkpoint ({said})")


def _is_state_dict(value) -> bool:
    """Whether ``value`` is a non-empty mapping of names to tensors (weights without the model)."""
    import torch

    return (isinstance(value, dict) and bool(value)
            and all(isinstance(v, torch.Tensor) for v in value.values()))


def _compatible(model):
    """Apply ultralytics' load-time updates for checkpoints pickled by older torch/ultralytics
    (as ``ultralytics.nn.tasks.load_checkpoint`` does): ``Upsample.recompute_scale_factor``
    (torch < 1.11) and a model without ``stride``."""
    import torch
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Upsample) and not hasattr(module, "recompute_scale_factor"):
            module.recompute_scale_factor = None
    if not hasattr(model, "stride"):
        model.stride = torch.tensor([32.0])
    return model


def _class_names(names: dict[int, str], nc, path: Path) -> dict[int, str]:
    """A user's checkpoint's class names as the class registry will keep them: one per class id
    of its head, cleaned (no surrounding spaces, Unicode NFC) and distinct, case aside.

    Before, ``'car '``, a decomposed ``'café'`` or ``car`` beside ``Car`` seeded the registry
    with other spellings than the model's, and the device refused its next start ("class id 0
    is 'car ', but this device's class registry has 'car' there"); a third name for a
    two-class head failed at warm-up with an IndexError, a missing one left a class unnamed.

    Raises:
        ModelLoadError: names that are not one per class id ``0..nc-1`` of the head, a name the
            registry refuses (empty, control or invisible characters, too long) or two ids with
            one name; one line naming the ids.
    """
    from edgecl.errors import LabelError
    from edgecl.data.class_names import clean_name

    fix = "in the checkpoint (model.names) and save it again"
    if isinstance(nc, int) and sorted(names) != list(range(nc)):
        ids = sorted(names)
        shown = ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
        raise ModelLoadError(f"{path}: its head detects {nc} classes, but its class names "
                             f"(model.names) are for ids {shown or 'none'}; edgecl needs one name "
                             f"per class id 0..{nc - 1}: set model.names and save it again")
    out, seen = {}, {}
    for cid, name in sorted(names.items()):
        try:
            out[cid] = clean_name(name)
        except LabelError as exc:
            raise ModelLoadError(f"{path}: class {cid}: {exc}; rename it {fix}") from None
        other = seen.setdefault(out[cid].casefold(), cid)
        if other != cid:
            raise ModelLoadError(f"{path}: classes {other} {names[other]!r} and {cid} {name!r} "
                                 f"have one name (case aside), and a device keeps one id per class "
                                 f"name; rename one of them {fix}")
    return out


def _trained_image_size(ckpt: dict, model, path: Path) -> int | None:
    """The input side an ultralytics checkpoint was trained at (``train_args.imgsz``, else the
    model's ``args``), or None when it records none usable (a ``[h, w]`` size gives its longer
    side, rounded up to a multiple of 32 as ultralytics' ``check_imgsz`` does). A recorded size
    that is passed over (0, 100000, text) is warned of, with the size served instead (before,
    nothing said it)."""
    passed_over = []
    for where, args in (("train_args", ckpt.get("train_args")),
                        ("model.args", getattr(model, "args", None))):
        if not isinstance(args, dict):
            args = getattr(args, "__dict__", None)
        recorded = args.get("imgsz") if isinstance(args, dict) else None
        side = longer_side(recorded)
        if side is not None:
            served = -(-side // 32) * 32  # ultralytics trains at a multiple of the stride
            if passed_over:
                _warn_image_size(path, passed_over, f"its {where}.imgsz, {served} px")
            return served
        if recorded is not None:
            passed_over.append(f"{where}.imgsz {reprlib.repr(recorded)}")
    if passed_over:
        _warn_image_size(path, passed_over, "the configured model.imgsz")
    return None


_SIZES_WARNED: set[str] = set()
"""The image-size warnings this process gave (a file loaded twice, by 'models add' and its
warm-up, is warned of once)."""


def _warn_image_size(path: Path, passed_over: list[str], served: str) -> None:
    message = (f"{path}: its {' and '.join(passed_over)} is no image size (1 to "
               f"{MAX_IMAGE_SIDE} px): it is served at {served}")
    if message not in _SIZES_WARNED:
        _SIZES_WARNED.add(message)
        log.warning("%s", message)


def longer_side(imgsz) -> int | None:
    """The longer side in pixels of an image size as checkpoints record it (a side or ``[h,
    w]``), or None when ``imgsz`` is not a valid size.

    Args:
        imgsz: the recorded value (``meta["imgsz"]``, ``train_args.imgsz``).
    """
    if not _is_image_size(imgsz):
        return None
    return max(int(v) for v in imgsz) if isinstance(imgsz, (list, tuple)) else int(imgsz)


def _checked_names(names, path: Path) -> dict[int, str]:
    """A checkpoint's class names as ``{id: name}``; a list (YOLOv5-style) is numbered in order.

    Raises:
        ModelLoadError: names that are neither a mapping nor a list, a non-integer id, or a
            name that is not text or a number.
    """
    if names is None:
        return {}
    if isinstance(names, (list, tuple)):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise ModelLoadError(f"{path}: its class names are a {type(names).__name__}, not a "
                             f"mapping or a list")
    out = {}
    for key, value in names.items():
        try:
            cid = int(key)
        except (TypeError, ValueError, OverflowError):
            raise ModelLoadError(f"{path}: class id {str(key)[:40]!r} is not an integer") from None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ModelLoadError(f"{path}: class {cid} has no usable name "
                                 f"({str(value)[:40]!r})")
        out[cid] = str(value)
    return out


def _is_image_size(value) -> bool:
    values = value if isinstance(value, (list, tuple)) else [value]
    return 0 < len(values) <= 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                        and 0 < v <= MAX_IMAGE_SIDE for v in values)
