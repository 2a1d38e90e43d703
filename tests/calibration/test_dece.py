"""D-ECE and reliability bins on hand-built detections."""

import math

import numpy as np
import pytest

from edgecl.calibration.dece import (
    bins_from_flags,
    bins_to_records,
    dece,
    dece_from_bins,
    merge_bins,
    protocol,
    reliability_bins,
)
from edgecl.frames import Detections

SHAPE = (100, 100)  # (h, w)


def yolo(cls, x1, y1, x2, y2):
    h, w = SHAPE
    return [cls, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]


GTS = [np.array([yolo(0, 10, 10, 30, 30), yolo(0, 60, 60, 90, 90)])]
# 0.95 on box A (TP), 0.94 also on A (FP: A already claimed), 0.30 on B (TP),
# 0.10 on B but class 1 (FP: wrong class).
PREDS = [Detections(
    np.array([[10, 10, 30, 30], [10, 10, 30, 30], [61, 61, 90, 90], [60, 60, 90, 90]], np.float32),
    np.array([0.95, 0.94, 0.30, 0.10], np.float32),
    np.array([0, 0, 0, 1], np.int64),
)]


def test_hand_computed_dece():
    # bin width 1/15 = 0.0667:
    #   bin 14 [0.933, 1.0): 0.95 TP, 0.94 FP -> precision 0.5, conf 0.945, gap 0.445, n 2
    #   bin  4 [0.267, 0.333): 0.30 TP      -> precision 1.0, conf 0.30,  gap 0.700, n 1
    #   bin  1 [0.067, 0.133): 0.10 FP      -> precision 0.0, conf 0.10,  gap 0.100, n 1
    # D-ECE = (2 * 0.445 + 0.7 + 0.1) / 4 = 1.69 / 4 = 0.4225
    assert dece(PREDS, GTS, [SHAPE], min_conf=0.0) == pytest.approx(0.4225, abs=1e-6)


def test_reliability_bins_contents():
    edges, conf_mean, precision, counts = reliability_bins(PREDS, GTS, [SHAPE], min_conf=0.0)
    assert edges.shape == (16,) and edges[0] == 0.0 and edges[-1] == 1.0
    assert counts.tolist() == [0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert conf_mean[14] == pytest.approx(0.945, abs=1e-6)
    assert precision[[1, 4, 14]] == pytest.approx([0.0, 1.0, 0.5])
    assert np.isnan(precision[0]) and np.isnan(conf_mean[0])


def test_iou_threshold_and_min_conf():
    # B's TP box [61,61,90,90] has IoU 29*29 / 900 = 0.934: a TP at 0.5, a FP at 0.95
    # at iou_thr 0.95: bins 14 (0.5 vs 0.945) n 2, 4 (0 vs 0.30) n 1, 1 (0 vs 0.10) n 1
    # D-ECE = (0.89 + 0.30 + 0.10) / 4 = 1.29 / 4 = 0.3225
    assert dece(PREDS, GTS, [SHAPE], iou_thr=0.95, min_conf=0.0) == pytest.approx(0.3225,
                                                                      abs=1e-6)
    # min_conf 0.5 keeps only bin 14: D-ECE = 0.445
    assert dece(PREDS, GTS, [SHAPE], min_conf=0.5) == pytest.approx(0.445, abs=1e-6)
    assert math.isnan(dece(PREDS, GTS, [SHAPE], min_conf=0.99))


def test_bin_edges_and_perfect_calibration():
    # conf 1.0 goes to the last bin, 0.0 to the first; TP at 1.0 and FP at 0.0 are calibrated
    bins = bins_from_flags(np.array([1.0, 0.0]), np.array([True, False]), n_bins=15)
    assert bins.counts[0] == 1 and bins.counts[-1] == 1
    assert dece_from_bins(bins) == pytest.approx(0.0)
    # two bins: conf 0.25 (TP) and 0.75 (TP, FP): (1 * 0.75 + 2 * |0.5 - 0.75|) / 3 = 1.25 / 3
    bins = bins_from_flags(np.array([0.25, 0.75, 0.75]), np.array([1, 1, 0]), n_bins=2)
    assert dece_from_bins(bins) == pytest.approx(1.25 / 3)
    with pytest.raises(ValueError, match="flags"):
        bins_from_flags(np.array([0.5]), np.array([True, False]))


def test_merge_bins_equals_binning_everything_at_once():
    conf_a, tp_a = np.array([0.9, 0.2, 0.95]), np.array([1, 0, 0])
    conf_b, tp_b = np.array([0.91, 0.5]), np.array([1, 1])
    merged = merge_bins([bins_from_flags(conf_a, tp_a), bins_from_flags(conf_b, tp_b)])
    whole = bins_from_flags(np.r_[conf_a, conf_b], np.r_[tp_a, tp_b])
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_allclose(merged.conf_mean, whole.conf_mean, equal_nan=True)
    np.testing.assert_allclose(merged.precision, whole.precision, equal_nan=True)
    assert dece_from_bins(merged) == pytest.approx(dece_from_bins(whole))
    with pytest.raises(ValueError, match="edges"):
        merge_bins([bins_from_flags(conf_a, tp_a), bins_from_flags(conf_a, tp_a, n_bins=3)])


def test_protocol_and_bin_records():
    proto = protocol(0.5, 10, 0.3)
    assert proto["iou_thr"] == 0.5 and proto["n_bins"] == 10 and proto["min_conf"] == 0.3
    assert "match_predictions" in proto["matching"] and "equal-width" in proto["binning"]
    records = bins_to_records(bins_from_flags(np.array([0.95, 0.91, 0.15]), np.array([1, 0, 1]), 10))
    assert len(records) == 10 and records[1]["count"] == 1 and records[1]["precision"] == 1.0
    assert records[9] == {"lo": 0.9, "hi": 1.0, "confidence": pytest.approx(0.93),
                          "precision": 0.5, "count": 2}
    assert records[5]["confidence"] is None and records[5]["count"] == 0


def test_the_default_score_threshold_is_the_protocol_one():
    """Before: dece() and reliability_bins() kept every detection by default while protocol()
    recorded 0.3: a caller recording both recorded the wrong threshold. At 0.3 the 0.10
    detection is left out: (2 x 0.445 + 0.7) / 3 = 0.53."""
    assert protocol()["min_conf"] == 0.3
    assert dece(PREDS, GTS, [SHAPE]) == pytest.approx(1.59 / 3, abs=1e-6)
    assert reliability_bins(PREDS, GTS, [SHAPE]).counts.sum() == 3
