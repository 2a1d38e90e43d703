"""Detection evaluation: hand cases with known mAP, recall and D-ECE."""

import math

import cv2
import numpy as np
import pytest

from edgecl.continual.evaluate import EvalResult, evaluate_detections, evaluate_model, read_label_file
from edgecl.errors import LabelError
from edgecl.frames import Detections

SHAPE = (100, 200)  # (h, w)
# ultralytics' compute_ap integrates a 101-point precision envelope whose last sample (recall 1.0)
# is the sentinel 0, so a perfect class scores 0.99 + 0.01 / 2 = 0.995, and a class found up to
# recall 0.5 with precision 1 scores 0.495 (same trapezoid, last sample at 0.5).
PERFECT_AP = 0.995
HALF_AP = 0.495


def dets(boxes, scores, classes):
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(classes, np.int64))


def yolo(cls, x1, y1, x2, y2, h=SHAPE[0], w=SHAPE[1]):
    return [cls, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]


GT_A = yolo(0, 10, 10, 60, 50)
GT_B = yolo(0, 100, 40, 180, 90)


def test_perfect_predictions_give_map_one():
    gts = [np.array([GT_A, GT_B]), np.array([GT_A])]
    preds = [dets([[10, 10, 60, 50], [100, 40, 180, 90]], [0.9, 0.8], [0, 0]),
             dets([[10, 10, 60, 50]], [0.95], [0])]
    res = evaluate_detections(preds, gts, [SHAPE, SHAPE])
    assert res.map50_95 == pytest.approx(PERFECT_AP, abs=1e-6)
    assert res.map50 == pytest.approx(PERFECT_AP, abs=1e-6)
    assert res.recall == pytest.approx(1.0, abs=1e-6)
    assert res.precision == pytest.approx(1.0, abs=1e-6)
    assert res.n_images == 2 and res.n_boxes == 3
    assert res.per_class_ap50_95 == {0: pytest.approx(PERFECT_AP, abs=1e-6)}


def test_no_predictions_give_zero():
    res = evaluate_detections([Detections()], [np.array([GT_A])], [SHAPE])
    assert (res.map50_95, res.map50, res.recall, res.precision) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(res.dece)  # no detection: calibration undefined


def test_one_of_two_boxes_found_at_iou_above_095_gives_recall_half():
    # box A shifted by 0.5 px: IoU = (49.5 * 40) / (50 * 40 + 0.5 * 40) = 1980 / 2020 = 0.980 > 0.95
    preds = [dets([[10.5, 10, 60.5, 50]], [0.9], [0])]
    res = evaluate_detections(preds, [np.array([GT_A, GT_B])], [SHAPE])
    assert res.recall == pytest.approx(0.5, abs=1e-3)
    assert res.precision == pytest.approx(1.0, abs=1e-3)
    # precision 1 up to recall 0.5, then 0, at every IoU threshold (0.98 > 0.95)
    assert res.map50 == pytest.approx(HALF_AP, abs=1e-6)
    assert res.map50_95 == pytest.approx(HALF_AP, abs=1e-6)
    # D-ECE: one TP at conf 0.9 -> |1 - 0.9| = 0.1
    assert res.dece == pytest.approx(0.1, abs=1e-6)


def test_class_restriction_drops_other_classes():
    gt = np.array([GT_A, yolo(1, 100, 40, 180, 90)])
    # class 0 found perfectly (conf 0.5); class 1 missed; a class-2 box at conf 0.9 where nothing is
    preds = [dets([[10, 10, 60, 50], [0, 60, 20, 99]], [0.5, 0.9], [0, 2])]
    both = evaluate_detections(preds, [gt], [SHAPE])
    assert both.map50_95 == pytest.approx(PERFECT_AP / 2, abs=1e-6)  # (0.995 + 0) / 2 classes
    assert set(both.per_class_ap50_95) == {0, 1}
    # D-ECE over both detections: (|1 - 0.5| + |0 - 0.9|) / 2 = 0.7
    assert both.dece == pytest.approx(0.7, abs=1e-6)
    only0 = evaluate_detections(preds, [gt], [SHAPE], class_ids=[0])
    assert only0.map50_95 == pytest.approx(PERFECT_AP, abs=1e-6)
    assert only0.n_boxes == 1 and set(only0.per_class_ap50_95) == {0}
    assert only0.dece == pytest.approx(0.5, abs=1e-6)  # class-2 detection dropped


def test_per_class_recall_instances_and_protocol():
    # class 0: 2 boxes, 1 found; class 1: 1 box, found
    gt = np.array([GT_A, GT_B, yolo(1, 0, 60, 40, 99)])
    preds = [dets([[10, 10, 60, 50], [0, 60, 40, 99]], [0.9, 0.8], [0, 1])]
    res = evaluate_detections(preds, [gt], [SHAPE])
    assert res.per_class_instances == {0: 2, 1: 1}
    assert res.per_class_recall == {0: pytest.approx(0.5, abs=1e-3), 1: pytest.approx(1.0, abs=1e-3)}
    assert res.per_class_ap50_95 == {0: pytest.approx(HALF_AP, abs=1e-6),
                                     1: pytest.approx(PERFECT_AP, abs=1e-6)}
    out = res.to_dict()
    assert out["per_class_instances"] == {"0": 2, "1": 1}
    assert out["dece_protocol"]["iou_thr"] == 0.5 and out["dece_protocol"]["min_conf"] == 0.3


