"""Model checkpoints in ultralytics' ``.pt`` layout, written atomically.

A checkpoint is the dict ultralytics saves (``model``, ``train_args``, ``date``,
``version``, ...) plus an ``edgecl`` entry with our metadata (names, imgsz, ider flag,
parent version ...).  ``model`` is a float32 CPU copy of the DetectionModel.  When IDER's
prior adapter is attached it is saved with it (``edgecl.ider_adapter`` is then True) and
loading needs ``edgecl`` importable (the adapter class lives in
``edgecl.calibration.ider.adapter``); plain ultralytics can load it only after
``fold_prior``.  Checkpoints are pickles: load only files this device wrote.
"""

from __future__ import annotations

import copy
import os
from datetime import datetime, timezone
from pathlib import Path

from edgecl.atomic import atomic_write_with
from edgecl.errors import ModelLoadError
from edgecl.models.base import MAX_IMAGE_SIDE, OTHER_HEADS, TASK_KINDS, not_a_detector
from edgecl.ultra import ensure_offline

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
    from edgecl.calibration.ider.adapter import set_priors

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
    from edgecl.calibration.ider.adapter import has_prior_adapter

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
        ``None`` for a ``DetectionModel`` with a ``Detect`` (or ``v10Detect``) head, else what
        it is, e.g. ``"a pose model (PoseModel)"``.
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
    if kind is not None:
        return f"{kind} ({cls} with a {head_name} head)"
    if not any(c.__name__ == "Detect" for c in type(head).__mro__):
        return f"not an object detector ({cls} with a {head_name} head)"
    return None


def _one_line(exc: BaseException, max_chars: int = 160) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > max_chars:
        first = first[: max_chars - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_checkpoint(path: str | os.PathLike):
    """Load a checkpoint saved by :func:`save_checkpoint` (or by ultralytics).

    Args:
        path: the ``.pt`` file.

    Returns:
        ``(model, meta)``: the DetectionModel (float32, CPU, eval mode) and the ``edgecl``
        metadata (for a plain ultralytics checkpoint: ``names`` from the model).

    Raises:
        ModelLoadError: the file is missing, truncated, corrupt or not a model checkpoint;
            or it holds another kind of model than an object detector (segmentation, pose,
            OBB, classification, RT-DETR, YOLO-World, YOLOE ...: :func:`detection_model_problem`).
    """
    ensure_offline()
    import torch
    from torch import nn

    import ultralytics.nn.tasks  # noqa: F401  (pickled model classes live here)

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises many kinds for a damaged file
        raise ModelLoadError(f"cannot read checkpoint {path}: {_one_line(exc)}") from None
    if not isinstance(ckpt, dict):
        raise ModelLoadError(f"{path} is not a model checkpoint (found {type(ckpt).__name__})")
    model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    if not isinstance(model, nn.Module) or not hasattr(model, "model"):
        raise ModelLoadError(f"{path} is not a model checkpoint (no 'model' module)")
    problem = detection_model_problem(model)
    if problem is not None:
        raise not_a_detector(path, problem)
    model = model.float().eval()
    stored = ckpt.get("edgecl")
    if stored is not None and not isinstance(stored, dict):
        raise ModelLoadError(f"{path}: its 'edgecl' metadata is not a mapping "
                             f"(found {type(stored).__name__})")
    meta = dict(stored or {})
    if "names" not in meta:
        meta["names"] = getattr(model, "names", None)
    meta["names"] = _checked_names(meta["names"], path) or {  # numbered, as ultralytics does
        i: str(i) for i in range(int(getattr(model.model[-1], "nc", 0)))}
    model.names = dict(meta["names"])
    if "imgsz" not in meta:  # an ultralytics checkpoint: the size it was trained at
        trained = _trained_image_size(ckpt, model)
        if trained is not None:
            meta["imgsz"] = trained
    if "imgsz" in meta and not _is_image_size(meta["imgsz"]):
        raise ModelLoadError(f"{path}: its 'imgsz' metadata {str(meta['imgsz'])[:40]!r} is not a "
                             f"positive image size")
    return model, meta


def _trained_image_size(ckpt: dict, model) -> int | None:
    """The input side an ultralytics checkpoint was trained at (``train_args.imgsz``, else the
    model's ``args``), or None when it records none usable (a ``[h, w]`` size gives its longer
    side, rounded up to a multiple of 32 as ultralytics' ``check_imgsz`` does)."""
    for args in (ckpt.get("train_args"), getattr(model, "args", None)):
        if not isinstance(args, dict):
            args = getattr(args, "__dict__", None)
        side = longer_side(args.get("imgsz") if isinstance(args, dict) else None)
        if side is not None:
            return -(-side // 32) * 32  # ultralytics trains at a multiple of the stride
    return None


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
