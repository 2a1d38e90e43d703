"""The on-device loop: capture thread -> inference thread -> one thread per sink.

The inference thread is the only owner of the backend; it swaps to a newly promoted model
between two frames after the :class:`ModelWatcher` has loaded and warmed it aside.

Fault containment (roboflow/inference's ``InferencePipeline`` is the model): whatever a sink
raises is logged (rate-limited) and counted, and the sink is kept -- a sink that fails for a
while (the memory sink on a full disk) works again when the fault clears. A sink that hangs
stalls only its own bounded queue: results for it are then dropped (counted), never waiting
the loop. Shutdown is bounded whatever the threads do: a capture thread blocked in
``source.read()`` is unblocked by closing the source, and a thread still blocked after that
is left behind (it is a daemon) and named in the log.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgecl.continual.merges import merge_detections
from edgecl.errors import EdgeclError
from edgecl.frames import Detections, Frame, StreamState
from edgecl.models.base import Backend
from edgecl.runtime.buffers import CLOSED, make_buffer
from edgecl.runtime.watchdog import StageState, Watchdog

log = logging.getLogger(__name__)

# Frames whose latency and inference time are kept for the figures (a ring: ~2 min at 30 fps).
STATS_WINDOW = 4096


@dataclass(frozen=True)
class FrameResult:
    """A frame with its detections, handed to the sinks."""

    frame: Frame
    detections: Detections
    model_version: str
    latency_ms: float
    infer_ms: float
    labelling: Detections | None = None
    """The detections down to the labels' uncertain band when it lies below ``model.conf``
    (what the labels sink reads); None: ``detections`` are all there are."""


@dataclass(frozen=True)
class LoopReport:
    """What a run did; ``edgecl run --json`` prints it.

    Latency and inference-time percentiles are over the last :data:`STATS_WINDOW` frames (a
    ring), not the whole run; ``fps`` is ``frames / elapsed_s`` over the whole run.

    Attributes:
        frames: frames processed.
        fps: frames per second over the run.
        latency_ms_p50: median capture-to-detection latency, ms (last STATS_WINDOW frames).
        latency_ms_p95: 95th percentile of that latency, ms.
        infer_ms_p50: median ``backend.infer`` time, ms (last STATS_WINDOW frames).
        dropped: frames the back-pressure policy dropped.
        skipped: unreadable images the source skipped.
        swaps: hot swaps to a new model version.
        swap_stall_ms_max: longest pause of the inference thread at a swap, ms.
        model_version: the version running at the end.
        elapsed_s: wall time of the run, seconds.
        sink_errors: exceptions raised by the sinks, all sinks together.
        refused_labels: labels the source refused (its ``stats.refused_labels``).
        bad_labels: frames the source delivered unlabelled because their label file was
            refused (unreadable, not UTF-8, shared by two images, or holding a refused row;
            its ``stats.bad_labels``).
        empty_boxes: label rows the source dropped for a box with no area (its
            ``stats.empty_boxes``).
        sink_errors_by_sink: exceptions per sink name.
        sink_dropped: results a sink never received (its thread stalled or died), all sinks.
        reconnects: times a live source reopened its camera or stream.
        source_error: why the source stopped delivering frames before the run was asked to
            end (a camera that gave up reconnecting); empty when it did not fail.
    """

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
    refused_labels: int = 0
    bad_labels: int = 0
    empty_boxes: int = 0
    sink_errors_by_sink: dict = field(default_factory=dict)
    sink_dropped: int = 0
    reconnects: int = 0
    source_error: str = ""

    def to_json(self) -> dict:
        """Return a JSON-ready dict."""
        return asdict(self)


PACE_RESET_S = 1.0
"""How far (seconds) behind its schedule a paced source may fall before the schedule restarts
from now instead of catching up."""


class SampleRing:
    """Fixed-size ring of float samples (thread-safe; memory does not grow with the run).

    Args:
        size: most samples kept; older ones are overwritten.
    """

    def __init__(self, size: int = STATS_WINDOW):
        self._data = np.zeros(size, np.float64)
        self._next = 0
        self._count = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def append(self, value: float) -> None:
        """Add one sample, overwriting the oldest when full."""
        with self._lock:
            self._data[self._next] = value
            self._next = (self._next + 1) % len(self._data)
            self._count = min(self._count + 1, len(self._data))

    def recent(self, n: int | None = None) -> np.ndarray:
        """The last ``n`` samples (all kept samples when ``None``), oldest first, as a copy."""
        with self._lock:
            n = self._count if n is None else max(0, min(n, self._count))
            idx = (self._next - n + np.arange(n)) % len(self._data)
            return self._data[idx]


def sink_name(sink, taken) -> str:
    """A sink's name for counters and logs: its ``name`` attribute, else its class name;
    ``#2``, ``#3``... appended when ``taken`` already has it."""
    base = getattr(sink, "name", None)
    base = base if isinstance(base, str) and base else type(sink).__name__
    name, k = base, 2
    while name in taken:
        name, k = f"{base}#{k}", k + 1
    return name


