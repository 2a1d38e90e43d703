"""Where detections go: JSON lines, annotated video, a periodic console summary."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgecl.errors import ConfigError, StorageError, describe_os_error, storage_fault
from edgecl.input_files import regular_file_problem
from edgecl.runtime.loop import FrameResult

log = logging.getLogger(__name__)


Names = dict[int, str] | Callable[[], dict[int, str]] | None
"""Class index -> name, or a cheap callable returning the current mapping (the runtime's: a
class renamed or learnt since start is shown by its current name)."""


VIDEO_SUFFIXES = (".mp4", ".avi")
DEFAULT_VIDEO_FPS = 10.0
"""Frame rate of a saved video when the source does not know its own (image folders)."""
MAX_VIDEO_FPS = 240.0


def _names_now(names: Names) -> dict[int, str]:
    return (names() if callable(names) else names) or {}


TAIL_CHUNK_BYTES = 64 * 1024
"""Bytes first read from the end of an existing ``--out`` file at start (doubled while its last
whole line, or one with a ``frame_id``, starts further back): only its tail is read."""
MAX_TAIL_BYTES = 16 * 1024 * 1024
"""Most bytes read back from the end of an existing ``--out`` file at start."""


def new_run_id() -> str:
    """A run identifier for the lines of one ``--out`` file: the UTC start time, readable and
    sorting in start order, and 6 random hex digits (two runs started within one second differ).

    Returns:
        E.g. ``"20260105T101502Z-3f9a1c"``.
    """
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _frame_id_of(line: bytes) -> int | None:
    """The ``frame_id`` of one JSON line (None for a line that is not a record with one)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # not JSON (a UnicodeDecodeError is a ValueError)
        return None
    frame_id = record.get("frame_id") if isinstance(record, dict) else None
    if isinstance(frame_id, int) and not isinstance(frame_id, bool) and frame_id >= 0:
        return frame_id
    return None


def read_tail(path: str | Path) -> tuple[int | None, int | None, int]:
    """Read the end of a JSON lines file backwards for its last frame id, without reading the
    whole file (:data:`TAIL_CHUNK_BYTES` first, at most :data:`MAX_TAIL_BYTES`).

    Args:
        path: the file.

    Returns:
        ``(last_frame_id, whole_end, size)``: the ``frame_id`` of the last whole line that has
        one (None when none of the lines read has one), the offset just past the last line
        end (0 when the file holds no line end; None when none lies within
        :data:`MAX_TAIL_BYTES` of the end), and the file's size in bytes. Bytes past
        ``whole_end`` are a line cut off (a run killed while writing it).

    Raises:
        OSError: the file cannot be read (a missing file is ``(None, 0, 0)``).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, 0, 0
    try:
        size = os.fstat(fd).st_size
        buf, pos, whole_end = b"", size, None  # buf: bytes [pos, ...) not examined yet
        while True:
            if whole_end is None:
                cut = buf.rfind(b"\n")
                if cut >= 0:
                    whole_end = pos + cut + 1
                    buf = buf[:cut + 1]
            while whole_end is not None and buf:  # buf ends with a line end: try its last line
                start = buf.rfind(b"\n", 0, len(buf) - 1) + 1
                if start == 0 and pos > 0:
                    break  # that line starts before what was read
                frame_id = _frame_id_of(buf[start:-1])
                if frame_id is not None:
                    return frame_id, whole_end, size
                buf = buf[:start]
            if pos == 0 or size - pos >= MAX_TAIL_BYTES:
                break
            n = min(max(TAIL_CHUNK_BYTES, size - pos), pos, MAX_TAIL_BYTES - (size - pos))
            pos -= n
            buf = os.pread(fd, n, pos) + buf
        return None, (0 if whole_end is None and pos == 0 else whole_end), size
    finally:
        os.close(fd)


LAST_LINE_MAX_BYTES = 1024 * 1024
"""Longest last line of an existing ``--out`` file examined at start (a longer one is no
detections line)."""


RECORD_START = b'{"frame_id"'
"""How every line :class:`JsonlSink` writes begins (a cut line of its own is known by it)."""


def _next_id(last: int | None) -> int:
    return 0 if last is None else last + 1


def _json_object(text: bytes) -> dict | None:
    """``text`` parsed as one JSON object, or None."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _last_line_and_fragment(path: Path, whole_end: int | None, size: int) -> tuple[bytes, bytes]:
    """The last whole line of a file (without its line end; ``b""`` when none is within
    :data:`LAST_LINE_MAX_BYTES`) and the bytes after it that no line end closes.

    Raises:
        OSError: the file cannot be read.
    """
    start = max(0, size - 2 * LAST_LINE_MAX_BYTES)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(size - start)
    if whole_end is None or whole_end < start:
        return b"", data[-LAST_LINE_MAX_BYTES - 1:]
    cut = whole_end - start
    head = data[:cut - 1]
    return head[head.rfind(b"\n") + 1:], data[cut:]


