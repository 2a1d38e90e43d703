"""The serving version's pseudo-label thresholds: a class whose calibrator rests on too few true
positives gets none (``labels.pseudo_min_true_positives``)."""

import numpy as np

from edgecl.calibration.posthoc import CALIBRATOR_FILE, fit_calibrator
from edgecl.models.registry import Registry
from edgecl.runtime.versions import CalibrationCache


def test_thresholds_need_enough_true_positives(tmp_path):
    # class 0: 30 detections at 0.9, all right; class 1: 8 at 0.9, all right (constant 9/10)
    conf = np.full(38, 0.9)
    cls = np.repeat([0, 1], [30, 8])
    calib = fit_calibrator(conf, cls, np.ones(38, bool), min_isotonic=50, min_platt=50)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"onnx")
    calib.save(src / CALIBRATOR_FILE)
    reg = Registry(tmp_path / "models")
    version = reg.stage({"model.onnx": src / "model.onnx", CALIBRATOR_FILE: src / CALIBRATOR_FILE},
                        {})
    strict = CalibrationCache(reg, lambda: version, 0.9, min_true_positives=10)
    assert strict.thresholds({0, 1, 2}) == {0: 0.9, 1: None, 2: None}
    lax = CalibrationCache(reg, lambda: version, 0.9, min_true_positives=0)
    assert lax.thresholds({0, 1}) == {0: 0.9, 1: 0.9}
