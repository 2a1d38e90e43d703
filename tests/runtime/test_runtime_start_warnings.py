"""What a runtime says at start about a first model that limits what the device can learn."""

import tempfile
from pathlib import Path

import pytest
import torch

from edgecl.config import load_config
from edgecl.runtime.app import RunOptions, Runtime


@pytest.fixture(scope="module")
def nms_inside(tmp_path_factory):
    """A 2-class ONNX detector exported by ultralytics with NMS inside at conf 0.4."""
    from ultralytics.engine.exporter import Exporter

    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    net = build_detection_model(2, names={0: "car", 1: "truck"})
    net.task = "detect"
    with tempfile.TemporaryDirectory() as tmp:
        net.pt_path = str(Path(tmp) / "model.pt")
        produced = Path(Exporter(overrides=dict(format="onnx", device="cpu", simplify=False, batch=1,
                                                imgsz=64, nms=True, conf=0.4))(model=net))
        target = tmp_path_factory.mktemp("nms") / "nms.onnx"
        target.write_bytes(produced.read_bytes())
    return target


def _start(state, model, *extra):
    cfg = load_config(None, [f"state_dir={state}", "model.imgsz=64", "learner.enabled=false",
                             "server.enabled=false", "runtime.warmup_runs=1", *extra])
    return Runtime(cfg, RunOptions(source_uri="synthetic://?tasks=1&imgsz=64", model=str(model),
                                   max_frames=1, quiet=True)).run()


def test_an_uncertain_band_below_a_built_in_nms_threshold_is_named(tmp_path, nms_inside, caplog):
    """Before: detections between labels.uncertain_low and the threshold the model was exported
    with never reached the operator queue, and a frame holding one could be pseudo-labelled,
    with nothing said."""
    _start(tmp_path / "state", nms_inside)
    assert (f"labels.uncertain_low=0.3 is below the score threshold built into {nms_inside} "
            f"(0.4, NMS exported with nms=True): detections between them never reach the operator "
            f"queue, and a frame holding one can be pseudo-labelled; export it with nms=False"
            ) in caplog.messages
    caplog.clear()
    _start(tmp_path / "state2", nms_inside, "labels.uncertain_low=0.45")
    assert not any("built into" in m for m in caplog.messages)


def test_the_band_is_checked_when_such_a_model_is_added_or_swapped_in(tmp_path, nms_inside,
                                                                     capsys, caplog):
    """Before: only the start of a run said it; a version promoted into a running runtime, or
    staged with 'models add', was silent."""
    from edgecl.cli import main
    from edgecl.models.base import InferenceOptions
    from edgecl.models.registry import Registry
    from edgecl.runtime.labels import uncertain_band_problem
    from edgecl.runtime.watcher import ModelWatcher

    state = tmp_path / "state"
    assert main(["models", "add", str(nms_inside), "--state-dir", str(state)]) == 0
    err = capsys.readouterr().err
    assert "warning: labels.uncertain_low=0.3 is below the score threshold built into v0001 (0.4" in err
    cfg = load_config(None, [f"state_dir={state}"])
    watcher = ModelWatcher(Registry(state / "models"), InferenceOptions(imgsz=64, threads=1), None,
                           warmup_runs=1,
                           check=lambda version, meta: uncertain_band_problem(
                               cfg, meta.extra.get("nms_score_threshold"), version))
    ready = watcher.load_version("v0001")
    ready.backend.close()
    assert any(m.startswith("model version v0001: labels.uncertain_low=0.3 is below")
               for m in caplog.messages)


