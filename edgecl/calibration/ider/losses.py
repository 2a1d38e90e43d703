"""IDER's two loss terms for the YOLO head: second-pass classification and idempotence distillation.

Scale: like ``v8DetectionLoss`` (whose loss is multiplied by the batch size before the
optimiser sees it), both terms return a *sum over the images of the batch*, so their
weights are comparable with ultralytics' own box/cls/dfl gains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgecl.models.prior_adapter import detect_head, prior_context, split_levels


@contextlib.contextmanager
def frozen_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics unchanged inside the block (batch stats still used).

    The second pass sees pass-1 scores as its prior; letting it update running statistics
    would mix two input distributions into the statistics used at inference.

    Args:
        module: module whose BatchNorm layers to freeze.

    Yields:
        Nothing.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    # the batch count too: with momentum=None (a round averaging its last batches' statistics)
    # it weighs the next batch, and a pass that added nothing must not count
    counts = [None if m.num_batches_tracked is None else m.num_batches_tracked.clone()
              for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum, count in zip(norms, saved, counts):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def class_logits(head: nn.Module, feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Run only the class branch of a ``Detect`` head.

    Args:
        head: ultralytics ``Detect``.
        feats: its per-level input features.

    Returns:
        Class logits ``(B, nc, anchors)``, levels concatenated as ``Detect`` does.
    """
    bs = feats[0].shape[0]
    return torch.cat([head.cv3[i](feats[i]).view(bs, head.nc, -1) for i in range(head.nl)], dim=-1)


def second_pass_cls_loss(model: nn.Module, preds: dict, assignment, cls_gain: float) -> torch.Tensor:
    """Classification loss of IDER's second pass, reusing pass 1's label assignment.

    The prior fed back is ``sigmoid(pass-1 logits)``, detached: the reference IDER code
    feeds back ``argmax(softmax(y1))``, which carries no gradient either; gradients flow
    into the network through the second pass only.

    Args:
        model: the DetectionModel being trained (adapters attached).
        preds: pass-1 raw predictions (``scores`` (B, nc, A) and ``feats``).
        assignment: pass-1 :class:`~edgecl.continual.yolo_train.Assignment`.
        cls_gain: ultralytics' ``cls`` loss gain.

    Returns:
        Scalar ``BCE(pass-2 logits, target_scores) / target_scores_sum * cls_gain * B``.
    """
    head = detect_head(model)
    feats = preds["feats"]
    prior = split_levels(preds["scores"].detach().sigmoid(), feats)
    with prior_context(model, prior), frozen_bn_statistics(head):
        logits2 = class_logits(head, feats)
    targets = assignment.target_scores.to(logits2.dtype)
    bce = F.binary_cross_entropy_with_logits(logits2.permute(0, 2, 1), targets, reduction="sum")
    return bce / assignment.target_scores_sum * cls_gain * logits2.shape[0]


def detect_inputs(model: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    """Run a DetectionModel up to its head and return the head's per-level inputs.

    Mirrors ultralytics' ``BaseModel._predict_once`` routing without running the head.

    Args:
        model: DetectionModel.
        img: input batch (B, 3, H, W) in 0..1.

    Returns:
        The feature maps ``Detect`` receives, one per level.
    """
    y, x = [], img
    for m in model.model[:-1]:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x if m.i in model.save else None)
    head = model.model[-1]
    return [x if j == -1 else y[j] for j in head.f]


def distillation_loss(prev_model: nn.Module, img: torch.Tensor, logits1: torch.Tensor,
                      weights: torch.Tensor, conf: float) -> torch.Tensor:
    """IDER idempotence distillation against the previous (frozen) model version.

    The current pass-1 scores, sliced to the old classes and detached, are the old model's
    prior; only the old model's backbone, neck and class branch run (its box branch does
    not).  The loss is the MSE between current and old class probabilities on anchors
    where the old model is confident (max old-class probability > ``conf``).

    Args:
        prev_model: previous version, eval mode, adapters attached.
        img: the batch images (B, 3, H, W).
        logits1: current pass-1 class logits (B, nc, anchors), with gradient.
        weights: per-image weights (B,) (memory vs current sample weight).
        conf: confidence threshold on the old model's probabilities.

    Returns:
        Scalar ``sum_b weights[b] * mean over confident anchors and old classes of the
        squared difference`` (images without a confident anchor contribute 0).
    """
    old_head = detect_head(prev_model)
    old_nc = old_head.nc
    with torch.no_grad():
        feats = detect_inputs(prev_model, img)
        prior = split_levels(logits1[:, :old_nc].detach().sigmoid(), feats)
        with prior_context(prev_model, prior):
            old_p = class_logits(old_head, feats).sigmoid()
        mask = (old_p.max(dim=1).values > conf).to(logits1.dtype)  # (B, A)
    cur_p = logits1[:, :old_nc].sigmoid()
    per_anchor = (cur_p - old_p).pow(2).mean(dim=1)  # (B, A)
    per_image = (per_anchor * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return (weights.to(per_image) * per_image).sum()
