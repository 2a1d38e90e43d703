"""The on-device loop: capture thread -> inference thread -> sink thread.

The inference thread is the only owner of the backend; it swaps to a newly promoted model
between two frames after the :class:`ModelWatcher` has loaded and warmed it aside.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np

from edgecl.frames import Detections, Frame
from edgecl.models.base import Backend
from edgecl.runtime.buffers import CLOSED, make_buffer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    """A frame with its detections, handed to the sinks."""

    frame: Frame
    detections: Detections
    model_version: str
    latency_ms: float
    infer_ms: float


@dataclass(frozen=True)
class LoopReport:
    """What a run did; ``edgecl run --json`` prints it."""

    frames: int
    fps: float
    latency_ms_p50: float
    latency_ms_p95: float
    infer_ms_p50: float
    dropped: int
    skipped: int
    swaps: int
    swap_stall_ms_max: float
    model_version: str
    elapsed_s: float
    sink_errors: int

    def to_json(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


class _SinkRunner:
    """Feeds results to the sinks in their own thread; a failing sink is disabled, not fatal."""

    def __init__(self, sinks: list, maxsize: int):
        self.sinks = list(sinks)
        self.errors = 0
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name="edgecl-sink", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, result: FrameResult) -> None:
        self._q.put(result)

    def idle(self) -> bool:
        """True when every result handed over has been written."""
        return self._q.unfinished_tasks == 0

    def close(self) -> None:
        self._q.put(CLOSED)
        self._thread.join()
        for sink in self.sinks:
            self._call(sink, "close")

    def _call(self, sink, method: str, *args) -> None:
        try:
            getattr(sink, method)(*args)
        except (OSError, ValueError, RuntimeError) as exc:
            self.errors += 1
            log.error("sink %s failed (%s); it is disabled, detection goes on",
                      type(sink).__name__, exc)
            self.sinks.remove(sink)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is CLOSED:
                self._q.task_done()
                return
            for sink in list(self.sinks):
                self._call(sink, "write", item)
            self._q.task_done()


class InferenceLoop:
    """Runs detection on a frame source until it ends, ``max_frames`` is reached or stop.

    Args:
        source: an unopened or open frame source.
        backend: a loaded, warmed backend (the loop owns it from now on).
        model_version: label of the backend's model (registry version or file name).
        sinks: objects with ``write(FrameResult)`` and ``close()``.
        back_pressure: ``auto``, ``drop_oldest`` or ``block``.
        watcher: optional model watcher for hot swaps.
        max_frames: stop after this many frames (``None``: until the source ends).
        sink_queue_size: bound of the queue to the sink thread.
    """

    def __init__(self, source, backend: Backend, model_version: str, *, sinks=(),
                 back_pressure: str = "auto", watcher=None, max_frames: int | None = None,
                 sink_queue_size: int = 64):
        self.source = source
        self.backend = backend
        self.model_version = model_version
        self.watcher = watcher
        self.max_frames = max_frames
        self._buffer = make_buffer(back_pressure, getattr(source, "is_live", False))
        self._sinks = _SinkRunner(sinks, sink_queue_size)
        self._stop = threading.Event()
        self._latencies_ms: list[float] = []
        self._infer_ms: list[float] = []
        self._swaps = 0
        self._swap_stall_ms = 0.0
        self._frames = 0
        self._error: Exception | None = None
        self._captured = 0

    @property
    def frames_done(self) -> int:
        """Frames processed so far."""
        return self._frames

    def current_fps(self, window: int = 50) -> float:
        """Inference rate over the last ``window`` frames (0 before two frames)."""
        recent = self._infer_ms[-window:]
        return round(1000.0 / float(np.mean(recent)), 2) if recent else 0.0

    def latency_p50(self, window: int = 200) -> float:
        """Median capture-to-detection latency over the last ``window`` frames, ms."""
        recent = self._latencies_ms[-window:]
        return round(float(np.median(recent)), 2) if recent else 0.0

    def idle(self) -> bool:
        """True when every captured frame has been processed and written by the sinks
        (only meaningful while the capture thread is paused, e.g. between two tasks)."""
        return self._captured == self._frames + self._buffer.dropped and self._sinks.idle()

    def request_stop(self) -> None:
        """Ask every thread to finish (safe from a signal handler)."""
        self._stop.set()

    def _capture(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                self._captured += 1
                self._buffer.put(frame, self._stop)
        except Exception as exc:  # a dead camera must end the run cleanly, never hang it
            log.error("capture stopped: %s", exc)
        finally:
            self._buffer.close()

    def _maybe_swap(self) -> None:
        ready = self.watcher.take_ready() if self.watcher is not None else None
        if ready is None:
            return
        t0 = time.perf_counter()
        old, self.backend = self.backend, ready.backend
        self.model_version = ready.version
        self._swaps += 1
        self._swap_stall_ms = max(self._swap_stall_ms, (time.perf_counter() - t0) * 1000)
        self.watcher.retire(old)
        log.info("swapped to model version %s", ready.version)

    def _infer_one(self, frame: Frame) -> None:
        t0 = time.perf_counter()
        detections = self.backend.infer([frame.image])[0]
        infer_ms = (time.perf_counter() - t0) * 1000
        latency_ms = max(0.0, (time.time() - frame.ts_s) * 1000)
        self._infer_ms.append(infer_ms)
        self._latencies_ms.append(latency_ms)
        self._frames += 1
        self._sinks.put(FrameResult(frame, detections, self.model_version, latency_ms, infer_ms))

    def _inference(self) -> None:
        while True:
            item = self._buffer.get(timeout_s=0.1)
            if item is CLOSED:
                return
            if item is None:
                if self._stop.is_set():
                    return
                continue
            self._maybe_swap()
            self._infer_one(item)
            if self.max_frames is not None and self._frames >= self.max_frames:
                self._stop.set()
                return

    def run(self, supervise=None, tick_s: float = 0.2) -> LoopReport:
        """Run until the source ends, ``max_frames`` or :meth:`request_stop`.

        The calling (main) thread supervises: it waits on the worker threads, stays free to
        handle signals and calls ``supervise()`` every ``tick_s``.

        Args:
            supervise: optional callable run periodically on the calling thread.
            tick_s: supervision period in seconds.

        Returns:
            The run's :class:`LoopReport`.
        """
        if hasattr(self.source, "open"):
            self.source.open()
        self._sinks.start()
        capture = threading.Thread(target=self._capture, name="edgecl-capture", daemon=True)
        inference = threading.Thread(target=self._inference_guarded, name="edgecl-inference",
                                     daemon=True)
        t0 = time.perf_counter()
        capture.start()
        inference.start()
        try:
            while inference.is_alive():
                inference.join(tick_s)
                if supervise is not None:
                    supervise()
        finally:
            self._stop.set()
            inference.join()
            elapsed_s = time.perf_counter() - t0
            capture.join(timeout=10)
            self._sinks.close()
            if hasattr(self.source, "close"):
                self.source.close()
        if self._error is not None:
            raise self._error
        return self._report(elapsed_s)

    def _inference_guarded(self) -> None:
        try:
            self._inference()
        except Exception as exc:  # re-raised on the calling thread by run()
            self._error = exc
            self._stop.set()

    def _report(self, elapsed_s: float) -> LoopReport:
        lat = np.asarray(self._latencies_ms or [0.0])
        inf = np.asarray(self._infer_ms or [0.0])
        stats = getattr(self.source, "stats", None)
        return LoopReport(
            frames=self._frames, fps=round(self._frames / elapsed_s, 2) if elapsed_s > 0 else 0.0,
            latency_ms_p50=round(float(np.percentile(lat, 50)), 2),
            latency_ms_p95=round(float(np.percentile(lat, 95)), 2),
            infer_ms_p50=round(float(np.percentile(inf, 50)), 2),
            dropped=self._buffer.dropped, skipped=int(getattr(stats, "skipped", 0) or 0),
            swaps=self._swaps, swap_stall_ms_max=round(self._swap_stall_ms, 3),
            model_version=self.model_version, elapsed_s=round(elapsed_s, 3),
            sink_errors=self._sinks.errors)
