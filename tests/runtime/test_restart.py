"""kill -9 of the whole runtime in the middle of a learning round, then restart: same current
version, same memory, and learning resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgecl.data.scenario import make_scenario
from edgecl.config import load_config
from edgecl.continual.memory import ReplayMemory
from edgecl.runtime.learner import run_learning_round
from edgecl.models.registry import Registry
from edgecl.runtime.app import RunOptions, Runtime
from edgecl.runtime.promote import promote_version


def run_round(cfg, **kwargs):
    """One round through the runtime's entry point (monitor recording included), as a dict."""
    return run_learning_round(cfg, **kwargs).to_json()


IMGSZ = 64


def overrides(state):
    return [f"state_dir={state}", f"model.imgsz={IMGSZ}", f"learner.imgsz={IMGSZ}",
            "learner.first_round_max_steps=4", "learner.batch=4", "learner.bn_recalibration_batches=1",
            "memory.holdout_fraction=0.25", "runtime.warmup_runs=1",
            "export.openvino=off", "export.cpu_int8=off"]  # an ONNX engine is enough here


def wait_for(predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(300)
def test_kill_minus_nine_mid_round_then_restart(tmp_path):
    yaml_path = make_scenario(tmp_path / "scn", tasks=2, images_per_task=24, imgsz=IMGSZ, seed=5)
    state = tmp_path / "state"
    cfg = load_config(None, [*overrides(state), "learner.enabled=false"])
    from edgecl.bench.demo import initial_model

    init = initial_model(yaml_path, tmp_path / "init.pt", IMGSZ)
    Runtime(cfg, RunOptions(source_uri=f"tasks://{yaml_path}?task=t1", model=str(init), quiet=True)).run()
    first = run_round(cfg)
    registry = Registry(state / "models")
    promote_version(state, first["version"])
    assert not (state / "learner" / "work").exists()  # a round leaves no work folder behind
    cmd = [sys.executable, "-m", "edgecl.cli", "run", "--source", f"tasks://{yaml_path}?task=t2&fps=1",
           "--state-dir", str(state), "--quiet", *overrides(state), "learner.trigger_new_samples=3",
           "learner.trigger_new_class=false", "learner.budget_s=120", "learner.max_steps=100000"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, YOLO_OFFLINE="1"))
    try:
        started = wait_for(lambda: (state / "learner" / "work").is_dir(), 120)
        assert started, proc.stderr.read1().decode() if proc.poll() is not None else "no round started"
        time.sleep(2.0)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert wait_for(lambda: subprocess.run(["pgrep", "-f", "edgecl-learner|learner_main"],
                                           capture_output=True).returncode != 0, 30)
    assert registry.current() == first["version"]
    with ReplayMemory(state / "memory", cfg.memory) as memory:
        report = memory.verify(repair=True)
        assert report.ok, report
        assert len(memory) > 0
    resumed = run_round(cfg, reason="after restart")
    assert resumed["status"] in ("staged", "rejected") and resumed["round"] == first["round"] + 1
    assert resumed["new_samples"] > 0


@pytest.mark.timeout(300)
def test_a_kill_between_staging_and_saving_the_progress_is_recovered_at_start(tmp_path):
    """A power loss after the round staged its version but before it saved the learner's
    progress (and before the promotion reached the metrics database): at start the version is
    promoted, the progress is the round's, and the metrics row says promoted."""
    import sqlite3

    from edgecl.continual.round_state import load_state, state_path
    from edgecl.runtime.learner import promote_leftover_staged, read_last_round
    from edgecl.runtime.app import inference_options

    yaml_path = make_scenario(tmp_path / "scn", tasks=1, images_per_task=16, imgsz=IMGSZ, seed=5)
    state = tmp_path / "state"
    cfg = load_config(None, [*overrides(state), "learner.enabled=false"])
    from edgecl.bench.demo import initial_model

    init = initial_model(yaml_path, tmp_path / "init.pt", IMGSZ)
    Runtime(cfg, RunOptions(source_uri=f"tasks://{yaml_path}?task=t1", model=str(init), quiet=True)).run()
    before = state_path(state).read_text() if state_path(state).is_file() else None
    result = run_round(cfg)
    assert result["status"] == "staged"
    learnt = load_state(state)
    # the kill came before the round recorded its evaluation: its rows are not there
    recorded = _version_rows(state, result["version"])
    assert recorded["rounds"] and recorded["class_ap"] and recorded["reliability"]
    with sqlite3.connect(state / "metrics" / "metrics.sqlite") as db:
        for table in recorded:
            db.execute(f"DELETE FROM {table} WHERE model_version=?", (result["version"],))
    assert not any(_version_rows(state, result["version"]).values())
    # the kill: the progress file as it was before the round
    if before is None:
        state_path(state).unlink()
    else:
        state_path(state).write_text(before)
    assert load_state(state).round == learnt.round - 1
    (state / "learner" / "last_round.json").unlink(missing_ok=True)  # written after the kill
    registry = Registry(state / "models")
    assert promote_leftover_staged(cfg, registry, inference_options(cfg)) == result["version"]
    # before: `edgecl status` showed the round before it as the last (or none at all)
    last = read_last_round(state)
    assert (last.round, last.version, last.status.value) == (learnt.round, result["version"],
                                                              "promoted")
    assert last.reason.endswith("promoted at the start after a stop cut the round short")
    recovered = load_state(state)
    assert (recovered.round, recovered.last_sample_id) == (learnt.round, learnt.last_sample_id)
    assert recovered.learnt_tasks == learnt.learnt_tasks and learnt.last_sample_id > 0
    with sqlite3.connect(state / "metrics" / "metrics.sqlite") as db:
        statuses = db.execute("SELECT status FROM rounds WHERE model_version=?",
                              (result["version"],)).fetchall()
    assert statuses == [("promoted",)]
    assert registry.manifest(result["version"])["learner_state"]["round"] == learnt.round
    again = _version_rows(state, result["version"])
    recorded["rounds"] = [(*row[:2], "promoted", *row[3:]) for row in recorded["rounds"]]
    assert again == recorded


