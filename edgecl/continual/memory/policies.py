"""Insertion policies of the replay memory: which offered samples are kept, which go.

A policy only decides; it never touches files. It reads the memory through a small
:class:`PolicyView` (counts, the n-th id, stream counters) and names victims, so the same
policy runs over the SQLite-backed memory and over :class:`InMemoryView` (fast simulations,
tests). Policies see only the training part of the memory; the held-out slice has its own
per-task quota, kept by the storage.

Whichever policy names the victim's class or task, the victim itself is drawn among the
samples of the lowest eviction tier there (:func:`random_member`,
:attr:`~edgecl.frames.LabelOrigin.eviction_tier`): pseudo-labels first, then labels that came
with the frames or a dataset, a person's answers last. A labelled sample costs far more than a
confident detection of the model itself, and a person's answer, asked for about a frame the
model got wrong on this very device, the most (before, 7 of 11 answers at capacity 40 were
evicted within a minute by a labelled stream's frames).
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass
from typing import Protocol

from edgecl.errors import ConfigError, did_you_mean
from edgecl.frames import EVICTION_TIERS, STREAM_TASK, LabelOrigin

BACKGROUND_CLASS = -1


@dataclass(frozen=True)
class ItemInfo:
    """What a policy knows about an offered sample.

    Attributes:
        task: task name.
        classes: distinct class ids in its labels.
        primary_class: the class it counts for in class balancing (see :func:`primary_class`).
    """

    task: str
    classes: tuple[int, ...]
    primary_class: int


class PolicyView(Protocol):
    """Read access to the training part of a memory plus the stream counters."""

    capacity: int

    def is_full(self) -> bool:
        """True when one more sample would break a bound (count or bytes)."""

    def size(self, *, task: str | None = None, primary_class: int | None = None,
             tier: int | None = None) -> int:
        """Number of stored training samples matching the filter (``tier``: of one eviction
        tier, see :attr:`~edgecl.frames.LabelOrigin.eviction_tier`; None: any)."""

    def class_counts(self) -> dict[int, int]:
        """Stored training samples per primary class."""

    def task_counts(self) -> dict[str, int]:
        """Stored training samples per task."""

    def nth_id(self, index: int, *, task: str | None = None,
               primary_class: int | None = None, tier: int | None = None) -> int:
        """The ``index``-th id (ascending) among samples matching the filter."""

    def n_seen(self, key: str) -> int:
        """Training-stream items seen so far for ``key`` (see :func:`seen_keys`)."""

    def remove(self, sample_id: int) -> None:
        """Drop a sample (the storage deletes its index row in the open transaction)."""

    def is_marked(self, key: str) -> bool:
        """Whether a persistent policy flag is set."""

    def mark(self, key: str) -> None:
        """Set a persistent policy flag."""


def primary_class(classes: tuple[int, ...], class_counts: dict[int, int]) -> int:
    """Choose the class an image counts for: its rarest class in memory (ties: lowest id).

    Args:
        classes: distinct class ids of the image.
        class_counts: stored samples per primary class.

    Returns:
        A class id, or ``BACKGROUND_CLASS`` for an image without boxes.
    """
    if not classes:
        return BACKGROUND_CLASS
    return min(classes, key=lambda c: (class_counts.get(c, 0), c))


def seen_keys(item: ItemInfo) -> tuple[str, ...]:
    """Counter keys an offered training item increments before the policy decides."""
    return ("all", f"task:{item.task}", f"class:{item.primary_class}")


def random_member(view: PolicyView, rng: random.Random, *, task: str | None = None,
                  primary_class: int | None = None) -> int | None:
    """Pick a uniformly random stored id matching the filter (None when none match), among
    those of the lowest eviction tier present (module docstring).

    With one tier only, the draw is the same as without the preference (one ``randrange`` over
    all matching samples).
    """
    n = view.size(task=task, primary_class=primary_class)
    if n == 0:
        return None
    for tier in sorted(set(EVICTION_TIERS.values())):
        in_tier = view.size(task=task, primary_class=primary_class, tier=tier)
        if 0 < in_tier < n:
            return view.nth_id(rng.randrange(in_tier), task=task, primary_class=primary_class,
                               tier=tier)
        if in_tier == n:
            break
    return view.nth_id(rng.randrange(n), task=task, primary_class=primary_class)


class InsertionPolicy(abc.ABC):
    """Decides admission and eviction for the training part of the memory."""

    name = ""

    @abc.abstractmethod
    def admit(self, item: ItemInfo, view: PolicyView, rng: random.Random) -> bool:
        """Return True to keep the offered item (counters already include it)."""

    @abc.abstractmethod
    def victim(self, item: ItemInfo, view: PolicyView, rng: random.Random) -> int | None:
        """Return the id to evict to make room for ``item`` (None when empty)."""


class ReservoirPolicy(InsertionPolicy):
    """Uniform over the whole stream: the n-th item is kept with probability capacity/n."""

    name = "reservoir"

    def admit(self, item: ItemInfo, view: PolicyView, rng: random.Random) -> bool:
        """Keep while not full, then with probability m / n (m = samples held when full:
        the capacity, or fewer when the byte bound binds first)."""
        if not view.is_full():
            return True
        return rng.random() < view.size() / max(1, view.n_seen("all"))

    def victim(self, item: ItemInfo, view: PolicyView, rng: random.Random) -> int | None:
        """A uniformly random stored sample."""
        return random_member(view, rng)


class ClassBalancedPolicy(InsertionPolicy):
    """Class-balanced reservoir sampling (CBRS, Chrysakis & Moens 2020).

    While the memory is not full (count or bytes) every sample is kept. Once full, a class that is (or ever
    was) among the largest is "full". A sample of a class that is not full is kept and
    replaces a random sample of a largest class; a sample of a full class is kept with
    probability stored_c / seen_c and replaces a random sample of its own class. Classes
    end within one sample of each other whenever the stream offers enough of each.
    """

    name = "class_balanced"

    @staticmethod
    def _largest(counts: dict[int, int]) -> list[int]:
        top = max(counts.values(), default=0)
        return sorted(c for c, n in counts.items() if n == top)

    def admit(self, item: ItemInfo, view: PolicyView, rng: random.Random) -> bool:
        """Keep while not full; then as described in the class docstring."""
        if not view.is_full():
            return True
        counts = view.class_counts()
        for cls in self._largest(counts):
            if not view.is_marked(f"full:{cls}"):
                view.mark(f"full:{cls}")
        if not view.is_marked(f"full:{item.primary_class}"):
            return True
        own = counts.get(item.primary_class, 0)
        return rng.random() < own / max(1, view.n_seen(f"class:{item.primary_class}"))

    def victim(self, item: ItemInfo, view: PolicyView, rng: random.Random) -> int | None:
        """A random sample of the item's class if that class is full, else of a largest."""
        counts = view.class_counts()
        if not counts:
            return None
        own = counts.get(item.primary_class, 0)
        if own > 0 and view.is_marked(f"full:{item.primary_class}"):
            target = item.primary_class
        else:
            target = rng.choice(self._largest(counts))
        return random_member(view, rng, primary_class=target)


