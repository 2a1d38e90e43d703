"""LwF-style distillation of the previous model's YOLO head, as a :class:`FineTuner` hook.

Why: a new task's images show objects of earlier classes with no label (and in the field a
person labels the new object and skips the known ones), so plain training teaches that they are
background.  Distilling the previous model's outputs on every training image keeps what it
detected (Li & Hoiem, "Learning without Forgetting", 2016; for YOLO: "Teach YOLO to Remember",
arXiv 2503.04688, and RCLPOD, arXiv 2409.05650, where head distillation lifted YOLOv8n from
36.4 to 73.1 VOC mAP50 in 10+10).

Two terms, on the one-to-many head of an anchor-free YOLO (v8/11/12) and, for an end-to-end
head (YOLO26, YOLOv10), on its one-to-one branch as well (each branch against the teacher's
same branch), and only on the previous model's classes (the student's head may have grown; the
new rows are free):

* class term: the Bernoulli KL divergence ``KL(sigmoid(t) || sigmoid(s))`` of every anchor and
  old class (zero when the student's scores equal the teacher's), summed over anchors and
  classes and divided by the teacher's soft detection count ``max(1, sum_a max_c sigmoid(t))``
  (ultralytics divides its class loss by the sum of its target scores in the same way);
* box term: where the teacher is confident (max old-class score > ``conf``), the KL divergence
  of the teacher's DFL side distributions (``reg_max`` bins, softmax) to the student's, mean
  over the four sides, averaged over those anchors weighted by the teacher's score; a head
  without DFL bins (``reg_max`` 1, YOLO26) regresses the sides directly, and there the term is
  their mean L1 distance.

Scale: like ``v8DetectionLoss`` (whose loss the fine-tuner sums over the batch), the hook
returns a sum over the batch's images of the per-image terms times their weights.

Cost: when the round freezes the first layers (``learner.freeze_layers``) and they are the
previous model's own (the usual later round), the teacher does not run them again: it takes the
student's outputs of those layers for the same batch (frozen, in eval mode, so identical) and
runs only the rest of its network. Where the tuner prepares batches ahead of their step (on a
CPU, in its batch-loading thread), the teacher's outputs are computed there too
(:meth:`DistillHook.on_batch_prepare`), while the training thread steps through the previous
batch.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from typing import TYPE_CHECKING

from edgecl.continual import yolo_train

if TYPE_CHECKING:
    import torch

__all__ = ["DistillHook", "fuse_batchnorm", "lwf_terms"]

log = logging.getLogger(__name__)

TEACHER_KEY = "lwf_teacher"
"""Batch key of the teacher's outputs when :meth:`DistillHook.on_batch_prepare` computed them."""


@functools.lru_cache(maxsize=1)
def _shared_output_class():
    """The module that stands in for a teacher layer whose output the student computed."""
    from torch import nn

    class SharedOutput(nn.Module):
        """Returns the student's output of the same frozen layer for the current batch; keeps
        the attributes ultralytics' forward loop reads (``f``, ``i``, ``type``, ``np``)."""

        def __init__(self, original, store: dict, index: int):
            super().__init__()
            self.f, self.i = original.f, original.i
            self.type, self.np = getattr(original, "type", ""), getattr(original, "np", 0)
            self._store, self._index = store, index

        def forward(self, x):
            """The student's output of this layer for the current batch (``x`` unused)."""
            return self._store[self._index]

    return SharedOutput


def _same_layers(student_layers, teacher_layers) -> bool:
    """True when two layer lists have the same types and bit-identical weights and buffers
    (the teacher's taken to the student's device and dtype, as the teacher's copy will be)."""
    import torch

    for a, b in zip(student_layers, teacher_layers):
        if type(a) is not type(b):
            return False
        sa, sb = a.state_dict(), b.state_dict()
        if sa.keys() != sb.keys() or not all(
                torch.equal(sa[k], sb[k].to(device=sa[k].device, dtype=sa[k].dtype)) for k in sa):
            return False
    return len(student_layers) == len(teacher_layers)


