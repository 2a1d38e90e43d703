"""Post-hoc per-class calibration of detection confidences (isotonic regression, Platt scaling).

Why post-hoc: on detectors, isotonic regression or Platt scaling fitted on a held-out split lowers
D-ECE by more than train-time methods do, while temperature scaling can make it worse (Kuzucu et
al., ECCV 2024, "On Calibration of Object Detectors").

What is fitted: every detection of the held-out images with a raw confidence of at least
``min_conf`` is matched to the ground truth (:mod:`edgecl.calibration.matching`, one IoU
threshold) and becomes a (raw confidence, true positive) pair; one calibrator per predicted
class maps raw confidence to the probability that such a detection is a true positive, i.e. the
precision of detections at that confidence. The method of a class depends on its count:

* ``isotonic``: at least ``min_isotonic`` detections with both outcomes (scikit-learn
  ``IsotonicRegression``, monotone, piecewise linear between its knots, clipped outside them).
  Each constant block of the fit (n detections, k true positives) then gets the Laplace-smoothed
  rate ``(k + 1) / (n + 2)`` instead of ``k / n``, made monotone again by a weighted isotonic
  pass: plain isotonic regression gives a short lucky run of true positives at the top a
  precision of exactly 1.0, which would set a pseudo-label threshold on three detections;
* ``platt``: at least ``min_platt`` detections with both outcomes (Platt 1999: a logistic
  regression on ``logit(raw)``, scikit-learn ``LogisticRegression``; refused when its slope is not
  positive, since a calibrator must not reverse the ranking);
* ``constant``: fewer detections, or a single outcome: the Laplace-smoothed true-positive rate
  ``(n_tp + 1) / (n + 2)`` for every confidence.

A class the calibrator never saw keeps its raw confidence and gets no pseudo-label threshold.

Applying a calibrator needs numpy only (the knots and coefficients are stored in
``calibrator.json``); scikit-learn is imported only to fit.

How the before/after D-ECE of :func:`fit_from_detections` is measured: cross-fitting by image.
The held-out images are split into ``folds`` groups by a seeded permutation (whole images, never
single detections); the detections of each group are calibrated by a calibrator fitted on the
other groups, and the D-ECE of the pooled, out-of-fold calibrated confidences is ``dece_after``;
``dece_before`` is the D-ECE of the same detections with their raw confidences. The calibrator
returned (and stored with the version) is then fitted on all held-out images.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgecl.atomic import atomic_write_json
from edgecl.calibration.dece import (
    DEFAULT_IOU_THR,
    DEFAULT_MIN_CONF,
    DEFAULT_N_BINS,
    bins_from_flags,
    bins_to_records,
    dece_from_bins,
    protocol,
)
from edgecl.calibration.matching import match_detections
from edgecl.data.images import ImageError, read_image
from edgecl.errors import EdgeclError
from edgecl.frames import Detections

LOG = logging.getLogger(__name__)

CALIBRATOR_FILE = "calibrator.json"
FORMAT = "edgecl-calibrator"
FORMAT_VERSION = 1
METHODS = ("isotonic", "platt", "constant")
DEFAULT_MIN_ISOTONIC = 50
DEFAULT_MIN_PLATT = 10
DEFAULT_FOLDS = 2
_EPS = 1e-6


class CalibratorFileError(EdgeclError):
    """A calibrator file is missing, unreadable or not a calibrator of this format."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


