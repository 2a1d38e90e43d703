"""IDER as a FineTuner hook: adds the second-pass and distillation terms to each batch loss."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from edgecl.models.prior_adapter import attach_prior_adapter, detect_head
from edgecl.calibration.ider.losses import distillation_loss, second_pass_cls_loss

if TYPE_CHECKING:
    from edgecl.config import IderConfig


class IderHook:
    """Idempotent experience replay for the YOLO class branch (see ``edgecl.calibration.ider``).

    Pass 1 is the FineTuner's ordinary forward (uniform prior) with the full detection loss.
    This hook adds, per batch:

    * ``second_pass_weight`` x the class loss of pass 2 (prior = sigmoid of pass-1 scores),
      reusing pass 1's label assignment;
    * with a previous version: ``distill_memory_weight`` (replayed images) or
      ``distill_current_weight`` (new images) x the idempotence distillation MSE.

    Args:
        cfg: the ``ider`` config section.
        prev_model: previous model version (copied, frozen); ``None`` skips distillation.

    Attributes:
        last_terms: the latest batch's terms as floats (``ider_pass2``, ``ider_distill``).
    """

    def __init__(self, cfg: IderConfig, prev_model: torch.nn.Module | None = None):
        self.cfg = cfg
        self._prev_source = prev_model
        self.prev_model = None
        self.tuner = None
        self.last_terms: dict[str, float] = {}

    def on_round_start(self, tuner) -> None:
        """Attach the adapter to the trained model and prepare the frozen previous version.

        Args:
            tuner: the FineTuner about to train (its model, criterion and device are set).
        """
        self.tuner = tuner
        attach_prior_adapter(tuner.model)
        if self._prev_source is not None and self.prev_model is None:
            prev = copy.deepcopy(self._prev_source).to(tuner.device).float().eval()
            attach_prior_adapter(prev)  # a plain previous version: zero adapter, prior ignored
            for p in prev.parameters():
                p.requires_grad_(False)
            self.prev_model = prev

    def on_batch_loss(self, batch: dict, preds: dict, loss_items: dict) -> torch.Tensor | None:
        """Compute IDER's extra terms for one batch.

        Args:
            batch: the preprocessed batch (``img``, labels, ``is_replay`` (B,) bool).
            preds: pass-1 raw predictions (``boxes``, ``scores``, ``feats``).
            loss_items: pass-1 detached loss items (unused).

        Returns:
            The extra loss (same scale as the criterion's summed loss).
        """
        tuner = self.tuner
        assignment = tuner.criterion.last_assignment
        extra = second_pass_cls_loss(tuner.model, preds, assignment, float(tuner.hyp.cls))
        extra = extra * self.cfg.second_pass_weight
        self.last_terms = {"ider_pass2": float(extra.detach())}
        if self.prev_model is not None and detect_head(self.prev_model).nc <= preds["scores"].shape[1]:
            is_replay = batch["is_replay"].to(preds["scores"].device).float()
            weights = (self.cfg.distill_current_weight
                       + is_replay * (self.cfg.distill_memory_weight - self.cfg.distill_current_weight))
            distill = distillation_loss(self.prev_model, batch["img"], preds["scores"], weights,
                                        self.cfg.distill_conf)
            self.last_terms["ider_distill"] = float(distill.detach())
            extra = extra + distill
        return extra

    def on_round_end(self, result) -> None:
        """Release the previous version's copy.

        Args:
            result: the round's result (unused).
        """
        self.prev_model = None
        self.tuner = None
