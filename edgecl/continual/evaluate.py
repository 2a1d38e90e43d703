"""Detection evaluation with ultralytics' own matching and AP code (box mAP50-95, mAP50, D-ECE).

Evaluation wants almost every candidate box: run the backend with a low confidence threshold
(``InferenceOptions(conf=0.001, max_det=300)``, what ultralytics' validator uses).  With the
runtime's usual ``conf=0.25`` the precision-recall curve is cut short and mAP is understated.
The caller's backend options decide; this module scores whatever detections it receives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgecl.calibration.dece import (
    DEFAULT_IOU_THR,
    DEFAULT_N_BINS,
    ReliabilityBins,
    bins_from_flags,
    dece_from_bins,
)
from edgecl.errors import LabelError
from edgecl.frames import Detections, empty_labels

LOG = logging.getLogger(__name__)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO / ultralytics iouv
DECE_MIN_CONF = 0.3  # see edgecl.calibration.dece: keeps near-zero boxes out of D-ECE


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
        reliability: the reliability bins behind ``dece``.
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

    def to_dict(self) -> dict:
        """JSON-ready dict (reliability bins as lists, class keys as strings).

        Returns:
            The scalar fields, ``per_class_ap50_95`` and ``reliability`` (or None).
        """
        out = {k: getattr(self, k) for k in ("map50_95", "map50", "recall", "precision",
                                             "n_images", "n_boxes", "dece", "n_skipped")}
        out["per_class_ap50_95"] = {str(k): v for k, v in self.per_class_ap50_95.items()}
        rel = self.reliability
        out["reliability"] = None if rel is None else {k: np.asarray(v).tolist()
                                                       for k, v in rel._asdict().items()}
        return out


class MatchStats(NamedTuple):
    """Detections of a whole set matched against ground truth.

    Attributes:
        tp: bool (D, T) true positive at each IoU threshold.
        conf: float (D,) confidences.
        pred_cls: int (D,) predicted classes.
        target_cls: int (G,) classes of all ground-truth boxes.
        n_images: number of images.
    """

    tp: np.ndarray
    conf: np.ndarray
    pred_cls: np.ndarray
    target_cls: np.ndarray
    n_images: int


def check_labels(labels: np.ndarray | None, where: str) -> np.ndarray:
    """Validate a YOLO label array.

    Args:
        labels: (N, 5) ``cls, cx, cy, w, h`` normalised, or None for "no boxes".
        where: what the labels belong to, for the error message.

    Returns:
        float32 (N, 5) array.

    Raises:
        LabelError: on a wrong shape or a negative class.
    """
    if labels is None:
        return empty_labels()
    arr = np.asarray(labels, dtype=np.float32)
    if arr.size == 0:
        return empty_labels()
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise LabelError(f"{where}: labels must have shape (N, 5), got {arr.shape}")
    if (arr[:, 0] < 0).any() or not np.isfinite(arr).all():
        raise LabelError(f"{where}: labels hold a negative class or a non-finite value")
    return arr


def _match_one(det: Detections, gt: np.ndarray, shape, iouv: np.ndarray, keep_cls):
    """Match one image's detections (sorted by score) to its boxes; see :func:`match_detections`."""
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywhn2xyxy
    import torch

    pred_keep = keep_cls(det.classes)
    order = np.argsort(-det.scores[pred_keep], kind="stable")
    boxes = np.asarray(det.boxes_xyxy, np.float32)[pred_keep][order]
    conf = np.asarray(det.scores, np.float32)[pred_keep][order]
    pred_cls = np.asarray(det.classes, np.int64)[pred_keep][order]
    gt = gt[keep_cls(gt[:, 0].astype(np.int64))]
    target_cls = gt[:, 0].astype(np.int64)
    tp = np.zeros((conf.size, iouv.size), dtype=bool)
    if conf.size and target_cls.size:
        height, width = shape
        gt_xyxy = xywhn2xyxy(gt[:, 1:5].copy(), w=width, h=height)
        iou = box_iou(torch.from_numpy(gt_xyxy), torch.from_numpy(boxes))
        # BaseValidator.match_predictions only reads ``self.iouv``: the validator's exact matching.
        holder = type("IouThresholds", (), {"iouv": torch.from_numpy(iouv.astype(np.float32))})()
        tp = BaseValidator.match_predictions(holder, torch.from_numpy(pred_cls),
                                             torch.from_numpy(target_cls), iou).numpy()
    return tp, conf, pred_cls, target_cls


