"""The capture -> inference -> sink loop, hot swap and back-pressure."""

import json
import logging
import sqlite3
import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgecl.runtime.buffers import CLOSED, Block, DropOldest, make_buffer
from edgecl.runtime.loop import STATS_WINDOW, InferenceLoop, SampleRing
from edgecl.runtime.sources.files import ImageListSource
from edgecl.runtime.watchdog import Watchdog
from edgecl.runtime.watcher import ReadyModel
from fakes import CollectSink, ListSource, SleepBackend


class ScriptedWatcher:
    """Offers a new backend once ``after`` frames have been processed."""

    def __init__(self, sink, after, backend):
        self.sink, self.after, self.backend = sink, after, backend
        self.retired = []

    def take_ready(self):
        if self.backend is not None and len(self.sink.results) >= self.after:
            ready, self.backend = ReadyModel("v0002", self.backend), None
            return ready
        return None

    def retire(self, backend):
        self.retired.append(backend)


def test_every_frame_processed_in_order_when_blocking():
    sink = CollectSink()
    loop = InferenceLoop(ListSource(30), SleepBackend(), "v0001", sinks=[sink],
                         back_pressure="block")
    report = loop.run()
    assert report.frames == 30 and report.dropped == 0
    assert [r.frame.frame_id for r in sink.results] == list(range(30))
    assert report.latency_ms_p95 >= report.latency_ms_p50 > 0


def test_swap_between_frames_loses_nothing_and_is_fast():
    sink = CollectSink()
    first, second = SleepBackend(tag=0, delay_s=0.01), SleepBackend(tag=1, delay_s=0.01)
    watcher = ScriptedWatcher(sink, after=5, backend=second)
    loop = InferenceLoop(ListSource(40), first, "v0001", sinks=[sink], back_pressure="block",
                         watcher=watcher)
    report = loop.run()
    ids = [r.frame.frame_id for r in sink.results]
    assert ids == list(range(40)), "a frame was lost or reordered at the swap"
    versions = [r.model_version for r in sink.results]
    assert versions[0] == "v0001" and versions[-1] == "v0002" and report.swaps == 1
    classes = [int(r.detections.classes[0]) for r in sink.results]
    switch = versions.index("v0002")
    assert set(classes[:switch]) == {0} and set(classes[switch:]) == {1}
    assert watcher.retired == [first]
    frame_ms = report.infer_ms_p50
    assert report.swap_stall_ms_max < frame_ms, (report.swap_stall_ms_max, frame_ms)


def test_max_frames_and_request_stop():
    loop = InferenceLoop(ListSource(10_000), SleepBackend(delay_s=0.001), "v", max_frames=7)
    assert loop.run().frames == 7
    loop = InferenceLoop(ListSource(10_000), SleepBackend(delay_s=0.001), "v")
    threading.Timer(0.2, loop.request_stop).start()
    t0 = time.perf_counter()
    report = loop.run()
    assert time.perf_counter() - t0 < 5 and 0 < report.frames < 10_000


class Raising:
    """A sink whose first ``fail_first`` writes raise ``exc`` (forever when None)."""

    def __init__(self, exc, fail_first=None, name=None):
        self.exc, self.fail_first, self.calls, self.written = exc, fail_first, 0, 0
        if name:
            self.name = name

    def write(self, result):
        self.calls += 1
        if self.fail_first is None or self.calls <= self.fail_first:
            raise self.exc
        self.written += 1

    def close(self):
        pass


@pytest.mark.parametrize("exc", [
    OSError(28, "No space left on device"), sqlite3.OperationalError("database is locked"),
    cv2.error("OpenCV(4.x) error: (-215:Assertion failed)"), MemoryError(), KeyError("boxes"),
    ZeroDivisionError("division by zero")], ids=lambda e: type(e).__name__)
def test_a_sink_raising_anything_is_counted_and_kept(exc):
    good = CollectSink()
    report = InferenceLoop(ListSource(5), SleepBackend(delay_s=0), "v",
                           sinks=[Raising(exc), good]).run()
    assert report.frames == 5 and len(good.results) == 5
    assert report.sink_errors == 5 and report.sink_errors_by_sink == {"Raising": 5, "CollectSink": 0}


