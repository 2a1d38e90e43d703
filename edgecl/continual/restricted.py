"""A class loss restricted to the classes a device holds labels of, as a FineTuner hook.

In a fleet, each device fine-tunes the global model on its own frames, which show only some of
the fleet's classes (label skew). With the plain YOLO class loss (a binary cross-entropy per
class and anchor), every anchor of a device's frames is a negative for every class the device
has no box of, so each local round pushes the shared layers to silence the classes other
devices taught, even where such objects appear unlabelled in its frames; averaging such updates
erodes those classes in the global model. Restricting the class loss to the device's own classes
removes that push: the other classes' outputs get no gradient, and what they know comes from the
devices that hold them. This is the sigmoid-loss form of FedRS (Li & Zhan, "FedRS: Federated
Learning with Restricted Softmax for Label Distribution Non-IID Data", KDD 2021), applied through
the per-class weights that ultralytics' ``v8DetectionLoss`` already multiplies its class loss by
(``class_weights``, shape ``(1, 1, nc)``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["RestrictedClassLoss"]


class RestrictedClassLoss:
    """Weights the class loss 1 on the given classes and 0 on every other class.

    Args:
        class_ids: the head's class ids the device holds labels of (ids at or beyond the head's
            ``nc`` are ignored).

    Attributes:
        weights: the ``(1, 1, nc)`` float tensor set on the criterion (after round start).
    """

    def __init__(self, class_ids: Iterable[int]):
        self.class_ids = sorted({int(c) for c in class_ids})
        self.weights = None
        self.last_terms: dict[str, float] = {}

    def on_round_start(self, tuner) -> None:
        """Set the criterion's per-class weights (``v8DetectionLoss.class_weights``).

        Args:
            tuner: the FineTuner about to train (its criterion already built).
        """
        import torch

        nc = int(tuner.model.model[-1].nc)
        weights = torch.zeros(nc, dtype=torch.float32, device=tuner.device)
        keep = [c for c in self.class_ids if 0 <= c < nc]
        weights[keep] = 1.0
        self.weights = weights.view(1, 1, -1)
        tuner.criterion.class_weights = self.weights

    def on_batch_loss(self, batch: dict, preds, loss_items):
        """No extra term: the restriction acts inside the criterion.

        Args:
            batch: the preprocessed batch (unused).
            preds: the student's predictions (unused).
            loss_items: the criterion's loss items (unused).

        Returns:
            None.
        """
        return None

    def on_round_end(self, result) -> None:
        """Nothing to release (the criterion belongs to the finished round).

        Args:
            result: the round's result (unused).
        """
