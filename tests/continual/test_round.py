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


def test_a_damaged_parent_fails_the_round_with_the_way_out(tmp_path):
    """Before: 'parent v0001 fails its integrity check: ...' and nothing on what to do, round
    after round."""
    import numpy as np

    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round_state import RoundStatus
    from edgecl.models.registry import Registry

    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.5),
                      names={0: "car"}) as memory:
        for k in range(6):
            memory.add(Sample(np.full((32, 32, 3), 30 * k, np.uint8),
                              np.array([[0, 0.5, 0.5, 0.3, 0.3]], np.float32), task="stream"))
    registry = Registry(state / "models")
    src = tmp_path / "model.onnx"
    src.write_bytes(b"weights")
    version = registry.stage({"model.onnx": src}, {})
    registry.promote(version)
    (registry.root / version / "model.onnx").write_bytes(b"damaged")
    cfg = load_config(None, [f"state_dir={state}", "memory.holdout_fraction=0.5"])
    result = round_mod.run_round(cfg)
    assert result.status is RoundStatus.FAILED
    assert result.reason.startswith(f"parent {version} fails its integrity check: ")
    # no earlier version: no rollback to offer
    assert result.reason.endswith("no round learns on it until it is replaced: 'edgecl models add "
                                  "--promote' a checkpoint you trust")
    newer = registry.stage({"model.onnx": src}, {"parent": version})
    registry.promote(newer)
    (registry.root / newer / "model.onnx").write_bytes(b"damaged")
    assert round_mod.run_round(cfg).reason.endswith(
        "'edgecl models rollback' serves the version before it, or 'edgecl models add --promote' "
        "a checkpoint you trust")


def test_a_round_that_made_no_optimiser_step_is_rejected_and_learns_nothing(tmp_path):
    """Before: a budget the set-up used up (a loaded device, a large memory) gave "fine-tune:
    0 steps ... stop: budget", then the parent unchanged was staged and promoted as a new
    version, and its new samples counted as learnt: never learnt."""
    import numpy as np

    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round_state import RoundStatus

    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.5),
                      names={0: "car"}) as memory:
        for k in range(6):
            image = np.full((64, 64, 3), 30 * k, np.uint8)
            image[20:44, 16:48] = 250 - 30 * k
            memory.add(Sample(image, np.array([[0, 0.5, 0.5, 0.5, 0.375]], np.float32),
                              task="stream"))
    cfg = load_config(None, [f"state_dir={state}", "memory.holdout_fraction=0.5",
                             "learner.imgsz=64", "model.imgsz=64", "learner.batch=2",
                             "learner.first_round_budget_s=0.001", "export.openvino=off",
                             "export.cpu_int8=off"])
    result = round_mod.run_round(cfg)
    assert result.status is RoundStatus.REJECTED, result
    assert "no optimiser step before the round stopped (budget" in result.reason
    assert load_state(state).last_sample_id == 0  # its samples are still new


def test_a_held_out_slice_of_background_frames_skips_the_round_before_training(tmp_path):
    """Before: the round trained (up to 600 steps for a first one), then was rejected as
    "candidate could not be evaluated (no held-out samples)", though 2 samples were held out:
    both background frames, with no box to measure AP on."""
    import numpy as np

    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round_state import RoundStatus

    state = tmp_path / "state"
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.5),
                      names={0: "car"}) as memory:
        for k in range(4):
            memory.add(Sample(np.full((32, 32, 3), 30 * k, np.uint8), np.zeros((0, 5), np.float32),
                              task="stream"))
        held = len(memory.ids(held_out=True))
    assert held >= 1
    cfg = load_config(None, [f"state_dir={state}", "memory.holdout_fraction=0.5"])
    result = round_mod.run_round(cfg)
    assert result.status is RoundStatus.SKIPPED and result.seconds == 0
    assert result.reason.startswith(f"the {held} held-out sample(s) hold no box yet")


def test_a_task_whose_held_out_images_hold_none_of_its_boxes_is_not_scored():
    """Before: such a task (its held-out frames background, or showing only earlier classes)
    was scored mAP50-95 0: it pulled ACC down and read as forgotten in the accuracy matrix."""
    from edgecl.continual.evaluate import EvalResult

    def result(ap, boxes):
        return EvalResult(map50_95=ap, map50=ap, recall=0.0, precision=0.0,
                          per_class_ap50_95={}, n_images=3, n_boxes=boxes, dece=float("nan"))

    results = {"t1": result(0.4, 12), "t2": result(0.0, 0), "stream": result(0.0, 0)}
    assert round_mod.measured_tasks(results) == {"t1": results["t1"],
                                                 "stream": results["stream"]}


