"""The learner supervisor's containment: failures back off, a failing promotion is retried and
then dropped, a round staged before a kill is promoted at the next start, and the runtime's
supervisor steps never stop detection."""

import logging
import time
from types import SimpleNamespace

import pytest

from edgecl.config import load_config
from edgecl.continual.round_state import RoundResult, RoundStatus
from edgecl.errors import RegistryError
from edgecl.runtime import learner as learner_mod
from edgecl.runtime.learner import BACKOFF_AFTER, LearnerSupervisor


def _boxed(sample_id):
    """A memory row holding a box (class 0): a held-out sample the gate can judge on."""
    return SimpleNamespace(id=sample_id, held_out=True, classes=(0,))


class FakeRegistry:
    def __init__(self, fail_promotions=0):
        self.fail_promotions = fail_promotions
        self.promoted = []
        self.pruned = 0

    def current(self):
        return self.promoted[-1] if self.promoted else None

    def manifest(self, version):
        return {}  # no parent recorded: nothing to check a rollback against

    def prune(self, *args, **kwargs):
        self.pruned += 1


@pytest.fixture
def supervisor(tmp_path, monkeypatch):
    def make(registry):
        cfg = load_config(None, [f"state_dir={tmp_path}"])
        sup = LearnerSupervisor(cfg, registry)

        def promote(state_dir, version):
            if registry.fail_promotions > 0:
                registry.fail_promotions -= 1
                raise RegistryError("disk hiccup")
            registry.promoted.append(version)
            return True  # the metrics database follows

        monkeypatch.setattr("edgecl.runtime.promote.promote_version", promote)
        return sup

    return make


def failed(reason="ValueError: lr too high"):
    return RoundResult(RoundStatus.FAILED, reason=reason, round=1, started_s=time.time())


def test_same_failure_three_times_backs_off_and_says_so(supervisor):
    sup = supervisor(FakeRegistry())
    for _ in range(BACKOFF_AFTER - 1):
        sup.handle_result(failed())
    assert sup.health()["state"] == "idle"
    sup.handle_result(failed())
    health = sup.health()
    assert health["state"] == "backoff" and "lr too high" in health["reason"]
    assert 0 < health["retry_in_s"] <= learner_mod.BACKOFF_INITIAL_S


def test_different_failures_do_not_back_off(supervisor):
    sup = supervisor(FakeRegistry())
    for i in range(BACKOFF_AFTER + 2):
        sup.handle_result(failed(f"error {i}"))
    assert sup.health()["state"] == "idle"


def test_backoff_doubles_and_a_promotion_clears_it(supervisor):
    sup = supervisor(FakeRegistry())
    for _ in range(BACKOFF_AFTER + 1):
        sup.handle_result(failed())
    assert sup.health()["retry_in_s"] > learner_mod.BACKOFF_INITIAL_S
    sup.handle_result(RoundResult(RoundStatus.STAGED, version="v0001", round=2))
    assert sup.health()["state"] == "idle" and sup.rounds[-1]["status"] == "promoted"


def test_a_failing_promotion_is_contained_retried_then_dropped(supervisor):
    registry = FakeRegistry(fail_promotions=1)
    sup = supervisor(registry)
    sup._pending = RoundResult(RoundStatus.STAGED, version="v0001", round=1)
    sup._apply_pending()
    assert registry.promoted == [] and sup.apply_errors == 1 and "disk hiccup" in sup.last_error
    sup._apply_pending()
    assert registry.promoted == ["v0001"] and sup._pending is None and registry.pruned == 1
    registry.fail_promotions = 10
    sup._pending = RoundResult(RoundStatus.STAGED, version="v0002", round=2)
    for _ in range(learner_mod.APPLY_ATTEMPTS):
        sup._apply_pending()
    assert sup._pending is None and registry.promoted == ["v0001"]
    assert sup.apply_errors == 1 + learner_mod.APPLY_ATTEMPTS


def test_result_file_round_trip(tmp_path):
    from edgecl.atomic import atomic_write_json

    result = RoundResult(RoundStatus.REJECTED, reason="forgot", round=3, version="v0003",
                         per_task={"t1": 0.5}, timings_s={"train": 1.5})
    atomic_write_json(learner_mod.learner_dir(tmp_path) / "last_round.json", result.to_json())
    assert learner_mod.read_last_round(tmp_path) == result
    (learner_mod.learner_dir(tmp_path) / "last_round.json").write_text("{not json")
    assert learner_mod.read_last_round(tmp_path) is None


class FakeSink:
    """Memory sink counters: each call to take_counters hands out the next (added, classes)."""

    def __init__(self, batches, own_ids=()):
        self.batches = list(batches)
        self.own_ids = list(own_ids)

    def take_counters(self):
        return self.batches.pop(0) if self.batches else (0, set())

    def take_own_ids(self):
        ids, self.own_ids = self.own_ids, []
        return ids


def test_rejected_new_class_does_not_refire_until_new_samples(tmp_path, monkeypatch):
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_new_samples=5",
                             "learner.trigger_interval_s=0"])
    # class 0 known; class 3 appears, a round tries it and is rejected; the camera keeps seeing
    # class 3 (one new sample per tick): the next round must wait for 5 new samples
    sink = FakeSink([(1, {3})] * 6, own_ids=[1])  # the counted samples are the sink's own
    sink.memory = type("M", (), {"ids": lambda self, held_out=None: [1],
                                 "records": lambda self, ids=None, held_out=None: [
                                     _boxed(i) for i in self.ids(held_out=held_out)],
                                 "change_signature": lambda self: (1, 1)})()
    sup = LearnerSupervisor(cfg, FakeRegistry(), memory_sink=sink, known_classes={0})
    started = []

    class DoneProcess:
        pid = 0

        def is_alive(self):
            return False

    def fake_spawn(reason, ceiling):
        started.append(reason)
        return DoneProcess()

    monkeypatch.setattr(sup, "_spawn", fake_spawn)
    monkeypatch.setattr(sup, "_finish", lambda: setattr(sup, "_proc", None))
    sup.tick()
    assert started == ["new_class"]
    sup.handle_result(RoundResult(RoundStatus.REJECTED, reason="ACC fell", round=1,
                                  started_s=time.time()))
    for _ in range(4):
        sup.tick()
    assert started == ["new_class"]  # 4 new samples of the tried class: no new round
    sup.tick()
    assert started == ["new_class", "new_samples"]
    # a class never tried still fires at once
    sink.batches = [(1, {7})]
    sup.tick()
    assert started[-1] == "new_class"


