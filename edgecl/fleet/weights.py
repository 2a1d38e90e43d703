"""A DetectionModel as named arrays, and back, with its class rows aligned by name.

The global model travels as ``(arrays, names, arch)``: ``arrays`` maps every floating-point
state-dict key of an unfused ultralytics DetectionModel to a numpy array (BatchNorm statistics
included, ``num_batches_tracked`` left out), and the class-row tensors
(:func:`edgecl.continual.federated.is_class_row_key`) hold one row per entry of ``names``.
A device maps those rows onto its own class ids (its :class:`~edgecl.models.classes.ClassRegistry`)
by name. ``arch`` is the model's ultralytics model yaml as a dict (``DetectionModel.yaml``, JSON
text on the wire and in the server's ``global.json``): every device rebuilds that architecture
(a fleet started from a YOLOv8 checkpoint stays a YOLOv8; ``None`` is :data:`DEFAULT_ARCH`,
the architecture of a fleet started afresh and of fleets saved before the architecture was kept).
"""

from __future__ import annotations

import copy
import json
import logging

import numpy as np

from edgecl.continual.federated import align_rows, is_class_row_key
from edgecl.continual.head import resize_class_rows

log = logging.getLogger(__name__)

# Bias of a class row a model should never fire (e.g. a class a device-alone model never learnt
# when it is scored on every class): sigmoid(-30) ~ 1e-13.
SILENT_BIAS = -30.0

DEFAULT_ARCH = "yolo11n.yaml"
"""The packaged ultralytics model yaml of a fleet started without ``fleet.initial_model``."""

SUPPORTED = "start from a YOLOv5u, v8, v9, v10, 11, 12 or 26 detection checkpoint"

# Heads a fleet round fine-tunes besides ultralytics' Detect (one-to-many, or end-to-end with
# ``end2end`` in the yaml: YOLO26): YOLOv10's end-to-end head.
_END_TO_END_HEADS = ("v10Detect",)


class ArchitectureMismatch(ValueError):
    """Named arrays do not fit the architecture they are loaded into (the message is one line
    naming the architecture and the first tensor that does not fit)."""


def default_arch() -> dict:
    """The model yaml of :data:`DEFAULT_ARCH` as a dict (what a fresh fleet records).

    Returns:
        The yaml dict, as ultralytics loads it.
    """
    from edgecl.ultra import ensure_offline

    ensure_offline()
    from ultralytics.nn.tasks import yaml_model_load

    return json.loads(json.dumps(yaml_model_load(DEFAULT_ARCH), default=str))


def model_arch(model) -> dict | None:
    """A DetectionModel's architecture: a JSON-safe copy of its model yaml (``model.yaml``).

    Args:
        model: ultralytics DetectionModel (built from a yaml, or loaded from a checkpoint).

    Returns:
        The yaml dict, or ``None`` when the model carries none.
    """
    yaml = getattr(model, "yaml", None)
    if not isinstance(yaml, dict) or "backbone" not in yaml or "head" not in yaml:
        return None
    return json.loads(json.dumps(yaml, default=str))


def arch_label(arch) -> str:
    """A short name of an architecture for messages (its yaml file, e.g. ``yolov8n.yaml``).

    Args:
        arch: model yaml dict, or ``None`` (:data:`DEFAULT_ARCH`).

    Returns:
        The name.
    """
    if not arch:
        return DEFAULT_ARCH
    return str(arch.get("yaml_file") or "custom-yaml")


def _arch_identity(arch) -> str:
    """What makes two architectures the same model (layers and scale), as text."""
    arch = arch or default_arch()
    scales, scale = arch.get("scales") or {}, arch.get("scale")
    multiples = (scales.get(scale) if scale in scales else
                 [arch.get("depth_multiple", 1.0), arch.get("width_multiple", 1.0)])
    return json.dumps([arch.get("backbone"), arch.get("head"), multiples,
                       arch.get("reg_max", 16), bool(arch.get("end2end"))], default=str)


def same_arch(a, b) -> bool:
    """Whether two model yaml dicts (``None``: :data:`DEFAULT_ARCH`) build the same layers.

    The class count and the yaml's file name are not compared.

    Args:
        a: model yaml dict or ``None``.
        b: model yaml dict or ``None``.

    Returns:
        True when the backbone, the head and the scale are the same.
    """
    return _arch_identity(a) == _arch_identity(b)


