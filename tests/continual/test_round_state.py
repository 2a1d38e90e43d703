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
