"""Live camera sources: ``v4l2://``, ``csi://`` (Jetson, GStreamer) and ``rtsp://`` (FFmpeg).

They share :class:`CaptureSource`: a failed read releases the capture, waits, and opens a new
one, with exponential back-off (``reconnect_initial_s`` doubling up to ``reconnect_max_s``),
until ``max_consecutive_failures`` reconnects in a row have delivered no frame (the failed
read that started them, then each reconnect's). Opening fails fast: a camera
that cannot be opened at start raises :class:`SourceError` at once, naming it.

A camera driver may block in native code for as long as it likes: FFmpeg waits
:data:`RTSP_TIMEOUT_MS` for a stream that does not answer, a stalled V4L2 or GStreamer driver
may never return. So every call into a capture (open, read, release) is made by a daemon
worker thread that owns it (``edgecl-camera``, one per capture), and the caller waits for the
call in :data:`WAIT_SLICE_S` slices: it walks away when the source is closed (from another
thread) or, while ``open()`` runs on the main thread, when SIGINT or SIGTERM arrives (the
signal's own handler still runs). A stop therefore takes effect within a fraction of a second
whatever the camera does. A capture left behind that way is released by its worker when the
driver returns, and never used again; a source opens no new capture while the one it left
behind is still blocked, so a camera that stays down for hours holds at most one such thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import signal
import sys
import threading
import weakref
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from edgecl.config import SourceConfig
from edgecl.data.images import to_bgr8
from edgecl.errors import SourceError
from edgecl.frames import StreamState
from edgecl.runtime.sources.base import (FrameSource, QueryParams, RawFrame, declared_fps,
                                         redact_uri)

log = logging.getLogger(__name__)
RTSP_TIMEOUT_MS = 10_000
WAIT_SLICE_S = 0.05
"""Longest a caller waits on a call into a capture before it looks again whether to stop."""
CLOSE_WAIT_S = 0.3
"""Seconds :meth:`CaptureSource.close` waits for a read or release in progress to return (a
working camera's does within a frame; a stalled driver may never return: its capture is then
released when it does, or left to the process's exit, so a stop still ends in bounded time).
An open in progress is not waited for: it may take the driver's whole timeout."""
WORKER_THREAD_NAME = "edgecl-camera"
"""Name of the thread that owns a capture (``edgecl-*``: the CLI exits past one left blocked)."""


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a live source uses (fakes implement this in tests)."""

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        """True while the device or stream is open."""

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next frame: ``(ok, BGR uint8 (H, W, 3) or None)``."""

    def release(self) -> None:
        """Close the device or stream."""


CaptureFactory = Callable[[], Capture]


class _Call:
    """One call a :class:`_CaptureWorker` makes for a caller; ``done`` is set once it ended.

    Args:
        what: what the call does, for messages (``"an open"``, ``"a read"``).
        fn: the call (run on the worker thread).
    """

    def __init__(self, what: str, fn: Callable[[], object]):
        self.what = what
        self._fn = fn
        self.done = threading.Event()
        self.value: object = None
        self.error: Exception | None = None
        self.cancelled = False

    def run(self) -> None:
        """Make the call; its result or exception is kept for the caller."""
        try:
            self.value = self._fn()
        except Exception as exc:  # raised again on the caller's thread
            self.error = exc
        finally:
            self.done.set()

    def cancel(self) -> None:
        """Never made: the worker was retired first."""
        self.cancelled = True
        self.done.set()


class _CaptureWorker:
    """One capture and the daemon thread that makes every call into it, one at a time.

    :meth:`retire` ends the worker: the call in progress (if any) is left to return, calls still
    queued are cancelled, the capture is released on the worker thread, and the thread ends.
    Nothing uses that capture again.

    Args:
        factory: creates the capture (called on the worker thread by :meth:`open`).

    Attributes:
        thread: the worker thread (alive until the capture is released).
        busy: what the call in progress does (``"an open"``, ``"a read"``, ``"a release"``),
            ``None`` when idle.
    """

    def __init__(self, factory: CaptureFactory):
        self._factory = factory
        self._cap: Capture | None = None
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._retired = threading.Event()
        self.busy: str | None = None
        self.thread = threading.Thread(target=self._serve, name=WORKER_THREAD_NAME, daemon=True)
        self.thread.start()

    def open(self) -> _Call:
        """Create the capture; the call's value is ``(opened, declared fps or None)``."""

        def call() -> tuple[bool, float | None]:
            self._cap = self._factory()
            opened = bool(self._cap.isOpened())
            return opened, declared_fps(self._cap) if opened else None

        return self._submit("an open", call)

    def read(self) -> _Call:
        """Read a frame; the call's value is the image, or ``None`` when the read failed."""

        def call() -> np.ndarray | None:
            if self._cap is None:
                return None
            ok, image = self._cap.read()
            return image if ok and image is not None and image.size else None

        return self._submit("a read", call)

    def retire(self) -> None:
        """Release the capture once the call in progress returns, then end (idempotent, never
        blocks)."""
        if not self._retired.is_set():
            self._retired.set()
            self._calls.put(None)

    def _submit(self, what: str, fn: Callable[[], object]) -> _Call:
        call = _Call(what, fn)
        self._calls.put(call)
        return call

    def _serve(self) -> None:
        try:
            while (call := self._calls.get()) is not None:
                if self._retired.is_set():
                    call.cancel()
                    continue
                self.busy = call.what
                call.run()
                self.busy = None
        finally:
            self.busy = "a release"
            cap, self._cap = self._cap, None
            if cap is not None:
                try:
                    cap.release()
                except Exception as exc:  # a driver that fails to let go: nothing more to do
                    log.warning("releasing a camera capture failed: %s", exc)
            self.busy = None


class _Workers:
    """The worker a source uses now and the last one it retired. Kept apart from the source so
    that a source dropped without ``close()`` still retires its worker when collected."""

    def __init__(self):
        self.lock = threading.Lock()  # INVARIANT: guards current and retired, never held across a wait
        self.current: _CaptureWorker | None = None
        self.retired: _CaptureWorker | None = None

    def retire_current(self) -> _CaptureWorker | None:
        """Retire the current worker (it becomes :attr:`retired`); returns it (None: none)."""
        with self.lock:
            worker, self.current = self.current, None
            if worker is not None:
                worker.retire()
                self.retired = worker
        return worker


@contextlib.contextmanager
def _notify_stop_signals(notify: Callable[[], None]) -> Iterator[None]:
    """While the block runs on the main thread, SIGINT, SIGTERM and SIGHUP also call
    ``notify()``.

    The handler in place still runs right after (``edgecl run``'s clean stop; Ctrl-C's
    ``KeyboardInterrupt``, which then unwinds the block). A signal without a Python handler
    (SIG_DFL, SIG_IGN) keeps its action, and off the main thread the block runs as is.

    Args:
        notify: called from the signal handler; must only set a flag.
    """
    wrapped: dict[int, tuple[Callable, Callable]] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue

            def handler(signum, frame, previous=previous):
                notify()
                previous(signum, frame)

            signal.signal(sig, handler)
            wrapped[sig] = (previous, handler)
    try:
        yield
    finally:
        for sig, (previous, handler) in wrapped.items():
            if signal.getsignal(sig) is handler:  # unless someone has replaced it since
                signal.signal(sig, previous)


class CaptureSource(FrameSource):
    """A live source over an OpenCV-style capture, with reconnection and back-off.

    Every call into a capture runs on its worker thread (see the module docstring): ``close()``
    from another thread ends a read, a reconnection or an open in progress within
    :data:`WAIT_SLICE_S`, and SIGINT or SIGTERM during ``open()`` on the main thread stops the
    open (``open()`` then returns with the source closed, unless the signal's handler raised).

    Args:
        uri: the URI.
        factory: creates a new capture (called at open and at every reconnection, on the
            capture's worker thread).
        cfg: back-off settings (``reconnect_initial_s``, ``reconnect_max_s``,
            ``max_consecutive_failures``).
        sleep: waits between attempts; defaults to a wait that :meth:`close` interrupts.
        open_hint: what to check when the camera cannot be opened at start (ends that error line).
    """

    is_live = True

    def __init__(self, uri: str, factory: CaptureFactory, cfg: SourceConfig | None = None,
                 sleep: Callable[[float], object] | None = None, open_hint: str = ""):
        super().__init__(uri, cfg)
        self._factory = factory
        self._open_hint = open_hint
        self._sleep = sleep or self._closing.wait
        self._workers = _Workers()
        weakref.finalize(self, self._workers.retire_current)
        self._signalled = False  # SIGINT/SIGTERM arrived while open() waited on the main thread
        self._failures = 0
        self._delay_s = self.cfg.reconnect_initial_s

    def _stopping(self) -> bool:
        return self._closing.is_set() or self._signalled

    def _on_stop_signal(self) -> None:
        self._signalled = True

    def _open(self) -> None:
        self._failures, self._delay_s = 0, self.cfg.reconnect_initial_s
        self._signalled = False
        with _notify_stop_signals(self._on_stop_signal):
            opened, fps = self._open_capture()
        if opened is None:  # closed, or a stop signal, while the driver opened: FrameSource closes
            self._closing.set()
            return
        if not opened:
            hint = f"; {self._open_hint}" if self._open_hint else ""
            raise SourceError(f"{self.uri}: cannot open the camera/stream{hint}")
        self.fps = fps

    def _await(self, call: _Call) -> tuple[bool, object]:
        """Wait for ``call`` in slices.

        Returns:
            ``(True, value)``; ``(False, None)`` when the source stops first (the call is left
            to the worker).

        Raises:
            Exception: what the call raised.
        """
        while not call.done.wait(WAIT_SLICE_S):
            if self._stopping():
                return False, None
        if call.cancelled:
            return False, None
        if call.error is not None:
            raise call.error
        return True, call.value

    def _wait_retired(self) -> bool:
        """Wait until the worker retired last has released its capture and ended.

        Returns:
            False when the source stops first (the worker is still blocked in the driver).
        """
        worker = self._workers.retired
        if worker is None:
            return True
        warned = False
        while worker.thread.is_alive():
            worker.thread.join(WAIT_SLICE_S)
            if self._stopping() and worker.thread.is_alive():
                return False
            if not warned and worker.thread.is_alive() and worker.busy != "a release":
                log.warning("%s: the previous capture is still blocked in the driver (%s); "
                            "waiting for it before opening a new one", self.uri, worker.busy or "a call")
                warned = True
        with self._workers.lock:
            if self._workers.retired is worker:
                self._workers.retired = None
        return True

    def _open_capture(self) -> tuple[bool | None, float | None]:
        """Open a new capture on a new worker.

        Returns:
            ``(True, fps)`` opened; ``(False, None)`` the driver refused (that capture is
            released); ``(None, None)`` the source stopped first (a worker still blocked is left
            to release its capture when the driver returns).
        """
        if not self._wait_retired():
            return None, None
        with self._workers.lock:
            if self._stopping():
                return None, None
            worker = self._workers.current = _CaptureWorker(self._factory)
        try:
            done, value = self._await(worker.open())
        except BaseException:  # the factory failed, or Ctrl-C: never leave the worker running
            self._workers.retire_current()
            raise
        if not done:
            self._workers.retire_current()
            return None, None
        opened, fps = value
        if not opened:
            self._release()
            return False, None
        return True, fps

    def _read_once(self) -> np.ndarray | None:
        worker = self._workers.current
        if worker is None:
            return None
        done, image = self._await(worker.read())
        return image if done else None

    def _next(self) -> RawFrame | None:
        while not self._closing.is_set():
            image = self._read_once()
            if image is not None:
                self._failures, self._delay_s = 0, self.cfg.reconnect_initial_s
                self._transition(StreamState.OPEN)
                return RawFrame(to_bgr8(image))  # a Y16 thermal core's counts: stretched
            if self._closing.is_set():  # closed while a read waited: no failure to report
                return None
            self._failures += 1
            # the first failure starts reconnecting; each later one is a reconnect that gave
            # no frame (before, max_consecutive_failures=3 gave up after 2 reconnects)
            if self._failures > self.cfg.max_consecutive_failures:
                self._release()
                self._transition(StreamState.EXHAUSTED)
                raise SourceError(f"{self.uri}: giving up after {self._failures - 1} reconnect(s) "
                                  "in a row that gave no frame (source.max_consecutive_failures)")
            self._reconnect()
        return None

    def _reconnect(self) -> None:
        self._transition(StreamState.RECONNECTING)
        self._release()
        log.warning("%s: read failed (%d in a row); reconnecting in %.2f s",
                    self.uri, self._failures, self._delay_s)
        self._sleep(self._delay_s)
        self._delay_s = min(self._delay_s * 2, self.cfg.reconnect_max_s)
        if self._closing.is_set():
            return
        self._count("reconnects")
        self._open_capture()

    def _release(self) -> None:
        """Release the capture and wait (until the source stops) for its worker to end."""
        self._workers.retire_current()
        self._wait_retired()

    def _close(self) -> None:
        worker = self._workers.retire_current() or self._workers.retired
        if worker is None or not worker.thread.is_alive():
            return
        if worker.busy == "an open":
            log.info("%s: closed while the camera/stream was opening; that open is left to "
                     "finish in the background (its capture is then released)", self.uri)
            return
        worker.thread.join(CLOSE_WAIT_S)
        if worker.thread.is_alive():
            log.warning("%s: %s is still blocked in the camera driver after %.1f s; the capture is "
                        "released when it returns, or left to the process's exit",
                        self.uri, worker.busy or "a call", CLOSE_WAIT_S)


def _cv2_capture(target: int | str, api: int, props: dict[int, float], params: tuple[int, ...] = ()
                 ) -> CaptureFactory:
    def factory():
        import cv2

        from edgecl.data.images import quiet_opencv

        with quiet_opencv():  # a stream that does not answer: edgecl's line says it, with a hint
            cap = (cv2.VideoCapture(target, api, list(params)) if params
                   else cv2.VideoCapture(target, api))
        for prop, value in props.items():
            cap.set(prop, value)
        return cap

    return factory


DEV_DIR = Path("/dev")
"""Where V4L2 device nodes are (``video0``, ``video1``, ...)."""
V4L2_OPEN_HINT = ("is another program using it, may this user open it (the 'video' group), and "
                  "does it capture frames (a USB camera's second node carries metadata only; "
                  "v4l2-ctl --list-devices)?")
CSI_OPEN_HINT = ("is the sensor connected and nvargus-daemon running? (sudo systemctl restart "
                 "nvargus-daemon)")
RTSP_OPEN_HINT = (f"it refused or did not answer within {RTSP_TIMEOUT_MS // 1000} s: check the host, "
                  f"port and path, that the camera is on and reachable from here (ping, ffprobe), "
                  f"and its user and password")


def _cameras_here() -> str:
    """The V4L2 nodes present, for the error about one that is not (``video2`` after ``video1``,
    before ``video10``)."""
    def number(node: Path) -> int:
        digits = node.name[len("video"):]
        return int(digits) if digits.isdigit() else -1

    nodes = sorted(DEV_DIR.glob("video*"), key=lambda node: (number(node), node.name))
    if not nodes:
        return f"no {DEV_DIR / 'video*'} device here: is the camera plugged in and its driver loaded?"
    return "cameras here: " + ", ".join(str(node) for node in nodes)


def v4l2_source(uri: str, path: str, params: QueryParams, cfg: SourceConfig | None,
                capture_factory: CaptureFactory | None = None, sleep=None) -> CaptureSource:
    """``v4l2://N`` or ``v4l2:///dev/videoN`` ``[?width=&height=&fps=&fourcc=MJPG]``.

    ``fourcc=Y16`` reads a thermal core's raw 16-bit counts (FLIR Lepton on PureThermal, Boson)
    and stretches each frame by its own range, as a 16-bit image
    (:func:`edgecl.data.images.to_bgr8`); OpenCV's own conversion keeps the high byte only.

    Args:
        uri: the full URI.
        path: the part after ``scheme://``, without the query.
        params: the query parameters.
        cfg: back-off settings.
        capture_factory: replaces the OpenCV capture (tests).
        sleep: replaces the back-off wait (tests).

    Returns:
        The (unopened) :class:`CaptureSource`.

    Raises:
        SourceError: bad parameters, or (real cameras) no such device node.
    """
    import cv2

    props = {}
    for name, prop in (("width", cv2.CAP_PROP_FRAME_WIDTH), ("height", cv2.CAP_PROP_FRAME_HEIGHT),
                       ("fps", cv2.CAP_PROP_FPS)):
        value = params.get_int(name, 0)
        if value:
            props[prop] = value
    fourcc = params.get_choice("fourcc", "", ("", "MJPG", "YUYV", "H264", "Y16"))
    if fourcc:
        props[cv2.CAP_PROP_FOURCC] = cv2.VideoWriter_fourcc(*fourcc.ljust(4))
    if fourcc == "Y16":  # OpenCV would keep the high byte of each count; stretch them instead
        props[cv2.CAP_PROP_CONVERT_RGB] = 0
    params.finish()
    if not path:
        raise SourceError(f"{uri}: give a device index (v4l2://0) or node (v4l2:///dev/video0)")
    target: int | str = int(path) if path.isdigit() else path
    node = DEV_DIR / f"video{target}" if isinstance(target, int) else Path(target)
    if capture_factory is None and sys.platform.startswith("linux") and not node.exists():
        raise SourceError(f"{uri}: no such camera device {node} ({_cameras_here()})")
    factory = capture_factory or _cv2_capture(target, cv2.CAP_V4L2, props)
    return CaptureSource(uri, factory, cfg, sleep, V4L2_OPEN_HINT)


def csi_pipeline(sensor_id: int, width: int, height: int, fps: int, flip: int) -> str:
    """GStreamer pipeline for a Jetson CSI camera (``nvarguscamerasrc`` -> BGR appsink).

    Args:
        sensor_id: CSI sensor index.
        width: frame width in pixels.
        height: frame height in pixels.
        fps: frames per second.
        flip: ``nvvidconv`` flip-method (0..7).

    Returns:
        The pipeline string for ``cv2.VideoCapture(..., cv2.CAP_GSTREAMER)``.
    """
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1, format=NV12 ! "
            f"nvvidconv flip-method={flip} ! video/x-raw, width={width}, height={height}, format=BGRx ! "
            f"videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false")


