"""Detection evaluation with ultralytics' own matching and AP code (box mAP50-95, mAP50, D-ECE).

Evaluation wants almost every candidate box: run the backend with a low confidence threshold
(``InferenceOptions(conf=0.001, max_det=300)``, what ultralytics' validator uses).  With the
runtime's usual ``conf=0.25`` the precision-recall curve is cut short and mAP is understated.
The caller's backend options decide; this module scores whatever detections it receives.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgecl.calibration.dece import (
    DEFAULT_IOU_THR,
    DEFAULT_MIN_CONF,
    DEFAULT_N_BINS,
    ReliabilityBins,
    bins_from_flags,
    dece_from_bins,
    protocol,
)
from edgecl.calibration.matching import IOU_THRESHOLDS, MatchStats, match_detections
from edgecl.data.answers import finite_number
from edgecl.data.images import ImageError, read_image
from edgecl.data.labels import check_label_array, read_yolo_labels
from edgecl.errors import LabelError
from edgecl.frames import Detections, empty_labels

LOG = logging.getLogger(__name__)

__all__ = ["DECE_MIN_CONF", "DECE_PROTOCOL", "EvalResult", "IOU_THRESHOLDS", "MatchStats",
           "check_labels", "evaluate_detections", "evaluate_model", "match_detections",
           "read_label_file"]

DECE_MIN_CONF = DEFAULT_MIN_CONF  # see edgecl.calibration.dece: keeps near-zero boxes out of D-ECE
DECE_PROTOCOL = protocol(DEFAULT_IOU_THR, DEFAULT_N_BINS, DECE_MIN_CONF)  # behind EvalResult.dece


@dataclass(frozen=True)
class EvalResult:
    """Scores of one model on one evaluation set.

    Attributes:
        map50_95: mean over classes of AP averaged over IoU 0.50:0.95.
        map50: mean over classes of AP at IoU 0.50.
        recall: mean recall over classes at the max-F1 confidence (ultralytics' definition).
        precision: mean precision over classes at the max-F1 confidence.
        per_class_ap50_95: class index -> AP50-95, for classes with ground truth.
        n_images: images evaluated.
        n_boxes: ground-truth boxes evaluated.
        dece: detection ECE at IoU 0.5 over detections with conf >= ``DECE_MIN_CONF``
            (NaN when there is none).
        n_skipped: images that could not be read and were left out.
        reliability: the reliability bins behind ``dece`` (protocol :data:`DECE_PROTOCOL`).
        per_class_recall: class index -> recall at the confidence that maximises that
            class's own F1, for classes with ground truth.
        per_class_instances: class index -> ground-truth boxes of that class (the gate ignores
            classes with fewer than ``gate.min_instances``).
        serving_conf: the confidence a served model reports detections from
            (``model.conf``), or NaN when the caller gave none; the two fields below are
            counted at it.
        per_class_found: class index -> ground-truth boxes of that class matched (IoU 0.5,
            :data:`~edgecl.calibration.matching.MATCHING_RULE`) by a detection scored at least
            ``serving_conf``: what the served model finds (AP ranks detections and cannot see
            every score of a class falling below the threshold).
        false_positives: detections scored at least ``serving_conf`` that match no box.
        per_class_false_positives: class index -> those false detections of that class.
    """

    map50_95: float
    map50: float
    recall: float
    precision: float
    per_class_ap50_95: dict[int, float]
    n_images: int
    n_boxes: int
    dece: float
    n_skipped: int = 0
    reliability: ReliabilityBins | None = field(default=None, compare=False, repr=False)
    per_class_recall: dict[int, float] = field(default_factory=dict)
    per_class_instances: dict[int, int] = field(default_factory=dict)
    serving_conf: float = float("nan")
    per_class_found: dict[int, int] = field(default_factory=dict)
    false_positives: int = 0
    per_class_false_positives: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dict (reliability bins as lists, class keys as strings).

        Returns:
            The scalar fields (NaN as None), the per-class dicts, ``reliability`` (or None)
            and ``dece_protocol``.
        """
        out = {k: getattr(self, k) for k in ("map50_95", "map50", "recall", "precision",
                                             "n_images", "n_boxes", "dece", "n_skipped",
                                             "false_positives")}
        out["serving_conf"] = None if math.isnan(self.serving_conf) else self.serving_conf
        for name in ("per_class_ap50_95", "per_class_recall", "per_class_instances",
                     "per_class_found", "per_class_false_positives"):
            out[name] = {str(k): v for k, v in getattr(self, name).items()}
        out["dece_protocol"] = dict(DECE_PROTOCOL)
        rel = self.reliability
        out["reliability"] = None if rel is None else {k: np.asarray(v).tolist()
                                                       for k, v in rel._asdict().items()}
        return out


    @classmethod
    def from_dict(cls, data: dict) -> "EvalResult":
        """Rebuild a result from :meth:`to_dict`'s output (JSON ``null`` scores read as NaN).

        Args:
            data: the dict.

        Returns:
            The result.

        Raises:
            KeyError, TypeError, ValueError: ``data`` is not such a dict (a count that is no
                finite number is a ValueError).
        """
        def score(key):
            value = data[key]
            return float("nan") if value is None else float(value)

        def count(value) -> int:
            try:
                number = float(value)
            except OverflowError:  # an integer of hundreds of digits
                number = math.inf
            if not math.isfinite(number):
                raise ValueError(f"a count of {value!r}")
            return int(number)

        rel = data.get("reliability")
        bins = None if rel is None else ReliabilityBins(
            bin_edges=np.asarray(rel["bin_edges"], dtype=float),
            conf_mean=np.asarray(rel["conf_mean"], dtype=float),
            precision=np.asarray(rel["precision"], dtype=float),
            counts=np.asarray(rel["counts"], dtype=np.int64))
        conf = data.get("serving_conf")
        # no confidence (none recorded, NaN, -3, text): the counts at it are not judged
        serving_conf = float(conf) if finite_number(conf) and 0 <= conf <= 1 else float("nan")
        per_class = {name: {int(k): (float("nan") if v is None else float(v))
                            for k, v in (data.get(name) or {}).items()}
                     for name in ("per_class_ap50_95", "per_class_recall")}
        return cls(map50_95=score("map50_95"), map50=score("map50"), recall=score("recall"),
                   precision=score("precision"), per_class_ap50_95=per_class["per_class_ap50_95"],
                   n_images=count(data["n_images"]), n_boxes=count(data["n_boxes"]),
                   dece=score("dece"), n_skipped=count(data.get("n_skipped", 0)), reliability=bins,
                   per_class_recall=per_class["per_class_recall"],
                   per_class_instances={int(k): count(v) for k, v in
                                        (data.get("per_class_instances") or {}).items()},
                   serving_conf=serving_conf,
                   per_class_found={int(k): count(v) for k, v in
                                    (data.get("per_class_found") or {}).items()},
                   false_positives=count(data.get("false_positives", 0)),
                   per_class_false_positives={
                       int(k): count(v)
                       for k, v in (data.get("per_class_false_positives") or {}).items()})


def check_labels(labels: np.ndarray | None, where: str) -> np.ndarray:
    """Validate a YOLO label array with THE label rule (:func:`edgecl.data.labels.check_label_array`).

    Args:
        labels: (N, 5) ``cls, cx, cy, w, h`` normalised, or None for "no boxes".
        where: what the labels belong to, for the error message.

    Returns:
        float32 (N, 5) array (boxes clipped to 0..1).

    Raises:
        LabelError: a wrong shape or a row the rule refuses.
    """
    return check_label_array(labels, where)


class _Scores(NamedTuple):
    """Scores of one matched set (see :func:`_scores`)."""

    map50_95: float
    map50: float
    recall: float
    precision: float
    per_class_ap50_95: dict[int, float]
    per_class_recall: dict[int, float]
    per_class_instances: dict[int, int]


def _scores(stats: MatchStats) -> _Scores:
    """mAP50-95, mAP50, recall, precision and per-class figures via ultralytics' ap_per_class.

    The mean recall and precision are ultralytics' (every class at the one confidence that
    maximises the mean F1 over classes); a class's own recall is taken at the confidence that
    maximises its own F1, so that it does not move with other classes' detections.
    """
    from ultralytics.utils.metrics import ap_per_class, smooth

    if stats.target_cls.size == 0:
        return _Scores(0.0, 0.0, 0.0, 0.0, {}, {}, {})
    _, _, p, r, _, ap, classes, _, r_curve, f1_curve, *_ = ap_per_class(
        stats.tp, stats.conf, stats.pred_cls, stats.target_cls)
    own_recall = [float(r_curve[k, smooth(f1_curve[k], 0.1).argmax()]) for k in range(len(classes))]
    counts = np.bincount(stats.target_cls)
    return _Scores(float(ap.mean()), float(ap[:, 0].mean()), float(r.mean()), float(p.mean()),
                   {int(c): float(v) for c, v in zip(classes, ap.mean(1))},
                   dict(zip(map(int, classes), own_recall)),
                   {int(c): int(counts[c]) for c in classes})


def evaluate_detections(
    preds: Sequence[Detections],
    gts: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, int]],
    class_ids: Sequence[int] | None = None,
    n_skipped: int = 0,
    serving_conf: float | None = None,
    serving_max_det: int | None = None,
) -> EvalResult:
    """Score detections against ground truth (box mAP50-95, mAP50, P, R, D-ECE).

    A task is evaluated on its own classes: with ``class_ids`` the detections and boxes of
    other classes are dropped before matching.  Classes without ground-truth boxes do not
    enter the mean (ultralytics' convention); with no box at all every score is 0.

    Args:
        preds: detections per image in original pixels (produced with conf ~0.001).
        gts: YOLO labels per image (N, 5) normalised.
        shapes: ``(height, width)`` per image.
        class_ids: classes of the task, or None for all.
        n_skipped: images the caller could not read (reported in the result).
        serving_conf: when given, the boxes found and the false detections at this confidence
            (what a model serving with ``model.conf`` shows) are counted too.
        serving_max_det: the most detections an image shows when served (``model.max_det``;
            None: all): the highest-scored ones count.

    Returns:
        The :class:`EvalResult`.

    Raises:
        ValueError: when the sequences differ in length, or ``serving_conf`` is not in 0..1.
        LabelError: on malformed labels.
    """
    stats = match_detections(preds, gts, shapes, IOU_THRESHOLDS, class_ids)
    found, false_positives = {}, {}
    if serving_conf is not None:
        found, false_positives = _at_serving_conf(preds, gts, shapes, class_ids, serving_conf,
                                                  serving_max_det)
    scores = _scores(stats)
    at_half = int(np.argmin(np.abs(IOU_THRESHOLDS - DEFAULT_IOU_THR)))
    confident = stats.conf >= DECE_MIN_CONF
    bins = bins_from_flags(stats.conf[confident], stats.tp[confident, at_half], DEFAULT_N_BINS)
    return EvalResult(map50_95=scores.map50_95, map50=scores.map50, recall=scores.recall,
                      precision=scores.precision, per_class_ap50_95=scores.per_class_ap50_95,
                      n_images=stats.n_images, n_boxes=int(stats.target_cls.size),
                      dece=dece_from_bins(bins), n_skipped=n_skipped, reliability=bins,
                      per_class_recall=scores.per_class_recall,
                      per_class_instances=scores.per_class_instances,
                      serving_conf=float("nan") if serving_conf is None else float(serving_conf),
                      per_class_found=found, false_positives=sum(false_positives.values()),
                      per_class_false_positives=false_positives)


