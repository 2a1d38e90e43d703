"""The labelling pipeline, run in the loop's sink thread (never on the inference thread).

For each frame (the README's "Teaching your device"):

1. ground truth travels with the frame -> store it (origin ``ground_truth``);
2. else (mode ``field``) the selection policies score the frame -> the operator queue;
3. else (modes ``pseudo`` and ``field``) confident detections of known classes above their
   per-class calibrated thresholds -> store them (origin ``pseudo``).

``labels.mode``: ``field`` (1 + 2 + 3; ``edgecl labels import`` works in every mode),
``pseudo`` (1 + 3), ``ground_truth`` (1 only), ``off`` (nothing is stored or queued).

A storage fault (full disk, read-only directory: :class:`~edgecl.errors.StorageError` or any
``OSError`` from the memory or the queue) pauses storing with one warning; detection goes on;
storing is retried every ``labels.storage_retry_s`` and resumes by itself. Frames not stored
meanwhile are counted.

The same image twice. A stored frame carries the :func:`~edgecl.data.images.pixels_hash` of its
image as delivered (a queued one keeps it for its answer, :mod:`edgecl.runtime.labels.queue`),
so ``edgecl labels import`` of the same image file later finds it (``already in memory``; a
``dir://`` source decodes images as the import does). A frame whose image the memory already
holds (a looping folder's next pass, an image imported before) is neither stored nor queued:
it is counted as ``duplicate_frame`` and logged at DEBUG only; a copy held with pseudo-labels
is still queued for a person, and replaced by ground truth or the person's answer. The hash
(sha256 of the pixels: about 1.5 ms for 640x512, 9 ms for 1920x1080 on an x86 core) is taken
in the sink thread, for frames to be stored or queued only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgecl.config import Config, LabelsConfig
from edgecl.data.images import jpeg_side_problem, pixels_hash, small_side_problem
from edgecl.errors import (EdgeclError, LabelError, SampleTooLargeError, StorageError,
                           UnavailableError, storage_fault)
from edgecl.frames import Detections, Frame, LabelOrigin
from edgecl.runtime.labels.pseudo import REFUSALS, PseudoLabeler, Thresholds
from edgecl.runtime.labels.queue import OperatorQueue
from edgecl.continual.memory import held_copy
from edgecl.continual.memory.embedding import EMBEDDING_DIM
from edgecl.runtime.labels.selection import Candidate, MemoryEmbeddings, Selector

log = logging.getLogger(__name__)

MODES = ("ground_truth", "pseudo", "field", "off")
FROM_DETECTIONS = ("pseudo", "field")
"""The modes that label frames from their detections: pseudo-labels, judged against the
uncertain band (``field`` also queues the band's frames for a person)."""
DECISIONS = ("mode_off", "ground_truth", "unlabelled", "queued", "pseudo", *REFUSALS,
             "pseudo_duplicate", "pseudo_rate_limited")
"""Every ``LabelDecision.why``: what happened to a frame, or why it was not pseudo-labelled."""
WARN_FIRST = 5
WARN_EVERY = 1000


def merged_labels(labels: np.ndarray, classes) -> np.ndarray:
    """Labels whose class ids name merged classes, given the ids those were merged into (a
    model still outputs a retired class's slot until a round has unlearnt it).

    Args:
        labels: ``(N, 5)`` float YOLO rows.
        classes: the class registry (``merged()``; a registry without it merges nothing).

    Returns:
        ``labels`` itself when no row names a merged class, else a changed copy.
    """
    merged = getattr(classes, "merged", None)
    merged = merged() if merged is not None else {}
    if not merged or not any(int(c) in merged for c in labels[:, 0]):
        return labels
    out = labels.copy()
    out[:, 0] = [merged.get(int(c), int(c)) for c in labels[:, 0]]
    return out


def unnamed_label_ids(labels: np.ndarray, names: dict[int, str], where: str) -> np.ndarray:
    """Labels of a source that names no class, with each id as the device's class it means
    (:func:`~edgecl.data.class_names.unnamed_class_target`: ``class_20`` kept at id 1 by an
    import takes the stream's id 20; before, the stream's id 1 was stored as it).

    Args:
        labels: ``(N, 5)`` float YOLO rows with the source's ids.
        names: the class registry's id -> name.
        where: the frame, for the error.

    Returns:
        ``labels`` itself when every id means itself, else a renumbered copy.

    Raises:
        LabelError: an id whose class the device does not have (its own id names another
            dataset id's ``class_<k>``).
    """
    from edgecl.data.class_names import unnamed_class_target

    ids = sorted({int(c) for c in labels[:, 0]})
    target = {k: unnamed_class_target(k, names) for k in ids}
    missing = [k for k in ids if target[k] is None and k in names]
    if missing:
        k = missing[0]
        raise LabelError(f"{where}: its labels name no class, and class id {k} means class_{k}, "
                         f"which this device does not have (its id {k} is {names[k]!r}, another "
                         f"id of a dataset without names); give the folder a data.yaml with names, "
                         f"or import it with 'edgecl labels import'")
    if all(target[k] in (None, k) for k in ids):
        return labels
    out = labels.copy()
    out[:, 0] = [target[int(c)] if target[int(c)] is not None else int(c) for c in labels[:, 0]]
    return out


@dataclass(frozen=True)
class LabelDecision:
    """What to do with one frame.

    Attributes:
        labels: YOLO rows to store (float32 (N, 5)) or ``None``.
        queue_for_operator: True when the frame goes to the operator queue.
        origin: origin of ``labels`` (``None`` when nothing is stored).
        why: short reason, one of :data:`DECISIONS`, counted by the sink (``ground_truth``,
            ``queued``, ``pseudo``, ``uncertain``, ``pseudo_duplicate``, ...).
        candidate: priority, reasons and embedding of a queued frame.
        embedding: the frame's thumbnail embedding when it was computed.
        selection: what the selection said in ``field`` mode (``selected``, ``not_selected``,
            ``duplicate``, ``rate_limited``; empty when it was not asked).
    """

    labels: np.ndarray | None
    queue_for_operator: bool
    origin: LabelOrigin | None
    why: str
    candidate: Candidate | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)
    selection: str = ""


