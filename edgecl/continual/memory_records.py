"""Records of the replay memory: what goes in (Sample), what comes out (StoredSample), and
the checks and conversions of YOLO label rows and images on the way."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecl.errors import LabelError, ReplayMemoryError
from edgecl.frames import Frame

IMAGE_SUFFIX = ".jpg"
LABEL_SUFFIX = ".txt"


@dataclass(frozen=True)
class Sample:
    """A labelled image offered to the memory.

    Attributes:
        image: BGR uint8 array (H, W, 3) (grayscale (H, W) is accepted too).
        labels: float32 (N, 5) YOLO rows ``cls, cx, cy, w, h`` normalised to 0..1; N may be 0
            (a labelled background image).
        task: name of the task the image belongs to.
        source: where it came from (URI or file name), kept for provenance.
        ts_s: capture time in seconds.
    """

    image: np.ndarray
    labels: np.ndarray
    task: str
    source: str = ""
    ts_s: float = field(default_factory=time.time)

    @classmethod
    def from_frame(cls, frame: Frame, task: str | None = None) -> "Sample":
        """Build a sample from a labelled frame.

        Args:
            frame: the frame; its ``labels`` must not be ``None``.
            task: task name; defaults to ``frame.task`` or ``"default"``.

        Returns:
            The sample.

        Raises:
            LabelError: the frame carries no labels.
        """
        if frame.labels is None:
            raise LabelError(f"frame {frame.frame_id} from {frame.source} has no labels")
        return cls(image=frame.image, labels=frame.labels, task=task or frame.task or "default",
                   source=frame.name or frame.source, ts_s=frame.ts_s)


@dataclass(frozen=True)
class SampleRecord:
    """One row of the memory index (metadata only; no pixels).

    Attributes:
        id: sample id, never reused.
        task: task name.
        classes: distinct class ids present in the labels, ascending.
        source: provenance.
        ts_s: capture time in seconds.
        bytes: bytes on disk of the image and label files together.
        held_out: True for the evaluation slice (never returned for training).
        recall_baseline: image recall@0.5 when its task had just been learnt (or None).
        last_recall: latest measured image recall@0.5 (or None).
        last_loss: latest training loss on the image (or None).
        times_replayed: how often it was replayed.
        width: image width in pixels.
        height: image height in pixels.
    """

    id: int
    task: str
    classes: tuple[int, ...]
    source: str
    ts_s: float
    bytes: int
    held_out: bool
    recall_baseline: float | None
    last_recall: float | None
    last_loss: float | None
    times_replayed: int
    width: int
    height: int

    def to_json(self) -> dict:
        """Return the record as a JSON-ready dict."""
        out = dict(self.__dict__)
        out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "SampleRecord":
        """Rebuild a record from :meth:`to_json` output."""
        data = dict(obj)
        data["classes"] = tuple(int(c) for c in data["classes"])
        return cls(**data)


@dataclass(frozen=True)
class StoredSample:
    """A sample as stored: its index fields, its files and its parsed labels.

    Attributes:
        id, task, classes, source, ts_s, bytes, held_out, recall_baseline, last_recall,
            last_loss, times_replayed, width, height: as in :class:`SampleRecord`.
        image_path: JPEG file.
        label_path: YOLO label file (``/images/`` -> ``/labels/``, same stem).
        labels: float32 (N, 5) YOLO rows read from ``label_path``.
    """

    id: int
    task: str
    classes: tuple[int, ...]
    source: str
    ts_s: float
    bytes: int
    held_out: bool
    recall_baseline: float | None
    last_recall: float | None
    last_loss: float | None
    times_replayed: int
    width: int
    height: int
    image_path: Path
    label_path: Path
    labels: np.ndarray

    @classmethod
    def from_record(cls, record: SampleRecord, image_path: Path, label_path: Path,
                    labels: np.ndarray) -> "StoredSample":
        """Combine an index row with its files and labels."""
        return cls(**record.__dict__, image_path=image_path, label_path=label_path, labels=labels)

    @property
    def record(self) -> SampleRecord:
        """The index row of this sample."""
        names = SampleRecord.__dataclass_fields__
        return SampleRecord(**{k: v for k, v in self.__dict__.items() if k in names})

    def load_image(self) -> np.ndarray:
        """Decode the stored image.

        Returns:
            BGR uint8 array.

        Raises:
            ReplayMemoryError: the file is missing or does not decode.
        """
        return decode_image_file(self.image_path)


def file_stem(sample_id: int) -> str:
    """Return the file stem of a sample id (zero-padded so names sort by id)."""
    return f"{sample_id:08d}"


def decode_image_file(path: Path) -> np.ndarray:
    """Read and decode an image file.

    Args:
        path: image file.

    Returns:
        BGR uint8 array.

    Raises:
        ReplayMemoryError: missing, unreadable or undecodable file.
    """
    import cv2

    try:
        data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise ReplayMemoryError(f"cannot read image {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ReplayMemoryError(f"image {path} does not decode")
    return image


def check_image(image: object, where: str) -> np.ndarray:
    """Check that ``image`` is a non-empty uint8 BGR or grayscale array.

    Args:
        image: the candidate image.
        where: description of the sample for the error message.

    Returns:
        The image as a contiguous uint8 array.

    Raises:
        ReplayMemoryError: not an array, empty, wrong shape or dtype.
    """
    if not isinstance(image, np.ndarray):
        raise ReplayMemoryError(f"{where}: image is {type(image).__name__}, expected a numpy array")
    if image.size == 0:
        raise ReplayMemoryError(f"{where}: empty image (size 0, shape {image.shape})")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ReplayMemoryError(f"{where}: image shape {image.shape} is not (H, W) or (H, W, 3)")
    if image.dtype != np.uint8:
        raise ReplayMemoryError(f"{where}: image dtype {image.dtype}, expected uint8")
    return np.ascontiguousarray(image)


def check_labels(labels: object, where: str, nc: int | None = None) -> np.ndarray:
    """Validate YOLO label rows.

    Args:
        labels: (N, 5) rows ``cls, cx, cy, w, h``; an empty array means a background image.
        where: description of the sample for the error message.
        nc: number of known classes (class ids must be below it), or None if unknown.

    Returns:
        float32 (N, 5) copy of the rows.

    Raises:
        LabelError: wrong shape, non-finite values, fractional or out-of-range class,
            coordinates outside 0..1.
    """
    try:
        arr = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError):
        raise LabelError(f"{where}: labels are not numeric rows") from None
    if arr.size == 0:
        return np.zeros((0, 5), np.float32)
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise LabelError(f"{where}: labels have shape {arr.shape}, expected (N, 5) "
                         f"rows 'cls cx cy w h'")
    for i, row in enumerate(arr):
        _check_row(row, f"{where}: label row {i}", nc)
    return arr.astype(np.float32)


def _check_row(row: np.ndarray, where: str, nc: int | None) -> None:
    if not np.all(np.isfinite(row)):
        raise LabelError(f"{where}: non-finite value in {row.tolist()}")
    cls = row[0]
    if cls < 0 or not float(cls).is_integer():
        raise LabelError(f"{where}: class {cls:g} is not a non-negative integer")
    if nc is not None and cls >= nc:
        raise LabelError(f"{where}: class {int(cls)} out of range (known classes: {nc})")
    if np.any(row[1:] < 0.0) or np.any(row[1:] > 1.0):
        raise LabelError(f"{where}: coordinates {row[1:].tolist()} outside 0..1")


def labels_to_text(labels: np.ndarray) -> str:
    """Format label rows as a YOLO label file (one ``cls cx cy w h`` line per box).

    Args:
        labels: validated (N, 5) rows.

    Returns:
        The file text (empty for a background image).
    """
    return "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in labels)


def parse_label_file(path: Path, nc: int | None = None) -> np.ndarray:
    """Read and validate a YOLO label file.

    Args:
        path: the ``.txt`` file.
        nc: number of known classes, or None.

    Returns:
        float32 (N, 5) rows.

    Raises:
        LabelError: missing file or a malformed line (message names file and line).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read label file {path}: {exc}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        where = f"{path}:{lineno}"
        if len(parts) != 5:
            raise LabelError(f"{where}: {len(parts)} columns, expected 5 'cls cx cy w h'")
        try:
            row = np.array([float(p) for p in parts])
        except ValueError:
            raise LabelError(f"{where}: non-numeric value in '{line.strip()}'") from None
        _check_row(row, where, nc)
        rows.append(row)
    if not rows:
        return np.zeros((0, 5), np.float32)
    return np.stack(rows).astype(np.float32)


def encode_jpeg(image: np.ndarray, quality: int, where: str) -> bytes:
    """Encode an image as JPEG.

    Args:
        image: BGR or grayscale uint8 array.
        quality: JPEG quality 1..100.
        where: description of the sample for the error message.

    Returns:
        The JPEG bytes.

    Raises:
        ReplayMemoryError: OpenCV refused to encode the image.
    """
    import cv2

    ok, buf = cv2.imencode(IMAGE_SUFFIX, image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ReplayMemoryError(f"{where}: JPEG encoding failed for image of shape {image.shape}")
    return buf.tobytes()


def classes_of(labels: np.ndarray) -> tuple[int, ...]:
    """Return the distinct class ids of label rows, ascending."""
    return tuple(sorted({int(c) for c in labels[:, 0]})) if len(labels) else ()


def classes_to_text(classes: tuple[int, ...]) -> str:
    """Serialise class ids for the index (a JSON list)."""
    return json.dumps(list(classes))


def classes_from_text(text: str) -> tuple[int, ...]:
    """Parse the index's class list (see :func:`classes_to_text`)."""
    return tuple(int(c) for c in json.loads(text))


def nan_to_none(value: float | None) -> float | None:
    """Map NaN to None (SQLite NULL), leave other values unchanged."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
