"""A learning round on a full disk: a fault before its version is staged fails the round in
one line naming what and where; one after it leaves the version staged and lists what the
round could not write (the version holds it, and whoever applies the result writes it)."""

import errno
from types import SimpleNamespace

import pytest

from edgecl.config import load_config
from edgecl.continual import round as round_mod
from edgecl.continual.round_state import LearnerState, load_state
from edgecl.errors import StorageError


class Registry:
    def __init__(self):
        self.updates = []

    def update_manifest(self, version, fields):
        self.updates.append((version, fields))


def _ctx(tmp_path):
    return SimpleNamespace(cfg=load_config(None, [f"state_dir={tmp_path}"]), registry=Registry())


def _no_room(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/card/state/learner/state.json")


def test_a_full_disk_after_staging_leaves_the_round_staged_and_says_what_is_unsaved(
        tmp_path, monkeypatch, caplog):
    ctx = _ctx(tmp_path)

    def record(**kwargs):
        raise StorageError("metrics database /card/metrics.sqlite cannot be written: disk I/O error")

    def baselines(ctx, model, names):
        raise StorageError("cannot write the memory index: database or disk is full")

    monkeypatch.setattr(round_mod, "_set_far_baselines", baselines)
    monkeypatch.setattr(round_mod, "save_state", _no_room)
    figures, unsaved = round_mod._after_staging(
        ctx, "v0007", {"metrics": {}}, {"round_no": 7}, record, LearnerState(round=7),
        accepted_model=("model", {0: "car"}))
    assert figures == {} and unsaved == ["metrics", "progress"]
    assert ctx.registry.updates == [] and load_state(tmp_path).round == 0
    warnings = [r.getMessage() for r in caplog.records]
    assert any("round 7 (v0007) not recorded in the metrics database yet" in w for w in warnings)
    assert any("the learner's progress not saved" in w and "state.json" in w for w in warnings)
    assert "Traceback" not in caplog.text


def test_room_after_staging_writes_everything_and_other_faults_still_fail(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path)
    figures, unsaved = round_mod._after_staging(
        ctx, "v0001", {"metrics": {"map": 0.1}}, {"round_no": 1}, lambda **kw: {"acc": 0.5},
        LearnerState(round=1, last_sample_id=9), accepted_model=None)
    assert figures == {"acc": 0.5} and unsaved == []
    assert ctx.registry.updates == [("v0001", {"metrics": {"map": 0.1, "acc": 0.5}})]
    assert load_state(tmp_path).last_sample_id == 9

    def broken(**kwargs):
        raise KeyError("acc")  # a bug is not a full disk: the round fails as before

    with pytest.raises(KeyError):
        round_mod._after_staging(ctx, "v0002", {"metrics": {}}, {"round_no": 2}, broken,
                                 LearnerState(round=2), accepted_model=None)
