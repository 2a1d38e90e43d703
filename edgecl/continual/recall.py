"""Image-level detection recall@IoU, the signal MIR (paper variant) and FAR rank samples by."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgecl.frames import Detections


class DetectorLike(Protocol):
    """Anything with a batched ``infer`` (an edgecl Backend, or a fake in tests)."""

    def infer(self, images: list[np.ndarray]) -> list[Detections]:
        """Detect objects in a batch of BGR images."""


def yolo_to_xyxy(labels_yolo: np.ndarray, width: int, height: int) -> np.ndarray:
    """Convert normalised YOLO rows to pixel boxes.

    Args:
        labels_yolo: (N, 5) rows ``cls, cx, cy, w, h`` normalised to 0..1.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        float32 (N, 4) boxes ``x1, y1, x2, y2`` in pixels.
    """
    lab = np.asarray(labels_yolo, dtype=np.float32).reshape(-1, 5)
    cx, cy = lab[:, 1] * width, lab[:, 2] * height
    w, h = lab[:, 3] * width, lab[:, 4] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)


def image_recall(det: Detections, labels_yolo: np.ndarray, width: int, height: int,
                 iou_thr: float = 0.5) -> float:
    """Fraction of ground-truth boxes found by a same-class detection with IoU >= ``iou_thr``.

    Detections are matched greedily in descending score order, one-to-one: each takes the
    unmatched same-class ground-truth box it overlaps most (if at least ``iou_thr``).

    Args:
        det: detections in pixels of the image.
        labels_yolo: (N, 5) ground truth, YOLO-normalised.
        width: image width in pixels.
        height: image height in pixels.
        iou_thr: IoU needed for a match.

    Returns:
        Recall in 0..1; 1.0 for an image without ground truth.
    """
    gt = np.asarray(labels_yolo, dtype=np.float32).reshape(-1, 5)
    if len(gt) == 0:
        return 1.0
    if len(det) == 0:
        return 0.0
    import torch

    from edgecl.ultra import ensure_offline

    ensure_offline()
    from ultralytics.utils.metrics import box_iou

    iou = box_iou(torch.from_numpy(np.asarray(det.boxes_xyxy, np.float32).reshape(-1, 4)),
                  torch.from_numpy(yolo_to_xyxy(gt, width, height))).numpy()
    same_class = np.asarray(det.classes).reshape(-1, 1) == gt[:, 0].astype(np.int64).reshape(1, -1)
    iou = np.where(same_class, iou, 0.0)
    matched = np.zeros(len(gt), dtype=bool)
    for d in np.argsort(-np.asarray(det.scores), kind="stable"):
        candidates = np.where(~matched & (iou[d] >= iou_thr), iou[d], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_thr:
            matched[best] = True
    return float(matched.sum()) / len(gt)


def batch_recall(model: DetectorLike, images: list[np.ndarray], labels: list[np.ndarray],
                 batch: int = 16, iou_thr: float = 0.5) -> np.ndarray:
    """Image recall of each image under ``model``, inferring ``batch`` images at a time.

    Args:
        model: object with ``infer(list_of_bgr_images) -> list[Detections]``.
        images: BGR images.
        labels: YOLO ground truth of each image.
        batch: images per ``infer`` call.
        iou_thr: IoU needed for a match.

    Returns:
        float64 array of recalls, one per image.

    Raises:
        ValueError: ``images`` and ``labels`` differ in length, or the model returned a
            different number of results than images.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label arrays")
    out = np.zeros(len(images), dtype=np.float64)
    step = max(1, int(batch))
    for start in range(0, len(images), step):
        chunk = images[start:start + step]
        dets = model.infer(list(chunk))
        if len(dets) != len(chunk):
            raise ValueError(f"model returned {len(dets)} results for {len(chunk)} images")
        for j, (img, det) in enumerate(zip(chunk, dets)):
            h, w = img.shape[:2]
            out[start + j] = image_recall(det, labels[start + j], w, h, iou_thr)
    return out
