"""Name-aligned FedAvg and the forgetting gate on hand-made tensors and reports."""

import numpy as np
import pytest

from edgecl.continual.federated import (
    Update,
    align_rows,
    fedavg_by_name,
    forgetting_gate,
    is_class_row_key,
    merge_names,
)

ROWS = "model.23.cv3.0.2.bias"
WROWS = "model.23.cv3.0.2.weight"
SHARED = "model.0.conv.weight"


def rows(values):
    return np.asarray(values, np.float32)


def test_class_row_keys_are_the_last_conv_of_each_class_branch():
    assert is_class_row_key("model.23.cv3.1.2.weight") and is_class_row_key("model.23.cv3.2.2.bias")
    assert is_class_row_key("model.23.one2one_cv3.0.2.bias")
    assert not is_class_row_key("model.23.cv3.0.0.0.conv.weight")
    assert not is_class_row_key("model.23.cv2.0.2.weight")  # box branch: shared
    assert not is_class_row_key("model.0.bn.running_mean")


def test_align_rows_by_name_with_fill():
    out = align_rows(rows([1, 2]), ["car", "dog"], ["dog", "cat", "car"], fill=rows([9, 9, 9]))
    assert out.tolist() == [2, 9, 1]
    with pytest.raises(ValueError):
        align_rows(rows([1]), ["car", "dog"], ["car"])


def test_merge_names_keeps_global_rows_and_appends_new_ones_in_order():
    assert merge_names(["car"], [["dog", "car"], ["cat", "dog"]]) == ["car", "dog", "cat"]


def test_heads_are_averaged_by_name_and_a_class_only_one_device_knows_takes_its_rows():
    # device a: [car, dog] with 100 samples; device b: [dog, bird] (other ids!) with 300
    a = Update("a", {SHARED: np.full((2, 2), 1.0, np.float32), ROWS: rows([1.0, 2.0]),
                     WROWS: rows([[1.0, 1.0], [2.0, 2.0]])}, ["car", "dog"], 100)
    b = Update("b", {SHARED: np.full((2, 2), 5.0, np.float32), ROWS: rows([10.0, 20.0]),
                     WROWS: rows([[10.0, 10.0], [20.0, 20.0]])}, ["dog", "bird"], 300)
    agg = fedavg_by_name([a, b], {}, [], max_forgetting=0.15)
    assert agg.names == ["car", "dog", "bird"]
    np.testing.assert_allclose(agg.arrays[SHARED], 0.25 * 1.0 + 0.75 * 5.0)   # by samples
    # car: only a knows it -> a's row; dog: both (a row 1, b row 0) -> weighted; bird: only b
    np.testing.assert_allclose(agg.arrays[ROWS], [1.0, 0.25 * 2.0 + 0.75 * 10.0, 20.0])
    np.testing.assert_allclose(agg.arrays[WROWS][:, 0], [1.0, 8.0, 20.0])
    assert agg.contributors == {"car": ["a"], "dog": ["a", "b"], "bird": ["b"]}
    assert agg.weights == {"a": 0.25, "b": 0.75}
    assert all(v.dtype == np.float32 for v in agg.arrays.values())


def test_a_global_class_nobody_sent_keeps_its_global_row():
    glob = {SHARED: np.zeros((2, 2), np.float32), ROWS: rows([7.0, 8.0])}
    up = Update("a", {SHARED: np.ones((2, 2), np.float32), ROWS: rows([3.0])}, ["dog"], 10)
    agg = fedavg_by_name([up], glob, ["cat", "dog"], max_forgetting=0.15)
    assert agg.names == ["cat", "dog"]
    np.testing.assert_allclose(agg.arrays[ROWS], [7.0, 3.0])


