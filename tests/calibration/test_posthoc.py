"""Post-hoc per-class calibrators on hand-made inputs."""

import json

import numpy as np
import pytest

from edgecl.calibration.posthoc import (
    FORMAT_VERSION,
    Calibrator,
    CalibratorFileError,
    calibration_manifest,
    fit_calibrator,
    fit_class,
    fit_for_version,
    fit_from_detections,
)
from edgecl.frames import Detections


def repeated(groups):
    """(scores, flags) from ``[(score, n, n_tp), ...]``."""
    scores = np.concatenate([np.full(n, s) for s, n, _ in groups])
    flags = np.concatenate([np.arange(n) < k for _, n, k in groups])
    return scores, flags


def test_isotonic_knots_and_threshold_hand_computed():
    # ties pooled into three blocks; Laplace-smoothed rates: 6/22, 17/22, 21/22
    scores, flags = repeated([(0.3, 20, 5), (0.6, 20, 16), (0.9, 20, 20)])
    calib = fit_class(scores, flags, min_isotonic=50)
    assert calib.method == "isotonic" and calib.n == 60 and calib.n_tp == 41
    assert calib.x == pytest.approx((0.3, 0.6, 0.9))
    assert calib.y == pytest.approx((6 / 22, 17 / 22, 21 / 22))
    np.testing.assert_allclose(calib.apply(np.array([0.3, 0.45, 0.6, 0.1, 1.0])),
                               [6 / 22, 11.5 / 22, 17 / 22, 6 / 22, 21 / 22])
    # 0.9 = 19.8/22 lies 2.8/4 = 0.7 of the way from 0.6 (17/22) to 0.9 (21/22): 0.6 + 0.21
    assert calib.threshold(0.9) == pytest.approx(0.81)
    assert calib.threshold(17 / 22) == pytest.approx(0.6)
    assert calib.threshold(0.2) == pytest.approx(0.3)  # never below the fitted range
    assert calib.threshold(0.96) is None


def test_short_lucky_run_at_the_top_sets_no_threshold():
    # plain isotonic would give the top 3 detections precision 1.0; smoothed: 4/5 = 0.8 < 0.9
    scores, flags = repeated([(0.5, 60, 30), (0.97, 3, 3)])
    calib = fit_class(scores, flags, min_isotonic=50)
    assert calib.y[-1] == pytest.approx(0.8) and calib.threshold(0.9) is None


def test_thresholds_at_precision_per_class():
    s_good, f_good = repeated([(0.3, 20, 5), (0.6, 20, 16), (0.9, 20, 20)])
    s_bad, f_bad = repeated([(0.5, 30, 10), (0.95, 30, 15)])  # never above 0.5
    s_few, f_few = repeated([(0.7, 20, 20)])  # constant (21/22 = 0.955): threshold = lowest score
    s_tiny, f_tiny = repeated([(0.8, 3, 3)])  # constant 4/5 = 0.8: never 0.9
    conf = np.concatenate([s_good, s_bad, s_few, s_tiny])
    cls = np.repeat([0, 1, 2, 3], [60, 60, 20, 3])
    calib = fit_calibrator(conf, cls, np.concatenate([f_good, f_bad, f_few, f_tiny]),
                           min_isotonic=50, min_platt=10)
    assert {c: v.method for c, v in calib.classes.items()} == {
        0: "isotonic", 1: "isotonic", 2: "constant", 3: "constant"}
    thresholds = calib.thresholds_at_precision(0.9)
    assert set(thresholds) == {0, 2}
    assert thresholds[0] == pytest.approx(0.81) and thresholds[2] == pytest.approx(0.7)
    assert calib.classes[2].value == pytest.approx(21 / 22)
    # evidence floor: class 0 was fitted on 5 + 16 + 20 = 41 true positives, class 2 on 20
    assert set(calib.thresholds_at_precision(0.9, min_true_positives=20)) == {0, 2}
    assert set(calib.thresholds_at_precision(0.9, min_true_positives=21)) == {0}
    assert calib.thresholds_at_precision(0.9, min_true_positives=42) == {}
    with pytest.raises(ValueError, match="target"):
        calib.thresholds_at_precision(0.0)


