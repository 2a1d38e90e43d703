"""A round of a deployment (every frame has the task ``stream``) replays the samples of earlier
rounds and baselines FAR's recall on the samples it learnt; a round waits for a held-out sample."""

from types import SimpleNamespace

import pytest

from edgecl.config import load_config
from edgecl.continual import round as round_mod
from edgecl.continual.memory import SampleRecord


def _record(i, task="stream", classes=(0,)):
    return SampleRecord(id=i, task=task, classes=tuple(classes), source="", ts_s=0.0, bytes=1,
                        held_out=False, recall_baseline=None, last_recall=None,
                        last_loss=None, times_replayed=0, width=8, height=8)


class _Snapshot:
    def __init__(self, rows):
        self.rows = rows

    def records(self, ids=None, held_out=None, task=None):
        return [r for r in self.rows if task is None or r.task == task]

    def get(self, ids):
        return [SimpleNamespace(id=i, labels=None, load_image=lambda: "pixels") for i in ids]

    def set_recall_baseline(self, ids, values):
        self.baselined = list(ids)


@pytest.mark.parametrize("task, expected", [("stream", [0, 1, 2, 3]), ("t2", [])])
def test_a_deployment_round_replays_the_samples_of_earlier_rounds(task, expected):
    from edgecl.ultra import build_detection_model

    # ids 0-3 were learnt by earlier rounds, 4-5 are new; in deployment all share one task.
    # With tasks (benchmarks), samples of the task being learnt are not replayed.
    rows = [_record(i, task=task) for i in range(6)]
    cfg = load_config(None, ["replay.strategy=class_balanced", "replay.samples=10"])
    ctx = SimpleNamespace(cfg=cfg, snapshot=_Snapshot(rows), new_records=rows[4:],
                          state=SimpleNamespace(learnt_tasks=[task], round=1))
    model = build_detection_model(1, names={0: "car"})
    assert sorted(round_mod.select_replay(ctx, model, {0: "car"}, model)) == expected


@pytest.mark.parametrize("task, expected", [("stream", [4, 5]), ("t2", [0, 1, 2, 3, 4, 5])])
def test_far_baselines_in_a_deployment_are_the_round_s_new_samples(task, expected, monkeypatch):
    import numpy as np

    from edgecl.continual import recall

    monkeypatch.setattr(recall, "batch_recall", lambda det, images, labels: np.ones(len(images)))
    monkeypatch.setattr(round_mod, "_backend", lambda *a, **k: None)
    rows = [_record(i, task=task) for i in range(6)]
    snapshot = _Snapshot(rows)
    ctx = SimpleNamespace(cfg=load_config(None, []), snapshot=snapshot, new_records=rows[4:])
    round_mod._set_far_baselines(ctx, None, {0: "car"})
    # in a deployment the whole memory is one task: re-measuring it all at every accepted
    # round would cost a pass over memory and overwrite older samples' baselines
    assert snapshot.baselined == expected


def test_far_baselines_with_stream_and_task_samples_in_one_round(monkeypatch):
    import numpy as np

    from edgecl.continual import recall

    monkeypatch.setattr(recall, "batch_recall", lambda det, images, labels: np.ones(len(images)))
    monkeypatch.setattr(round_mod, "_backend", lambda *a, **k: None)
    # ids 0-2 old stream frames, 3-4 a task's frames, 5 (stream) and 4 (t2) new this round
    rows = [_record(i) for i in range(3)] + [_record(3, task="t2"), _record(4, task="t2"),
                                             _record(5)]
    snapshot = _Snapshot(rows)
    ctx = SimpleNamespace(cfg=load_config(None, []), snapshot=snapshot,
                          new_records=[rows[4], rows[5]])
    round_mod._set_far_baselines(ctx, None, {0: "car"})
    assert snapshot.baselined == [3, 4, 5]


def test_a_round_waits_until_the_gate_has_a_held_out_sample(tmp_path):
    import numpy as np

    from edgecl.continual.memory import Sample, memory_from_config
    from edgecl.continual.round_state import RoundStatus
    from edgecl.models.registry import Registry

    cfg = load_config(None, [f"state_dir={tmp_path}", "memory.capacity=20",
                             "memory.holdout_fraction=0.05"])
    box = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)
    with memory_from_config(cfg) as memory:
        for i in range(3):
            memory.add(Sample(np.full((32, 32, 3), 40 * i, np.uint8), box, task="stream"))
        assert len(memory.ids(held_out=False)) == 3 and not memory.ids(held_out=True)
    result = round_mod.run_round(cfg, "new_samples")
    assert result.status is RoundStatus.SKIPPED and "no held-out sample yet" in result.reason
    assert Registry(tmp_path / "models").versions() == []  # nothing trained, nothing staged


def test_recent_ap_loss_follows_the_promoted_chain(tmp_path):
    from edgecl.models.registry import Registry

    reg = Registry(tmp_path / "models")
    for i, steps in enumerate([{"car": 0.5}, {"car": 0.05}, {"car": 0.04, "person": "x"},
                               {"car": 0.03}]):
        pt = tmp_path / f"m{i}.pt"
        pt.write_bytes(b"w%d" % i)
        reg.promote(reg.stage({"model.pt": pt}, {"metrics": {"gate_steps": steps}}))
    # window 3: the last three promoted versions' steps sum to 0.12 (0.5 is outside the window;
    # the tampered "x" is ignored)
    assert round_mod.recent_losses(reg, 3)["prior_loss"] == pytest.approx({"car": 0.12})
    assert round_mod.recent_losses(reg, 0)["prior_loss"] == {}
    reg.rollback()  # the user rolls back v0004: its step no longer counts
    assert round_mod.recent_losses(reg, 3)["prior_loss"] == pytest.approx({"car": 0.59})


