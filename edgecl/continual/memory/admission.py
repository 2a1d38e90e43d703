"""Admission and eviction for the replay memory: the glue between the insertion policy, the
held-out slice and the index, keeping the count and byte bounds in every committed state.

Stream counters (``frames/...``, ``train/...``, ``holdout/...``, ``holdout_class/...``) are
kept in memory and handed to the storage as pending deltas, committed with the next add (or by
a flush).

Held-out slots: split evenly between the tasks seen (a uniform reservoir within each task, that
never evicts a class's last held-out sample while another class has two or more). Whatever
names the victim's class or task, the victim is drawn among its lowest eviction tier there (a
person's answer last, :attr:`~edgecl.frames.LabelOrigin.eviction_tier`), as in the training
slots.
Frames without a task (:data:`~edgecl.frames.STREAM_TASK`: a camera's, one task for the device's
whole life) share their task's slots between classes instead, with a class-balanced reservoir
(CBRS, Chrysakis & Moens, ICML 2020, as the ``class_balanced`` policy does for the training
slots): while the share is not full every draw enters; once full, a draw of a class smaller than
the largest takes the place of a random row of a largest class, and a draw of a largest class
replaces one of its own with probability stored / seen. So a class first taught after thousands
of frames still gets its share, however many classes there are (one reservoir over the stream
would keep about ``share / draws seen`` of its few draws, too few boxes to gate on).
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from dataclasses import dataclass

from edgecl.continual.memory.index import IndexDB
from edgecl.continual.memory.policies import (
    InsertionPolicy,
    ItemInfo,
    make_slot,
    primary_class,
    seen_keys,
)
from edgecl.frames import EVICTION_TIERS, STREAM_TASK, LabelOrigin

DEFAULT_SAMPLE_BYTES = 8192
# per-class held-out draws of the stream task (a prefix no task's counter can take)
STREAM_CLASS_COUNTER = "holdout_class/"

# Origins whose samples are consecutive frames of one camera: near-duplicates of their
# neighbours in time, so the held-out draw is made per block of capture time (an imported
# folder's samples keep one draw each: their capture times are only the import's clock).
STREAM_ORIGINS = frozenset({LabelOrigin.GROUND_TRUTH, LabelOrigin.OPERATOR})


def draws_held_out(seed: int, task: str, n_task: int, origin: LabelOrigin, ts_s: float | None,
                   block_s: float, fraction: float, planned: bool | None = None) -> bool:
    """Whether an offered sample's draw puts it in the held-out stream.

    Held-out frames must not be near-duplicates of training frames, or the held-out mAP
    (the gate, the calibrator, the forgetting monitor) measures memorisation: at 30 fps two
    consecutive frames are nearly the same picture. With ``block_s`` > 0, streamed samples
    (:data:`STREAM_ORIGINS`) are drawn per block of ``block_s`` seconds of capture time, so a
    block is held out or trained on as a whole (a blocked hold-out split, as for time series).
    Blocks come in groups of ``n = ceil(1 / fraction)``; each group holds out ``m`` of its
    blocks (1 or more; ``m`` over the groups follows ``fraction`` exactly in the long run, with
    a per-task phase from the seed) at random positions drawn from the seed, the task and the
    group. So a held-out block comes in every group, samples that arrive at a regular interval
    cannot fall on held-out blocks only (or never), and the choice needs no state: answers that
    arrive out of order and restarts see the same choice. Other samples are drawn the same way
    by their position in the task's stream of offers: in every group of ``n`` consecutive
    offers, ``m`` are held out; but an imported folder plans its draw over its whole list
    (``planned``, :func:`plan_import_held_out`: blocks of consecutive frames together, and
    every class held out somewhere).

    Args:
        seed: the memory's seed.
        task: the sample's task.
        n_task: its position in its task's stream of offers (1-based).
        origin: where its labels came from.
        ts_s: its capture time in seconds since the epoch (None, not finite or beyond float
            precision for ``block_s``: drawn alone).
        block_s: block length in seconds (0 draws for every sample; otherwise at least
            :data:`edgecl.config.MIN_HOLDOUT_BLOCK_S`).
        fraction: the held-out share, in [0, 1).
        planned: an imported sample's draw, planned by its import
            (:func:`plan_import_held_out`), or None.

    Returns:
        True when the sample belongs to the held-out stream.
    """
    if fraction <= 0:
        return False
    if planned is not None and origin not in STREAM_ORIGINS:
        return bool(planned)
    if (block_s > 0 and origin in STREAM_ORIGINS and isinstance(ts_s, (int, float))
            and math.isfinite(ts_s) and abs(ts_s / block_s) < 2 ** 52):
        return _stratified_draw(seed, task, math.floor(ts_s / block_s), fraction, "")
    return _stratified_draw(seed, task, n_task - 1, fraction, "/sample")


def _stratified_draw(seed: int, task: str, index: int, fraction: float, kind: str) -> bool:
    """Whether unit ``index`` (a block, or a sample's position) is held out: units come in
    groups of ``n = ceil(1 / fraction)``, each holding out ``m`` of them (at least 1; ``m``
    follows ``fraction`` exactly in the long run, with a per-task phase from the seed) at random
    positions drawn from the seed, the task and the group. So the first group already holds one
    out: a folder of 12 imported images gets a held-out sample for the gate (one draw per image
    gave none in 28 % of such folders at 10 %)."""
    n = math.ceil(1.0 / fraction)
    group, position = divmod(index, n)
    phase = random.Random(f"{seed}/holdout-phase{kind}/{task}").random()
    m = (math.floor((group + 1) * n * fraction + phase) - math.floor(group * n * fraction + phase))
    return position in random.Random(f"{seed}/holdout{kind}/{task}/group{group}").sample(range(n), m)


def plan_import_held_out(units: list[tuple[int, Counter]], fraction: float, seed: int,
                         task: str, first_index: int = 0,
                         prior: dict[str, tuple[int, int]] | None = None) -> list[bool]:
    """Which units of an imported folder (blocks of consecutive frames, or single images) go to
    the held-out stream, planned over the whole import before its first sample is stored.

    Each unit is first drawn by its position (``first_index`` + its index: in every group of
    ``n = ceil(1 / fraction)`` units, ``m`` are held out, as :func:`draws_held_out` draws
    offers). A draw blind to classes holds out none of a class that lives in a few blocks (of
    50 windows of 174 consecutive hit-uav-dev frames, 23 had a class of 10 frames or more
    with no held-out frame: no round measured it, and the gate could not guard it). So the
    plan is then made class-aware, rarest class first (as iterative stratification serves the
    rarest label first; Sechidis et al., ECML PKDD 2011), over units, never frames, counting
    what the memory already holds of each class (``prior``):

    - a class all of whose units were drawn, and with no training image in the memory, gets
      one back for training (a class seen in one block is learnt rather than measured), best
      a unit that no other class needs for its held-out share;
    - a class with at least ``n`` images (here and in the memory), none held out, and a
      training image left whatever is held (two units here, or some in the memory) gets one:
      among the units that leave every class in them a training image, the one whose share of
      the class's images comes nearest ``fraction``, counting the share of every other
      class's images it takes as a miss too. For it, a drawn unit whose classes all keep a
      held-out image without it goes back to training, so the held-out share stays near
      ``fraction``;
    - a class with more than twice its share held out (a rare class in a drawn block: 6 of
      its 10 images) gives back its held units with most of its frames; a class that thereby
      loses its last held image (this one or another in the unit) gets the unit with fewer
      of those frames that costs it least instead.

    Args:
        units: per unit in the import's order, ``(frames, frames per class name)``; a frame
            showing no class counts in ``frames`` only.
        fraction: the held-out share, in [0, 1).
        seed: the memory's seed.
        task: the import's task.
        first_index: position of the first unit in the task's draws of imported units
            (:meth:`~edgecl.continual.memory.store.ReplayMemory.reserve_import_draws`: an
            import goes on where the last one stopped, so that small imports keep the share).
        prior: per class name, ``(training images, held-out images)`` the memory holds
            already (none: an empty memory).

    Returns:
        Per unit, whether its samples are held out.
    """
    if fraction <= 0 or not units:
        return [False] * len(units)
    prior = prior or {}
    planned = [_stratified_draw(seed, task, first_index + j, fraction, "/sample")
               for j in range(len(units))]
    units_of: dict[str, list[int]] = {}
    frames_of: Counter = Counter()
    for j, (_, classes) in enumerate(units):
        for name, frames in classes.items():
            units_of.setdefault(name, []).append(j)
            frames_of[name] += frames
    rng = random.Random(f"{seed}/holdout-classes/{task}/{first_index}")
    fixed: set[int] = set()
    need = math.ceil(1.0 / fraction)

    def trained_before(name: str) -> int:
        return int(prior.get(name, (0, 0))[0])

    def held_before(name: str) -> int:
        return int(prior.get(name, (0, 0))[1])

    def total(name: str) -> int:
        return frames_of[name] + trained_before(name) + held_before(name)

    def held(name: str, without: int = -1) -> int:
        return sum(1 for i in units_of[name] if planned[i] and i != without)

    def held_frames(name: str) -> int:
        return sum(units[i][1][name] for i in units_of[name] if planned[i])

    def keeps_held(name: str, without: int) -> bool:
        """Whether ``name`` keeps a held-out image with ``without`` trained on (or needs none)."""
        return held(name, without) > 0 or held_before(name) > 0 or total(name) < need

    def trains_without(name: str, unit: int) -> bool:
        return trained_before(name) > 0 or any(not planned[i] for i in units_of[name] if i != unit)

    def cost(unit: int, name: str) -> float:
        """What holding ``unit`` out for ``name`` costs: how far its share of ``name``'s images
        is from ``fraction``, plus the share of every other class's images it takes."""
        shown = units[unit][1]
        return (abs(shown[name] / max(1, total(name)) - fraction)
                + sum(n / max(1, total(d)) for d, n in shown.items() if d != name))

    def spare(keep: str) -> list[int]:
        return [i for i, drawn in enumerate(planned) if drawn and i not in fixed
                and keep not in units[i][1] and all(keeps_held(d, i) for d in units[i][1])]

    rarest_first = sorted(units_of, key=lambda name: (total(name), name))
    for name in rarest_first:
        if not trained_before(name) and all(planned[i] for i in units_of[name]):
            back = [i for i in units_of[name] if i not in fixed]
            if back:  # best one no other class needs for its held-out share (else it gets another)
                unit = min(back, key=lambda i: (sum(not held(d, i) for d in units[i][1]),
                                                units[i][0], i))
                planned[unit] = False
                fixed.add(unit)
    for name in rarest_first:
        if total(name) < need or held(name) or held_before(name) or (
                len(units_of[name]) < 2 and not trained_before(name)):
            continue
        candidates = [i for i in units_of[name]
                      if all(trains_without(d, i) for d in units[i][1])]
        if not candidates:
            continue
        unit = min(candidates, key=lambda i: (cost(i, name), rng.random()))
        planned[unit] = True
        fixed.add(unit)
        returned = spare(name)
        if returned:
            back = rng.choice(returned)
            planned[back] = False
            fixed.add(back)
    def cap(name: str) -> int:
        return max(1, round(2 * fraction * total(name)))

    def fits(unit: int, name: str) -> bool:
        """Whether holding ``unit`` out keeps every class in it but ``name`` within its cap."""
        return all(held_frames(d) + held_before(d) + n <= cap(d)
                   for d, n in units[unit][1].items() if d != name)

    for name in rarest_first:
        for _ in range(len(units_of[name])):
            if held_frames(name) + held_before(name) <= cap(name):
                break
            if not _lighten(name, units, units_of, planned, keeps_held, trains_without, cost,
                            fits, rarest_first):
                break
    return planned


def _lighten(name: str, units, units_of, planned: list[bool], keeps_held, trains_without,
             cost, fits, rarest_first: list[str]) -> bool:
    """One step of :func:`plan_import_held_out`'s last rule: give back the held unit with most
    frames of ``name`` whose release leaves every class in it a held image, or one whose
    classes that lose their last held image each get another unit with fewer frames of
    ``name``, that puts no other class over its cap (the one that costs least). Returns
    whether anything changed."""
    mine = sorted((i for i in units_of[name] if planned[i]), key=lambda i: -units[i][1][name])
    for unit in mine:
        planned[unit] = False
        added: list[int] = []
        for d in (d for d in rarest_first if d in units[unit][1]):
            if keeps_held(d, -1):
                continue
            lighter = [i for i in units_of[d] if not planned[i] and i != unit
                       and units[i][1].get(name, 0) < units[unit][1][name] and fits(i, d)
                       and all(trains_without(e, i) for e in units[i][1])]
            if not lighter:
                break
            swap = min(lighter, key=lambda i: (cost(i, d), i))
            planned[swap] = True
            added.append(swap)
        else:
            return True
        for swap in added:
            planned[swap] = False
        planned[unit] = True
    return False


@dataclass(frozen=True)
class Decision:
    """An admitted sample: which slice it joins, what the policy knows, its random source."""

    held_out: bool
    item: ItemInfo
    rng: random.Random


class TrainView:
    """PolicyView over the index's training rows (used under the memory's lock).

    Full means: ``capacity`` training rows, or the committed bytes plus ``new_bytes`` (the
    incoming sample: an estimate before encoding, exact once written) exceed ``budget_bytes``.
    """

    def __init__(self, admission: "Admission", new_bytes: int):
        """Args:
            admission: owner of the index, counters and bounds.
            new_bytes: bytes of the incoming sample.
        """
        self.db = admission.db
        self.capacity = admission.train_capacity
        self.budget_bytes = admission.budget_bytes
        self.new_bytes = new_bytes
        self._admission = admission

    def is_full(self) -> bool:
        """True when one more sample would break the count or the byte bound."""
        return self.size() >= self.capacity or self.db.total_bytes() + self.new_bytes > self.budget_bytes

    def size(self, *, task=None, primary_class=None, tier=None) -> int:
        """Stored training rows matching the filter."""
        return self.db.count(held_out=False, task=task, primary_class=primary_class, tier=tier)

    def class_counts(self) -> dict[int, int]:
        """Training rows per primary class."""
        return self.db.group_counts("primary_class", held_out=False)

    def task_counts(self) -> dict[str, int]:
        """Training rows per task."""
        return self.db.group_counts("task", held_out=False)

    def nth_id(self, index, *, task=None, primary_class=None, tier=None) -> int:
        """The ``index``-th training id (ascending) matching the filter."""
        return self.db.nth_id(index, held_out=False, task=task, primary_class=primary_class,
                              tier=tier)

    def n_seen(self, key: str) -> int:
        """Training-stream counter."""
        return self._admission.counters.get(f"train/{key}", 0)

    def remove(self, sample_id: int) -> None:
        """Evict a row in the open transaction."""
        self.db.evict(sample_id)

    def is_marked(self, key: str) -> bool:
        """Whether a persistent policy flag is set."""
        return self._admission.counters.get(f"train/mark:{key}", 0) > 0

    def mark(self, key: str) -> None:
        """Set a persistent policy flag (committed with the next write)."""
        if not self.is_marked(key):
            self._admission.bump(f"train/mark:{key}")


class Admission:
    """Decides which offered samples enter and which stored ones leave.

    Attributes:
        db: the index.
        policy: the insertion policy of the training slots.
        train_capacity: training slots.
        holdout_capacity: held-out slots, split evenly between the tasks seen.
        budget_bytes: bytes the committed sample files may use.
        counters: stream counters including pending (uncommitted) increments.
        pending: increments not yet committed.
    """

    def __init__(self, db: IndexDB, policy: InsertionPolicy, *, train_capacity: int,
                 holdout_capacity: int, holdout_fraction: float, budget_bytes: int, seed: int,
                 holdout_block_s: float = 0.0):
        """Args:
            db: the open index (counters are loaded from it).
            policy: insertion policy.
            train_capacity: training slots.
            holdout_capacity: held-out slots.
            holdout_fraction: probability that a frame joins the held-out stream.
            budget_bytes: byte budget of the sample files.
            seed: seed of every random draw.
            holdout_block_s: seconds of capture time that share one held-out draw (see
                :func:`draws_held_out`); 0 draws for every sample.
        """
        self.db, self.policy = db, policy
        self.holdout_block_s = holdout_block_s
        self.train_capacity, self.holdout_capacity = train_capacity, holdout_capacity
        self.holdout_fraction, self.budget_bytes, self.seed = holdout_fraction, budget_bytes, seed
        self.counters = db.load_counters()
        self.pending: dict[str, int] = {}

    def bump(self, key: str) -> int:
        """Increment a counter; returns its new value."""
        self.counters[key] = self.counters.get(key, 0) + 1
        self.pending[key] = self.pending.get(key, 0) + 1
        return self.counters[key]

    def reserve(self, key: str, n: int) -> int:
        """Add ``n`` to a counter (committed with the next stored sample or flush); returns its
        value before."""
        start = self.counters.get(key, 0)
        self.counters[key] = start + n
        self.pending[key] = self.pending.get(key, 0) + n
        return start

    def holdout_quota(self) -> int:
        """Held-out slots per task now (``holdout_capacity`` over the tasks seen)."""
        n_tasks = sum(1 for k in self.counters if k.startswith("frames/task:"))
        return self.holdout_capacity // max(1, n_tasks)

    def view(self, new_bytes: int = 0) -> TrainView:
        """The policy's view of the training rows."""
        return TrainView(self, new_bytes)

    def _typical_bytes(self) -> int:
        n = self.db.count()
        return self.db.total_bytes() // n if n else DEFAULT_SAMPLE_BYTES

    def decide(self, task: str, classes: tuple[int, ...],
               origin: LabelOrigin = LabelOrigin.GROUND_TRUTH,
               ts_s: float | None = None, replacing: bool = False,
               planned: bool | None = None) -> Decision | None:
        """Count an offered sample and decide whether it enters (no rows change yet).

        Args:
            task: its task.
            classes: its distinct class ids.
            origin: where its labels came from; a sample that is not human-verified
                (``pseudo``) never joins the held-out slice: had the draw chosen it, it is
                offered to the training slots instead. An ``operator`` sample is always
                admitted, drawn for training or for the held-out slice (the policy, or the
                class-balanced draw, only chooses what it replaces); one that carries a class
                no training row has (a class's first answer) trains, whatever its draw.
            ts_s: its capture time in seconds (used by the held-out draw when
                ``holdout_block_s`` > 0).
            replacing: it replaces a stored copy of its image (verified labels for a
                pseudo-labelled one): never declined, it takes that copy's place.
            planned: an imported sample's held-out draw, planned by its import (see
                :func:`draws_held_out`), or None.

        Returns:
            The decision, or None when declined.
        """
        n_all = self.bump("frames/all")
        n_task = self.bump(f"frames/task:{task}")
        rng = random.Random(f"{self.seed}/{n_all}")
        held_out = (origin.human_verified and self.holdout_capacity > 0
                    and draws_held_out(self.seed, task, n_task, origin, ts_s,
                                       self.holdout_block_s, self.holdout_fraction,
                                       planned))
        if held_out and origin is LabelOrigin.OPERATOR and set(classes) - self.db.trained_classes():
            # a class's first answer teaches it, whatever its block drew: held out, it started
            # no round (nothing of the class to learn) and the operator saw nothing happen
            held_out = False
        counts = self.db.group_counts("primary_class", held_out=False)
        item = ItemInfo(task, classes, primary_class(classes, counts))
        if held_out:
            n_held = self.bump(f"holdout/task:{task}")
            quota = self.holdout_quota()
            stored = self.db.count(held_out=True, task=task)
            # a person's answer drawn for the held-out slice is kept too (before, a full slice
            # declined 4 answers in 230 while the console said "saved"): it takes a slot the
            # class-balanced draw would give up first
            kept = replacing or origin is LabelOrigin.OPERATOR or stored < quota
            if task == STREAM_TASK:
                n_class = self.bump(f"{STREAM_CLASS_COUNTER}{item.primary_class}")
                admit = quota > 0 and (kept or self._stream_class_admits(item, n_class, rng))
            else:
                admit = quota > 0 and (kept or rng.random() < quota / n_held)
            if quota <= 0 and origin is LabelOrigin.OPERATOR:  # more tasks than held-out
                held_out = False  # slots: the answer trains instead of being declined
        if not held_out:
            for key in seen_keys(item):
                self.bump(f"train/{key}")
            # INVARIANT: a person's answer is never declined on arrival (a few a minute, each
            # asked for): the policy still picks what it replaces
            admit = self.train_capacity > 0 and (
                origin is LabelOrigin.OPERATOR or replacing
                or self.policy.admit(item, self.view(self._typical_bytes()), rng))
        return Decision(held_out, item, rng) if admit else None

    def _stream_class_admits(self, item: ItemInfo, n_seen: int, rng: random.Random) -> bool:
        """CBRS for a held-out draw of the stream task whose share is full (module docstring);
        ``n_seen``: the held-out draws of the item's class so far, this one included."""
        counts = self._holdout_class_counts(STREAM_TASK)
        own = counts.get(item.primary_class, 0)
        if own < max(counts.values(), default=0):
            return True
        return rng.random() < own / n_seen

    def _holdout_class_counts(self, task: str) -> dict[int, int]:
        """Held-out rows of ``task`` per primary class."""
        rows = self.db.group_counts("primary_class", held_out=True, task=task)
        return {int(cls): n for cls, n in rows.items()}

    def _holdout_victim(self, rng: random.Random, task: str, item: ItemInfo | None = None) -> int:
        """Delete a held-out row of ``task``. Of the stream task: a random one of its largest
        class (the item's own when that is one of the largest), as CBRS evicts. Of a named
        task: a uniformly random one (the slice stays a uniform sample of the task), but never
        a class's last one while another class holds two or more (before, an answer or a new
        task's trim could take a rare class's only held-out sample, and with it the gate's
        measure of that class)."""
        counts = self._holdout_class_counts(task)
        if task == STREAM_TASK:
            top = max(counts.values())
            largest = sorted(c for c, n in counts.items() if n == top)
            own = None if item is None else item.primary_class
            target = own if own in largest else rng.choice(largest)
            return self._delete_random(rng, held_out=True, task=task, primary_class=target)
        spare = {c: n for c, n in sorted(counts.items()) if n > 1}
        if not spare or len(spare) == len(counts):
            return self._delete_random(rng, held_out=True, task=task)
        tier = self._lowest_tier(task, list(spare))
        spare = {c: self.db.count(held_out=True, task=task, primary_class=c, tier=tier)
                 for c in spare}
        index = rng.randrange(sum(spare.values()))  # uniform over the spare classes' rows
        for cls, n in spare.items():
            if index < n:
                break
            index -= n
        victim = self.db.nth_id(index, held_out=True, task=task, primary_class=cls, tier=tier)
        self.db.evict(victim)
        return victim

    def _lowest_tier(self, task: str, classes: list[int | None]) -> int | None:
        """The lowest eviction tier (:attr:`~edgecl.frames.LabelOrigin.eviction_tier`) among
        the held-out rows of ``task`` and ``classes`` (None: any class); None when empty."""
        for tier in sorted(set(EVICTION_TIERS.values())):
            if any(self.db.count(held_out=True, task=task, primary_class=c, tier=tier)
                   for c in classes):
                return tier
        return None

    def make_room(self, decision: Decision, new_bytes: int) -> list[int]:
        """Delete rows (in the open transaction) so the new sample fits every bound.

        Returns:
            Evicted ids.
        """
        rng, item = decision.rng, decision.item
        victims = self._trim_holdout(rng, self.holdout_quota())
        if decision.held_out:
            while self.db.count(held_out=True, task=item.task) >= self.holdout_quota():
                victims.append(self._holdout_victim(rng, item.task, item))
        else:
            victims += make_slot(self.policy, item, self.view(new_bytes), rng)
        victims += self._evict_for_bytes(item, rng, self.budget_bytes - new_bytes)
        return victims

    def enforce_bounds(self) -> list[int]:
        """Evict (in the open transaction) until the hard bounds hold (after a restart with
        smaller bounds). Per-task held-out quotas are left to the next add, so a restart
        never evicts what was committed within the bounds.

        Returns:
            Evicted ids.
        """
        rng = random.Random(f"{self.seed}/bounds/{self.counters.get('frames/all', 0)}")
        victims = []
        while self.db.count(held_out=True) > self.holdout_capacity:
            victims.append(self._holdout_victim(rng, self._largest_holdout()))
        view = self.view()
        filler = ItemInfo("", (), -1)
        while view.size() > self.train_capacity:
            victim = self.policy.victim(filler, view, rng)
            view.remove(victim)
            victims.append(victim)
        return victims + self._evict_for_bytes(filler, rng, self.budget_bytes)

    def _largest_holdout(self) -> str:
        counts = self.db.group_counts("task", held_out=True)
        return min(counts, key=lambda t: (-counts[t], t))

    def _trim_holdout(self, rng: random.Random, quota: int) -> list[int]:
        if quota <= 0:  # more tasks than held-out slots: trimmed to each task's share of 0,
            return []   # the slice was emptied at every add; it keeps what it holds instead
        victims = []
        for task, n in sorted(self.db.group_counts("task", held_out=True).items()):
            for _ in range(n - quota):
                victims.append(self._holdout_victim(rng, task))
            if n - quota > 1:  # a smaller capacity, or a new task sharing the slots
                logging.getLogger(__name__).warning(
                    "replay memory: held-out samples of task %r trimmed from %d to %d (its "
                    "share of %d held-out slots)", task, n, quota, self.holdout_capacity)
        return victims

    def _evict_for_bytes(self, item: ItemInfo, rng: random.Random, budget_bytes: int) -> list[int]:
        victims = []
        view = self.view()
        # INVARIANT: committed sample bytes never exceed budget_bytes.
        while self.db.total_bytes() > budget_bytes:
            victim = self.policy.victim(item, view, rng) if view.size() else None
            if victim is None:
                victims.append(self._holdout_victim(rng, self._largest_holdout()))
                continue
            view.remove(victim)
            victims.append(victim)
        return victims

    def _delete_random(self, rng: random.Random, held_out: bool, task: str,
                       primary_class: int | None = None) -> int:
        """Delete a random row matching the filter, of its lowest eviction tier: a person's
        answer last, as in the training slots (before, the held-out slice gave up answers as
        readily as a labelled stream's frames)."""
        tier = self._lowest_tier(task, [primary_class]) if held_out else None
        n = self.db.count(held_out=held_out, task=task, primary_class=primary_class, tier=tier)
        victim = self.db.nth_id(rng.randrange(n), held_out=held_out, task=task,
                                primary_class=primary_class, tier=tier)
        self.db.evict(victim)
        return victim
