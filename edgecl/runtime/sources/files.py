"""File-backed sources: ``file://`` (a video) and ``dir://`` (images, optionally a YOLO dataset).

Images and labels follow THE rules of :mod:`edgecl.data.images` and :mod:`edgecl.data.labels`
(ultralytics'); dataset layouts are found by :func:`edgecl.data.yolo_dataset.find_dataset`.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from edgecl.config import SourceConfig
from edgecl.data.answers import MIN_BOX_PX
from edgecl.data.images import (IMAGE_SUFFIXES, PNG_SIGNATURE, TIFF_SIGNATURES, ImageError,
                                quiet_opencv, read_image, to_bgr8)
from edgecl.data.importers import dataset_class_names, find_coco_json, voc_annotations
from edgecl.data.labels import (label_path_for, labels_to_text, read_yolo_labels,
                                shared_label_files, shared_label_problem, under_pixels)
from edgecl.data.yolo_dataset import find_dataset, labels_report, path_is_file
from edgecl.errors import ConfigError, LabelError, SourceError, missing_path
from edgecl.input_files import missing_file_why
from edgecl.runtime.sources.base import FrameSource, QueryParams, RawFrame, declared_fps

log = logging.getLogger(__name__)
TRANSIENT_READ_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN,
                                   errno.EINTR})
"""Read errors of the process, not of the file (out of file descriptors or memory for a moment,
e.g. a connection flood): the image is read again instead of skipped; skipping every image of
a looping folder once ended the run as if the folder were done."""
TRANSIENT_RETRY_S = 0.5
FOLDER_GONE_WAIT_S = 20.0
"""How long ``dir://`` waits for its folder to come back (an unmounted card, a folder moved
away and back) before it stops as a failed source; under the watchdog's 30 s for capture."""
GONE_SAMPLE = 20
"""Images of the list looked at, from the one that could not be read, to tell a folder emptied
at once from one deleted image."""

_MAX_REFUSED_SHOWN = 3
MAX_UNDECODABLE_IN_A_ROW = 30
"""Failed reads in a row after which a video is taken to have ended, also before the frame count
its container declares (a corrupt frame in the middle is skipped, as an unreadable image in a
folder is)."""


VIDEO_SUFFIXES = (".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts",
                  ".webm", ".wmv")
"""Suffixes of ``ultralytics.data.utils.VID_FORMATS``: a folder holding such files and no image
is refused with a pointer to ``file://``."""
_MAX_TOP_LEVEL_BOXES = 10_000


def _has_top_level_box(path: Path, kind: bytes) -> bool:
    """Whether an ISO-BMFF file (MP4, MOV) has a top-level box of type ``kind`` (box headers
    only are read: a few bytes per box whatever the file's size)."""
    import struct

    size = path.stat().st_size
    with path.open("rb") as fh:
        offset = 0
        for _ in range(_MAX_TOP_LEVEL_BOXES):
            fh.seek(offset)
            header = fh.read(16)
            if len(header) < 8:
                return False
            length, box = struct.unpack(">I4s", header[:8])
            if box == kind:
                return True
            if length == 1 and len(header) == 16:  # a 64-bit size follows the type
                length = struct.unpack(">Q", header[8:])[0]
            if length < 8 or offset + length > size:  # 0: to the end; damaged; cut short
                return False
            offset += length
    return False


def video_open_problem(path: Path) -> str:
    """Why OpenCV could not open a video file, and what to do (for one error line).

    Args:
        path: the video file.

    Returns:
        ``the file is empty (0 bytes)``; for a device (``/dev/zero``) that it is no camera; for
        an MP4/MOV with no ``moov`` box (the index a
        recorder writes last: a recording stopped by power loss or a full card has none) that
        and what rebuilds it; else ``unsupported format or corrupt`` and how to check it.
    """
    import stat

    try:
        info = path.stat()
        if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):  # /dev/zero reads as 0 bytes
            return "a device that gives no video OpenCV can open (a camera is v4l2://N)"
        size = info.st_size
        with path.open("rb") as fh:
            head = fh.read(12)
        no_index = head[4:8] == b"ftyp" and not _has_top_level_box(path, b"moov")
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if size == 0:
        return "the file is empty (0 bytes)"
    if no_index:
        return ("an MP4/MOV without its index (no 'moov' box): a recording stopped before it was "
                "finalised (power loss, full card); a tool such as untrunc rebuilds the index with "
                "a good recording of the same camera")
    return "unsupported format or corrupt; check that it plays (ffprobe tells why)"


