"""When the supervisor starts a learning round."""

import pytest

from edgecl.config import LearnerConfig
from edgecl.runtime.learner import TriggerState, round_lock, should_learn


def test_triggers():
    cfg = LearnerConfig(trigger_new_samples=10, trigger_interval_s=60.0, trigger_new_class=True)
    assert should_learn(TriggerState(new_samples=9, last_round_s=0.0), cfg, now_s=30.0) is None
    assert should_learn(TriggerState(new_samples=10, last_round_s=0.0), cfg, now_s=30.0) == "new_samples"
    assert should_learn(TriggerState(new_samples=1, new_classes=True), cfg, now_s=0.0) == "new_class"
    assert should_learn(TriggerState(new_samples=1, last_round_s=0.0), cfg, now_s=61.0) == "interval"
    assert should_learn(TriggerState(new_samples=0, last_round_s=0.0), cfg, now_s=600.0) is None
    off = LearnerConfig(trigger_new_samples=0, trigger_interval_s=0.0, trigger_new_class=False)
    assert should_learn(TriggerState(new_samples=10**6, new_classes=True), off, now_s=1e9) is None


def test_round_lock_is_exclusive(tmp_path):
    with round_lock(tmp_path) as first:
        assert first
        with round_lock(tmp_path) as second:
            assert not second
    with round_lock(tmp_path) as again:
        assert again


def test_the_interval_counts_from_the_last_round_not_from_this_start(tmp_path):
    """Before: the interval trigger's wait began at each start: a device run per sortie (20 s
    runs, a 25 s interval) never had an interval round. Now it begins at the last round's end
    (learner/state.json written), and a wall clock set since counts as at most one interval."""
    import os
    import time

    from edgecl.continual.round_state import state_path
    from edgecl.runtime.learner import interval_origin_s

    def waited_s() -> float:
        return time.monotonic() - interval_origin_s(tmp_path, 25.0)

    assert abs(waited_s()) < 1.0  # no round yet: from now
    path = state_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    now = time.time()
    os.utime(path, (now - 20.0, now - 20.0))  # the last round ended 20 s ago
    assert abs(waited_s() - 20.0) < 1.0
    os.utime(path, (now - 86400 * 365 * 50, now - 86400 * 365 * 50))  # a clock set since
    assert abs(waited_s() - 25.0) < 1.0
    os.utime(path, (now + 86400, now + 86400))  # or set back since: one interval, as well
    assert abs(waited_s() - 25.0) < 1.0
    os.utime(path, (now + 30.0, now + 30.0))  # within a minute: no wait (clocks drift)
    assert abs(waited_s()) < 1.0


def test_a_device_booting_at_1970_every_sortie_still_gets_interval_rounds(tmp_path, caplog):
    """Before: with no time sync, a board boots at 1970 every sortie, and reads its last round
    (stamped later in an earlier sortie) as in the future: the wait counted none and restarted
    at every start, so sorties shorter than the interval never had an interval round."""
    import logging
    import os
    import time

    from edgecl.runtime.learner import interval_origin_s

    last = tmp_path / "learner" / "last_round.json"
    last.parent.mkdir(parents=True)
    last.write_text("{}")
    now = time.time()
    os.utime(last, (now + 2 * 3600, now + 2 * 3600))  # the last sortie's round, 2 h "later"
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.learner"):
        waited_s = time.monotonic() - interval_origin_s(tmp_path, 600.0)
    assert abs(waited_s - 600.0) < 1.0
    assert "the clock was set back since; learner.trigger_interval_s counts as elapsed" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.learner"):
        interval_origin_s(tmp_path, 0.0)  # no interval trigger (or no learner): nothing to say
    assert "set back" not in caplog.text


def test_a_promotion_does_not_restart_the_interval(tmp_path):
    """Before: the wait counted from learner/state.json's last change, which 'models promote'
    and a rollback make too: an operator's promotion put the next interval round off."""
    import os
    import time

    from edgecl.continual.round_state import state_path
    from edgecl.runtime.learner import interval_origin_s

    state_path(tmp_path).parent.mkdir(parents=True)
    now = time.time()
    last = state_path(tmp_path).parent / "last_round.json"
    last.write_text("{}")
    os.utime(last, (now - 20.0, now - 20.0))  # a round's end
    state_path(tmp_path).write_text("{}")  # a promotion just now
    assert abs(time.monotonic() - interval_origin_s(tmp_path, 25.0) - 20.0) < 1.0


