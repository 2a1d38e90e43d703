"""Detections matched to ground truth, exactly as ultralytics' DetectionValidator matches them.

The one matching rule that evaluation (:mod:`edgecl.continual.evaluate`), D-ECE
(:mod:`edgecl.calibration.dece`) and the post-hoc calibrators (:mod:`edgecl.calibration.posthoc`)
share. It lives here, below both users, so neither imports the other.

Rule (ultralytics 8.4 ``BaseValidator.match_predictions``, COCO-style): per image, the IoU of
every detection with every ground-truth box is computed, zero for boxes of another class; the
detections, in descending confidence order, each take the not yet claimed box of highest IoU, and
are a true positive at every threshold ``t`` that this IoU reaches (each box claimed at most once
per threshold).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from edgecl.data.labels import check_label_array
from edgecl.frames import Detections

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO / ultralytics iouv

MATCHING_RULE = ("same class, IoU >= threshold, greedy in descending confidence order: each "
                 "detection takes the unclaimed box of highest IoU (ultralytics "
                 "BaseValidator.match_predictions)")


class MatchStats(NamedTuple):
    """Detections of a whole set matched against ground truth.

    Attributes:
        tp: bool (D, T) true positive at each IoU threshold.
        conf: float32 (D,) confidences.
        pred_cls: int64 (D,) predicted classes.
        target_cls: int64 (G,) classes of all ground-truth boxes.
        n_images: number of images.
        image_index: int64 (D,) index of the image each detection belongs to.
    """

    tp: np.ndarray
    conf: np.ndarray
    pred_cls: np.ndarray
    target_cls: np.ndarray
    n_images: int
    image_index: np.ndarray


def _match_one(det: Detections, gt: np.ndarray, shape: tuple[int, int], iouv: np.ndarray,
               keep_cls: Callable[[np.ndarray], np.ndarray]):
    """Match one image's detections (sorted by score) to its boxes; see :func:`match_detections`."""
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywhn2xyxy

    pred_keep = keep_cls(det.classes)
    order = np.argsort(-np.asarray(det.scores)[pred_keep], kind="stable")
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
    gts: Sequence[np.ndarray | None],
    shapes: Sequence[tuple[int, int]],
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    class_ids: Sequence[int] | None = None,
) -> MatchStats:
    """Match every image's detections to its ground truth, as ultralytics' DetectionValidator does.

    Args:
        preds: detections per image in original pixels.
        gts: YOLO labels per image (N, 5) ``cls, cx, cy, w, h`` normalised; None or empty for
            no boxes.
        shapes: ``(height, width)`` per image in pixels.
        iou_thresholds: IoU thresholds (default 0.50:0.05:0.95).
        class_ids: when given, detections and boxes of other classes are dropped.

    Returns:
        :class:`MatchStats` over all images; within an image detections are in descending score
        order.

    Raises:
        ValueError: when the three sequences differ in length.
        LabelError: on malformed labels (the one YOLO label rule,
            :func:`edgecl.data.labels.check_label_array`).
    """
    if not len(preds) == len(gts) == len(shapes):
        raise ValueError(f"{len(preds)} predictions, {len(gts)} label arrays, {len(shapes)} shapes")
    allowed = None if class_ids is None else np.asarray(sorted(set(class_ids)), np.int64)

    def keep_cls(classes: np.ndarray) -> np.ndarray:
        classes = np.asarray(classes, np.int64)
        return np.ones(classes.shape, bool) if allowed is None else np.isin(classes, allowed)

    iouv = np.asarray(iou_thresholds, np.float64).reshape(-1)
    parts = [_match_one(det, check_label_array(gt, f"image {k}"), shape, iouv, keep_cls)
             for k, (det, gt, shape) in enumerate(zip(preds, gts, shapes))]
    if not parts:
        return MatchStats(np.zeros((0, iouv.size), bool), np.zeros(0, np.float32),
                          np.zeros(0, np.int64), np.zeros(0, np.int64), 0, np.zeros(0, np.int64))
    tp, conf, pred_cls, target_cls = (np.concatenate(c) for c in zip(*parts))
    image_index = np.concatenate([np.full(p[1].size, k, np.int64) for k, p in enumerate(parts)])
    return MatchStats(tp, conf, pred_cls, target_cls, len(parts), image_index)