@dataclass(frozen=True)
class ClassCalibration:
    """The calibrator of one class.

    Attributes:
        method: ``isotonic``, ``platt`` or ``constant``.
        n: detections it was fitted on.
        n_tp: true positives among them.
        lo: lowest raw confidence fitted on.
        hi: highest raw confidence fitted on.
        x: isotonic knots (raw confidences, ascending); empty for other methods.
        y: calibrated value at each knot (non-decreasing).
        a: Platt slope on ``logit(raw)`` (> 0).
        b: Platt intercept.
        value: the constant's calibrated value (None for other methods).
    """

    method: str
    n: int
    n_tp: int
    lo: float
    hi: float
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0
    value: float | None = None

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated confidences.

        Args:
            scores: float (N,) raw confidences in 0..1.

        Returns:
            float64 (N,) calibrated confidences in 0..1 (monotone non-decreasing in the raw one).
        """
        scores = np.asarray(scores, np.float64)
        if self.method == "isotonic":
            return np.interp(scores, self.x, self.y)
        if self.method == "platt":
            return _sigmoid(self.a * _logit(scores) + self.b)
        return np.full(scores.shape, self.value)

    def threshold(self, target: float) -> float | None:
        """Lowest raw confidence whose calibrated confidence reaches ``target``.

        Never below ``lo`` (no evidence below the fitted range) and None when the target is not
        reached within the fitted range.

        Args:
            target: calibrated precision to reach, 0..1.

        Returns:
            The raw confidence, or None.
        """
        if self.method == "isotonic":
            x, y = np.asarray(self.x), np.asarray(self.y)
            reached = np.flatnonzero(y >= target)
            if reached.size == 0:
                return None
            i = int(reached[0])
            if i == 0:
                return float(x[0])
            frac = (target - y[i - 1]) / (y[i] - y[i - 1])
            return float(x[i - 1] + frac * (x[i] - x[i - 1]))
        if self.method == "platt":
            raw = float(_sigmoid((_logit(np.array(target)) - self.b) / self.a))
            return None if raw > self.hi else max(raw, self.lo)
        return self.lo if self.value >= target else None


def _smoothed_isotonic(scores: np.ndarray, hits: np.ndarray) -> tuple[tuple, tuple]:
    """Knots of the isotonic fit with Laplace-smoothed blocks (see the module docstring)."""
    from sklearn.isotonic import IsotonicRegression, isotonic_regression

    order = np.argsort(scores, kind="stable")
    x, t = scores[order], hits[order].astype(np.float64)
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True).fit(x, t).predict(x)
    # ties share one fitted value, so a block never splits equal scores
    starts = np.r_[0, np.flatnonzero(np.diff(fitted) != 0) + 1]
    ends = np.r_[starts[1:], x.size]
    n = (ends - starts).astype(np.float64)
    smoothed = (np.add.reduceat(t, starts) + 1.0) / (n + 2.0)
    y_blocks = isotonic_regression(smoothed, sample_weight=n, y_min=0.0, y_max=1.0)
    knots_x, knots_y = [], []
    for start, end, value in zip(starts, ends, y_blocks):
        for xv in dict.fromkeys((float(x[start]), float(x[end - 1]))):
            knots_x.append(xv)
            knots_y.append(float(value))
    return tuple(knots_x), tuple(knots_y)


def fit_class(scores: np.ndarray, is_tp: np.ndarray, min_isotonic: int = DEFAULT_MIN_ISOTONIC,
              min_platt: int = DEFAULT_MIN_PLATT) -> ClassCalibration:
    """Fit the calibrator of one class (method chosen by count, see the module docstring).

    Args:
        scores: float (N,) raw confidences of the class's detections, N >= 1.
        is_tp: bool (N,) whether each detection is a true positive.
        min_isotonic: detections needed for isotonic regression.
        min_platt: detections needed for Platt scaling.

    Returns:
        The :class:`ClassCalibration`.

    Raises:
        ValueError: with no detection or arrays of different lengths.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    hits = np.asarray(is_tp, bool).reshape(-1)
    if scores.size == 0 or scores.shape != hits.shape:
        raise ValueError(f"need >= 1 detection and one flag each, got {scores.size} / {hits.size}")
    n, n_tp = int(scores.size), int(hits.sum())
    base = {"n": n, "n_tp": n_tp, "lo": float(scores.min()), "hi": float(scores.max())}
    both = 0 < n_tp < n
    if both and n >= min_isotonic:
        x, y = _smoothed_isotonic(scores, hits)
        return ClassCalibration("isotonic", x=x, y=y, **base)
    if both and n >= min_platt:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=100.0).fit(_logit(scores).reshape(-1, 1), hits.astype(int))
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        if a > 0:
            return ClassCalibration("platt", a=a, b=b, **base)
    return ClassCalibration("constant", value=(n_tp + 1) / (n + 2), **base)