def test_a_due_round_waits_for_a_held_out_sample_and_keeps_its_trigger(tmp_path, monkeypatch):
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_new_samples=0",
                             "learner.trigger_interval_s=0", "learner.trigger_new_class=true"])
    # only the new-class trigger: a new class arrives while no sample is held out yet
    sink = FakeSink([(1, {3})], own_ids=[1])
    held = []  # (id, classes) of the held-out samples
    sink.memory = type("M", (), {
        "ids": lambda self, held_out=None: [i for i, _ in held] if held_out else [1],
        "records": lambda self, ids=None, held_out=None: [
            SimpleNamespace(id=i, held_out=True, classes=c) for i, c in held],
        "change_signature": lambda self: (1 + len(held), 9)})()
    sup = LearnerSupervisor(cfg, FakeRegistry(), memory_sink=sink, known_classes={0})
    spawned = []
    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: spawned.append(reason))
    sup.tick()
    sup.tick()
    assert spawned == []  # the gate could not judge a candidate: nothing spawned
    held.append((8, ()))  # a held-out background frame: still no box to judge on (before,
    sup.tick()            # a round started, trained and was then rejected)
    assert spawned == [] and "with a box" in sup.health()["waiting_for_held_out"]
    held.append((9, (0,)))  # a held-out sample with a box arrives
    sup.tick()
    assert spawned == ["new_class"]


def test_a_round_due_after_the_stream_closed_the_sink_starts_without_reading_memory(tmp_path,
                                                                                 monkeypatch):
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_new_samples=1",
                             "learner.trigger_interval_s=0"])
    sink = FakeSink([(3, {0})])

    class ClosedMemory:
        def ids(self):
            raise AssertionError("a closed memory was read")

    sink.memory, sink.closed = ClosedMemory(), True
    sup = LearnerSupervisor(cfg, FakeRegistry(), memory_sink=sink, known_classes={0})
    spawned = []
    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: spawned.append((reason, ceiling)))
    sup.tick()
    assert spawned == [("new_samples", None)]


def test_samples_stored_by_other_processes_count_once(tmp_path, monkeypatch):
    import numpy as np

    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round_state import LearnerState, save_state

    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_new_samples=4",
                             "learner.trigger_interval_s=0", "learner.trigger_new_class=true"])
    memory = ReplayMemory(tmp_path / "memory", cfg.memory)

    def add(i, cls):
        labels = np.array([[cls, 0.5, 0.5, 0.2, 0.2]], np.float32)
        return memory.add(Sample(np.full((16, 16, 3), i, np.uint8), labels, task="stream",
                                 source=f"s{i}", ts_s=float(i) * 100))

    learnt = [add(i, 0) for i in range(2)]
    save_state(tmp_path, LearnerState(last_sample_id=max(learnt)))  # a round learnt these two
    own = add(2, 0)  # stored by the runtime's own sink: counted by its counters only
    sink = FakeSink([(1, {0})], own_ids=[own])
    sink.memory = memory
    sup = LearnerSupervisor(cfg, FakeRegistry(), memory_sink=sink, known_classes={0})
    spawned = []
    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: spawned.append(reason))
    monkeypatch.setattr(learner_mod, "SCAN_EVERY_S", 0.0)
    sup.tick()
    assert sup.state.new_samples == 1 and spawned == []
    add(3, 0)  # 'edgecl labels import' or a CLI answer while the runtime runs
    sup.tick()
    assert sup.state.new_samples == 2 and not sup.state.new_classes
    add(4, 5)  # an answer naming a new class (id 5) starts a round at once
    sup.tick()                       # ... once a held-out sample exists: said, not only logged
    assert spawned == [] and sup.health()["waiting_for_held_out"] == learner_mod.HELD_OUT_WAIT
    monkeypatch.setattr(sup, "_no_held_out_yet", lambda: False)
    sup.tick()
    assert spawned == ["new_class"] and "waiting_for_held_out" not in sup.health()
    memory.close()


def test_a_rejected_round_applies_the_retention_rule(supervisor):
    registry = FakeRegistry()
    sup = supervisor(registry)
    for k in range(1, 4):
        sup.handle_result(RoundResult(RoundStatus.REJECTED, reason="ACC fell", round=k,
                                      version=f"v000{k}"))
    assert registry.pruned == 3 and registry.promoted == []
    sup.handle_result(RoundResult(RoundStatus.REJECTED, reason="nothing staged", round=4))
    assert registry.pruned == 3  # no version was made: nothing to prune


class Ended:
    """A learner process that has ended with ``exitcode``."""

    pid = 0

    def __init__(self, exitcode: int):
        self.exitcode = exitcode

    def is_alive(self):
        return False


