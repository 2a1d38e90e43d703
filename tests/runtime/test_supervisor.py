"""The learner supervisor's containment: failures back off, a failing promotion is retried and
then dropped, a round staged before a kill is promoted at the next start, and the runtime's
supervisor steps never stop detection."""

import time

import pytest

from edgecl.config import load_config
from edgecl.continual.round_state import RoundResult, RoundStatus
from edgecl.errors import RegistryError
from edgecl.runtime import learner as learner_mod
from edgecl.runtime.learner import BACKOFF_AFTER, LearnerSupervisor


class FakeRegistry:
    def __init__(self, fail_promotions=0):
        self.fail_promotions = fail_promotions
        self.promoted = []
        self.pruned = 0

    def current(self):
        return self.promoted[-1] if self.promoted else None

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
    sink.memory = type("M", (), {"ids": lambda self, held_out=None: [1]})()
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
    held = []
    sink.memory = type("M", (), {"ids": lambda self, held_out=None: list(held) if held_out else [1]})()
    sup = LearnerSupervisor(cfg, FakeRegistry(), memory_sink=sink, known_classes={0})
    spawned = []
    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: spawned.append(reason))
    sup.tick()
    sup.tick()
    assert spawned == []  # the gate could not judge a candidate: nothing spawned
    held.append(9)  # a held-out sample arrives (no new class, no new sample counted)
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
    monkeypatch.setattr(sup, "_no_held_out_yet", lambda: False)
    sup.tick()
    assert spawned == ["new_class"]
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


@pytest.mark.parametrize("clock_step_s", [-3600.0, 0.0, 3600.0])
def test_only_the_result_of_the_round_it_started_is_handled(supervisor, tmp_path, monkeypatch,
                                                           clock_step_s):
    from edgecl.atomic import atomic_write_json

    registry = FakeRegistry()
    sup = supervisor(registry)

    class Ended:
        pid, exitcode = 0, 1

        def is_alive(self):
            return False

    monkeypatch.setattr(sup, "_spawn", lambda reason, ceiling: Ended())
    path = learner_mod.learner_dir(tmp_path) / "last_round.json"
    # an earlier session's result, written "later" by a clock that has since gone back
    atomic_write_json(path, RoundResult(RoundStatus.STAGED, version="v0007", round=7,
                                        started_s=time.time() + 86400,
                                        round_id="earlier").to_json())
    sup.start_round("interval")
    sup._finish()  # the process died without writing a result
    assert registry.promoted == [] and sup._last_failure.endswith("and no result")
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
