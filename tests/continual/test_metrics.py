"""Hand-computed checks of ACC, BWT and forgetting on small accuracy matrices."""

import math

import numpy as np
import pytest

from edgecl.continual.metrics import (
    acc,
    bwt,
    first_learnt_rows,
    forgetting,
    matrix_from_records,
    mean_forgetting,
    row_drop,
    summarize,
)

NAN = float("nan")

# Task-aligned 3x3: row i = after learning task i.
R3 = np.array([
    [0.8, NAN, NAN],
    [0.6, 0.9, NAN],
    [0.5, 0.7, 0.85],
])


def test_acc_3x3_each_row():
    # row 0: 0.8; row 1: (0.6 + 0.9) / 2 = 0.75; row 2: (0.5 + 0.7 + 0.85) / 3 = 2.05 / 3
    assert acc(R3, 0) == pytest.approx(0.8)
    assert acc(R3, 1) == pytest.approx(0.75)
    assert acc(R3) == pytest.approx(2.05 / 3)
    assert acc(R3, -1) == acc(R3, 2)


def test_bwt_3x3():
    # ((0.5 - 0.8) + (0.7 - 0.9)) / 2 = (-0.3 - 0.2) / 2 = -0.25
    assert bwt(R3) == pytest.approx(-0.25)


def test_forgetting_3x3():
    # task 0: max(0.8, 0.6) - 0.5 = 0.3; task 1: max(0.9) - 0.7 = 0.2; task 2: last, undefined
    f = forgetting(R3)
    assert f[0] == pytest.approx(0.3)
    assert f[1] == pytest.approx(0.2)
    assert math.isnan(f[2])
    # mean (0.3 + 0.2) / 2 = 0.25
    assert mean_forgetting(R3) == pytest.approx(0.25)


def test_forgetting_uses_the_best_earlier_value_not_the_just_learnt_one():
    R = np.array([
        [0.5, NAN, NAN],
        [0.9, 0.6, NAN],
        [0.7, 0.8, 0.4],
    ])
    # BWT: ((0.7 - 0.5) + (0.8 - 0.6)) / 2 = 0.2 (positive: backward transfer)
    assert bwt(R) == pytest.approx(0.2)
    # forgetting task 0: max(0.5, 0.9) - 0.7 = 0.2; task 1: max(0.6) - 0.8 = -0.2; mean 0.0
    f = forgetting(R)
    assert f[0] == pytest.approx(0.2)
    assert f[1] == pytest.approx(-0.2)
    assert mean_forgetting(R) == pytest.approx(0.0)


def test_2x2():
    R = np.array([[0.9, NAN], [0.4, 0.8]])
    assert acc(R) == pytest.approx(0.6)  # (0.4 + 0.8) / 2
    assert bwt(R) == pytest.approx(-0.5)  # 0.4 - 0.9
    assert forgetting(R)[0] == pytest.approx(0.5)  # 0.9 - 0.4
    assert mean_forgetting(R) == pytest.approx(0.5)


def test_single_task_has_zero_bwt_and_forgetting():
    R = np.array([[0.7]])
    assert acc(R) == pytest.approx(0.7)
    assert bwt(R) == 0.0
    assert mean_forgetting(R) == 0.0
    assert math.isnan(forgetting(R)[0])


def test_matrix_from_records_with_rounds_not_aligned_to_tasks():
    records = [
        (5, 2, 0.9), (1, 0, 0.6), (2, 0, 0.1), (2, 0, 0.8),  # the later (2, 0) record wins
        (3, 0, 0.7), (3, 1, 0.5), (5, 0, 0.4), (5, 1, 0.6),
    ]
    R, rounds, learnt = matrix_from_records(records)
    assert rounds == [1, 2, 3, 5]
    np.testing.assert_allclose(R, [
        [0.6, NAN, NAN],
        [0.8, NAN, NAN],
        [0.7, 0.5, NAN],
        [0.4, 0.6, 0.9],
    ])
    assert learnt.tolist() == [0, 2, 3]
    # ACC: (0.4 + 0.6 + 0.9) / 3 = 1.9 / 3; after round 2 only task 0: 0.8
    assert acc(R, learnt_rows=learnt) == pytest.approx(1.9 / 3)
    assert acc(R, 1) == pytest.approx(0.8)
    # BWT: task 0 just learnt in row 0 (0.6), task 1 in row 2 (0.5):
    # ((0.4 - 0.6) + (0.6 - 0.5)) / 2 = -0.05
    assert bwt(R, learnt) == pytest.approx(-0.05)
    # forgetting: task 0: max(0.6, 0.8, 0.7) - 0.4 = 0.4; task 1: max(0.5) - 0.6 = -0.1
    f = forgetting(R, learnt)
    assert f[:2] == pytest.approx([0.4, -0.1])
    assert mean_forgetting(R) == pytest.approx(0.15)


