"""Records of the replay memory: what goes in (Sample), what comes out (StoredSample), and
the checks and conversions of labels and images on the way. Labels and images follow the
project's one label rule (:mod:`edgecl.data.labels`) and image rule (:mod:`edgecl.data.images`)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecl.data.answers import MAX_BOXES
from edgecl.data.images import ImageError, read_image
from edgecl.data.labels import check_label_array, read_yolo_labels
from edgecl.errors import LabelError, ReplayMemoryError
from edgecl.frames import STREAM_TASK, Frame, LabelOrigin

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
        origin: where its labels came from; only human-verified origins (everything but
            ``pseudo``) may join the held-out slice used for evaluation and the gate.
        content_hash: hash of the image (:func:`edgecl.data.images.pixels_hash` of its
            decoded pixels, which the runtime and imports record; imports of an earlier
            version recorded their file's bytes hash); the memory refuses a second sample with
            the same hash (:class:`DuplicateSampleError`). ``None``: unknown (never refused).
        planned_held_out: an imported sample's held-out draw, planned over its import's
            whole list (:func:`edgecl.continual.memory.admission.plan_import_held_out`), or
            None (drawn as it is offered); not stored.
    """

    image: np.ndarray
    labels: np.ndarray
    task: str
    source: str = ""
    ts_s: float = field(default_factory=time.time)
    origin: LabelOrigin = LabelOrigin.GROUND_TRUTH
    content_hash: str | None = None
    planned_held_out: bool | None = None

    @classmethod
    def from_frame(cls, frame: Frame, task: str | None = None,
                   origin: LabelOrigin = LabelOrigin.GROUND_TRUTH) -> "Sample":
        """Build a sample from a labelled frame.

        Args:
            frame: the frame; its ``labels`` must not be ``None``.
            task: task name; defaults to ``frame.task`` or :data:`STREAM_TASK`.
            origin: where the frame's labels came from.

        Returns:
            The sample.

        Raises:
            LabelError: the frame carries no labels.
        """
        if frame.labels is None:
            raise LabelError(f"frame {frame.frame_id} from {frame.source} has no labels")
        return cls(image=frame.image, labels=frame.labels, task=task or frame.task or STREAM_TASK,
                   source=frame.name or frame.source, ts_s=frame.ts_s, origin=LabelOrigin(origin))


class DuplicateSampleError(ReplayMemoryError):
    """The memory already holds a sample with this content hash (an image imported twice).

    Attributes:
        sample_id: the id of the sample already stored.
    """

    def __init__(self, message: str, sample_id: int):
        super().__init__(message)
        self.sample_id = sample_id


class MissingSampleError(ReplayMemoryError):
    """The memory holds no sample of this id: evicted, removed, or relabelled under a new id
    (by a correction, or a class merge) since the caller looked it up."""


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
        held_out: True for the evaluation slice (never returned for training); never True
            for a ``pseudo`` sample.
        recall_baseline: image recall@0.5 when its task had just been learnt (or None).
        last_recall: latest measured image recall@0.5 (or None).
        last_loss: latest training loss on the image (or None).
        times_replayed: how often it was replayed.
        width: image width in pixels.
        height: image height in pixels.
        origin: where its labels came from.
        image_bytes: exact length of the image file (None for rows written before it was
            recorded); the quick verify compares it with the file.
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
    origin: LabelOrigin = LabelOrigin.GROUND_TRUTH
    image_bytes: int | None = None

    def to_json(self) -> dict:
        """Return the record as a JSON-ready dict."""
        out = dict(self.__dict__)
        out["classes"] = list(self.classes)
        out["origin"] = self.origin.value
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "SampleRecord":
        """Rebuild a record from :meth:`to_json` output (older snapshots lack ``origin``
        and ``image_bytes``: ground truth, size unknown).

        Raises:
            TypeError / ValueError / KeyError: a field missing or of the wrong JSON type (a
                hand-edited or damaged record: ``"held_out": "yes"``, ``"origin": 5``).
        """
        data = dict(obj)
        for key, kinds in _JSON_FIELD_TYPES.items():
            value = data[key] if key in _REQUIRED_FIELDS else data.get(key)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise TypeError(f"record {str(data.get('id'))[:20]}: {key!r} is "
                                f"{str(value)[:40]!r}, not {_kind_names(kinds)}")
        if not all(type(c) is int for c in data["classes"]):
            raise TypeError(f"record {data['id']}: 'classes' must be class ids")
        data["classes"] = tuple(data["classes"])
        data["origin"] = origin_from_text(data.get("origin"))
        data["held_out"] = bool(data["held_out"]) and data["origin"].human_verified
        return cls(**data)


_NUMBER = (int, float)
_JSON_FIELD_TYPES = {"id": (int,), "task": (str,), "classes": (list, tuple), "source": (str,),
                     "ts_s": _NUMBER, "bytes": (int,), "held_out": (bool, int),
                     "width": (int,), "height": (int,), "times_replayed": (int,),
                     "recall_baseline": (*_NUMBER, type(None)), "last_recall": (*_NUMBER, type(None)),
                     "last_loss": (*_NUMBER, type(None)), "origin": (str, type(None)),
                     "image_bytes": (int, type(None))}
"""The JSON types :meth:`SampleRecord.from_json` accepts per field (a bool only where listed)."""
_REQUIRED_FIELDS = frozenset({"id", "task", "classes", "source", "ts_s", "bytes", "held_out",
                              "width", "height", "times_replayed"})


def _kind_names(kinds: tuple) -> str:
    names = {int: "a whole number", float: "a number", str: "text", bool: "true/false",
             list: "a list", tuple: "a list", type(None): "null"}
    return " or ".join(dict.fromkeys(names[k] for k in kinds))


