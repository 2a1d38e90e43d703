"""The :class:`FrameSource` contract shared by every source, and URI/query helpers."""

from __future__ import annotations

import abc
import re
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator, NamedTuple
from urllib.parse import parse_qsl, unquote

import numpy as np

from edgecl.config import SourceConfig
from edgecl.errors import SourceError
from edgecl.frames import Frame, StreamState

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")  # an empty value ('?loop', '?loop='): refused, not off


@dataclass(frozen=True)
class SourceStats:
    """Counters of a source (a snapshot; safe to read from any thread).

    Attributes:
        read: frames delivered.
        skipped: unreadable images skipped (corrupt or undecodable files).
        reconnects: reconnection attempts of a live source.
        bad_labels: frames delivered unlabelled because their label file was unreadable or
            held a refused row.
        refused_labels: label rows refused by the YOLO label rule (each logged as
            ``file:line: why``).
        empty_boxes: label rows dropped for a box with no area (an accidental click in a
            labelling tool); the frame keeps its other boxes.
        ignored_files: files of an image folder that are not images ultralytics reads.
        read_retries: reads of an image folder tried again because the process, not the
            file, failed (out of file descriptors or memory for a moment).
    """

    read: int = 0
    skipped: int = 0
    reconnects: int = 0
    bad_labels: int = 0
    refused_labels: int = 0
    empty_boxes: int = 0
    ignored_files: int = 0
    read_retries: int = 0


class RawFrame(NamedTuple):
    """What a concrete source hands to :class:`FrameSource` (ids and time are added there)."""

    image: np.ndarray
    labels: np.ndarray | None = None
    task: str | None = None
    name: str = ""


class FrameSource(abc.ABC):
    """A stream of :class:`~edgecl.frames.Frame` objects.

    Lifecycle: ``CREATED -> open() -> OPEN [<-> RECONNECTING] -> EXHAUSTED | CLOSED``.
    ``read()`` returns ``None`` once the source is exhausted or closed. Iterating or entering
    the context manager opens the source; leaving the context manager closes it.

    Attributes:
        uri: the URI the source was opened with, any password replaced by ``***``
            (:func:`redact_uri`; copied into every frame and every message).
        cfg: reconnection settings.
        is_live: frames arrive in real time whether or not they are consumed (cameras,
            paced streams): a consumer should drop rather than block.
    """

    is_live: bool = False
    fps: float | None = None
    """Frames per second the source declares (a video's or a camera's; ``None``: unknown)."""

    def __init__(self, uri: str, cfg: SourceConfig | None = None):
        self.uri = redact_uri(uri)
        self.cfg = cfg or SourceConfig()
        self._state = StreamState.CREATED
        self._next_id = 0
        self._counts = {f.name: 0 for f in fields(SourceStats)}
        self._closing = threading.Event()

    @property
    def state(self) -> StreamState:
        """Current lifecycle state."""
        return self._state

    @property
    def stats(self) -> SourceStats:
        """A snapshot of the counters."""
        return SourceStats(**self._counts)

    def _transition(self, state: StreamState) -> None:
        """Move to ``state`` unless the source was closed (``close`` may run on another thread)."""
        if self._state is not StreamState.CLOSED:
            self._state = state

    def _count(self, counter: str, n: int = 1) -> None:
        self._counts[counter] += n

    def open(self) -> "FrameSource":
        """Acquire the underlying device or files (a no-op when already open).

        A source closed while it was opening (:meth:`close` from another thread, or a live
        source's open stopped by SIGINT/SIGTERM) stays closed: ``read()`` returns ``None``.

        Returns:
            ``self``.

        Raises:
            SourceError: the device, stream or files cannot be opened.
        """
        if self._state in (StreamState.CREATED, StreamState.CLOSED):
            self._closing.clear()
            self._open()
            if not self._closing.is_set():
                self._state = StreamState.OPEN
            elif self._state is not StreamState.CLOSED:  # before: opened a source closed meanwhile
                self._state = StreamState.CLOSED
                self._close()
        return self

    def read(self) -> Frame | None:
        """Deliver the next frame.

        Returns:
            The frame (``frame_id`` counts delivered frames from 0; ``ts_s`` is ``time.time()``
            at delivery), or ``None`` when the source is exhausted or closed.

        Raises:
            SourceError: read before :meth:`open`, or a live source gave up reconnecting.
        """
        if self._state is StreamState.CREATED:
            raise SourceError(f"{self.uri}: read() before open()")
        if self._state in (StreamState.EXHAUSTED, StreamState.CLOSED):
            return None
        raw = self._next()
        if raw is None:
            self._transition(StreamState.EXHAUSTED)
            return None
        frame = Frame(image=raw.image, frame_id=self._next_id, ts_s=time.time(), source=self.uri,
                      labels=raw.labels, task=raw.task, name=raw.name,
                      captured_mono_s=time.monotonic())
        self._next_id += 1
        self._count("read")
        return frame

    def close(self) -> None:
        """Release the device or files; safe to call twice, from another thread, and while
        :meth:`open` is still opening."""
        self._closing.set()
        if self._state is not StreamState.CLOSED:
            self._state = StreamState.CLOSED
            self._close()

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> "FrameSource":
        return self.open()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @abc.abstractmethod
    def _open(self) -> None:
        """Acquire resources; raise SourceError when impossible."""

    @abc.abstractmethod
    def _next(self) -> RawFrame | None:
        """Return the next frame, or ``None`` at the end of the stream."""

    def _close(self) -> None:
        """Release resources (default: nothing to release)."""