class JsonlSink:
    """Appends one JSON object per frame to a file (one ``write`` per line, fsynced on close).

    Each line is ``{"frame_id", "run_id", "ts_s", "source", "name", "model_version",
    "latency_ms", "detections"}``. A restarted runtime appends to the same file and its
    source counts frames from 0 again, so that a file never holds one ``frame_id`` twice:

    - ``frame_id`` goes on from the file's last line: a run starts at the ``frame_id`` of the
      file's last whole line that has one (or, just after a rotation left ``FILE`` empty, of
      ``FILE.1``'s) plus one, and adds the source's own count to it (a frame the loop dropped
      leaves its gap, as within one run). Only the file's tail is read for it
      (:func:`read_tail`). A file with no ``frame_id`` in its last lines starts at 0, with a
      warning.
    - ``run_id`` names the run that wrote the line (:func:`new_run_id`: its UTC start time
      and 6 random hex digits), so lines of different runs are told apart, and where the
      stream restarted (frames lost between two runs) is seen.

    A last line a kill cut off mid-write (no line end) is removed at start, with a warning,
    before anything is appended: the file holds whole JSON lines only.

    A file that reaches ``max_bytes`` is rotated as logging's ``RotatingFileHandler`` does:
    ``FILE`` becomes ``FILE.1`` (``FILE.1`` becomes ``FILE.2``, ...), the oldest beyond
    ``backups`` is deleted, and a new ``FILE`` starts, so weeks of frames take at most
    ``max_bytes * (backups + 1)`` bytes (a line is never split between two files).

    A full disk loses the lines of the frames it refused, nothing else: a line the disk took
    only part of is cut off again, so the file never holds half a line, nothing waits in a
    buffer to be written later (out of order, or never at shutdown), and the next frame's line
    is written as soon as there is room.

    Args:
        path: output file (parent directories are created).
        names: class index -> name (or a callable returning it), for readable records.
        max_bytes: size at which the file is rotated (0: never).
        backups: rotated files kept (>= 1).

    Attributes:
        run_id: this run's identifier, written in every line.
        first_frame_id: the ``frame_id`` written for the source's frame 0 in this run.
    """

    def __init__(self, path: str | Path, names: Names = None, max_bytes: int = 0,
                 backups: int = 5):
        from edgecl.errors import describe_os_error

        self.path = Path(path)
        self.names = names
        self.max_bytes = int(max_bytes)
        self.backups = max(1, int(backups))
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._size = 0
        self.run_id = new_run_id()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as exc:  # the option named, as --save-video's refusals name theirs
            raise ConfigError(f"--out {path}: {describe_os_error(exc)}") from None
        if self._regular:
            self._hold_lock()
        self.first_frame_id = self._resume()

    def _hold_lock(self) -> None:
        """Hold ``.FILE.lock`` while this run appends (released by :meth:`close` or death).

        Raises:
            ConfigError: another edgecl run appends to the file (its pid named); nothing was
                written to it.
        """
        from edgecl.runtime.lock import lock_beside

        self._lock_fd, holder = lock_beside(self.path)
        if self._lock_fd is None and holder is not None:
            self.close()
            who = f" (pid {holder})" if holder else ""
            raise ConfigError(f"--out {self.path}: another edgecl run{who} appends to this "
                              f"file; give each run its own --out file")

    def _resume(self) -> int:
        """Find where this run's frame ids start, and end the file on a whole line.

        A last line without its line end is kept (a line end is added) when it is JSON, and cut
        off (a run killed while writing it) when it is not and the lines before it are edgecl's.

        Raises:
            ConfigError: the file exists and is not JSON lines (its last line is not a JSON
                object: a model, a video, another program's file named by mistake); nothing
                was written to it.
        """
        if not self._regular:
            return 0  # a pipe, /dev/stdout, /dev/null: nothing to read back
        try:
            last, whole_end, size = read_tail(self.path)
            if size == 0:  # empty: a rotation may have moved the lines
                return _next_id(read_tail(self.path.with_name(f"{self.path.name}.1"))[0])
            line, fragment = _last_line_and_fragment(self.path, whole_end, size)
        except OSError as exc:
            log.warning("%s: its end could not be read (%s); this run's frame ids start at 0 "
                        "(its run_id %s tells its lines apart)", self.path, exc, self.run_id)
            return 0
        whole = fragment and _json_object(fragment) is not None  # but for its line end
        if whole:
            last = _frame_id_of(fragment) if _frame_id_of(fragment) is not None else last
        elif fragment and (last is not None or fragment.startswith(RECORD_START)):
            os.ftruncate(self._fd, whole_end)  # frees blocks: needs no room
            self._size = whole_end
            log.warning("%s: cut off a partial last line of %d bytes (a run stopped while "
                        "writing it)", self.path, size - whole_end)
        elif fragment or (last is None and _json_object(line) is None):
            self.close()
            raise ConfigError(f"--out {self.path}: the file exists and is not JSON lines (its "
                              f"last line is not a JSON object); name a new file, or a file "
                              f"'edgecl run --out' wrote")
        if last is None and self._size > 0:
            # before: a warning, and the lines appended to it (a one-line COCO file, another
            # program's JSON lines: no longer readable as what they were)
            self.close()
            raise ConfigError(f"--out {self.path}: the file exists and holds no line 'edgecl "
                              f"run --out' wrote (no frame_id in its last lines); name a new "
                              f"file, or a file 'edgecl run --out' wrote")
        if whole:
            self._append(b"\n")
        return _next_id(last)

    def _open(self) -> None:
        # non-blocking: a named pipe nobody reads refuses at once (ENXIO) where a plain open
        # waited for a reader for ever, the device never detecting and nothing said
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                               | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise OSError(errno.ENXIO, "a named pipe (FIFO) nobody reads: start its reader "
                                           "first, or name a file") from None
            raise
        os.set_blocking(self._fd, True)
        st = os.fstat(self._fd)
        self._regular = stat.S_ISREG(st.st_mode)
        self._size = st.st_size

    def write(self, result: FrameResult) -> None:
        """Write one frame's record.

        Raises:
            StorageError: the disk is full (or the file cannot be written): this frame's line
                is not written; the file ends with the previous whole line.
        """
        frame = result.frame
        record = {"frame_id": self.first_frame_id + frame.frame_id, "run_id": self.run_id,
                  "ts_s": round(frame.ts_s, 4), "source": frame.source,
                  "name": frame.name, "model_version": result.model_version,
                  "latency_ms": round(result.latency_ms, 2),
                  "detections": result.detections.to_records(_names_now(self.names))}
        self._append((json.dumps(record) + "\n").encode("utf-8"))
        if self.max_bytes > 0 and self._size >= self.max_bytes:
            self._rotate()

    def _append(self, line: bytes) -> None:
        """Write one whole line, or none of it (a part the disk took is truncated away)."""
        if self._fd is None:  # a rotation the disk refused to finish: the file is made again
            try:
                self._open()
            except OSError as exc:
                raise (storage_fault(exc, "cannot write detections", self.path) or exc) from None
        start = self._size
        view = memoryview(line)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self._size += written
        except OSError as exc:
            try:
                if os.fstat(self._fd).st_size > start:
                    os.ftruncate(self._fd, start)  # frees blocks: needs no room
                self._size = start
            except OSError as cut:
                log.warning("%s: a partial line could not be cut off (%s)", self.path, cut)
            fault = storage_fault(exc, "cannot write detections", self.path)
            if fault is None:
                raise
            raise fault from None

    def _rotate(self) -> None:
        """``FILE.{k}`` -> ``FILE.{k+1}`` (the oldest deleted), ``FILE`` -> ``FILE.1``, new ``FILE``."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        keep_earlier_file(self.path, self.backups,
                          numbered=lambda k: self.path.with_name(f"{self.path.name}.{k}"))
        self._open()

    def close(self) -> None:
        """Flush to disk, close, and let another run append to the file."""
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                try:
                    if self._regular:  # a pipe or a terminal cannot be synced (EINVAL)
                        os.fsync(fd)
                finally:
                    os.close(fd)
        finally:
            lock_fd, self._lock_fd = self._lock_fd, None
            if lock_fd is not None:
                # removed while held (before: a hidden .FILE.lock left in the user's folder
                # by every run, a refused one too); a run that opened it just before then
                # locks the removed file: two appenders at worst, as before the lock existed
                with contextlib.suppress(OSError):
                    self.path.with_name(f".{self.path.name}.lock").unlink()
                os.close(lock_fd)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same file on disk (a link included) where both
    exist, else the same path once ``..`` and ``.`` are resolved as written (``m/../x.avi``
    is ``x.avi`` even before a sink makes the folder ``m``)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(os.path.expanduser(a)) == os.path.abspath(os.path.expanduser(b))


def keep_earlier_file(path: Path, backups: int,
                      numbered: Callable[[int], Path] | None = None) -> Path:
    """Move an existing output aside before a new one is written: ``out.mp4`` -> ``out.1.mp4``,
    an older ``out.1.mp4`` -> ``out.2.mp4`` ..., the one past ``backups`` deleted.

    Args:
        path: the existing file.
        backups: earlier files kept (>= 1).
        numbered: the k-th earlier file's path (default ``out.<k>.mp4``: a player still opens
            it by its suffix; the JSON lines file uses ``FILE.<k>``).

    Returns:
        Where ``path`` went (the first earlier file).
    """
    if numbered is None:
        def numbered(k: int) -> Path:
            return path.with_name(f"{path.stem}.{k}{path.suffix}")

    backups = max(1, int(backups))
    numbered(backups).unlink(missing_ok=True)
    for k in range(backups - 1, 0, -1):
        if numbered(k).exists():
            os.replace(numbered(k), numbered(k + 1))
    os.replace(path, numbered(1))
    return numbered(1)


def _playable(path: Path) -> bool:
    """Whether OpenCV reads a frame of a video file (one a kill cut short has no index)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return capture.isOpened() and capture.read()[0]
    finally:
        capture.release()


