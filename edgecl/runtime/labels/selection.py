"""Which frames a person sees: named selection policies combined by weights from config.

Each policy is ``score(frame, detections, context) -> float`` in 0..1, registered in
:data:`SELECTION_POLICIES`; a frame's priority is ``sum(weight[p] * score_p)`` over the policies
whose weight (``labels.selection.<name>``) is above zero. A frame is offered to the operator
queue when its priority reaches ``labels.min_priority``, it is not a near-duplicate of a frame
queued or stored within ``labels.dedup_window_s``, and fewer than ``labels.max_per_minute``
frames were queued in the last minute, the last one at least ``60 / max_per_minute`` seconds ago
(:class:`RateLimiter`: a minute's share is spread over the minute).

The policies follow the usual pool-based active-learning families (Settles, "Active Learning
Literature Survey", 2009): uncertainty sampling (``uncertain``), density/diversity (``novel``),
query by committee with the previous model version as the second member (``disagreement``),
plus ``forgetting`` (classes whose held-out recall fell in the last round) and a small unbiased
``random`` share. The cheap embedding for novelty and duplicates is a 16x16 grey thumbnail with
its mean removed (robust to exposure changes), compared by RMS difference in 0..1
(:mod:`edgecl.continual.memory.embedding`); the near-duplicate check also compares at a shift
of up to two thumbnail cells, so a camera that pans or drifts slowly does not offer the same
scene again every few seconds.

Novelty compares a frame with what the replay memory holds (every stored sample's embedding,
kept in the memory index, so imports and answers from any process count, and evicted samples
stop counting) and with the frames queued or stored lately (:class:`NoveltyRing`, which also
serves the near-duplicate window).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgecl.config import LabelsConfig
from edgecl.continual.memory.embedding import (EMBEDDING_DIM, distances_to, shifted_distances,
                                              thumbnail_embedding)
from edgecl.continual.old_labels import box_iou_np
from edgecl.errors import EdgeclError
from edgecl.frames import Detections, Frame

log = logging.getLogger(__name__)

AGREE_IOU = 0.5
MEMORY_REFRESH_S = 10.0
"""How often (at most) the novelty view checks whether the replay memory changed, seconds."""
SHIFT_PREFILTER = 0.25
"""Near-duplicate check: only held frames within this plain distance are compared at a shift
(20-60 px pans of 480 px thermal frames were 0.02-0.20 apart plain; different scenes of the same
footage 0.10-0.30)."""
SHIFT_CANDIDATES = 32
"""Near-duplicate check: at most this many held frames (the nearest plain) are compared at a
shift."""
COMPACT_MIN_ROWS = 1024
"""The novelty view reclaims the rows of evicted samples once more than this many (and a
quarter of its rows) are such; it grows by at least this many rows."""


class NoveltyRing:
    """Bounded ring of embeddings of frames queued or stored, with the time each was last seen.

    Args:
        capacity: most embeddings kept; the oldest is overwritten beyond it.
    """

    def __init__(self, capacity: int = 512):
        self.capacity = max(1, int(capacity))
        self._emb = np.zeros((self.capacity, EMBEDDING_DIM), np.float32)
        self._ts = np.full(self.capacity, -np.inf)
        self._n = 0
        self._next = 0
        self._version = 0  # bumped by every add: the last frame's distances are kept until then
        self._cached: tuple[np.ndarray, int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self._n

    def _distances(self, emb: np.ndarray) -> np.ndarray:
        """Distances to every held entry; a frame's novelty and duplicate checks ask for the
        same embedding twice, so the last answer is kept until the ring changes."""
        cached = self._cached
        if cached is not None and cached[0] is emb and cached[1] == self._version:
            return cached[2]
        dist = distances_to(self._emb[: self._n], emb)
        self._cached = (emb, self._version, dist)
        return dist

    def nearest(self, emb: np.ndarray, since_s: float | None = None) -> float:
        """Distance to the closest embedding held (seen at or after ``since_s`` when given).

        Args:
            emb: float32 (256,).
            since_s: only entries seen at or after this time (seconds, the clock of ``add``).

        Returns:
            The distance in 0..1, or 1.0 when nothing qualifies.
        """
        if self._n == 0:
            return 1.0
        dist = self._distances(emb)
        if since_s is not None:
            dist = dist[self._ts[: self._n] >= since_s]
        return float(dist.min()) if dist.size else 1.0

    def nearest_shifted(self, emb: np.ndarray, since_s: float | None = None,
                        below: float = 1.0) -> float:
        """Like :meth:`nearest`, but a held frame also matches at a shift of up to
        :data:`~edgecl.continual.memory.embedding.MAX_SHIFT_CELLS` thumbnail cells (a camera
        that panned or drifted; :func:`~edgecl.continual.memory.embedding.shifted_distances`).

        Only the ``SHIFT_CANDIDATES`` entries nearest in plain distance, and of those only the
        ones within ``SHIFT_PREFILTER``, are compared shifted (at most about 0.8 ms on the
        reference CPU), and none when a plain match is already under ``below``: a static scene
        costs what :meth:`nearest` costs.

        Args:
            emb: float32 (256,).
            since_s: only entries seen at or after this time (seconds, the clock of ``add``).
            below: a plain distance under this is returned at once.

        Returns:
            The distance in 0..1, or 1.0 when nothing qualifies.
        """
        if self._n == 0:
            return 1.0
        dist = self._distances(emb)
        rows = self._emb[: self._n]
        if since_s is not None:
            recent = self._ts[: self._n] >= since_s
            dist, rows = dist[recent], rows[recent]
        if not dist.size:
            return 1.0
        plain = float(dist.min())
        if plain < below:
            return plain
        if dist.size > SHIFT_CANDIDATES:
            keep = np.argpartition(dist, SHIFT_CANDIDATES)[:SHIFT_CANDIDATES]
            dist, rows = dist[keep], rows[keep]
        near = dist < SHIFT_PREFILTER
        if not near.any():
            return plain
        return min(plain, float(shifted_distances(rows[near], emb).min()))

    def add(self, emb: np.ndarray, ts_s: float, merge_distance: float = 0.0) -> None:
        """Remember an embedding; one within ``merge_distance`` of a held one only refreshes it.

        Merging keeps the ring diverse (a static scene at 30 fps does not fill it).

        Args:
            emb: float32 (256,).
            ts_s: when it was seen (the selector's monotonic clock).
            merge_distance: refresh the nearest entry instead when closer than this.
        """
        if self._n and merge_distance > 0:
            dist = self._distances(emb)
            i = int(dist.argmin())
            if dist[i] < merge_distance:
                self._ts[i] = max(self._ts[i], ts_s)
                return
        self._version += 1
        self._emb[self._next] = emb
        self._ts[self._next] = ts_s
        self._next = (self._next + 1) % self.capacity
        self._n = min(self._n + 1, self.capacity)


class MemoryEmbeddings:
    """What the replay memory holds, as embeddings, for the ``novel`` policy.

    Brought up to date when the memory changed (its ``change_signature``: any add, eviction or
    removal, by this process or another, e.g. ``labels import``), checked at most every
    ``refresh_s``. Ids only grow, so an update reads the ids stored and the embeddings of the
    samples added since the last read only (a memory of 50,000 samples is read in full once,
    at start); samples no longer stored stop counting at once and their rows are reclaimed
    when a quarter of the rows are such (so an update copies no 50 MB matrix). A memory whose
    index was reopened (its ``index_generation``: the folder replaced while open) or whose ids
    went back is read in full again. A memory that cannot be read keeps the last view, with
    one warning per kind of fault, counted in :attr:`read_errors` (the labelling pipeline's
    ``novelty_read_errors``); any other fault of an update is contained the same way
    (novelty must never stop labelling).

    Args:
        memory: ``change_signature()``, ``ids()``, ``embeddings(after_id=)`` and optionally
            ``index_generation`` (a :class:`~edgecl.continual.memory.ReplayMemory`).
        refresh_s: least seconds between two checks.
        monotonic: seconds clock (injectable for tests).
    """

    def __init__(self, memory, refresh_s: float = MEMORY_REFRESH_S,
                 monotonic: Callable[[], float] = time.monotonic):
        self.memory = memory
        self.refresh_s = float(refresh_s)
        self.monotonic = monotonic
        # rows [0, _n) of the buffers are used; a row of a sample no longer stored has
        # _live False and _sq +inf (never the nearest) until the rows are compacted
        self._ids = np.zeros(0, np.int64)
        self._emb = np.zeros((0, EMBEDDING_DIM), np.float32)
        self._sq = np.zeros(0, np.float32)
        self._live = np.zeros(0, bool)
        self._n = 0
        self._dead = 0
        self._signature: tuple | None = None
        self._read_to = 0  # every sample up to this id has been read (or could not be)
        self._checked_s = -np.inf
        self._faults_seen: set[str] = set()
        self.read_errors = 0  # updates that failed (each kept the last view)

    @property
    def ids(self) -> np.ndarray:
        """Ids of the samples the view holds, ascending."""
        return self._ids[: self._n][self._live[: self._n]]

    def __len__(self) -> int:
        return self._n - self._dead

    def refresh(self, force: bool = False) -> bool:
        """Bring the view up to date when the memory changed.

        Args:
            force: check now, whenever the last check was.

        Returns:
            True when the view was updated.
        """
        now = self.monotonic()
        if not force and now - self._checked_s < self.refresh_s:
            return False
        self._checked_s = now
        try:
            signature = (tuple(self.memory.change_signature()),
                         getattr(self.memory, "index_generation", 0))
            if signature == self._signature:
                return False
            self._update(signature)
        except EdgeclError as exc:
            self._fault(type(exc).__name__, str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - a novelty fault must not stop labelling
            self._fault(type(exc).__name__, f"{type(exc).__name__}: {exc}")
            return False
        self._signature = signature
        return True

    def _update(self, signature: tuple) -> None:
        """Read what changed since the last update (everything the first time, or when the
        memory's index was reopened or its ids went back)."""
        (_, last_id), generation = signature
        full = (self._signature is None or generation != self._signature[1]
                or int(last_id) < self._read_to)
        after = 0 if full else self._read_to
        present = np.asarray(self.memory.ids(), np.int64)   # before the new rows: a sample
        ids, matrix = self.memory.embeddings(after_id=after)  # added in between comes next time
        ids = np.asarray(ids, np.int64)
        matrix = np.asarray(matrix, np.float32).reshape(-1, EMBEDDING_DIM)
        read_to = int(present[-1]) if len(present) else after
        if len(ids) and ids[-1] > read_to:
            keep = ids <= read_to
            ids, matrix = ids[keep], matrix[keep]
        if full:
            self._set_rows(ids, matrix)
        else:
            self._drop_absent(present)
            self._append(ids, matrix)
        self._read_to = max(read_to, after)

    def _set_rows(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        """Hold exactly these rows, with room to add some without copying."""
        self._n, self._dead = 0, 0
        self._ids = np.zeros(0, np.int64)
        self._emb = np.zeros((0, EMBEDDING_DIM), np.float32)
        self._sq = np.zeros(0, np.float32)
        self._live = np.zeros(0, bool)
        self._append(ids, matrix)

    def _drop_absent(self, present: np.ndarray) -> None:
        n = self._n
        gone = self._live[:n] & ~np.isin(self._ids[:n], present)
        if gone.any():
            self._live[:n][gone] = False
            self._sq[:n][gone] = np.inf
            self._dead += int(gone.sum())
        if self._dead > max(COMPACT_MIN_ROWS, n // 4):
            live = self._live[:n]
            self._set_rows(self._ids[:n][live], self._emb[:n][live])

    def _append(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        k = len(ids)
        need = self._n + k
        if need > len(self._ids):   # grow with headroom, so most updates copy nothing
            size = need + max(COMPACT_MIN_ROWS, need // 8)
            for name in ("_ids", "_emb", "_sq", "_live"):
                old = getattr(self, name)
                grown = np.zeros((size,) + old.shape[1:], old.dtype)
                grown[: self._n] = old[: self._n]
                setattr(self, name, grown)
        if not k:
            return
        rows = slice(self._n, need)
        self._ids[rows] = ids
        self._emb[rows] = matrix
        self._sq[rows] = np.einsum("ij,ij->i", matrix, matrix)
        self._live[rows] = True
        self._n = need

    def _fault(self, kind: str, message: str) -> None:
        self.read_errors += 1
        if kind not in self._faults_seen:
            self._faults_seen.add(kind)
            log.warning("novelty: cannot read the replay memory (%s); novelty keeps comparing "
                        "with the %d samples read before", message, len(self))

    def nearest(self, emb: np.ndarray) -> float:
        """Distance from an embedding to the closest stored sample's (1.0 when memory is empty).

        Args:
            emb: float32 (256,).

        Returns:
            The distance in 0..1.
        """
        self.refresh()
        if not len(self):
            return 1.0
        emb = np.asarray(emb, np.float32)
        n = self._n
        squared = (self._sq[:n] - 2.0 * (self._emb[:n] @ emb) + float(emb @ emb)) / EMBEDDING_DIM
        return float(np.sqrt(max(0.0, float(squared.min()))))


class RateLimiter:
    """At most ``per_minute`` events in any sliding window of ``window_s`` seconds, spaced at
    least ``window_s / per_minute`` apart (0: no limit).

    The spacing spreads the events over the window: with the window alone, the first
    ``per_minute`` candidates of each minute (often the same second of a scene) took the whole
    minute's share, and nothing later in that minute could be chosen.

    Args:
        per_minute: the bound (events per window; the window is a minute by default).
        clock: seconds clock (injectable for tests).
        window_s: length of the sliding window, seconds.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic,
                 window_s: float = 60.0):
        self.per_minute = int(per_minute)
        self.clock = clock
        self.window_s = float(window_s)
        self.min_gap_s = self.window_s / self.per_minute if self.per_minute > 0 else 0.0
        self._times: deque[float] = deque()

    def allowed(self) -> bool:
        """True when one more event fits in the window and the last one is ``min_gap_s`` old."""
        if self.per_minute <= 0:
            return True
        now = self.clock()
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if self._times and now - self._times[-1] < self.min_gap_s:
            return False
        return len(self._times) < self.per_minute

    def take(self) -> None:
        """Record one event."""
        if self.per_minute > 0:
            self._times.append(self.clock())


@dataclass
class SelectionContext:
    """What the policies may use besides the frame and its detections.

    Attributes:
        cfg: labelling settings (uncertain band, novelty distance, random share).
        embedding: the frame's :func:`thumbnail_embedding`.
        ring: embeddings of the frames queued or stored lately.
        rng: seeded generator of the ``random`` policy.
        previous_detector: ``callable(image BGR) -> Detections | None``: the previous model
            version on the same frame (``None`` or a ``None`` result: no opinion).
        forgetting_classes: ``callable() -> set[int]``: classes whose held-out recall fell in
            the last round.
        memory: embeddings of what the replay memory holds (``None``: the ring alone).
    """

    cfg: LabelsConfig
    embedding: np.ndarray
    ring: NoveltyRing
    rng: np.random.Generator
    previous_detector: Callable[[np.ndarray], Detections | None] | None = None
    forgetting_classes: Callable[[], set[int]] | None = None
    memory: MemoryEmbeddings | None = None


SelectionPolicy = Callable[[Frame, Detections, SelectionContext], float]


def _unit(value) -> float:
    """``value`` clipped to 0..1 (NaN stays NaN), in Python: ``np.clip`` on one number cost
    9 us, the largest part of the sink thread's scoring on every camera frame."""
    return min(max(float(value), 0.0), 1.0)


def uncertain_score(frame: Frame, detections: Detections, context: SelectionContext) -> float:
    """Uncertainty sampling: 0.5 at the band's edges up to 1.0 at its middle; 0 outside it.

    Args:
        frame: the frame (unused).
        detections: its detections.
        context: gives the band ``[uncertain_low, uncertain_high)``.

    Returns:
        The best score of a detection in the band, else 0.
    """
    low, high = context.cfg.uncertain_low, context.cfg.uncertain_high
    scores = detections.scores
    inside = scores[(scores >= low) & (scores < high)]
    if inside.size == 0 or high <= low:
        return 0.0
    half = (high - low) / 2
    closeness = 1.0 - np.abs(inside - (low + half)) / half
    return _unit(0.5 + 0.5 * float(closeness.max()))


def novel_score(frame: Frame, detections: Detections, context: SelectionContext) -> float:
    """Novelty: distance to the nearest embedding of what the replay memory holds or was
    queued or stored lately, over ``labels.novel_distance``, capped at 1.

    Args:
        frame: the frame (its embedding is in the context).
        detections: unused.
        context: embedding, ring, memory view and the novelty scale.

    Returns:
        0 (seen before) .. 1 (unlike anything held; also when nothing is held yet).
    """
    dist = context.ring.nearest(context.embedding)
    if context.memory is not None and dist > 0.0:
        dist = min(dist, context.memory.nearest(context.embedding))
    return float(min(1.0, dist / max(context.cfg.novel_distance, 1e-6)))


def disagreement_score(frame: Frame, detections: Detections, context: SelectionContext) -> float:
    """Query by committee: 1 - F1 agreement of the current and previous versions' detections.

    Detections below ``uncertain_low`` are ignored on both sides; a pair agrees when its IoU is
    at least 0.5 and the classes match (greedy matching, best IoU first).

    Args:
        frame: the frame the previous version is run on.
        detections: the current version's detections.
        context: gives ``previous_detector``.

    Returns:
        0 (same boxes and classes, or no previous version) .. 1 (nothing in common).
    """
    if context.previous_detector is None:
        return 0.0
    previous = context.previous_detector(frame.image)
    if previous is None:
        return 0.0
    low = context.cfg.uncertain_low
    cur_keep, prev_keep = detections.scores >= low, previous.scores >= low
    a, ca = detections.boxes_xyxy[cur_keep], detections.classes[cur_keep]
    b, cb = previous.boxes_xyxy[prev_keep], previous.classes[prev_keep]
    total = len(a) + len(b)
    if total == 0:
        return 0.0
    matched = 0
    if len(a) and len(b):
        iou = box_iou_np(a, b)
        iou[ca[:, None] != cb[None, :]] = 0.0
        while True:
            i, j = np.unravel_index(int(iou.argmax()), iou.shape)
            if iou[i, j] < AGREE_IOU:
                break
            matched += 1
            iou[i, :] = 0.0
            iou[:, j] = 0.0
    return float(1.0 - 2.0 * matched / total)


def forgetting_score(frame: Frame, detections: Detections, context: SelectionContext) -> float:
    """Forgetting: 1 when a detection (at least ``uncertain_low``) shows a forgotten class.

    Args:
        frame: unused.
        detections: the frame's detections.
        context: gives ``forgetting_classes``.

    Returns:
        1.0 or 0.0.
    """
    if context.forgetting_classes is None or len(detections) == 0:
        return 0.0
    classes = context.forgetting_classes()
    if not classes:
        return 0.0
    seen = detections.classes[detections.scores >= context.cfg.uncertain_low]
    return 1.0 if any(int(c) in classes for c in seen) else 0.0


def random_score(frame: Frame, detections: Detections, context: SelectionContext) -> float:
    """A small unbiased share: a seeded ``labels.random_share`` of the frames get a score drawn
    uniformly from (0, 1], the others 0. The uniform score matters when the queue holds more
    chosen frames than a person answers: answering by priority is then a random sample, not
    the oldest frames first.

    Args:
        frame: unused.
        detections: unused.
        context: gives the seeded generator and the share.

    Returns:
        A score in (0, 1], or 0.0.
    """
    draw, share = context.rng.random(), context.cfg.random_share
    return 1.0 - draw / share if draw < share else 0.0


# INVARIANT: the names equal the fields of edgecl.config.SelectionConfig (a test compares them).
SELECTION_POLICIES: dict[str, SelectionPolicy] = {
    "uncertain": uncertain_score,
    "novel": novel_score,
    "disagreement": disagreement_score,
    "forgetting": forgetting_score,
    "random": random_score,
}


@dataclass(frozen=True)
class Candidate:
    """A frame the policies chose for the operator queue.

    Attributes:
        priority: weighted sum of the policies' scores.
        reasons: policy name -> score, for the policies that scored above zero.
        embedding: the frame's thumbnail embedding (kept with the queue item).
    """

    priority: float
    reasons: dict[str, float] = field(default_factory=dict)
    embedding: np.ndarray | None = None


class Selector:
    """Stateful part of frame selection: policies, novelty ring, duplicates, rate limits.

    Runs in the sink thread. ``previous_detector`` and ``forgetting_classes`` may be set or
    replaced at any time (the runtime rewires them after a promotion).

    Args:
        cfg: labelling settings.
        previous_detector: see :class:`SelectionContext`.
        forgetting_classes: see :class:`SelectionContext`.
        memory: what the replay memory holds, for novelty (``None``: the ring alone).
        clock: wall clock in seconds (``time.time``; queue items record the same clock).
        monotonic: clock of the rate limits and the near-duplicate window (a wall clock that
            jumps, as on a board without a battery-backed clock, must not hold the window
            shut for years or open it at once).
    """

    def __init__(self, cfg: LabelsConfig, *, previous_detector=None, forgetting_classes=None,
                 memory: MemoryEmbeddings | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.weights = {name: float(w) for name, w in dataclasses.asdict(cfg.selection).items()
                        if float(w) > 0}
        unknown = set(self.weights) - set(SELECTION_POLICIES)
        if unknown:
            raise ValueError(f"no selection policy named {sorted(unknown)}")
        self.previous_detector = previous_detector
        self.forgetting_classes = forgetting_classes
        self.memory = memory
        self.clock = clock
        self.monotonic = monotonic
        self.ring = NoveltyRing(cfg.novelty_ring)
        self.rng = np.random.default_rng(cfg.seed)
        self.queue_limit = RateLimiter(cfg.max_per_minute, monotonic)
        self.pseudo_limit = RateLimiter(cfg.pseudo_max_per_minute, monotonic)
        self.policy_errors: dict[str, int] = {}

    def embed(self, image: np.ndarray) -> np.ndarray:
        """The cheap embedding of a frame (see :func:`thumbnail_embedding`)."""
        return thumbnail_embedding(image)

    def is_duplicate(self, emb: np.ndarray) -> bool:
        """True when ``emb`` is within ``dedup_distance`` of an entry seen in the window, also
        when the camera panned or drifted between them (:meth:`NoveltyRing.nearest_shifted`)."""
        if self.cfg.dedup_window_s <= 0:
            return False
        since = self.monotonic() - self.cfg.dedup_window_s
        limit = self.cfg.dedup_distance
        return self.ring.nearest_shifted(emb, since_s=since, below=limit) < limit

    def remember(self, emb: np.ndarray, seen_wall_s: float) -> None:
        """Add a frame seen before this process started (a queued or answered item), given its
        wall-clock time: its age is kept, and a time in the future (the clock went back since)
        counts as seen just now."""
        age_s = max(0.0, self.clock() - float(seen_wall_s))
        self.ring.add(emb, self.monotonic() - age_s)

    def score(self, frame: Frame, detections: Detections, emb: np.ndarray) -> Candidate:
        """Score a frame with every weighted policy.

        Args:
            frame: the frame.
            detections: its detections.
            emb: its embedding.

        Returns:
            The candidate (its priority may be below ``min_priority``). A policy that raises
            (e.g. a failing previous-version detector) scores 0; the fault is logged (first
            time and every 1000th) and counted in ``policy_errors``.
        """
        context = SelectionContext(self.cfg, emb, self.ring, self.rng, self.previous_detector,
                                   self.forgetting_classes, self.memory)
        reasons = {}
        priority = 0.0
        for name, weight in self.weights.items():
            try:
                value = _unit(SELECTION_POLICIES[name](frame, detections, context))
            except Exception as exc:  # noqa: BLE001 - one policy's fault must not stop labelling
                n = self.policy_errors[name] = self.policy_errors.get(name, 0) + 1
                if n == 1 or n % 1000 == 0:
                    log.warning("selection policy %s failed (%s: %s); it scores 0 (%d failure(s))",
                                name, type(exc).__name__, exc, n)
                continue
            if value > 0:
                reasons[name] = round(value, 4)
                priority += weight * value
        return Candidate(round(priority, 6), reasons, emb)

    def consider(self, frame: Frame, detections: Detections,
                 emb: np.ndarray) -> tuple[Candidate | None, str]:
        """Decide whether a frame goes to the operator queue.

        Args:
            frame: the frame.
            detections: its detections.
            emb: its embedding.

        Returns:
            ``(candidate, "selected")`` or ``(None, why)`` with why one of ``not_selected``,
            ``duplicate``, ``rate_limited``.
        """
        candidate = self.score(frame, detections, emb)
        # a frame the random policy drew is the unbiased share whatever its priority: its weight
        # (0.1 shipped) times a score in (0, 1] fell below labels.min_priority (0.1), and random
        # alone never queued a frame
        drawn = "random" in candidate.reasons
        if not candidate.reasons or (candidate.priority < self.cfg.min_priority and not drawn):
            return None, "not_selected"
        if self.is_duplicate(emb):
            return None, "duplicate"
        if not self.queue_limit.allowed():
            return None, "rate_limited"
        return candidate, "selected"

    def queued(self, candidate: Candidate) -> None:
        """Record that a candidate entered the queue (rate limit, ring)."""
        self.queue_limit.take()
        if candidate.embedding is not None:
            self.ring.add(candidate.embedding, self.monotonic())

    def stored(self, emb: np.ndarray) -> None:
        """Record that a frame was stored in memory (near-duplicates only refresh the ring)."""
        self.ring.add(emb, self.monotonic(), merge_distance=self.cfg.dedup_distance)