@dataclass(frozen=True)
class StoredSample:
    """A sample as stored: its index fields, its files and its parsed labels.

    Attributes:
        id, task, classes, source, ts_s, bytes, held_out, recall_baseline, last_recall,
            last_loss, times_replayed, width, height, origin, image_bytes: as in
            :class:`SampleRecord`.
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
    origin: LabelOrigin
    image_bytes: int | None
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


def origin_from_text(text: str | None) -> LabelOrigin:
    """Parse a stored origin; absent means ground truth (rows older than the column).

    An unknown value (a damaged or hand-edited index) counts as ``pseudo``: such a sample may
    still be replayed but is never used to evaluate a model.

    Args:
        text: the stored value or None.

    Returns:
        The origin.
    """
    if text is None:
        return LabelOrigin.GROUND_TRUTH
    try:
        return LabelOrigin(text)
    except ValueError:
        return LabelOrigin.PSEUDO


def file_stem(sample_id: int) -> str:
    """Return the file stem of a sample id (zero-padded so names sort by id)."""
    return f"{sample_id:08d}"


def decode_image_file(path: Path) -> np.ndarray:
    """Read and decode a stored image with the project's image rule
    (:func:`edgecl.data.images.read_image`: a truncated JPEG is refused).

    Args:
        path: image file.

    Returns:
        BGR uint8 array (H, W, 3).

    Raises:
        ReplayMemoryError: missing, unreadable, truncated or undecodable file.
    """
    try:
        return read_image(path)
    except ImageError as exc:
        raise ReplayMemoryError(f"stored image {exc}") from None


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
    """Validate YOLO label rows with the project's label rule
    (:func:`edgecl.data.labels.check_label_array`, ultralytics' semantics).

    A box overshooting 0..1 within ultralytics' tolerance is clipped; identical rows are
    dropped (keeping the first), as when the file is read back.

    Args:
        labels: (N, 5) rows ``cls, cx, cy, w, h``; an empty array means a background image.
        where: description of the sample for the error message.
        nc: number of known classes (class ids must be below it), or None if unknown.

    Returns:
        float32 (N, 5) checked, clipped rows.

    Raises:
        LabelError: ``labels`` is None (an unlabelled frame), wrong shape, non-finite values,
            fractional or out-of-range class, coordinates beyond the tolerance, no area, more
            than :data:`edgecl.data.answers.MAX_BOXES` distinct boxes.
    """
    if labels is None:
        raise LabelError(f"{where}: labels are None (an unlabelled frame is no sample; a "
                         f"background image has an empty (0, 5) array)")
    arr = check_label_array(labels, where, nc)
    if len(arr) < 2:
        return arr
    _, first = np.unique(arr, axis=0, return_index=True)
    arr = arr[np.sort(first)]
    if len(arr) > MAX_BOXES:  # an operator's answer is bounded so; an import was not (100,000
        # boxes in one image were stored, and the next round took 1.2 GB)
        raise LabelError(f"{where}: {len(arr)} boxes: at most {MAX_BOXES} per image")
    return arr


def parse_label_file(path: Path, nc: int | None = None) -> np.ndarray:
    """Read a stored label file with the project's label rule
    (:func:`edgecl.data.labels.read_yolo_labels`).

    The memory writes these files itself, so any refused row means damage.

    Args:
        path: the ``.txt`` file.
        nc: number of known classes, or None.

    Returns:
        float32 (N, 5) rows.

    Raises:
        LabelError: missing or unreadable file, or a refused row (``file:line: why``; the
            count of further refused rows is appended).
    """
    parsed = read_yolo_labels(path, nc)
    if parsed.refused:
        more = len(parsed.refused) - 1
        raise LabelError(parsed.refused[0] + (f" (and {more} more refused rows)" if more else ""))
    return parsed.labels


def encode_jpeg(image: np.ndarray, quality: int, where: str) -> bytes:
    """Encode an image as JPEG.

    Args:
        image: BGR or grayscale uint8 array.
        quality: JPEG quality 1..100.
        where: description of the sample for the error message.

    Returns:
        The JPEG bytes.

    Raises:
        ReplayMemoryError: a side over JPEG's limit of 65500 pixels
            (:data:`edgecl.data.images.JPEG_MAX_SIDE`), or OpenCV refused to encode the image.
    """
    import cv2

    from edgecl.data.images import jpeg_side_problem

    too_large = jpeg_side_problem(image)
    if too_large:
        raise ReplayMemoryError(f"{where}: cannot be stored as JPEG ({too_large})")
    ok, buf = cv2.imencode(IMAGE_SUFFIX, image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ReplayMemoryError(f"{where}: JPEG encoding failed for image of shape {image.shape}")
    return buf.tobytes()


def classes_of(labels: np.ndarray) -> tuple[int, ...]:
    """Return the distinct class ids of label rows, ascending."""
    return tuple(sorted({int(c) for c in labels[:, 0]})) if len(labels) else ()


def renumber_classes(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray | None:
    """Label rows with their class ids renumbered (a class merged into another), a box given
    under both ids kept once (the first, order kept).

    Args:
        labels: ``(N, 5)`` float YOLO rows.
        mapping: class id -> the id it becomes.

    Returns:
        The renumbered rows, or None when no row holds a mapped class.
    """
    ids = labels[:, 0].astype(np.int64)
    hit = np.isin(ids, list(mapping))
    if not hit.any():
        return None
    out = labels.copy()
    out[hit, 0] = [mapping[int(c)] for c in ids[hit]]
    _, first = np.unique(out, axis=0, return_index=True)
    return out[np.sort(first)]


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