def test_low_confidence_detections_stay_out_of_dece_but_count_for_map():
    preds = [dets([[10, 10, 60, 50], [100, 40, 180, 90]], [0.9, 0.01], [0, 0])]
    res = evaluate_detections(preds, [np.array([GT_A, GT_B])], [SHAPE])
    assert res.map50_95 == pytest.approx(PERFECT_AP, abs=1e-6)
    assert res.dece == pytest.approx(0.1, abs=1e-6)
    assert int(res.reliability.counts.sum()) == 1


def test_mismatched_lengths_and_bad_labels():
    with pytest.raises(ValueError, match="2 predictions"):
        evaluate_detections([Detections(), Detections()], [None], [SHAPE])
    with pytest.raises(LabelError, match="image 0"):
        evaluate_detections([Detections()], [np.zeros((1, 4))], [SHAPE])


def test_to_dict_is_json_ready():
    res = evaluate_detections([dets([[10, 10, 60, 50]], [0.9], [0])], [np.array([GT_A])], [SHAPE])
    d = res.to_dict()
    assert d["per_class_ap50_95"] == {"0": pytest.approx(PERFECT_AP, abs=1e-6)}
    assert len(d["reliability"]["counts"]) == 15
    assert isinstance(res, EvalResult)


class BoxesFromLabels:
    """Fake backend: answers each image with the boxes of a fixed label row (conf 0.9)."""

    def __init__(self, row):
        self.row = row
        self.calls = 0

    def infer(self, images):
        self.calls += 1
        out = []
        for img in images:
            h, w = img.shape[:2]
            _, cx, cy, bw, bh = self.row
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            out.append(dets([box], [0.9], [0]))
        return out


def test_evaluate_model_reads_images_and_labels(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(images / f"{name}.png"), np.zeros((100, 200, 3), np.uint8))
        (labels / f"{name}.txt").write_text(" ".join(str(v) for v in GT_A) + "\n")
    (images / "broken.png").write_bytes(b"not an image")
    paths = sorted(images.iterdir())
    model = BoxesFromLabels(GT_A)
    res = evaluate_model(model, paths, batch=2)
    assert res.n_skipped == 1 and res.n_images == 3 and res.n_boxes == 3
    assert res.map50_95 == pytest.approx(PERFECT_AP, abs=1e-6)
    assert model.calls == 2  # batches [a, b] and [broken, c]


def test_label_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "x.txt"
    bad.write_text("0 0.5 0.5 0.1 0.1\n0 0.5 0.5\n")
    with pytest.raises(LabelError, match=r"x.txt:2"):
        read_label_file(bad)
    assert read_label_file(tmp_path / "missing.txt").shape == (0, 5)
    with pytest.raises(ValueError, match="batch"):
        evaluate_model(BoxesFromLabels(GT_A), [], batch=0)


def test_from_dict_gives_back_the_result_to_dict_wrote():
    """Round trip through JSON text (the staged round record), NaN D-ECE and bins included."""
    import dataclasses
    import json

    res = evaluate_detections([dets([[10, 10, 60, 50]], [0.9], [0])], [np.array([GT_A])], [SHAPE])
    res = dataclasses.replace(res, dece=float("nan"), per_class_recall={0: 1.0},
                              per_class_instances={0: 1})
    back = EvalResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.per_class_ap50_95 == {0: pytest.approx(PERFECT_AP, abs=1e-6)}
    assert (back.n_images, back.n_boxes, back.per_class_instances) == (1, 1, {0: 1})
    assert back.per_class_recall == {0: 1.0} and math.isnan(back.dece)
    assert back.reliability.counts.tolist() == res.reliability.counts.tolist()
    assert back.reliability.counts.sum() == 1 and back.reliability.bin_edges[-1] == 1.0
    assert EvalResult.from_dict({**res.to_dict(), "map50": None}).map50 != 0.0
    with pytest.raises(KeyError):
        EvalResult.from_dict({"map50_95": 0.5})