@pytest.mark.parametrize("clock_step_s", [-3600.0, 0.0, 3600.0])
def test_only_the_result_of_the_round_it_started_is_handled(supervisor, tmp_path, monkeypatch,
                                                           clock_step_s):
    from edgecl.atomic import atomic_write_json

    registry = FakeRegistry()
    sup = supervisor(registry)

    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: Ended(1))
    path = learner_mod.learner_dir(tmp_path) / "last_round.json"
    # an earlier session's result, written "later" by a clock that has since gone back
    atomic_write_json(path, RoundResult(RoundStatus.STAGED, version="v0007", round=7,
                                        started_s=time.time() + 86400,
                                        round_id="earlier").to_json())
    sup.start_round("interval")
    sup._finish()  # the process died without writing a result
    assert registry.promoted == [] and sup._last_failure.endswith("and sent no result")
    sup.start_round("interval")
    # the round's own result, stamped by a clock that jumped meanwhile
    atomic_write_json(path, RoundResult(RoundStatus.STAGED, version="v0008", round=8,
                                        started_s=time.time() + clock_step_s,
                                        round_id=sup._round_id).to_json())
    sup._finish()
    assert registry.promoted == ["v0008"]


def test_the_learner_writes_the_round_id_into_its_result(tmp_path, monkeypatch):
    from edgecl.continual import round as round_mod

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    monkeypatch.setattr(round_mod, "run_round", lambda cfg, **kw: RoundResult(
        RoundStatus.SKIPPED, reason="no new labelled samples"))
    learner_mod.run_learning_round(cfg, reason="test", round_id="abc123")
    assert learner_mod.read_last_round(tmp_path).round_id == "abc123"
    # 'edgecl learn' gives none: before, its result (and '--json') said "round_id": ""
    first = learner_mod.run_learning_round(cfg, reason="on_demand").round_id
    second = learner_mod.run_learning_round(cfg, reason="on_demand").round_id
    assert len(first) == 32 and len(second) == 32 and first != second
    assert learner_mod.read_last_round(tmp_path).round_id == second


def test_a_result_a_full_disk_refuses_waits_for_room_and_is_never_dropped(supervisor,
                                                                          monkeypatch):
    """Before: three tries in a row (a quarter of a second) and the round's result was
    dropped: its monitor status, counters and callback were lost until a restart."""
    import errno

    registry = FakeRegistry()
    sup = supervisor(registry)
    clock = {"now": 1000.0}
    monkeypatch.setattr(learner_mod.time, "monotonic", lambda: clock["now"])
    full = {"on": True}

    def promote(state_dir, version):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", "/card/models/current")
        registry.promoted.append(version)
        return True

    monkeypatch.setattr("edgecl.runtime.promote.promote_version", promote)
    monkeypatch.setattr(sup, "start_round", lambda reason: pytest.fail("a round started"))
    sup._pending = RoundResult(RoundStatus.STAGED, version="v0001", round=1)
    for _ in range(3 * learner_mod.APPLY_ATTEMPTS):
        sup._apply_pending()
        sup.tick()  # no retry before STORAGE_RETRY_S, no new round while the result waits
    assert sup._pending is not None and registry.promoted == []
    assert sup.last_error.startswith("applying round 1 (v0001) waits for room on the disk: "
                                     "the state directory cannot be written: No space left on "
                                     "device (/card/models/current)")
    full["on"] = False
    sup.tick()
    assert registry.promoted == []  # not yet due
    clock["now"] += learner_mod.STORAGE_RETRY_S
    sup.tick()
    assert registry.promoted == ["v0001"] and sup._pending is None and sup.rounds_done == 1


def test_the_result_comes_through_the_pipe_when_its_file_cannot_be_written(supervisor,
                                                                           monkeypatch):
    import multiprocessing as mp

    registry = FakeRegistry()
    sup = supervisor(registry)

    receive, send = mp.Pipe(duplex=False)

    def spawn(reason, ceiling):
        sup._result_conn = receive
        return Ended(0)

    monkeypatch.setattr(sup, "_spawn", spawn)
    sup.start_round("interval")
    # the learner's last_round.json did not fit on the card; its pipe carries the result
    send.send(RoundResult(RoundStatus.STAGED, version="v0003", round=3,
                          round_id=sup._round_id).to_json())
    send.close()
    sup._finish()
    assert registry.promoted == ["v0003"] and sup._result_conn is None


def test_a_failed_rounds_result_the_card_refused_is_recorded_once_there_is_room(
        supervisor, monkeypatch):
    """Before: a round that failed on a full card could not write last_round.json, and
    nothing wrote it later: 'edgecl status' showed the round before it as the last."""
    import errno
    import multiprocessing as mp

    from edgecl.runtime.learner import read_last_round

    sup = supervisor(FakeRegistry())
    clock = {"now": 1000.0}
    monkeypatch.setattr(learner_mod.time, "monotonic", lambda: clock["now"])
    receive, send = mp.Pipe(duplex=False)

    def spawn(reason, ceiling):
        sup._result_conn = receive
        return Ended(0)

    monkeypatch.setattr(sup, "_spawn", spawn)
    monkeypatch.setattr(sup, "start_round", lambda reason: None)
    real = learner_mod.atomic_write_json
    full = {"on": True}

    def write(path, data):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(learner_mod, "atomic_write_json", write)
    sup._proc = spawn("interval", None)
    sup._round_id = "r5"
    send.send(RoundResult(RoundStatus.FAILED, reason="round 5: cannot export the candidate "
                          "model: No space left on device", round=5, round_id="r5").to_json())
    send.close()
    sup._finish()
    assert read_last_round(sup.cfg.state_dir) is None
    full["on"] = False
    sup.tick()
    assert read_last_round(sup.cfg.state_dir) is None  # not yet due
    clock["now"] += learner_mod.STORAGE_RETRY_S
    sup.tick()
    written = read_last_round(sup.cfg.state_dir)
    assert (written.round, written.status) == (5, RoundStatus.FAILED)


