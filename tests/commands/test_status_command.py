"""``edgecl status``: what a device is doing, read from its state directory without writing."""

import fcntl
import json
import os

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.continual.round_state import LearnerState, save_state
from edgecl.frames import LabelOrigin
from edgecl.models.classes import ClassRegistry
from edgecl.models.registry import Registry

BOX = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)


def _status(capsys, state, *extra):
    code = main(["status", "--state-dir", str(state), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _tree(root):
    """Every path under ``root``, each file with its size and modification time (a folder's
    own time moves with the index's transient SQLite journal, which leaves nothing)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in root.rglob("*")}


@pytest.fixture()
def device(tmp_path):
    """A device after two rounds: 10 samples (3 held out with seed 2), v0002 promoted,
    the learner's progress at sample id 6, one round's record."""
    state = tmp_path / "state"
    cfg = MemoryConfig(holdout_fraction=0.3, seed=2)
    with ReplayMemory(state / "memory", cfg, names={0: "car", 1: "drone"}) as m:
        for i in range(10):
            origin = LabelOrigin.OPERATOR if i == 9 else LabelOrigin.GROUND_TRUTH
            m.add(Sample(np.full((24, 24, 3), i * 20, np.uint8), BOX, task="stream",
                         origin=origin))
        held = {r.id for r in m.records(held_out=True)}
    ClassRegistry(state).add(["car", "drone"])
    reg = Registry(state / "models")
    for i in range(2):
        src = tmp_path / f"m{i}.onnx"
        src.write_bytes(bytes([i]) * 64)
        reg.stage({"model.onnx": src}, {"classes": {"0": "car", "1": "drone"},
                                        "metrics": {"acc": 0.25 + i / 10}})
    reg.promote("v0001")
    reg.promote("v0002")
    save_state(state, LearnerState(round=2, last_sample_id=6))
    (state / "learner" / "last_round.json").write_text(json.dumps(
        {"status": "staged", "reason": "accepted: ACC 0.250 -> 0.350", "round": 2,
         "version": "v0002", "trigger": "new_samples", "seconds": 41.6}))
    return state, held


def test_json_reports_each_part_from_the_state_directory(device, capsys):
    state, held = device
    code, out, _ = _status(capsys, state, "--json")
    assert code == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["runtime"] == {"running": False, "pid": None, "import_running": False}
    assert report["serving"]["version"] == "v0002" and report["serving"]["classes"] == 2
    assert report["serving"]["acc"] == pytest.approx(0.35)
    # the round staged v0002 and it serves now: promoted since
    assert report["round"]["last"]["status"] == "promoted"
    assert report["round"]["running"] is None
    # ids 1..10; learnt up to 6; 7, 8, 9, 10 are new unless held out
    assert report["learning"]["not_learnt"] == sum(i not in held for i in (7, 8, 9, 10))
    assert report["memory"]["samples"] == 10 and report["memory"]["held_out"] == len(held)
    assert report["memory"]["per_origin"]["operator"] == 1
    assert report["memory"]["per_origin"]["ground_truth"] == 9
    assert report["classes"]["names"] == {"0": "car", "1": "drone"}
    assert report["operator"] == {"pending": 0}
    assert report["problems"] == []


def test_reading_writes_nothing(device, capsys):
    state, _ = device
    before = _tree(state)
    for extra in ((), ("--json",)):
        assert _status(capsys, state, *extra)[0] == 0
    assert _tree(state) == before


def test_text_names_the_serving_version_and_the_last_round(device, capsys):
    state, _ = device
    code, out, _ = _status(capsys, state)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "v0002 (" in lines["serving"] and "2 classes" in lines["serving"]
    assert "round 2 promoted v0002, ended" in lines["round"] and "took 42 s" in lines["round"]
    assert "not running" in lines["runtime"]
    assert "10/" in lines["memory"] and "operator 1" in lines["memory"]
    assert lines["classes"].endswith("2: car, drone")


def test_a_running_runtime_and_round_are_shown(device, capsys):
    state, _ = device
    (state / "learner" / "running.json").write_text(json.dumps(
        {"started": "2026-12-07T10:00:00+00:00", "trigger": "interval", "steps": 12,
         "total_steps": 250}))
    with open(state / "lock", "a+") as lock, \
            open(state / "learner" / "round.lock", "a+") as round_lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fcntl.flock(round_lock, fcntl.LOCK_EX)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        code, out, _ = _status(capsys, state)
    assert code == 0
    assert f"running (pid {os.getpid()})" in out
    assert "running since 2026-12-07T10:00:00+00:00 (trigger: interval), step 12/250" in out


def test_a_round_cut_short_is_said_when_no_round_runs(device, capsys):
    state, _ = device
    (state / "learner" / "running.json").write_text(json.dumps({"started": "2026-12-07T10:00"}))
    out = _status(capsys, state)[1]
    assert "a round started 2026-12-07T10:00 was cut short" in out


def test_a_failed_round_is_a_problem_and_exits_1(device, capsys):
    state, _ = device
    (state / "learner" / "last_round.json").write_text(json.dumps(
        {"status": "failed", "reason": "out of memory", "round": 3}))
    code, out, _ = _status(capsys, state)
    assert code == 1
    assert out.splitlines()[-1] == "problem: the last learning round failed: out of memory"


def test_a_damaged_part_is_shown_unreadable_and_the_rest_still_shown(device, capsys):
    state, _ = device
    (state / "learner" / "last_round.json").write_text("{not json")
    (state / "classes.json").write_text("[1, 2")
    code, out, err = _status(capsys, state, "--json")
    assert code == 1 and "Traceback" not in err
    report = json.loads(out.strip().splitlines()[-1])
    assert "unreadable" in report["round"] and "unreadable" in report["classes"]
    assert report["serving"]["version"] == "v0002" and report["memory"]["samples"] == 10
    assert [p.split(":")[0] for p in report["problems"]] == ["round", "classes"]


@pytest.mark.parametrize("record", ['{"status": "failed", "seconds": "long"}',
                                    '{"status": "eaten"}', "[" * 100_000 + "]" * 100_000])
def test_a_hand_edited_round_record_is_unreadable_not_a_traceback(device, capsys, record):
    state, _ = device
    (state / "learner" / "last_round.json").write_text(record)
    code, out, err = _status(capsys, state, "--json")
    assert code == 1 and "Traceback" not in err
    report = json.loads(out.strip().splitlines()[-1])
    assert "unreadable" in report["round"] and report["serving"]["version"] == "v0002"


def test_a_new_device_has_nothing_yet(tmp_path, capsys):
    state = tmp_path / "state"
    state.mkdir()
    code, out, _ = _status(capsys, state)
    assert code == 0
    assert "no trained version" in out and "none has ended yet" in out
    assert "nothing stored yet" in out and "empty: nothing stored yet" in out
    assert sorted(p.name for p in state.iterdir()) == []


def test_a_missing_state_directory_is_one_line(tmp_path, capsys):
    code, out, err = _status(capsys, tmp_path / "nope")
    assert code != 0 and "Traceback" not in err
    assert "nope" in err and len(err.strip().splitlines()) == 1


def test_learner_settings_come_from_the_config_when_given(device, tmp_path, capsys):
    state, _ = device
    cfg = tmp_path / "dev.yaml"
    cfg.write_text(f"state_dir: {state}\nlearner:\n  trigger_new_samples: 5\n"
                   "  trigger_interval_s: 60\n")
    code = main(["status", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert code == 0
    line = next(line for line in out.splitlines() if line.split()[0] == "learning")
    assert "a round starts at 5 (learner.trigger_new_samples) or every 60 s" in line
    assert "default settings" not in line


def test_a_long_class_list_is_cut_in_text_and_whole_in_json(device, capsys):
    state, _ = device
    ClassRegistry(state).add([f"class{i}" for i in range(20)])
    out = _status(capsys, state)[1]
    assert "22: car, drone, class0" in out and "and 10 more ('edgecl classes list')" in out
    report = json.loads(_status(capsys, state, "--json")[1].strip().splitlines()[-1])
    assert len(report["classes"]["names"]) == 22