def _at_serving_conf(preds: Sequence[Detections], gts, shapes, class_ids, serving_conf: float,
                     max_det: int | None = None) -> tuple[dict[int, int], dict[int, int]]:
    """Boxes found, and false detections, per class among the detections scored at least
    ``serving_conf`` (the ``max_det`` highest of an image), matched anew at IoU 0.5 (a
    detection below it cannot take a box from one above it)."""
    if not 0.0 <= float(serving_conf) <= 1.0:
        raise ValueError(f"serving_conf must be in 0..1, got {serving_conf}")
    kept = []
    for det in preds:
        scores = np.asarray(det.scores, np.float32)
        keep = np.flatnonzero(scores >= np.float32(serving_conf))
        if max_det is not None:
            keep = keep[np.argsort(-scores[keep], kind="stable")[:max(0, int(max_det))]]
        kept.append(Detections(np.asarray(det.boxes_xyxy, np.float32).reshape(-1, 4)[keep],
                               scores[keep],
                               np.asarray(det.classes, np.int64)[keep]))
    stats = match_detections(kept, gts, shapes, np.asarray([DEFAULT_IOU_THR]), class_ids)
    hits = stats.tp[:, 0]
    found = np.bincount(stats.pred_cls[hits], minlength=int(stats.target_cls.max(initial=-1)) + 1)
    false = np.unique(stats.pred_cls[~hits], return_counts=True)
    return ({int(c): int(found[c]) for c in np.unique(stats.target_cls)},
            {int(c): int(n) for c, n in zip(*false)})