def fuse_batchnorm(model) -> int:
    """Fold each BatchNorm into the convolution before it, for a model only ever run in eval mode.

    ultralytics' own fold (``fuse_conv_and_bn``, what ``DetectionModel.fuse`` does for inference)
    applied to its ``Conv`` and ``DWConv`` blocks only: ``DetectionModel.fuse`` would also drop an
    end-to-end head's one-to-many branch, which the teacher's distillation reads. The outputs are
    those of the unfused model up to rounding; one conv instead of conv + BatchNorm per block.

    Args:
        model: the ultralytics model (changed in place; its state_dict keys change too).

    Returns:
        Blocks folded.
    """
    from edgecl.ultra import ensure_offline

    ensure_offline()
    from ultralytics.nn.modules.conv import Conv, DWConv
    from ultralytics.utils.torch_utils import fuse_conv_and_bn

    folded = 0
    for m in model.modules():
        if type(m) in (Conv, DWConv) and hasattr(m, "bn"):
            m.conv = fuse_conv_and_bn(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
            folded += 1
    return folded


def _branch(preds: dict, name: str) -> dict | None:
    """One branch of a head's training output (a one-to-many head is its own ``one2many``)."""
    if "one2many" in preds:
        return preds.get(name)
    return preds if name == "one2many" else None


def lwf_terms(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
              student_boxes: torch.Tensor, teacher_boxes: torch.Tensor, *, reg_max: int,
              conf: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image LwF class and box terms (see the module docstring).

    Args:
        student_scores: student class logits ``(B, nc, A)`` (``nc >= nc_old``), with gradient.
        teacher_scores: teacher class logits ``(B, nc_old, A)``.
        student_boxes: student box logits ``(B, 4 * reg_max, A)``.
        teacher_boxes: teacher box logits ``(B, 4 * reg_max, A)``.
        reg_max: DFL bins per box side (1: direct regression, L1 term).
        conf: teacher probability above which an anchor's box is distilled.

    Returns:
        ``(cls, box)``, each float ``(B,)``: zero where the student equals the teacher, and the
        box term zero for an image without a confident teacher anchor.

    Raises:
        ValueError: shapes that do not fit (fewer student classes than teacher classes,
            different anchors or batch sizes, box channels not ``4 * reg_max``).
    """
    import torch
    import torch.nn.functional as F

    b, nc_old, a = teacher_scores.shape
    if student_scores.shape[0] != b or student_scores.shape[2] != a or student_scores.shape[1] < nc_old:
        raise ValueError(f"student scores {tuple(student_scores.shape)} do not cover teacher "
                         f"scores {tuple(teacher_scores.shape)}")
    if student_boxes.shape != teacher_boxes.shape or student_boxes.shape[1] != 4 * reg_max:
        raise ValueError(f"box logits {tuple(student_boxes.shape)} vs {tuple(teacher_boxes.shape)}"
                         f" (expected (B, {4 * reg_max}, A))")
    s = student_scores[:, :nc_old].float()
    t = teacher_scores.float()
    t_prob = t.sigmoid()
    # Bernoulli KL(t || s) = BCE(s, t) - BCE(t, t); BCE with logits is numerically stable
    kl = (F.binary_cross_entropy_with_logits(s, t_prob, reduction="none")
          - F.binary_cross_entropy_with_logits(t, t_prob, reduction="none"))
    t_max = t_prob.max(dim=1).values  # (B, A)
    cls = kl.clamp(min=0).sum(dim=(1, 2)) / t_max.sum(dim=1).clamp(min=1.0)

    weight = torch.where(t_max > conf, t_max, torch.zeros_like(t_max))  # (B, A)
    sb = student_boxes.float().view(b, 4, reg_max, a)
    tb = teacher_boxes.float().view(b, 4, reg_max, a)
    if reg_max == 1:  # no DFL bins (YOLO26): the sides are regressed directly, so L1 distance
        box_kl = (sb - tb).abs().mean(dim=(1, 2))  # (B, A)
    else:
        t_log = F.log_softmax(tb, dim=2)
        box_kl = (t_log.exp() * (t_log - F.log_softmax(sb, dim=2))).sum(dim=2).mean(dim=1)
    box = (box_kl * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1e-6)
    box = torch.where(weight.sum(dim=1) > 0, box, torch.zeros_like(box))
    return cls, box


class DistillHook:
    """FineTuner hook adding LwF distillation against the previous model version.

    Args:
        prev_model: the previous version (copied at round start, frozen, eval mode).
        cls_weight: weight of the class term (0: off).
        box_weight: weight of the box term (0: off).
        conf: teacher score above which an anchor's box is distilled.

    Attributes:
        last_terms: the latest batch's terms as floats (``distill_cls``, ``distill_box``).
    """

    def __init__(self, prev_model, *, cls_weight: float, box_weight: float, conf: float = 0.25):
        self._prev_source = prev_model
        self.teacher = None
        self.cls_weight = float(cls_weight)
        self.box_weight = float(box_weight)
        self.conf = float(conf)
        self.last_terms: dict[str, float] = {}
        self.shared_layers = 0
        self._store: dict = {}
        self._handles: list = []

    def on_round_start(self, tuner) -> None:
        """Copy the previous model to the tuner's device, frozen and in eval mode.

        Args:
            tuner: the FineTuner about to train (its device is set).
        """
        # the student's precision: the teacher may take the student's frozen layers' outputs
        self._autocast = getattr(tuner, "autocast", contextlib.nullcontext)
        source = self._prev_source
        frozen = list(getattr(tuner, "frozen", []) or [])
        memo: dict = {}
        if frozen and _same_layers(frozen, list(source.model[:len(frozen)])):
            # the layers the teacher takes from the student are not copied at all: each one
            # is replaced by its stand-in while the rest of the model is copied
            shared = _shared_output_class()
            for i, (layer, original) in enumerate(zip(frozen, source.model)):
                self._handles.append(layer.register_forward_hook(
                    lambda _module, _inputs, output, i=i: self._store.__setitem__(i, output)))
                memo[id(original)] = shared(original, self._store, i)
            self.shared_layers = len(frozen)
            log.debug("LwF teacher shares the student's %d frozen layers", self.shared_layers)
        teacher = copy.deepcopy(source, memo).to(tuner.device).float().eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher
        fuse_batchnorm(teacher)
        if getattr(tuner, "memory_format", None) is not None:  # the student's layout
            teacher.to(memory_format=tuner.memory_format)

    @staticmethod
    def _outputs(out):
        """The head's raw training outputs from a model's return value, in float32."""
        return yolo_train.float32_outputs(out[1] if isinstance(out, (tuple, list)) else out)

    def on_batch_prepare(self, batch: dict) -> None:
        """Compute the teacher's outputs for a batch ahead of its step, where the tuner
        prepares batches (its batch-loading thread on a CPU): from the frozen layers' outputs
        the batch carries (:class:`~edgecl.continual.yolo_train.FrozenLayers`) when the teacher
        shares them, else from the images. Nothing is computed when the teacher needs the
        student's own forward pass of this batch (then :meth:`on_batch_loss` runs it).

        Args:
            batch: the preprocessed batch; gets ``TEACHER_KEY`` (the head's outputs, float32).
        """
        import torch

        if self.teacher is None or (self.cls_weight <= 0 and self.box_weight <= 0):
            return
        frozen = batch.get(yolo_train.FROZEN_KEY)
        if self.shared_layers and (frozen is None or len(frozen[1]) != self.shared_layers):
            return
        with torch.no_grad(), self._autocast():
            if self.shared_layers:
                out, _ = yolo_train.run_layers(self.teacher.model[self.shared_layers:],
                                               self.teacher.save, *frozen)
            else:
                out = self.teacher(batch["img"])
        batch[TEACHER_KEY] = self._outputs(out)

    def on_batch_loss(self, batch: dict, preds: dict, loss_items: dict):
        """The weighted distillation loss of one batch (sum over its images).

        Args:
            batch: the preprocessed batch (``img`` float (B, 3, H, W) in 0..1).
            preds: the student's raw predictions (``boxes``, ``scores``).
            loss_items: the criterion's loss items (unused).

        Returns:
            Scalar tensor, or None when both weights are 0.
        """
        import torch

        if self.teacher is None or (self.cls_weight <= 0 and self.box_weight <= 0):
            return None
        raw = batch.get(TEACHER_KEY)
        if raw is None:
            if self.shared_layers and len(self._store) < self.shared_layers:
                raise RuntimeError("LwF teacher: the student's frozen layers did not run on this "
                                   "batch")
            with torch.no_grad(), self._autocast():
                raw = self._outputs(self.teacher(batch["img"]))
        head = self.teacher.model[-1]
        cls = box = 0.0
        # each branch of the head learns from the teacher's same branch: the one-to-many one of
        # every head, and the one-to-one one (what an end-to-end head serves) where both have it
        for branch in ("one2many", "one2one"):
            student, teacher = _branch(preds, branch), _branch(raw, branch)
            if student is None or teacher is None:
                continue
            branch_cls, branch_box = lwf_terms(student["scores"], teacher["scores"],
                                               student["boxes"], teacher["boxes"],
                                               reg_max=int(head.reg_max), conf=self.conf)
            cls, box = cls + branch_cls, box + branch_box
        loss = self.cls_weight * cls.sum() + self.box_weight * box.sum()
        self.last_terms = {"distill_cls": float(cls.sum().detach()),
                           "distill_box": float(box.sum().detach())}
        return loss

    def on_round_end(self, result) -> None:
        """Release the teacher.

        Args:
            result: the round's result (unused).
        """
        for handle in self._handles:
            handle.remove()
        self._handles, self._store, self.shared_layers = [], {}, 0
        self.teacher = None