def test_a_held_out_box_counts_only_for_its_own_tasks_classes():
    """Before: a round whose held-out boxes all showed earlier tasks' classes trained (up to
    its step budget), then was rejected: no task could be scored. It is skipped before."""
    from types import SimpleNamespace

    task_classes = {"t1": [0], "t2": [1], "legacy": []}
    held = [SimpleNamespace(task="t2", classes=(0,)), SimpleNamespace(task="t1", classes=())]
    assert not any(round_mod._scorable(r, task_classes) for r in held)
    assert round_mod._scorable(SimpleNamespace(task="t2", classes=(0, 1)), task_classes)
    assert round_mod._scorable(SimpleNamespace(task="legacy", classes=(5,)), task_classes)
    assert round_mod._scorable(SimpleNamespace(task="new", classes=(5,)), task_classes)


def test_a_model_learning_from_scratch_trains_every_layer_until_the_first_rounds_steps(
        tmp_path, monkeypatch, caplog):
    """Before: a first round on a few operator answers stopped at its epochs (60 steps on 14
    images), and every later round froze that untrained backbone: after five rounds no class
    was detected. Now the rounds after it train every layer, as a first round does, until the
    lineage has trained learner.first_round_max_steps steps; then they freeze as before."""
    import numpy as np

    from edgecl.config import MemoryConfig
    from edgecl.continual.finetune import FineTuner
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round_state import RoundStatus
    from edgecl.models.registry import Registry

    state = tmp_path / "state"

    def add(n, shade):
        with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.5),
                          names={0: "car"}) as memory:
            for k in range(n):
                image = np.full((64, 64, 3), (shade + 20 * k) % 230, np.uint8)
                image[20:44, 16:48] = 250 - 20 * k
                memory.add(Sample(image, np.array([[0, 0.5, 0.5, 0.5, 0.375]], np.float32),
                                  task="stream"))

    caplog.set_level("INFO", logger="edgecl.continual.round")
    runs = []
    run = FineTuner.run
    monkeypatch.setattr(FineTuner, "run", lambda self, *a, **kw: runs.append(
        (kw["freeze_layers"], kw["max_steps"], bool(self.hooks))) or run(self, *a, **kw))
    cfg = load_config(None, [f"state_dir={state}", "memory.holdout_fraction=0.5",
                             "learner.imgsz=64", "model.imgsz=64", "learner.batch=2",
                             "learner.epochs=1", "learner.first_round_max_steps=30",
                             "learner.max_steps=4", "learner.bn_recalibration_batches=0",
                             "gate.min_acc_delta=-1", "gate.max_forgetting=1",
                             "export.openvino=off", "export.cpu_int8=off"])
    registry = Registry(state / "models")
    trained, recorded_s = [], []
    for shade in (10, 60, 110, 160):
        add(8, shade)
        result = round_mod.run_round(cfg, record=lambda **kw: recorded_s.append(kw["seconds"]) or {})
        assert result.status is RoundStatus.STAGED, result
        # before: the metrics database's seconds were taken before the parent's baseline and
        # the staging, short of the result's (monitor report against edgecl learn --json)
        assert recorded_s[-1] == result.seconds
        registry.promote(result.version)
        trained.append((registry.manifest(result.version)["training"].get("backbone_steps"),
                        result.steps))
    (first, s1), (second, s2), (third, _), (fourth, _) = trained
    assert first == s1 < 30  # stopped by its epochs, below the first round's steps
    assert runs[0] == (0, 30, False) and runs[1] == (0, 30 - s1, False)  # every layer, no LwF
    assert second == s1 + s2 == 30  # the first round's steps reached over two rounds
    assert runs[2:] == [(10, 4, True)] * 2 and third is fourth is None  # trained: as before
    # the second round says its bound, and that learner.max_steps waits (it read as ignored)
    assert (f"this round trains every layer, for at most {30 - s1} steps and "
            f"learner.first_round_budget_s=") in caplog.text
    assert f"has trained {s1} of learner.first_round_max_steps=30 steps so far (learner.max_steps=4 " \
           f"and learner.budget_s bound the rounds once it has)" in caplog.text


