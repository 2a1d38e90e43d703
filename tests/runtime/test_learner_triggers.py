"""When the supervisor starts a learning round."""

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