class TaskBudgetPolicy(InsertionPolicy):
    """Keep ``pct`` percent of each task's images: every image is kept independently with
    probability pct/100 (so the kept images are a uniform sample of about pct% of the task);
    when a bound is reached, the task with the most stored samples gives one up.

    Frames that carry no task (:data:`~edgecl.frames.STREAM_TASK`: a camera's, an operator's
    answers, imports) have no task to budget: each is kept (a full memory then gives up a
    random sample of the largest task), instead of 90 % of a person's answers being thrown away
    at the default 10 %."""

    name = "task_budget"

    def __init__(self, pct: float):
        """Args:
            pct: percentage (0 < pct <= 100) of each task's images to keep.

        Raises:
            ConfigError: pct outside (0, 100].
        """
        if not 0.0 < pct <= 100.0:
            raise ConfigError(f"memory.task_budget_pct must be in (0, 100], got {pct}")
        self.pct = float(pct)

    def admit(self, item: ItemInfo, view: PolicyView, rng: random.Random) -> bool:
        """Keep with probability pct / 100 (always for frames without a task)."""
        return item.task == STREAM_TASK or rng.random() < self.pct / 100.0

    def victim(self, item: ItemInfo, view: PolicyView, rng: random.Random) -> int | None:
        """A random sample of the task with the most stored samples (ties: the item's own
        task, then the first name), so tasks level out instead of alternating."""
        counts = view.task_counts()
        if not counts:
            return None
        target = min(counts, key=lambda t: (-counts[t], t != item.task, t))
        return random_member(view, rng, task=target)


# INVARIANT: the only place where policy names are bound to classes.
POLICIES: dict[str, type[InsertionPolicy]] = {
    "reservoir": ReservoirPolicy,
    "class_balanced": ClassBalancedPolicy,
    "task_budget": TaskBudgetPolicy,
}


def make_policy(name: str, task_budget_pct: float = 10.0) -> InsertionPolicy:
    """Build the policy named in ``memory.policy``.

    Args:
        name: a key of :data:`POLICIES`.
        task_budget_pct: percentage for ``task_budget``.

    Returns:
        The policy.

    Raises:
        ConfigError: unknown name (with the closest valid one).
    """
    if name not in POLICIES:
        hint = did_you_mean(name, POLICIES, cutoff=0.0)
        raise ConfigError(f"unknown memory.policy '{name}' (choose from "
                          f"{', '.join(POLICIES)}){hint}")
    if name == "task_budget":
        return TaskBudgetPolicy(task_budget_pct)
    return POLICIES[name]()


