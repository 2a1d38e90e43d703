"""The acceptance gate, with hand-computed verdicts."""

import math

from edgecl.config import GateConfig
from edgecl.continual.gate import judge

CFG = GateConfig(max_forgetting=0.10, min_acc_delta=-0.02)


def test_first_model_needs_only_a_finite_acc():
    v = judge(None, {"t1": 0.4}, [], CFG)
    assert v.accepted and v.acc_candidate == 0.4 and math.isnan(v.acc_parent)
    assert not judge(None, {}, [], CFG).accepted


def test_forgetting_beyond_bound_rejects_naming_the_task():
    # t1 drops 0.50 -> 0.35 = 0.15 > 0.10; t2 drops 0.40 -> 0.38 = 0.02
    v = judge({"t1": 0.50, "t2": 0.40}, {"t1": 0.35, "t2": 0.38, "t3": 0.60}, ["t1", "t2"], CFG)
    assert not v.accepted and "task t1 forgot 0.150" in v.reason
    assert v.drops == {"t1": 0.15, "t2": 0.02}


def test_acc_fall_rejects():
    # parent ACC (0.5 + 0.5) / 2 = 0.5; candidate (0.45 + 0.49) / 2 = 0.47: change -0.03 < -0.02
    v = judge({"t1": 0.5, "t2": 0.5}, {"t1": 0.45, "t2": 0.49}, ["t1", "t2"], CFG)
    assert not v.accepted and "ACC fell" in v.reason


def test_new_task_learnt_with_small_forgetting_is_accepted():
    # parent: t1 0.6, t2 (new) 0.0 -> ACC 0.3; candidate t1 0.55, t2 0.4 -> ACC 0.475
    v = judge({"t1": 0.6, "t2": 0.0}, {"t1": 0.55, "t2": 0.4}, ["t1"], CFG)
    assert v.accepted and abs(v.acc_candidate - 0.475) < 1e-9 and v.drops == {"t1": 0.05}


def test_training_failure_rejects():
    v = judge({"t1": 0.6}, {"t1": 0.6}, ["t1"], CFG, training_failed="nan_loss")
    assert not v.accepted and "nan_loss" in v.reason