def head_problem(arch) -> str | None:
    """Why fleet rounds cannot fine-tune models of an architecture, or ``None`` when they can.

    Fleet rounds fine-tune with :class:`~edgecl.continual.finetune.FineTuner`, which trains
    ultralytics' ``Detect`` head, one-to-many (YOLOv3u/5u/8/9/11/12) or end-to-end (YOLO26;
    ``v10Detect`` of YOLOv10); a head of another task (segmentation, pose, OBB, classification,
    RT-DETR) is refused.

    Args:
        arch: model yaml dict, or ``None`` (:data:`DEFAULT_ARCH`, which is fine).

    Returns:
        One line (to follow a subject: "... has an end-to-end ... head ..."), or ``None``.
    """
    if not arch:
        return None
    try:
        module = str(arch["head"][-1][2])
    except (KeyError, IndexError, TypeError):
        return f"has no detection head in its model yaml; fleet rounds cannot use it; {SUPPORTED}"
    if module not in ("Detect", *_END_TO_END_HEADS):
        return (f"is not a plain detection model (its head is {module}): fleet rounds fine-tune "
                f"YOLO detectors; {SUPPORTED}")
    return None


def model_arrays(model) -> dict[str, np.ndarray]:
    """The floating-point tensors of a model's state dict as float32 numpy arrays.

    Args:
        model: ultralytics DetectionModel (IDER's prior adapter, if attached, is folded into
            a copy first, so the keys are those of a plain model).

    Returns:
        state-dict key -> float32 array (CPU copies).
    """
    from edgecl.models.prior_adapter import fold_prior, has_prior_adapter

    if has_prior_adapter(model):
        import copy

        model = fold_prior(copy.deepcopy(model))
    return {k: v.detach().cpu().float().numpy().copy() for k, v in model.state_dict().items()
            if v.is_floating_point()}


def _class_width(arrays: dict) -> int | None:
    """The input channels of the arrays' class-row convs (the head's class-branch width), or
    ``None`` when the arrays hold no class-row weight."""
    for key, value in arrays.items():
        if is_class_row_key(key) and key.endswith(".weight") and np.ndim(value) == 4:
            return int(np.shape(value)[1])
    return None


def _fresh_model(arch, order: list[str], width: int | None, seed: int):
    """A freshly initialised DetectionModel of ``arch`` with ``len(order)`` class rows.

    The class-branch width of ultralytics' Detect head grows with the class count it was built
    for (``max(ch[0], min(nc, 100))``): a checkpoint trained on 80 classes has an 80-wide class
    branch, which a model built for 81 classes would not have. When ``width`` (the arrays')
    differs from the width ``len(order)`` classes give, the model is built for ``width`` classes
    (which gives that width) and its class rows are then resized to ``len(order)``.
    """
    import torch

    from edgecl.ultra import build_detection_model

    cfg = DEFAULT_ARCH if arch is None else copy.deepcopy(dict(arch))
    names = dict(enumerate(order))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_detection_model(len(order), cfg=cfg, names=names)
        if width is not None and model.model[-1].cv3[0][-1].in_channels != width:
            cfg = DEFAULT_ARCH if arch is None else copy.deepcopy(dict(arch))
            model = build_detection_model(width, cfg=cfg, names=dict(enumerate(map(str, range(width)))))
            resize_class_rows(model, len(order))
            model.names = names
    return model


def build_model(arrays: dict[str, np.ndarray], arrays_names: list[str], names: dict[int, str],
                *, absent: str = "init", seed: int = 0, arch: dict | None = None):
    """Build a DetectionModel of architecture ``arch`` with class ids ``names`` from named arrays.

    Rows of classes ``arrays_names`` lacks keep the fresh model's initialisation (ultralytics'
    class prior bias, as :func:`edgecl.continual.head.grow_head` gives a new class) when
    ``absent="init"``, or are silenced (zero weights, bias :data:`SILENT_BIAS`) when
    ``absent="silent"``.

    Args:
        arrays: key -> array; class rows in ``arrays_names`` order. Keys the architecture has
            that ``arrays`` lacks keep their initial values.
        arrays_names: class names of the rows of ``arrays``.
        names: class id -> name of the model to build (ids 0..n-1).
        absent: ``init`` or ``silent``.
        seed: torch seed for the fresh initialisation (same seed, same weights).
        arch: the ultralytics model yaml as a dict (:func:`model_arch`; the global model's
            ``arch``), or ``None`` for :data:`DEFAULT_ARCH`.

    Returns:
        The DetectionModel (float32, CPU, eval mode, ``names`` set).

    Raises:
        ValueError: ``names`` is empty or not ids 0..n-1.
        ArchitectureMismatch: the arrays hold a tensor the architecture lacks, or one whose
            shape differs (weights of another model family or size).
    """
    import torch

    ids = sorted(int(k) for k in names)
    if not ids or ids != list(range(len(ids))):
        raise ValueError(f"class ids must be 0..n-1, got {ids[:10]}")
    order = [str(names[i]) for i in ids]
    model = _fresh_model(arch, order, _class_width(arrays), seed)
    state = model.state_dict()
    label = arch_label(arch)
    unknown = [k for k in arrays if k not in state]
    if unknown:
        raise ArchitectureMismatch(f"the weights do not fit a {label} model: {len(unknown)} of "
                                   f"their {len(arrays)} tensors are not in it (first: "
                                   f"{unknown[0]}); they are another model's")
    for key, value in state.items():
        if key not in arrays:
            continue
        src = np.asarray(arrays[key], dtype=np.float32)
        if is_class_row_key(key):
            fill = value.detach().cpu().numpy().copy()
            if absent == "silent":
                missing = [i for i, n in enumerate(order) if n not in arrays_names]
                fill[missing] = SILENT_BIAS if key.endswith(".bias") else 0.0
            if src.ndim != value.ndim or tuple(src.shape[1:]) != tuple(value.shape[1:]):
                raise ArchitectureMismatch(
                    f"the weights do not fit a {label} model: tensor {key} has shape "
                    f"{tuple(src.shape)}, the model wants {tuple(value.shape)}")
            src = align_rows(src, arrays_names, order, fill=fill)
        if tuple(src.shape) != tuple(value.shape):
            raise ArchitectureMismatch(f"the weights do not fit a {label} model: tensor {key} "
                                       f"has shape {tuple(src.shape)}, the model wants "
                                       f"{tuple(value.shape)}")
        value.copy_(torch.from_numpy(src).to(value.dtype))
    return model.float().eval()


