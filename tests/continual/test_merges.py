"""Detections of merged classes in a round: mapped to the class they became, NMS'd again."""

import numpy as np

from edgecl.config import load_config
from edgecl.continual.merges import MergedClassesDetector, merge_detections
from edgecl.frames import Detections


def _dets(rows):
    rows = np.asarray(rows, np.float32).reshape(-1, 6)
    return Detections(boxes_xyxy=rows[:, :4], scores=rows[:, 4], classes=rows[:, 5].astype(np.int64))


def test_a_merged_slots_box_over_the_same_object_counts_once():
    """Class 1 (truck) was merged into 0 (car). The truck box 0.8 over the car box 0.6 of one
    vehicle (IoU 90/110 = 0.82 > 0.7) leaves one car box at 0.8; a truck box elsewhere becomes
    a car box; a person (2) stays."""
    dets = _dets([[0, 0, 10, 10, 0.6, 0], [0, 0, 10, 11, 0.8, 1],
                  [50, 50, 60, 60, 0.5, 1], [0, 0, 10, 10, 0.9, 2]])
    out = merge_detections(dets, {1: 0}, iou=0.7)
    assert out.classes.tolist() == [2, 0, 0]
    np.testing.assert_allclose(out.scores, [0.9, 0.8, 0.5])
    np.testing.assert_allclose(out.boxes_xyxy[1], [0, 0, 10, 11])
    untouched = _dets([[0, 0, 10, 10, 0.6, 0]])
    assert merge_detections(untouched, {1: 0}, 0.7) is untouched
    assert merge_detections(dets, {}, 0.7) is dets


def test_a_rounds_detector_applies_the_registrys_merges(tmp_path):
    """Before: a round evaluated and calibrated the retired slot's detections as its own class
    (a version's D-ECE 0.341 from 3 'truck' false positives after 'classes merge truck car')."""
    from edgecl.continual import round as round_mod
    from edgecl.models.classes import ClassRegistry
    from edgecl.ultra import build_detection_model

    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.imgsz=64"])
    names = {0: "car", 1: "truck"}
    model = build_detection_model(2, names=names)
    plain = round_mod._backend(model, names, cfg, 0.001, 300)
    assert not isinstance(plain, MergedClassesDetector)
    image = np.full((64, 64, 3), 90, np.uint8)
    [raw] = plain.infer([image])
    old = int(raw.classes[0])  # a slot the untrained head scores: merged into the other
    registry = ClassRegistry(tmp_path)
    registry.add(["car", "truck"])
    registry.merge(names[old], names[1 - old])
    detector = round_mod._backend(model, names, cfg, 0.001, 300)
    assert isinstance(detector, MergedClassesDetector) and detector.merged == {old: 1 - old}
    [dets] = detector.infer([image])
    assert len(dets) and old not in set(dets.classes.tolist())
