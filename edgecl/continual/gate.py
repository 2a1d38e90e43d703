"""The acceptance gate: a candidate model ships only if it did not forget too much."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgecl.config import GateConfig


@dataclass(frozen=True)
class GateVerdict:
    """Outcome of the gate.

    Attributes:
        accepted: True when the candidate may be staged for promotion.
        reason: one line explaining the verdict.
        acc_parent: mean mAP50-95 of the current model over all tasks seen (NaN if none).
        acc_candidate: the same for the candidate.
        drops: task -> mAP drop (parent - candidate) for tasks learnt before this round.
    """

    accepted: bool
    reason: str
    acc_parent: float
    acc_candidate: float
    drops: dict


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def judge(parent: dict[str, float] | None, candidate: dict[str, float], learnt_before: list[str],
          cfg: GateConfig, training_failed: str = "") -> GateVerdict:
    """Decide whether a candidate is accepted.

    Rejects when training failed, when any task learnt before this round loses more than
    ``cfg.max_forgetting`` mAP50-95, or when ACC over every task seen changes by less than
    ``cfg.min_acc_delta``. Without a parent (first model) only a finite ACC is required.

    Args:
        parent: task -> mAP50-95 of the current model on the same held-out slices, or None.
        candidate: task -> mAP50-95 of the candidate.
        learnt_before: tasks the parent had already learnt.
        cfg: gate thresholds.
        training_failed: non-empty when fine-tuning stopped abnormally (e.g. NaN loss).

    Returns:
        The verdict.
    """
    acc_c = _mean(candidate.values())
    acc_p = _mean(parent.values()) if parent else float("nan")
    drops = {t: round(parent[t] - candidate[t], 4) for t in learnt_before
             if parent and t in parent and t in candidate}
    if training_failed:
        return GateVerdict(False, f"training failed: {training_failed}", acc_p, acc_c, drops)
    if math.isnan(acc_c):
        return GateVerdict(False, "candidate could not be evaluated (no held-out samples)",
                           acc_p, acc_c, drops)
    worst = max(drops.items(), key=lambda kv: kv[1], default=None)
    if worst is not None and worst[1] > cfg.max_forgetting:
        return GateVerdict(False, f"task {worst[0]} forgot {worst[1]:.3f} mAP50-95 "
                                  f"(bound {cfg.max_forgetting})", acc_p, acc_c, drops)
    if not math.isnan(acc_p) and acc_c - acc_p < cfg.min_acc_delta:
        return GateVerdict(False, f"ACC fell from {acc_p:.3f} to {acc_c:.3f} "
                                  f"(allowed change {cfg.min_acc_delta})", acc_p, acc_c, drops)
    return GateVerdict(True, f"accepted: ACC {acc_p:.3f} -> {acc_c:.3f}", acc_p, acc_c, drops)