def test_a_transiently_failing_sink_works_again_and_names_are_unique(caplog):
    caplog.set_level(logging.INFO, logger="edgecl.runtime.loop")
    flaky = Raising(OSError(28, "No space left on device"), fail_first=3, name="memory")
    other = Raising(KeyError("x"), fail_first=0, name="memory")
    report = InferenceLoop(ListSource(10), SleepBackend(delay_s=0), "v", sinks=[flaky, other]).run()
    assert flaky.written == 7 and other.written == 10
    assert report.sink_errors_by_sink == {"memory": 3, "memory#2": 0}
    assert "works again after 3 failures" in caplog.text
    assert caplog.text.count("Traceback") == 1, "only the first failure is logged in full"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_sink_failing_in_close_or_dying_never_hangs_shutdown():
    class BadClose(CollectSink):
        def close(self):
            raise RuntimeError("flush failed")

    class Dies(CollectSink):
        def write(self, result):
            raise SystemExit("a library called sys.exit")

    good = CollectSink()
    t0 = time.perf_counter()
    report = InferenceLoop(ListSource(50), SleepBackend(delay_s=0), "v",
                           sinks=[BadClose(), Dies(), good], sink_queue_size=2).run()
    assert time.perf_counter() - t0 < 5
    assert report.frames == 50 and len(good.results) == 50
    assert report.sink_errors_by_sink["BadClose"] == 1
    assert report.sink_dropped >= 40, "results for the dead sink are dropped, never waited on"


def test_a_hung_sink_stalls_only_itself_and_shutdown_stays_bounded(caplog):
    release = threading.Event()

    class Hangs:
        def write(self, result):
            release.wait(30)

        def close(self):
            pass

    good = CollectSink()
    loop = InferenceLoop(ListSource(30), SleepBackend(delay_s=0), "v", sinks=[Hangs(), good],
                         sink_queue_size=2, sink_stall_timeout_s=0.3, stop_timeout_s=0.5)
    t0 = time.perf_counter()
    report = loop.run()
    assert time.perf_counter() - t0 < 4
    release.set()
    assert report.frames == 30 and len(good.results) == 30
    assert report.sink_dropped >= 25
    assert "Hangs has not taken a result" in caplog.text
    assert "did not finish within" in caplog.text


class BlockingSource(ListSource):
    """Delivers ``n`` frames, then blocks in read() until closed (a stalled camera)."""

    def __init__(self, n, honour_close=True):
        super().__init__(n)
        self.honour_close = honour_close
        self.closed = threading.Event()
        self.never = threading.Event()

    def read(self):
        if self.i < self.n:
            return super().read()
        (self.closed if self.honour_close else self.never).wait(60)
        return None

    def close(self):
        self.closed.set()


def test_max_frames_ends_promptly_when_the_source_blocks():
    source = BlockingSource(1)
    loop = InferenceLoop(source, SleepBackend(delay_s=0), "v", max_frames=1, back_pressure="block")
    t0 = time.perf_counter()
    report = loop.run()
    assert report.frames == 1 and time.perf_counter() - t0 < 1.0
    assert source.closed.is_set()
    assert not any(t.name == "edgecl-capture" and t.is_alive() for t in threading.enumerate())


def test_a_read_that_ignores_close_is_left_behind_and_logged(caplog):
    source = BlockingSource(0, honour_close=False)
    loop = InferenceLoop(source, SleepBackend(delay_s=0), "v", stop_timeout_s=1.0)
    threading.Timer(0.2, loop.request_stop).start()
    t0 = time.perf_counter()
    loop.run()
    assert time.perf_counter() - t0 < 4
    assert "capture thread still blocked in BlockingSource.read()" in caplog.text
    source.never.set()


def test_full_block_buffer_never_blocks_close_or_stop():
    buf = Block(maxsize=2)
    assert buf.put(1) and buf.put(2)
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    t0 = time.perf_counter()
    assert buf.put(3, stop) is False and time.perf_counter() - t0 < 1
    buf.close()
    assert buf.put(4) is False
    assert [buf.get(0.1), buf.get(0.1), buf.get(0.1)] == [1, 2, CLOSED]


def test_latency_samples_are_a_ring_and_figures_come_from_it():
    ring = SampleRing(8)
    for i in range(20):
        ring.append(float(i))
    assert len(ring) == 8 and ring.recent().tolist() == [float(i) for i in range(12, 20)]
    assert ring.recent(3).tolist() == [17.0, 18.0, 19.0] and len(SampleRing(4).recent(10)) == 0
    loop = InferenceLoop(ListSource(STATS_WINDOW + 500, shape=(8, 8, 3)), SleepBackend(delay_s=0),
                         "v")
    report = loop.run()
    assert report.frames == STATS_WINDOW + 500
    assert len(loop._latencies_ms) == STATS_WINDOW and len(loop._infer_ms) == STATS_WINDOW
    assert loop.current_fps() > 0 and loop.latency_p50() > 0
    assert report.latency_ms_p95 >= report.latency_ms_p50 > 0


