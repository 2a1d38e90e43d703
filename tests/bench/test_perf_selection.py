"""``bench perf --selection``: pipeline fps with the field labelling pipeline on vs off."""

import time

import numpy as np

from edgecl.bench.perf import selection_fps
from edgecl.frames import Detections, Frame
from edgecl.models.base import ModelMeta


class TinyBackend:
    """A detector that answers one box per frame after a short fixed delay."""

    meta = ModelMeta(path="fake", backend="fake", names={0: "car"}, imgsz=32)

    def infer(self, images):
        time.sleep(0.002)
        return [Detections(np.array([[4, 4, 20, 20]], np.float32), np.array([0.45], np.float32),
                           np.array([0])) for _ in images]


def test_selection_fps_reports_both_runs_and_their_ratio():
    rng = np.random.default_rng(0)
    frames = [Frame(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), i, time.time(), "test://",
                    labels=np.zeros((0, 5), np.float32), task="t1") for i in range(30)]
    out = selection_fps(TinyBackend(), frames, repeats=1)
    assert set(out) == {"pipeline_fps_selection_off", "pipeline_fps_selection_on", "selection_ratio"}
    assert out["pipeline_fps_selection_off"] > 0 and out["pipeline_fps_selection_on"] > 0
    assert out["selection_ratio"] == round(out["pipeline_fps_selection_on"]
                                           / out["pipeline_fps_selection_off"], 3)


def test_a_replayed_frame_is_stamped_as_captured_now():
    """Before: 'bench perf' replayed frames with their first capture's monotonic stamp, which
    is what latency is measured from: 'latency_ms_p50' grew with the run (2,194 ms at 439 fps)."""
    from edgecl.bench.perf import ReplaySource

    old = Frame(image=np.zeros((4, 4, 3), np.uint8), frame_id=0, ts_s=time.time() - 100,
                source="x", captured_mono_s=time.monotonic() - 100)
    frame = ReplaySource([old]).read()
    assert abs(frame.captured_mono_s - time.monotonic()) < 1.0
    assert abs(frame.ts_s - time.time()) < 1.0


def test_measure_prints_a_progress_line_per_repeat(capsys):
    import argparse

    from edgecl.bench.perf import measure

    rng = np.random.default_rng(0)
    frames = [Frame(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), i, time.time(), "test://",
                    labels=np.zeros((0, 5), np.float32), task="t1") for i in range(10)]
    args = argparse.Namespace(skip_ultralytics=True, repeats=2, model="fake.onnx")
    out = measure(TinyBackend(), frames, args, 32, 0.25)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["[bench perf] repeat 1 of 2",
                                                       "[bench perf] repeat 2 of 2"]
    assert "raw " in lines[0] and "pipeline " in lines[0] and out["repeats"] == 2