def test_recent_losses_read_ap_and_serving_recall_steps_apart(tmp_path):
    from edgecl.models.registry import Registry

    reg = Registry(tmp_path / "models")
    for i, (ap, recall) in enumerate([({"car": 0.02}, {"car": 0.1}), ({"car": 0.01},
                                                                      {"car": 0.15})]):
        pt = tmp_path / f"m{i}.pt"
        pt.write_bytes(b"w%d" % i)
        reg.promote(reg.stage({"model.pt": pt}, {"metrics": {"gate_steps": ap,
                                                             "gate_recall_steps": recall,
                                                             "gate_false_positive_step": 0.4}}))
    assert round_mod.recent_losses(reg, 5) == {"prior_loss": pytest.approx({"car": 0.03}),
                                               "prior_recall_loss": pytest.approx({"car": 0.25}),
                                               "prior_false_positive_rise": pytest.approx(0.8)}


def test_recent_ap_loss_follows_a_class_by_id_across_a_rename(tmp_path):
    """Before: the steps were summed by the name each version recorded, so after
    'classes rename Car Vehicle' the gate saw Vehicle with no loss behind it (its bound reset),
    and a new class that took the name Car inherited Vehicle's loss."""
    from edgecl.models.registry import Registry

    reg = Registry(tmp_path / "models")
    for i, steps in enumerate([{"Car": 0.05, "Person": 0.01}, {"Car": 0.04}]):
        pt = tmp_path / f"m{i}.pt"
        pt.write_bytes(b"w%d" % i)
        reg.promote(reg.stage({"model.pt": pt}, {"classes": {"0": "Car", "1": "Person"},
                                                 "metrics": {"gate_steps": steps}}))
    now = {0: "Vehicle", 1: "Person", 2: "Car"}  # renamed, then a new class took the name
    assert round_mod.recent_losses(reg, 3, now)["prior_loss"] == pytest.approx(
        {"Vehicle": 0.09, "Person": 0.01})
    assert round_mod.recent_losses(reg, 3)["prior_loss"] == pytest.approx(
        {"Car": 0.09, "Person": 0.01})


def test_recorded_steps_that_no_round_could_have_made_are_passed_over(tmp_path):
    """Before: a 401-digit integer in a manifest's gate history failed every round with a
    traceback (OverflowError), and 1e308 was believed: every later round that lost any recall
    was vetoed, with a reason of 300-digit numbers."""
    import json

    from edgecl.models.registry import Registry

    reg = Registry(tmp_path / "models")
    for i, metrics in enumerate([
            {"gate_steps": {"car": 0.02}, "gate_recall_steps": {"car": 0.1},
             "gate_false_positive_step": 0.3},
            {"gate_steps": {"car": 10 ** 400, "bus": 2.0}, "gate_recall_steps": {"car": 1e308},
             "gate_false_positive_step": 1e308},
            {"gate_steps": {"car": float("inf")}, "gate_recall_steps": {"car": True},
             "gate_false_positive_step": "0.5"}]):
        pt = tmp_path / f"m{i}.pt"
        pt.write_bytes(b"w%d" % i)
        version = reg.stage({"model.pt": pt}, {})
        manifest = reg.root / version / "manifest.json"
        body = json.loads(manifest.read_text())
        text = json.dumps({**body, "metrics": metrics}).replace("Infinity", "1e999")
        manifest.write_text(text)
        reg.promote(version)
    assert round_mod.recent_losses(reg, 5) == {"prior_loss": pytest.approx({"car": 0.02}),
                                               "prior_recall_loss": pytest.approx({"car": 0.1}),
                                               "prior_false_positive_rise": pytest.approx(0.3)}


def test_a_device_rounds_line_says_where_its_new_samples_labels_came_from(tmp_path, monkeypatch,
                                                                          caplog):
    """Before: 'round 2: 16 new sample(s) from the stream', 11 of them imported."""
    import logging

    import numpy as np

    from edgecl.continual.memory import Sample, memory_from_config
    from edgecl.frames import LabelOrigin

    cfg = load_config(None, [f"state_dir={tmp_path}", "memory.capacity=40",
                             "memory.holdout_fraction=0.5"])
    box = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)
    with memory_from_config(cfg) as memory:
        for i in range(12):
            origin = LabelOrigin.IMPORT if i % 3 else LabelOrigin.OPERATOR
            memory.add(Sample(np.full((32, 32, 3), 20 * i, np.uint8), box, task="stream",
                              source=f"s{i}", origin=origin))
        learnt = memory.records(held_out=False)
        assert memory.ids(held_out=True)
    counts = {o: sum(r.origin.value == o for r in learnt) for o in ("import", "operator")}
    monkeypatch.setattr(round_mod, "_train_evaluate_stage", lambda *a, **k: "trained")
    with caplog.at_level(logging.INFO, logger="edgecl.continual.round"):
        assert round_mod.run_round(cfg, "new_samples") == "trained"
    assert (f"round 1: {len(learnt)} new sample(s) (import {counts['import']}, operator "
            f"{counts['operator']}) (trigger: new_samples)") in caplog.text