def test_rows_of_a_class_a_device_holds_no_box_of_are_not_averaged_in():
    """Every device's registry holds every fleet class after one round, so each update named
    them all: a device that never saw 'car' sent the global car row back, and the car rows of
    the device that learnt it were diluted to a half (1/N of a fleet). Now a device says which
    classes its training samples show ('held'), and only those rows are averaged."""
    glob = {SHARED: np.zeros((2, 2), np.float32), ROWS: rows([7.0, 8.0])}
    a = Update("a", {SHARED: np.ones((2, 2), np.float32), ROWS: rows([1.0, 8.0])},
               ["car", "person"], 100, held=frozenset({"car"}))
    b = Update("b", {SHARED: np.ones((2, 2), np.float32), ROWS: rows([7.0, 3.0])},
               ["car", "person"], 100, held=frozenset({"person"}))
    agg = fedavg_by_name([a, b], glob, ["car", "person"], max_forgetting=0.15)
    np.testing.assert_allclose(agg.arrays[ROWS], [1.0, 3.0])  # before: [4.0, 5.5]
    assert agg.contributors == {"car": ["a"], "person": ["b"]}
    # nobody holds a class: its global row stays; a class new to the fleet that no sender
    # holds gets a silent row: zero weights, bias -9 (before: its senders' untrained rows,
    # which scored 1.0 at every anchor; zeros would score 0.5)
    c = Update("c", {SHARED: np.ones((2, 2), np.float32), ROWS: rows([2.0, 6.0, 5.0]),
                     WROWS: np.full((3, 4, 1, 1), 0.7, np.float32)},
               ["car", "person", "truck"], 50, held=frozenset())
    agg = fedavg_by_name([c], {**glob, WROWS: np.full((2, 4, 1, 1), 0.2, np.float32)},
                         ["car", "person"], max_forgetting=0.15)
    np.testing.assert_allclose(agg.arrays[ROWS], [7.0, 8.0, -9.0])
    np.testing.assert_allclose(agg.arrays[WROWS][:, 0, 0, 0], [0.2, 0.2, 0.0])
    # before: truck, named in c's dataset only, was credited to c ("from {'truck': ['c']}")
    assert agg.contributors == {"car": [], "person": [], "truck": []}
    # a device of an older release says nothing: all its rows count, as before
    old = Update("o", {SHARED: np.ones((2, 2), np.float32), ROWS: rows([2.0, 6.0])},
                 ["car", "person"], 50)
    np.testing.assert_allclose(fedavg_by_name([old], glob, ["car", "person"],
                                              max_forgetting=0.15).arrays[ROWS], [2.0, 6.0])


def test_a_tensor_of_another_shape_is_left_out_and_reported():
    glob = {SHARED: np.zeros((2, 2), np.float32)}
    good = Update("a", {SHARED: np.ones((2, 2), np.float32)}, [], 10)
    odd = Update("b", {SHARED: np.ones((3, 2), np.float32)}, [], 10)
    agg = fedavg_by_name([good, odd], glob, [], max_forgetting=0.15)
    np.testing.assert_allclose(agg.arrays[SHARED], 1.0)
    assert agg.skipped_keys == {SHARED: ["b"]}


def test_forgetting_gate_drops_the_update_that_forgot_and_says_why():
    ups = [Update("a", {}, [], 10, forgetting={"car": 0.05, "dog": -0.1}),
           Update("b", {}, [], 10, forgetting={"car": 0.40}),
           Update("c", {}, [], 0),
           Update("d", {}, [], 10, forgetting={"cat": float("nan")})]
    dec = forgetting_gate(ups, 0.15, "drop")
    assert [d.factor for d in dec] == [1.0, 0.0, 0.0, 0.0]
    assert dec[0].reason == "a kept"
    assert dec[1].reason == "b dropped: class car forgot 0.400 AP50-95 (bound 0.15)"
    assert "no training sample" in dec[2].reason and "dropped" in dec[3].reason
    edge = forgetting_gate([Update("e", {}, [], 10, forgetting={"car": 0.1501})], 0.15, "drop")
    assert edge[0].reason == "e dropped: class car forgot 0.1501 AP50-95 (bound 0.15)"
    blind = forgetting_gate([Update("f", {}, [], 2, forgetting={})], 0.15, "drop")
    assert (blind[0].factor, blind[0].reason) == (1.0, "f kept, not screened: it measured no "
                                                       "class's forgetting")


def test_forgetting_gate_down_weights_in_proportion():
    dec = forgetting_gate([Update("b", {}, [], 10, forgetting={"car": 0.30})], 0.15, "downweight")
    assert dec[0].factor == pytest.approx(0.5) and "down-weighted x0.50" in dec[0].reason
    with pytest.raises(ValueError):
        forgetting_gate([], 0.15, "ignore")


def test_gated_aggregation_ignores_the_dropped_update():
    glob = {SHARED: np.zeros((1,), np.float32), ROWS: rows([0.0])}
    ok = Update("a", {SHARED: rows([1.0]), ROWS: rows([1.0])}, ["car"], 10)
    bad = Update("b", {SHARED: rows([100.0]), ROWS: rows([100.0, 5.0])}, ["car", "dog"], 10,
                 forgetting={"car": 0.9})
    agg = fedavg_by_name([ok, bad], glob, ["car"], max_forgetting=0.15)
    assert agg.names == ["car"]  # the dropped update's new class does not enter the fleet
    np.testing.assert_allclose(agg.arrays[SHARED], [1.0])
    np.testing.assert_allclose(agg.arrays[ROWS], [1.0])
    assert agg.weights == {"a": 1.0, "b": 0.0} and agg.decisions[1].dropped
