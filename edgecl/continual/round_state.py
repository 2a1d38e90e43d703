"""What the learner remembers between rounds (``STATE/learner/state.json``, written atomically),
and what one round returns (:class:`RoundResult` with its :class:`RoundStatus`)."""

from __future__ import annotations

import enum
import errno
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edgecl.atomic import atomic_write_json, keep_damaged
from edgecl.errors import StorageError
from edgecl.frames import STREAM_TASK
from edgecl.models.registry import VersionStatus, read_manifests

log = logging.getLogger(__name__)


@dataclass
class LearnerState:
    """Progress of continual learning on this device.

    Attributes:
        round: number of the last finished round (0 before any).
        last_sample_id: highest memory sample id already learnt (newer ones are "new").
        task_order: task names in the order they first appeared.
        learnt_tasks: tasks that a promoted model has learnt.
        task_classes: task -> classes it introduced.
        trigger_from_id: samples up to this id start no round by themselves: a rollback set
            it to what the versions it retired had learnt. The next round learns them all the
            same; it starts when samples stored after them arrive, or on ``edgecl learn``
            (before, the device learnt the same samples again within seconds, and promoted a
            replacement for the version just rolled back).
    """

    round: int = 0
    last_sample_id: int = 0
    task_order: list[str] = field(default_factory=list)
    learnt_tasks: list[str] = field(default_factory=list)
    task_classes: dict[str, list[int]] = field(default_factory=dict)
    trigger_from_id: int = 0

    def roll_back_to(self, learnt: int) -> None:
        """Rewind the progress to ``learnt`` as a rollback does: what it gives back is learnt
        again by the next round, and held back from starting it (``trigger_from_id``)."""
        self.trigger_from_id = max(self.trigger_from_id, self.last_sample_id)
        self.last_sample_id = learnt

    def given_back(self, records) -> int:
        """How many of ``records`` a rollback gave back to the next round: ids after
        ``last_sample_id`` up to ``trigger_from_id`` (0 when no rollback holds any back).

        Args:
            records: the memory's training records (anything with an integer ``id``).
        """
        return sum(self.last_sample_id < r.id <= self.trigger_from_id for r in records)


class RoundStatus(str, enum.Enum):
    """Outcome of one learning round (shared by the learner, the supervisor and the monitor).

    ``staged``: the gate accepted the candidate and it waits in the registry for promotion;
    ``promoted``: the supervisor made it current; ``rejected``: the gate refused it (not exported);
    ``skipped``: nothing new to learn, or no held-out sample to judge a candidate on;
    ``failed``: the round could not run (reason says why).
    """

    # INVARIANT: the outcomes that leave a version carry the registry's own status values
    STAGED = VersionStatus.STAGED.value
    PROMOTED = VersionStatus.PROMOTED.value
    REJECTED = VersionStatus.REJECTED.value
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class RoundResult:
    """What one round did, as written to ``STATE/learner/last_round.json``.

    Attributes:
        status: the outcome.
        reason: the gate's verdict, or why the round was skipped or failed.
        round: round number (``None`` when skipped before a round began).
        version: registry version staged or rejected (``None`` when none was made).
        trigger: what started the round.
        started_s: wall-clock start, seconds since the epoch.
        seconds: wall-clock duration up to the staged version (what the metrics database
            records for the round).
        acc: mean held-out mAP50-95 over the matrix columns after this round (``None``: unknown).
        bwt: backward transfer after this round.
        per_task: matrix column (task, or class name when frames carry no task) -> mAP50-95.
        classes: class ids of the candidate model.
        steps: optimiser steps taken.
        train_s: seconds spent training.
        replayed: replay samples used.
        new_samples: new samples learnt.
        timings_s: seconds per phase (select, train, evaluate, calibrate, export, stage).
        round_id: the id the runtime's supervisor gave the learner process that wrote this
            result (it handles only a result carrying the id of the round it started; wall
            clocks can jump, so start times cannot tell an old result from a new one).
        unsaved: what the round could not write after staging its version (a full disk):
            ``"metrics"`` (its record in the metrics database), ``"progress"`` (the learner's
            state); the version keeps both, and whoever applies the result writes them from
            it (:func:`edgecl.runtime.learner.write_unsaved`).
    """

    status: RoundStatus
    reason: str = ""
    round: int | None = None
    version: str | None = None
    trigger: str = ""
    started_s: float = 0.0
    seconds: float = 0.0
    acc: float | None = None
    bwt: float | None = None
    per_task: dict[str, float | None] = field(default_factory=dict)
    classes: list[int] = field(default_factory=list)
    steps: int = 0
    train_s: float = 0.0
    replayed: int = 0
    new_samples: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    round_id: str = ""
    unsaved: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """Return a JSON-ready dict (``status`` as its string value)."""
        out = asdict(self)
        out["status"] = self.status.value
        return out

    @classmethod
    def from_json(cls, data: dict) -> "RoundResult":
        """Build from :meth:`to_json` output (unknown keys are ignored).

        Raises:
            ValueError: missing or unknown status.
        """
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["status"] = RoundStatus(data.get("status"))
        return cls(**kwargs)