def test_explicit_learnt_rows_for_a_matrix_with_forward_evaluation():
    R = np.array([[0.5, 0.1], [0.4, 0.8]])  # task 1 was evaluated before it was learnt
    assert first_learnt_rows(R).tolist() == [0, 0]
    # with the true learnt rows [0, 1]: ACC row 0 = 0.5, BWT = 0.4 - 0.5 = -0.1
    assert acc(R, 0, learnt_rows=[0, 1]) == pytest.approx(0.5)
    assert bwt(R, learnt_rows=[0, 1]) == pytest.approx(-0.1)
    # the default rule would count task 1 as learnt in row 0: ((0.4-0.5) + (0.8-0.1)) / 2 = 0.3
    assert bwt(R) == pytest.approx(0.3)


def test_nan_in_last_row_is_left_out():
    R = np.array([[0.9, NAN], [NAN, 0.8]])  # task 0 not evaluated in the last row
    assert acc(R) == pytest.approx(0.8)
    assert bwt(R) == 0.0
    assert math.isnan(forgetting(R)[0])


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        acc(np.zeros(3))
    with pytest.raises(ValueError, match="out of range"):
        acc(R3, 3)
    with pytest.raises(ValueError, match="negative task index"):
        matrix_from_records([(0, -1, 0.5)])
    assert math.isnan(acc(np.full((1, 2), NAN)))
    empty = matrix_from_records([])
    assert empty.values.shape == (0, 0) and bwt(empty.values) == 0.0


# Class columns (deployment, no tasks): rows are rounds, columns car, drone, person.
# person first has held-out boxes in round 2; drone is not evaluated in round 2.
RC = np.array([
    [0.6, 0.4, NAN],
    [0.5, NAN, 0.3],
    [0.55, 0.2, 0.5],
])


def test_class_matrix_hand_computed():
    # ACC after round 3: (0.55 + 0.2 + 0.5) / 3; BWT over classes learnt before the last row:
    # car 0.55 - 0.6 = -0.05, drone 0.2 - 0.4 = -0.2, person 0.5 - 0.3 = +0.2 -> -0.05 / 3
    # forgetting: car max(0.6, 0.5) - 0.55 = 0.05; drone 0.4 - 0.2 = 0.2; person 0.3 - 0.5 = -0.2
    s = summarize(RC, ["car", "drone", "person"])
    assert s["acc"] == pytest.approx(1.25 / 3)
    assert s["bwt"] == pytest.approx(-0.05 / 3)
    assert s["forgetting"] == pytest.approx({"car": 0.05, "drone": 0.2, "person": -0.2})
    assert s["mean_forgetting"] == pytest.approx(0.05 / 3)
    assert summarize(np.zeros((0, 2)), ["a", "b"])["acc"] is None
    with pytest.raises(ValueError, match="column names"):
        summarize(RC, ["car"])


def test_row_drop():
    # last round vs the one before: car 0.5 - 0.55, drone NaN (not evaluated), person 0.3 - 0.5
    np.testing.assert_allclose(row_drop(RC), [-0.05, NAN, -0.2])
    # explicit reference row 0: car 0.6 - 0.55, drone 0.4 - 0.2, person NaN
    np.testing.assert_allclose(row_drop(RC, -1, ref=0), [0.05, 0.2, NAN])
    assert np.isnan(row_drop(RC[:1])).all()
    with pytest.raises(ValueError, match="out of range"):
        row_drop(RC, ref=5)


def test_most_forgotten_keeps_the_largest_drops_then_unknown_ties_by_name():
    from edgecl.continual.metrics import most_forgotten

    names = ["e", "b", "a", "d", "c"]
    amounts = [0.3, None, 0.3, float("nan"), 0.1]  # a and e tie: by name
    assert most_forgotten(names, amounts, 3) == [0, 2, 4]
    assert most_forgotten(names, amounts, 4) == [0, 1, 2, 4]  # b before d: unknown, by name
    assert most_forgotten(names, amounts, 9) == [0, 1, 2, 3, 4]
