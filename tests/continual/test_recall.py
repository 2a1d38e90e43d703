"""Image recall@0.5 on hand-built boxes (IoUs computed by hand in the comments)."""

import numpy as np
import pytest

from edgecl.continual.recall import batch_recall, image_recall, yolo_to_xyxy
from edgecl.frames import Detections

W = H = 100


def dets(boxes, scores, classes):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes, np.int64))


def gt_from_xyxy(rows):
    """(cls, x1, y1, x2, y2) pixel rows -> YOLO rows on the 100x100 image."""
    out = [[c, (x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H]
           for c, x1, y1, x2, y2 in rows]
    return np.array(out, np.float32)


def test_yolo_to_xyxy():
    box = yolo_to_xyxy(np.array([[0, 0.5, 0.5, 0.2, 0.4]]), 100, 50)
    np.testing.assert_allclose(box, [[40, 15, 60, 35]])


def test_exact_match_is_full_recall():
    gt = gt_from_xyxy([(0, 40, 40, 60, 60)])
    assert image_recall(dets([[40, 40, 60, 60]], [0.9], [0]), gt, W, H) == 1.0


def test_iou_threshold():
    gt = gt_from_xyxy([(0, 40, 40, 60, 60)])
    # shifted by 5 px: inter 15*20 = 300, union 400 + 400 - 300 = 500 -> IoU 0.6
    assert image_recall(dets([[45, 40, 65, 60]], [0.9], [0]), gt, W, H) == 1.0
    # shifted by 10 px: inter 200, union 600 -> IoU 0.333
    assert image_recall(dets([[50, 40, 70, 60]], [0.9], [0]), gt, W, H) == 0.0
    assert image_recall(dets([[50, 40, 70, 60]], [0.9], [0]), gt, W, H, iou_thr=0.3) == 1.0


def test_wrong_class_does_not_count():
    gt = gt_from_xyxy([(1, 40, 40, 60, 60)])
    assert image_recall(dets([[40, 40, 60, 60]], [0.9], [0]), gt, W, H) == 0.0


def test_partial_recall():
    gt = gt_from_xyxy([(0, 0, 0, 10, 10), (2, 50, 50, 90, 90)])
    assert image_recall(dets([[50, 50, 90, 90]], [0.5], [2]), gt, W, H) == 0.5


def test_one_to_one_greedy_by_score():
    # GT A = [0,0,10,10], B = [3,0,13,10].
    # P = [1,0,11,10]: IoU(P,A) = 90/110 = .818, IoU(P,B) = 80/120 = .667
    # Q = [-1,0,9,10]: IoU(Q,A) = 90/110 = .818, IoU(Q,B) = 60/140 = .429
    gt = gt_from_xyxy([(0, 0, 0, 10, 10), (0, 3, 0, 13, 10)])
    boxes = [[1, 0, 11, 10], [-1, 0, 9, 10]]
    # P first: P takes A (its best), Q cannot reuse A and misses B -> 1/2
    assert image_recall(dets(boxes, [0.9, 0.8], [0, 0]), gt, W, H) == 0.5
    # Q first: Q takes A, P takes B -> 2/2
    assert image_recall(dets(boxes, [0.7, 0.8], [0, 0]), gt, W, H) == 1.0


def test_duplicate_detections_match_once():
    gt = gt_from_xyxy([(0, 40, 40, 60, 60), (0, 0, 0, 10, 10)])
    d = dets([[40, 40, 60, 60], [40, 40, 60, 60]], [0.9, 0.8], [0, 0])
    assert image_recall(d, gt, W, H) == 0.5


def test_no_ground_truth_is_one_and_no_detections_is_zero():
    assert image_recall(dets([[0, 0, 5, 5]], [0.9], [0]), np.zeros((0, 5)), W, H) == 1.0
    assert image_recall(Detections(), np.zeros((0, 5)), W, H) == 1.0
    assert image_recall(Detections(), gt_from_xyxy([(0, 0, 0, 10, 10)]), W, H) == 0.0


class CountingModel:
    """Returns an exact detection for even-indexed images and nothing for odd ones."""

    def __init__(self):
        self.batches = []
        self.seen = 0

    def infer(self, images):
        self.batches.append(len(images))
        out = []
        for img in images:
            hit = self.seen % 2 == 0
            self.seen += 1
            out.append(dets([[40, 40, 60, 60]], [0.9], [0]) if hit else Detections())
        return out


def test_batch_recall_batches_and_orders():
    model = CountingModel()
    images = [np.zeros((H, W, 3), np.uint8)] * 40
    labels = [gt_from_xyxy([(0, 40, 40, 60, 60)])] * 40
    rec = batch_recall(model, images, labels, batch=16)
    assert model.batches == [16, 16, 8]
    np.testing.assert_array_equal(rec, [1.0, 0.0] * 20)


def test_batch_recall_length_mismatch():
    with pytest.raises(ValueError, match="3 images but 2"):
        batch_recall(CountingModel(), [np.zeros((4, 4, 3), np.uint8)] * 3, [np.zeros((0, 5))] * 2)