def test_refused_labels_come_from_the_source_stats_and_json_keeps_old_keys():
    class Counted(ListSource):
        stats = SimpleNamespace(skipped=2, refused_labels=3)

    report = InferenceLoop(Counted(4), SleepBackend(delay_s=0), "v").run()
    out = report.to_json()
    assert out["refused_labels"] == 3 and out["skipped"] == 2
    old_keys = {"frames", "fps", "latency_ms_p50", "latency_ms_p95", "infer_ms_p50", "dropped",
                "skipped", "swaps", "swap_stall_ms_max", "model_version", "elapsed_s", "sink_errors"}
    assert old_keys <= set(out) and isinstance(out["sink_errors"], int)
    json.dumps(out)


def test_frames_streamed_unlabelled_for_a_refused_label_file_are_in_the_summary(tmp_path):
    """A UTF-16 label file (no row can be read) refuses no row, yet its frame streams
    unlabelled: the summary's bad_labels says so (refused_labels alone stayed 0)."""
    images = []
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.full((32, 32, 3), 90, np.uint8))
        images.append(tmp_path / f"{name}.png")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n", encoding="utf-16")
    (tmp_path / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2\n")
    (tmp_path / "c.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    report = InferenceLoop(ImageListSource("dir://x", images), SleepBackend(delay_s=0), "v").run()
    assert report.frames == 3
    assert report.to_json()["bad_labels"] == 2 and report.refused_labels == 1


def test_the_loop_beats_its_watchdog_and_a_hung_inference_is_stuck():
    class Hangs(SleepBackend):
        def infer(self, images):
            if self.calls_left == 0:
                time.sleep(0.6)
            self.calls_left -= 1
            return super().infer(images)

    backend = Hangs(delay_s=0)
    backend.calls_left = 3
    watchdog = Watchdog(stuck_after_s={"inference": 0.3})
    seen = []
    loop = InferenceLoop(ListSource(6), backend, "v", watchdog=watchdog, sinks=[CollectSink()])
    report = loop.run(supervise=lambda: seen.append(watchdog.snapshot()), tick_s=0.05)
    assert report.frames == 6
    assert any(s["stages"]["inference"]["state"] == "stuck" and s["status"] == "stuck" for s in seen)
    end = watchdog.snapshot()
    assert end["status"] == "ok"
    assert {n: st["state"] for n, st in end["stages"].items()} == {
        "capture": "stopped", "inference": "stopped", "sinks": "stopped"}
    assert end["stages"]["sinks"]["parts"]["CollectSink"]["state"] == "stopped"


def test_a_paused_source_is_idle_not_stuck():
    release = threading.Event()

    class Paused(ListSource):
        paused = False

        def read(self):
            if self.i == 2 and not release.is_set():
                self.paused = True
                release.wait(5)
                self.paused = False
            return super().read()

    source = Paused(4)
    watchdog = Watchdog(stuck_after_s={"capture": 0.2, "inference": 0.2})
    seen = []

    def supervise():
        seen.append(watchdog.snapshot())
        if len(seen) == 10:
            release.set()

    InferenceLoop(source, SleepBackend(delay_s=0), "v", watchdog=watchdog).run(
        supervise=supervise, tick_s=0.05)
    paused = [s for s in seen[5:10]]
    assert all(s["stages"]["capture"]["state"] == "idle" for s in paused), paused
    assert all(s["status"] == "ok" for s in seen)


def test_drop_oldest_counts_drops():
    buf = DropOldest()
    for i in range(5):
        buf.put(i)
    assert buf.get(0.1) == 4 and buf.dropped == 4
    buf.close()
    assert buf.get(0.1) is CLOSED
    assert make_buffer("auto", source_is_live=True).name == "drop_oldest"
    assert make_buffer("auto", source_is_live=False).name == "block"


def test_watcher_refusals_are_bounded_and_any_load_error_refuses_the_version():
    from edgecl.runtime import watcher as watcher_mod

    class Registry:
        def verify(self, version, essential_only=False):
            return [] if version == "boom" else [f"{version}: sha256 mismatch"]

        def load_serving(self, version, opts, warmup_runs, prefer):
            raise RuntimeError("onnxruntime: invalid graph")

    w = watcher_mod.ModelWatcher(Registry(), opts=None, current_version=None)
    for i in range(watcher_mod.MAX_REFUSED + 10):
        assert w.load_version(f"v{i:04d}") is None
    assert len(w.refused) == watcher_mod.MAX_REFUSED and "v0000" not in w.refused
    assert w.load_version("boom") is None
    assert w.refused["boom"] == "RuntimeError: onnxruntime: invalid graph"


def test_watcher_stop_never_waits_on_an_untaken_model():
    from edgecl.runtime.watcher import ModelWatcher, ReadyModel

    w = ModelWatcher(registry=None, opts=None, current_version=None)
    first, second = SleepBackend(), SleepBackend()
    w._offer(ReadyModel("v1", first))
    threading.Timer(0.2, w._stop.set).start()
    t0 = time.perf_counter()
    w._offer(ReadyModel("v2", second))
    assert time.perf_counter() - t0 < 2 and second.closed
    w.stop()
    assert first.closed


def test_a_source_that_gives_up_is_reported_not_hidden():
    from edgecl.errors import SourceError

    class GivingUp(ListSource):
        stats = SimpleNamespace(skipped=0, reconnects=4, refused_labels=0)

        def read(self):
            if self.i >= 3:
                raise SourceError("rtsp://cam/x: giving up after 4 failed reads in a row")
            return super().read()

    report = InferenceLoop(GivingUp(100), SleepBackend(), "v0001", back_pressure="block").run()
    assert report.frames == 3 and report.reconnects == 4
    assert report.source_error == "rtsp://cam/x: giving up after 4 failed reads in a row"
    assert InferenceLoop(ListSource(3), SleepBackend(), "v").run().source_error == ""


def test_edgecl_run_exits_1_when_the_camera_gave_up(monkeypatch, capsys, tmp_path):
    from edgecl.cli import main
    from edgecl.errors import SourceError

    class DeadCamera(ListSource):
        def read(self):
            if self.i >= 2:
                raise SourceError("rtsp://admin:***@cam/x: giving up after 4 failed reads in a row")
            return super().read()

    monkeypatch.setattr("edgecl.runtime.sources.open_source", lambda uri, cfg: DeadCamera(100))
    code = main(["run", "--source", "rtsp://cam/x", "--model", "yolo11n.yaml", "--json",
                 "model.imgsz=64"])
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and summary["frames"] == 2 and "giving up" in summary["source_error"]
    assert err.strip().splitlines()[-1] == (
        "error: the source stopped: rtsp://admin:***@cam/x: giving up after 4 failed reads in a row")


def test_a_fresh_yaml_network_has_learnt_no_class(tmp_path):
    # README: stream with --model yolo11n.yaml and teach it: the first answer naming a class
    # must start a round. The fresh network's 80 outputs are untrained; before, their ids 0..79
    # counted as known, so classes taught with ids 0..79 never fired the new-class trigger
    # and could even be pseudo-labelled from the untrained outputs.
    from edgecl.config import load_config
    from edgecl.runtime.app import RunOptions, Runtime

    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}", "model.imgsz=64",
                             "labels.mode=field", "learner.enabled=true"])
    runtime = Runtime(cfg, RunOptions(source_uri="synthetic://?tasks=1&images_per_task=4&imgsz=64",
                                      model="yolo11n.yaml", max_frames=2, quiet=True))
    runtime.run()
    assert runtime.supervisor.known_classes == set()
    assert runtime.memory_sink.pipeline.pseudo.known_classes() == set()