def test_a_round_stopped_by_ctrl_c_is_not_reported_as_cut_short_next_time(tmp_path, monkeypatch):
    """Before: Ctrl-C on 'edgecl learn' printed "interrupted", and the next 'edgecl learn'
    warned the round "did not finish: ... killed, out of memory or powered off"."""
    import pytest

    from edgecl.config import load_config
    from edgecl.continual import round as round_mod
    from edgecl.runtime import learner

    def interrupted(*args, **kwargs):
        assert (learner.learner_dir(tmp_path) / learner.RUNNING_FILE).is_file()  # while it runs
        raise KeyboardInterrupt

    monkeypatch.setattr(round_mod, "run_round", interrupted)
    with pytest.raises(KeyboardInterrupt):
        learner.run_learning_round(load_config(None, [f"state_dir={tmp_path}"]))
    assert learner.interrupted_round(tmp_path) is None


def test_a_killed_fleet_rounds_work_folder_is_removed_at_the_next_start(tmp_path):
    """Before: a device killed while adopting a fleet model kept learner/fleet-work (its
    model.pt and an export folder, about 10 MB) for good; restarts left it."""
    from edgecl.runtime import learner

    work = learner.learner_dir(tmp_path) / learner.FLEET_WORK
    (work / ".edgecl-export-x").mkdir(parents=True)
    (work / "model.pt").write_bytes(b"x" * 1000)
    assert learner._clear_cut_short_round(tmp_path) is None  # no local round was cut short
    assert not work.exists()


def test_a_round_writes_its_scratch_files_in_the_state_directory(tmp_path):
    """Libraries a round calls (ultralytics' dataset scan, onnxruntime's INT8 quantiser) wrote
    scratch folders in the system temp folder, where a learner killed mid-round left them for
    good; now in STATE/learner/tmp, which the next round empties."""
    import tempfile

    from edgecl.runtime.learner import round_temp_folder

    leftover = tmp_path / "learner" / "tmp" / "ort.quant.killed"
    leftover.mkdir(parents=True)
    before = tempfile.gettempdir()
    with round_temp_folder(tmp_path):
        assert not leftover.exists()
        made = tempfile.mkdtemp(prefix="ort.quant.")
        assert str(made).startswith(str(tmp_path / "learner" / "tmp"))
    assert tempfile.gettempdir() == before and not (tmp_path / "learner" / "tmp").exists()


def test_a_round_waiting_for_room_says_how_to_make_some(tmp_path, monkeypatch):
    """On a small card the kept versions (5 promoted, 3 rejected) left no room for a round,
    which then waited for good; the line said what was free, not what to do."""
    import shutil
    from types import SimpleNamespace

    from edgecl.runtime import learner

    total = {"bytes": 2**30}
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: SimpleNamespace(free=2**20, total=total["bytes"]))
    serving = tmp_path / "models" / "v0002"
    serving.mkdir(parents=True)
    (serving / "model.onnx").write_bytes(b"x" * 2**20)
    (tmp_path / "models" / "current").symlink_to("v0002")
    # only the serving version: before, the advice to prune, which freed 0 bytes
    problem = learner.room_problem(tmp_path)
    assert problem == (f"{tmp_path} has 1.0 MiB free; a round needs about 6.0 MiB (the serving "
                       f"model's files twice, and its small files); no other model version is "
                       f"kept to prune: free room on the volume (the replay memory's bound "
                       f"memory.max_bytes, --out and --save-video files, other files on it)")
    monkeypatch.chdir(tmp_path)  # a relative --state-dir: before, the serving one was 'other'
    assert "no other model version is kept to prune" in learner.room_problem(".")
    (tmp_path / "models" / "v0001").mkdir()
    (tmp_path / "models" / "v0001" / "model.onnx").write_bytes(b"x" * 2**21)
    assert "; other model versions hold 2.0 MiB: keeping fewer" in learner.room_problem(".")
    problem = learner.room_problem(tmp_path)
    assert "; other model versions hold 2.0 MiB: keeping fewer frees room" in problem
    assert problem.endswith(f"lower in the device's config and run 'edgecl models prune "
                            f"--config CONFIG.yaml --state-dir {tmp_path}' with it")
    total["bytes"] = 5 * 2**20  # a 5 MiB volume: no round fits on it, whatever is pruned
    assert learner.room_problem(tmp_path).endswith(
        "more than the whole volume holds (5.0 MiB): learning needs a larger volume for the "
        "state directory")