def _require_path(uri: str, path: str) -> Path:
    if not path:
        raise SourceError(f"{uri}: no path given")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise SourceError(f"{uri}: {missing_path(resolved)}")
    return resolved


def _special_file_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is (``a named pipe (FIFO)``, a
    socket); ``""`` for a file or a device (``/dev/video0`` read through FFmpeg)."""
    import stat

    from edgecl.input_files import file_kind

    try:
        mode = path.stat().st_mode
    except OSError:
        return ""
    return file_kind(mode) if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else ""


def deep_gray_format(codec_pixel_format: float) -> bool:
    """Whether a video's pixel format is grey with more than 8 bits (a thermal camera's counts).

    Args:
        codec_pixel_format: ``cv2.CAP_PROP_CODEC_PIXEL_FORMAT`` of an opened FFmpeg capture:
            FFmpeg's raw tag of the decoder's pixel format (libavcodec ``raw.c``: ``Y1\\0\\x10``
            for ``gray16le``, ``\\x10\\0 1Y`` for ``gray16be``, 9 to 14 bits alike).

    Returns:
        True for ``gray9``-``gray16`` in either byte order.
    """
    try:
        tag = int(codec_pixel_format).to_bytes(4, "little")
    except (OverflowError, ValueError):
        return False
    if tag[:3] == b"Y1\0":
        return 8 < tag[3] <= 16
    return tag[2:] == b"1Y" and tag[1] == 0 and 8 < tag[0] <= 16


def big_endian_gray_format(codec_pixel_format: float) -> bool:
    """Whether a deep grey pixel format (:func:`deep_gray_format`) is big-endian (``gray16be``:
    FFmpeg's format of 16-bit PNG and TIFF frames in a MOV/MKV/AVI), which OpenCV's raw output
    does not take: it gives half of each frame's bytes as 8-bit pixels (vertical stripes).

    Args:
        codec_pixel_format: ``cv2.CAP_PROP_CODEC_PIXEL_FORMAT`` of an opened FFmpeg capture.

    Returns:
        True for ``gray9be``-``gray16be``.
    """
    try:
        tag = int(codec_pixel_format).to_bytes(4, "little")
    except (OverflowError, ValueError):
        return False
    return deep_gray_format(codec_pixel_format) and tag[2:] == b"1Y"


class BigEndianGrayCapture:
    """A video of big-endian deep grey frames (``gray16be``) read packet by packet: each frame
    of a PNG or TIFF stream is such a file, decoded with its 16 bits; a raw ``gray16be`` frame
    (``rawvideo``) is read as big-endian 16-bit counts. The frames come out ``uint16`` (H, W),
    stretched later by :func:`edgecl.data.images.to_bgr8` as any thermal frame.

    Stands in for the ``cv2.VideoCapture`` it wraps (``read``, ``get``, ``isOpened``,
    ``release``), opened with ``CAP_PROP_FORMAT = -1`` (OpenCV's FFmpeg backend then gives the
    stream's packets undecoded).

    Args:
        cap: the opened capture, in packet mode.
        width: frame width in pixels (the container's).
        height: frame height in pixels.
    """

    def __init__(self, cap, width: int, height: int):
        self._cap, self._width, self._height = cap, width, height

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next frame: ``(True, uint16 (H, W))``, or ``(False, None)`` at the end or for a
        packet that does not decode (the source counts it as a skipped frame)."""
        import cv2

        ok, packet = self._cap.read()
        if not ok or packet is None or not packet.size:
            return False, None
        data = packet.reshape(-1)
        head = data[:8].tobytes()
        if head.startswith((PNG_SIGNATURE, *TIFF_SIGNATURES)):
            with quiet_opencv():
                image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
            return image is not None, image
        if data.size == self._width * self._height * 2:
            return True, data.view(">u2").reshape(self._height, self._width).astype(np.uint16)
        return False, None

    def get(self, prop):
        """The wrapped capture's property (``cv2.CAP_PROP_*``)."""
        return self._cap.get(prop)

    def isOpened(self) -> bool:  # noqa: N802  (OpenCV's name)
        """Whether the wrapped capture is open."""
        return self._cap.isOpened()

    def release(self) -> None:
        """Release the wrapped capture."""
        self._cap.release()


class VideoFileSource(FrameSource):
    """``file://PATH[?loop=1]``: a video file read with OpenCV (FFmpeg).

    With ``loop=1`` the video restarts at its end (a video with no decodable frame still ends).

    Args:
        uri: the URI.
        path: the video path.
        loop: restart at the end.
        cfg: source settings.

    Raises:
        SourceError: the path does not exist or is a directory.
    """

    def __init__(self, uri: str, path: str, loop: bool = False, cfg: SourceConfig | None = None):
        super().__init__(uri, cfg)
        self.path = _require_path(uri, path)
        if self.path.is_dir():
            raise SourceError(f"{uri}: {self.path} is a directory (use dir:// for image folders)")
        kind = _special_file_kind(self.path)
        if kind:  # opening a FIFO with no writer blocks in the kernel, out of a signal's reach
            raise SourceError(f"{uri}: {self.path} is {kind}, not a video file; a camera or a "
                              f"stream is opened by its own URI (v4l2://, rtsp://, csi://)")
        self.loop = loop
        self._cap = None
        self._position = 0
        self._delivered = 0
        self._last_decoded = 0  # frames read up to the last that decoded, this pass
        self._skip_warnings = 0
        self._warned_short = False

    @classmethod
    def from_uri(cls, uri: str, path: str, params: QueryParams,
                 cfg: SourceConfig | None) -> "VideoFileSource":
        """Build from a parsed URI (see :func:`edgecl.runtime.sources.open_source`).

        Args:
            uri: the full URI.
            path: the part after ``scheme://``, without the query.
            params: the query parameters.
            cfg: source settings.

        Returns:
            The unopened source.

        Raises:
            SourceError: missing path or bad parameter.
        """
        loop = params.get_bool("loop", False)
        params.finish()
        if Path(path).suffix.lower() in IMAGE_SUFFIXES and Path(path).expanduser().is_file():
            return ImageListSource.of_one_image(uri, _require_path(uri, path), loop, cfg)
        return cls(uri, path, loop, cfg)

    def _capture(self):
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.uri}: cannot open video {self.path}: {video_open_problem(self.path)}")
        pixel_format = cap.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT)
        if big_endian_gray_format(pixel_format):
            packets = self._packet_capture(cap)
            if packets is not None:
                return packets
        elif deep_gray_format(pixel_format):
            # FFmpeg's own conversion keeps the high byte: a thermal video's counts 7000-7800
            # all become grey 27-30. Read the raw counts and stretch them as a 16-bit image.
            cap.release()
            with quiet_opencv():  # OpenCV warns that the conversion is off: that is the point
                cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_CONVERT_RGB, 0])
            if not cap.isOpened():
                cap.release()
                raise SourceError(f"{self.uri}: cannot open video {self.path}: "
                                  f"{video_open_problem(self.path)}")
        return cap

    def _packet_capture(self, cap) -> BigEndianGrayCapture | None:
        """``cap`` (released) reopened packet by packet (:class:`BigEndianGrayCapture`), or
        ``None`` with ``cap`` kept as it is and one warning (its frames then read at 8 bits,
        the high byte of each count) where this OpenCV build gives no packets."""
        import cv2

        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        packets = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if packets.isOpened() and packets.set(cv2.CAP_PROP_FORMAT, -1):
            cap.release()
            return BigEndianGrayCapture(packets, width, height)
        packets.release()
        log.warning("%s: a big-endian 16-bit grey video (gray16be), which this OpenCV build "
                    "reads at 8 bits only (low contrast); for its full range convert it: "
                    "ffmpeg -i %s -c:v ffv1 -pix_fmt gray16le OUT.mkv", self.uri, self.path.name)
        return None

    def _open(self) -> None:
        self._cap = self._capture()
        self._position = 0
        self._delivered = 0
        self._last_decoded = 0
        self.fps = declared_fps(self._cap)

    def _frame_count(self) -> int:
        """Frames the container declares (0 when it does not say)."""
        import cv2

        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return int(count) if count and count > 0 else 0

    def _read_decodable(self) -> np.ndarray | None:
        """The next frame that decodes, skipping undecodable ones (each counted in
        ``stats.skipped``, a warning for the first few); ``None`` at the end of the file: past
        the declared frame count, or after :data:`MAX_UNDECODABLE_IN_A_ROW` failed reads in a
        row (failures that no decodable frame follows are the end, not skips)."""
        failed = 0
        while True:
            ok, image = self._cap.read()
            self._position += 1
            if ok and image is not None and image.size:
                image = to_bgr8(image)
                if failed:
                    self._count("skipped", failed)
                    self._skip_warnings += 1
                    if self._skip_warnings <= _MAX_REFUSED_SHOWN:
                        log.warning("%s: %d frame(s) before frame %d do not decode; skipped",
                                    self.uri, failed, self._position - 1)
                self._last_decoded = self._position
                return image
            failed += 1
            count = self._frame_count()
            if (count and self._position >= count) or failed >= MAX_UNDECODABLE_IN_A_ROW:
                return None

    def _warn_if_cut_short(self) -> None:
        """At the end of a pass that delivered frames: one warning (per run) when the file ended
        more than one frame and 1 % before the frame count its header declares (a recording cut
        short: the rest is missing or does not decode; nothing is counted for it)."""
        declared = self._frame_count()
        missing = declared - self._last_decoded
        if self._warned_short or self._delivered == 0 or missing <= max(1, declared // 100):
            return
        self._warned_short = True
        log.warning("%s: %s ends after frame %d of the %d its header declares: the last %d are "
                    "missing or do not decode (a file cut short?)", self.uri, self.path.name,
                    self._last_decoded, declared, missing)

    def _next(self) -> RawFrame | None:
        image = self._read_decodable()
        if image is None:
            self._warn_if_cut_short()
        if image is None and self.loop and self._delivered > 0:
            self._cap.release()
            self._cap = self._capture()
            self._position, self._delivered, self._last_decoded = 0, 0, 0
            image = self._read_decodable()
        if image is None:
            if self._delivered == 0 and self._position > 0:
                log.warning("%s: no frame of %s decodes (%d reads failed; its header declares %d "
                            "frames): the file holds none, or none this OpenCV build decodes",
                            self.uri, self.path.name, self._position, self._frame_count())
            return None
        self._delivered += 1
        return RawFrame(image, name=f"{self.path.stem}_{self._position - 1:06d}")

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None




class ImageListSource(FrameSource):
    """Frames from a list of image files, each with the YOLO labels of its label file.

    Each frame carries the labels of ``label_path_for(image)``: an empty file gives
    ``(0, 5)``; a missing file gives ``None`` (unlabelled, not background), as does a label
    file two images take (``y.jpg`` and ``y.png``: one warning, ``stats.bad_labels + 1``); a file with a
    refused row (see :mod:`edgecl.data.labels`) gives ``None``, one warning naming
    ``file:line`` and why, ``stats.bad_labels + 1`` and ``stats.refused_labels + rows``; a
    row whose box has no area, or is under one pixel wide or high in the image, is dropped
    (``stats.empty_boxes``, one warning per file) and the frame keeps its other boxes; a file
    whose every row is dropped so gives ``None`` (``stats.bad_labels + 1``), not a frame
    showing no object.
    An image that does not decode (truncated JPEG, corrupt file) is skipped with a warning
    giving the reason and ``stats.skipped + 1`` (never fatal). With ``loop`` the same files
    come back every pass: the counters count every pass, but each file is warned about once
    per run (the first time; later passes log at DEBUG).

    Args:
        uri: the URI.
        images: the image files, in delivery order (non-empty).
        loop: start again after the last image (only if a pass delivered a frame; a pass
            that delivers none after one that did is a failure: :class:`SourceError`, the
            run's ``source_error`` and exit code 1, since the files went away).
        cfg: source settings.
    """

    root: Path
    """The folder frame names are relative to (the dataset's root; else the images' common folder)."""
    labelled: bool = False
    """True when some image has a label file (set by the subclass that finds the images)."""
    names: dict[int, str] | None = None
    """Class id -> name, when the dataset names its classes."""
    kpt_values: int = 0
    """Keypoint values per label row of a pose dataset (its ``kpt_shape``; 0: none)."""

    def __init__(self, uri: str, images: list[Path], loop: bool = False, cfg: SourceConfig | None = None):
        super().__init__(uri, cfg)
        self.images = list(images)
        self.loop = loop
        self._index = 0
        self._delivered_this_pass = False
        self._delivered_before = False  # an earlier pass delivered a frame
        self._warned: set[tuple[str, Path]] = set()  # bounded: at most 3 per image of the list
        self.root = _common_folder(self.images)
        self._shared_labels = shared_label_files(self.images)

    @classmethod
    def of_one_image(cls, uri: str, path: Path, loop: bool = False,
                     cfg: SourceConfig | None = None) -> "ImageListSource":
        """``file://IMAGE``: one still image, read as ``dir://`` reads its images (EXIF-upright,
        16-bit stretched, a truncated file refused), with its YOLO label file where there is
        one. Before, FFmpeg decoded it as a one-frame video: an EXIF-rotated photo came
        sideways, a truncated JPEG grey-filled, a 16-bit PNG in stripes.

        Args:
            uri: the URI.
            path: the image file.
            loop: deliver it again and again.
            cfg: source settings.

        Returns:
            The unopened source.
        """
        source = cls(uri, [path], loop, cfg)
        source.labelled = label_path_for(path).is_file()
        return source

    def _watched_folder(self) -> Path:
        """The folder a wait for vanished images names (the images' common folder)."""
        return self.root

    def _images_gone(self) -> bool:
        """Whether the images about to be read are all gone at once (the next
        :data:`GONE_SAMPLE` of the list): a card unmounted under its mount point's empty
        folder, the files moved away; one image deleted is skipped as before."""
        ahead = (self.images[self._index:] + self.images[:self._index])[:GONE_SAMPLE]
        return bool(ahead) and not any(os.path.lexists(p) for p in ahead)

    def _wait_for_folder(self, folder: Path) -> None:
        """Wait up to :data:`FOLDER_GONE_WAIT_S` for ``folder`` and its images to come back,
        then stream it again from its first image (rescanned).

        Raises:
            SourceError: it did not come back in time (before: one warning per image, then
                'a whole pass ... read none' at once, though the folder came back 25 s later).
        """
        log.warning("%s: the folder %s or its images are gone (an unmounted card, files moved "
                    "away?): waiting up to %g s for them to come back", self.uri, folder,
                    FOLDER_GONE_WAIT_S)
        deadline = time.monotonic() + FOLDER_GONE_WAIT_S
        while not self._closing.is_set():
            if folder.is_dir() and (not self._images_gone() or self._rescan()):
                log.warning("%s: the folder %s is back: streaming it again", self.uri, folder)
                self._index = 0
                return
            if time.monotonic() >= deadline:
                raise SourceError(f"{self.uri}: the folder {folder} or its images are gone and "
                                  f"did not come back within {FOLDER_GONE_WAIT_S:g} s")
            self._closing.wait(0.5)

    def _rescan(self) -> bool:
        """Before another pass of a looping source: take the files as they are now (a folder
        another process drops frames into). A plain list of images has nothing to rescan.

        Returns:
            True when the list changed.
        """
        return False

    def _warn_once(self, kind: str, path: Path, msg: str, *args) -> None:
        """Log a warning about a file the first time only (DEBUG on later loop passes)."""
        key = (kind, path)
        if key in self._warned:
            log.debug(msg, *args)
            return
        self._warned.add(key)
        log.warning(msg, *args)

    def _open(self) -> None:
        self._index = 0
        self._delivered_this_pass = False

    def frame_name(self, path: Path) -> str:
        """The name a frame of ``path`` carries: its path below :attr:`root`, suffix kept.

        ``a.jpg``, ``a.png`` and ``sub/a.jpg`` are three names (a frame's name is what its
        ``--out`` line, its queue item and its memory sample's ``source`` show).

        Args:
            path: one of :attr:`images`.

        Returns:
            The POSIX relative path below :attr:`root`, or the file name when ``path`` is not
            below it.
        """
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.name

    def _labels(self, image_path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
        label_path = label_path_for(image_path)
        if not label_path.is_file():
            return None
        if label_path in self._shared_labels:  # before: both frames carried one's boxes
            self._count("bad_labels")
            self._warn_once("label", image_path, "delivering %s unlabelled: %s", image_path,
                            shared_label_problem(image_path, label_path,
                                                 self._shared_labels[label_path]))
            return None
        names = getattr(self, "names", None)
        try:  # a class id the dataset does not name is a refused row (ultralytics' rule)
            parsed = read_yolo_labels(label_path, max(names) + 1 if names else None,
                                      self.kpt_values)
        except LabelError as exc:
            self._count("bad_labels")
            self._warn_once("label", image_path, "delivering %s unlabelled: %s", image_path, exc)
            return None
        if parsed.refused:
            self._count("bad_labels")
            self._count("refused_labels", len(parsed.refused))
            shown = "; ".join(parsed.refused[:_MAX_REFUSED_SHOWN])
            more = len(parsed.refused) - _MAX_REFUSED_SHOWN
            self._warn_once("label", image_path, "delivering %s unlabelled: refused label row(s): %s%s",
                            image_path, shown, f" (and {more} more)" if more > 0 else "")
            return None
        small = under_pixels(parsed.labels, shape[1], shape[0], MIN_BOX_PX)
        dropped = [*parsed.empty, *(f"{label_path}: box {labels_to_text(row).strip()} is under "
                                    f"one pixel wide or high in the {shape[1]}x{shape[0]} image"
                                    for row in parsed.labels[small])]
        if dropped:
            self._count("empty_boxes", len(dropped))
            if not (~small).any():  # before: streamed as a frame showing no object
                self._count("bad_labels")
                self._warn_once("empty", image_path, "delivering %s unlabelled: every box of %s "
                                "has no area or is under a pixel (%s)", image_path, label_path,
                                dropped[0])
                return None
            self._warn_once("empty", image_path, "%s: dropped %d box(es) with no area or under a "
                            "pixel (%s); the frame keeps its other %d", image_path, len(dropped),
                            dropped[0], int((~small).sum()))
        return parsed.labels[~small]

    def _next(self) -> RawFrame | None:
        while not self._closing.is_set():
            if self._index >= len(self.images):
                if self.loop and not self._delivered_this_pass and self._delivered_before:
                    if self._rescan():  # other files arrived meanwhile: a pass over them
                        self._index = 0
                        continue
                    # the files went away (an unmounted card, a deleted folder): a failure a
                    # supervisor must see, as a camera that gives up, not the end of a folder
                    raise SourceError(f"{self.uri}: a whole pass over its {len(self.images)} "
                                      f"image(s) read none (gone or unreadable now; the "
                                      f"warnings above say why)")
                if not (self.loop and self._delivered_this_pass):
                    return None
                self._rescan()
                self._index, self._delivered_this_pass = 0, False
                self._delivered_before = True
            path = self.images[self._index]
            self._index += 1
            try:
                image = read_image(path)
            except ImageError as exc:
                if exc.errno in TRANSIENT_READ_ERRNOS:  # the process, not the file: read it again
                    self._index -= 1
                    self._count("read_retries")
                    self._warn_once("transient", Path(), "cannot read images now (%s); "
                                    "retrying every %.1f s", exc, TRANSIENT_RETRY_S)
                    self._closing.wait(TRANSIENT_RETRY_S)
                    continue
                if exc.errno == errno.ENOENT and self._images_gone():
                    # the folder gone, or all its images at once: one line and a wait, not a
                    # warning per image then the end (asked on a failed read only: no look
                    # at the folder for each frame)
                    self._index -= 1  # read again once they are back
                    self._wait_for_folder(self._watched_folder())
                    continue
                self._count("skipped")
                self._warn_once("image", path, "skipping image: %s", exc)
                continue
            self._delivered_this_pass = True
            return RawFrame(image, self._labels(path, image.shape), name=self.frame_name(path))
        return None


def _common_folder(paths: list[Path]) -> Path:
    """The deepest folder holding all ``paths`` (``Path()`` for none, or relative beside absolute)."""
    try:
        return Path(os.path.commonpath([str(p.parent) for p in paths]))
    except ValueError:
        return Path()


def _label_hint(root: Path) -> str:
    """Where a folder holds annotations of another format (as ``labels import`` finds them:
    VOC's ``Annotations/``, a COCO json on top, in ``annotations/`` or a split folder), what to
    do with them; else ``""``."""
    if voc_annotations(root) is not None or any(root.glob("*.xml")):
        return "; Pascal VOC annotations? convert them with `edgecl dataset import`"
    if find_coco_json(root) is not None or any(root.glob("*.json")):
        return "; COCO annotations? convert them with `edgecl dataset import`"
    return ""


def warn_about_labels(uri: str, root: Path, images: list[Path]) -> int:
    """Log where labels were looked for when some or all images have none; count them.

    Args:
        uri: the source URI (starts the message).
        root: the dataset's root folder (for a hint about other annotation formats).
        images: the images that will be streamed.

    Returns:
        How many of ``images`` have a label file.
    """
    found, first_missing, odd = labels_report(images)
    if odd:  # there, but nothing to read: called missing before
        log.warning("%s: %d label file(s) cannot be read and their frames stream unlabelled "
                    "(e.g. %s is %s)", uri, len(odd), odd[0], missing_file_why(odd[0]))
    missing = len(images) - found - len(odd)
    if found == 0 and not missing:
        return found
    if found == 0:
        hint = _label_hint(root)
        # a folder of plain frames is a recording, which field mode labels on the device (the
        # runtime's labelling line says so, and warns when nothing would label it); annotations
        # in another format beside them are more likely a mistake
        log.log(logging.WARNING if hint else logging.INFO,
                "%s: no YOLO labels found, frames stream unlabelled (looked for %s)%s", uri,
                first_missing, hint)
    elif missing:
        log.warning("%s: %d of %d images have no label file (e.g. looked for %s); they stream unlabelled",
                    uri, missing, len(images), first_missing)
    return found


def _other_files_hint(ignored) -> str:
    """What a folder with no image holds instead (for its error line): ``""`` when nothing; the
    counts by suffix; and, when some are videos, that ``file://`` reads a video."""
    if not ignored:
        return ""
    kinds = ", ".join(f"{suffix or '(no suffix)'}: {n}" for suffix, n in ignored.most_common(5))
    hint = f"; it holds {sum(ignored.values())} other file(s) ({kinds})"
    if any(suffix in VIDEO_SUFFIXES for suffix in ignored):
        hint += "; a video is read with file://PATH, one file per run"
    return hint


class ImageDirSource(ImageListSource):
    """``dir://PATH[?loop=1&split=all|train|val|test&fps=N]``: images of a folder or dataset, in
    name order (``fps``: the rate ``runtime.realtime`` paces them at, as a camera would).

    ``PATH`` is any folder of images (recursive), a YOLO dataset (``images/`` beside
    ``labels/``), an ultralytics ``data.yaml`` (or a folder holding one) or a Roboflow export
    (``train/ valid/ test/``); see :func:`edgecl.data.yolo_dataset.find_dataset`. ``split``
    picks one split of a dataset (default: all, train then val then test). Every image format
    ultralytics reads is streamed (any case of the suffix); other files are counted in
    ``stats.ignored_files`` and named by suffix in one warning. When images have no label
    file where the YOLO rule puts it, one warning names the path looked at. Labels as in
    :class:`ImageListSource`; ``names`` holds the dataset's class names
    (:func:`~edgecl.data.importers.dataset_class_names`; ``None`` when nothing names them).

    Args:
        uri: the URI.
        path: the folder or yaml.
        loop: start again after the last image (only if a pass delivered a frame).
        cfg: source settings.
        split: ``all``, ``train``, ``val`` or ``test``.

    Raises:
        SourceError: the path does not exist, is an unreadable yaml, has no such split, or
            holds no images.
    """

    def __init__(self, uri: str, path: str, loop: bool = False, cfg: SourceConfig | None = None,
                 split: str = "all"):
        root = _require_path(uri, path).resolve()
        if root.is_file() and root.suffix.lower() not in (".yaml", ".yml"):
            raise SourceError(f"{uri}: {root} is not a directory or a data.yaml (use file:// for videos)")
        try:
            dataset = find_dataset(root)
        except ConfigError as exc:
            raise SourceError(f"{uri}: {exc}") from None
        if split != "all" and split not in dataset.splits:
            raise SourceError(f"{uri}: {dataset.layout} {dataset.yaml_path or root} has no '{split}' split "
                              f"(it has: {', '.join(dataset.splits)})")
        images = dataset.images(split)
        if not images:
            link = dataset.dangling_link()
            raise SourceError(f"{uri}: no images ({', '.join(IMAGE_SUFFIXES)}, any case) under "
                              f"{dataset.yaml_path or root}"
                              + (f": {link}" if link else _other_files_hint(dataset.ignored)))
        super().__init__(uri, images, loop, cfg)
        self.root = dataset.root
        self.dataset = dataset
        self.kpt_values = dataset.kpt_values
        self._given, self._split = root, split
        try:
            self.names = dataset_class_names(dataset, images)
        except ConfigError as exc:
            raise SourceError(f"{uri}: {exc}") from None
        ignored = sum(dataset.ignored.values())
        if ignored:
            self._count("ignored_files", ignored)
            special = [p for p in dataset.ignored_files if not path_is_file(p)]
            kinds = ", ".join(f"{suffix or '(no suffix)'}: {n}" for suffix, n in Counter(
                p.suffix.lower() for p in dataset.ignored_files if path_is_file(p)).most_common())
            if kinds:
                log.warning("%s: %d files are not images ultralytics reads and are not streamed "
                            "(%s)", uri, ignored - len(special), kinds)
            if special:
                log.warning("%s: %d entries are not regular files (links to nothing, FIFOs, "
                            "devices) and are not streamed, e.g. %s", uri, len(special), special[0])
        self.labelled = warn_about_labels(uri, dataset.root, images) > 0

    def _rescan(self) -> bool:
        """The folder's images as they are now, before another pass (``loop=1``): images added
        since are streamed, removed ones no longer tried. Before, a looping folder streamed
        the files of its start for ever, and ended with an error once they were all deleted
        although new ones had arrived. Kept as it was where the folder cannot be read now.

        A dataset a ``data.yaml`` describes is a fixed set: it is not rescanned.

        Returns:
            True when the list changed (one line says how).
        """
        if self.dataset.yaml_path is not None:
            return False
        try:
            images = find_dataset(self._given).images(self._split)
        except (ConfigError, OSError) as exc:
            log.debug("%s: folder not rescanned: %s", self.uri, exc)
            return False
        if not images or images == self.images:
            return False
        before = set(self.images)
        added, gone = sum(p not in before for p in images), len(before - set(images))
        log.info("%s: %d image(s) added and %d gone since the last pass; %d streamed from now",
                 self.uri, added, gone, len(images))
        self.images = list(images)
        self._shared_labels = shared_label_files(self.images)
        return True

    def _watched_folder(self) -> Path:
        """The folder the URI names (a data.yaml's: the folder holding it)."""
        yaml = self._given.suffix.lower() in (".yaml", ".yml") and not self._given.is_dir()
        return self._given.parent if yaml else self._given

    @classmethod
    def from_uri(cls, uri: str, path: str, params: QueryParams, cfg: SourceConfig | None) -> "ImageDirSource":
        """Build from a parsed URI (see :func:`edgecl.runtime.sources.open_source`).

        Args:
            uri: the full URI.
            path: the part after ``scheme://``, without the query.
            params: the query parameters.
            cfg: source settings.

        Returns:
            The unopened source.

        Raises:
            SourceError: missing path or bad parameter.
        """
        loop = params.get_bool("loop", False)
        split = params.get_choice("split", "all", ("all", "train", "val", "valid", "test"))
        split = "val" if split == "valid" else split  # Roboflow's folder name for it
        fps = params.get_fps()
        params.finish()
        source = cls(uri, path, loop, cfg, split)
        source.fps = fps or None  # the rate runtime.realtime paces it at
        return source
