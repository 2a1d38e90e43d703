"""Learner bookkeeping: task order, classes introduced per task, atomic state file."""

from collections import namedtuple

import pytest

from edgecl.continual.round_state import LearnerState, load_state, save_state, update_task_bookkeeping

Rec = namedtuple("Rec", "id task classes")


def test_task_order_and_introduced_classes():
    st = LearnerState()
    update_task_bookkeeping(st, [Rec(3, "t2", (2, 3)), Rec(1, "t1", (0, 1)), Rec(4, "t2", (0, 2))])
    assert st.task_order == ["t1", "t2"]
    # t2 also shows class 0, but t1 introduced it first
    assert st.task_classes == {"t1": [0, 1], "t2": [2, 3]}


def test_learnt_task_classes_are_frozen(tmp_path):
    st = LearnerState(task_order=["t1"], learnt_tasks=["t1"], task_classes={"t1": [0, 1]})
    update_task_bookkeeping(st, [Rec(9, "t1", (0, 1, 5)), Rec(10, "t2", (2,))])
    assert st.task_classes == {"t1": [0, 1], "t2": [2]}
    save_state(tmp_path, st)
    assert load_state(tmp_path) == st
    (tmp_path / "learner" / "state.json").write_text("{broken")
    assert load_state(tmp_path) == LearnerState()


def test_the_stream_task_gains_classes_taught_after_it_was_learnt():
    # a deployment: one task, learnt at round 1 with car and truck; a person then labels a
    # bicycle (class 3): it must be evaluated (held-out), gated and monitored from now on
    st = LearnerState(task_order=["stream"], learnt_tasks=["stream"], task_classes={"stream": [0, 1]})
    update_task_bookkeeping(st, [Rec(1, "stream", (0,)), Rec(7, "stream", (3, 1))])
    assert st.task_classes == {"stream": [0, 1, 3]}


def test_the_stream_task_does_not_take_a_class_a_task_introduced():
    # a camera's frames came first (stream learnt: car); then a benchmark task t2 introduces
    # bicycle (2), which a later camera frame also shows: bicycle stays t2's
    st = LearnerState(task_order=["stream", "t2"], learnt_tasks=["stream"],
                      task_classes={"stream": [0]})
    update_task_bookkeeping(st, [Rec(1, "stream", (0,)), Rec(5, "t2", (2,)), Rec(9, "stream", (2, 3))])
    assert st.task_classes == {"stream": [0, 3], "t2": [2]}


@pytest.mark.parametrize("text", ["[]", '{"last_sample_id": "x"}', '{"round": -1}',
                                  '{"task_order": [1]}', '{"task_classes": {"t": ["a"]}}',
                                  "[" * 100_000, "\xff"])
def test_a_damaged_progress_file_reads_as_a_fresh_state_with_a_warning(tmp_path, text, caplog):
    from edgecl.continual.round_state import LearnerState, load_state, state_path

    state_path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    state_path(tmp_path).write_text(text, encoding="latin-1")
    with caplog.at_level("WARNING"):
        assert load_state(tmp_path) == LearnerState()
    assert "unreadable" in caplog.text