def learner_dir(state_dir: str | Path) -> Path:
    """Return ``STATE/learner`` (created in the state directory, which must exist: a round
    must not grow a new, empty state directory where the one it began in was moved or deleted).

    Raises:
        FileNotFoundError: the state directory is not there (it is named).
        OSError: ``learner`` cannot be made in it.
    """
    path = Path(state_dir) / "learner"
    try:
        path.mkdir(exist_ok=True)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "the state directory is not there (moved or "
                                "deleted): no round runs in it", str(state_dir)) from None
    return path


def state_path(state_dir: str | Path) -> Path:
    """Return the path of the learner state file."""
    return Path(state_dir) / "learner" / "state.json"


def load_state(state_dir: str | Path) -> LearnerState:
    """Read the learner state.

    When the file is missing or unreadable while model versions exist (an SD-card fault, a
    file deleted by hand), the progress is taken from the versions' manifests, which record
    it (``learner_state``): the serving version's progress, with the highest round number any
    version reached, so that round numbers are not given twice and the samples the serving
    model learnt are not learnt again. Without versions (a new device) a fresh state; with
    versions that record none, a fresh state and a warning (the next round then learns the
    whole memory again, which loses no sample).

    Raises:
        StorageError: the file's path holds a folder (before, every round trained, staged a
            version, and failed with a traceback when it saved its progress).
    """
    path = state_path(state_dir)
    if path.exists() and not path.is_file():  # a folder: no round could save its progress
        raise StorageError(f"learner progress {path} is a folder, not a file: remove it (the "
                           f"progress is restored from the model versions' manifests)")
    denied = False  # a permission problem, not damage: the file is left as it is
    if not path.is_file():
        state, why = None, "missing"
    else:
        try:
            state = state_from_json(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
            state, why = None, f"unreadable: {exc}"
            denied = isinstance(exc, PermissionError)
        else:
            why = "unreadable: not a learner state"
    if state is not None:
        return state
    restored = _state_from_versions(Path(state_dir) / "models")
    if restored is not None:
        state, version = restored
        learnt = (f"samples up to {state.last_sample_id} learnt by {version}, the serving version"
                  if version else "the serving version recorded no progress, so the next round "
                                  "learns every sample")
        log.warning("learner progress %s is %s; restored from the model versions' manifests "
                    "(round %d; %s)", path, why, state.round, learnt)
        if denied:  # before: renamed .corrupt-<time>, as if damaged
            log.warning("learner progress %s: a permission problem, not damage, so it is left "
                        "as it is: give the user running edgecl read access to it", path)
            return state
        try:  # once: every later read finds it
            _keep_damaged(path, why)
            save_state(state_dir, state)
        except OSError as exc:  # a read-only or full state directory: restored again next time
            log.debug("restored learner progress not saved: %s", exc)
        return state
    if why != "missing":
        log.warning("learner progress %s is %s; starting from round 0, so the next round "
                    "learns every sample in the memory", path, why)
    return LearnerState()


def progress_within_memory(state_dir: str | Path, state: LearnerState,
                           last_id_given: int) -> LearnerState:
    """The learner progress checked against the replay memory it counts in: progress past the
    last sample id the memory ever gave (the memory replaced, restored from an older copy or
    started afresh; the file edited) would keep every sample "learnt" until the ids caught
    up, so no round would ever fall due. It is reset to learn every sample again (which loses
    none), with a warning, and saved.

    Args:
        state_dir: the state directory.
        state: the progress read (:func:`load_state`).
        last_id_given: the memory's last id ever given (its second
            ``change_signature()`` value; 0 for an empty new memory).

    Returns:
        ``state`` itself when consistent, else a copy with ``last_sample_id`` 0 (and
        ``trigger_from_id`` 0 where it is past the memory's ids too).
    """
    if state.trigger_from_id > max(0, int(last_id_given)):  # the same: it would hold every
        state = LearnerState(**{**asdict(state), "trigger_from_id": 0})  # round back
    if state.last_sample_id <= max(0, int(last_id_given)):
        return state
    log.warning("learner progress %s says samples up to id %d were learnt, but the replay "
                "memory has given ids up to %d only (a memory replaced, restored from an older "
                "copy or started afresh, or the file edited); the next round learns every "
                "sample in the memory", state_path(state_dir), state.last_sample_id,
                last_id_given)
    fixed = LearnerState(**{**asdict(state), "last_sample_id": 0})
    try:  # once: every later read finds it
        save_state(state_dir, fixed)
    except OSError as exc:  # a read-only or full state directory: said again next time
        log.debug("corrected learner progress not saved: %s", exc)
    return fixed


FINISHED_STATUSES = (VersionStatus.PROMOTED.value, VersionStatus.RETIRED.value,
                     VersionStatus.REJECTED.value)
"""Stored statuses of the versions whose recorded progress the learner had saved."""


def _state_from_versions(models_dir: Path) -> tuple[LearnerState, str] | None:
    """The progress the model versions' manifests record (read only; see :func:`load_state`).

    Returns:
        ``(state, serving version it was taken from or "")``, or None when no manifest
        records one.
    """
    recorded: dict[str, LearnerState] = {}
    for version, manifest in read_manifests(models_dir).items():
        if manifest.get("status") not in FINISHED_STATUSES:
            continue  # a staged version's progress is adopted when it is promoted
        state = state_from_json(manifest.get("learner_state"))
        if state is not None:
            recorded[version] = state
    if not recorded:
        return None
    try:
        current = os.readlink(models_dir / "current")
    except OSError:
        current = None
    source = current if current in recorded else None
    state = recorded[source] if source else LearnerState()
    state.round = max(s.round for s in recorded.values())
    return state, source or ""


def state_from_json(data: object) -> LearnerState | None:
    """A :class:`LearnerState` from its JSON form, or None when ``data`` is not one (wrong
    types included: a hand-edited or damaged file). Unknown keys are ignored.

    Args:
        data: the parsed JSON.

    Returns:
        The state, or None.
    """
    if not isinstance(data, dict):
        return None
    state = LearnerState(**{k: v for k, v in data.items() if k in LearnerState.__dataclass_fields__})
    names = (state.task_order, state.learnt_tasks)
    if not (all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for v in (state.round, state.last_sample_id, state.trigger_from_id))
            and all(isinstance(v, list) and all(isinstance(t, str) for t in v) for v in names)
            and isinstance(state.task_classes, dict)
            and all(isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool)
                                                for c in v)
                    for v in state.task_classes.values())):
        return None
    return state