def test_a_round_killed_after_it_staged_is_not_said_to_have_lost_what_it_learnt(tmp_path, caplog):
    """Before: a runtime killed right after 'round 4 -> v0004 staged' promoted v0004 at its next
    start, then warned that the round "did not finish ... nothing it learnt was kept"."""
    import json
    import logging

    from edgecl.models.registry import Registry
    from edgecl.runtime import learner

    folder = learner.learner_dir(tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"started": "2000-01-01T00:00:00+00:00", "trigger": "8 new samples"}
    (folder / learner.RUNNING_FILE).write_text(json.dumps(record))
    registry = Registry(tmp_path / "models")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    registry.stage({"model.onnx": onnx}, meta={"note": "added by hand"})
    assert "nothing it learnt was kept" in learner.interrupted_round(tmp_path)  # no round's

    (folder / learner.RUNNING_FILE).write_text(json.dumps(record))
    version = registry.stage({"model.onnx": onnx}, meta={"memory_snapshot": "s1"})
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.learner"):
        assert learner.interrupted_round(tmp_path) is None
    assert f"stopped after it staged {version}: what it learnt is kept there" in caplog.text
    assert not (folder / learner.RUNNING_FILE).exists()


def test_a_round_killed_after_the_clock_went_back_does_not_claim_an_older_version(tmp_path,
                                                                                    caplog):
    """Before: versions were told apart by time: a round started at 1970 (the clock set back
    since versions were made in 2031) and killed before it staged read v0001, made in 2031, as
    its own ("stopped after it staged v0001: what it learnt is kept there")."""
    import json
    import logging

    from edgecl.models.registry import Registry
    from edgecl.runtime import learner

    registry = Registry(tmp_path / "models")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    old = registry.stage({"model.onnx": onnx}, meta={"memory_snapshot": "s1"})
    manifest_path = tmp_path / "models" / old / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "created": "2031-01-01T00:00:00+00:00"}))
    learner.learner_dir(tmp_path).mkdir(parents=True, exist_ok=True)
    learner._mark_running(tmp_path, "30 new samples", "r1")  # the round starts, at 1970 say
    path = learner.learner_dir(tmp_path) / learner.RUNNING_FILE
    record = json.loads(path.read_text())
    assert record["versions_before"] == 1
    path.write_text(json.dumps({**record, "started": "1970-01-01T00:20:14+00:00"}))
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.learner"):
        said = learner.interrupted_round(tmp_path)
    assert said and "did not finish" in said and "nothing it learnt was kept" in said
    assert "stopped after it staged" not in caplog.text
    # the round's own version, staged before the kill, is still found
    learner._mark_running(tmp_path, "30 new samples", "r2")
    version = registry.stage({"model.onnx": onnx}, meta={"memory_snapshot": "s2"})
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.learner"):
        assert learner.interrupted_round(tmp_path) is None
    assert f"stopped after it staged {version}" in caplog.text



@pytest.mark.parametrize("body", ['{"versions_before": ' + "[" * 200_000 + "]" * 200_000 + "}",
                                  '{"versions_before": -1, "started": "2999-01-01T00:00:00+00:00"}'])
def test_a_damaged_running_record_is_said_as_a_round_that_did_not_finish(tmp_path, body, caplog):
    """Before: a running.json nested 200,000 deep stopped 'edgecl learn' and 'edgecl run' at
    every start ("internal error (RecursionError ...)"), and a versions_before of -1 made any
    staged version read as the killed round's ("stopped after it staged v0001")."""
    import logging

    from edgecl.models.registry import Registry
    from edgecl.runtime import learner

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    Registry(tmp_path / "models").stage({"model.onnx": onnx}, meta={"memory_snapshot": "s1"})
    learner.learner_dir(tmp_path).mkdir(parents=True, exist_ok=True)
    (learner.learner_dir(tmp_path) / learner.RUNNING_FILE).write_text(body)
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.learner"):
        said = learner.interrupted_round(tmp_path)
    assert said and "did not finish" in said and "stopped after it staged" not in caplog.text
    assert not (learner.learner_dir(tmp_path) / learner.RUNNING_FILE).exists()