def test_pseudo_labels_waiting_for_a_calibration_are_said_at_start(tmp_path, nms_inside, caplog):
    """A team's own checkpoint in labels.mode pseudo on an unlabelled camera: no calibrator, so
    every frame was refused as not calibrated, nothing queued for a person, nothing stored, and
    /healthz said ok for days with no word of why."""
    import logging

    import cv2
    import numpy as np

    camera = tmp_path / "camera"
    camera.mkdir()
    cv2.imwrite(str(camera / "f0.jpg"), np.full((64, 64, 3), 90, np.uint8))

    def start(state, source, *extra):
        cfg = load_config(None, [f"state_dir={state}", "model.imgsz=64", "learner.enabled=false",
                                 "server.enabled=false", "runtime.warmup_runs=1",
                                 "labels.uncertain_low=0.45", *extra])
        Runtime(cfg, RunOptions(source_uri=source, model=str(nms_inside), max_frames=1,
                                quiet=True)).run()
        lines = [r for r in caplog.records if "has no calibration" in r.getMessage()]
        caplog.clear()
        return lines

    caplog.set_level(logging.INFO, logger="edgecl")
    (line,) = start(tmp_path / "state", f"dir://{camera}", "labels.mode=pseudo")
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        f"labels: file:{nms_inside.name} has no calibration, so no frame is pseudo-labelled "
        f"until a learning round, fitted on labels from a person or an import, promotes a "
        f"version; labels.mode pseudo queues nothing for a person, so until then nothing is "
        f"stored: add labelled images with 'edgecl labels import --state-dir "
        f"{tmp_path / 'state'} FOLDER', or set labels.mode: field")
    (line,) = start(tmp_path / "state2", f"dir://{camera}", "labels.mode=field")
    assert line.levelno == logging.INFO
    assert line.getMessage().endswith("(the operator queue's answers lead there)")
    # a labelled source stores its ground truth: that leads to a calibration too
    (line,) = start(tmp_path / "state3", "synthetic://?tasks=1&imgsz=64", "labels.mode=pseudo")
    assert line.levelno == logging.INFO
    assert line.getMessage().endswith("(the labels this source delivers lead there)")
    assert start(tmp_path / "state4", f"dir://{camera}", "labels.mode=ground_truth") == []


def test_a_version_without_calibration_is_told_apart_from_a_starting_checkpoint(tmp_path):
    """Before: after three promoted rounds the start line still asked for 'a learning round,
    fitted on labels from a person or an import', as if none had run: the rounds had found no
    held-out detection to fit a calibrator on."""
    from edgecl.runtime.labels import uncalibrated_note

    cfg = load_config(None, [f"state_dir={tmp_path}", "labels.mode=field"])
    assert uncalibrated_note(cfg, "v0003").startswith(
        "labels: v0003 has no calibration (added with 'models add', or its round had too few "
        "held-out detections of the model to fit one on), so no frame is pseudo-labelled")
    assert uncalibrated_note(cfg, "file:best.pt").startswith(
        "labels: file:best.pt has no calibration, so no frame")


def test_the_calibration_start_line_reads_the_version_about_to_serve(tmp_path, nms_inside,
                                                                       caplog):
    """Before: the line was computed before the loop served any version, so that a version
    with a calibrator was said to have none; one whose calibrator gives no class a threshold
    (too few held-out true positives) is said so instead."""
    import logging

    import cv2
    import numpy as np

    from edgecl.calibration.posthoc import CALIBRATOR_FILE, Calibrator, ClassCalibration
    from edgecl.cli import main

    camera = tmp_path / "camera"
    camera.mkdir()
    cv2.imwrite(str(camera / "f0.jpg"), np.full((64, 64, 3), 90, np.uint8))
    state = tmp_path / "state"
    assert main(["models", "add", str(nms_inside), "--promote", "--state-dir", str(state)]) == 0

    def start_lines(n_tp):
        Calibrator({0: ClassCalibration("platt", n=40, n_tp=n_tp, lo=0.4, hi=0.95, a=2.0,
                                        b=1.0)}).save(state / "models" / "v0001" / CALIBRATOR_FILE)
        cfg = load_config(None, [f"state_dir={state}", "model.imgsz=64", "learner.enabled=false",
                                 "server.enabled=false", "runtime.warmup_runs=1",
                                 "labels.uncertain_low=0.45", "labels.mode=field"])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edgecl"):
            Runtime(cfg, RunOptions(source_uri=f"dir://{camera}", max_frames=1, quiet=True)).run()
        return [r.getMessage() for r in caplog.records
                if r.getMessage().startswith(("labels: v0001 has no", "labels: v0001's"))]

    assert start_lines(30) == []  # car gets a threshold: nothing to say
    assert start_lines(6) == [
        "labels: v0001's calibration gives no class a pseudo-label threshold yet (none reaches "
        "labels.pseudo_precision 0.9 on at least labels.pseudo_min_true_positives=10 held-out "
        "true positives), so no frame is pseudo-labelled until a round fits one that does"]


