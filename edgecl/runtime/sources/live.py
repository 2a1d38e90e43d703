"""Live camera sources: ``v4l2://``, ``csi://`` (Jetson, GStreamer) and ``rtsp://`` (FFmpeg).

They share :class:`CaptureSource`: a failed read releases the capture, waits, and opens a new
one, with exponential back-off (``reconnect_initial_s`` doubling up to ``reconnect_max_s``),
until ``max_consecutive_failures`` reads in a row have failed. Opening fails fast: a camera
that cannot be opened at start raises :class:`SourceError` at once, naming it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from edgecl.config import SourceConfig
from edgecl.errors import SourceError
from edgecl.frames import StreamState
from edgecl.runtime.sources.base import (FrameSource, QueryParams, RawFrame, declared_fps,
                                         redact_uri)

log = logging.getLogger(__name__)
RTSP_TIMEOUT_MS = 10_000
CLOSE_WAIT_S = 2.0
"""Seconds :meth:`CaptureSource.close` waits for a read in progress (a stalled driver may never
return: the capture is then left to the process's exit, so a stop still ends in bounded time)."""


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a live source uses (fakes implement this in tests)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[], Capture]


class CaptureSource(FrameSource):
    """A live source over an OpenCV-style capture, with reconnection and back-off.

    Args:
        uri: the URI.
        factory: creates a new capture (called at open and at every reconnection).
        cfg: back-off settings (``reconnect_initial_s``, ``reconnect_max_s``,
            ``max_consecutive_failures``).
        sleep: waits between attempts; defaults to a wait that :meth:`close` interrupts.
    """

    is_live = True

    def __init__(self, uri: str, factory: CaptureFactory, cfg: SourceConfig | None = None,
                 sleep: Callable[[float], object] | None = None):
        super().__init__(uri, cfg)
        self._factory = factory
        self._sleep = sleep or self._closing.wait
        self._io_lock = threading.Lock()  # INVARIANT: the capture is used by one thread at a time
        self._cap: Capture | None = None
        self._failures = 0
        self._delay_s = self.cfg.reconnect_initial_s

    def _open(self) -> None:
        self._failures, self._delay_s = 0, self.cfg.reconnect_initial_s
        with self._io_lock:
            cap = self._factory()
            if not cap.isOpened():
                cap.release()
                raise SourceError(f"{self.uri}: cannot open the camera/stream")
            self._cap = cap
            self.fps = declared_fps(cap)

    def _read_once(self) -> np.ndarray | None:
        with self._io_lock:
            if self._cap is None:
                return None
            ok, image = self._cap.read()
        return image if ok and image is not None and image.size else None

    def _next(self) -> RawFrame | None:
        while not self._closing.is_set():
            image = self._read_once()
            if image is not None:
                self._failures, self._delay_s = 0, self.cfg.reconnect_initial_s
                self._transition(StreamState.OPEN)
                return RawFrame(image)
            if self._closing.is_set():  # closed while a read waited: no failure to report
                return None
            self._failures += 1
            if self._failures >= self.cfg.max_consecutive_failures:
                self._release()
                self._transition(StreamState.EXHAUSTED)
                raise SourceError(f"{self.uri}: giving up after {self._failures} failed reads in a row")
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
        with self._io_lock:
            cap = self._factory()
            if cap.isOpened():
                self._cap = cap
            else:
                cap.release()

    def _release(self, wait_s: float | None = None) -> bool:
        """Release the capture; with ``wait_s``, give up when a read still holds it then.

        Returns:
            False when the capture was left to a read that did not return in ``wait_s``.
        """
        if not self._io_lock.acquire(timeout=-1 if wait_s is None else wait_s):
            log.warning("%s: a read is still blocked after %.0f s; the capture is left to the "
                        "process's exit", self.uri, wait_s)
            return False
        try:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
        finally:
            self._io_lock.release()
        return True

    def _close(self) -> None:
        self._release(CLOSE_WAIT_S)


def _cv2_capture(target: int | str, api: int, props: dict[int, float], params: tuple[int, ...] = ()
                 ) -> CaptureFactory:
    def factory():
        import cv2

        cap = cv2.VideoCapture(target, api, list(params)) if params else cv2.VideoCapture(target, api)
        for prop, value in props.items():
            cap.set(prop, value)
        return cap

    return factory


def v4l2_source(uri: str, path: str, params: QueryParams, cfg: SourceConfig | None,
                capture_factory: CaptureFactory | None = None, sleep=None) -> CaptureSource:
    """``v4l2://N`` or ``v4l2:///dev/videoN`` ``[?width=&height=&fps=&fourcc=MJPG]``.

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
    fourcc = params.get_choice("fourcc", "", ("", "MJPG", "YUYV", "H264"))
    if fourcc:
        props[cv2.CAP_PROP_FOURCC] = cv2.VideoWriter_fourcc(*fourcc)
    params.finish()
    if not path:
        raise SourceError(f"{uri}: give a device index (v4l2://0) or node (v4l2:///dev/video0)")
    target: int | str = int(path) if path.isdigit() else path
    node = Path(f"/dev/video{target}") if isinstance(target, int) else Path(target)
    if capture_factory is None and sys.platform.startswith("linux") and not node.exists():
        raise SourceError(f"{uri}: no such camera device {node}")
    factory = capture_factory or _cv2_capture(target, cv2.CAP_V4L2, props)
    return CaptureSource(uri, factory, cfg, sleep)


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
    return CaptureSource(uri, factory, cfg, sleep)


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
        SourceError: no host given.
    """
    import cv2

    if not path.strip("/"):
        raise SourceError(f"{redact_uri(uri)}: no host given")
    timeouts = (cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, RTSP_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, RTSP_TIMEOUT_MS)
    factory = capture_factory or _cv2_capture(uri, cv2.CAP_FFMPEG, {}, timeouts)
    return CaptureSource(uri, factory, cfg, sleep)
