"""MIR's virtual step (Aljundi et al., 2019) for a YOLO DetectionModel.

For an incoming batch B and memory candidates c: g = grad of the detection loss on B at the
current weights; theta' = theta - lr * g (a virtual SGD step, undone afterwards); the score of
a candidate is ``loss(c; theta') - loss(c; theta)``: how much that image would be hurt by
learning the batch.  Replay the top-scoring ones with the batch.

g is clipped to the norm a real step clips to (``yolo_train.GRAD_CLIP_NORM``, as ultralytics'
trainer does): the detection loss is summed over the batch, and an unclipped step of a young
model moved the weights so far that the scores reached 1e11 or became NaN for every candidate
(a YOLO26n after three steps, lr 0.01). A score that is still not finite counts as unscored
(``-inf``).

Losses are ultralytics' ``v8DetectionLoss`` (box + cls + dfl, gains from ``training_hyp``)
on letterboxed, non-augmented images; BatchNorm runs in eval mode so scoring never touches
running statistics, and the model's weights, mode and ``requires_grad`` flags are restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from edgecl.continual import yolo_train
from edgecl.errors import LabelError

SCORE_CHUNK = 16  # images per forward pass while scoring


def _load_batch(model, images: Sequence[Path | str], imgsz: int, hyp):
    """Letterbox images (with labels) into one collated batch; returns (batch, kept paths)."""
    dataset = yolo_train.build_dataset(images, model.names, imgsz=imgsz, augment=False, hyp=hyp,
                                       batch=max(1, len(images)))
    batch = dataset.collate_fn([dataset[i] for i in range(len(dataset))])
    return yolo_train.preprocess_batch(batch, next(model.parameters()).device), list(dataset.im_files)


def _image_labels(batch: dict, j: int) -> dict:
    mask = batch["batch_idx"] == j
    n = int(mask.sum())
    return {"batch_idx": batch["batch_idx"].new_zeros(n), "cls": batch["cls"][mask],
            "bboxes": batch["bboxes"][mask]}


def _chunk(batch: dict, lo: int, hi: int) -> dict:
    mask = (batch["batch_idx"] >= lo) & (batch["batch_idx"] < hi)
    return {"img": batch["img"][lo:hi], "batch_idx": batch["batch_idx"][mask] - lo,
            "cls": batch["cls"][mask], "bboxes": batch["bboxes"][mask]}


def per_image_losses(model, criterion, batch: dict):
    """Detection loss of each image of a batch (no gradient, model in eval mode).

    Args:
        model: DetectionModel in eval mode.
        criterion: ``v8DetectionLoss`` for the model.
        batch: preprocessed batch (``img``, ``batch_idx``, ``cls``, ``bboxes``).

    Returns:
        float tensor (B,) with box + cls + dfl loss (gains applied) per image.
    """
    import torch

    n = batch["img"].shape[0]
    out = torch.zeros(n)
    with torch.no_grad():
        for lo in range(0, n, SCORE_CHUNK):
            sub = _chunk(batch, lo, min(n, lo + SCORE_CHUNK))
            preds = yolo_train.one_to_many(model(sub["img"]))  # an end-to-end head: that branch
            for j in range(sub["img"].shape[0]):
                one = {"boxes": preds["boxes"][j:j + 1], "scores": preds["scores"][j:j + 1],
                       "feats": [f[j:j + 1] for f in preds["feats"]]}
                out[lo + j] = criterion(one, _image_labels(sub, j))[0].sum().cpu()
    return out


def _batch_gradient(model, criterion, batch: dict, params: list):
    import torch

    preds = yolo_train.one_to_many(model(batch["img"]))
    loss = criterion(preds, batch)[0].sum()
    return torch.autograd.grad(loss, params, allow_unused=True)


@contextlib.contextmanager
def _restored(model, hyp) -> Iterator[list]:
    """Yield the model's parameters (grad enabled, eval mode, ``args=hyp``); restore all after."""
    import torch

    was_training, saved_args = model.training, getattr(model, "args", None)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    saved = [p.detach().clone() for p in params]
    model.args = hyp
    model.eval()
    for p in params:
        p.requires_grad_(True)
    try:
        yield params
    finally:
        with torch.no_grad():
            for p, value, flag in zip(params, saved, flags):
                p.copy_(value)
                p.requires_grad_(flag)
        model.args = saved_args
        model.train(was_training)


def virtual_scorer(model, candidate_images: Sequence[Path | str], batch_images: Sequence[Path | str],
                   lr: float, *, imgsz: int = 160) -> np.ndarray:
    """Score memory candidates by how much a virtual step on the incoming batch hurts them.

    Args:
        model: DetectionModel (weights, mode, ``args`` and flags are restored afterwards).
        candidate_images: memory images to score (labels beside them, YOLO layout).
        batch_images: the incoming batch's images.
        lr: the real learning rate (step size of the virtual SGD step).
        imgsz: letterbox size in pixels.

    Returns:
        float64 array aligned with ``candidate_images``: ``loss(theta') - loss(theta)``;
        ``-inf`` for a candidate that could not be read or whose score is not finite.

    Raises:
        LabelError: no image of the incoming batch could be read.
    """
    import torch

    scores = np.full(len(candidate_images), -np.inf)
    if not candidate_images:
        return scores
    hyp = yolo_train.training_hyp(imgsz, lr)  # also puts ultralytics offline
    from ultralytics.utils.loss import v8DetectionLoss

    with _restored(model, hyp) as params:
        criterion = v8DetectionLoss(model)
        incoming, _ = _load_batch(model, batch_images, imgsz, hyp)
        try:
            candidates, kept = _load_batch(model, candidate_images, imgsz, hyp)
        except LabelError:
            return scores
        before = per_image_losses(model, criterion, candidates)
        grads = list(_batch_gradient(model, criterion, incoming, params))
        present = [g for g in grads if g is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present])) \
            if present else torch.tensor(0.0)
        scale = float(min(1.0, yolo_train.GRAD_CLIP_NORM / (float(norm) + 1e-6)))
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(lr * scale * g)
        after = per_image_losses(model, criterion, candidates)
    change = (after - before).double().numpy()
    change[~np.isfinite(change)] = -np.inf
    delta = dict(zip([str(Path(k).resolve()) for k in kept], change))
    for i, path in enumerate(candidate_images):
        scores[i] = delta.get(str(Path(path).resolve()), -np.inf)
    return scores


def make_virtual_scorer(model, batch_images: Sequence[Path | str], lr: float,
                        image_paths_by_id: Mapping[int, Path | str], *,
                        imgsz: int = 160) -> Callable[[list[int]], np.ndarray]:
    """Wrap :func:`virtual_scorer` as a callable of memory sample ids.

    Args:
        model: DetectionModel.
        batch_images: the incoming batch's images.
        lr: the real learning rate.
        image_paths_by_id: memory sample id -> image path.
        imgsz: letterbox size in pixels.

    Returns:
        ``score(ids) -> np.ndarray`` aligned with ``ids`` (higher = more interfered;
        ``-inf`` for unknown ids or unreadable images).
    """
    def score(ids: list[int]) -> np.ndarray:
        """Virtual-step scores of memory samples, aligned with ``ids``."""
        known = [i for i in ids if i in image_paths_by_id]
        values = virtual_scorer(model, [image_paths_by_id[i] for i in known], batch_images, lr,
                                imgsz=imgsz)
        by_id = dict(zip(known, values))
        return np.array([by_id.get(i, -np.inf) for i in ids], dtype=np.float64)

    return score
