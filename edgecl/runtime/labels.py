"""Where training labels come from: ground truth travelling with frames, pseudo-labels from
confident detections, and an operator queue for frames whose confidences are uncertain."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecl.atomic import atomic_write_bytes, atomic_write_json
from edgecl.config import Config, LabelsConfig
from edgecl.errors import EdgeclError
from edgecl.frames import Detections, Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelDecision:
    """What to do with one frame: store ``labels``, queue it for an operator, or neither."""

    labels: np.ndarray | None
    queue_for_operator: bool
    origin: str


def decide_labels(frame: Frame, detections: Detections, cfg: LabelsConfig) -> LabelDecision:
    """Choose the labels of a frame.

    Ground truth always wins. In ``pseudo`` mode, detections at or above ``pseudo_conf``
    become labels, unless some detection falls in the uncertain band
    ``[uncertain_low, uncertain_high)``: then the frame goes to the operator queue instead.

    Args:
        frame: the frame (with ``labels`` when ground truth travels with it).
        detections: the detector's output for it.
        cfg: labelling settings.

    Returns:
        The decision.
    """
    if frame.labels is not None:
        return LabelDecision(frame.labels, False, "ground_truth")
    if cfg.mode != "pseudo" or len(detections) == 0:
        return LabelDecision(None, False, "none")
    scores = detections.scores
    if np.any((scores >= cfg.uncertain_low) & (scores < cfg.uncertain_high)):
        return LabelDecision(None, True, "uncertain")
    height, width = frame.image.shape[:2]
    labels = detections.to_yolo_labels(width, height, min_score=cfg.pseudo_conf)
    if labels.shape[0] == 0:
        return LabelDecision(None, False, "none")
    return LabelDecision(labels, False, "pseudo")


class OperatorQueue:
    """Frames waiting for a person to accept or reject their proposed labels.

    Stored as ``STATE/labels/pending/<id>.jpg`` + ``<id>.json`` (written atomically; the JSON
    is written last, so an item without it is incomplete and ignored).

    Args:
        root: ``STATE/labels``.
        max_pending: bound on queued frames; the oldest are dropped beyond it.
    """

    def __init__(self, root: str | Path, max_pending: int = 200):
        self.dir = Path(root) / "pending"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_pending = max_pending

    def push(self, frame: Frame, detections: Detections) -> str:
        """Queue a frame with its detections as proposed labels; returns the item id."""
        import cv2

        # INVARIANT: ids sort in arrival order (nanosecond clock first, random tail for uniqueness)
        item_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
        ok, jpg = cv2.imencode(".jpg", frame.image)
        if not ok:
            raise EdgeclError(f"cannot encode frame {frame.frame_id} from {frame.source}")
        height, width = frame.image.shape[:2]
        atomic_write_bytes(self.dir / f"{item_id}.jpg", jpg.tobytes())
        atomic_write_json(self.dir / f"{item_id}.json", {
            "id": item_id, "source": frame.source, "frame_id": frame.frame_id, "task": frame.task,
            "ts_s": frame.ts_s, "width": width, "height": height,
            "detections": detections.to_records(),
            "proposed": detections.to_yolo_labels(width, height).tolist()})
        self._trim()
        return item_id

    def _trim(self) -> None:
        items = self.list()
        for item in items[: max(0, len(items) - self.max_pending)]:
            self._remove(item["id"])

    def list(self) -> list[dict]:
        """Pending items, oldest first."""
        out = []
        for meta in sorted(self.dir.glob("*.json")):
            try:
                out.append(json.loads(meta.read_text()))
            except json.JSONDecodeError:
                log.warning("unreadable pending label %s; ignored", meta)
        return out

    def get(self, item_id: str) -> tuple[dict, Path]:
        """Return ``(meta, image_path)`` of one item.

        Raises:
            KeyError: no such pending item.
        """
        meta = self.dir / f"{item_id}.json"
        if not meta.is_file():
            raise KeyError(item_id)
        return json.loads(meta.read_text()), self.dir / f"{item_id}.jpg"

    def _remove(self, item_id: str) -> None:
        for suffix in (".json", ".jpg"):
            (self.dir / f"{item_id}{suffix}").unlink(missing_ok=True)

    def accept(self, item_id: str, memory) -> int | None:
        """Store an item's proposed labels in the replay memory and dequeue it.

        Returns:
            The memory id (``None`` if the insertion policy declined it).

        Raises:
            KeyError: no such pending item.
        """
        import cv2

        from edgecl.continual.memory import Sample

        meta, image_path = self.get(item_id)
        image = cv2.imread(str(image_path))
        if image is None:
            raise EdgeclError(f"pending label {item_id}: image {image_path} is unreadable")
        labels = np.asarray(meta["proposed"], np.float32).reshape(-1, 5)
        sample_id = memory.add(Sample(image=image, labels=labels, task=meta.get("task") or "stream",
                                      source=meta.get("source", ""), ts_s=meta.get("ts_s", time.time())))
        self._remove(item_id)
        return sample_id

    def reject(self, item_id: str) -> None:
        """Drop an item.

        Raises:
            KeyError: no such pending item.
        """
        self.get(item_id)
        self._remove(item_id)


class MemorySink:
    """Loop sink that turns labelled frames into replay-memory samples.

    Keeps counters the supervisor uses to trigger learning rounds. A refused sample (bad
    label, full disk) is logged and counted; the stream goes on.

    Args:
        memory: the replay memory.
        cfg: labelling settings.
        queue: operator queue for uncertain frames.
    """

    def __init__(self, memory, cfg: LabelsConfig, queue: OperatorQueue):
        self.memory = memory
        self.cfg = cfg
        self.queue = queue
        self.added = 0
        self.refused = 0
        self.queued = 0
        self.classes_seen: set[int] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config) -> "MemorySink":
        """Build the sink on the state directory named by the config."""
        from edgecl.continual.memory import memory_from_config

        queue = OperatorQueue(Path(cfg.state_dir) / "labels", cfg.labels.max_pending)
        return cls(memory_from_config(cfg), cfg.labels, queue)

    def write(self, result) -> None:
        """Store (or queue) the frame of one loop result, as the labelling policy decides."""
        from edgecl.continual.memory import Sample

        frame = result.frame
        decision = decide_labels(frame, result.detections, self.cfg)
        if decision.queue_for_operator:
            self.queue.push(frame, result.detections)
            self.queued += 1
            return
        if decision.labels is None:
            return
        try:
            sample_id = self.memory.add(Sample(image=frame.image, labels=decision.labels,
                                               task=frame.task or "stream", source=frame.source,
                                               ts_s=frame.ts_s))
        except EdgeclError as exc:
            self.refused += 1
            log.warning("frame %s from %s not stored: %s", frame.frame_id, frame.source, exc)
            return
        if sample_id is not None:
            with self._lock:
                self.added += 1
                self.classes_seen.update(int(c) for c in decision.labels[:, 0])

    def take_counters(self) -> tuple[int, set[int]]:
        """Return and reset ``(new samples, classes seen)`` since the last call."""
        with self._lock:
            added, classes = self.added, set(self.classes_seen)
            self.added = 0
            self.classes_seen.clear()
        return added, classes

    def close(self) -> None:
        """Close the memory's index."""
        close = getattr(self.memory, "close", None)
        if close is not None:
            close()