def test_a_result_larger_than_the_pipe_buffer_is_read_while_the_learner_waits(supervisor,
                                                                             monkeypatch):
    """The sender blocks until the result is read: joining the process first never ended."""
    import multiprocessing as mp
    import threading

    registry = FakeRegistry()
    sup = supervisor(registry)
    receive, send = mp.Pipe(duplex=False)

    class Learner:  # a learner process that ends once its result is sent
        pid, exitcode = 0, 0

        def __init__(self):
            self.thread = threading.Thread(target=self.run, daemon=True)

        def run(self):
            result = RoundResult(RoundStatus.STAGED, version="v0004", round=4,
                                 round_id=sup._round_id, timings_s={f"t{i}": 0.5 for i in range(40_000)})
            send.send(result.to_json())            # about 600 KB: 10x a pipe's buffer
            send.close()

        def is_alive(self):
            return self.thread.is_alive()

        def join(self, timeout=None):
            self.thread.join(timeout)

    def spawn(reason, ceiling):
        sup._result_conn = receive
        learner = Learner()
        learner.thread.start()
        return learner

    monkeypatch.setattr(sup, "_spawn", spawn)
    sup.start_round("interval")
    sup.wait(timeout_s=20)
    assert not sup.busy and registry.promoted == ["v0004"]


def test_a_round_is_not_started_while_one_runs(supervisor, monkeypatch, caplog):
    registry = FakeRegistry()
    sup = supervisor(registry)
    spawned = []

    class Running:
        pid, exitcode = 7, None

        def is_alive(self):
            return True

    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: spawned.append(reason) or Running())
    sup.start_round("new_class")
    running = sup._proc
    sup.start_round("on_demand")                    # would have orphaned the first learner
    assert spawned == ["new_class"] and sup._proc is running
    assert "learning round not started (trigger: on_demand)" in caplog.text


def test_a_full_disk_in_a_round_is_one_line_and_its_work_folder_goes(tmp_path, monkeypatch,
                                                                     caplog):
    import errno

    from edgecl.continual import round as round_mod

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    work = learner_mod.learner_dir(tmp_path) / "work"

    def full(cfg, **kwargs):
        work.mkdir()
        (work / "model.pt").write_bytes(b"x" * 100)
        # what torch.save through atomic_write_with raised on the card
        raise OSError(errno.ENOSPC, "No space left on device", str(work / "model.pt"))

    monkeypatch.setattr(round_mod, "run_round", full)
    result = learner_mod.run_learning_round(cfg, reason="test", round_id="r1")
    assert result.status is RoundStatus.FAILED
    assert result.reason == (f"cannot write the round's files: No space left on "
                             f"device ({work / 'model.pt'})")
    assert "Traceback" not in caplog.text and not work.exists()
    assert learner_mod.read_last_round(tmp_path).round_id == "r1"


def test_a_result_file_that_does_not_fit_is_logged_and_the_result_returned(tmp_path,
                                                                           monkeypatch, caplog):
    import errno

    from edgecl.continual import round as round_mod

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    monkeypatch.setattr(round_mod, "run_round", lambda cfg, **kw: RoundResult(
        RoundStatus.STAGED, version="v0004", round=4))

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(learner_mod, "atomic_write_json", full)
    result = learner_mod.run_learning_round(cfg, reason="test", round_id="r2")
    assert result.version == "v0004" and result.round_id == "r2"
    assert "the round's result file cannot be written: No space left on device" in caplog.text
    assert "Traceback" not in caplog.text


def _staged_round(tmp_path, registry, round_no=1):
    """A version as a round stages it: its record and its progress travel with it."""
    from edgecl.continual.evaluate import EvalResult
    from edgecl.continual.round import ROUND_RECORD_FILE, write_round_record
    from edgecl.continual.round_state import LearnerState

    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "model.onnx").write_bytes(b"onnx")
    ap = EvalResult(map50_95=0.5, map50=0.5, recall=0.5, precision=0.5,
                    per_class_ap50_95={0: 0.5}, n_images=2, n_boxes=2, dece=0.0)
    record = write_round_record(src / ROUND_RECORD_FILE, round_no=round_no, status="staged",
                                reason="accepted", seconds=1.0, evaluation={"stream": ap},
                                columns=["stream"], class_names={0: "car"}, calibration=None)
    after = LearnerState(round=round_no, last_sample_id=30)
    import dataclasses

    return registry.stage({"model.onnx": src / "model.onnx", ROUND_RECORD_FILE: record},
                          {"memory_snapshot": "snap", "learner_state": dataclasses.asdict(after)})


def test_what_a_round_could_not_write_is_written_from_its_version(tmp_path, monkeypatch):
    """Before: a full disk after the round staged its version failed the round: the version
    was never promoted in that run and the round was learnt again from scratch."""
    from edgecl.continual.round_state import load_state
    from edgecl.errors import StorageError
    from edgecl.models.registry import Registry
    from edgecl.runtime.monitor import Monitor

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    registry = Registry(tmp_path / "models")
    version = _staged_round(tmp_path, registry)
    sup = LearnerSupervisor(cfg, registry)
    clock = {"now": 1000.0}
    monkeypatch.setattr(learner_mod.time, "monotonic", lambda: clock["now"])
    real_record = Monitor.record_round

    def full(self, *args, **kwargs):
        raise StorageError("metrics database metrics.sqlite cannot be written: disk I/O error")

    monkeypatch.setattr(Monitor, "record_round", full)
    monkeypatch.setattr(Monitor, "set_version_status", full)
    sup.handle_result(RoundResult(RoundStatus.STAGED, version=version, round=1,
                                  unsaved=["metrics", "progress"]))
    assert registry.current() == version and load_state(tmp_path).last_sample_id == 30
    assert sup.health()["metrics_behind"] is True
    assert version not in Monitor(tmp_path).recorded_versions()
    monkeypatch.setattr(Monitor, "record_round", real_record)
    monkeypatch.undo()
    monkeypatch.setattr(learner_mod.time, "monotonic", lambda: clock["now"])
    sup.tick()
    assert sup.health().get("metrics_behind") is True  # not due yet
    clock["now"] += learner_mod.CATCH_UP_EVERY_S
    sup.tick()
    assert "metrics_behind" not in sup.health()
    assert version in Monitor(tmp_path).recorded_versions()
    assert Monitor(tmp_path).summary()["model_version"] == version


