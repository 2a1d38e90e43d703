"""``edgecl learn`` on a full disk: what the round could not write after staging its version
is written from the version once the command promotes it."""

import dataclasses
import json

from edgecl.cli import main
from edgecl.continual.round_state import LearnerState, RoundResult, RoundStatus, load_state
from edgecl.models.registry import Registry


def test_learn_adopts_the_progress_a_full_disk_kept_the_round_from_saving(tmp_path, monkeypatch,
                                                                           capsys):
    from edgecl.runtime import learner

    state = tmp_path / "state"
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx")
    registry = Registry(state / "models")
    after = LearnerState(round=3, last_sample_id=57)
    version = registry.stage({"model.onnx": src}, {"memory_snapshot": "s",
                                                    "learner_state": dataclasses.asdict(after)})

    def round_on_a_full_card(cfg, reason, hold):
        return RoundResult(RoundStatus.STAGED, round=3, version=version, unsaved=["progress"])

    monkeypatch.setattr(learner, "run_learning_round", round_on_a_full_card)
    code = main(["learn", "--state-dir", str(state), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "promoted" and out["version"] == version
    assert Registry(state / "models").current() == version
    assert load_state(state).round == 3 and load_state(state).last_sample_id == 57