def test_a_first_round_says_its_own_step_and_time_bounds(tmp_path, monkeypatch, caplog):
    """Before: 'edgecl learn learner.max_steps=5' on a new device trained 'step 89 of at most
    600' with no word of learner.first_round_max_steps, which bounds a first round."""
    from edgecl.continual import finetune

    class Tuner:
        def __init__(self, *args, **kwargs):
            pass

        def run(self, *args, **kwargs):
            return kwargs

    monkeypatch.setattr(finetune, "FineTuner", Tuner)
    cfg = load_config(None, [f"state_dir={tmp_path}", "learner.max_steps=5",
                             "learner.first_round_max_steps=600"])
    ctx = SimpleNamespace(cfg=cfg, young_steps=lambda: 0, first=True, new_records=[],
                          snapshot=SimpleNamespace(image_paths=lambda ids: [], get=lambda ids: []), progress=None,
                          work=tmp_path)
    with caplog.at_level("INFO", logger="edgecl.continual.round"):
        bounds = round_mod._fine_tune(ctx, model=None, parent_model=None, replay_ids=[])
    assert bounds["max_steps"] == 600
    assert ("first round: the model learns from scratch, every layer, for at most "
            "learner.first_round_max_steps=600 steps") in caplog.text


def test_a_round_again_learns_every_training_sample_when_none_is_new(tmp_path):
    """'edgecl learn --again': with every sample learnt, the round takes the memory's training
    samples as new instead of skipping (before: no way to learn them again, after a change of
    the learner's settings say, but to label new frames)."""
    import numpy as np

    from edgecl.config import MemoryConfig
    from edgecl.continual.memory import ReplayMemory, Sample
    from edgecl.continual.round_state import save_state

    state = tmp_path / "state"
    box = np.array([[0, 0.5, 0.5, 0.3, 0.3]], np.float32)
    with ReplayMemory(state / "memory", MemoryConfig(holdout_fraction=0.25),
                      names={0: "car"}) as memory:
        for k in range(8):
            memory.add(Sample(np.full((32, 32, 3), 30 * k, np.uint8), box, task="stream"))
        training = memory.ids(held_out=False)
    save_state(state, LearnerState(round=2, last_sample_id=8))
    cfg = load_config(None, [f"state_dir={state}", "memory.holdout_fraction=0.25"])
    assert round_mod._open_round(cfg, None) is None
    assert round_mod.run_round(cfg).reason == round_mod.NO_NEW_SAMPLES
    ctx = round_mod._open_round(cfg, None, again=True)
    assert sorted(r.id for r in ctx.new_records) == sorted(training) and len(training) == 6
    # a file where the round's work folder belongs (a card fault): before, every round failed
    # with a FileExistsError traceback; the round's own scratch space, so it is removed
    import shutil

    work = state / "learner" / "work"
    shutil.rmtree(work)
    work.write_bytes(b"\x00" * 16)
    ctx = round_mod._open_round(cfg, None, again=True)
    assert ctx.work == work and work.is_dir()


def test_a_round_of_boxes_under_the_finest_stride_says_so():
    """Before: at learner.imgsz=64, HIT-UAV's cars (39x71 px at 640x512) were 4x7 px: no box
    got an anchor, the loss fell to 0.0000 round after round, and nothing said why."""
    import numpy as np

    from edgecl.continual.round import small_boxes_note

    # 640x512 frames, boxes of 39x71 and 60x60 px: at 64 px (scale 0.1) 3.9 and 6.0 px short sides
    car = np.array([[0, 0.5, 0.5, 39 / 640, 71 / 512]], np.float32)
    big = np.array([[1, 0.5, 0.5, 200 / 640, 200 / 512]], np.float32)
    samples = [SimpleNamespace(width=640, height=512, labels=car),
               SimpleNamespace(width=640, height=512, labels=np.concatenate([car, big])),
               SimpleNamespace(width=640, height=512, labels=np.zeros((0, 5), np.float32))]
    # short sides at 64 px: 3.9, 3.9, 20.0 -> 2 of 3 under 8 px, median 3.9 -> 64*8/3.9 = 131 -> 160
    assert small_boxes_note(samples, 64, 8) == (
        "2 of 3 new boxes of this round are under 8 px on their shorter side at "
        "learner.imgsz=64 (the model's finest stride; median 3.9 px): the model learns little "
        "of them, though its loss falls all the same; learner.imgsz=160 makes the median box "
        "one stride")
    assert small_boxes_note(samples, 160, 8) is None  # 9.75, 9.75, 50 px: all above
    assert small_boxes_note(samples[2:], 64, 8) is None  # no box at all