def due_supervisor(cfg, monkeypatch):
    """A supervisor whose sink keeps storing (a round is due at each tick) and the list of
    rounds it starts (none is run)."""
    sink = FakeSink([(5, {0})] * 10)
    sink.memory = type("M", (), {"ids": lambda self, held_out=None: [1],
                                 "records": lambda self, ids=None, held_out=None: (
                                     [_boxed(1)] if held_out else []),
                                 "change_signature": lambda self: (1, 1)})()
    sup = LearnerSupervisor(cfg, FakeRegistry(), memory_sink=sink, known_classes={0})
    started = []
    monkeypatch.setattr(sup, "start_round", started.append)
    return sup, started


def test_a_due_round_waits_for_room_on_a_full_disk_and_starts_once_there_is_room(tmp_path,
                                                                                 monkeypatch,
                                                                                 caplog):
    """Before: on a nearly full card each round trained, failed to export its model, freed its
    work folder (which storing then filled) and the next round started over."""
    import collections
    import shutil

    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_new_samples=1"])
    version = tmp_path / "models" / "v0001"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"x" * 1000)
    (tmp_path / "models" / "current").symlink_to("v0001")
    sup, started = due_supervisor(cfg, monkeypatch)
    Usage = collections.namedtuple("Usage", "total used free")
    free = {"bytes": 1024}
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9, free["bytes"]))
    sup.tick()
    sup.tick()
    assert started == []
    assert sup.health()["waiting_for_room"].startswith(f"{tmp_path} has 0.0 MiB free; a round "
                                                       f"needs about 4.0 MiB")
    assert caplog.text.count("learning round due (new_samples) waits for room") == 1
    free["bytes"] = 10**9
    sup.tick()
    assert started == ["new_samples"] and "waiting_for_room" not in sup.health()


def test_a_round_cut_short_by_a_stop_is_said_at_the_next_start(tmp_path, caplog, monkeypatch):
    """Before: a round killed with the device left its work folder (copies of the model files)
    and nothing said that a round had been lost."""
    from edgecl.continual import round as round_mod

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    seen = {}

    def killed(cfg, **kw):  # the record exists while the round runs; then the power goes
        seen["running"] = (tmp_path / "learner" / "running.json").is_file()
        (tmp_path / "learner" / "work" / "model.pt").parent.mkdir(parents=True)
        (tmp_path / "learner" / "work" / "model.pt").write_bytes(b"x" * 1000)
        raise SystemExit(137)

    monkeypatch.setattr(round_mod, "run_round", killed)
    with pytest.raises(SystemExit):
        learner_mod.run_learning_round(cfg, reason="50 new samples")
    assert seen["running"]
    (tmp_path / "learner" / "work").mkdir()  # a real kill skips the round's own cleanup
    with caplog.at_level(logging.WARNING):
        LearnerSupervisor(cfg, FakeRegistry())
    line = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
    assert len(line) == 1 and "(trigger: 50 new samples)" in line[0], caplog.text
    assert not (tmp_path / "learner" / "running.json").exists()
    assert not (tmp_path / "learner" / "work").exists()
    caplog.clear()
    LearnerSupervisor(cfg, FakeRegistry())                  # said once
    assert "did not finish" not in caplog.text


def test_a_finished_round_leaves_no_running_record(tmp_path, caplog, monkeypatch):
    from edgecl.continual import round as round_mod

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    monkeypatch.setattr(round_mod, "run_round", lambda cfg, **kw: RoundResult(
        RoundStatus.SKIPPED, reason="no new labelled samples"))
    learner_mod.run_learning_round(cfg, reason="test")
    assert not (tmp_path / "learner" / "running.json").exists()
    (tmp_path / "learner" / "running.json").write_text("{not json")   # a torn record
    with caplog.at_level(logging.WARNING):
        learner_mod.run_learning_round(cfg, reason="test")
    assert "started at an unknown time (trigger: unknown) did not finish" in caplog.text


def test_the_installed_edgecl_is_told_apart_by_its_files_not_only_its_version(tmp_path,
                                                                             monkeypatch):
    """Every build so far said version 0.1.0, so an upgrade in place (a pip install of a new
    build, a git pull into an editable install) was never noticed."""
    import os

    import edgecl

    package = tmp_path / "edgecl"
    (package / "web").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "web" / "console.js").write_text("let a = 1;")
    monkeypatch.setattr(edgecl, "__file__", str(package / "__init__.py"))
    first = learner_mod.installed_version()
    assert first.endswith(")") and " (files " in first
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"compiled at run time")
    assert learner_mod.installed_version() == first          # caches written by running code
    (package / ".__init__.py.swp").write_bytes(b"vim")       # an editor's, and a backup:
    (package / "__init__.py~").write_text("")                # no upgrade (learning stopped)
    assert learner_mod.installed_version() == first
    (package / "web" / "console.js").write_text("let a = 2;")  # same size, new contents
    os.utime(package / "web" / "console.js", ns=(1, 1))
    assert learner_mod.installed_version() != first


def test_rounds_wait_for_a_restart_after_edgecl_is_upgraded_on_disk(supervisor, monkeypatch, caplog):
    """Before: a round, a new process importing edgecl from disk, ran the upgraded code against
    the running runtime's state and models; also later, a round started within a minute of the
    last look (looked at most once a minute)."""
    on_disk = ["0.1.0"]
    monkeypatch.setattr(learner_mod, "installed_version", lambda: on_disk[0])
    sup = supervisor(FakeRegistry())
    spawned = []
    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: spawned.append(reason))
    sup.start_round("first")
    assert spawned == ["first"]
    sup._proc = None
    on_disk[0] = "0.2.0"
    with caplog.at_level(logging.ERROR):
        sup.start_round("second")
        sup.start_round("third")
    assert spawned == ["first"]
    lines = [r.getMessage() for r in caplog.records if "upgraded on disk" in r.getMessage()]
    assert lines == ["edgecl was upgraded on disk (0.1.0 -> 0.2.0) while this runtime runs: "
                     "learning rounds wait until this edgecl command is started again (a round "
                     "would run the new code against this runtime); detection goes on"]
    assert sup.health()["last_error"] == lines[0]