# every column but the time stamps; the rounds row also without its wall time
_ROW_COLUMNS = {"rounds": "round, model_version, status, reason, acc, bwt, mean_forgetting",
                "evaluations": "round, model_version, task, task_index, map50_95, map50, recall, "
                               "precision, dece, n_images, n_boxes",
                "class_ap": "*", "reliability": "*",
                "calibration": "round, model_version, dece_before, dece_after, report"}


def _version_rows(state, version):
    """A version's rows in each table of the metrics database (sorted, time stamps left out)."""
    import sqlite3

    with sqlite3.connect(state / "metrics" / "metrics.sqlite") as db:
        rows = {table: sorted(db.execute(f"SELECT {cols} FROM {table} WHERE model_version=?",
                                         (version,)).fetchall())
                for table, cols in _ROW_COLUMNS.items()}
    rows["calibration"] = [(*row[:4], json.loads(row[4])) for row in rows["calibration"]]
    return rows


def test_a_rejected_round_a_kill_left_unrecorded_is_recorded_at_start(tmp_path):
    """A rejected version staged with its round record but no metrics row: at start its row is
    written from the record, its manifest gains the figures, and the learner's round number
    moves past it; a version without a record (added by hand) is left alone."""
    from edgecl.continual.evaluate import EvalResult
    from edgecl.continual.round import ROUND_RECORD_FILE, write_round_record
    from edgecl.continual.round_state import load_state
    from edgecl.runtime.learner import record_missing_rounds
    from edgecl.runtime.monitor import Monitor

    state = tmp_path / "state"
    registry = Registry(state / "models")
    (tmp_path / "model.pt").write_bytes(b"x")
    hand = registry.stage({"model.pt": tmp_path / "model.pt"}, {"classes": {0: "car"}})
    res = EvalResult(map50_95=0.25, map50=0.5, recall=0.5, precision=0.5,
                     per_class_ap50_95={0: 0.25, 1: float("nan")}, n_images=3, n_boxes=4,
                     dece=float("nan"), per_class_recall={0: 0.5}, per_class_instances={0: 4})
    record = write_round_record(tmp_path / ROUND_RECORD_FILE, round_no=7, status="rejected",
                                reason="forgot car", seconds=12.5, evaluation={"stream": res},
                                columns=["stream"], class_names={0: "car", 1: "van"},
                                calibration=None)
    Monitor(state)  # the runtime made it before the round (a missing one is rebuilt on open)
    version = registry.stage({"model.pt": tmp_path / "model.pt", ROUND_RECORD_FILE: record},
                             {"classes": {0: "car", 1: "van"}, "metrics": {"dece": None}},
                             status="rejected")
    assert load_state(state).round == 0

    assert record_missing_rounds(state, registry) == [version]

    rows = _version_rows(state, version)
    assert rows["rounds"] == [(7, version, "rejected", "forgot car", 0.25, 0.0, 0.0)]
    assert rows["class_ap"] == [(7, version, "stream", 0, 0.25, 0.5, 4),
                                (7, version, "stream", 1, None, None, None)]
    assert rows["evaluations"] == [(7, version, "stream", 0, 0.25, 0.5, 0.5, 0.5, None, 3, 4)]
    assert Monitor(state).class_names() == {0: "car", 1: "van"}
    assert registry.manifest(version)["metrics"]["acc"] == 0.25
    assert registry.manifest(version)["metrics"]["dece"] is None
    assert load_state(state).round == 7
    assert not any(_version_rows(state, hand).values())
    assert record_missing_rounds(state, registry) == []  # recorded once


@pytest.mark.timeout(300)
def test_a_candidate_learn_no_promote_staged_is_not_promoted_by_a_restart(tmp_path, capsys):
    from edgecl.bench.demo import initial_model
    from edgecl.cli import main
    from edgecl.runtime.app import inference_options
    from edgecl.runtime.learner import promote_leftover_staged

    yaml_path = make_scenario(tmp_path / "scn", tasks=1, images_per_task=16, imgsz=IMGSZ, seed=5)
    state = tmp_path / "state"
    settings = [*overrides(state), "learner.enabled=false"]
    cfg = load_config(None, settings)
    init = initial_model(yaml_path, tmp_path / "init.pt", IMGSZ)
    Runtime(cfg, RunOptions(source_uri=f"tasks://{yaml_path}?task=t1", model=str(init), quiet=True)).run()
    from edgecl.continual.round_state import load_state

    registry = Registry(state / "models")
    before = registry.current()
    progress = load_state(state)
    assert main(["learn", "--no-promote", "--json", "--state-dir", str(state), *settings]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "staged"
    assert registry.manifest(result["version"])["promote"] == "manual"
    # the serving version learnt none of it: its samples stay new (before, taken for learnt)
    held = load_state(state)
    assert (held.round, held.last_sample_id) == (progress.round + 1, progress.last_sample_id)
    assert promote_leftover_staged(cfg, registry, inference_options(cfg)) is None
    assert registry.current() == before and registry.status(result["version"]) == "staged"
    promote_version(state, result["version"])  # a person's 'models promote'
    assert registry.current() == result["version"]
    learnt = registry.manifest(result["version"])["learner_state"]["last_sample_id"]
    assert load_state(state).last_sample_id == learnt > progress.last_sample_id
