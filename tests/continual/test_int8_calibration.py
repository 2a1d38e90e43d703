"""Calibration images for INT8: round-robin over classes from the replay memory's training slice."""

from pathlib import Path
from types import SimpleNamespace

from edgecl.continual.int8_calibration import calibration_images, spread_over_classes

ITEMS = [(1, [0]), (2, [0, 1]), (3, [1]), (4, [2]), (5, []), (6, [0]), (7, [0]), (8, [1, 2])]


def test_round_robin_by_hand():
    # groups: 0 -> 1 2 6 7, 1 -> 2 3 8, 2 -> 4 8, background -> 5
    # round 1: 1 (0), 2 (1), 4 (2), 5 (bg); round 2: 6 (0), 3 (1), 8 (2); round 3: 7 (0)
    assert spread_over_classes(ITEMS, 100) == [1, 2, 4, 5, 6, 3, 8, 7]
    assert spread_over_classes(ITEMS, 3) == [1, 2, 4]
    assert spread_over_classes(ITEMS, 6) == [1, 2, 4, 5, 6, 3]


def test_a_rare_class_is_not_crowded_out():
    items = [(i, [0]) for i in range(100)] + [(100, [1]), (101, [1])]
    assert spread_over_classes(items, 4) == [0, 100, 1, 101]


def test_limits_and_empty():
    assert spread_over_classes(ITEMS, 0) == []
    assert spread_over_classes([], 5) == []
    assert spread_over_classes([(9, [3, 3])], 5) == [9]


def test_snapshot_uses_training_samples_only_oldest_first():
    rows = [SimpleNamespace(id=i, classes=c, held_out=h)
            for i, c, h in [(5, (1,), False), (2, (0,), False), (3, (1,), True), (4, (0,), False),
                            (9, (), False)]]

    class Snap:
        def records(self, held_out=None):
            return [r for r in rows if held_out is None or r.held_out == held_out]

        def image_paths(self, ids):
            return [Path(f"img{i}.jpg") for i in ids]

    assert calibration_images(Snap(), 10) == [Path("img2.jpg"), Path("img5.jpg"), Path("img9.jpg"),
                                              Path("img4.jpg")]
    assert calibration_images(Snap(), 2) == [Path("img2.jpg"), Path("img5.jpg")]


def test_tensorrt_int8_calibrates_on_the_class_spread_images(tmp_path, monkeypatch):
    from edgecl.config import load_config
    from edgecl.continual import round as round_mod
    from edgecl.models import engine_file, tensorrt_build

    seen = {}

    def fake_build(onnx, engine, *, calibration_images=None, **kwargs):
        seen["calib"] = calibration_images
        raise engine_file.EngineBuildError("no GPU here")

    monkeypatch.setattr(tensorrt_build, "tensorrt_available", lambda: True)
    monkeypatch.setattr(tensorrt_build, "build_engine", fake_build)
    rows = [SimpleNamespace(id=i, classes=c, held_out=False)
            for i, c in [(1, (0,)), (2, (0,)), (3, (0,)), (4, (1,))]]

    class Snap:
        def records(self, held_out=None):
            return rows

        def image_paths(self, ids):
            return [Path(f"img{i}.jpg") for i in ids]

    cfg = load_config(None, [f"state_dir={tmp_path}", "export.tensorrt=on", "export.precision=int8",
                             "export.int8_calibration_images=2"])
    ctx = SimpleNamespace(cfg=cfg, snapshot=Snap(), work=tmp_path)
    engine, meta = round_mod._maybe_engine(ctx, tmp_path / "model.onnx", {0: "a", 1: "b"})
    assert engine is None and "no GPU here" in meta["engine"]
    assert seen["calib"] == [Path("img1.jpg"), Path("img4.jpg")]