def _version(models, name, state=None, **extra):
    import json

    (models / name).mkdir(parents=True)
    manifest = dict(extra, version=name)
    if state is not None:
        from dataclasses import asdict

        manifest["learner_state"] = asdict(state)
    (models / name / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", [None, "", "\x00" * 64, '{"round": 3, "last_sample'])
def test_a_lost_progress_file_is_restored_from_the_model_versions(tmp_path, caplog, damage):
    """state.json deleted or damaged on a device with versions: the next round reused round 1
    and learnt all 54 samples again, and the monitor named an older version as serving."""
    import os

    from edgecl.continual.round_state import state_path

    models = tmp_path / "models"
    _version(models, "v0001", LearnerState(round=1, last_sample_id=20, task_order=["stream"],
                                           learnt_tasks=["stream"], task_classes={"stream": [0]}),
             status="retired")
    served = LearnerState(round=3, last_sample_id=54, task_order=["stream"],
                          learnt_tasks=["stream"], task_classes={"stream": [0, 4]})
    _version(models, "v0003", served, status="promoted")
    # rejected: a round number, no samples
    _version(models, "v0004", LearnerState(round=4, last_sample_id=54), status="rejected")
    _version(models, "v0002", status="retired")  # added by hand: records nothing
    # staged and not handled yet: its progress is adopted when it is promoted, not here
    _version(models, "v0005", LearnerState(round=5, last_sample_id=60), status="staged")
    os.symlink("v0003", models / "current")
    if damage is not None:
        state_path(tmp_path).parent.mkdir(parents=True)
        state_path(tmp_path).write_text(damage)
    with caplog.at_level("WARNING"):
        restored = load_state(tmp_path)
    assert restored == LearnerState(round=4, last_sample_id=54, task_order=["stream"],
                                    learnt_tasks=["stream"], task_classes={"stream": [0, 4]})
    assert "restored from the model versions' manifests (round 4; samples up to 54 learnt by " \
           "v0003, the serving version)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert load_state(tmp_path) == restored  # saved: said once
    assert caplog.text == ""
    state_path(tmp_path).unlink()
    # a hand-added model serving: its samples are all new to it, the round numbers still go on
    os.unlink(models / "current")
    os.symlink("v0002", models / "current")
    assert load_state(tmp_path) == LearnerState(round=4)


def test_a_new_device_starts_fresh_without_a_warning(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        assert load_state(tmp_path) == LearnerState()
        (tmp_path / "models").mkdir()
        assert load_state(tmp_path) == LearnerState()
    assert caplog.text == ""


def test_progress_past_the_memorys_last_id_is_reset_so_rounds_fall_due_again(tmp_path, caplog):
    """Before: learner/state.json saying samples up to 900 were learnt, in a memory that gave ids
    up to 101 (a memory replaced or started afresh, a digit changed), kept every sample 'learnt':
    'no new labelled samples', round after round, unsaid."""
    from edgecl.continual.round_state import progress_within_memory

    save_state(tmp_path, LearnerState(round=4, last_sample_id=900, task_order=["stream"]))
    state = load_state(tmp_path)
    assert progress_within_memory(tmp_path, state, 900) is state  # consistent: left alone
    with caplog.at_level("WARNING"):
        fixed = progress_within_memory(tmp_path, state, 101)
    assert (fixed.last_sample_id, fixed.round, fixed.task_order) == (0, 4, ["stream"])
    assert load_state(tmp_path).last_sample_id == 0  # saved: said once
    assert ("says samples up to id 900 were learnt, but the replay memory has given ids up to "
            "101 only") in caplog.text


def test_a_round_and_the_runtime_learn_again_what_a_progress_past_the_memory_hid(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from edgecl.config import load_config
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round import _open_round
    from edgecl.runtime.learner import LearnerSupervisor

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    with ReplayMemory(tmp_path / "memory", cfg.memory, names={0: "car"}) as memory:
        for k in range(8):
            memory.add(Sample(np.full((32, 32, 3), 30 * k, np.uint8),
                              np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="stream",
                              source=f"s{k}"))
        save_state(tmp_path, LearnerState(round=2, last_sample_id=900))
        sink = SimpleNamespace(memory=memory, closed=False)
        sup = LearnerSupervisor(cfg, SimpleNamespace(current=lambda: None), memory_sink=sink)
        assert sup._seen_max_id == 0  # the runtime counts the samples as new
        training = memory.ids(held_out=False)
    save_state(tmp_path, LearnerState(round=2, last_sample_id=900))
    ctx = _open_round(cfg, None)
    assert ctx is not None and [r.id for r in ctx.new_records] == sorted(training)
    assert len(training) >= 6


def test_a_round_leaves_out_samples_whose_class_the_registry_does_not_name(tmp_path, caplog):
    """Before: a label edited to class 9 (the device names 0 car, 1 truck) grew the next round's
    model to 10 classes named class2 .. class9. Left out with one warning, kept in the memory
    (a memory whose own class names were cut must not lose healthy samples either)."""
    import sqlite3

    import numpy as np

    from edgecl.config import load_config
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round import _open_round
    from edgecl.models.classes import ClassRegistry

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    ClassRegistry(tmp_path).seed({0: "car", 1: "truck"})
    with ReplayMemory(tmp_path / "memory", cfg.memory, names={0: "car", 1: "truck"}) as memory:
        ids = [memory.add(Sample(np.full((32, 32, 3), 30 * k, np.uint8),
                                 np.array([[k % 2, 0.5, 0.5, 0.2, 0.2]], np.float32),
                                 task="stream", source=f"s{k}")) for k in range(8)]
        training = memory.ids(held_out=False)
    edited = training[0]
    (tmp_path / "memory" / "labels" / f"{edited:08d}.txt").write_text("9 0.5 0.5 0.2 0.2\n")
    conn = sqlite3.connect(tmp_path / "memory" / "index.sqlite")
    conn.execute("UPDATE samples SET classes='[9]', primary_class=9 WHERE id=?", (edited,))
    conn.execute("UPDATE meta SET value='{\"0\": \"car\"}' WHERE key='names'")  # names cut
    conn.commit()
    conn.close()
    with caplog.at_level("WARNING"):
        ctx = _open_round(cfg, None)
    assert sorted(r.id for r in ctx.new_records) == sorted(training[1:])
    assert (f"1 sample(s) hold a class id that the class registry does not name (sample {edited}: "
            f"class id 9; the registry names 2 classes)") in caplog.text
    with ReplayMemory(tmp_path / "memory", cfg.memory) as memory:
        assert sorted(memory.ids()) == sorted(i for i in ids if i is not None)  # nothing lost


def test_a_folder_where_the_progress_file_belongs_stops_a_round_before_it_trains(tmp_path):
    """Before: every 'edgecl learn' trained, staged a version, then failed saving its progress
    with a 27-line traceback (IsADirectoryError), one staged version more each retry."""
    import pytest

    from edgecl.continual.round_state import load_state, state_path
    from edgecl.errors import StorageError

    state_path(tmp_path).mkdir(parents=True)
    with pytest.raises(StorageError) as err:
        load_state(tmp_path)
    assert str(err.value) == (f"learner progress {state_path(tmp_path)} is a folder, not a file: "
                              f"remove it (the progress is restored from the model versions' "
                              f"manifests)")


def _serving_version_that_learnt_up_to_9(state_dir):
    """A registry whose current version recorded its progress (round 2, samples up to 9), and
    the learner's folder, for a progress file to be restored from it."""
    from edgecl.continual.round_state import state_path
    from edgecl.models.registry import Registry

    src = state_dir / "m.onnx"
    src.write_bytes(b"x")
    registry = Registry(state_dir / "models")
    registry.promote(registry.stage({"model.onnx": src}, {"learner_state": {
        "round": 2, "last_sample_id": 9}}))
    state_path(state_dir).parent.mkdir(parents=True, exist_ok=True)


def test_a_damaged_progress_file_is_kept_beside_its_repair(tmp_path):
    """Before: garbage in learner/state.json was overwritten by the restored progress."""
    from edgecl.continual.round_state import state_path

    _serving_version_that_learnt_up_to_9(tmp_path)
    state_path(tmp_path).write_bytes(b"\x00garbage")
    assert load_state(tmp_path).last_sample_id == 9
    kept = [p for p in state_path(tmp_path).parent.iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == b"\x00garbage"
    assert load_state(tmp_path).last_sample_id == 9 and len(list(
        p for p in state_path(tmp_path).parent.iterdir() if ".corrupt-" in p.name)) == 1


def test_a_progress_file_this_user_may_not_read_is_left_as_it_is(tmp_path, monkeypatch, caplog):
    """Before: 'unreadable: [Errno 13] Permission denied', and the file was renamed
    state.json.corrupt-<time> as if it were damaged."""
    import errno
    from pathlib import Path

    from edgecl.continual.round_state import state_path

    _serving_version_that_learnt_up_to_9(tmp_path)
    state_path(tmp_path).write_text('{"round": 2, "last_sample_id": 9}')
    real = Path.read_text

    def denied(self, *args, **kwargs):
        if self == state_path(tmp_path):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    with caplog.at_level("WARNING"):
        assert load_state(tmp_path).last_sample_id == 9
    assert sorted(p.name for p in state_path(tmp_path).parent.iterdir()) == ["state.json"]
    assert "a permission problem, not damage, so it is left as it is" in caplog.text


def test_a_class_held_out_only_is_not_evaluated_before_any_round_trained_on_it(tmp_path):
    """Before: a class whose every sample so far went to the held-out slice (a new class's
    first labelled frame) entered evaluation untrained; its first row, about 0, then counted as
    'just learnt' and inflated BWT by its later AP."""
    import sqlite3

    import numpy as np

    from edgecl.config import load_config
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round import _open_round
    from edgecl.models.classes import ClassRegistry

    cfg = load_config(None, [f"state_dir={tmp_path}"])
    ClassRegistry(tmp_path).seed({0: "car", 1: "truck"})
    with ReplayMemory(tmp_path / "memory", cfg.memory, names={0: "car", 1: "truck"}) as memory:
        for k in range(8):
            memory.add(Sample(np.full((32, 32, 3), 30 * k, np.uint8),
                              np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="stream",
                              source=f"car{k}"))
        truck = memory.add(Sample(np.full((32, 32, 3), 250, np.uint8),
                                  np.array([[1, 0.5, 0.5, 0.2, 0.2]], np.float32), task="stream",
                                  source="truck0"))
    conn = sqlite3.connect(tmp_path / "memory" / "index.sqlite")
    conn.execute("UPDATE samples SET held_out=1 WHERE id=?", (truck,))  # its one frame held out
    conn.commit()
    conn.close()
    ctx = _open_round(cfg, None)
    assert ctx.state.task_order == ["stream"]
    assert ctx.state.task_classes == {"stream": [0]}  # truck: once a round trains on it


def test_the_learner_folder_is_not_made_where_the_state_directory_went_away(tmp_path):
    """Before: a round's lock made STATE/learner, and with it a new, empty state directory, at
    the path of one moved or deleted under the running runtime."""
    from edgecl.continual.round_state import learner_dir
    from edgecl.errors import describe_os_error

    assert learner_dir(tmp_path) == tmp_path / "learner" and (tmp_path / "learner").is_dir()
    gone = tmp_path / "moved-away"
    with pytest.raises(FileNotFoundError) as info:
        learner_dir(gone)
    assert describe_os_error(info.value) == (f"the state directory is not there (moved or "
                                             f"deleted): no round runs in it: {gone}")
    assert not gone.exists()