def test_a_class_recall_does_not_move_with_another_class_detections():
    """Before: each class's recall was read at the one confidence that maximises the mean F1
    over all classes: ten false positives of class 1 moving from 0.05 to 0.60 took class 0's
    recall from 1.0 to 0.56 with its own detections unchanged (and the forgetting policy showed
    class 0 as forgotten)."""
    def yolo(cls, x1, y1, x2, y2):
        return [cls, (x1 + x2) / 1280, (y1 + y2) / 1280, (x2 - x1) / 640, (y2 - y1) / 640]

    gts = [np.array([yolo(0, 10, 10, 60, 60), yolo(1, 200, 200, 260, 260)], np.float32)] * 4

    def class0(false_positive_score):
        preds = []
        for score in (0.9, 0.7, 0.5, 0.3):  # class 0 found in all four images
            boxes = [[10, 10, 60, 60], [200, 200, 260, 260]] + [
                [300 + 10 * k, 300, 340 + 10 * k, 340] for k in range(10)]
            preds.append(Detections(np.array(boxes, np.float32),
                                    np.array([score, 0.95] + [false_positive_score] * 10,
                                             np.float32), np.array([0, 1] + [1] * 10)))
        result = evaluate_detections(preds, gts, [(640, 640)] * 4)
        return round(result.per_class_ap50_95[0], 3), result.per_class_recall[0]

    assert class0(0.05) == class0(0.60) == (0.995, 1.0)


def test_boxes_found_and_false_detections_are_counted_at_the_serving_confidence():
    """Image 1: A found at 0.9, B only at 0.2, a stray box at 0.5; image 2: A found at 0.3 and a
    class-1 box on it (wrong class) at 0.8. At 0.25: class 0 finds A twice of its 3 boxes
    (B's 0.2 is below), and the stray box and the wrong-class box are false: 2. At 0.95 none
    is found, and none is false."""
    preds = [dets([[10, 10, 60, 50], [100, 40, 180, 90], [150, 0, 199, 20]], [0.9, 0.2, 0.5],
                  [0, 0, 0]),
             dets([[10, 10, 60, 50], [10, 10, 60, 50]], [0.3, 0.8], [0, 1])]
    gts = [np.array([GT_A, GT_B]), np.array([GT_A])]
    res = evaluate_detections(preds, gts, [SHAPE, SHAPE], serving_conf=0.25)
    assert res.serving_conf == 0.25
    assert res.per_class_found == {0: 2} and res.false_positives == 2
    assert res.per_class_false_positives == {0: 1, 1: 1}
    res = evaluate_detections(preds, gts, [SHAPE, SHAPE], serving_conf=0.95)
    assert res.per_class_found == {0: 0} and res.false_positives == 0
    # a detection below the threshold cannot take a box from one above it: B's 0.2 box
    # overlaps A better than a 0.6 box, which must still count as finding A
    preds = [dets([[10, 10, 60, 50], [12, 12, 62, 52]], [0.2, 0.6], [0, 0])]
    res = evaluate_detections(preds, [np.array([GT_A])], [SHAPE], serving_conf=0.25)
    assert res.per_class_found == {0: 1} and res.false_positives == 0
    # a served image shows at most model.max_det detections, the highest-scored: with 1, the
    # stray 0.5 box of image 1 and image 2's 0.3 box (below its 0.8 wrong-class box) go
    res = evaluate_detections([dets([[10, 10, 60, 50], [100, 40, 180, 90], [150, 0, 199, 20]],
                                    [0.9, 0.2, 0.5], [0, 0, 0]),
                               dets([[10, 10, 60, 50], [10, 10, 60, 50]], [0.3, 0.8], [0, 1])],
                              [np.array([GT_A, GT_B]), np.array([GT_A])], [SHAPE, SHAPE],
                              serving_conf=0.25, serving_max_det=1)
    assert res.per_class_found == {0: 1} and res.per_class_false_positives == {1: 1}
    # without a serving confidence nothing is counted; one outside 0..1 is refused
    plain = evaluate_detections(preds, [np.array([GT_A])], [SHAPE])
    assert math.isnan(plain.serving_conf) and plain.per_class_found == {}
    with pytest.raises(ValueError, match="serving_conf"):
        evaluate_detections(preds, [np.array([GT_A])], [SHAPE], serving_conf=1.5)


def test_serving_figures_survive_the_round_trip_and_old_records_read_without_them():
    import json

    res = evaluate_detections([dets([[10, 10, 60, 50]], [0.9], [0])], [np.array([GT_A])], [SHAPE],
                              serving_conf=0.25)
    back = EvalResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert (back.serving_conf, back.per_class_found, back.false_positives) == (0.25, {0: 1}, 0)
    res = evaluate_detections([dets([[100, 40, 180, 90]], [0.9], [2])], [np.array([GT_A])],
                              [SHAPE], serving_conf=0.25)
    back = EvalResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert (back.false_positives, back.per_class_false_positives) == (1, {2: 1})
    old = res.to_dict()
    for key in ("serving_conf", "per_class_found", "false_positives"):
        del old[key]
    back = EvalResult.from_dict(old)
    assert math.isnan(back.serving_conf) and back.per_class_found == {}
    # a recorded confidence that is none (text, -3, 10**400): the counts are not judged
    for conf in ("abc", -3, 10 ** 400, True):
        assert math.isnan(EvalResult.from_dict({**res.to_dict(), "serving_conf": conf}).serving_conf)
    with pytest.raises(ValueError, match="a count of inf"):
        EvalResult.from_dict({**res.to_dict(), "false_positives": float("inf")})