def make_slot(policy: InsertionPolicy, item: ItemInfo, view: PolicyView,
              rng: random.Random) -> list[int]:
    """Evict (through ``view.remove``) until the view has a free slot for ``item``.

    Args:
        policy: the insertion policy that names victims.
        item: the admitted item.
        view: the memory view.
        rng: the random source of this decision.

    Returns:
        Evicted ids, in eviction order.
    """
    victims = []
    # INVARIANT: after this loop one more sample fits every bound of the view.
    while view.is_full():
        victim = policy.victim(item, view, rng)
        if victim is None:
            break
        view.remove(victim)
        victims.append(victim)
    return victims


def place(policy: InsertionPolicy, item: ItemInfo, view: PolicyView,
          rng: random.Random) -> list[int] | None:
    """Ask the policy about an item and evict until a slot is free.

    Args:
        policy: the insertion policy.
        item: the offered item (its counters already incremented).
        view: the memory view; victims are removed through ``view.remove``.
        rng: the random source of this decision.

    Returns:
        Evicted ids (possibly empty) when the item is to be stored, None when declined.
    """
    if view.capacity <= 0 or not policy.admit(item, view, rng):
        return None
    return make_slot(policy, item, view, rng)


class InMemoryView:
    """A policy view over plain Python containers, for simulations and tests.

    Attributes:
        capacity: number of samples it may hold.
    """

    def __init__(self, capacity: int):
        """Args:
            capacity: number of samples it may hold.
        """
        self.capacity = capacity
        self.items: dict[int, ItemInfo] = {}
        self.seen: dict[str, int] = {}
        self.marks: set[str] = set()
        self.tiers: dict[int, int] = {}

    def is_full(self) -> bool:
        """True when it holds ``capacity`` samples."""
        return len(self.items) >= self.capacity

    def size(self, *, task: str | None = None, primary_class: int | None = None,
             tier: int | None = None) -> int:
        """Number of stored samples matching the filter."""
        if task is None and primary_class is None and tier is None:
            return len(self.items)
        return len(self._matching(task, primary_class, tier))

    def _matching(self, task: str | None, primary_class: int | None,
                  tier: int | None = None) -> list[int]:
        return [i for i, it in self.items.items()
                if (task is None or it.task == task)
                and (primary_class is None or it.primary_class == primary_class)
                and (tier is None or self.tiers[i] == tier)]

    def class_counts(self) -> dict[int, int]:
        """Stored samples per primary class."""
        counts: dict[int, int] = {}
        for it in self.items.values():
            counts[it.primary_class] = counts.get(it.primary_class, 0) + 1
        return counts

    def task_counts(self) -> dict[str, int]:
        """Stored samples per task."""
        counts: dict[str, int] = {}
        for it in self.items.values():
            counts[it.task] = counts.get(it.task, 0) + 1
        return counts

    def nth_id(self, index: int, *, task: str | None = None,
               primary_class: int | None = None, tier: int | None = None) -> int:
        """The ``index``-th id (ascending) among matching samples."""
        return sorted(self._matching(task, primary_class, tier))[index]

    def n_seen(self, key: str) -> int:
        """Items seen for a counter key."""
        return self.seen.get(key, 0)

    def remove(self, sample_id: int) -> None:
        """Drop a sample."""
        del self.items[sample_id]
        del self.tiers[sample_id]

    def is_marked(self, key: str) -> bool:
        """Whether a policy flag is set."""
        return key in self.marks

    def mark(self, key: str) -> None:
        """Set a policy flag."""
        self.marks.add(key)

    def offer(self, sample_id: int, task: str, classes: tuple[int, ...],
              policy: InsertionPolicy, rng: random.Random,
              origin: LabelOrigin = LabelOrigin.GROUND_TRUTH) -> bool:
        """Run one stream item through ``policy`` and store it if admitted.

        Args:
            sample_id: id to store it under (ascending over the stream).
            task: its task.
            classes: its distinct class ids.
            policy: the insertion policy.
            rng: random source.
            origin: where its labels came from (its eviction tier).

        Returns:
            True when it was stored.
        """
        item = ItemInfo(task, tuple(classes), primary_class(tuple(classes), self.class_counts()))
        for key in seen_keys(item):
            self.seen[key] = self.seen.get(key, 0) + 1
        if place(policy, item, self, rng) is None:
            return False
        self.items[sample_id] = item
        self.tiers[sample_id] = origin.eviction_tier
        return True