class LabelPipeline:
    """The decision part of labelling: ground truth, then selection, then pseudo-labels.

    Args:
        cfg: labelling settings.
        selector: selection policies and their state (built from ``cfg`` when ``None``).
        pseudo: pseudo-labeler (``labels.pseudo_conf`` for every class when ``None``).
    """

    def __init__(self, cfg: LabelsConfig, selector: Selector | None = None,
                 pseudo: PseudoLabeler | None = None):
        if cfg.mode not in MODES:
            raise EdgeclError(f"labels.mode {cfg.mode!r} is not one of {', '.join(MODES)}")
        self.cfg = cfg
        self.selector = selector or Selector(cfg)
        self.pseudo = pseudo or PseudoLabeler(None, cfg.pseudo_conf, cfg.uncertain_low,
                                              cfg.uncertain_high)

    def decide(self, frame: Frame, detections: Detections) -> LabelDecision:
        """Choose what happens to one frame (the caller stores or queues it).

        Args:
            frame: the frame (with ``labels`` when ground truth travels with it).
            detections: the detector's output for it.

        Returns:
            The decision. A queued frame is only *offered*: call
            ``selector.queued(candidate)`` once it is in the queue.
        """
        mode = self.cfg.mode
        if mode == "off":
            return LabelDecision(None, False, None, "mode_off")
        if frame.labels is not None:
            return LabelDecision(frame.labels, False, LabelOrigin.GROUND_TRUTH, "ground_truth")
        if mode == "ground_truth":
            return LabelDecision(None, False, None, "unlabelled")
        emb, selection = None, ""
        if mode == "field":
            # while the queue takes no frame, scoring one is wasted work on the sink thread,
            # which shares the cores with inference (most frames of a camera arrive then)
            if self.selector.queue_limit.allowed():
                emb = self.selector.embed(frame.image)
                candidate, selection = self.selector.consider(frame, detections, emb)
                if candidate is not None:
                    return LabelDecision(None, True, None, "queued", candidate, emb, selection)
            else:
                selection = "rate_limited"
        height, width = frame.image.shape[:2]
        labels, why = self.pseudo.label(detections, width, height)
        if labels is not None and emb is None:
            emb = self.selector.embed(frame.image)
        if labels is not None and self.selector.is_duplicate(emb):
            labels, why = None, "pseudo_duplicate"
        if labels is not None and not self.selector.pseudo_limit.allowed():
            labels, why = None, "pseudo_rate_limited"
        origin = LabelOrigin.PSEUDO if labels is not None else None
        return LabelDecision(labels, False, origin, why, embedding=emb, selection=selection)


def decide_labels(frame: Frame, detections: Detections, cfg: LabelsConfig,
                  pseudo: PseudoLabeler | None = None) -> LabelDecision:
    """One-shot decision for a frame with a fresh (stateless) pipeline.

    Useful for tests and tools; the runtime keeps one :class:`LabelPipeline` (its novelty ring,
    duplicates and rate limits live across frames).

    Args:
        frame: the frame.
        detections: its detections.
        cfg: labelling settings.
        pseudo: pseudo-labeler with per-class thresholds (``pseudo_conf`` for all when ``None``).

    Returns:
        The decision.
    """
    return LabelPipeline(cfg, pseudo=pseudo).decide(frame, detections)


