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


def test_a_damaged_calibrator_is_not_used_and_the_version_still_serves(tmp_path, caplog):
    """An SD-card fault in the serving version's calibrator.json (or its round record) rolled
    the whole version back at start, to one that lacked the newest class, although its model
    was intact. Now only the record is not used; a calibrator that still parses but does not
    match its sha256 is not trusted either."""
    import json

    conf = np.full(30, 0.9)
    calib = fit_calibrator(conf, np.zeros(30, int), np.ones(30, bool), min_isotonic=50,
                           min_platt=50)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"onnx")
    (src / "round_record.json").write_text(json.dumps({"round": 1}))
    calib.save(src / CALIBRATOR_FILE)
    reg = Registry(tmp_path / "models")
    version = reg.stage({"model.onnx": src / "model.onnx", CALIBRATOR_FILE: src / CALIBRATOR_FILE,
                         "round_record.json": src / "round_record.json"}, {})
    path = tmp_path / "models" / version / CALIBRATOR_FILE
    text = path.read_text()
    path.write_text(text.replace("0.9", "0.1", 1))  # still parses, no longer what was fitted
    (tmp_path / "models" / version / "round_record.json").write_bytes(b"\x00" * 10)
    assert reg.verify(version, essential_only=True) == []
    assert len(reg.verify(version)) == 2  # 'models verify' still reports both
    reg.check_integrity(version)  # promote, rollback and a start accept it
    with caplog.at_level("WARNING"):
        cache = CalibrationCache(reg, lambda: version, 0.9)
        assert cache.thresholds({0}) == {0: None}
    assert "calibrator not used" in caplog.text and "does not match its manifest sha256" in caplog.text
    # the start line says that, not the reasons a version has no calibrator at all (before:
    # "has no calibration (added with 'models add', or its round had too few ...)")
    from edgecl.config import Config, LabelsConfig
    from edgecl.runtime.labels import uncalibrated_note

    note = uncalibrated_note(Config(labels=LabelsConfig(mode="field")), version,
                             unusable=cache.unusable)
    assert note.startswith(f"labels: {version}'s calibrator is not used ({path} does not match "
                           f"its manifest sha256), so no frame is pseudo-labelled")
    assert "added with" not in note