class _SinkRunner:
    """One sink, its bounded queue and its thread.

    Whatever ``write`` or ``close`` raises is counted and logged (the first time with its
    traceback, then at most one line per ``log_every_s``), and the sink is kept. When the queue
    is full the producer waits up to ``stall_timeout_s``; past that the sink is "stalled" and
    results for it are dropped (counted) without waiting until it takes one again.
    """

    def __init__(self, sink, name: str, maxsize: int, watchdog: Watchdog,
                 stall_timeout_s: float = 2.0, log_every_s: float = 60.0):
        self.sink = sink
        self.name = name
        self.maxsize = maxsize
        self.stall_timeout_s = stall_timeout_s
        self.log_every_s = log_every_s
        self.errors = 0
        self.dropped = 0
        self.written = 0
        self._consecutive = 0
        self._last_error = ""
        self._suppressed = 0
        self._last_log_s = -float("inf")
        self._last_stall_log_s = -float("inf")
        self._stalled = False
        self._closing = False
        self._pending = 0  # queued + being written
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._wd = watchdog
        self._thread = threading.Thread(target=self._run, name=f"edgecl-sink-{name}", daemon=True)

    def start(self) -> None:
        """Start the sink's thread."""
        self._thread.start()
        self._wd.idle("sinks", "waiting for results", part=self.name)

    def idle(self) -> bool:
        """True when every result handed over has been written (or failed)."""
        with self._cond:
            return self._pending == 0

    def put(self, result: FrameResult, stop: threading.Event | None = None) -> None:
        """Queue a result; waits at most ``stall_timeout_s`` while full, else drops it."""
        with self._cond:
            deadline = None
            while len(self._items) >= self.maxsize:
                if self._stalled or self._closing or not self._thread.is_alive() or (
                        stop is not None and stop.is_set()):
                    self.dropped += 1
                    return
                now = time.monotonic()
                deadline = deadline or now + self.stall_timeout_s
                if now >= deadline:
                    self._stalled = True
                    self.dropped += 1
                    if now - self._last_stall_log_s >= self.log_every_s:
                        self._last_stall_log_s = now
                        log.warning("sink %s has not taken a result for %.1f s; results for it "
                                    "are dropped until it does (%d so far; detection goes on)",
                                    self.name, self.stall_timeout_s, self.dropped)
                    return
                self._cond.wait(min(0.1, deadline - now))
            if self._closing or not self._thread.is_alive():
                self.dropped += 1
                return
            self._items.append(result)
            self._pending += 1
            self._cond.notify_all()

    def request_close(self) -> None:
        """Let the thread write what is queued, close the sink and end (never waits)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the thread to end; returns whether it did."""
        self._thread.join(max(0.0, timeout_s))
        return not self._thread.is_alive()

    def _take(self):
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closing)
            if not self._items:
                return CLOSED
            item = self._items.popleft()
            self._stalled = False
            self._cond.notify_all()
            return item

    def _run(self) -> None:
        ended = False
        try:
            self._serve()
            ended = True
        finally:
            if not ended:  # only a BaseException (SystemExit...) gets here: put() then drops
                with self._cond:
                    self.dropped += len(self._items)
                    self._items.clear()
                    self._pending = 0
                log.critical("sink %s: its thread died; results for it are dropped", self.name)
                self._wd.fault("sinks", "thread died", part=self.name, waiting=True)

    def _serve(self) -> None:
        while True:
            item = self._take()
            if item is CLOSED:
                break
            if self._consecutive:
                self._wd.fault("sinks", f"{self._consecutive} failures in a row; retrying",
                               part=self.name)
            else:
                self._wd.beat("sinks", "writing", part=self.name)
            self._call("write", item)
            with self._cond:
                self._pending -= 1
                empty = not self._items
            if empty and not self._consecutive:
                self._wd.idle("sinks", "waiting for results", part=self.name)
            elif empty:  # failing, but waiting for the next result by design: never stuck
                self._wd.fault("sinks", self._last_error, part=self.name, waiting=True)
        self._call("close")
        self._wd.stop("sinks", f"closed after {self.written} results, {self.errors} errors",
                      part=self.name)

    def _call(self, method: str, *args) -> None:
        try:
            getattr(self.sink, method)(*args)
        except Exception as exc:  # a sink's fault is contained whatever it is: logged, counted
            self._failed(method, exc)
        else:
            if method == "write":
                self.written += 1
                if self._consecutive and not getattr(self.sink, "stopped", False):
                    log.info("sink %s works again after %d failures", self.name, self._consecutive)
                self._consecutive = 0

    def _failed(self, method: str, exc: Exception) -> None:
        self.errors += 1
        self._consecutive += 1
        self._last_error = (f"{method} failed ({self._consecutive} in a row): "
                            f"{type(exc).__name__}: {exc}")
        self._wd.fault("sinks", self._last_error, part=self.name)
        now = time.monotonic()
        if self.errors == 1:
            # an EdgeclError names its cause in one line (a full disk: what and where); any
            # other error is a fault of the sink itself, worth its traceback once
            log.error("sink %s: %s failed (%s: %s); the sink is kept and detection goes on",
                      self.name, method, type(exc).__name__, exc,
                      exc_info=None if isinstance(exc, EdgeclError) else exc)
            self._last_log_s = now
        elif now - self._last_log_s >= self.log_every_s:
            log.error("sink %s: %d more failures in the last %.0f s (%d in all); last: %s: %s",
                      self.name, self._suppressed + 1, now - self._last_log_s, self.errors,
                      type(exc).__name__, exc)
            self._last_log_s, self._suppressed = now, 0
        else:
            self._suppressed += 1


