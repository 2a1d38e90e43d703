"""The bounded, crash-safe replay memory.

Layout of ``STATE/memory/``: ``images/<id>.jpg`` (JPEG), ``labels/<id>.txt`` (YOLO rows; the
ultralytics ``/images/`` -> ``/labels/`` convention), ``index.sqlite`` (one row per sample,
stream counters, class names) and ``snapshots/`` (see :mod:`memory_snapshot`).

Bounds. At most ``capacity`` samples, and the committed sample files use at most
``max_bytes - overhead_reserve_bytes(capacity)`` bytes on disk (allocated blocks), so the
whole folder (samples + index + journal + directory entries) stays within ``max_bytes``.
Both hold in every committed state, across restarts (a smaller bound on re-open evicts).
During one add, the new files exist before the victims' files are unlinked, so the folder
may exceed the bound by that one sample for the duration of the add. Snapshots hard-link
files; an evicted file stays on disk until the (at most ``keep_snapshots``) snapshots that
reference it are pruned.

Held-out slice. ``holdout_fraction`` of each task's frames (a deterministic draw from the
seed, the task and the frame's position in that task's stream) is held out: never returned
for training, used to measure forgetting. Held-out samples do not pass through the insertion
policy: they live in ``holdout_capacity = floor(capacity * holdout_fraction)`` slots, split
evenly between the tasks seen (a uniform reservoir within each task; when a new task shrinks
the per-task share, the next add trims the surplus). The policy governs the remaining
``train_capacity`` slots.

Crash safety (one adding process; others may read, snapshot and update metrics). An add
writes the image and label files atomically, then deletes the victims' rows and inserts the
new row in one transaction, then unlinks the victims' files. A kill at any instant leaves
either the old or the new committed state plus, at worst, files no row refers to;
:meth:`ReplayMemory.verify` (run on open) removes those. Stream counters of declined samples
are committed in batches of :data:`COUNTER_FLUSH_EVERY`: a crash may forget that many
declined offers, which only nudges later admission probabilities.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from pathlib import Path

from edgecl import atomic
from edgecl.config import Config, MemoryConfig
from edgecl.continual import memory_verify
from edgecl.continual.memory_admission import Admission, Decision
from edgecl.continual.memory_index import WAL_LIMIT_BYTES, IndexDB
from edgecl.continual.memory_records import (
    IMAGE_SUFFIX,
    LABEL_SUFFIX,
    Sample,
    SampleRecord,
    StoredSample,
    check_image,
    check_labels,
    classes_of,
    classes_to_text,
    encode_jpeg,
    file_stem,
    labels_to_text,
    nan_to_none,
    parse_label_file,
)
from edgecl.continual.memory_snapshot import MemorySnapshot, build_snapshot, prune_snapshots
from edgecl.continual.memory_verify import VerifyReport
from edgecl.continual.policies import make_policy
from edgecl.errors import ReplayMemoryError

__all__ = ["ReplayMemory", "Sample", "StoredSample", "SampleRecord", "MemorySnapshot",
           "VerifyReport", "memory_from_config", "overhead_reserve_bytes"]

INDEX_FILE = "index.sqlite"
COUNTER_FLUSH_EVERY = 64
DEFAULT_KEEP_SNAPSHOTS = 2
_OVERHEAD_FIXED_BYTES = 512 * 1024
_OVERHEAD_PER_SAMPLE_BYTES = 640
_BLOCK_BYTES = 4096


def overhead_reserve_bytes(capacity: int) -> int:
    """Bytes of ``max_bytes`` kept for the index, its WAL and the directory entries.

    Args:
        capacity: the memory's sample capacity.

    Returns:
        The reserve in bytes.
    """
    return _OVERHEAD_FIXED_BYTES + WAL_LIMIT_BYTES + _OVERHEAD_PER_SAMPLE_BYTES * int(capacity)


def disk_bytes(path: Path) -> int:
    """Bytes a file occupies on disk (allocated blocks, at least its length)."""
    st = os.stat(path)
    return max(int(st.st_size), int(getattr(st, "st_blocks", 0)) * 512)


def _rounded(n_bytes: int) -> int:
    return int(math.ceil(max(1, n_bytes) / _BLOCK_BYTES) * _BLOCK_BYTES)


class ReplayMemory:
    """Bounded, persisted replay memory of labelled images (see the module docstring).

    Attributes:
        root: the memory folder.
        cfg: its configuration.
        policy: the insertion policy chosen by ``cfg.policy``.
        last_verify: report of the check run on open (None if skipped).
    """

    def __init__(self, root: str | Path, cfg: MemoryConfig | None = None,
                 names: dict[int, str] | None = None, *, verify_on_open: bool = True,
                 keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS):
        """Open or create a memory.

        Args:
            root: the memory folder (``STATE/memory``).
            cfg: bounds, policy, JPEG quality, held-out fraction, seed.
            names: class id -> name, stored in the index when given.
            verify_on_open: run a quick :meth:`verify` (repairing) before use.
            keep_snapshots: how many snapshots to keep on disk.

        Raises:
            ReplayMemoryError: unusable configuration or index.
            ConfigError: unknown policy name.
        """
        self.root = Path(root)
        self.cfg = cfg or MemoryConfig()
        _check_config(self.cfg)
        self.policy = make_policy(self.cfg.policy, self.cfg.task_budget_pct)
        self.keep_snapshots = max(1, int(keep_snapshots))
        for sub in ("images", "labels", "snapshots"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = IndexDB(self.root / INDEX_FILE)
        self._admission = Admission(
            self._db, self.policy, train_capacity=self.train_capacity,
            holdout_capacity=self.holdout_capacity, holdout_fraction=self.cfg.holdout_fraction,
            budget_bytes=self.sample_budget_bytes, seed=self.cfg.seed)
        if names:
            self.set_class_names(names)
        self.last_verify = self.verify(repair=True) if verify_on_open else None

    @property
    def capacity(self) -> int:
        """Maximum number of samples (training + held-out)."""
        return int(self.cfg.capacity)

    @property
    def holdout_capacity(self) -> int:
        """Slots reserved for the held-out slice."""
        if self.cfg.holdout_fraction <= 0:
            return 0
        return min(self.capacity - 1, max(1, int(self.capacity * self.cfg.holdout_fraction)))

    @property
    def train_capacity(self) -> int:
        """Slots governed by the insertion policy."""
        return self.capacity - self.holdout_capacity

    @property
    def sample_budget_bytes(self) -> int:
        """Bytes the committed sample files may occupy."""
        return int(self.cfg.max_bytes) - overhead_reserve_bytes(self.capacity)

    def image_path(self, sample_id: int) -> Path:
        """The memory's image file of a sample id."""
        return self.root / "images" / f"{file_stem(int(sample_id))}{IMAGE_SUFFIX}"

    def label_path(self, sample_id: int) -> Path:
        """The memory's label file of a sample id."""
        return self.root / "labels" / f"{file_stem(int(sample_id))}{LABEL_SUFFIX}"

    def class_names(self) -> dict[int, str] | None:
        """Class id -> name stored in the index, or None."""
        with self._lock:
            names = self._db.get_meta("names")
        return {int(k): v for k, v in names.items()} if names else None

    def set_class_names(self, names: dict[int, str]) -> None:
        """Store class names (they also bound the class ids accepted by :meth:`add`)."""
        clean = {str(int(k)): str(v) for k, v in names.items()}
        with self._lock:
            self._db.set_meta("names", clean)

    def _known_nc(self) -> int | None:
        names = self.class_names()
        return max(names) + 1 if names else None

    def add(self, sample: Sample) -> int | None:
        """Offer a labelled sample.

        Args:
            sample: image, YOLO labels, task, source, time.

        Returns:
            The new sample id, or None when the policy (or the held-out quota) declines it.

        Raises:
            ReplayMemoryError: empty or malformed image, sample larger than the byte budget,
                disk full or index failure (nothing stored is lost).
            LabelError: malformed label rows or class out of range.
        """
        where = f"sample from {sample.source or '<unknown source>'} (task {sample.task!r})"
        if not isinstance(sample.task, str) or not sample.task:
            raise ReplayMemoryError(f"{where}: task must be a non-empty string")
        image = check_image(sample.image, where)
        labels = check_labels(sample.labels, where, self._known_nc())
        classes = classes_of(labels)
        with self._lock:
            decision = self._admission.decide(sample.task, classes)
            if decision is None:
                self._flush_if_due()
                return None
            blob = encode_jpeg(image, self.cfg.jpeg_quality, where)
            text = labels_to_text(labels).encode("utf-8")
            self._check_fits(_rounded(len(blob)) + _rounded(len(text)), where)
            row = {"task": sample.task, "classes": classes_to_text(classes),
                   "primary_class": decision.item.primary_class, "source": str(sample.source),
                   "ts_s": float(sample.ts_s), "held_out": int(decision.held_out),
                   "width": int(image.shape[1]), "height": int(image.shape[0])}
            return self._store(decision, blob, text, row, where)

    def _check_fits(self, n_bytes: int, where: str) -> None:
        if n_bytes > self.sample_budget_bytes:
            raise ReplayMemoryError(
                f"{where}: needs {n_bytes} bytes on disk, more than the memory's sample budget "
                f"of {self.sample_budget_bytes} bytes (memory.max_bytes={self.cfg.max_bytes})")

    def _store(self, decision: Decision, blob: bytes, text: bytes, row: dict, where: str) -> int:
        written: list[Path] = []
        try:
            with self._db.write():
                new_id = self._db.next_id()
                for path, data in ((self.image_path(new_id), blob), (self.label_path(new_id), text)):
                    written.append(path)
                    atomic.atomic_write_bytes(path, data)
                n_bytes = sum(disk_bytes(p) for p in written)
                self._check_fits(n_bytes, where)
                victims = self._admission.make_room(decision, n_bytes)
                self._db.insert({"id": new_id, **row, "bytes": n_bytes})
                self._db.add_counters(self._admission.pending)
        except (OSError, sqlite3.Error) as exc:
            self._unlink(written)
            what = getattr(exc, "strerror", None) or str(exc)
            at = getattr(exc, "filename", None) or self.root
            raise ReplayMemoryError(f"cannot store {where}: {what} ({at}); "
                                    f"nothing stored was lost") from None
        except BaseException:
            self._unlink(written)
            raise
        self._admission.pending = {}
        self._unlink_samples(victims)
        return new_id

    def _unlink(self, paths: list[Path]) -> list[str]:
        failed = []
        for path in paths:
            try:
                Path(path).unlink(missing_ok=True)
            except OSError as exc:
                failed.append(f"{path}: {exc.strerror or exc}")
        return failed

    def _unlink_samples(self, ids: list[int]) -> list[str]:
        paths = [p for i in ids for p in (self.image_path(i), self.label_path(i))]
        return self._unlink(paths)

    def _flush_if_due(self) -> None:
        if self._admission.pending.get("frames/all", 0) >= COUNTER_FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Commit pending stream counters (declined offers)."""
        with self._lock:
            if self._admission.pending:
                with self._db.write():
                    self._db.add_counters(self._admission.pending)
                self._admission.pending = {}

    def close(self) -> None:
        """Flush counters and close the index."""
        with self._lock:
            self.flush()
            self._db.close()

    def __enter__(self) -> "ReplayMemory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return self._db.count()

    def ids(self, held_out: bool | None = None, task: str | None = None) -> list[int]:
        """Stored ids (ascending), filtered by held-out flag and task."""
        with self._lock:
            return self._db.ids(held_out=held_out, task=task)

    def records(self, ids: list[int] | None = None, held_out: bool | None = None,
                task: str | None = None) -> list[SampleRecord]:
        """Index rows: of ``ids`` (order kept, unknown skipped) or of all matching rows."""
        with self._lock:
            return self._db.records(ids, held_out=held_out, task=task)

    def get(self, ids: list[int]) -> list[StoredSample]:
        """Load samples (labels parsed) in the given order.

        Raises:
            ReplayMemoryError: an id is not (or no longer) stored.
            LabelError: a label file is malformed.
        """
        records = self.records(list(ids))
        if len(records) != len(ids):
            known = {r.id for r in records}
            missing = [int(i) for i in ids if int(i) not in known]
            raise ReplayMemoryError(f"memory {self.root} has no sample id(s) {missing[:5]} "
                                    f"(evicted? train from a snapshot)")
        return [StoredSample.from_record(r, self.image_path(r.id), self.label_path(r.id),
                                         parse_label_file(self.label_path(r.id)))
                for r in records]

    def image_paths(self, ids: list[int]) -> list[Path]:
        """The memory's image files of the given ids."""
        return [self.image_path(i) for i in ids]

    def snapshot(self) -> MemorySnapshot:
        """Take a consistent, immutable snapshot (hard links; older ones beyond
        ``keep_snapshots`` are pruned).

        Raises:
            ReplayMemoryError: the disk refused the snapshot (the memory is unchanged).
        """
        with self._lock:
            with self._db.write():
                snap = build_snapshot(self.root, self._db.records(), self.class_names())
            prune_snapshots(self.root, self.keep_snapshots)
        return snap

    def set_recall_baseline(self, ids: list[int], values: list[float]) -> int:
        """Store each sample's recall right after its task was learnt (FAR's baseline)."""
        return self._update("recall_baseline", ids, values)

    def update_recall(self, ids: list[int], values: list[float]) -> int:
        """Store each sample's latest recall."""
        return self._update("last_recall", ids, values)

    def update_loss(self, ids: list[int], values: list[float]) -> int:
        """Store each sample's latest training loss."""
        return self._update("last_loss", ids, values)

    def _update(self, column: str, ids: list[int], values: list[float]) -> int:
        if len(ids) != len(values):
            raise ReplayMemoryError(f"{column}: {len(ids)} ids but {len(values)} values")
        with self._lock:
            return self._db.update_column(column, list(ids), [nan_to_none(v) for v in values])

    def record_replay(self, ids: list[int]) -> int:
        """Count one replay of each id."""
        with self._lock:
            return self._db.increment_replayed(list(ids))

    def verify(self, repair: bool = True, deep: bool = False) -> VerifyReport:
        """Check that index and files agree and the bounds hold; optionally repair.

        Args:
            repair: remove orphans and rows with missing/corrupt files, evict over bounds.
            deep: also decode every image and parse every label file.

        Returns:
            What was found, what was repaired, what could not be.
        """
        with self._lock:
            return memory_verify.verify_memory(self, repair=repair, deep=deep)

    def enforce_bounds(self) -> list[int]:
        """Evict (inside the caller's write transaction) until every hard bound holds.

        Returns:
            Evicted ids (their files are the caller's to unlink after commit).
        """
        return self._admission.enforce_bounds()

    def stats(self) -> dict:
        """Counts and sizes.

        Returns:
            ``samples``, ``bytes``, ``held_out``, ``capacity``, ``max_bytes``,
            ``sample_budget_bytes``, ``per_class`` (images containing each class id),
            ``per_task``, ``per_task_held_out``, ``seen``, ``policy``, ``names``.
        """
        records = self.records()
        per_class: dict[str, int] = {}
        per_task: dict[str, int] = {}
        held: dict[str, int] = {}
        for r in records:
            for c in r.classes:
                per_class[str(c)] = per_class.get(str(c), 0) + 1
            target = held if r.held_out else per_task
            target[r.task] = target.get(r.task, 0) + 1
        names = self.class_names()
        return {"samples": len(records), "bytes": sum(r.bytes for r in records),
                "held_out": sum(held.values()), "capacity": self.capacity,
                "max_bytes": int(self.cfg.max_bytes),
                "sample_budget_bytes": self.sample_budget_bytes,
                "per_class": dict(sorted(per_class.items(), key=lambda kv: int(kv[0]))),
                "per_task": per_task, "per_task_held_out": held,
                "seen": self._admission.counters.get("frames/all", 0), "policy": self.policy.name,
                "names": {str(k): v for k, v in names.items()} if names else None}