def read_label_file(path: str | Path) -> np.ndarray:
    """Read a YOLO label file with THE label rule; a missing file means an image without boxes.

    Args:
        path: ``.txt`` file with rows ``cls cx cy w h`` (or polygons; see :mod:`edgecl.data.labels`).

    Returns:
        float32 (N, 5).

    Raises:
        LabelError: an unreadable file or a refused row (naming file and line).
    """
    path = Path(path)
    if not path.is_file():
        return empty_labels()
    parsed = read_yolo_labels(path)
    if parsed.refused:
        more = f" (and {len(parsed.refused) - 1} more)" if len(parsed.refused) > 1 else ""
        raise LabelError(parsed.refused[0] + more)
    return parsed.labels


def evaluate_model(model, image_paths: Sequence[str | Path], class_ids: Sequence[int] | None = None,
                   batch: int = 16, serving_conf: float | None = None,
                   serving_max_det: int | None = None) -> EvalResult:
    """Run a backend over labelled images and score it.

    Labels are found where ultralytics looks for them (``img2label_paths``: the last
    ``images`` folder becomes ``labels``, the suffix ``.txt``).  An image OpenCV cannot read is
    skipped with a warning and counted in ``n_skipped``.

    Args:
        model: anything with ``infer(list of BGR images) -> list[Detections]``; give it
            evaluation options (conf ~0.001, max_det 300).
        image_paths: image files.
        class_ids: classes of the task, or None for all.
        batch: images per ``infer`` call.
        serving_conf: the confidence a served model reports from (``model.conf``): boxes
            found and false detections are counted at it too (see :class:`EvalResult`).
        serving_max_det: at most this many of an image's detections count there
            (``model.max_det``).

    Returns:
        The :class:`EvalResult`.

    Raises:
        LabelError: on a malformed label file.
        ValueError: when ``batch`` < 1.
    """
    from edgecl.ultra import ensure_offline

    ensure_offline()
    from ultralytics.data.utils import img2label_paths

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    paths = [str(p) for p in image_paths]
    label_paths = img2label_paths(paths)
    preds, gts, shapes, skipped = [], [], [], 0
    for start in range(0, len(paths), batch):
        images = []
        for path, label_path in zip(paths[start:start + batch], label_paths[start:start + batch]):
            try:
                image = read_image(path)
            except ImageError as exc:
                LOG.warning("evaluation: skipped image: %s", exc)
                skipped += 1
                continue
            images.append(image)
            gts.append(read_label_file(label_path))
            shapes.append(image.shape[:2])
        if images:
            preds.extend(model.infer(images))
    return evaluate_detections(preds, gts, shapes, class_ids, n_skipped=skipped,
                               serving_conf=serving_conf, serving_max_det=serving_max_det)
