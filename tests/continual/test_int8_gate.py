"""The INT8 gate on hand-made per-class mAP figures."""

import math

from edgecl.continual.int8_gate import judge_int8

NAMES = {0: "car", 1: "person"}


def test_accepts_when_every_class_is_within_the_drop():
    v = judge_int8({0: 0.412, 1: 0.300}, {0: 0.405, 1: 0.305}, 0.01, NAMES)
    assert v.accepted
    assert v.drops == {"car": 0.007, "person": -0.005}
    assert v.reason == "every class within 0.01 of FP32 (largest drop 0.007, class car)"
    assert v.to_manifest()["accepted"] is True


def test_drop_exactly_at_the_limit_passes():
    assert judge_int8({0: 0.5}, {0: 0.49}, 0.01, NAMES).accepted


def test_rejects_on_one_class_even_if_the_mean_is_fine():
    v = judge_int8({0: 0.412, 1: 0.300}, {0: 0.391, 1: 0.330}, 0.01, NAMES)
    assert not v.accepted
    assert v.reason == "class car: mAP50-95 0.412 -> 0.391 (drop 0.021 > 0.01)"


def test_reason_names_the_worst_class_and_counts_the_others():
    v = judge_int8({0: 0.5, 1: 0.5, 2: 0.5}, {0: 0.47, 1: 0.40, 2: 0.5}, 0.01, NAMES)
    assert not v.accepted
    assert v.reason == "class person: mAP50-95 0.500 -> 0.400 (drop 0.100 > 0.01) (and 1 more class(es))"


def test_missing_class_or_nan_is_a_refusal():
    v = judge_int8({0: 0.4, 1: 0.3}, {0: 0.4}, 0.01, NAMES)
    assert not v.accepted and v.reason == "class person: missing from the INT8 evaluation"
    assert not judge_int8({0: 0.4}, {0: math.nan}, 0.01, NAMES).accepted


def test_nothing_measured_is_a_refusal():
    v = judge_int8({}, {}, 0.01, NAMES)
    assert not v.accepted and "no held-out class" in v.reason


def test_class_ids_shown_without_names():
    assert judge_int8({7: 0.5}, {7: 0.3}, 0.05).reason.startswith("class 7:")


def test_a_drop_just_beyond_the_limit_reads_beyond_it():
    """Before: "drop 0.010 > 0.01" for a drop of 0.0101."""
    v = judge_int8({0: 0.5}, {0: 0.4899}, 0.01, NAMES)
    assert v.reason == "class car: mAP50-95 0.5000 -> 0.4899 (drop 0.0101 > 0.01)"


def test_the_largest_drop_of_an_accepted_int8_reads_within_the_limit():
    """Before: "every class within 0.0106 of FP32 (largest drop 0.011)"."""
    v = judge_int8({0: 0.5}, {0: 0.48942}, 0.0106, NAMES)  # a drop of 0.01058
    assert v.reason == "every class within 0.0106 of FP32 (largest drop 0.0106, class car)"


def test_a_model_that_detects_nothing_yet_is_accepted_as_not_judged():
    """Before: "every class within 0.01 of FP32 (largest drop 0.000, class person)" while
    FP32 and INT8 both scored 0.0 on every class: a check that could not fail read as passed."""
    v = judge_int8({0: 0.0, 1: 0.004}, {0: 0.0, 1: 0.0}, 0.01, NAMES)
    assert v.accepted and v.drops == {"car": 0.0, "person": 0.004}
    assert v.reason == ("not judged: FP32 itself scores at most 0.004 mAP50-95 on every class, "
                        "no more than the bound 0.01, so no drop could show (every round judges "
                        "again)")
    assert judge_int8({0: 0.011, 1: 0.0}, {0: 0.011, 1: 0.0}, 0.01, NAMES).reason.startswith(
        "every class within 0.01 of FP32")
