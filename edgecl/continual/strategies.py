"""Replay selection: which stored samples a learning round (or step) replays.

Every strategy has ``select(source, k, *, model, context) -> list[int]`` where ``source`` is
a :class:`~edgecl.continual.memory.ReplayMemory` or a
:class:`~edgecl.continual.memory.MemorySnapshot`. Held-out samples are never
returned. Definitions (the drone paper: "Learning on the Fly", replay-based continual object
perception for indoor drones, 2026; MIR: Aljundi et al. 2019):

* ``er`` — a uniformly random subset of earlier-task samples.
* ``mir`` (the drone paper's variant) — from a random candidate pool of at most
  ``candidate_pool`` stored samples, the k with the lowest image recall@0.5 under the current
  model.
* ``mir-virtual`` (Aljundi et al. 2019) — from ``virtual_candidates`` random earlier-task
  samples, the top ``min(k, virtual_top_k)`` by loss(θ') − loss(θ), where θ' is a virtual SGD
  step; the fine-tuner supplies that difference as ``context.virtual_scorer``.
* ``far`` — forgetting-aware replay: earlier-task samples ranked by their recall drop
  ``max(0, recall_baseline − recall_now)`` (samples without a baseline count as drop 0), picked
  class-balanced (see below): each pick takes the largest drop among the samples showing the
  class picked least so far.  Samples that did not drop (drop 0, most of them with a young
  detector) are drawn in a seeded random order, as ER would, never "lowest recall first": that
  tie-break drew FAR to images the model never learnt (baseline 0), the least useful replay
  (issue 11: FAR below ER and below fine-tuning).
* ``class_balanced`` — class-balanced selection (the greedy form of the idea of OCDM, Liang et
  al. 2022; "Teach YOLO to Remember", arXiv 2503.04688): picks one sample at a time; each pick
  takes, among the earlier-task samples not yet picked, the class with the fewest picked samples
  so far (counting a sample once for every class it shows; ties: lower class id) and a random
  sample (seeded) that shows it.  Samples without boxes come last, in random order.

``mir`` and ``far`` store the recall they measure as ``last_recall``. With ``model=None`` they
use the stored ``last_recall`` instead (never-scored samples count as recall 1.0).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from edgecl.config import ReplayConfig
from edgecl.continual.memory import SampleRecord, StoredSample
from edgecl.continual.recall import DetectorLike, batch_recall
from edgecl.errors import ConfigError, ReplayMemoryError, did_you_mean


class ReplaySource(Protocol):
    """What strategies need from a memory or a snapshot."""

    def records(self, ids: list[int] | None = None, held_out: bool | None = None,
                task: str | None = None) -> list[SampleRecord]:
        """Index rows matching the filter."""

    def get(self, ids: list[int]) -> list[StoredSample]:
        """Samples with labels and image paths."""

    def update_recall(self, ids: list[int], values: list[float]) -> int:
        """Store measured recalls."""


@dataclass(frozen=True)
class ReplayContext:
    """Everything a strategy may need besides the memory and the model.

    Attributes:
        current_task: task being learnt now (excluded where the definition says "earlier
            tasks"); None excludes no task (frames that carry no task: deployment).
        new_ids: the round's new samples; never replayed (the round trains on them anyway),
            whatever their task. In deployment, where every frame has the same task, this is
            what leaves the earlier samples to replay.
        seed: seeds the random draws when ``rng`` is None.
        rng: random generator to use (takes precedence over ``seed``).
        candidate_pool: cap on the samples ``mir`` and ``far`` score (<= 0: no cap).
        batch_size: images per ``model.infer`` call.
        virtual_candidates: candidates ``mir-virtual`` draws.
        virtual_top_k: most samples ``mir-virtual`` returns.
        virtual_scorer: ``ids -> loss(θ') − loss(θ)`` per id, supplied by the fine-tuner.
    """

    current_task: str | None = None
    new_ids: frozenset[int] = frozenset()
    seed: int = 0
    rng: np.random.Generator | None = field(default=None, compare=False)
    candidate_pool: int = 256
    batch_size: int = 16
    virtual_candidates: int = 50
    virtual_top_k: int = 10
    virtual_scorer: Callable[[list[int]], np.ndarray] | None = field(default=None, compare=False)

    @classmethod
    def from_config(cls, replay: ReplayConfig, **kwargs) -> "ReplayContext":
        """Build a context from ``cfg.replay`` plus explicit fields (task, seed, scorer...)."""
        return cls(candidate_pool=replay.candidate_pool,
                   virtual_candidates=replay.virtual_candidates,
                   virtual_top_k=replay.virtual_top_k, **kwargs)

    def generator(self) -> np.random.Generator:
        """The random generator of this selection."""
        return self.rng if self.rng is not None else np.random.default_rng(self.seed)


def _eligible(source: ReplaySource, context: ReplayContext, earlier_only: bool) -> list[SampleRecord]:
    records = [r for r in source.records(held_out=False) if r.id not in context.new_ids]
    if earlier_only and context.current_task is not None:
        records = [r for r in records if r.task != context.current_task]
    return records


def _draw(records: list[SampleRecord], n: int, rng: np.random.Generator) -> list[SampleRecord]:
    if n <= 0 or len(records) <= n:
        return list(records)
    picked = rng.choice(len(records), size=n, replace=False)
    return [records[i] for i in sorted(picked)]


def _current_recall(source: ReplaySource, records: list[SampleRecord],
                    model: DetectorLike | None, batch: int) -> np.ndarray:
    """Recall of each record now: measured with ``model`` (and stored) or the stored one."""
    if not records:
        return np.zeros(0)
    if model is None:
        return np.array([1.0 if r.last_recall is None else r.last_recall for r in records])
    samples = source.get([r.id for r in records])
    recalls = batch_recall(model, [s.load_image() for s in samples],
                           [s.labels for s in samples], batch=batch)
    if hasattr(source, "update_recall"):
        source.update_recall([r.id for r in records], recalls.tolist())
    return recalls


def _top(ids: list[int], keys: list[tuple], k: int) -> list[int]:
    order = sorted(range(len(ids)), key=lambda i: keys[i])
    return [ids[i] for i in order[:max(0, int(k))]]


class ReplayStrategy(abc.ABC):
    """Chooses replay samples.

    Attributes:
        name: registry key.
        earlier_tasks_only: whether the current task's samples are excluded.
    """

    name = ""
    earlier_tasks_only = True

    @abc.abstractmethod
    def select(self, source: ReplaySource, k: int, *, model: DetectorLike | None = None,
               context: ReplayContext | None = None) -> list[int]:
        """Return up to ``k`` sample ids to replay (never held-out ones)."""


class ERStrategy(ReplayStrategy):
    """Experience replay: a uniformly random subset of earlier-task samples."""

    name = "er"

    def select(self, source, k, *, model=None, context=None) -> list[int]:
        """Uniform random ids, ascending."""
        context = context or ReplayContext()
        picked = _draw(_eligible(source, context, True), int(k), context.generator())
        return [r.id for r in picked][:max(0, int(k))]


class MIRStrategy(ReplayStrategy):
    """Paper variant of maximally interfered retrieval: lowest current recall in a pool."""

    name = "mir"
    earlier_tasks_only = False

    def select(self, source, k, *, model=None, context=None) -> list[int]:
        """The k pool samples with the lowest recall (ties: lower id)."""
        context = context or ReplayContext()
        pool = _draw(_eligible(source, context, self.earlier_tasks_only),
                     context.candidate_pool, context.generator())
        recalls = _current_recall(source, pool, model, context.batch_size)
        ids = [r.id for r in pool]
        return _top(ids, [(float(v), i) for v, i in zip(recalls, ids)], k)


class VirtualMIRStrategy(ReplayStrategy):
    """Original MIR: largest loss increase under a virtual SGD step (scored by the caller)."""

    name = "mir-virtual"

    def select(self, source, k, *, model=None, context=None) -> list[int]:
        """The top ``min(k, virtual_top_k)`` candidates by ``virtual_scorer``.

        Raises:
            ReplayMemoryError: no scorer in the context, or it returned the wrong shape.
        """
        context = context or ReplayContext()
        if context.virtual_scorer is None:
            raise ReplayMemoryError("replay strategy 'mir-virtual' needs context.virtual_scorer "
                                    "(loss increase of each candidate after a virtual step)")
        pool = _draw(_eligible(source, context, True), context.virtual_candidates,
                     context.generator())
        ids = [r.id for r in pool]
        if not ids:
            return []
        scores = np.asarray(context.virtual_scorer(list(ids)), dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(ids):
            raise ReplayMemoryError(f"virtual_scorer returned {scores.shape[0]} scores for "
                                    f"{len(ids)} candidates")
        scores = np.where(np.isnan(scores), -np.inf, scores)
        n = min(int(k), int(context.virtual_top_k))
        return _top(ids, [(-float(s), i) for s, i in zip(scores, ids)], n)


def balanced_order(records: list[SampleRecord], k: int, priority: list[tuple]) -> list[int]:
    """Greedy class-balanced pick of ``k`` records (the rule of ``class_balanced`` and ``far``).

    Each pick: the class with the fewest picked records so far among the classes some
    unpicked record shows (ties: lower class id); of the unpicked records showing it, the one
    with the smallest ``priority`` key.  A record counts once for each class it shows.  Records
    without a class are picked last, by ``priority``.

    Args:
        records: candidate records (``classes`` holds the class ids each shows).
        k: how many to pick.
        priority: one sortable key per record (smaller first).

    Returns:
        The picked ids in pick order (at most ``k``).
    """
    order = sorted(range(len(records)), key=lambda i: priority[i])
    remaining = list(order)
    counts: dict[int, int] = {}
    picked: list[int] = []
    while remaining and len(picked) < max(0, int(k)):
        present = {c for i in remaining for c in records[i].classes}
        if not present:
            choice = remaining[0]
        else:
            target = min(present, key=lambda c: (counts.get(c, 0), c))
            choice = next(i for i in remaining if target in records[i].classes)
        remaining.remove(choice)
        for c in set(records[choice].classes):
            counts[c] = counts.get(c, 0) + 1
        picked.append(records[choice].id)
    return picked


class ClassBalancedStrategy(ReplayStrategy):
    """Class-balanced replay: every earlier class about equally often in the replay set."""

    name = "class_balanced"

    def select(self, source, k, *, model=None, context=None) -> list[int]:
        """Greedy class-balanced ids (see :func:`balanced_order`), random within a class."""
        context = context or ReplayContext()
        eligible = _eligible(source, context, True)
        rank = context.generator().permutation(len(eligible))
        return balanced_order(eligible, k, [(int(r),) for r in rank])


class FARStrategy(ReplayStrategy):
    """Forgetting-aware replay: the largest drops from each sample's recall baseline,
    class-balanced, undropped samples in random order."""

    name = "far"

    def select(self, source, k, *, model=None, context=None) -> list[int]:
        """Up to k earlier-task samples, largest ``max(0, baseline - now)`` first per class."""
        context = context or ReplayContext()
        rng = context.generator()
        eligible = _eligible(source, context, True)
        with_baseline = [r for r in eligible if r.recall_baseline is not None]
        scored = _draw(with_baseline, context.candidate_pool, rng)
        now = dict(zip([r.id for r in scored],
                       _current_recall(source, scored, model, context.batch_size)))
        tie = rng.permutation(len(eligible))
        keys = []
        for rank, rec in zip(tie, eligible):
            recall_now = now.get(rec.id)
            drop = 0.0 if recall_now is None else max(0.0, rec.recall_baseline - recall_now)
            keys.append((-drop, int(rank)))
        return balanced_order(eligible, k, keys)


# INVARIANT: the only place where strategy names are bound to implementations.
STRATEGIES: dict[str, ReplayStrategy] = {
    "er": ERStrategy(),
    "mir": MIRStrategy(),
    "mir-virtual": VirtualMIRStrategy(),
    "far": FARStrategy(),
    "class_balanced": ClassBalancedStrategy(),
}


def get_strategy(name: str) -> ReplayStrategy:
    """Look up ``replay.strategy``.

    Args:
        name: a key of :data:`STRATEGIES`.

    Returns:
        The strategy.

    Raises:
        ConfigError: unknown name (with the closest valid one).
    """
    if name not in STRATEGIES:
        hint = did_you_mean(name, STRATEGIES, cutoff=0.0)
        raise ConfigError(f"unknown replay.strategy '{name}' (choose from "
                          f"{', '.join(STRATEGIES)}){hint}")
    return STRATEGIES[name]
