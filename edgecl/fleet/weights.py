"""A DetectionModel as named arrays, and back, with its class rows aligned by name.

The global model travels as ``(arrays, names)``: ``arrays`` maps every floating-point
state-dict key of an unfused ultralytics DetectionModel to a numpy array (BatchNorm statistics
included, ``num_batches_tracked`` left out), and the class-row tensors
(:func:`edgecl.continual.federated.is_class_row_key`) hold one row per entry of ``names``.
A device maps those rows onto its own class ids (its :class:`~edgecl.models.classes.ClassRegistry`)
by name.
"""

from __future__ import annotations

import logging

import numpy as np

from edgecl.continual.federated import align_rows, is_class_row_key

log = logging.getLogger(__name__)

# Bias of a class row a model should never fire (e.g. a class a device-alone model never learnt
# when it is scored on every class): sigmoid(-30) ~ 1e-13.
SILENT_BIAS = -30.0


def model_arrays(model) -> dict[str, np.ndarray]:
    """The floating-point tensors of a model's state dict as float32 numpy arrays.

    Args:
        model: ultralytics DetectionModel (IDER's prior adapter, if attached, is folded into
            a copy first, so the keys are those of a plain model).

    Returns:
        state-dict key -> float32 array (CPU copies).
    """
    from edgecl.calibration.ider.adapter import fold_prior, has_prior_adapter

    if has_prior_adapter(model):
        import copy

        model = fold_prior(copy.deepcopy(model))
    return {k: v.detach().cpu().float().numpy().copy() for k, v in model.state_dict().items()
            if v.is_floating_point()}


def build_model(arrays: dict[str, np.ndarray], arrays_names: list[str], names: dict[int, str],
                *, absent: str = "init", seed: int = 0):
    """Build a DetectionModel with class ids ``names`` from named arrays.

    Rows of classes ``arrays_names`` lacks keep the fresh model's initialisation (ultralytics'
    class prior bias, as :func:`edgecl.continual.head.grow_head` gives a new class) when
    ``absent="init"``, or are silenced (zero weights, bias :data:`SILENT_BIAS`) when
    ``absent="silent"``.

    Args:
        arrays: key -> array; class rows in ``arrays_names`` order. Keys a fresh yolo11n lacks
            are ignored (logged); keys it has that ``arrays`` lacks keep their initial values.
        arrays_names: class names of the rows of ``arrays``.
        names: class id -> name of the model to build (ids 0..n-1).
        absent: ``init`` or ``silent``.
        seed: torch seed for the fresh initialisation (same seed, same weights).

    Returns:
        The DetectionModel (float32, CPU, eval mode, ``names`` set).

    Raises:
        ValueError: ``names`` is empty or not ids 0..n-1, a shared tensor's shape differs.
    """
    import torch

    from edgecl.ultra import build_detection_model

    ids = sorted(int(k) for k in names)
    if not ids or ids != list(range(len(ids))):
        raise ValueError(f"class ids must be 0..n-1, got {ids[:10]}")
    order = [str(names[i]) for i in ids]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_detection_model(len(order), names={i: order[i] for i in ids})
    state = model.state_dict()
    unknown = [k for k in arrays if k not in state]
    if unknown:
        log.warning("%d tensors not in the model ignored (first: %s)", len(unknown), unknown[0])
    for key, value in state.items():
        if key not in arrays:
            continue
        src = np.asarray(arrays[key], dtype=np.float32)
        if is_class_row_key(key):
            fill = value.detach().cpu().numpy().copy()
            if absent == "silent":
                missing = [i for i, n in enumerate(order) if n not in arrays_names]
                fill[missing] = SILENT_BIAS if key.endswith(".bias") else 0.0
            src = align_rows(src, arrays_names, order, fill=fill)
        if tuple(src.shape) != tuple(value.shape):
            raise ValueError(f"tensor {key} has shape {tuple(src.shape)}, the model wants "
                             f"{tuple(value.shape)}")
        value.copy_(torch.from_numpy(src).to(value.dtype))
    return model.float().eval()


def initial_global(seed: int = 0) -> dict[str, np.ndarray]:
    """The fleet's first global model: a fresh yolo11n whose head knows no class yet.

    Args:
        seed: torch seed (a server restarted without its saved model rebuilds the same one).

    Returns:
        key -> float32 array; class-row tensors have zero rows.
    """
    model = build_model({}, [], {0: "_"}, seed=seed)
    arrays = model_arrays(model)
    return {k: (v[:0].copy() if is_class_row_key(k) else v) for k, v in arrays.items()}


def global_from_checkpoint(path) -> tuple[dict[str, np.ndarray], list[str]]:
    """A fleet's first global model from a pretrained ultralytics checkpoint (``fleet.initial_model``).

    Args:
        path: a ``.pt`` file (e.g. a COCO-pretrained yolo11n); its ``names`` become the fleet's
            first classes, in id order.

    Returns:
        ``(arrays, names)``.

    Raises:
        ModelLoadError: the file is missing, not a ``.pt`` file (an exported engine has no
            trainable weights to send), or not a model checkpoint.
    """
    from pathlib import Path

    from edgecl.errors import ModelLoadError
    from edgecl.models.checkpoint import load_checkpoint

    if Path(path).suffix.lower() != ".pt":
        raise ModelLoadError(f"fleet.initial_model={path}: a fleet starts from an ultralytics "
                             f".pt checkpoint (an exported engine holds no trainable weights)")
    model, meta = load_checkpoint(path)
    names = {int(k): str(v) for k, v in (meta.get("names") or {}).items()}
    return model_arrays(model), [names[i] for i in sorted(names)]


def non_finite_key(arrays: dict) -> str | None:
    """The key of the first array holding a NaN or an infinity, or ``None`` when all are finite.

    Args:
        arrays: key -> array (a global model, or a fine-tuned one).

    Returns:
        The key, or ``None``.
    """
    return next((k for k, a in arrays.items() if not np.isfinite(np.asarray(a)).all()), None)
