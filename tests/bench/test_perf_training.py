"""``bench perf --while-training``: the background learner and what it leaves behind."""

import tempfile

from edgecl.bench.perf_training import fps_while_training


def test_the_background_learner_leaves_no_scenario_behind(tmp_path, monkeypatch):
    """Before: the learner made its scenario in a TemporaryDirectory of its own and was ended
    by SIGTERM, which runs no clean-up: every run left a 40-image scenario in /tmp. Its ratio
    was also named ``training_fraction``, which read as a share of time spent training."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    speeds = iter([200.0, 150.0])
    result = fps_while_training(lambda: next(speeds), imgsz=64)
    assert result["fps_idle"] == 200.0 and result["fps_while_training"] == 150.0
    assert result["fps_ratio_while_training"] == 0.75 and "training_fraction" not in result
    assert list(tmp_path.iterdir()) == []