def declared_fps(cap) -> float | None:
    """The frame rate an OpenCV capture reports (``CAP_PROP_FPS``: a video's or a camera's),
    or ``None`` when it reports none (0, or a capture without ``get``)."""
    import cv2

    get = getattr(cap, "get", None)
    try:
        rate = float(get(cv2.CAP_PROP_FPS)) if get is not None else 0.0
    except (TypeError, ValueError):
        return None
    return rate if rate > 0 else None


_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@:?#]*):([^/@?#]*)@")


def redact_uri(uri: str) -> str:
    """A source URI fit for logs, frames and JSON lines: the password of
    ``rtsp://user:password@host/...`` is replaced by ``***`` (an IP camera's URI carries it).

    Args:
        uri: the URI.

    Returns:
        The URI with ``user:***@``; unchanged when it holds no password.
    """
    return _CREDENTIALS.sub(r"\1\2:***@", uri)


def split_uri(uri: str, schemes: list[str]) -> tuple[str, str, str]:
    """Split ``scheme://path?query`` (the path is percent-decoded, unless only the path as
    written names an existing file or folder; a ``?`` is part of the path where only the whole
    names an existing file; no netloc parsing).

    Args:
        uri: the source URI.
        schemes: supported schemes (for the error message).

    Returns:
        ``(scheme, path, query)``.

    Raises:
        SourceError: no ``scheme://`` prefix or an unknown scheme.
    """
    supported = ", ".join(f"{s}://" for s in schemes)
    if "://" not in uri:
        hint = ""
        local = Path(uri).expanduser()
        if uri and local.is_dir() and "dir" in schemes:
            hint = f" (a folder: did you mean dir://{uri}?)"
        elif uri and local.is_file() and "file" in schemes:
            hint = f" (a file: did you mean file://{uri}?)"
        elif re.fullmatch(r"/dev/video\d+", uri) and "v4l2" in schemes:
            hint = f" (a camera: did you mean v4l2://{uri[len('/dev/video'):]}?)"
        elif uri and ("/" in uri or "." in Path(uri).name):  # a path, which names nothing
            hint = (f" (nothing exists at {local}; a video file is file://PATH, a folder of "
                    f"images dir://PATH)")
        raise SourceError(f"source '{uri}' has no scheme{hint}; supported: {supported}")
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    if scheme not in schemes:
        raise SourceError(f"unknown source scheme '{scheme}://' in '{uri}'; supported: {supported}")
    path, _, query = rest.partition("?")
    if query and not _exists(unquote(path)) and _exists(unquote(rest)):
        path, query = rest, ""  # a file whose name holds a '?' ('clip?.mp4')
    decoded = unquote(path)
    if decoded != path and not _exists(decoded) and _exists(path):
        decoded = path  # a file or folder whose name holds a '%' (e.g. 'flight_%03d.mp4')
    return scheme, decoded, query


def _exists(path: str) -> bool:
    """Whether a local path exists (False for anything that cannot be one)."""
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError):  # a name too long, a NUL
        return False