class _Sinks:
    """The sinks of a loop, each with its own thread (a slow or failing sink delays no other)."""

    def __init__(self, sinks, maxsize: int, watchdog: Watchdog, stall_timeout_s: float):
        taken: list[str] = []
        self.runners: list[_SinkRunner] = []
        for sink in sinks:
            name = sink_name(sink, taken)
            taken.append(name)
            self.runners.append(_SinkRunner(sink, name, maxsize, watchdog, stall_timeout_s))
        self._wd = watchdog

    def start(self) -> None:
        """Start every sink's thread."""
        if not self.runners:
            self._wd.idle("sinks", "no sinks")
        for runner in self.runners:
            runner.start()

    def put(self, result: FrameResult, stop: threading.Event | None = None) -> None:
        """Hand a result to every sink (see :meth:`_SinkRunner.put`)."""
        for runner in self.runners:
            runner.put(result, stop)

    def idle(self) -> bool:
        """True when every sink has written everything handed to it."""
        return all(r.idle() for r in self.runners)

    def close(self, timeout_s: float) -> None:
        """Drain and close every sink within ``timeout_s`` in all; a sink still busy after it
        is left behind (logged)."""
        for runner in self.runners:
            runner.request_close()
        deadline = time.monotonic() + timeout_s
        for runner in self.runners:
            if not runner.join(deadline - time.monotonic()):
                log.error("sink %s did not finish within %.0f s of shutdown (blocked in write or "
                          "close); its thread is left behind", runner.name, timeout_s)

    @property
    def errors(self) -> int:
        """Exceptions raised by all sinks together."""
        return sum(r.errors for r in self.runners)

    @property
    def dropped(self) -> int:
        """Results not delivered (stalled or dead sink), all sinks together."""
        return sum(r.dropped for r in self.runners)

    def errors_by_sink(self) -> dict[str, int]:
        """Exceptions per sink name."""
        return {r.name: r.errors for r in self.runners}