def test_a_clock_not_yet_set_is_said_at_start(tmp_path, nms_inside, caplog, monkeypatch):
    """A board without a battery boots at 1970: versions, classes and rounds were stamped
    1970-01-01 among ones of 2031 (seen in a clock-jump check), with no word of why."""
    import logging
    import time

    import cv2
    import numpy as np

    from edgecl.runtime.app import clock_note

    assert clock_note(1_796_601_600.0) is None  # 2026-12-07
    assert clock_note(60.0) == (
        "the system clock reads 1970-01-01T00:01:00+00:00: it has not been set (no battery; NTP "
        "or GPS sets it later). Until it is, the times edgecl records (model versions, classes' "
        "first sighting, rounds) read as that date; detection, learning and the operator queue "
        "measure durations on a clock that setting the date does not move")
    camera = tmp_path / "camera"
    camera.mkdir()
    cv2.imwrite(str(camera / "f0.jpg"), np.full((64, 64, 3), 90, np.uint8))
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", "model.imgsz=64",
                             "learner.enabled=false", "server.enabled=false",
                             "runtime.warmup_runs=1", "labels.uncertain_low=0.45"])
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() - 57 * 365.25 * 86400)  # about 1970
    caplog.set_level(logging.WARNING, logger="edgecl")
    Runtime(cfg, RunOptions(source_uri=f"dir://{camera}", model=str(nms_inside), max_frames=1,
                            quiet=True)).run()
    monkeypatch.setattr(time, "time", wall)
    assert sum("it has not been set (no battery" in r.getMessage() for r in caplog.records) == 1


def test_a_model_conf_above_the_band_runs_the_detector_at_the_band_for_the_labels(
        tmp_path, nms_inside, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="edgecl.runtime.app"):
        _start(tmp_path / "state", nms_inside, "model.conf=0.6", "labels.mode=pseudo")
    assert ("detector runs at score 0.3 for the labels' uncertain band (model.conf 0.6: what "
            "--out, the video and the console show)") in caplog.messages
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.app"):
        _start(tmp_path / "state2", nms_inside, "model.conf=0.6", "labels.mode=ground_truth")
    assert not any("uncertain band" in m for m in caplog.messages)


def test_the_previous_version_runs_at_the_serving_models_labelling_threshold(tmp_path):
    """Before: with model.conf above the band, the previous version (the disagreement policy's
    other model) ran at model.conf while the serving one's detections reached the labels down
    to labels.uncertain_low, so identical models disagreed on every detection in between."""
    from edgecl.runtime.app import inference_options, labelling_inference_options

    def config(*extra):
        return load_config(None, [f"state_dir={tmp_path / 'state'}", "server.enabled=false",
                                  "learner.enabled=false", *extra])

    cfg = config("model.conf=0.6", "labels.mode=field")
    assert labelling_inference_options(cfg).conf == 0.3 and inference_options(cfg).conf == 0.6
    runtime = Runtime(cfg, RunOptions(source_uri="synthetic://?tasks=1&imgsz=64", quiet=True))
    runtime._open_state()
    try:
        runtime._build_state_parts({})
        assert runtime.previous_detector.opts.conf == 0.3
    finally:
        runtime.close()
    assert labelling_inference_options(config("model.conf=0.25")).conf == 0.25


def test_a_first_round_that_would_shrink_the_teams_model_is_said_at_start(tmp_path, caplog):
    """A team's 320 px checkpoint and the default learner.imgsz 160: the first round trained,
    exported and served at 160 px, said only once it had (its small objects lost)."""
    import logging

    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    torch.manual_seed(0)
    pt = save_checkpoint(build_detection_model(2, names={0: "car", 1: "truck"}),
                         tmp_path / "team.pt", meta={"names": {0: "car", 1: "truck"}, "imgsz": 96})
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", "learner.imgsz=64",
                             "server.enabled=false", "runtime.warmup_runs=1",
                             "learner.trigger_new_samples=1000"])
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.app"):
        Runtime(cfg, RunOptions(source_uri="synthetic://?tasks=1&imgsz=64", model=str(pt),
                                max_frames=1, quiet=True)).run()
    assert ("learner: team.pt serves at 96 px; the first round trains and exports at "
            "learner.imgsz=64 px, and the device serves that size from then on (set "
            "learner.imgsz: 96 to keep its size)") in caplog.messages