VIDEO_SIZE_CHECK_FRAMES = 30
"""Frames between two looks at the saved video's size (``VideoSink.max_bytes``) and at the free
space of its disk (:data:`VIDEO_MIN_FREE_BYTES`)."""
VIDEO_MIN_FREE_BYTES = 32 * 2**20
"""Free space below which a video stops (closed whole): FFmpeg's failed writes were only
OpenCV warnings, and an MP4 whose closing index found no room could not be opened."""


class VideoSink:
    """Writes frames with their boxes drawn (ultralytics' Annotator) to a video file.

    Args:
        path: output video (``.mp4``: mp4v codec, ``.avi``: MJPG).
        fps: frame rate written in the container, or a callable returning the source's rate
            (``None`` when it does not know it), read at the first frame; the source's rate
            keeps the video's speed (a 30 fps clip saved at 10 fps played three times slower).
        names: class index -> name (or a callable returning it) for labels.
        source_file: the video file the run reads, if it reads one: refused as the output.
        backups: earlier videos kept when ``path`` exists (a restarted run), or when it reached
            ``max_bytes``: ``out.1.mp4`` ...
        max_bytes: start a new video once the file reaches this size (``runtime.out_max_bytes``;
            0: one file, unbounded). Before, a run of weeks wrote one file without bound (about
            385 MB an hour at 160 px and 30 fps), and an MP4 is readable only once closed: a
            power cut lost all of it; now at most the file being written.

    Raises:
        ConfigError: not a ``.mp4``/``.avi`` path, the source video itself, or a folder that
            cannot be written (checked at start: before, every frame failed in the sink).
    """

    def __init__(self, path: str | Path, fps: float | Callable[[], float | None] = DEFAULT_VIDEO_FPS,
                 names: Names = None, source_file: Path | None = None, backups: int = 5,
                 max_bytes: int = 0):
        self.path = Path(path)
        self.backups = backups
        self.max_bytes = int(max_bytes)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES or self.path.is_dir():
            raise ConfigError(f"--save-video {path}: name a new .mp4 or .avi file")
        special = regular_file_problem(self.path)
        if special:  # before: a pipe there was renamed aside as an "earlier video"
            raise ConfigError(f"--save-video {path} is {special}: name a new .mp4 or .avi file "
                              f"(OpenCV's video writer needs a file it can seek in)")
        if source_file is not None and same_file(self.path, source_file):
            raise ConfigError(f"--save-video {path} is the video this run reads: name a new "
                              f"file (it would be overwritten)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=".edgecl-probe-")
            probe.close()
        except OSError as exc:
            raise ConfigError(f"--save-video {path}: cannot write in {self.path.parent} "
                              f"({exc.strerror or exc})") from None
        if self.path.exists() and not _playable(self.path):
            # cut short by a power cut or a kill (an MP4's index is written as it closes):
            # kept apart, so it pushes no whole recording out of the backups (before, it did)
            aside = self.path.with_name(f"{self.path.stem}.unfinished{self.path.suffix}")
            os.replace(self.path, aside)
            log.warning("--save-video %s: the earlier video was cut short (a power cut or a "
                        "kill) and does not play; kept as %s, outside the %d backups (a repair "
                        "tool such as untrunc may recover it; the next one cut short replaces it)",
                        self.path, aside.name, backups)
        if self.path.exists():  # a restarted run: the earlier video is kept, not overwritten
            kept = keep_earlier_file(self.path, backups)
            log.info("--save-video %s: the earlier video is kept as %s", self.path, kept.name)
        self.fps = fps
        self.names = names
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._warned_size = False
        self._refused = 0  # frames not recorded: the writer refused their size
        self._refused_sizes: set[tuple[int, int]] = set()
        self._frames_in_file = 0
        self._stopped = False  # the video could not rotate: nothing more is written

    def _rate(self) -> float:
        rate = self.fps() if callable(self.fps) else self.fps
        return float(rate) if rate and 1.0 <= float(rate) <= MAX_VIDEO_FPS else DEFAULT_VIDEO_FPS

    def _open(self, width: int, height: int) -> bool:
        """Open the writer for frames of ``width`` x ``height`` pixels; False (said once per
        size) when OpenCV's writer refuses it: the frame is skipped and the next one tries
        again. Before, the refused writer was kept: a first frame 1 pixel tall (a camera's
        half-initialised frame) lost the whole recording, with a traceback on every frame."""
        import cv2

        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        writer = cv2.VideoWriter(str(self.path), fourcc, self._rate(), (width, height))
        if not writer.isOpened():
            writer.release()
            self._refused += 1
            if (width, height) not in self._refused_sizes:
                self._refused_sizes.add((width, height))
                log.warning("--save-video %s: OpenCV's %s writer cannot open a %dx%d video; "
                            "that frame is not recorded (the next frame tries again)",
                            self.path, self.path.suffix.lower(), width, height)
            return False
        self._writer, self._size = writer, (width, height)
        return True

    def write(self, result: FrameResult) -> None:
        """Draw and append one frame (a frame of another size than the first is letterboxed
        into it: scaled with its aspect ratio kept, padded black; a warning says so once)."""
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils.plotting import Annotator, colors

        if self._stopped:
            return
        if self._frames_in_file % VIDEO_SIZE_CHECK_FRAMES == 0:
            self._stop_if_disk_full()
        image = np.ascontiguousarray(result.frame.image.copy())
        if self._writer is None:  # the first frame, or the first after a rotation: same size
            if not self._open(*(self._size or (image.shape[1], image.shape[0]))):
                return
        annotator = Annotator(image, line_width=1, pil=False)
        det, names = result.detections, _names_now(self.names)
        for box, score, cls in zip(det.boxes_xyxy, det.scores, det.classes):
            label = f"{names.get(int(cls), int(cls))} {score:.2f}"
            annotator.box_label(box.tolist(), label, color=colors(int(cls), True))
        out = annotator.result()
        if (out.shape[1], out.shape[0]) != self._size:
            if not self._warned_size:
                self._warned_size = True
                log.warning("--save-video %s: frame %s is %dx%d, the video %dx%d: letterboxed "
                            "(warned once)", self.path, result.frame.frame_id, out.shape[1],
                            out.shape[0], *self._size)
            out = LetterBox(new_shape=(self._size[1], self._size[0]), auto=False, scaleup=True,
                            center=True, padding_value=0)(image=out)
        # a write that fails for another reason (a file size limit, a card pulled out) is
        # only an OpenCV warning: it stays on stderr
        self._writer.write(out)
        self._frames_in_file += 1
        if self.max_bytes and self._frames_in_file % VIDEO_SIZE_CHECK_FRAMES == 0:
            self._rotate_if_full()

    def _stop_if_disk_full(self) -> None:
        """Close the video, whole, when its disk has less than :data:`VIDEO_MIN_FREE_BYTES` free.

        Raises:
            StorageError: once (the sink's failure count and log line say it); later frames
                are not written.
        """
        import shutil

        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return
        if free >= VIDEO_MIN_FREE_BYTES:
            return
        self._stopped = True
        writing = self._writer is not None
        self.close()
        stops = ("video writing stops here (the file is whole" if writing
                 else "no video is written (nothing was begun" if self._size is None
                 else "video writing stops here (the files written are whole")
        raise StorageError(f"--save-video {self.path}: the disk has {free / 2**20:.1f} MiB free, "
                           f"so {stops}; detection and learning go on)")

    @property
    def stopped(self) -> bool:
        """Whether the video stopped for good (its disk filled up, or it could not rotate)."""
        return self._stopped

    def _rotate_if_full(self) -> None:
        """Close a file that reached ``max_bytes`` (it becomes ``out.1.mp4``); the next frame
        starts a new one at the same size (before, it was begun at once: a run that stopped on
        a rotation left an empty, unplayable file, and the next run kept it as an earlier
        video in place of a real one). Where the full file cannot be moved aside (a backup
        name taken by a folder, a permission), the video stops there, whole: a new writer
        would have truncated it."""
        try:
            full = self.path.stat().st_size >= self.max_bytes
        except OSError:
            return
        if not full:
            return
        self._writer.release()
        self._writer = None
        try:
            keep_earlier_file(self.path, self.backups)
        except OSError as exc:
            self._stopped = True
            log.error("--save-video %s: the full video cannot be kept aside (%s): video writing "
                      "stops here, the file is whole", self.path, describe_os_error(exc))
            return
        self._frames_in_file = 0

    def close(self) -> None:
        """Finish the video file (and say how many frames were not recorded, if any)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._refused:
            log.warning("--save-video %s: %d frame(s) not recorded (sizes OpenCV's writer "
                        "refused: %s)%s", self.path, self._refused,
                        ", ".join(f"{w}x{h}" for w, h in sorted(self._refused_sizes)),
                        "" if self._size else "; no video was written")


TTY_PROGRESS_S = 2.0
"""Seconds between progress lines on a terminal."""
LOG_PROGRESS_S = 60.0
"""Seconds between progress lines when stderr is a file or a journal (a service)."""


class ProgressSink:
    """Prints a one-line summary every ``every_s`` seconds to stderr.

    Args:
        every_s: period of the summary lines; None: 2 s on a terminal, 60 s otherwise (a
            service's journal: at 2 s these lines were 89 % of a device's log and pushed its
            warnings out).
        names: class index -> name (or a callable returning it).
        stream: where to print (stderr by default, so ``--json`` stdout stays clean).
        timestamps: start each line with the local time as the log lines write it
            (``2026-12-08 00:41:12,345``); None: when ``stream`` is not a terminal (a file the
            output was sent to: its progress lines said nothing of when they were written).
    """

    def __init__(self, every_s: float | None = None, names: Names = None, stream=None,
                 timestamps: bool | None = None):
        self.names = names
        self.stream = stream or sys.stderr
        is_tty = getattr(self.stream, "isatty", None)
        on_terminal = is_tty is not None and is_tty()
        if every_s is None:
            every_s = TTY_PROGRESS_S if on_terminal else LOG_PROGRESS_S
        self.every_s = every_s
        self.timestamps = not on_terminal if timestamps is None else timestamps
        self._last_s = time.monotonic()
        self._frames = 0
        self._version = "-"
        self._counts: dict[int, int] = {}  # by class id: a class renamed meanwhile is one class

    def write(self, result: FrameResult) -> None:
        """Count detections; print when the period has passed."""
        self._frames += 1
        for cls in result.detections.classes:
            self._counts[int(cls)] = self._counts.get(int(cls), 0) + 1
        self._version = result.model_version
        now = time.monotonic()
        if now - self._last_s >= self.every_s:
            self._print()
            self._last_s = now

    def _print(self, last: bool = False) -> None:
        names = _names_now(self.names) if self._counts else {}
        named: dict[str, int] = {}
        for cls, count in self._counts.items():
            name = names.get(cls, str(cls))
            named[name] = named.get(name, 0) + count
        seen = ", ".join(f"{k}={v}" for k, v in sorted(named.items())) or "nothing"
        what = "in all: " if last else ""
        when = ""
        if self.timestamps:
            when = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3] + " "
        print(f"{when}[edgecl] {what}frames={self._frames} model={self._version} seen: {seen}",
              file=self.stream, flush=True)

    def close(self) -> None:
        """Print the final summary (the whole run's counts, the last model version)."""
        self._print(last=True)