def realtime_fps(source) -> float | None:
    """The frame rate to pace an open recorded source at (``runtime.realtime``), or None.

    A live source (camera, stream) is never paced: it delivers at its own rate. A video file
    gives its declared rate; an image folder the ``fps`` of its URI (``dir://DIR?fps=10``).

    Args:
        source: the open frame source.

    Returns:
        Frames per second, or None (live, or no known rate: then one warning).
    """
    if getattr(source, "is_live", False):
        return None
    from edgecl.runtime.sources.base import MAX_FPS, MIN_FPS

    fps = getattr(source, "fps", None)
    where = getattr(source, "uri", "the source")
    if not fps or not MIN_FPS <= fps <= MAX_FPS:
        log.warning("runtime.realtime: %s has no usable frame rate to pace it at (%s; a folder "
                    "takes ?fps=N); it is read as fast as it decodes", where, fps or "none")
        return None
    log.info("runtime.realtime: %s paced at %g frames per second", where, fps)
    return float(fps)


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
        sink_queue_size: bound of each sink's queue.
        watchdog: where the capture, inference and sinks stages beat (a private one if
            ``None``; the runtime passes the one ``/healthz`` reads).
        stop_timeout_s: at shutdown, the longest wait for each of: the inference thread, the
            capture thread after the source is closed (at most 2 s), the sinks to drain and close.
        sink_stall_timeout_s: how long the inference thread waits on a sink whose queue is full
            before that sink counts as stalled and its results are dropped.
        realtime: read a recorded source (video file, image folder) at its frame rate, as a
            camera delivers frames (``runtime.realtime``; see :func:`realtime_fps`), and under
            ``back_pressure: auto`` drop the oldest frame when inference lags, as for a camera;
            a live source is never paced.
        merged_classes: ``callable() -> {merged class id: id it means}`` (the class registry's
            merges, cached by the caller): a detection in a merged class's slot is given as the
            class it was merged into, and NMS'd again with ``merge_iou``
            (:func:`edgecl.continual.merges.merge_detections`); ``None``: no merges.
        merge_iou: the NMS IoU threshold for that (``model.iou``).
        shown_conf: with a backend run below ``model.conf`` for the labels' uncertain band,
            ``model.conf``: the sinks get the detections at or above it, the labels sink all
            of them (``FrameResult.labelling``); None: every sink gets what the backend gives.
    """

    def __init__(self, source, backend: Backend, model_version: str, *, sinks=(),
                 back_pressure: str = "auto", watcher=None, max_frames: int | None = None,
                 sink_queue_size: int = 64, watchdog: Watchdog | None = None,
                 stop_timeout_s: float = 10.0, sink_stall_timeout_s: float = 2.0,
                 realtime: bool = False, merged_classes=None, merge_iou: float = 0.7,
                 shown_conf: float | None = None):
        self.source = source
        self._merged_classes = merged_classes
        self._merge_iou = float(merge_iou)
        self._shown_conf = None if shown_conf is None else float(shown_conf)
        self.realtime = bool(realtime)
        self.pace_fps: float | None = None  # set once the source is open (its rate is known)
        self.backend = backend
        self.model_version = model_version
        self.watcher = watcher
        self.max_frames = max_frames
        self.stop_timeout_s = stop_timeout_s
        self.watchdog = watchdog or Watchdog()
        self._back_pressure = back_pressure
        self._buffer = make_buffer(back_pressure, getattr(source, "is_live", False))
        self._sinks = _Sinks(sinks, sink_queue_size, self.watchdog, sink_stall_timeout_s)
        self._stop = threading.Event()
        self._latencies_ms = SampleRing()
        self._infer_ms = SampleRing()
        self._done_s = SampleRing()
        self._swaps = 0
        self._swap_stall_ms = 0.0
        self._frames = 0
        self._error: Exception | None = None
        self._captured = 0
        self._source_error = ""
        self.watchdog.register("capture", probe=self._capture_probe)
        self.watchdog.register("inference")
        self.watchdog.register("sinks")

    @property
    def frames_done(self) -> int:
        """Frames processed so far."""
        return self._frames

    def current_fps(self, window: int = 50) -> float:
        """Inference rate over the last ``window`` frames (0 before the first frame)."""
        recent = self._infer_ms.recent(window)
        mean_ms = float(np.mean(recent)) if len(recent) else 0.0
        return round(1000.0 / mean_ms, 2) if mean_ms > 0 else 0.0

    def delivered_fps(self, window_s: float = 5.0) -> float:
        """Frames actually processed per second over the last ``window_s`` seconds (what a
        camera delivers, as opposed to :meth:`current_fps`, the inference rate); 0 when idle."""
        done = self._done_s.recent()
        now = time.monotonic()
        recent = done[done >= now - window_s]
        if len(recent) < 2:
            return 0.0
        return round((len(recent) - 1) / max(now - float(recent[0]), 1e-6), 2)

    def counters(self) -> dict:
        """Running totals since the loop started, cheap to read from any thread.

        Returns:
            ``captured`` (frames the capture thread handed over), ``processed``, ``dropped``
            (dropped by back-pressure, never inferred), ``swaps`` (model hot swaps),
            ``skipped`` and ``reconnects`` (the source's unreadable frames and reconnections),
            ``sinks`` (``{sink name: {"dropped": results it never received, "errors": n}}``).
        """
        stats = getattr(self.source, "stats", None)
        return {"captured": self._captured, "processed": self._frames,
                "dropped": self._buffer.dropped, "swaps": self._swaps,
                "skipped": int(getattr(stats, "skipped", 0) or 0),
                "reconnects": int(getattr(stats, "reconnects", 0) or 0),
                "sinks": {r.name: {"dropped": r.dropped, "errors": r.errors}
                          for r in self._sinks.runners}}

    def latency_p50(self, window: int = 200) -> float:
        """Median capture-to-detection latency over the last ``window`` frames, ms."""
        recent = self._latencies_ms.recent(window)
        return round(float(np.median(recent)), 2) if len(recent) else 0.0

    def latency_p95(self, window: int = 200) -> float:
        """95th percentile of the capture-to-detection latency over the last ``window`` frames, ms."""
        recent = self._latencies_ms.recent(window)
        return round(float(np.percentile(recent, 95)), 2) if len(recent) else 0.0

    def idle(self) -> bool:
        """True when every captured frame has been processed and written by the sinks
        (only meaningful while the capture thread is paused, e.g. between two tasks)."""
        return self._captured == self._frames + self._buffer.dropped and self._sinks.idle()

    def request_stop(self) -> None:
        """Ask every thread to finish (safe from a signal handler)."""
        self._stop.set()

    def _capture_probe(self):
        """Capture blocked in ``read()`` on a paused or reconnecting source is not stuck."""
        if getattr(self.source, "paused", False):
            return StageState.IDLE, "source paused"
        if getattr(self.source, "state", None) is StreamState.RECONNECTING:
            return StageState.DEGRADED, "source reconnecting"
        return None

    def _capture(self) -> None:
        wd = self.watchdog
        started_s, reads = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                if self.pace_fps:  # the next frame is due 1/fps after the previous one
                    due_s = started_s + reads / self.pace_fps
                    reads += 1
                    wd.idle("capture", f"paced at {self.pace_fps:g} fps")
                    if self._stop.wait(max(0.0, due_s - time.monotonic())):
                        break
                wd.beat("capture", "reading")
                frame = self.source.read()
                if self.pace_fps and frame is not None:
                    now_s = time.monotonic()
                    if now_s - (started_s + reads / self.pace_fps) > PACE_RESET_S:
                        # a read that waited (a folder gone a while): the next frame is due a
                        # frame's time from now; before, the frames it was behind came at
                        # once and back-pressure dropped them
                        started_s = now_s + (1 - reads) / self.pace_fps
                if frame is None:
                    wd.stop("capture", "source ended")
                    # before: a video that ended stopped the run without a word (a service
                    # restarting it replayed the file in silence)
                    uri = getattr(self.source, "uri", None)  # none: a benchmark's frames
                    if uri:
                        log.info("source %s ended after %d frame(s): the run stops (a video "
                                 "file or a folder plays once; ?loop=1 plays it again and "
                                 "again)", uri, self._captured)
                    break
                wd.idle("capture", "waiting for inference")
                if self._buffer.put(frame, self._stop):
                    self._captured += 1
            else:
                wd.stop("capture", "stopped")
        except Exception as exc:  # a dead camera must end the run cleanly, never hang it
            self._source_error = str(exc) or type(exc).__name__
            log.error("capture stopped: %s", exc)
            wd.stop("capture", f"failed: {type(exc).__name__}: {exc}")
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
        if self._merged_classes is not None:  # a model trained before 'classes merge truck car'
            detections = merge_detections(detections, self._merged_classes(), self._merge_iou)
        labelling = None
        if self._shown_conf is not None:
            labelling, detections = detections, detections.above(self._shown_conf)
        infer_ms = (time.perf_counter() - t0) * 1000
        since_s = (time.monotonic() - frame.captured_mono_s if frame.captured_mono_s is not None
                   else time.time() - frame.ts_s)
        latency_ms = max(0.0, since_s * 1000)
        self._infer_ms.append(infer_ms)
        self._latencies_ms.append(latency_ms)
        self._done_s.append(time.monotonic())
        self._frames += 1
        self._sinks.put(FrameResult(frame, detections, self.model_version, latency_ms, infer_ms,
                                    labelling), self._stop)

    def _inference(self) -> None:
        wd = self.watchdog
        while not self._stop.is_set():
            item = self._buffer.get(timeout_s=0.1)
            if item is CLOSED:
                return
            if item is None:
                wd.idle("inference", "waiting for frames")
                continue
            wd.beat("inference", "inferring")
            self._maybe_swap()
            self._infer_one(item)
            if self.max_frames is not None and self._frames >= self.max_frames:
                self._stop.set()
                return

    def run(self, supervise=None, tick_s: float = 0.2) -> LoopReport:
        """Run until the source ends, ``max_frames`` or :meth:`request_stop`.

        The calling (main) thread supervises: it waits on the worker threads, stays free to
        handle signals and calls ``supervise()`` every ``tick_s``. Shutdown is bounded (see
        ``stop_timeout_s``); a thread still blocked after it is logged and left behind.

        Args:
            supervise: optional callable run periodically on the calling thread.
            tick_s: supervision period in seconds.

        Returns:
            The run's :class:`LoopReport`.

        Raises:
            Exception: whatever the inference thread raised (e.g. the backend failing).
        """
        if hasattr(self.source, "open"):
            self.source.open()
            self.pace_fps = realtime_fps(self.source) if self.realtime else None
            if self.pace_fps:  # paced like a camera, it drops like one when inference lags
                self._buffer = make_buffer(self._back_pressure, True)
        self._sinks.start()
        capture = threading.Thread(target=self._capture, name="edgecl-capture", daemon=True)
        inference = threading.Thread(target=self._inference_guarded, name="edgecl-inference",
                                     daemon=True)
        t0 = time.perf_counter()
        capture.start()
        inference.start()
        elapsed_s = 0.0
        try:
            stop_seen_s = None
            while inference.is_alive():
                inference.join(tick_s)
                if supervise is not None:
                    supervise()
                if self._stop.is_set():
                    stop_seen_s = stop_seen_s or time.monotonic()
                    if time.monotonic() - stop_seen_s > self.stop_timeout_s:
                        break
        finally:
            elapsed_s = time.perf_counter() - t0
            self._shutdown(capture, inference)
        if self._error is not None:
            raise self._error
        return self._report(elapsed_s)

    def _shutdown(self, capture: threading.Thread, inference: threading.Thread) -> None:
        """Stop every thread within bounded time (see the class docstring)."""
        self._stop.set()
        self._buffer.close()  # wakes a capture thread waiting for room
        inference.join(self.stop_timeout_s)
        if inference.is_alive():
            log.error("inference thread still busy %.0f s after stop (backend.infer blocked); "
                      "it is left behind", self.stop_timeout_s)
        capture.join(0.2)  # a read in progress on a working source ends within a frame
        if capture.is_alive() and hasattr(self.source, "close"):
            self._close_source()  # unblocks a read() waiting on a camera, a stream or a pause
            capture.join(min(2.0, self.stop_timeout_s))
            if capture.is_alive():
                log.warning("capture thread still blocked in %s.read() after the source was "
                            "closed; it is left behind", type(self.source).__name__)
        self._sinks.close(self.stop_timeout_s)
        if hasattr(self.source, "close"):
            self._close_source()
        if not inference.is_alive():
            self.watchdog.stop("inference", f"run ended after {self._frames} frames")

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # a failing close must not stop the shutdown
            log.warning("closing source %s failed: %s", type(self.source).__name__, exc)

    def _inference_guarded(self) -> None:
        try:
            self._inference()
        except Exception as exc:  # re-raised on the calling thread by run()
            self._error = exc
            self._stop.set()

    def _report(self, elapsed_s: float) -> LoopReport:
        lat = self._latencies_ms.recent()
        inf = self._infer_ms.recent()
        lat = lat if len(lat) else np.zeros(1)
        inf = inf if len(inf) else np.zeros(1)
        stats = getattr(self.source, "stats", None)
        refused = getattr(stats, "refused_labels", getattr(stats, "bad_labels", 0))
        counts = self.counters()
        return LoopReport(
            frames=self._frames, fps=round(self._frames / elapsed_s, 2) if elapsed_s > 0 else 0.0,
            latency_ms_p50=round(float(np.percentile(lat, 50)), 2),
            latency_ms_p95=round(float(np.percentile(lat, 95)), 2),
            infer_ms_p50=round(float(np.percentile(inf, 50)), 2),
            dropped=counts["dropped"], skipped=counts["skipped"],
            swaps=counts["swaps"], swap_stall_ms_max=round(self._swap_stall_ms, 3),
            model_version=self.model_version, elapsed_s=round(elapsed_s, 3),
            sink_errors=self._sinks.errors, refused_labels=int(refused or 0),
            bad_labels=int(getattr(stats, "bad_labels", 0) or 0),
            empty_boxes=int(getattr(stats, "empty_boxes", 0) or 0),
            sink_errors_by_sink=self._sinks.errors_by_sink(), sink_dropped=self._sinks.dropped,
            reconnects=counts["reconnects"], source_error=self._source_error)