def test_overconfident_class_gets_lower_scores_and_unknown_class_keeps_raw():
    rng = np.random.default_rng(0)
    # class 0: scores 0.8..1.0 but only 40 % true positives; class 1: precision tracks the score
    s0 = rng.uniform(0.8, 1.0, 200)
    f0 = rng.random(200) < 0.4
    s1 = rng.uniform(0.3, 1.0, 200)
    f1 = rng.random(200) < s1
    calib = fit_calibrator(np.concatenate([s0, s1]), np.repeat([0, 1], 200),
                           np.concatenate([f0, f1]))
    out = calib.calibrate(np.array([0, 0, 1, 7]), np.array([0.9, 0.95, 0.9, 0.9]))
    assert out.dtype == np.float32
    assert out[0] < 0.6 and out[1] < 0.6  # pulled down towards 0.4
    assert abs(out[2] - 0.9) < 0.15  # already calibrated: roughly unchanged
    assert out[3] == pytest.approx(0.9)  # no calibrator for class 7: raw score
    det = Detections(np.zeros((2, 4), np.float32), np.array([0.9, 0.9], np.float32),
                     np.array([0, 7], np.int64))
    np.testing.assert_allclose(calib.calibrate_detections(det).scores, [out[0], 0.9], atol=1e-5)


def test_platt_fallback_and_threshold_solves_the_sigmoid():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.3, 1.0, 30)
    flags = rng.random(30) < scores ** 2
    flags[:2] = [True, False]
    calib = fit_class(scores, flags, min_isotonic=50, min_platt=10)
    assert calib.method == "platt" and calib.a > 0
    target = float(calib.apply(np.array([0.8]))[0])
    assert calib.threshold(target) == pytest.approx(0.8, abs=1e-6)
    assert calib.threshold(0.999999) is None  # beyond the highest score fitted on


def test_json_round_trip(tmp_path):
    s, f = repeated([(0.3, 20, 5), (0.6, 20, 16), (0.9, 20, 20)])
    calib = fit_calibrator(np.concatenate([s, [0.5] * 12]), np.repeat([0, 4], [60, 12]),
                           np.concatenate([f, [True] * 12]), protocol={"iou_thr": 0.5},
                           names={0: "car", 4: "drone"})
    path = calib.save(tmp_path / "v0001" / "calibrator.json")
    loaded = Calibrator.load(path)
    assert loaded.classes == calib.classes and loaded.names == {0: "car", 4: "drone"}
    assert loaded.protocol == {"iou_thr": 0.5}
    probe = np.linspace(0, 1, 11)
    np.testing.assert_array_equal(loaded.calibrate(np.zeros(11), probe),
                                  calib.calibrate(np.zeros(11), probe))
    assert json.loads(path.read_text())["classes"]["4"]["method"] == "constant"
    assert not list(path.parent.glob(".*.tmp"))


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(CalibratorFileError, match="cannot read"):
        Calibrator.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CalibratorFileError, match="cannot read"):
        Calibrator.load(bad)
    bad.write_text(json.dumps({"format": "edgecl-calibrator", "version": 1,
                               "classes": {"0": {"method": "magic", "n": 1, "n_tp": 1,
                                                 "lo": 0.1, "hi": 0.1}}}))
    with pytest.raises(CalibratorFileError, match="unknown method"):
        Calibrator.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(CalibratorFileError, match="not an edgecl calibrator"):
        Calibrator.load(bad)


GT_BOX = np.array([[0, 0.25, 0.25, 0.2, 0.2]], np.float32)  # pixels 15..35 of a 100 x 100 image
HIT = [15.0, 15.0, 35.0, 35.0]
MISS = [60.0, 60.0, 90.0, 90.0]


def synthetic(n_images, seed):
    """One box per image; one detection of class 0 at 0.6..1.0, a true positive half the time."""
    rng = np.random.default_rng(seed)
    preds = []
    for _ in range(n_images):
        box = HIT if rng.random() < 0.5 else MISS
        preds.append(Detections(np.array([box], np.float32),
                                np.array([rng.uniform(0.6, 1.0)], np.float32),
                                np.array([0], np.int64)))
    return preds, [GT_BOX] * n_images, [(100, 100)] * n_images


def test_dece_drops_on_a_miscalibrated_set():
    preds, gts, shapes = synthetic(240, seed=3)
    calib, report = fit_from_detections(preds, gts, shapes, min_conf=0.3, folds=2,
                                        names={0: "car"})
    # raw: mean confidence ~0.8, precision ~0.5 -> D-ECE ~0.3; calibrated: near 0.5 everywhere
    assert report["dece_before"] > 0.2
    assert report["dece_after"] < 0.1
    assert report["n_images"] == 240 and report["n_detections"] == 240
    proto = report["protocol"]
    assert proto["iou_thr"] == 0.5 and proto["n_bins"] == 15 and proto["min_conf"] == 0.3
    assert "match_predictions" in proto["matching"] and "2-fold" in proto["dece_after"]
    assert report["per_class"]["0"]["method"] == "isotonic"
    assert report["per_class"]["0"]["name"] == "car"
    assert report["thresholds"] == {}  # precision ~0.5: no pseudo-label threshold at 0.9
    assert sum(b["count"] for b in report["reliability_after"]) == 240
    assert calib.protocol == proto
    entry = calibration_manifest(report)
    assert entry["file"] == "calibrator.json" and entry["dece_after"] == report["dece_after"]
    assert "reliability_before" not in entry and entry["protocol"] == proto