def _keep_damaged(path: Path, why: str) -> None:
    """Keep a damaged progress file beside its repair (``state.json.corrupt-<UTC time>``), as
    the other repaired files are kept: it was overwritten."""
    if why == "missing" or not path.is_file():
        return
    kept = keep_damaged(path)
    log.warning("the damaged learner progress is kept as %s", kept)


def save_state(state_dir: str | Path, state: LearnerState) -> None:
    """Write the learner state atomically."""
    atomic_write_json(state_path(state_dir), asdict(state))


def update_task_bookkeeping(state: LearnerState, records) -> None:
    """Extend the task order and per-task classes with tasks seen in ``records``.

    A task's classes are those its samples carry that no earlier task introduced; a task
    learnt before keeps the classes it had then (benchmarks: a later task's classes are not
    its own).  The stream task of a deployment (frames that carry no task) is the exception:
    it is the only task, so every class its samples show is its own, including classes first
    labelled after it was learnt (else a class taught in the field would never be evaluated,
    gated or shown by the forgetting monitor).

    Args:
        state: learner state (modified in place).
        records: memory records (any order) with ``id``, ``task`` and ``classes``.
    """
    first_id: dict[str, int] = {}
    classes: dict[str, set[int]] = {}
    for rec in records:
        first_id[rec.task] = min(rec.id, first_id.get(rec.task, rec.id))
        classes.setdefault(rec.task, set()).update(int(c) for c in rec.classes)
    for task in sorted(first_id, key=first_id.get):
        if task not in state.task_order:
            state.task_order.append(task)
    introduced: set[int] = set()
    # the stream task last: its classes grow, and must not take a class a task introduced
    for task in sorted(state.task_order, key=lambda t: t == STREAM_TASK):
        known = set(state.task_classes.get(task, []))
        growing = task not in state.learnt_tasks or task == STREAM_TASK
        new = (classes.get(task, set()) | known) - introduced if growing else known
        state.task_classes[task] = sorted(new)
        introduced |= set(state.task_classes[task])