MIN_FPS = 0.01
"""Slowest frame rate a source may be paced at (one frame every 100 s)."""
MAX_FPS = 1000.0
"""Fastest frame rate a source may be paced at."""


class QueryParams:
    """Typed access to a URI's query parameters; unknown names fail in :meth:`finish`.

    Args:
        uri: the URI (for error messages).
        query: the raw query string.

    Raises:
        SourceError: a parameter given twice (``?loop=1&loop=0``: before, the last one was
            taken without a word).
    """

    def __init__(self, uri: str, query: str):
        self.uri = redact_uri(uri)
        pairs = parse_qsl(query, keep_blank_values=True)
        self._raw = dict(pairs)
        if len(self._raw) < len(pairs):
            twice = sorted({k for k, _ in pairs if sum(1 for n, _ in pairs if n == k) > 1})
            raise SourceError(f"{self.uri}: parameter {', '.join(map(repr, twice))} given more "
                              "than once; give it once")
        self._known: list[str] = []

    def _take(self, name: str) -> str | None:
        self._known.append(name)
        return self._raw.get(name)

    def _bad(self, name: str, value: str, kind: str) -> SourceError:
        return SourceError(f"{self.uri}: parameter '{name}' must be {kind}, got '{value}'")

    def get_int(self, name: str, default: int, minimum: int = 0) -> int:
        """Integer parameter ``>= minimum``.

        Args:
            name: parameter name.
            default: value when absent.
            minimum: smallest accepted value.

        Returns:
            The value.

        Raises:
            SourceError: not an integer or below ``minimum``.
        """
        value = self._take(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise self._bad(name, value, f"an integer >= {minimum}") from None
        if number < minimum:
            raise self._bad(name, value, f"an integer >= {minimum}")
        return number

    def get_float(self, name: str, default: float) -> float:
        """Non-negative float parameter.

        Args:
            name: parameter name.
            default: value when absent.

        Returns:
            The value.

        Raises:
            SourceError: not a number or negative.
        """
        value = self._take(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise self._bad(name, value, "a number >= 0") from None
        if not number >= 0:
            raise self._bad(name, value, "a number >= 0")
        return number

    def get_fps(self, name: str = "fps") -> float:
        """Frame-rate parameter: 0 (none, the default) or :data:`MIN_FPS` .. :data:`MAX_FPS`.

        Raises:
            SourceError: not a number, or a rate outside that range (1e-10 fps would wait
                centuries between frames, past what the platform's clock can represent).
        """
        value = self._take(name)
        if value is None:
            return 0.0
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not (number == 0 or MIN_FPS <= number <= MAX_FPS):
            raise self._bad(name, value, f"0 (none) or a rate of {MIN_FPS:g} to {MAX_FPS:g} "
                                         f"frames per second")
        return number

    def get_bool(self, name: str, default: bool) -> bool:
        """Boolean parameter (``1/0``, ``true/false``, ``yes/no``, ``on/off``).

        Args:
            name: parameter name.
            default: value when absent.

        Returns:
            The value.

        Raises:
            SourceError: not a recognised boolean.
        """
        value = self._take(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise self._bad(name, value, "0 or 1 (or true/false, yes/no, on/off)")

    def get_str(self, name: str, default: str) -> str:
        """Free-form string parameter.

        Args:
            name: parameter name.
            default: value when absent.

        Returns:
            The value.
        """
        value = self._take(name)
        return default if value is None else value

    def get_choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """String parameter restricted to ``choices``.

        Args:
            name: parameter name.
            default: value when absent.
            choices: accepted values.

        Returns:
            The value.

        Raises:
            SourceError: not one of ``choices``.
        """
        value = self._take(name)
        if value is None:
            return default
        if value not in choices:
            shown = [c for c in choices if c] + (["empty"] if "" in choices else [])
            raise self._bad(name, value, "one of " + ", ".join(shown))
        return value

    def finish(self) -> None:
        """Reject parameters that no getter asked for.

        Raises:
            SourceError: naming the first unknown parameter and the accepted ones.
        """
        for name in self._raw:
            if name not in self._known:
                allowed = ", ".join(self._known) or "none"
                raise SourceError(f"{self.uri}: unknown parameter '{name}' (accepted: {allowed})")
