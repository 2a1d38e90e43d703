"""The small detectors benchmarks start from: trained once on a dataset's images, then cached.

``bench learn`` (its parent), ``bench perf --backends`` (the model every engine is exported
from) and ``bench field`` (the team's own pretrained model) each need one; a rerun with the same
data and settings reuses the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path


def cache_key(*parts) -> str:
    """Short stable hash of the settings that define a cached checkpoint (12 hex digits)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def images_fingerprint(images: list[Path]) -> str:
    """Fingerprint of training images and their labels: each image's bytes and its label
    file's bytes, in order (not their paths or times: a work copy of the same data is the same
    data).

    Args:
        images: image paths (labels in the matching ``labels/`` folders).

    Returns:
        16 hex digits.
    """
    from edgecl.data.labels import label_path_for
    from edgecl.input_files import label_bytes_for_hash
    from edgecl.models.base import sha256_file

    digest = hashlib.sha256()
    for image in images:
        digest.update(sha256_file(image).encode())
        label = label_path_for(Path(image))
        digest.update(label_bytes_for_hash(label))
    return digest.hexdigest()[:16]


def cached_trained_model(images: list[Path], names: dict[int, str], learner_cfg, cache_dir: Path,
                         *, steps: int, prefix: str, key_parts: tuple, threads: int | None = None,
                         progress=None, what: str = "") -> Path:
    """Train (or reuse) a YOLO11n on ``images`` with edgecl's fine-tuner, from scratch.

    The cache key is ``key_parts`` plus the class names, a fingerprint of the training images
    and their labels (:func:`images_fingerprint`: a dataset regenerated in place is new data),
    the image size, batch, learning rate and steps.

    Args:
        images: training images (labels in the matching ``labels/`` folders, ids < len(names)).
        names: class id -> name of the detector's head.
        learner_cfg: the ``learner`` config section (imgsz, batch, lr, BatchNorm re-estimation).
        cache_dir: where the checkpoint is kept.
        steps: optimiser steps.
        prefix: file name prefix of the checkpoint (``parent``, ``model``, ...).
        key_parts: what else identifies the data (e.g. the resolved tasks.yaml path).
        threads: torch threads while training (``None``: leave as is).
        progress: optional ``callable(str)``, told once when training starts.
        what: words for the progress line (e.g. ``"on task t1 (car, truck)"``).

    Returns:
        The checkpoint path (``cache_dir/PREFIX-KEY.pt``).
    """
    lc = learner_cfg
    key = cache_key(*key_parts, sorted(names.items()), images_fingerprint(images), lc.imgsz,
                    lc.batch, lc.lr, steps)
    path = Path(cache_dir) / f"{prefix}-{key}.pt"
    if path.is_file():
        return path
    import torch

    from edgecl.config import IderConfig
    from edgecl.continual.finetune import FineTuner
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    if progress is not None:
        progress(f"training YOLO11n {what}: {steps} steps at {lc.imgsz} px (cached in {path})")
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_detection_model(len(names), names=dict(names))
    cfg = replace(lc, bn_recalibration_batches=max(lc.bn_recalibration_batches, 8))
    FineTuner(model, cfg, IderConfig()).run(list(images), [], budget_s=1e9, max_steps=steps,
                                           epochs=10**6, device="cpu")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return save_checkpoint(model, path, meta={"names": dict(names), "imgsz": lc.imgsz,
                                              "parent": None})
