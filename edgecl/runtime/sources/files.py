"""File-backed sources: ``file://`` (a video) and ``dir://`` (images, optionally a YOLO dataset)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgecl.bench.tasks import label_path_for
from edgecl.config import SourceConfig
from edgecl.errors import LabelError, SourceError
from edgecl.frames import empty_labels
from edgecl.runtime.sources.base import FrameSource, QueryParams, RawFrame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_COORD_TOLERANCE = 1e-6


def _row_to_box(values: list[float], where: str) -> list[float]:
    if len(values) == 5:
        cls, cx, cy, w, h = values
    elif len(values) >= 7 and len(values) % 2 == 1:
        xy = np.asarray(values[1:], np.float64).reshape(-1, 2)  # polygon -> enclosing box
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        cls, (cx, cy), (w, h) = values[0], (lo + hi) / 2, hi - lo
    else:
        raise LabelError(f"{where}: expected 'cls cx cy w h' (or a polygon), got {len(values)} values")
    if cls < 0 or not float(cls).is_integer():
        raise LabelError(f"{where}: class id must be an integer >= 0, got {cls}")
    coords = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    if w <= 0 or h <= 0 or coords.min() < -_COORD_TOLERANCE or coords.max() > 1 + _COORD_TOLERANCE:
        raise LabelError(f"{where}: box must be normalised to 0..1 with w, h > 0")
    return [cls, cx, cy, w, h]


def read_yolo_labels(path: str | Path) -> np.ndarray:
    """Read a YOLO label file (boxes ``cls cx cy w h``; polygons become their enclosing box).

    Args:
        path: the ``.txt`` file.

    Returns:
        float32 (N, 5) array; ``(0, 5)`` for an empty file.

    Raises:
        LabelError: ``file:line: what`` for a malformed row.
        OSError: the file cannot be read.
    """
    rows = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise LabelError(f"{where}: non-numeric value in '{line.strip()}'") from None
        rows.append(_row_to_box(values, where))
    return np.array(rows, np.float32).reshape(-1, 5) if rows else empty_labels()


def _require_path(uri: str, path: str) -> Path:
    if not path:
        raise SourceError(f"{uri}: no path given")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise SourceError(f"{uri}: no such file or directory: {resolved}")
    return resolved


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
        self.loop = loop
        self._cap = None
        self._position = 0

    @classmethod
    def from_uri(cls, uri: str, path: str, params: QueryParams, cfg: SourceConfig | None) -> "VideoFileSource":
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
        return cls(uri, path, loop, cfg)

    def _capture(self):
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.uri}: cannot open video {self.path} (unsupported format or corrupt)")
        return cap

    def _open(self) -> None:
        self._cap = self._capture()
        self._position = 0

    def _next(self) -> RawFrame | None:
        ok, image = self._cap.read()
        if not ok and self.loop and self._position > 0:
            self._cap.release()
            self._cap = self._capture()
            self._position = 0
            ok, image = self._cap.read()
        if not ok or image is None:
            return None
        self._position += 1
        return RawFrame(image, name=f"{self.path.stem}_{self._position - 1:06d}")

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _labels_dir_for(root: Path) -> Path | None:
    """The labels folder that pairs with an image folder, or ``None`` if there is none."""
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return root / "labels"
    parts = list(root.resolve().parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        labels = Path(*parts[:i], "labels", *parts[i + 1:])
        return labels if labels.is_dir() else None
    return None


class ImageDirSource(FrameSource):
    """``dir://PATH[?loop=1]``: images under a folder, recursively, in name order.

    If the folder is a YOLO dataset (``PATH/images`` beside ``PATH/labels``, or ``PATH`` lies
    under an ``images`` folder with a sibling ``labels`` folder), each frame carries the labels
    of ``label_path_for(image)``: an empty file gives ``(0, 5)``; a missing file gives
    ``None`` (unlabelled, not background); a malformed file gives ``None``, a warning and
    ``stats.bad_labels + 1``. An unreadable image is skipped with a warning and
    ``stats.skipped + 1`` (never fatal).

    Args:
        uri: the URI.
        path: the folder.
        loop: start again after the last image (only if a pass delivered a frame).
        cfg: source settings.

    Raises:
        SourceError: the folder does not exist or holds no images.
    """

    def __init__(self, uri: str, path: str, loop: bool = False, cfg: SourceConfig | None = None):
        super().__init__(uri, cfg)
        root = _require_path(uri, path).resolve()
        if not root.is_dir():
            raise SourceError(f"{uri}: {root} is not a directory (use file:// for videos)")
        self.root = root / "images" if (root / "images").is_dir() and (root / "labels").is_dir() else root
        self.labels_dir = _labels_dir_for(root)
        self.images = sorted((p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                              and p.is_file()), key=lambda p: p.relative_to(self.root).as_posix())
        if not self.images:
            raise SourceError(f"{uri}: no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        self.loop = loop
        self._index = 0
        self._delivered_this_pass = False

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
        params.finish()
        return cls(uri, path, loop, cfg)

    @property
    def labelled(self) -> bool:
        """True when the folder is a YOLO dataset whose labels travel with the frames."""
        return self.labels_dir is not None

    def _open(self) -> None:
        self._index = 0
        self._delivered_this_pass = False

    def _labels(self, image_path: Path) -> np.ndarray | None:
        if self.labels_dir is None:
            return None
        label_path = label_path_for(image_path)
        if not label_path.is_file():
            return None
        try:
            return read_yolo_labels(label_path)
        except (LabelError, OSError, UnicodeDecodeError) as exc:
            self._count("bad_labels")
            log.warning("delivering %s unlabelled: %s", image_path, exc)
            return None

    def _next(self) -> RawFrame | None:
        import cv2

        while not self._closing.is_set():
            if self._index >= len(self.images):
                if not (self.loop and self._delivered_this_pass):
                    return None
                self._index, self._delivered_this_pass = 0, False
            path = self.images[self._index]
            self._index += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self._count("skipped")
                log.warning("skipping unreadable image %s", path)
                continue
            self._delivered_this_pass = True
            return RawFrame(image, self._labels(path), name=path.stem)
        return None