def test_the_start_line_names_the_config_hash_each_version_records(tmp_path, caplog):
    """Before: with --model naming a checkpoint (which sets model.path), the start line named
    the hash of the config before that, and each version's manifest another one."""
    import logging
    import re

    from edgecl.cli import main
    from edgecl.config import config_hash
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    pt = save_checkpoint(build_detection_model(1, names={0: "car"}), tmp_path / "team.pt",
                         meta={"names": {0: "car"}, "imgsz": 64})
    overrides = ["model.imgsz=64", "learner.enabled=false", "server.enabled=false"]
    with caplog.at_level(logging.INFO, logger="edgecl.commands.run"):
        assert main(["run", "--state-dir", str(tmp_path / "state"), "--model", str(pt),
                     "--source", "synthetic://?tasks=1&imgsz=64", "--frames", "1", "--quiet",
                     *overrides]) == 0
    (logged,) = [m for m in caplog.messages if m.startswith("config: ")]
    held = load_config(None, [f"state_dir={tmp_path / 'state'}", f"model.path={pt.absolute()}",
                              *overrides])
    assert re.search(r"\(hash ([0-9a-f]+)\)", logged)[1] == config_hash(held)


def test_a_missing_model_path_is_named_while_a_version_serves(tmp_path, caplog, monkeypatch):
    """Before: with a version promoted, a typo in model.path ('frist.pt') started and served
    without a word about it; on a fresh device a relative one said only 'model file not found:
    data/first.pt', not where it was looked for."""
    import logging

    from edgecl.cli import main
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.ultra import build_detection_model

    pt = save_checkpoint(build_detection_model(1, names={0: "car"}), tmp_path / "first.pt",
                         meta={"names": {0: "car"}, "imgsz": 64})
    state = tmp_path / "state"
    assert main(["models", "add", "--promote", "--state-dir", str(state), str(pt)]) == 0
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        _start(state, "", "model.path=frist.pt")
    assert [m for m in caplog.messages if m.startswith("model.path ")] == [
        f"model.path frist.pt does not exist (looked for {tmp_path / 'frist.pt'}); unused while "
        f"the device has a version: v0001 serves, and rounds learn on it"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the untrained start a device began with: no file
        _start(state, "", "model.path=yolo11n.yaml")
    assert not [m for m in caplog.messages if m.startswith("model.path ")]
    caplog.clear()
    with pytest.raises(Exception, match=r"^config key 'model.path': model file not found: "
                       r"data/first.pt \(looked for "
                       + str(tmp_path / "data" / "first.pt").replace(".", r"\.") + r"\)$"):
        _start(tmp_path / "fresh", "", "model.path=data/first.pt")
    (tmp_path / "models_folder").mkdir()  # before: the folder's error, not naming the key
    with pytest.raises(Exception, match=r"^config key 'model.path': .*models_folder is a folder, "
                                        r"not a model file$"):
        _start(tmp_path / "fresh2", "", f"model.path={tmp_path / 'models_folder'}")


def test_a_start_records_the_learner_settings_it_runs_with(tmp_path, nms_inside, capsys):
    """Before: `edgecl status` of a device started with learner.trigger_new_samples=5 said a
    round starts at 100 (the defaults: the runtime recorded nothing of its overrides)."""
    import json

    from edgecl.cli import main

    state = tmp_path / "state"
    _start(state, nms_inside, "learner.trigger_new_samples=5", "learner.trigger_interval_s=90")
    record = json.loads((state / "runtime.json").read_text())
    assert record["learner"] == {"enabled": False, "trigger_new_samples": 5,
                                 "trigger_interval_s": 90.0, "trigger_new_class": True}
    assert record["learner_state"] == "off"
    capsys.readouterr()
    main(["status", "--state-dir", str(state)])
    line = next(line for line in capsys.readouterr().out.splitlines() if "learning" in line)
    assert "learner.enabled is off" in line  # the run's, not the defaults' (on)


def test_a_refused_start_leaves_no_run_record(tmp_path):
    from edgecl.errors import EdgeclError

    state = tmp_path / "state"
    with pytest.raises(EdgeclError):
        _start(state, tmp_path / "missing.onnx")
    assert not (state / "runtime.json").exists()