def match_detections(
    preds: Sequence[Detections],
    gts: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, int]],
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    class_ids: Sequence[int] | None = None,
) -> MatchStats:
    """Match every image's detections to its ground truth, as ultralytics' DetectionValidator does.

    Args:
        preds: detections per image in original pixels.
        gts: YOLO labels per image (N, 5) normalised; None or empty for no boxes.
        shapes: ``(height, width)`` per image.
        iou_thresholds: IoU thresholds (default 0.50:0.05:0.95).
        class_ids: when given, detections and boxes of other classes are dropped.

    Returns:
        :class:`MatchStats` over all images.

    Raises:
        ValueError: when the three sequences differ in length.
        LabelError: on malformed labels.
    """
    if not len(preds) == len(gts) == len(shapes):
        raise ValueError(f"{len(preds)} predictions, {len(gts)} label arrays, {len(shapes)} shapes")
    allowed = None if class_ids is None else np.asarray(sorted(set(class_ids)), np.int64)

    def keep_cls(classes: np.ndarray) -> np.ndarray:
        classes = np.asarray(classes, np.int64)
        return np.ones(classes.shape, bool) if allowed is None else np.isin(classes, allowed)

    iouv = np.asarray(iou_thresholds, np.float64).reshape(-1)
    parts = [_match_one(det, check_labels(gt, f"image {k}"), shape, iouv, keep_cls)
             for k, (det, gt, shape) in enumerate(zip(preds, gts, shapes))]
    if not parts:
        return MatchStats(np.zeros((0, iouv.size), bool), np.zeros(0), np.zeros(0, np.int64),
                          np.zeros(0, np.int64), 0)
    tp, conf, pred_cls, target_cls = (np.concatenate(c) for c in zip(*parts))
    return MatchStats(tp, conf, pred_cls, target_cls, len(parts))


def _scores(stats: MatchStats) -> tuple[float, float, float, float, dict[int, float]]:
    """(map50_95, map50, recall, precision, per-class AP50-95) via ultralytics' ap_per_class."""
    from ultralytics.utils.metrics import ap_per_class

    if stats.target_cls.size == 0:
        return 0.0, 0.0, 0.0, 0.0, {}
    _, _, p, r, _, ap, classes, *_ = ap_per_class(stats.tp, stats.conf, stats.pred_cls,
                                                  stats.target_cls)
    per_class = {int(c): float(v) for c, v in zip(classes, ap.mean(1))}
    return float(ap.mean()), float(ap[:, 0].mean()), float(r.mean()), float(p.mean()), per_class


def evaluate_detections(
    preds: Sequence[Detections],
    gts: Sequence[np.ndarray],
    shapes: Sequence[tuple[int, int]],
    class_ids: Sequence[int] | None = None,
    n_skipped: int = 0,
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

    Returns:
        The :class:`EvalResult`.

    Raises:
        ValueError: when the sequences differ in length.
        LabelError: on malformed labels.
    """
    stats = match_detections(preds, gts, shapes, IOU_THRESHOLDS, class_ids)
    map50_95, map50, recall, precision, per_class = _scores(stats)
    at_half = int(np.argmin(np.abs(IOU_THRESHOLDS - DEFAULT_IOU_THR)))
    confident = stats.conf >= DECE_MIN_CONF
    bins = bins_from_flags(stats.conf[confident], stats.tp[confident, at_half], DEFAULT_N_BINS)
    return EvalResult(map50_95=map50_95, map50=map50, recall=recall, precision=precision,
                      per_class_ap50_95=per_class, n_images=stats.n_images,
                      n_boxes=int(stats.target_cls.size), dece=dece_from_bins(bins),
                      n_skipped=n_skipped, reliability=bins)


def read_label_file(path: str | Path) -> np.ndarray:
    """Read a YOLO label file; a missing file means an image without boxes.

    Args:
        path: ``.txt`` file with rows ``cls cx cy w h``.

    Returns:
        float32 (N, 5).

    Raises:
        LabelError: on a malformed row (naming file and line).
    """
    path = Path(path)
    if not path.is_file():
        return empty_labels()
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise LabelError(f"{path}:{line_no}: non-numeric label row {line.strip()!r}") from None
        if len(values) != 5:
            raise LabelError(f"{path}:{line_no}: expected 5 values (cls cx cy w h), got {len(values)}")
        rows.append(values)
    return check_labels(np.array(rows, np.float32) if rows else None, str(path))


def evaluate_model(model, image_paths: Sequence[str | Path], class_ids: Sequence[int] | None = None,
                   batch: int = 16) -> EvalResult:
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

    Returns:
        The :class:`EvalResult`.

    Raises:
        LabelError: on a malformed label file.
        ValueError: when ``batch`` < 1.
    """
    import cv2
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
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                LOG.warning("evaluation: cannot read image %s, skipped", path)
                skipped += 1
                continue
            images.append(image)
            gts.append(read_label_file(label_path))
            shapes.append(image.shape[:2])
        if images:
            preds.extend(model.infer(images))
    return evaluate_detections(preds, gts, shapes, class_ids, n_skipped=skipped)
