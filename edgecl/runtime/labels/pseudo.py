"""Pseudo-labels: confident detections of classes the model knows, above per-class thresholds.

A frame is pseudo-labelled only when every detection is either confident (at or above its
class's threshold) or negligible (below ``uncertain_low``). Any detection in between — in the
uncertain band ``[uncertain_low, uncertain_high)`` or above it but under its class's threshold —
refuses the whole frame: storing the confident boxes alone would teach the model that the
doubtful object is background (the classic failure of confidence-thresholded self-training,
e.g. Sohn et al., "A Simple Semi-Supervised Learning Framework for Object Detection", 2020,
which also thresholds per box). The thresholds come from the current version's post-hoc
calibrator at the target precision ``labels.pseudo_precision``, never below
``labels.pseudo_conf`` nor the band's top ``labels.uncertain_high``; a class the calibrator
gives no threshold (or every class, while the serving version has no calibrator) is not
pseudo-labelled.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from edgecl.frames import Detections

REFUSALS = ("no_detections", "uncertain", "below_threshold", "unknown_class", "not_calibrated")
"""Why :meth:`PseudoLabeler.label` declines a frame, in the order it checks."""

Thresholds = Callable[[], Mapping[int, float | None]] | Mapping[int, float | None] | None


class PseudoLabeler:
    """Turns a frame's detections into pseudo-labels, or says why not.

    Args:
        thresholds: per-class confidence thresholds, as a mapping or a cheap callable returning
            one (called for every candidate frame; the runtime's callable reads the current
            version's calibrator). A class mapped to ``None``, NaN or a value above 1 is never
            pseudo-labelled (its calibrator cannot reach the target precision); a class absent
            from the mapping uses ``default_conf``.
        default_conf: the lowest threshold of any class (``labels.pseudo_conf``), and the
            threshold of a class absent from ``thresholds``.
        uncertain_low: lower edge of the uncertain band; detections below it are ignored.
        uncertain_high: upper edge of the uncertain band; no threshold is taken below it.
        known_classes: optional ``callable() -> set[int]`` of the class ids the current model
            knows; detections of other ids refuse the frame.
    """

    def __init__(self, thresholds: Thresholds, default_conf: float, uncertain_low: float = 0.3,
                 uncertain_high: float = 0.6,
                 known_classes: Callable[[], set[int]] | None = None):
        self.thresholds = thresholds
        self.default_conf = float(default_conf)
        self.uncertain_low = float(uncertain_low)
        self.uncertain_high = float(uncertain_high)
        self.known_classes = known_classes

    def _table(self) -> Mapping[int, float | None]:
        if self.thresholds is None:
            return {}
        return self.thresholds() if callable(self.thresholds) else self.thresholds

    def threshold(self, cls: int, table: Mapping[int, float | None] | None = None) -> float:
        """The effective threshold of one class.

        Args:
            cls: class id.
            table: the thresholds already fetched (fetched when ``None``).

        Returns:
            A confidence in ``[max(uncertain_high, default_conf), 1]``, or ``inf`` when the
            class is never pseudo-labelled.
        """
        table = self._table() if table is None else table
        value = table.get(int(cls), self.default_conf)
        if value is None or not math.isfinite(float(value)) or float(value) > 1.0:
            return math.inf
        return max(float(value), self.uncertain_high, self.default_conf)

    def label(self, detections: Detections, width: int,
              height: int) -> tuple[np.ndarray | None, str]:
        """Pseudo-label one frame.

        Args:
            detections: the frame's detections (pixels of the frame).
            width: frame width in pixels.
            height: frame height in pixels.

        Returns:
            ``(labels float32 (N, 5) cls cx cy w h normalised, "pseudo")`` or ``(None, why)``
            with why one of ``no_detections``, ``uncertain`` (a detection in the band),
            ``below_threshold`` (one above the band but under its class's threshold),
            ``unknown_class``, ``not_calibrated`` (a class that is never pseudo-labelled).
        """
        if len(detections) == 0:
            return None, "no_detections"
        scores, classes = detections.scores, detections.classes
        relevant = scores >= self.uncertain_low
        if not relevant.any():
            return None, "no_detections"
        if np.any(relevant & (scores < self.uncertain_high)):
            return None, "uncertain"
        if self.known_classes is not None:
            known = self.known_classes()
            if any(int(c) not in known for c in classes[relevant]):
                return None, "unknown_class"
        table = self._table()
        limits = np.array([self.threshold(int(c), table) for c in classes], np.float64)
        if np.any(relevant & np.isinf(limits)):
            return None, "not_calibrated"
        if np.any(relevant & (scores < limits)):
            return None, "below_threshold"
        keep = relevant & (scores >= limits)
        kept = Detections(detections.boxes_xyxy[keep], scores[keep], classes[keep])
        return kept.to_yolo_labels(width, height), "pseudo"