def _check_config(cfg: MemoryConfig) -> None:
    if cfg.capacity < 1:
        raise ReplayMemoryError(f"memory.capacity must be >= 1, got {cfg.capacity}")
    if not 1 <= cfg.jpeg_quality <= 100:
        raise ReplayMemoryError(f"memory.jpeg_quality must be in 1..100, got {cfg.jpeg_quality}")
    if not 0.0 <= cfg.holdout_fraction < 1.0:
        raise ReplayMemoryError(f"memory.holdout_fraction must be in [0, 1), "
                                f"got {cfg.holdout_fraction}")
    reserve = overhead_reserve_bytes(cfg.capacity)
    if cfg.max_bytes <= reserve:
        raise ReplayMemoryError(f"memory.max_bytes={cfg.max_bytes} leaves no room for samples: "
                                f"the index and directories of {cfg.capacity} samples need "
                                f"{reserve} bytes")


def memory_from_config(cfg: Config, names: dict[int, str] | None = None) -> ReplayMemory:
    """Open the memory of a deployment (``Path(cfg.state_dir) / "memory"``).

    Args:
        cfg: the deployment configuration.
        names: class names to record, if known.

    Returns:
        The opened (and verified) memory.
    """
    return ReplayMemory(Path(cfg.state_dir) / "memory", cfg.memory, names)
