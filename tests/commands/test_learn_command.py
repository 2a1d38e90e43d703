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

    def round_on_a_full_card(cfg, reason, hold, **kw):
        return RoundResult(RoundStatus.STAGED, round=3, version=version, unsaved=["progress"])

    monkeypatch.setattr(learner, "run_learning_round", round_on_a_full_card)
    monkeypatch.setattr(learner, "promote_leftover_staged", lambda *a, **k: None)  # this run's
    code = main(["learn", "--state-dir", str(state), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "promoted" and out["version"] == version
    assert Registry(state / "models").current() == version
    assert load_state(state).round == 3 and load_state(state).last_sample_id == 57


def test_learn_promotes_a_version_a_stop_left_staged_after_its_round(tmp_path, monkeypatch,
                                                                    capsys, caplog):
    """Before: a 'learn' killed after saving its progress but before switching 'current' left
    its version staged, and the next 'learn' said 'no new labelled samples': only 'edgecl run'
    promoted it."""
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.runtime import learner
    from edgecl.ultra import build_detection_model

    state = tmp_path / "state"
    pt = save_checkpoint(build_detection_model(1, names={0: "car"}), tmp_path / "model.pt",
                         meta={"names": {0: "car"}, "imgsz": 64})
    after = LearnerState(round=1, last_sample_id=8)
    version = Registry(state / "models").stage(
        {"model.pt": pt}, {"memory_snapshot": "s", "learner_state": dataclasses.asdict(after)})
    monkeypatch.setattr(learner, "run_learning_round", lambda cfg, reason, hold, **kw: RoundResult(
        RoundStatus.SKIPPED, reason="no new labelled samples"))
    caplog.set_level("INFO", logger="edgecl.runtime.learner")
    code = main(["learn", "--state-dir", str(state), "model.imgsz=64"])
    assert code == 0 and Registry(state / "models").current() == version
    assert f"promoted {version}, staged by a round before the last shutdown" in caplog.messages


def test_learn_does_not_promote_a_leftover_learnt_on_a_version_rolled_back_since(
        tmp_path, monkeypatch, capsys, caplog):
    """Before: the leftover child of a version the operator had rolled back was promoted,
    undoing the rollback."""
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.runtime import learner
    from edgecl.runtime.promote import rollback_version
    from edgecl.ultra import build_detection_model

    state = tmp_path / "state"
    pt = save_checkpoint(build_detection_model(1, names={0: "car"}), tmp_path / "model.pt",
                         meta={"names": {0: "car"}, "imgsz": 64})
    registry = Registry(state / "models")
    first = registry.stage({"model.pt": pt}, {})
    registry.promote(first)
    second = registry.stage({"model.pt": pt}, {"parent": first})
    registry.promote(second)
    leftover = registry.stage({"model.pt": pt}, {"memory_snapshot": "s", "parent": second})
    rollback_version(state, registry)
    monkeypatch.setattr(learner, "run_learning_round", lambda cfg, reason, hold, **kw: RoundResult(
        RoundStatus.SKIPPED, reason="no new labelled samples"))
    assert main(["learn", "--state-dir", str(state), "model.imgsz=64"]) == 0
    assert Registry(state / "models").current() == first
    assert Registry(state / "models").manifest(leftover)["status"] == "retired"
    assert f"staged version {leftover} is not promoted: it was learnt on {second}" in caplog.text


def test_a_failed_round_gives_the_error_line_with_json(tmp_path, monkeypatch, capsys):
    """Before: 'learn --json' of a round that failed printed the round (exit 1) with no
    'error', the README's line for a command that failed, and its reason started with the
    exception's class name ('EdgeclError: the model ... is no .pt checkpoint')."""
    from edgecl.continual import round as round_mod
    from edgecl.errors import EdgeclError
    from edgecl.runtime import learner

    state = tmp_path / "state"
    (state / "models").mkdir(parents=True)

    def refused(cfg, **kw):
        raise EdgeclError("the model x.onnx is no .pt checkpoint")

    monkeypatch.setattr(round_mod, "run_round", refused)
    monkeypatch.setattr(learner, "promote_leftover_staged", lambda *a, **k: None)
    assert main(["learn", "--state-dir", str(state), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "failed"
    assert out["error"] == out["reason"] == "the model x.onnx is no .pt checkpoint"


def test_learn_does_not_undo_a_rollback_made_while_its_round_ran(tmp_path, monkeypatch, capsys):
    """Before: 'models rollback' (to v0001) during a round learnt on v0002 was undone when the
    round's v0003 was promoted on top of v0002's learning."""
    from edgecl.runtime import learner

    state = tmp_path / "state"
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx")
    registry = Registry(state / "models")
    first = registry.stage({"model.onnx": src}, {"memory_snapshot": "s", "parent": "file:a.pt",
                                                  "learnt_up_to": 10})
    registry.promote(first)
    second = registry.stage({"model.onnx": src}, {"memory_snapshot": "s", "parent": first,
                                                   "learnt_up_to": 20})
    registry.promote(second)
    rolled_back = []

    def round_during_which_a_rollback_came(cfg, reason, hold, **kw):
        from edgecl.continual.round_state import save_state

        version = registry.stage({"model.onnx": src}, {"memory_snapshot": "s", "parent": second,
                                                        "learnt_up_to": 30})
        save_state(state, LearnerState(round=3, last_sample_id=30))  # as the round saves it
        registry.promote(first)  # the operator's rollback, while the round ran
        rolled_back.append(version)
        return RoundResult(RoundStatus.STAGED, round=3, version=version)

    monkeypatch.setattr(learner, "run_learning_round", round_during_which_a_rollback_came)
    monkeypatch.setattr(learner, "promote_leftover_staged", lambda *a, **k: None)
    code = main(["learn", "--state-dir", str(state), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["status"] == "staged"
    assert Registry(state / "models").current() == first
    assert (f"warning: {rolled_back[0]} is not promoted: it was learnt on the version that "
            f"served when its round began, and {first} serves now") in err
    # samples 11-30 were learnt by no serving version: the next round learns them
    assert load_state(state).last_sample_id == 10
    # held for a person: before, the next round's promotion pruned it, while the warning said
    # to promote it
    registry = Registry(state / "models")
    assert registry.manifest(rolled_back[0])["promote"] == "manual"
    later = registry.stage({"model.onnx": src}, {"memory_snapshot": "s", "parent": first})
    registry.promote(later)
    registry.prune(1, 0)
    assert (state / "models" / rolled_back[0] / "model.onnx").is_file()


def test_learn_again_is_passed_to_the_round_and_named_when_nothing_is_new(tmp_path, monkeypatch,
                                                                          capsys):
    from edgecl.continual.round import NO_NEW_SAMPLES
    from edgecl.runtime import learner

    state = tmp_path / "state"
    (state / "models").mkdir(parents=True)
    asked = []

    def nothing_new(cfg, reason, hold, again=False):
        asked.append(again)
        return RoundResult(RoundStatus.SKIPPED, reason=NO_NEW_SAMPLES)

    monkeypatch.setattr(learner, "run_learning_round", nothing_new)
    monkeypatch.setattr(learner, "promote_leftover_staged", lambda *a, **k: None)
    assert main(["learn", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.strip() == (
        "no round: skipped (no new labelled samples); 'edgecl learn --again' learns the "
        "memory's samples again")
    assert main(["learn", "--state-dir", str(state), "--again"]) == 0
    assert capsys.readouterr().out.strip() == "no round: skipped (no new labelled samples)"
    assert asked == [False, True]


def test_learn_names_the_classes_its_promoted_round_could_not_measure(tmp_path, monkeypatch,
                                                                     capsys):
    """Before: 'edgecl learn' promoted a round whose gate saw no held-out box of OtherVehicle
    (a checkpoint's class never imported) without a word; the runtime's promotion warned."""
    from edgecl.models.classes import ClassRegistry
    from edgecl.runtime import learner

    state = tmp_path / "state"
    src = tmp_path / "model.onnx"
    src.write_bytes(b"onnx")
    version = Registry(state / "models").stage({"model.onnx": src}, {"memory_snapshot": "s"})
    ClassRegistry(state).add(["Car", "OtherVehicle", "Person"])
    monkeypatch.setattr(learner, "run_learning_round", lambda cfg, reason, hold, **kw: RoundResult(
        RoundStatus.STAGED, round=1, version=version, classes=[0, 1, 2],
        per_task={"Car": 0.3, "OtherVehicle": None, "Person": 0.2}))
    monkeypatch.setattr(learner, "promote_leftover_staged", lambda *a, **k: None)
    assert main(["learn", "--state-dir", str(state)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {version}: OtherVehicle had no held-out box, so the gate could not see " \
           f"what this round forgot of it; answer or import a few frames showing it (the " \
           f"held-out slice takes its share)\n" in err