class Calibrator:
    """Per-class post-hoc calibrators of one model version.

    Args:
        classes: class id -> its :class:`ClassCalibration`.
        protocol: how it was fitted (IoU threshold, score threshold, matching rule, counts).
        names: class id -> name, for people reading the file (optional).
    """

    def __init__(self, classes: Mapping[int, ClassCalibration], protocol: Mapping | None = None,
                 names: Mapping[int, str] | None = None) -> None:
        self.classes: dict[int, ClassCalibration] = {int(k): v for k, v in classes.items()}
        self.protocol: dict = dict(protocol or {})
        self.names: dict[int, str] = {int(k): str(v) for k, v in (names or {}).items()}

    def calibrate(self, class_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Calibrated confidences of detections.

        Args:
            class_ids: int (N,) class of each detection.
            scores: float (N,) raw confidences in 0..1.

        Returns:
            float32 (N,) calibrated confidences; a class without a calibrator keeps its raw value.

        Raises:
            ValueError: when the arrays differ in length.
        """
        class_ids = np.asarray(class_ids, np.int64).reshape(-1)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if class_ids.shape != scores.shape:
            raise ValueError(f"{class_ids.size} class ids but {scores.size} scores")
        out = scores.copy()
        for cls in np.unique(class_ids):
            calib = self.classes.get(int(cls))
            if calib is not None:
                mask = class_ids == cls
                out[mask] = calib.apply(scores[mask])
        return out.astype(np.float32)

    def calibrate_detections(self, detections: Detections) -> Detections:
        """The same detections with calibrated scores (boxes and classes unchanged).

        Args:
            detections: one image's detections.

        Returns:
            A new :class:`~edgecl.frames.Detections`.
        """
        return replace(detections, scores=self.calibrate(detections.classes, detections.scores))

    def thresholds_at_precision(self, target: float = 0.9,
                                min_true_positives: int = 0) -> dict[int, float]:
        """Per class, the lowest raw confidence at which the calibrated precision reaches ``target``.

        These are the pseudo-label thresholds: a calibrator is monotone, so every detection at or
        above its class's threshold has a calibrated confidence >= ``target``. A class that never
        reaches the target within the confidences it was fitted on, a class fitted on fewer than
        ``min_true_positives`` true positives (too little evidence for any precision claim), and
        a class without a calibrator, get no entry (no pseudo-labels for it).

        Args:
            target: precision to reach, in (0, 1].
            min_true_positives: true positives a class's calibrator must have been fitted on.

        Returns:
            class id -> raw confidence threshold.

        Raises:
            ValueError: when ``target`` is outside (0, 1].
        """
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target precision must be in (0, 1], got {target}")
        out = {}
        for cls, calib in sorted(self.classes.items()):
            if calib.n_tp < min_true_positives:
                continue
            threshold = calib.threshold(target)
            if threshold is not None:
                out[cls] = threshold
        return out

    def to_dict(self) -> dict:
        """JSON-ready form (what :meth:`save` writes).

        Returns:
            ``{"format", "version", "protocol", "names", "classes": {"id": {...}}}``.
        """
        classes = {}
        for cls, calib in self.classes.items():
            fields = asdict(calib)
            fields["x"], fields["y"] = list(calib.x), list(calib.y)
            classes[str(cls)] = fields
        return {"format": FORMAT, "version": FORMAT_VERSION, "protocol": self.protocol,
                "names": {str(k): v for k, v in self.names.items()}, "classes": classes}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Calibrator":
        """Rebuild a calibrator from :meth:`to_dict` output.

        Args:
            data: the dict.

        Returns:
            The :class:`Calibrator`.

        Raises:
            CalibratorFileError: on another format, a newer version or a malformed entry.
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise CalibratorFileError("not an edgecl calibrator")
        if data.get("version") != FORMAT_VERSION:
            raise CalibratorFileError(f"calibrator format version {data.get('version')!r} "
                                      f"is not supported (expected {FORMAT_VERSION})")
        classes = {}
        try:
            for key, fields in data["classes"].items():
                fields = dict(fields)
                fields["x"], fields["y"] = tuple(fields.get("x", ())), tuple(fields.get("y", ()))
                calib = ClassCalibration(**fields)
                _check_entry(calib)
                classes[int(key)] = calib
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CalibratorFileError(f"malformed calibrator entry: {exc}") from exc
        protocol, names = data.get("protocol") or {}, data.get("names") or {}
        for what, value in (("protocol", protocol), ("names", names)):
            if not isinstance(value, Mapping):  # before: an AttributeError stopped a start
                raise CalibratorFileError(f"malformed calibrator: its {what} is a "
                                          f"{type(value).__name__}, not an object")
        try:
            return cls(classes, protocol, names)
        except (TypeError, ValueError) as exc:  # a name keyed by something else than a class id
            raise CalibratorFileError(f"malformed calibrator names: {exc}") from exc

    def save(self, path: str | Path) -> Path:
        """Write the calibrator atomically as JSON (by convention ``calibrator.json``).

        Args:
            path: destination file.

        Returns:
            The path written.

        Raises:
            OSError: when the file cannot be written (the old file, if any, is untouched).
        """
        atomic_write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Calibrator":
        """Read a calibrator written by :meth:`save`.

        Args:
            path: the JSON file.

        Returns:
            The :class:`Calibrator`.

        Raises:
            CalibratorFileError: when the file is missing, unreadable or malformed.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CalibratorFileError(f"cannot read calibrator {path}: {exc}") from exc
        try:
            return cls.from_dict(data)
        except CalibratorFileError as exc:
            raise CalibratorFileError(f"{path}: {exc}") from exc


def _number(value, what: str, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a finite float within ``lo..hi``.

    Raises:
        ValueError: not a JSON number (a bool, a string, None), not finite, or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {str(value)[:40]!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{what} must be in {lo:g}..{hi:g}, got {value}")
    return float(value)


def _check_entry(calib: ClassCalibration) -> None:
    """Check one class's calibrator as read from a file: a map that is a monotone function
    from 0..1 onto 0..1, on counts that can be true (before, NaN knots calibrated to NaN,
    knots of 5.0 to 1.73, text knots and counts raised a TypeError in the labelling path).

    Raises:
        ValueError: the first thing wrong, in words.
    """
    if calib.method not in METHODS:
        raise ValueError(f"unknown method {str(calib.method)[:40]!r}")
    for what in ("n", "n_tp"):
        count = getattr(calib, what)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{what} must be a whole number >= 0, got {str(count)[:40]!r}")
    if calib.n_tp > calib.n:
        raise ValueError(f"n_tp {calib.n_tp} is more than n {calib.n}")
    if _number(calib.lo, "lo", 0.0, 1.0) > _number(calib.hi, "hi", 0.0, 1.0):
        raise ValueError(f"lo {calib.lo} is above hi {calib.hi}")
    if calib.method == "isotonic":
        if len(calib.x) != len(calib.y) or not calib.x:
            raise ValueError("isotonic knots missing or of different lengths")
        for name, knots in (("x", calib.x), ("y", calib.y)):
            values = [_number(v, f"isotonic {name}", 0.0, 1.0) for v in knots]
            if any(b < a for a, b in zip(values, values[1:])):
                raise ValueError(f"isotonic {name} must not decrease")
    elif calib.method == "platt":
        if not _number(calib.a, "Platt slope") > 0:
            raise ValueError(f"Platt slope must be positive, got {calib.a}")
        _number(calib.b, "Platt intercept")
    elif calib.value is None:
        raise ValueError("constant value must be in 0..1, got None")
    else:
        _number(calib.value, "constant value", 0.0, 1.0)


def fit_calibrator(conf: np.ndarray, pred_cls: np.ndarray, is_tp: np.ndarray,
                   min_isotonic: int = DEFAULT_MIN_ISOTONIC, min_platt: int = DEFAULT_MIN_PLATT,
                   protocol: Mapping | None = None,
                   names: Mapping[int, str] | None = None) -> Calibrator:
    """Fit one calibrator per predicted class on matched detections.

    Args:
        conf: float (N,) raw confidences.
        pred_cls: int (N,) predicted classes.
        is_tp: bool (N,) true-positive flags (at the protocol's IoU threshold).
        min_isotonic: detections a class needs for isotonic regression.
        min_platt: detections a class needs for Platt scaling.
        protocol: recorded in the calibrator.
        names: class id -> name, recorded in the calibrator.

    Returns:
        The :class:`Calibrator` (classes without a detection are absent).

    Raises:
        ValueError: when the arrays differ in length.
    """
    conf = np.asarray(conf, np.float64).reshape(-1)
    pred_cls = np.asarray(pred_cls, np.int64).reshape(-1)
    hits = np.asarray(is_tp, bool).reshape(-1)
    if not conf.shape == pred_cls.shape == hits.shape:
        raise ValueError(f"{conf.size} confidences, {pred_cls.size} classes, {hits.size} flags")
    classes = {int(c): fit_class(conf[pred_cls == c], hits[pred_cls == c], min_isotonic, min_platt)
               for c in np.unique(pred_cls)}
    return Calibrator(classes, protocol, names)


def _fold_of_images(n_images: int, folds: int, seed: int) -> np.ndarray:
    """Fold number of each image: a seeded permutation dealt round-robin."""
    fold = np.empty(n_images, np.int64)
    fold[np.random.default_rng(seed).permutation(n_images)] = np.arange(n_images) % folds
    return fold


def _per_class_report(calib: Calibrator, conf: np.ndarray, after: np.ndarray, pred_cls: np.ndarray,
                      hits: np.ndarray, n_bins: int, names: Mapping[int, str]) -> dict:
    """class id (str) -> method, counts and D-ECE before/after of that class's detections."""
    out = {}
    for cls in np.unique(pred_cls):
        mask = pred_cls == cls
        entry = calib.classes.get(int(cls))
        out[str(int(cls))] = {
            "name": names.get(int(cls), str(int(cls))),
            "method": entry.method if entry else None, "n": int(mask.sum()),
            "n_tp": int(hits[mask].sum()),
            "dece_before": _none_nan(dece_from_bins(bins_from_flags(conf[mask], hits[mask], n_bins))),
            "dece_after": _none_nan(dece_from_bins(bins_from_flags(after[mask], hits[mask], n_bins))),
        }
    return out


def _none_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def fit_from_detections(
    preds: Sequence[Detections],
    gts: Sequence[np.ndarray | None],
    shapes: Sequence[tuple[int, int]],
    *,
    iou_thr: float = DEFAULT_IOU_THR,
    n_bins: int = DEFAULT_N_BINS,
    min_conf: float = DEFAULT_MIN_CONF,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    min_isotonic: int = DEFAULT_MIN_ISOTONIC,
    min_platt: int = DEFAULT_MIN_PLATT,
    target_precision: float = 0.9,
    names: Mapping[int, str] | None = None,
) -> tuple[Calibrator, dict]:
    """Fit per-class calibrators on held-out detections and measure D-ECE before and after.

    D-ECE after calibration is the cross-fitted estimate described in the module docstring
    (``folds`` groups of whole images; each group calibrated by the calibrator fitted on the
    others); the returned calibrator is fitted on all images.

    Args:
        preds: detections per held-out image, original pixels, produced at a low confidence
            threshold (evaluation options, conf ~0.001).
        gts: human/ground-truth YOLO labels per image, (N, 5) normalised (never pseudo-labels).
        shapes: ``(height, width)`` per image in pixels.
        iou_thr: IoU a detection needs with a same-class box to be a true positive.
        n_bins: equal-width confidence bins of D-ECE.
        min_conf: score threshold: detections below it are neither fitted on nor binned.
        folds: cross-fitting groups (at least 2; fewer images than folds use one per image).
        seed: seed of the image permutation.
        min_isotonic: detections a class needs for isotonic regression.
        min_platt: detections a class needs for Platt scaling.
        target_precision: precision of the pseudo-label thresholds in the report.
        names: class id -> name (report and file).

    Returns:
        ``(calibrator, report)``; the report has ``dece_before``, ``dece_after`` (None when not
        measurable), ``protocol`` (D-ECE protocol plus the fitting and cross-fitting rule),
        ``n_images``, ``n_detections``, ``per_class`` (str id -> method, counts, D-ECE),
        ``thresholds`` (str id -> raw threshold at ``target_precision``), ``target_precision``
        and ``reliability_before`` / ``reliability_after`` (bin records).

    Raises:
        ValueError: when the sequences differ in length or ``folds`` < 2.
        LabelError: on malformed labels.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    names = {int(k): str(v) for k, v in (names or {}).items()}
    stats = match_detections(preds, gts, shapes, iou_thresholds=np.array([iou_thr]))
    keep = stats.conf >= min_conf
    conf = stats.conf[keep].astype(np.float64)
    pred_cls, hits, image = stats.pred_cls[keep], stats.tp[keep, 0], stats.image_index[keep]
    used_folds = min(folds, stats.n_images)
    proto = dict(protocol(iou_thr, n_bins, min_conf),
                 calibrator="per class: isotonic (>= min_isotonic detections, both outcomes), "
                            "else Platt on logit(conf) (>= min_platt), else Laplace-smoothed "
                            "constant TP rate",
                 min_isotonic=int(min_isotonic), min_platt=int(min_platt),
                 dece_after=f"{used_folds}-fold cross-fit by image (seed {seed}): each image's "
                            "detections calibrated by the calibrator fitted on the other folds; "
                            "the stored calibrator is fitted on all images",
                 folds=int(used_folds), seed=int(seed), labels="human-verified held-out samples")
    calib = fit_calibrator(conf, pred_cls, hits, min_isotonic, min_platt, proto, names)
    after = np.full(conf.shape, np.nan)
    if used_folds >= 2 and conf.size:
        fold = _fold_of_images(stats.n_images, used_folds, seed)[image]
        for k in range(used_folds):
            inside = fold == k
            if inside.any() and (~inside).any():
                part = fit_calibrator(conf[~inside], pred_cls[~inside], hits[~inside],
                                      min_isotonic, min_platt)
                after[inside] = part.calibrate(pred_cls[inside], conf[inside])
            else:
                after[inside] = conf[inside]
    before_bins = bins_from_flags(conf, hits, n_bins)
    measured = bool(conf.size) and not np.isnan(after).any()
    after_bins = bins_from_flags(after if measured else np.zeros(0), hits if measured else
                                 np.zeros(0, bool), n_bins)
    report = {
        "dece_before": _none_nan(dece_from_bins(before_bins)),
        "dece_after": _none_nan(dece_from_bins(after_bins)) if measured else None,
        "protocol": proto, "n_images": int(stats.n_images), "n_detections": int(conf.size),
        "per_class": _per_class_report(calib, conf, after if measured else conf, pred_cls, hits,
                                       n_bins, names),
        "target_precision": float(target_precision),
        "thresholds": {str(k): v for k, v in calib.thresholds_at_precision(target_precision).items()},
        "reliability_before": bins_to_records(before_bins),
        "reliability_after": bins_to_records(after_bins) if measured else None,
    }
    return calib, report


def calibration_manifest(report: Mapping, file_name: str = CALIBRATOR_FILE) -> dict:
    """The part of a calibration report that belongs in a version's manifest.

    Args:
        report: the report of :func:`fit_for_version` / :func:`fit_from_detections`.
        file_name: the calibrator's file name inside the version directory.

    Returns:
        ``{"file", "dece_before", "dece_after", "protocol", "target_precision", "thresholds",
        "per_class", "n_images", "n_detections", "n_skipped"}`` (the reliability bins are left
        to the monitor).
    """
    keys = ("dece_before", "dece_after", "protocol", "target_precision", "thresholds",
            "per_class", "n_images", "n_detections", "n_skipped")
    return {"file": file_name, **{k: report[k] for k in keys if k in report}}


def fit_for_version(model, images: Sequence, labels: Sequence[np.ndarray | None], *,
                    batch: int = 16, **options) -> tuple[Calibrator, dict]:
    """Run a candidate over held-out images and fit its calibrator (the round's one call).

    Images are read ``batch`` at a time (:func:`edgecl.data.images.read_image`, the one image
    rule), so a large held-out set is never in memory at once; an unreadable image is skipped
    with a warning and counted in ``report["n_skipped"]``.

    Args:
        model: anything with ``infer(list of BGR images) -> list[Detections]``, with evaluation
            options (conf ~0.001, max_det 300), e.g. the backend the round evaluates with.
        images: held-out image paths or BGR arrays (human-verified samples only).
        labels: YOLO labels of each image, (N, 5) normalised.
        batch: images per ``infer`` call.
        **options: keyword arguments of :func:`fit_from_detections` (``iou_thr``, ``n_bins``,
            ``min_conf``, ``folds``, ``seed``, ``min_isotonic``, ``min_platt``,
            ``target_precision``, ``names``).

    Returns:
        ``(calibrator, report)`` as :func:`fit_from_detections`, plus ``n_skipped``.

    Raises:
        ValueError: when images and labels differ in length or ``batch`` < 1.
        LabelError: on malformed labels.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label arrays")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    preds, gts, shapes, skipped = [], [], [], 0
    for start in range(0, len(images), batch):
        chunk = []
        for image, label in zip(images[start:start + batch], labels[start:start + batch]):
            try:
                array = image if isinstance(image, np.ndarray) else read_image(image)
            except ImageError as exc:
                LOG.warning("calibration: %s; skipped", exc)
                skipped += 1
                continue
            chunk.append(array)
            gts.append(label)
            shapes.append(tuple(array.shape[:2]))
        if chunk:
            preds.extend(model.infer(chunk))
    calib, report = fit_from_detections(preds, gts, shapes, **options)
    report["n_skipped"] = skipped
    return calib, report