def opencv_has_gstreamer() -> bool:
    """True when the installed OpenCV was built with GStreamer (JetPack's OpenCV is)."""
    import cv2

    return re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) is not None


def csi_source(uri: str, path: str, params: QueryParams, cfg: SourceConfig | None,
               capture_factory: CaptureFactory | None = None, sleep=None) -> CaptureSource:
    """``csi://N[?width=1280&height=720&fps=30&flip=0]``: a Jetson CSI camera.

    Args:
        uri: the full URI.
        path: the part after ``scheme://``, without the query.
        params: the query parameters.
        cfg: back-off settings.
        capture_factory: replaces the OpenCV capture (tests).
        sleep: replaces the back-off wait (tests).

    Returns:
        The (unopened) :class:`CaptureSource`.

    Raises:
        SourceError: bad parameters, or OpenCV without GStreamer support.
    """
    import cv2

    width, height = params.get_int("width", 1280, 1), params.get_int("height", 720, 1)
    fps, flip = params.get_int("fps", 30, 1), params.get_int("flip", 0)
    params.finish()
    if not path.isdigit() or flip > 7:
        raise SourceError(f"{uri}: expected csi://<sensor index>[?width=&height=&fps=&flip=0..7]")
    if capture_factory is None and not opencv_has_gstreamer():
        raise SourceError(f"{uri}: this OpenCV build has no GStreamer support (needed for CSI cameras; "
                          f"use JetPack's OpenCV)")
    pipeline = csi_pipeline(int(path), width, height, fps, flip)
    factory = capture_factory or _cv2_capture(pipeline, cv2.CAP_GSTREAMER, {})
    return CaptureSource(uri, factory, cfg, sleep, CSI_OPEN_HINT)


