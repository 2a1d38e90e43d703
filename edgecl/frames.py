"""Frozen records that flow through the runtime: frames in, detections out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

# The task of every frame that carries none (a camera: deployment). A dataset streamed as one
# task has it too: the learner then has no tasks, only classes.
STREAM_TASK = "stream"
MAX_TASK_CHARS = 128
"""Longest task name, in characters (the replay memory refuses a longer one)."""


class StreamState(enum.Enum):
    """Lifecycle of a frame source or of the inference loop."""

    CREATED = "created"
    OPEN = "open"
    RECONNECTING = "reconnecting"
    EXHAUSTED = "exhausted"
    CLOSED = "closed"


class LabelOrigin(str, enum.Enum):
    """Where a stored sample's labels came from (one enum for memory, runtime, import, web).

    ``ground_truth``: labels travelled with the frame (a labelled dataset or stream);
    ``operator``: a person answered an operator-queue item; ``import``: ``edgecl labels import``;
    ``pseudo``: confident detections of the model itself (never used for evaluation or the gate).
    """

    GROUND_TRUTH = "ground_truth"
    OPERATOR = "operator"
    IMPORT = "import"
    PSEUDO = "pseudo"

    @property
    def human_verified(self) -> bool:
        """True for labels a person or a dataset vouches for (eligible for held-out evaluation)."""
        return self is not LabelOrigin.PSEUDO

    @property
    def eviction_tier(self) -> int:
        """Which stored samples a full replay memory gives up first: the lowest tier present in
        the class or task its policy names. 0: pseudo-labels (the model's own, the least
        reliable); 1: labels that came with the frames or a dataset (ground truth, import);
        2: a person's answers, each asked for and costing the most."""
        return EVICTION_TIERS[self]



EVICTION_TIERS = {LabelOrigin.PSEUDO: 0, LabelOrigin.GROUND_TRUTH: 1, LabelOrigin.IMPORT: 1,
                  LabelOrigin.OPERATOR: 2}
"""Eviction tier of each origin (see :attr:`LabelOrigin.eviction_tier`)."""


def empty_labels() -> np.ndarray:
    """Return an empty YOLO label array of shape (0, 5).

    Returns:
        float32 array with columns ``cls, cx, cy, w, h`` (normalised 0..1).
    """
    return np.zeros((0, 5), dtype=np.float32)


@dataclass(frozen=True)
class Frame:
    """One image from a source.

    Attributes:
        image: BGR uint8 array, shape (H, W, 3).
        frame_id: monotonically increasing index within the source.
        ts_s: capture time in seconds (``time.time()`` for live sources).
        source: URI of the source that produced it.
        labels: ground truth in YOLO format, shape (N, 5): ``cls, cx, cy, w, h``
            normalised to 0..1; ``None`` when the frame is unlabelled.
        task: name of the task this frame belongs to (scenario streams), else ``None``.
        name: stable identifier of the frame, if any: an image's path below the streamed
            folder (``sub/a.jpg``), a video's stem and frame number (``clip_000012``).
        captured_mono_s: capture time on ``time.monotonic()`` (what latency is measured
            from: a wall clock set meanwhile would make it a year, or 0); ``None`` when the
            frame was made elsewhere.
    """

    image: np.ndarray
    frame_id: int
    ts_s: float
    source: str
    labels: np.ndarray | None = None
    task: str | None = None
    name: str = ""
    captured_mono_s: float | None = None

    @property
    def is_labelled(self) -> bool:
        """True when ground-truth labels travel with the frame."""
        return self.labels is not None


@dataclass(frozen=True)
class Detections:
    """Detections for one image, in original image pixels.

    Attributes:
        boxes_xyxy: float32 (N, 4) boxes ``x1, y1, x2, y2`` in pixels of the input image.
        scores: float32 (N,) confidences in 0..1.
        classes: int64 (N,) class indices.
    """

    boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def above(self, min_score: float) -> "Detections":
        """The detections scoring at least ``min_score`` (a copy; ``self`` when all do)."""
        keep = self.scores >= min_score
        if bool(keep.all()):
            return self
        return Detections(self.boxes_xyxy[keep], self.scores[keep], self.classes[keep])

    def to_records(self, names: dict[int, str] | None = None) -> list[dict]:
        """Convert to JSON-ready dicts.

        Args:
            names: optional class-index to name map.

        Returns:
            One dict per detection with ``box``, ``score``, ``cls`` and optionally ``name``.
        """
        out = []
        for box, score, cls in zip(self.boxes_xyxy, self.scores, self.classes):
            rec = {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4),
                   "cls": int(cls)}
            if names is not None:
                rec["name"] = names.get(int(cls), str(int(cls)))
            out.append(rec)
        return out

    def to_yolo_labels(self, width: int, height: int, min_score: float = 0.0) -> np.ndarray:
        """Convert detections above ``min_score`` into YOLO label rows.

        Args:
            width: image width in pixels.
            height: image height in pixels.
            min_score: keep detections with score >= this.

        Returns:
            float32 array (N, 5) of ``cls, cx, cy, w, h`` normalised.
        """
        keep = self.scores >= min_score
        b = self.boxes_xyxy[keep]
        if b.shape[0] == 0:
            return empty_labels()
        cx = (b[:, 0] + b[:, 2]) / 2 / width
        cy = (b[:, 1] + b[:, 3]) / 2 / height
        w = (b[:, 2] - b[:, 0]) / width
        h = (b[:, 3] - b[:, 1]) / height
        cls = self.classes[keep].astype(np.float32)
        return np.clip(np.stack([cls, cx, cy, w, h], axis=1), [0, 0, 0, 0, 0],
                       [np.inf, 1, 1, 1, 1]).astype(np.float32)
