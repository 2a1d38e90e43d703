"""The INT8 accuracy gate: an INT8 engine serves only if no class loses more than a set mAP.

Both engines (FP32 and its INT8 quantisation) are scored by the same evaluator on the round's
held-out images; the INT8 one is accepted when, on EVERY class the FP32 one was scored on, its
mAP50-95 is at most ``export.int8_max_drop`` lower. A class the INT8 evaluation lacks, a
non-finite score on either side, or no class at all (no held-out image), is a refusal: an
unmeasured engine never serves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgecl.continual.gate import beyond_bound, within_bound

# Float noise allowance on the comparison (mAP is a mean of ratios).
_EPS = 1e-9


@dataclass(frozen=True)
class Int8Verdict:
    """The gate's decision.

    Attributes:
        accepted: True when the INT8 engine may serve.
        reason: one line, e.g. ``class car: mAP50-95 0.412 -> 0.391 (drop 0.021 > 0.01)``.
        drops: class name -> FP32 minus INT8 mAP50-95 (positive: INT8 is worse), rounded to 4 places.
        max_drop: the allowance used.
    """

    accepted: bool
    reason: str
    drops: dict[str, float] = field(default_factory=dict)
    max_drop: float = 0.0

    def to_manifest(self) -> dict:
        """JSON-ready fields for the version's manifest (``accepted``, ``reason``, ``drops``,
        ``max_drop``)."""
        return {"accepted": self.accepted, "reason": self.reason, "drops": dict(self.drops),
                "max_drop": self.max_drop}


def judge_int8(fp32: Mapping[int, float], int8: Mapping[int, float], max_drop: float,
               names: Mapping[int, str] | None = None) -> Int8Verdict:
    """Decide whether an INT8 engine may serve instead of its FP32 original.

    Args:
        fp32: class id -> held-out mAP50-95 of the FP32 engine (classes with ground truth).
        int8: class id -> held-out mAP50-95 of the INT8 engine on the same images.
        max_drop: largest allowed per-class drop (``export.int8_max_drop``, mAP units 0..1).
        names: class id -> name, for the reason (ids are shown when absent).

    Returns:
        The :class:`Int8Verdict`. When several classes fail, the reason names the largest drop
        and counts the others. Where FP32 itself scores no more than ``max_drop`` on every
        class (a young model), INT8 is accepted and the reason says it was not judged.
    """
    names = names or {}

    def label(cls: int) -> str:
        """A class as the reason shows it: its name, else its id."""
        return str(names.get(int(cls), cls))

    if not fp32:
        return Int8Verdict(False, "no held-out class to measure INT8 accuracy on; FP32 serves",
                           max_drop=max_drop)
    if not (math.isfinite(float(max_drop)) and max_drop >= 0):
        return Int8Verdict(False, f"export.int8_max_drop {max_drop!r} is not a number >= 0; FP32 "
                                  "serves", max_drop=max_drop)
    drops: dict[str, float] = {}
    failing: list[tuple[float, str]] = []
    for cls in sorted(fp32):
        ref = float(fp32[cls])
        if not math.isfinite(ref):  # a NaN drop compares False with every bound: it would pass
            return Int8Verdict(False, f"class {label(cls)}: FP32 mAP50-95 is {ref} (not measured)",
                               drops, max_drop)
        got = int8.get(cls)
        if got is None or not math.isfinite(float(got)):
            return Int8Verdict(False, f"class {label(cls)}: missing from the INT8 evaluation",
                               drops, max_drop)
        drop = ref - float(got)
        drops[label(cls)] = round(drop, 4)
        if drop > max_drop + _EPS:
            shown = beyond_bound(drop, max_drop)
            k = max(3, len(shown.partition(".")[2]))
            failing.append((drop, f"class {label(cls)}: mAP50-95 {ref:.{k}f} -> {float(got):.{k}f} "
                                  f"(drop {shown} > {max_drop:g})"))
    if failing:
        failing.sort(key=lambda pair: -pair[0])
        more = f" (and {len(failing) - 1} more class(es))" if len(failing) > 1 else ""
        return Int8Verdict(False, failing[0][1] + more, drops, max_drop)
    best = max(float(v) for v in fp32.values())
    if best <= max_drop:  # a model that detects (almost) nothing: no drop could show
        return Int8Verdict(True, f"not judged: FP32 itself scores at most {best:.3f} mAP50-95 on "
                                 f"every class, no more than the bound {max_drop:g}, so no drop "
                                 f"could show (every round judges again)", drops, max_drop)
    worst = max(drops.items(), key=lambda kv: kv[1])
    return Int8Verdict(True, f"every class within {max_drop:g} of FP32 (largest drop "
                             f"{within_bound(worst[1], max_drop)}, class {worst[0]})", drops,
                       max_drop)