def _authority_problem(uri: str) -> str:
    """Why a network URI's host and port cannot name a stream (``""`` when they can): a port
    out of 1..65535 or not a number, an IPv6 address without its closing bracket (FFmpeg only
    waited 10 s on them, and the error sent the user to check the camera)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        return f"its host and port are malformed ({exc}): write HOST[:PORT] with a port in 1..65535"
    if not parts.hostname:
        return "no host given"
    if port == 0:
        return "port 0 names no stream: write a port in 1..65535"
    return ""


def rtsp_source(uri: str, path: str, params: QueryParams, cfg: SourceConfig | None,
                capture_factory: CaptureFactory | None = None, sleep=None) -> CaptureSource:
    """``rtsp://host[:port]/path`` (the whole URI, query included, goes to FFmpeg).

    Args:
        uri: the full URI.
        path: the part after ``scheme://``, without the query.
        params: the query parameters.
        cfg: back-off settings.
        capture_factory: replaces the OpenCV capture (tests).
        sleep: replaces the back-off wait (tests).

    Returns:
        The (unopened) :class:`CaptureSource`.

    Raises:
        SourceError: no host given, or a malformed host or port (:func:`_authority_problem`).
    """
    import cv2

    if not path.strip("/"):
        raise SourceError(f"{redact_uri(uri)}: no host given")
    problem = _authority_problem(uri)
    if problem:
        raise SourceError(f"{redact_uri(uri)}: {problem}")
    timeouts = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, RTSP_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, RTSP_TIMEOUT_MS)
    factory = capture_factory or _cv2_capture(uri, cv2.CAP_FFMPEG, {}, timeouts)
    return CaptureSource(uri, factory, cfg, sleep, RTSP_OPEN_HINT)