def test_realtime_reads_a_recorded_source_at_its_frame_rate(caplog):
    """runtime.realtime: a video file or a folder (?fps=N) is read as a camera delivers frames
    (it was accepted and did nothing); a live source, or one without a rate, is not paced."""
    source = ListSource(10)
    source.fps = 50.0
    start = time.monotonic()
    report = InferenceLoop(source, SleepBackend(delay_s=0.0), "v0001", sinks=[CollectSink()],
                           back_pressure="block", realtime=True).run()
    assert report.frames == 10 and time.monotonic() - start >= 9 / 50.0
    source = ListSource(10)
    source.fps = 5.0
    source.is_live = True
    start = time.monotonic()
    InferenceLoop(source, SleepBackend(delay_s=0.0), "v0001", back_pressure="block",
                  realtime=True).run()
    assert time.monotonic() - start < 1.0  # 10 frames at 5 fps would take 1.8 s
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.loop"):
        loop = InferenceLoop(ListSource(3), SleepBackend(delay_s=0.0), "v0001", realtime=True)
        assert loop.run().frames == 3 and loop.pace_fps is None
    assert any("has no usable frame rate to pace it at" in r.getMessage() for r in caplog.records)


def test_a_paced_recording_drops_frames_like_a_camera_when_inference_lags():
    """Paced at 200 fps with inference taking 20 ms a frame: under back_pressure auto the
    oldest frames go, as for a camera (before, every frame waited and none was dropped)."""
    source = ListSource(40)
    source.fps = 200.0
    report = InferenceLoop(source, SleepBackend(delay_s=0.02), "v0001", realtime=True).run()
    assert report.dropped > 0 and report.frames + report.dropped == 40
    source = ListSource(40)
    source.fps = 200.0
    report = InferenceLoop(source, SleepBackend(delay_s=0.02), "v0001", realtime=True,
                           back_pressure="block").run()
    assert report.dropped == 0 and report.frames == 40


