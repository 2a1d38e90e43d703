"""The capture -> inference -> sink loop, hot swap and back-pressure."""

import threading
import time

from edgecl.runtime.buffers import CLOSED, DropOldest, make_buffer
from edgecl.runtime.loop import InferenceLoop
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


def test_failing_sink_is_disabled_not_fatal():
    class Broken:
        def write(self, result):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    good = CollectSink()
    report = InferenceLoop(ListSource(5), SleepBackend(delay_s=0), "v", sinks=[Broken(), good]).run()
    assert report.frames == 5 and len(good.results) == 5 and report.sink_errors == 1


def test_drop_oldest_counts_drops():
    buf = DropOldest()
    for i in range(5):
        buf.put(i)
    assert buf.get(0.1) == 4 and buf.dropped == 4
    buf.close()
    assert buf.get(0.1) is CLOSED
    assert make_buffer("auto", source_is_live=True).name == "drop_oldest"
    assert make_buffer("auto", source_is_live=False).name == "block"
