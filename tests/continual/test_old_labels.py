"""Pseudo-labels of old classes: merge rule on hand-made boxes, and work copies on disk."""

import cv2
import numpy as np
import pytest

from edgecl.continual.old_labels import box_iou_np, merge_old_class_boxes, pseudo_label_copies
from edgecl.data.labels import read_yolo_labels
from edgecl.frames import Detections


def dets(rows):
    arr = np.asarray(rows, np.float32).reshape(-1, 6)
    return Detections(arr[:, :4], arr[:, 4], arr[:, 5].astype(np.int64))


def test_iou_hand_computed():
    iou = box_iou_np([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]])
    assert iou[0, 0] == pytest.approx(50 / 150) and iou[0, 1] == 0.0


def test_merge_adds_only_confident_old_non_overlapping_boxes():
    # image 100x100; labelled: new class 2 at (10..30, 10..30)
    labels = np.array([[2, 0.2, 0.2, 0.2, 0.2]], np.float32)
    d = dets([[60, 60, 80, 80, 0.9, 0],    # old, confident, free -> added
              [12, 12, 30, 30, 0.95, 1],   # old, confident, overlaps the label (IoU .81) -> no
              [60, 10, 80, 30, 0.3, 0],    # old but below conf -> no
              [10, 60, 30, 80, 0.9, 2],    # class 2 is not old -> no
              [62, 62, 80, 80, 0.8, 1],    # overlaps the added box (IoU .81) -> no
              [90, 90, 120, 110, 0.7, 1]])  # old, clipped to 90..100 -> added
    merged, added = merge_old_class_boxes(labels, d, 100, 100, {0, 1}, conf=0.5, iou_thr=0.3)
    assert added == 2
    np.testing.assert_allclose(merged[0], labels[0])
    np.testing.assert_allclose(merged[1], [0, 0.7, 0.7, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(merged[2], [1, 0.95, 0.95, 0.1, 0.1], atol=1e-6)


def test_merge_with_no_labels_and_no_detections():
    merged, added = merge_old_class_boxes(np.zeros((0, 5)), Detections(), 50, 40, {0},
                                          conf=0.5, iou_thr=0.3)
    assert added == 0 and merged.shape == (0, 5)


class FixedDetector:
    def __init__(self, det):
        self.det = det
        self.calls = 0

    def infer(self, images):
        self.calls += 1
        return [self.det for _ in images]


def test_copies_hold_merged_labels_and_leave_originals(tmp_path):
    src = tmp_path / "data"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(src / "images" / f"{name}.png"), np.zeros((100, 100, 3), np.uint8))
    (src / "labels" / "a.txt").write_text("2 0.2 0.2 0.2 0.2\n")  # b has no label file
    det = dets([[60, 60, 80, 80, 0.9, 0]])
    paths, stats = pseudo_label_copies([src / "images" / "a.png", src / "images" / "b.png"],
                                       FixedDetector(det), tmp_path / "work", [0, 1],
                                       conf=0.5, iou_thr=0.3)
    assert [p.name for p in paths] == ["00000_a.png", "00001_b.png"]
    assert stats.added == 2 and stats.images_with_added == 2 and stats.skipped == 0
    a = read_yolo_labels(tmp_path / "work" / "labels" / "00000_a.txt").labels
    assert a.shape == (2, 5) and a[1, 0] == 0
    assert (src / "labels" / "a.txt").read_text() == "2 0.2 0.2 0.2 0.2\n"
    assert not (src / "labels" / "b.txt").exists()