def test_the_progress_bar_follows_the_rounds_own_report(supervisor, tmp_path, monkeypatch):
    """Before: elapsed time over the time budget, though rounds also stop at their step bound:
    a round of 30 steps in 14 s showed 5 % when it ended."""
    import json

    sup = supervisor(FakeRegistry())
    monkeypatch.setattr(type(sup), "busy", property(lambda self: True))
    sup._round_id, sup._train_share = "r1", 0.8
    sup._round_started_mono_s, sup._round_expected_s = time.monotonic() - 14, 300.0
    running = tmp_path / "learner" / "running.json"
    assert sup.health()["progress"] == pytest.approx(14 / 300, abs=0.01)   # nothing reported
    running.write_text(json.dumps({"round_id": "r1", "steps": 15, "total_steps": 30,
                                   "elapsed_s": 7.0, "budget_s": 300.0}))
    assert sup.health()["progress"] == pytest.approx(0.5 * 0.8)
    running.write_text(json.dumps({"round_id": "r1", "steps": 3, "total_steps": 300,
                                   "elapsed_s": 240.0, "budget_s": 300.0}))  # time bound first
    assert sup.health()["progress"] == pytest.approx(0.8 * 0.8)
    running.write_text(json.dumps({"round_id": "other", "steps": 30, "total_steps": 30}))
    assert sup.health()["progress"] == pytest.approx(0.8 * 0.8)  # never back within a round
    assert learner_mod.running_progress(tmp_path, "r1") is None


def test_a_due_round_waits_while_an_import_stores_and_starts_when_it_is_done(tmp_path,
                                                                           monkeypatch, caplog):
    """Before: an import run beside the runtime counted as new samples as it went, so a round
    started on the first part of the folder (say one class of a folder sorted by class)."""
    from edgecl.runtime.lock import import_running, importing

    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_new_samples=1"])
    sup, started = due_supervisor(cfg, monkeypatch)
    assert not import_running(tmp_path)
    with caplog.at_level(logging.INFO), importing(tmp_path), importing(tmp_path):
        assert import_running(tmp_path)  # two imports side by side
        sup.tick()
        sup.tick()
        assert started == []
        assert sup.health()["waiting_for_import"] == learner_mod.IMPORT_WAIT
    assert caplog.text.count("learning round due (new_samples) waits for the import") == 1
    assert not import_running(tmp_path)
    sup.tick()
    assert started == ["new_samples"] and "waiting_for_import" not in sup.health()


def test_samples_a_round_learns_are_not_counted_again_for_the_next(tmp_path, monkeypatch):
    """Before: samples an import stored just before a round started were learnt by it and then
    counted by the next scan of other writers too, so a round started right after the
    promotion only to be skipped ('no new labelled samples')."""
    from types import SimpleNamespace

    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_new_samples=1",
                             "learner.trigger_interval_s=0"])
    stored = [1]
    sink = FakeSink([])
    sink.memory = SimpleNamespace(
        ids=lambda held_out=None: [9] if held_out else list(stored),
        records=lambda ids=None, held_out=None: (
            [_boxed(9)] if held_out else [SimpleNamespace(id=i, held_out=False, classes=(0,))
                                          for i in ids]),
        change_signature=lambda: (len(stored), max(stored)))
    sup = LearnerSupervisor(cfg, FakeRegistry(), memory_sink=sink, known_classes={0})
    spawned = []
    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: spawned.append(ceiling) or None)
    monkeypatch.setattr(learner_mod, "SCAN_EVERY_S", 0.0)
    sup.tick()  # the first look: sample 1, stored before this start
    assert spawned == [1]
    sup._proc = None  # the round ended (its result is not the point here)
    stored += [2, 3]  # an import stored these between the last scan and the next round's start
    sup.start_round("on_demand")
    assert spawned == [1, 3]  # the round learns up to sample 3
    sup._proc = None
    sup.tick()
    assert spawned == [1, 3] and sup.state.new_samples == 0  # nothing new for a third round


def test_a_round_stopped_with_the_runtime_is_not_reported_as_killed_at_the_next_start(
        tmp_path, caplog):
    """Before: a clean SIGTERM during a round left learner/running.json, and the next start
    warned that the round's device or learner had been killed, out of memory or powered off."""
    import multiprocessing

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    sup = LearnerSupervisor(cfg, FakeRegistry())
    learner_mod._mark_running(tmp_path, "task t1 streamed", "r1")
    (learner_mod.learner_dir(tmp_path) / "work").mkdir()
    proc = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    proc.start()
    sup._proc = proc
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.learner"):
        sup.stop()
    assert not proc.is_alive()
    assert "the learning round in progress was stopped: nothing it learnt was kept" in caplog.text
    assert sup.rounds_stopped == 1 and sup.rounds_done == 0  # bench soak's "rounds_stopped"
    sup.stop()  # nothing running: nothing more stopped
    assert sup.rounds_stopped == 1
    assert not (learner_mod.learner_dir(tmp_path) / learner_mod.RUNNING_FILE).exists()
    assert not (learner_mod.learner_dir(tmp_path) / "work").exists()
    assert learner_mod.interrupted_round(tmp_path) is None  # the next start says nothing