def test_fit_for_version_reads_in_batches_and_skips_unreadable(tmp_path):
    preds, gts, _ = synthetic(20, seed=4)

    class Fake:
        calls = []

        def infer(self, images):
            self.calls.append(len(images))
            return [preds[len(sum(([0] * c for c in self.calls[:-1]), [])) + k]
                    for k in range(len(images))]

    images = [np.zeros((100, 100, 3), np.uint8)] * 19 + [tmp_path / "missing.jpg"]
    model = Fake()
    calib, report = fit_for_version(model, images, gts, batch=8, min_conf=0.3)
    assert model.calls == [8, 8, 3] and report["n_skipped"] == 1 and report["n_images"] == 19
    assert 0 in calib.classes
    with pytest.raises(ValueError, match="label arrays"):
        fit_for_version(model, images, gts[:3])


@pytest.mark.parametrize("entry, said", [
    ({"method": "isotonic", "x": [0.2, 0.8], "y": [0.1, float("nan")]}, "isotonic y must be a finite"),
    ({"method": "isotonic", "x": [0.2, 0.8], "y": [0.1, 5.0]}, r"isotonic y must be in 0\.\.1"),
    ({"method": "isotonic", "x": [0.2, 0.8], "y": [0.9, 0.1]}, "isotonic y must not decrease"),
    ({"method": "isotonic", "x": ["a", "b"], "y": [0.1, 0.9]}, "isotonic x must be a finite"),
    ({"method": "platt", "a": 1.0, "b": float("nan")}, "Platt intercept must be a finite"),
    ({"method": "platt", "a": float("inf"), "b": 0.0}, "Platt slope must be a finite"),
    ({"method": "constant", "value": 0.5, "lo": 2.0, "hi": 2.0}, r"lo must be in 0\.\.1"),
    ({"method": "constant", "value": 0.5, "n_tp": -5}, "n_tp must be a whole number >= 0"),
    ({"method": "constant", "value": 0.5, "n_tp": "many"}, "n_tp must be a whole number >= 0"),
    ({"method": "constant", "value": 0.5, "n_tp": 30}, "n_tp 30 is more than n 20"),
    ({"method": "constant", "value": 0.5, "lo": 0.8, "hi": 0.2}, "lo 0.8 is above hi 0.2"),
])
def test_a_calibrator_file_whose_map_is_no_monotone_map_onto_0_1_is_refused(tmp_path, entry, said):
    """Before: NaN knots calibrated to NaN, knots of 5.0 to 1.73 (threshold 0.398), a falling
    map set a threshold, lo 2.0 set one of 2.0, and text knots or counts raised a TypeError
    in the labelling path instead of 'calibrator not used'."""
    fields = {"n": 20, "n_tp": 10, "lo": 0.2, "hi": 0.8, **entry}
    path = tmp_path / "calibrator.json"
    path.write_text(json.dumps({"format": "edgecl-calibrator", "version": FORMAT_VERSION,
                                "classes": {"0": fields}}))
    with pytest.raises(CalibratorFileError, match=f"malformed calibrator entry: {said}"):
        Calibrator.load(path)


@pytest.mark.parametrize("field, value, said", [
    ("names", ["Car", "OtherVehicle"], "its names is a list, not an object"),
    ("names", "Car", "its names is a str, not an object"),
    ("protocol", [1, 2], "its protocol is a list, not an object"),
    ("names", {"x": "Car"}, "malformed calibrator names: invalid literal for int"),
])
def test_a_calibrator_file_with_malformed_names_or_protocol_is_refused(tmp_path, field, value, said):
    """Before: names given as a list raised an AttributeError at the runtime's start, which
    ended as an internal error (a restarted device would stop at every start)."""
    good = {"method": "constant", "value": 0.5, "n": 20, "n_tp": 10, "lo": 0.2, "hi": 0.8}
    path = tmp_path / "calibrator.json"
    path.write_text(json.dumps({"format": "edgecl-calibrator", "version": FORMAT_VERSION,
                                "classes": {"0": good}, field: value}))
    with pytest.raises(CalibratorFileError, match=said):
        Calibrator.load(path)