class MemorySink:
    """Loop sink: the labelling pipeline, storing into the replay memory and the operator queue.

    Keeps the counters the learner supervisor uses to trigger rounds. A refused sample (bad
    label, class id the registry does not know) is logged and counted; a storage fault pauses
    storing (``paused_reason``) until a retry succeeds; the stream always goes on.

    Args:
        memory: the replay memory (``add(Sample)``, ``records()``, ``close()``).
        cfg: labelling settings.
        queue: the operator queue.
        classes: the class registry (``check_ids(ids, where, names=)``, ``names()``); ``None`` skips
            the id check and shows class ids in queue items.
        pseudo: pseudo-labeler with the per-class thresholds.
        selector: selection policies and state.
        clock: monotonic seconds clock of the storage retry.

    Attributes:
        observers: callables ``(frame, labels, origin)`` told of every frame the sink stored
            (benchmarks measure pseudo-label precision with it); whatever one raises is logged
            and counted, never propagated.
    """

    def __init__(self, memory, cfg: LabelsConfig, queue: OperatorQueue, *, classes=None,
                 pseudo: PseudoLabeler | None = None, selector: Selector | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.memory = memory
        self.cfg = cfg
        self.queue = queue
        self.classes = classes
        self.pipeline = LabelPipeline(cfg, selector, pseudo)
        self.selector = self.pipeline.selector
        self.clock = clock
        self.paused_reason: str | None = None
        self._retry_at = 0.0
        self.added = 0
        self._counted: set[int] = set()  # operator samples in self.added (bounded: per round)
        self.closed = False
        self.classes_seen: set[int] = set()
        # set by the runtime when the stream's labels name no class (a YOLO folder without
        # names): each id k means the device's class named class_<k> where one has another id
        self.unnamed_labels = False
        self._own_ids: list[int] = []
        self._id_lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.observers: list[Callable] = []
        self._lock = threading.Lock()
        for created_s, emb in queue.embeddings():
            if emb.shape == (EMBEDDING_DIM,):  # a hand-edited item's other length is ignored
                self.selector.remember(emb, created_s)

    @classmethod
    def from_config(cls, cfg: Config, *, memory=None, classes=None, thresholds: Thresholds = None,
                    previous_detector=None, forgetting_classes=None,
                    known_classes=None) -> "MemorySink":
        """Build the sink on the state directory named by the config.

        Args:
            cfg: the configuration.
            memory: an open replay memory (opened from the config when ``None``).
            classes: the class registry (``edgecl.models.classes.ClassRegistry``).
            thresholds: per-class pseudo-label thresholds: a mapping or a cheap
                ``callable() -> {class_id: threshold}`` (the current version's calibrator at
                ``labels.pseudo_precision``).
            previous_detector: ``callable(image BGR) -> Detections | None``: the previous
                version on the same frame (``disagreement`` policy).
            forgetting_classes: ``callable() -> set[int]``: classes whose held-out recall fell
                in the last round (``forgetting`` policy).
            known_classes: ``callable() -> set[int]``: class ids the current model knows
                (pseudo-labels only for those).

        Returns:
            The sink (interrupted operator answers already finished).
        """
        lab = cfg.labels
        if memory is None:
            from edgecl.continual.memory import memory_from_config

            memory = memory_from_config(cfg, record_settings=True)  # the device's settings
            if classes is not None:
                from edgecl.models.classes import adopt_memory_class_names

                try:  # ids a restored classes.json lost
                    adopt_memory_class_names(memory, classes)
                except BaseException:
                    memory.close()
                    raise
        queue = OperatorQueue.from_config(cfg)
        queue.recover(memory)
        novelty = None
        if lab.mode == "field" and lab.selection.novel > 0:
            novelty = MemoryEmbeddings(memory)
            novelty.refresh(force=True)  # at start: an older memory's embeddings are made here
        selector = Selector(lab, previous_detector=previous_detector,
                            forgetting_classes=forgetting_classes, memory=novelty)
        pseudo = PseudoLabeler(thresholds, lab.pseudo_conf, lab.uncertain_low, lab.uncertain_high,
                               known_classes=known_classes)
        return cls(memory, lab, queue, classes=classes, pseudo=pseudo, selector=selector)

    # --- counters -------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> int:
        with self._lock:
            self.counts[key] += n
            return self.counts[key]

    def _warn(self, key: str, msg: str, *args) -> None:
        """Warn on the first few occurrences of a kind, then every WARN_EVERY-th."""
        n = self._count("warn_" + key)
        if n <= WARN_FIRST or n % WARN_EVERY == 0:
            log.warning(msg + (f" ({n} so far)" if n > WARN_FIRST else ""), *args)

    def stats(self) -> dict:
        """Counters for ``/healthz`` and ``/metrics``.

        Returns:
            ``{"paused_reason": str | None, "counts": {name: n}}`` with counts such as
            ``stored_ground_truth``, ``stored_pseudo``, ``queued``, ``not_stored``,
            ``refused_label``, ``frame_too_large`` (over the memory's budget for one
            sample), ``refused_class``, ``refused_frame``, ``declined``,
            ``duplicate_frame`` (the memory already held the image), ``evicted_before``
            (its bounds evicted the image before: not stored again), ``novelty_read_errors``
            (the ``novel`` policy's view of the memory could not be updated) and the decision
            reasons.
        """
        with self._lock:
            counts = {k: v for k, v in self.counts.items() if not k.startswith("warn_")}
        read_errors = getattr(getattr(self.selector, "memory", None), "read_errors", 0)
        if read_errors:
            counts["novelty_read_errors"] = int(read_errors)
        return {"paused_reason": self.paused_reason, "counts": counts}

    # --- storage pause --------------------------------------------------------------------

    def _may_store(self) -> bool:
        if self.paused_reason is None or self.clock() >= self._retry_at:
            return True
        self._count("not_stored")
        return False

    def _storage_failed(self, exc: BaseException, frame: Frame) -> None:
        exc = storage_fault(exc, "the disk refused it") or exc  # "No space left on device (PATH)"
        self._count("not_stored")
        self._retry_at = self.clock() + self.cfg.storage_retry_s
        if self.paused_reason is None:
            log.warning("storing paused: frame %s from %s could not be written (%s); detection "
                        "goes on, retrying every %.0f s", frame.frame_id, frame.source, exc,
                        self.cfg.storage_retry_s)
        self.paused_reason = f"storage fault: {exc}"

    def _storage_ok(self) -> None:
        if self.paused_reason is not None:
            log.warning("storing resumed (%d frame(s) were not stored while paused)",
                        self.counts["not_stored"])
            self.paused_reason = None

    # --- the sink -------------------------------------------------------------------------

    def write(self, result) -> None:
        """Label, store or queue the frame of one loop result (a frame that cannot be stored
        as JPEG, a side over 65500 pixels, or that no round could learn from, a side under
        10 pixels, is counted as ``refused_frame``, with a warning)."""
        frame = result.frame  # the labels read the detections down to the band (labelling)
        detections = result.detections if result.labelling is None else result.labelling
        refused = jpeg_side_problem(frame.image) or small_side_problem(frame.image)
        if refused:
            self._count("refused_frame")
            self._warn("frame", "frame %s from %s not stored or queued: %s", frame.frame_id,
                       frame.source, refused)
            return
        decision = self.pipeline.decide(frame, detections)
        self._count(decision.why)
        if decision.selection and decision.selection != "selected":
            self._count("selection_" + decision.selection)
        if decision.queue_for_operator:
            self._push(frame, detections, decision.candidate)
        elif decision.labels is not None:
            self._store(frame, decision)

    def _evicted_before(self, frame: Frame, digest: str) -> bool:
        """Count a frame whose image the memory's bounds evicted before (``evicted_before``,
        DEBUG only): a looping recording larger than the memory offers it on every pass, and
        storing it again was a "new" sample each time (a round every few frames, forever)."""
        if not self.memory.evicted_before(digest):
            return False
        self._count("evicted_before")
        log.debug("frame %s from %s not stored or queued: the memory evicted its image before",
                  frame.frame_id, frame.source)
        return True

    def _already_stored(self, frame: Frame, digest: str, held: int | None) -> bool:
        """Count a frame whose image the memory holds as sample ``held`` (``duplicate_frame``,
        DEBUG only: a looping folder repeats every frame); False when ``held`` is ``None``."""
        if held is None:
            return False
        self._count("duplicate_frame")
        log.debug("frame %s from %s not stored or queued: its image is already in memory as "
                  "sample %s (content %s)", frame.frame_id, frame.source, held, digest)
        return True

    def _push(self, frame: Frame, detections: Detections, candidate: Candidate) -> None:
        if not self._may_store():
            return
        names = None
        if self.classes is not None:
            names = self.classes.names()
        digest = pixels_hash(frame.image)
        try:
            # a pseudo-labelled copy is no reason not to ask a person: the answer replaces it
            if self._already_stored(frame, digest,
                                    held_copy(self.memory, digest, LabelOrigin.OPERATOR)) \
                    or self._evicted_before(frame, digest):
                return
            waiting = self.queue.pending_with_content(digest)
            if waiting is not None:  # the same picture already waits for the person
                self._count("duplicate_frame")
                log.debug("frame %s from %s not queued: its image waits as item %s",
                          frame.frame_id, frame.source, waiting)
                return
            item_id = self.queue.push(frame, detections, priority=candidate.priority,
                                      reasons=candidate.reasons, embedding=candidate.embedding,
                                      names=names, content_hash=digest)
        except (StorageError, OSError) as exc:
            self._storage_failed(exc, frame)
            return
        except LabelError as exc:  # the frame cannot be encoded: this frame only
            self._count("refused_frame")
            self._warn("frame", "%s", exc)
            return
        self._storage_ok()
        if item_id is None:
            self._count("queue_full")
            return
        self.selector.queued(candidate)
        self._count("queued_items")

    def _store(self, frame: Frame, decision: LabelDecision) -> None:
        from edgecl.continual.memory import STREAM_TASK, DuplicateSampleError, Sample

        labels, origin = decision.labels, decision.origin
        where = f"frame {frame.frame_id} from {frame.source}"
        names = None  # the registry's names, read once per stored frame
        if self.classes is not None and labels.shape[0]:
            try:
                names = self.classes.names()
                if self.unnamed_labels:
                    labels = unnamed_label_ids(labels, names, where)
                self.classes.check_ids(sorted({int(c) for c in labels[:, 0]}), where, names=names)
                labels = merged_labels(labels, self.classes)
            except EdgeclError as exc:
                self._count("refused_class")
                self._warn("class", "%s not stored: %s", where, exc)
                return
        if not self._may_store():
            return
        digest = pixels_hash(frame.image)  # of the frame as delivered: what an import finds
        sample = Sample(image=frame.image, labels=labels, task=frame.task or STREAM_TASK,
                        source=frame.name or frame.source, ts_s=frame.ts_s, origin=origin,
                        content_hash=digest)
        try:
            if self._already_stored(frame, digest, held_copy(self.memory, digest, origin)) \
                    or self._evicted_before(frame, digest):
                return  # before the memory encodes it and counts it as a frame offered
            if self.classes is not None:
                self.memory.sync_class_names(names if names is not None else self.classes.names())
            with self._id_lock:  # see take_own_ids: the id is known as ours once committed
                sample_id = self.memory.add(sample)
                if sample_id is not None:
                    self._own_ids.append(sample_id)
        except (StorageError, OSError) as exc:
            self._storage_failed(exc, frame)
            return
        except DuplicateSampleError as exc:  # stored meanwhile by another process
            self._already_stored(frame, digest, exc.sample_id)
            return
        except SampleTooLargeError as exc:  # the frame does not fit, not its labels
            self._count("frame_too_large")
            self._warn("label", "%s not stored: %s", where, exc)
            return
        except EdgeclError as exc:
            self._count("refused_label")
            self._warn("label", "%s not stored: %s", where, exc)
            return
        self._storage_ok()
        if origin is LabelOrigin.PSEUDO:
            self.selector.pseudo_limit.take()
        if decision.embedding is not None:
            self.selector.stored(decision.embedding)
        if sample_id is None:
            self._count("declined")
            return
        self._count(f"stored_{origin.value}")
        if self._trains_on(sample_id):
            with self._lock:
                self.added += 1
                self.classes_seen.update(int(c) for c in labels[:, 0])
        for observer in self.observers:
            try:
                observer(frame, labels, origin)
            except Exception as exc:  # an observer must never stop storing
                self._count("observer_errors")
                self._warn("observer", "observer of stored frames failed: %s", exc)

    def answer(self, item_id: str, boxes: object) -> dict:
        """Answer a queue item (see :meth:`OperatorQueue.answer`) and count the new sample.

        The runtime's HTTP handler calls this, so operator labels (and a new class) count
        towards the learner's triggers like any stored frame.

        Args:
            item_id: the queue item.
            boxes: ``[{"class": "name", "xyxy": [x1, y1, x2, y2]}]`` in original-frame pixels.

        Returns:
            The answer's summary (``id, sample, boxes, classes_added``).

        Raises:
            NotFoundError, ConflictError, LabelError, StorageError: as the queue raises them.
            UnavailableError: the sink is closed (the runtime is stopping): nothing is stored.
            EdgeclError: no class registry was given to the sink.
        """
        if self.classes is None:
            raise EdgeclError("operator answers need the class registry")
        with self._open_memory(f"label item '{item_id}' not answered", "send the answer again"):
            out = self.queue.answer(item_id, boxes, self.memory, self.classes)
            if out["sample"] is not None:
                self._own_ids.append(out["sample"])
        if out["sample"] is not None:
            self._count("stored_operator")
            if self._trains_on(out["sample"]):
                with self._lock:
                    self.added += 1
                    self._counted.add(int(out["sample"]))
                    self.classes_seen.update(out["class_ids"])
        return out

    def correct(self, item_id: str, boxes: object) -> dict:
        """Correct an answered item's boxes (see :meth:`OperatorQueue.correct`); the relabelled
        sample counts towards the learner's triggers as a new one.

        Raises:
            NotFoundError, ConflictError, LabelError, StorageError: as the queue raises them.
            UnavailableError: the sink is closed (the runtime is stopping).
            EdgeclError: no class registry was given to the sink.
        """
        if self.classes is None:
            raise EdgeclError("operator answers need the class registry")
        with self._open_memory(f"label item '{item_id}' not corrected",
                               "send the correction again"):
            out = self.queue.correct(item_id, boxes, self.memory, self.classes)
            self._own_ids.append(out["sample"])
        self._count("corrected_operator")
        self._uncount(out.get("replaced"))  # the corrected sample is the one that counts now
        if self._trains_on(out["sample"]):
            with self._lock:
                self.added += 1
                self._counted.add(int(out["sample"]))
                self.classes_seen.update(out["class_ids"])
        return out

    def _uncount(self, sample_id) -> None:
        """Take a sample back off the learner's trigger count, if it is on it (counted since the
        last round took the counters): an answer withdrawn, or replaced by its correction."""
        if sample_id is None:
            return
        with self._lock:
            if int(sample_id) in self._counted:
                self._counted.discard(int(sample_id))
                self.added = max(0, self.added - 1)

    def withdraw(self, item_id: str) -> dict:
        """Take an answer back (see :meth:`OperatorQueue.withdraw`).

        Raises:
            NotFoundError, ConflictError, StorageError: as the queue raises them.
            UnavailableError: the sink is closed (the runtime is stopping).
        """
        with self._open_memory(f"label item '{item_id}' not withdrawn", "try again"):
            out = self.queue.withdraw(item_id, self.memory)
        self._count("withdrawn_operator")
        self._uncount(out.get("sample"))  # before, it still counted towards the next round
        return out

    def answers(self, limit: int = 50) -> list[dict]:
        """The latest answers still in memory (see :meth:`OperatorQueue.answers`).

        Raises:
            UnavailableError: the sink is closed (the runtime is stopping).
        """
        if self.classes is None:
            return []
        with self._open_memory("the answers"):
            return self.queue.answers(self.memory, self.classes, limit=limit)

    def answered_image(self, item_id: str) -> Path:
        """An answered item's image as the memory stores it.

        Raises:
            UnavailableError: the sink is closed (the runtime is stopping).
        """
        with self._open_memory(f"label item '{item_id}'"):
            return self.queue.answered_image_path(item_id, self.memory)

    def memory_stats(self) -> dict:
        """The replay memory's :meth:`~edgecl.continual.memory.ReplayMemory.stats`.

        Raises:
            UnavailableError: the sink is closed (the runtime is stopping).
        """
        with self._open_memory("the replay memory's figures"):
            return self.memory.stats()

    @contextlib.contextmanager
    def _open_memory(self, what: str, again: str = "ask again"):
        """Hold the memory open while an answer or a reader (the console) uses it: the loop's
        end closes it while the console still serves (before, a Live page read then was an
        HTTP 500 and a logged traceback: the index was closed under it).

        Raises:
            UnavailableError: ``"<what>: the runtime is stopping; <again> once it runs"``.
        """
        with self._id_lock:
            if self.closed:
                raise UnavailableError(f"{what}: the runtime is stopping; {again} once it runs")
            yield

    def _trains_on(self, sample_id: int) -> bool:
        """Whether a stored sample went to the training slots: a held-out one is nothing new
        for a round to learn, so it does not count towards the learner's triggers (as samples
        of other writers do not, ``LearnerSupervisor``); before, an answer drawn for the
        held-out slice started a round that found no new sample."""
        try:
            records = self.memory.records(ids=[sample_id])
        except (EdgeclError, OSError):  # not known: counted, as before
            return True
        return not (records and records[0].held_out)

    def skip(self, item_id: str) -> dict:
        """Skip a queue item (see :meth:`OperatorQueue.skip`)."""
        return self.queue.skip(item_id)

    def take_own_ids(self) -> list[int]:
        """Return and forget the ids of the samples this sink stored since the last call (the
        learner tells them from samples other processes stored: imports, CLI answers).

        A sample is added and its id recorded under one lock, so a caller that reads the
        memory's ids and then calls this gets every id of this sink that the read could see
        (before, a sample committed but not yet recorded was counted as another process's, and
        so twice towards the next round)."""
        with self._id_lock:
            ids, self._own_ids = self._own_ids, []
        return ids

    def take_counters(self) -> tuple[int, set[int]]:
        """Return and reset ``(new samples, classes seen)`` since the last call."""
        with self._lock:
            added, classes = self.added, set(self.classes_seen)
            self.added = 0
            self._counted.clear()
            self.classes_seen.clear()
        return added, classes

    def close(self) -> None:
        """Close the memory's index (the sink stores nothing after this; an operator's answer
        being stored is finished first, later ones are refused)."""
        with self._id_lock:
            self.closed = True
        close = getattr(self.memory, "close", None)
        if close is not None:
            close()


def labelling_conf(cfg: Config) -> float | None:
    """The score threshold the detector must run at for the labels, when it lies below
    ``model.conf``: ``labels.uncertain_low`` in ``field`` and ``pseudo`` modes.

    A frame holding a detection in the uncertain band is never pseudo-labelled, and such frames
    are the ones a person is asked about; with ``model.conf`` above the band's lower edge the
    band's lower part was never detected (before: a frame whose doubtful objects scored 0.3 to
    0.6 was pseudo-labelled at ``model.conf`` 0.6, teaching them as background). The runtime
    then runs the detector at this threshold, gives the labels sink every detection and the
    other sinks (``--out``, video, the console) those at ``model.conf`` or above.

    Args:
        cfg: the configuration (``model.conf``, ``labels.mode``, ``labels.uncertain_low``).

    Returns:
        ``labels.uncertain_low``, or None when the band is unused or lies above ``model.conf``.
    """
    if cfg.labels.mode not in FROM_DETECTIONS or cfg.labels.uncertain_low >= cfg.model.conf:
        return None
    return float(cfg.labels.uncertain_low)


def uncertain_band_problem(cfg: Config, floor: float | None, path) -> str | None:
    """Why a model's built-in NMS threshold hides part of the labels' uncertain band, or None.

    A model exported with NMS inside (ultralytics' ``nms=True``) keeps only scores above the
    ``conf`` it was exported with (read from its graph at load): frames
    whose detections score between ``labels.uncertain_low`` and it never reach the operator
    queue, and a frame holding one can be pseudo-labelled (the band bars it from that).

    Args:
        cfg: the configuration (``labels.mode`` and ``labels.uncertain_low``).
        floor: the model's built-in score threshold (``meta.extra["nms_score_threshold"]`` of
            a loaded model, or its version's manifest entry), None when it has none.
        path: the model file or version, as the line names it.

    Returns:
        One line, or None when the model has no such threshold, labels use no band, or the
        band lies above it.
    """
    if floor is None or cfg.labels.mode not in FROM_DETECTIONS:
        return None
    if cfg.labels.uncertain_low >= floor:
        return None
    return (f"labels.uncertain_low={cfg.labels.uncertain_low:g} is below the score threshold "
            f"built into {path} ({floor:g}, NMS exported with nms=True): detections between "
            f"them never reach the operator queue, and a frame holding one can be "
            f"pseudo-labelled; export it with nms=False")


def uncalibrated_note(cfg: Config, model: str, source_is_labelled: bool = False,
                      unusable: str = "") -> str | None:
    """One start line when pseudo-labels wait for a calibration the serving model lacks.

    Pseudo-label thresholds come from the serving version's post-hoc calibrator, which a
    learning round fits on held-out labels from a person or an import. A pretrained checkpoint
    (or a version without one) therefore pseudo-labels nothing until such a round promotes a
    version; in ``labels.mode: pseudo`` no frame reaches a person either, so without an import
    the device stores nothing at all (before, it ran for days saying nothing).

    Args:
        cfg: the configuration (``labels.mode``, ``state_dir``).
        model: the serving model's name (a version, or ``file:...``).
        source_is_labelled: whether the source delivers ground truth with its frames (stored,
            it leads to a calibrated version too).
        unusable: why the version's calibrator file is not used (damaged, unreadable), when
            it has one: said instead of the reasons a version has none.

    Returns:
        The line, or None when ``labels.mode`` makes no pseudo-labels.
    """
    mode = cfg.labels.mode
    if mode not in FROM_DETECTIONS:
        return None
    why = ("" if model.startswith("file:") else
           " (added with 'models add', or its round had too few held-out detections of the "
           "model to fit one on)")
    has = (f"{model}'s calibrator is not used ({unusable})" if unusable else
           f"{model} has no calibration{why}")
    line = (f"labels: {has}, so no frame is pseudo-labelled until a "
            f"learning round, fitted on labels from a person or an import, promotes a version")
    if source_is_labelled:
        return line + " (the labels this source delivers lead there)"
    if mode == "field":
        return line + " (the operator queue's answers lead there)"
    return (line + "; labels.mode pseudo queues nothing for a person, so until then nothing is "
            f"stored: add labelled images with 'edgecl labels import --state-dir "
            f"{cfg.state_dir} FOLDER', or set labels.mode: field")


def no_threshold_note(cfg: Config, model: str) -> str | None:
    """One start line when the serving version is calibrated but its calibrator gives no class
    a pseudo-label threshold yet (no class reached ``labels.pseudo_precision`` on at least
    ``labels.pseudo_min_true_positives`` held-out true positives): no frame is pseudo-labelled
    until a round fits one that does.

    Args:
        cfg: the configuration (``labels.*``).
        model: the serving version.

    Returns:
        The line, or None when ``labels.mode`` makes no pseudo-labels.
    """
    lab = cfg.labels
    if lab.mode not in FROM_DETECTIONS:
        return None
    return (f"labels: {model}'s calibration gives no class a pseudo-label threshold yet (none "
            f"reaches labels.pseudo_precision {lab.pseudo_precision:g} on at least "
            f"labels.pseudo_min_true_positives={lab.pseudo_min_true_positives} held-out true "
            f"positives), so no frame is pseudo-labelled until a round fits one that does")


def learns_nothing(cfg: Config, source_is_labelled: bool) -> bool:
    """Whether no label can come from this run's frames: ``labels.mode`` off, or ground truth
    only from a source that carries none (:func:`describe_labelling` says it as a warning)."""
    mode = cfg.labels.mode
    return mode == "off" or (mode == "ground_truth" and not source_is_labelled)


def describe_labelling(cfg: Config, source_is_labelled: bool) -> str:
    """One log line saying, at start, where this run's labels will come from.

    Args:
        cfg: the configuration (``labels``, ``server``, ``state_dir``).
        source_is_labelled: whether the source delivers ground truth with its frames.

    Returns:
        The line (no trailing newline); log it as a warning when :func:`learns_nothing`.
    """
    from edgecl.runtime.server import url_host

    lab = cfg.labels
    state = cfg.state_dir
    answer_cli = f"'edgecl labels pending|show|answer|skip --state-dir {state}'"
    import_cli = f"'edgecl labels import --state-dir {state} FOLDER'"
    scheme = "https" if cfg.server.tls_cert.strip() else "http"
    if not cfg.server.enabled:
        page = "the console page (now off: set server.enabled: true)"
    elif cfg.server.port == 0:  # before: "http://127.0.0.1:0/", an address nothing answers
        page = "the console page (on a port chosen at start: see the 'console on' line)"
    else:
        page = f"the console page {scheme}://{url_host(cfg.server.host)}:{cfg.server.port}/"
    if lab.mode == "off":
        return "labels.mode is off: no frame is stored or queued, so nothing will be learnt"
    if lab.mode == "ground_truth":
        if source_is_labelled:
            return ("labels: ground truth delivered with the frames is stored "
                    "(labels.mode: ground_truth)")
        return ("labels: this source carries no labels and labels.mode is ground_truth, so nothing "
                "will be stored and nothing learnt; set labels.mode: field to have a person label "
                f"chosen frames ({page} or {answer_cli}) with confident detections "
                f"pseudo-labelled, "
                f"or add labelled images with {import_cli}")
    gt = "ground truth delivered with the frames is stored; " if source_is_labelled else ""
    floor = (f"; labels.pseudo_conf {lab.pseudo_conf:g} is below labels.uncertain_high "
             f"{lab.uncertain_high:g}, so no threshold is below {lab.uncertain_high:g}"
             if lab.pseudo_conf < lab.uncertain_high else "")
    pseudo = (f"confident detections of known classes become pseudo-labels (per-class calibrated "
              f"thresholds at precision {lab.pseudo_precision:g}{floor})")
    if lab.mode == "pseudo":
        return (f"labels: {gt}{pseudo}; no frame is queued for a person (labels.mode: pseudo), so "
                f"a new class is learnt only from {import_cli}")
    weights = ", ".join(f"{k} {v:g}" for k, v in dataclasses.asdict(lab.selection).items()
                        if v > 0) or "none"
    rate = f"at most {lab.max_per_minute}/min" if lab.max_per_minute > 0 else "no rate limit"
    return (f"labels: {gt}frames chosen by selection ({weights}; {rate}) "
            f"wait for a person's boxes on {page} or with {answer_cli}; {import_cli} adds labelled "
            f"folders; {pseudo}")