def test_a_due_round_waits_while_the_current_version_has_nothing_to_fine_tune(tmp_path,
                                                                              monkeypatch,
                                                                              caplog):
    """Before: a device serving an exported engine with no checkpoint (added by hand, and no
    model.path) started a round process at every trigger, which failed the same way each time."""
    import json

    caplog.set_level(logging.INFO, logger="edgecl.runtime.learner")
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_new_samples=1"])
    registry = FakeRegistry()
    registry.promoted.append("v0001")
    manifest = {"files": {"model.onnx": "ab"}}
    registry.manifest = lambda version: manifest
    sup, started = due_supervisor(cfg, monkeypatch)
    sup.registry = registry
    sup.tick()
    sup.tick()
    said = ("current version v0001 has no model.pt to fine-tune (an exported engine); set "
            "model.path to the ultralytics .pt checkpoint it was exported from, or promote "
            "that checkpoint ('edgecl models add --promote FILE.pt')")
    assert started == [] and sup.health()["waiting_for_model"] == said
    assert caplog.text.count(f"learning round due (new_samples) waits: {said}") == 1
    registry.promoted.append("v0002")  # 'edgecl models add --promote best.pt'
    manifest = {"files": {"model.onnx": "ab", "model.pt": "cd"}}
    sup.tick()
    assert started == ["new_samples"] and "waiting_for_model" not in sup.health()
    assert "learning resumes: version v0002 can be fine-tuned" in caplog.text
    assert json.dumps(sup.health())


def test_a_round_learnt_before_a_rollback_is_not_promoted_over_it(supervisor, caplog):
    """Before: the console's rollback (to v0001) while a round learnt on v0002 ran was undone:
    the round's v0003 was promoted as soon as it came back."""

    class Rolled(FakeRegistry):
        held = []

        def manifest(self, version):
            return {"parent": "v0002"}

        def update_manifest(self, version, fields):
            self.held.append((version, fields))

    registry = Rolled()
    registry.promoted = ["v0002", "v0001"]  # v0001 serves again: rolled back meanwhile
    sup = supervisor(registry)
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.learner"):
        sup.handle_result(RoundResult(RoundStatus.STAGED, round=3, version="v0003"))
    assert registry.promoted == ["v0002", "v0001"]
    assert "v0003 is not promoted: it was learnt on the version that served when its round " \
           "began, and v0001 serves now" in caplog.text
    assert registry.held == [("v0003", {"promote": "manual"})]  # kept for a person, not pruned
    registry.promoted.append("v0002")  # the round's parent serves: promoted as before
    sup.handle_result(RoundResult(RoundStatus.STAGED, round=4, version="v0004"))
    assert registry.promoted[-1] == "v0004"


def test_a_promotion_made_while_a_round_ran_is_followed_after_that_round(supervisor, tmp_path,
                                                                          caplog):
    """Before: 'edgecl models add best.pt --promote' while a round ran moved the learner's
    progress to 0; the round, held unpromoted, then took that progress as its own: no round
    came for the 112 samples the added model never learnt, until a restart."""
    from types import SimpleNamespace

    from edgecl.continual.round_state import LearnerState, save_state

    class Promoted(FakeRegistry):
        def manifest(self, version):
            return {"parent": "v0002"}

        def update_manifest(self, version, fields):
            pass

    registry = Promoted()
    registry.promoted = ["v0002", "v0009"]  # v0009 added and promoted during the round
    sup = supervisor(registry)
    sup.last_round = 8
    save_state(tmp_path, LearnerState(round=9, last_sample_id=0))  # where the promotion put it
    sup._pending = RoundResult(RoundStatus.STAGED, round=9, version="v0010")
    sup._apply_pending()
    assert registry.promoted[-1] == "v0009" and sup._progress_seen is None
    stored = [SimpleNamespace(id=k, classes=(0,)) for k in range(1, 6)]
    memory = SimpleNamespace(records=lambda held_out=None: stored)
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.learner"):
        sup._follow_rounds_elsewhere(memory)
    assert sup.state.new_samples == 5
    assert "the learner's progress is now what v0009 learnt (a rollback or a promotion): 5 " \
           "stored training sample(s)" in caplog.text


def test_after_a_rollback_the_samples_retired_versions_learnt_start_no_round(supervisor,
                                                                          tmp_path, caplog):
    """Before: 'edgecl models rollback' (v0012 -> v0011) rewound the progress, and the 8
    samples v0012 had learnt started a round at once: 14 s later v0013, learnt on them, was
    promoted over the rollback. Now they wait for new samples (and are learnt all the same)."""
    from types import SimpleNamespace

    from edgecl.continual.round_state import LearnerState, load_state, save_state
    from edgecl.runtime.promote import _move_progress

    class Rolled(FakeRegistry):
        def manifest(self, version):
            return {"names": {0: "car"}}

    registry = Rolled()
    registry.promoted = ["v0011", "v0012"]
    save_state(tmp_path, LearnerState(round=12, last_sample_id=20))
    sup = supervisor(registry)
    sup.last_round = 12
    stored = [SimpleNamespace(id=k, classes=(0,) if k <= 20 else (1,)) for k in range(1, 24)]
    memory = SimpleNamespace(records=lambda held_out=None: [r for r in stored if r.id > 0])
    _move_progress(tmp_path, 12, "v0011", back=True)  # a promotion of it gives them back to
    assert load_state(tmp_path).trigger_from_id == 0   # start a round (a user's model added)
    save_state(tmp_path, LearnerState(round=12, last_sample_id=20))
    registry.promoted.append("v0011")  # the rollback: v0011 had learnt samples 1..12
    _move_progress(tmp_path, 12, "v0011", back=True, hold=True)
    state = load_state(tmp_path)
    assert (state.last_sample_id, state.trigger_from_id) == (12, 20)
    with caplog.at_level(logging.INFO, logger="edgecl.runtime.learner"):
        sup._follow_rounds_elsewhere(memory)
    # 13..20 (v0012's) are learnt again by the next round but do not count; 21..23 do
    assert sup.state.new_samples == 3 and sup.state.new_classes
    assert ("the next round learns again the 8 sample(s) the versions it retired had learnt, "
            "and starts when new ones arrive (learner.trigger_new_samples: 100) or on 'edgecl "
            "learn'; 3 stored since count towards it") in caplog.text
    restarted = supervisor(registry)  # a restart holds them back too
    assert restarted._seen_max_id == 20