def test_a_sink_naming_its_storage_fault_is_logged_in_one_line(caplog):
    from edgecl.errors import StorageError

    caplog.set_level(logging.INFO, logger="edgecl.runtime.loop")
    full = Raising(StorageError("cannot write detections: No space left on device (/card/d.jsonl)"),
                   fail_first=3, name="JsonlSink")
    report = InferenceLoop(ListSource(6), SleepBackend(delay_s=0), "v", sinks=[full]).run()
    assert report.frames == 6 and full.written == 3 and report.sink_errors == 3
    failed = [r for r in caplog.records if "write failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is None and "Traceback" not in caplog.text
    assert "/card/d.jsonl" in failed[0].getMessage()
    assert "works again after 3 failures" in caplog.text


def test_a_detection_in_a_merged_classs_slot_is_given_as_the_class_it_became():
    """Before: after 'classes merge b a' the live view, --out lines and the label pipeline
    still got the model's detections of slot 1 as class 1 ('b'), a retired name, until rounds
    unlearnt it. A merge made meanwhile (the map is read at each frame) applies at once."""
    sink = CollectSink()
    merges = [{}] * 3 + [{1: 0}] * 3
    calls = iter(merges)
    report = InferenceLoop(ListSource(6), SleepBackend(tag=1, delay_s=0), "v0001", sinks=[sink],
                           back_pressure="block", merged_classes=lambda: next(calls),
                           merge_iou=0.7).run()
    assert report.frames == 6
    assert [r.detections.classes.tolist() for r in sink.results] == [[1]] * 3 + [[0]] * 3


def test_with_a_shown_conf_the_sinks_get_what_it_shows_and_the_labels_every_detection():
    """The detector runs at the labels' band floor below model.conf (``shown_conf``)."""
    import numpy as np

    from edgecl.frames import Detections

    class TwoScores(SleepBackend):
        def infer(self, images):
            return [Detections(np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32),
                               np.array([0.9, 0.45], np.float32), np.array([0, 1]))
                    for _ in images]

    sink = CollectSink()
    InferenceLoop(ListSource(3), TwoScores(), "v0001", sinks=[sink], back_pressure="block",
                  shown_conf=0.6).run()
    assert len(sink.results) == 3
    assert all(r.detections.scores.tolist() == pytest.approx([0.9]) for r in sink.results)
    assert all(r.labelling.scores.tolist() == pytest.approx([0.9, 0.45]) for r in sink.results)
    sink = CollectSink()
    InferenceLoop(ListSource(1), TwoScores(), "v0001", sinks=[sink], back_pressure="block").run()
    assert len(sink.results[0].detections) == 2 and sink.results[0].labelling is None


def test_a_paced_source_that_waited_starts_its_schedule_again_and_drops_nothing():
    """Before: a folder back after a 1.5 s wait had its missed frames come at once (30 at
    20 fps), and back-pressure dropped those inference could not take."""

    class Stalling(ListSource):
        def read(self):
            if self.i == 5:
                time.sleep(1.5)  # the folder gone, waited for, back
            return super().read()

    source = Stalling(15)
    source.fps = 20.0
    report = InferenceLoop(source, SleepBackend(delay_s=0.02), "v0001", realtime=True).run()
    assert report.frames == 15 and report.dropped == 0