def initial_global(seed: int = 0, arch: dict | None = None) -> dict[str, np.ndarray]:
    """The fleet's first global model: a fresh model whose head knows no class yet.

    Args:
        seed: torch seed (a server restarted without its saved model rebuilds the same one).
        arch: model yaml dict, or ``None`` for :data:`DEFAULT_ARCH` (yolo11n).

    Returns:
        key -> float32 array; class-row tensors have zero rows.
    """
    model = build_model({}, [], {0: "_"}, seed=seed, arch=arch)
    arrays = model_arrays(model)
    return {k: (v[:0].copy() if is_class_row_key(k) else v) for k, v in arrays.items()}


def global_from_checkpoint(path) -> tuple[dict[str, np.ndarray], list[str], dict | None]:
    """A fleet's first global model from a pretrained ultralytics checkpoint (``fleet.initial_model``).

    The fleet keeps the checkpoint's own architecture (its model yaml): a YOLOv8n start makes a
    YOLOv8n fleet.

    Args:
        path: a ``.pt`` file (e.g. a COCO-pretrained yolo11n); its ``names`` become the fleet's
            first classes, in id order.

    Returns:
        ``(arrays, names, arch)``: ``arch`` is the checkpoint's model yaml (:func:`model_arch`).

    Raises:
        ModelLoadError: the file is missing, not a ``.pt`` file (an exported engine has no
            trainable weights to send), or not a model checkpoint.
        ConfigError: a model fleet rounds cannot fine-tune (an end-to-end head such as
            YOLO26's or YOLOv10's, a segmentation, pose, OBB, classification or RT-DETR model),
            or one without a model yaml; one line naming ``fleet.initial_model``.
    """
    from pathlib import Path

    from edgecl.errors import ConfigError, ModelLoadError
    from edgecl.models.checkpoint import load_checkpoint

    if Path(path).is_dir():
        from edgecl.models.base import folder_given

        raise ModelLoadError(f"fleet.initial_model: {folder_given(Path(path))}")
    suffix = Path(path).suffix.lower()
    if suffix != ".pt":
        from edgecl.models.registry import MODEL_SUFFIXES

        what = ("an exported engine holds no trainable weights" if suffix in MODEL_SUFFIXES
                else f"{Path(path).name} is no model file name")
        raise ModelLoadError(f"fleet.initial_model={path}: a fleet starts from an ultralytics "
                             f".pt checkpoint ({what})")
    try:
        model, meta = load_checkpoint(path)
    except ModelLoadError as exc:  # 'checkpoint not found: X': named by its key, as the others
        raise ModelLoadError(f"fleet.initial_model: {exc}") from None
    arch = model_arch(model)
    if arch is None:
        raise ConfigError(f"fleet.initial_model {path} carries no model yaml (model.yaml): the "
                          f"fleet could not rebuild its architecture on the devices; {SUPPORTED}")
    problem = head_problem(arch)
    if problem is None and getattr(model.model[-1], "one2one_cv2", None) is not None:
        problem = head_problem({**arch, "end2end": True})
    if problem:
        raise ConfigError(f"fleet.initial_model {path} {problem}")
    names = {int(k): str(v) for k, v in (meta.get("names") or {}).items()}
    return model_arrays(model), [names[i] for i in sorted(names)], arch


def non_finite_key(arrays: dict) -> str | None:
    """The key of the first array holding a NaN or an infinity, or ``None`` when all are finite.

    Args:
        arrays: key -> array (a global model, or a fine-tuned one).

    Returns:
        The key, or ``None``.
    """
    return next((k for k, a in arrays.items() if not np.isfinite(np.asarray(a)).all()), None)