def test_the_classes_a_promoted_round_could_not_measure_are_named():
    """A device started from a Car/OtherVehicle checkpoint and taught Person: its rounds were
    promoted on Person alone while Car went unmeasured, said only in a report's footnote."""
    from edgecl.continual.round_state import RoundResult, RoundStatus
    from edgecl.runtime.learner import unguarded_classes

    names = {0: "Car", 1: "OtherVehicle", 2: "Person"}
    result = RoundResult(status=RoundStatus.PROMOTED, classes=[0, 1, 2],
                         per_task={"Person": 0.0, "OtherVehicle": None})
    assert unguarded_classes(result, names) == ["Car", "OtherVehicle"]
    assert unguarded_classes(RoundResult(status=RoundStatus.PROMOTED, classes=[0, 1, 2],
                                         per_task={"t1": 0.3}), names) == []  # a task view
    assert unguarded_classes(RoundResult(status=RoundStatus.PROMOTED, classes=[0, 2],
                                         per_task={"Car": 0.2, "Person": 0.1}), names) == []


def test_a_round_the_lock_keeps_from_running_is_a_skip_not_a_failure(tmp_path, caplog):
    """Before: 'learning round failed: learner process ended with exit code 0 and no result'
    (an ERROR, counted towards the back-off) when 'edgecl learn' held the round lock."""
    from edgecl.runtime.learner import round_lock

    caplog.set_level(logging.INFO)
    sup = LearnerSupervisor(load_config(None, [f"state_dir={tmp_path}"]), FakeRegistry())
    with round_lock(tmp_path) as held:  # 'edgecl learn' runs its round
        assert held
        sup.start_round("interval")  # a real learner process, which finds the lock taken
        sup.wait(timeout_s=120)
    assert not sup.busy
    assert ("learning round skipped: another learning round is running on this state directory "
            "('edgecl learn', say)") in caplog.text
    assert "failed" not in caplog.text and sup._same_failures == 0


def test_the_start_says_the_samples_a_rollback_gave_back(tmp_path, monkeypatch, caplog):
    """Before: '5 training sample(s) stored before this start and not learnt yet count towards
    the next round', and the round then learnt 202 (those a rollback gave back among them)."""
    import numpy as np

    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round_state import LearnerState, save_state

    caplog.set_level(logging.INFO)
    cfg = load_config(None, [f"state_dir={tmp_path}"])
    memory = ReplayMemory(tmp_path / "memory", cfg.memory)
    labels = np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32)
    ids = [memory.add(Sample(np.full((16, 16, 3), i, np.uint8), labels, task="stream",
                             source=f"s{i}", ts_s=float(i) * 100)) for i in range(12)]
    training = {r.id for r in memory.records(held_out=False)}
    given_back = len(training & set(ids[1:5]))
    after = len(training & set(ids[5:]))
    assert given_back and after
    # rolled back: the serving version learnt ids[0]; the retired ones had learnt up to ids[4]
    save_state(tmp_path, LearnerState(round=3, last_sample_id=ids[0], trigger_from_id=ids[4]))
    sink = FakeSink([], own_ids=[])
    sink.memory = memory
    sup = LearnerSupervisor(cfg, FakeRegistry(), memory_sink=sink, known_classes={0})
    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: None)
    sup.tick()
    assert (f"the next round also learns again the {given_back} training sample(s) a rollback "
            f"gave back" in caplog.text)
    assert f"{after} training sample(s) stored before this start and not learnt yet" in caplog.text
    memory.close()


def test_a_round_killed_by_the_oom_killer_gives_its_samples_back_and_runs_again(tmp_path,
                                                                              monkeypatch,
                                                                              caplog):
    """Before: a learner killed with SIGKILL ('exit code -9 and no result') had reset the
    trigger's count when it started, so its 36 unlearnt samples started no round until new
    samples arrived or a restart, and the console showed no alert."""
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.trigger_new_samples=5",
                             "learner.trigger_interval_s=0"])
    rows = [SimpleNamespace(id=i, held_out=False, classes=(0,)) for i in range(1, 37)]
    sink = FakeSink([])
    sink.memory = type("M", (), {
        "ids": lambda self, held_out=None: [r.id for r in rows],
        "records": lambda self, ids=None, held_out=None: [
            r for r in rows + [_boxed(99)] if (ids is None or r.id in ids)
            and (held_out is None or r.held_out == held_out)],
        "change_signature": lambda self: (37, 37)})()
    sup = LearnerSupervisor(cfg, FakeRegistry(), memory_sink=sink, known_classes={0})
    started = []

    def spawn(reason, ceiling):
        started.append((reason, ceiling))
        return Ended(-9)

    monkeypatch.setattr(sup, "_spawn", spawn)
    caplog.set_level(logging.INFO)
    sup.tick()  # counts the 36 samples stored before, starts a round
    assert started == [("new_samples", 36)]
    sup._finish()  # the process is gone: the round failed
    assert ("learning round failed: learner process was killed (SIGKILL: on a device most often "
            "the kernel's out-of-memory killer; lower learner.batch or learner.imgsz, or add "
            "swap) and sent no result; detection goes on with") in caplog.text
    assert "its 36 training sample(s) count towards the next round" in caplog.text
    assert sup.health()["last_failure"].startswith("the last learning round failed: learner "
                                                   "process was killed (SIGKILL")
    sup.tick()  # the next tick starts the round again
    assert [reason for reason, _ in started] == ["new_samples", "new_samples"]
