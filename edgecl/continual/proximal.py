"""FedProx's proximal term as a :class:`~edgecl.continual.finetune.FineTuner` hook.

Li et al., "Federated Optimization in Heterogeneous Networks" (MLSys 2020): each device
minimises its own loss plus ``mu / 2 * ||w - w_global||^2`` over the weights it trains, which
keeps local updates of devices that see different classes from drifting apart before the
server averages them. ``mu = 0`` is plain FedAvg local training.

Scale: the fine-tuner's loss is a sum over the batch's images (as ultralytics'
``v8DetectionLoss``), so the term is multiplied by the batch size: ``mu`` then weighs it against
the per-image loss, as in the paper.
"""

from __future__ import annotations

__all__ = ["ProximalHook"]


class ProximalHook:
    """Adds ``batch * mu / 2 * sum((w - w_start)^2)`` over the trainable parameters.

    Args:
        mu: proximal weight (>= 0).

    Attributes:
        last_terms: the latest batch's term as a float (``proximal``).
    """

    def __init__(self, mu: float):
        if not mu >= 0:
            raise ValueError(f"proximal mu must be >= 0, got {mu}")
        self.mu = float(mu)
        self.anchor: list = []
        self.last_terms: dict[str, float] = {}

    def on_round_start(self, tuner) -> None:
        """Remember the weights the round starts from (the global model's).

        Args:
            tuner: the FineTuner about to train (its frozen layers already set).
        """
        self.anchor = [(p, p.detach().clone()) for p in tuner.model.parameters() if p.requires_grad]

    def on_batch_loss(self, batch: dict, preds, loss_items):
        """The batch's proximal term.

        Args:
            batch: the preprocessed batch (``img`` float (B, 3, H, W)).
            preds: the student's predictions (unused).
            loss_items: the criterion's loss items (unused).

        Returns:
            Scalar tensor, or None when ``mu`` is 0 or no parameter trains.
        """
        if self.mu <= 0 or not self.anchor:
            return None
        term = sum(((p - start) ** 2).sum() for p, start in self.anchor)
        loss = len(batch["img"]) * 0.5 * self.mu * term
        self.last_terms = {"proximal": float(loss.detach())}
        return loss

    def on_round_end(self, result) -> None:
        """Release the copies of the starting weights.

        Args:
            result: the round's result (unused).
        """
        self.anchor = []
