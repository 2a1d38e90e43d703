"""The bounded, crash-safe replay memory.

Layout of ``STATE/memory/``: ``images/<id>.jpg`` (JPEG), ``labels/<id>.txt`` (YOLO rows; the
ultralytics ``/images/`` -> ``/labels/`` convention), ``index.sqlite`` (one row per sample,
stream counters, class names) and ``snapshots/`` (see :mod:`.snapshot`).

Bounds. At most ``capacity`` samples, and the committed sample files use at most
``max_bytes - overhead_reserve_bytes(capacity)`` bytes on disk (allocated blocks), so the
whole folder (samples + index + journal + directory entries) stays within ``max_bytes``.
Both hold in every committed state, across restarts (a smaller bound on re-open evicts).
During one add, the new files exist before the victims' files are unlinked, so the folder
may exceed the bound by that one sample for the duration of the add. Snapshots hard-link
files; an evicted file stays on disk until the (at most ``keep_snapshots``) snapshots that
reference it are pruned.

Held-out slice. ``holdout_fraction`` of each task's frames (a deterministic draw from the
seed, the task and the frame's position in that task's stream; with ``holdout_block_s`` > 0,
one draw per block of that many seconds of capture time for streamed frames, so that held-out
frames are not near-duplicates of training frames) is held out: never returned
for training, used to measure forgetting. Only human-verified samples are held out: a
``pseudo``-labelled sample is always offered to the training slots (see
:class:`~edgecl.frames.LabelOrigin`). Held-out samples do not pass through the insertion
policy: they live in ``holdout_capacity = floor(capacity * holdout_fraction)`` slots, split
evenly between the tasks seen (a uniform reservoir within each task; when a new task shrinks
the per-task share, the next add trims the surplus; with more tasks than slots, the slice keeps
what it holds and takes no new draw). Frames without a task (a camera's: one
task for the device's life) share their task's slots between classes with a class-balanced
reservoir instead, so a class taught late still gets its share, however many classes there are
(see :mod:`~edgecl.continual.memory.admission`). The policy governs the remaining
``train_capacity`` slots.

Crash safety (one adding process; others may read, snapshot and update metrics). An add
writes the image and label files atomically, then deletes the victims' rows and inserts the
new row in one transaction, then unlinks the victims' files. A kill at any instant leaves
either the old or the new committed state plus, at worst, files no row refers to;
:meth:`ReplayMemory.verify` (run on open) removes those. Stream counters of declined samples
are committed in batches of :data:`COUNTER_FLUSH_EVERY`: a crash may forget that many
declined offers, which only nudges later admission probabilities.

Damaged samples. A row whose image or label file is missing or damaged (or whose index row
cannot be read) is never deleted outright: the repairing check moves what is left of its files
to ``quarantine/<id>/`` with its index row (:mod:`.quarantine`), then drops the row, and says
which samples it moved (id, label origin, damaged file, reason, folder). The quarantine keeps
the newest :data:`~.quarantine.QUARANTINE_KEEP` samples within 5 % of ``max_bytes``; its files
are the memory's own, moved, so the folder may exceed ``max_bytes`` by that share at most.

Storage faults. A full disk or an unwritable directory (during an add, a flush, a snapshot, a
metric update, or at open) raises :class:`~edgecl.errors.StorageError` with one line (what and
where); the transaction is rolled back and the files of the refused sample removed, so the
memory stays consistent and usable once space returns.

Other bounds. Every structure the memory keeps is bounded: rows by ``capacity``, files by
``max_bytes``, snapshots by ``keep_snapshots`` (pruned at each snapshot), the SQLite WAL by
:data:`~.index.WAL_LIMIT_BYTES`, a row's text by :data:`MAX_TASK_CHARS` /
:data:`MAX_SOURCE_CHARS` (the per-row reserve of :func:`overhead_reserve_bytes` assumes it),
stream counters by the number of tasks and classes seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from edgecl import atomic, sqlite_room
from edgecl.config import Config, MemoryConfig
from edgecl.continual.memory import quarantine
from edgecl.continual.memory import verify as checks
from edgecl.continual.memory.admission import Admission, Decision
from edgecl.continual.memory.embedding import (
    EMBEDDING_BLOB_BYTES,
    EMBEDDING_DIM,
    distances_to,
    embedding_to_blob,
    embeddings_from_blobs,
    thumbnail_embedding,
)
from edgecl.continual.memory.faults import fault_error, is_damage, rebuild_hint
from edgecl.continual.memory.index import WAL_LIMIT_BYTES, DamagedRowError, IndexDB
from edgecl.continual.memory.policies import make_policy, primary_class
from edgecl.continual.memory.quarantine import Quarantined
from edgecl.continual.memory.records import (
    IMAGE_SUFFIX,
    DuplicateSampleError,
    LABEL_SUFFIX,
    MissingSampleError,
    Sample,
    SampleRecord,
    StoredSample,
    check_image,
    check_labels,
    classes_of,
    classes_to_text,
    encode_jpeg,
    file_stem,
    nan_to_none,
    parse_label_file,
    renumber_classes,
)
from edgecl.continual.memory.snapshot import (MemorySnapshot, build_snapshot, mark_in_use,
                                              prune_snapshots)
from edgecl.continual.memory.verify import VerifyReport
from edgecl.data.images import ImageError, read_image
from edgecl.data.labels import labels_to_text
from edgecl.errors import ReplayMemoryError, SampleTooLargeError, StorageError
from edgecl.frames import MAX_TASK_CHARS, LabelOrigin

log = logging.getLogger(__name__)

INDEX_FILE = "index.sqlite"
"""Name of the index inside the memory folder (its presence means a memory exists)."""
COUNTER_FLUSH_EVERY = 64
EMBEDDING_STORE_BATCH = 256
"""Embeddings computed for an older memory are stored this many at a time."""
EMBEDDING_LOG_MIN = 100
"""Computing more missing embeddings than this is logged (start and time taken)."""
MEMORY_CONFIG_KEY = "memory_config"
"""Meta key of the settings the memory was last opened for writing with (``memory.*``)."""
UNHASHED_COPY_DISTANCE = 0.004
"""Thumbnail distance under which a sample of the same file name and size stored without a
content hash counts as the same image: storing as JPEG moved a thumbnail by at most 0.0015 on
hit-uav-dev, while its frames two apart in a flight differ by 0.028 or more."""
DEFAULT_KEEP_SNAPSHOTS = 2
MAX_SOURCE_CHARS = 256
_OVERHEAD_FIXED_BYTES = 512 * 1024
# row text at its bounds (task, source), numbers, the task/class index entries, the thumbnail
# embedding and, for an imported sample, its 32-character content hash with its index entry
_OVERHEAD_PER_SAMPLE_BYTES = 720 + EMBEDDING_BLOB_BYTES
_BLOCK_BYTES = 4096
# An index without a single row may own a few orphans (an add in flight in each process when the
# device lost power during its first adds); more than this means the index itself was lost, and
# the files are the only copy of the samples: repair then refuses instead of deleting them.
MAX_ORPHANS_WITHOUT_ROWS = 4


def _whole_samples(orphans: list[Path]) -> set[str]:
    """The sample ids among orphan files that have both their image and their label file."""
    images = {p.stem for p in orphans if p.suffix == IMAGE_SUFFIX and p.stem.isdigit()}
    return images & {p.stem for p in orphans if p.suffix == LABEL_SUFFIX}


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


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` name the file ``src`` (a hard link; a durable copy where links fail). A file
    already at ``dst`` (left by a write a crash interrupted: no row names it) is replaced.

    Raises:
        OSError: neither could be made.
    """
    Path(dst).unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        atomic.atomic_write_bytes(dst, Path(src).read_bytes(), parents=False)


def _rounded(n_bytes: int) -> int:
    return int(math.ceil(max(1, n_bytes) / _BLOCK_BYTES) * _BLOCK_BYTES)


def estimate_sample_bytes(image: np.ndarray, labels: np.ndarray, jpeg_quality: int = 90) -> int:
    """Bytes a sample would occupy in the memory (its JPEG and label file, rounded to blocks).

    Args:
        image: BGR uint8 (H, W, 3) or grayscale (H, W) array.
        labels: float32 (N, 5) YOLO rows.
        jpeg_quality: JPEG quality 1..100.

    Returns:
        The estimate in bytes (what the byte bound charges on a 4 KiB-block file system).
    """
    blob = encode_jpeg(check_image(image, "sample"), jpeg_quality, "sample")
    text = labels_to_text(check_labels(labels, "sample")).encode("utf-8")
    return _rounded(len(blob)) + _rounded(len(text))


def is_writable(root: Path) -> bool:
    """True when the memory folder and its index may be written here (a read-only mount or a
    copy without write permission is not).

    Args:
        root: the memory folder.
    """
    index = Path(root) / INDEX_FILE
    return os.access(root, os.W_OK) and (not index.exists() or os.access(index, os.W_OK))


def refuse_lost_index(root: Path) -> None:
    """Refuse to create an index beside samples that an earlier index owned.

    The index is created when a memory is first opened, before any sample is written, so sample
    files without an index file (or with an empty one) mean the index was lost: a new one would
    own none of them, and the repairing check would delete them all.

    Args:
        root: the memory folder.

    Raises:
        ReplayMemoryError: the index file is missing or empty and sample files exist.
        OSError: the folder cannot be listed.
    """
    index = Path(root) / INDEX_FILE
    if index.is_file() and index.stat().st_size > 0:
        return
    stems = checks.sample_stems(checks.scan_files(Path(root), set())[0])
    if stems:
        state = "empty" if index.is_file() else "missing"
        raise ReplayMemoryError(
            f"the replay memory {root} holds {len(stems)} samples on disk but its index {index} "
            f"is {state}: nothing was changed; restore the index, or move the folder away to "
            f"start an empty memory; {rebuild_hint(root)}")


def _file_stem_of(source: str) -> str | None:
    """The file name without folder and suffix that a sample's source names (``None`` for a
    camera or stream URI, or an empty name)."""
    if "://" in source:
        return None
    stem = Path(source.replace("\\", "/")).stem
    return stem or None


def _short_source(source: object) -> str:
    """A sample's source as UTF-8 text of bounded length: a file name that is not UTF-8 (a
    Windows zip unpacked on Linux: ``caf\\xe9.jpg``, held by Python as a lone surrogate) keeps
    its bytes as ``\\xe9`` escapes (SQLite refuses lone surrogates)."""
    text = str(source)
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name decodes to
        raw = text.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    if len(text) <= MAX_SOURCE_CHARS:
        return text
    return "..." + text[-(MAX_SOURCE_CHARS - 3):]


def holdout_slots(cfg: MemoryConfig) -> int:
    """Slots a replay memory with these settings reserves for its held-out slice:
    ``floor(capacity * holdout_fraction)``, at least 1 and at most ``capacity - 1`` (0 with no
    held-out fraction); the rest are training slots."""
    if cfg.holdout_fraction <= 0:
        return 0
    return min(int(cfg.capacity) - 1, max(1, int(int(cfg.capacity) * cfg.holdout_fraction)))


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
                 keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS, read_only: bool = False,
                 record_settings: bool = False):
        """Open or create a memory.

        Args:
            root: the memory folder (``STATE/memory``).
            cfg: bounds, policy, JPEG quality, held-out fraction, seed.
            names: class id -> name, stored in the index when given.
            verify_on_open: run a quick :meth:`verify` (repairing) before use.
            keep_snapshots: how many snapshots to keep on disk.
            read_only: read an existing memory without writing anything beside it (a state
                directory pulled from a device, a read-only mount): the index is read from a
                private copy, the check on open only reports, and :meth:`add`,
                :meth:`snapshot`, :meth:`set_class_names` and a repairing :meth:`verify` raise
                :class:`StorageError`.
            record_settings: keep ``cfg`` in the index as the device's settings (the runtime
                does; see :func:`recorded_memory_config`). Tools never do: a command given
                other settings for one look must not change what the next tool adopts.

        Raises:
            StorageError: the folder cannot be written (read-only, disk full), or with
                ``read_only``, cannot be read.
            ReplayMemoryError: unusable configuration or index, or with ``read_only``, no index.
            ConfigError: unknown policy name.
        """
        self.root = Path(root)
        self.cfg = cfg or MemoryConfig()
        _check_config(self.cfg)
        self.policy = make_policy(self.cfg.policy, self.cfg.task_budget_pct)
        self.keep_snapshots = max(1, int(keep_snapshots))
        self.read_only = bool(read_only)
        self.record_settings = bool(record_settings)
        self._lock = threading.RLock()
        self.index_generation = 0
        """How many times the index was reopened because it was replaced or deleted."""
        self.evicted = 0
        """Samples that this object's adds evicted to keep the memory's bounds (capacity, a
        task's share of the held-out slots, byte budget), since it was opened."""
        self.pseudo_replaced = 0
        """Pseudo-labelled samples that this object's adds replaced with the same image under
        verified labels (an operator's answer, an import), since it was opened."""
        self._home_identity: tuple[int, int] | None = None  # the folder holding the memory
        self._open_index(names, verify_on_open)

    def _open_index(self, names: dict[int, str] | None, verify: bool) -> None:
        """Open the index (creating the folders), set up admission and check the samples."""
        self._unhashed = None  # file stem -> samples stored without a content hash
        self._unlinked: list[int] = []  # removed ids whose files went after their commit
        if self.read_only:
            if not (self.root / INDEX_FILE).is_file():
                raise ReplayMemoryError(f"no replay memory at {self.root} (no {INDEX_FILE})")
            with self._faults(f"cannot open the replay memory {self.root}"):
                refuse_lost_index(self.root)  # an empty index beside samples is damage here too
        else:
            with self._faults(f"cannot open the replay memory {self.root}"):
                if self._home_identity is None:  # the first open: the memory's home is made
                    self.root.mkdir(parents=True, exist_ok=True)
                    self._home_identity = atomic.path_identity(self.root.parent)
                for sub in ("images", "labels", "snapshots"):
                    atomic.make_dirs_in(self.root / sub, self.root.parent, self._home_identity)
            if not os.access(self.root, os.W_OK):
                raise StorageError(f"cannot open the replay memory {self.root}: the folder is not "
                                   f"writable (read-only file system or permissions)")
            with self._faults(f"cannot open the replay memory {self.root}"):
                refuse_lost_index(self.root)
        self._db = IndexDB(self.root / INDEX_FILE, read_only=self.read_only)
        self._index_id = None if self.read_only else atomic.path_identity(self.root / INDEX_FILE)
        if self.record_settings and not self.read_only:
            self._record_config()
        try:
            with self._faults(f"cannot open the replay memory {self.root}"):
                self._admission = Admission(
                    self._db, self.policy, train_capacity=self.train_capacity,
                    holdout_capacity=self.holdout_capacity,
                    holdout_fraction=self.cfg.holdout_fraction,
                    budget_bytes=self.sample_budget_bytes, seed=self.cfg.seed,
                    holdout_block_s=self.cfg.holdout_block_s)
            if names and not self.read_only:
                self.set_class_names(names)
            over = self.bound_problems() if verify and not self.read_only else []
            self.last_verify = (self.verify(repair=not self.read_only) if verify
                                else None)
            report = self.last_verify
            if report is not None and (report.missing_rows or report.corrupt_rows):
                log.warning("replay memory %s checked on open and repaired: %s", self.root,
                            report.summary())
            elif report is not None and report.bound_evictions:
                # a lowered memory.capacity or max_bytes, a raised holdout_fraction: the
                # user's choice, said plainly with the bound that evicted
                log.warning("replay memory %s: %d sample(s) evicted at start (%s; pseudo-"
                            "labelled ones first, operator answers last); %d kept", self.root,
                            len(report.bound_evictions),
                            "; ".join(over) or "over the memory's bounds", self._db.count())
                self._release_evicted_files()
        except BaseException:
            self._db.close()
            raise

    def _release_evicted_files(self) -> None:
        """After lowered bounds evicted samples at open: a snapshot of what is kept, and every
        older snapshot no live process reads pruned, so the evicted samples' files leave the
        disk now (before, the snapshots of past rounds held their hard links for two more
        rounds: about 5 x a lowered ``max_bytes`` stayed on a full card). Best effort: a
        failure is warned and the snapshots stay as they were."""
        snapshots = self.root / "snapshots"
        if self.read_only or not any(p.is_dir() and not p.name.startswith(".")
                                     for p in snapshots.iterdir()):
            return
        try:
            with self._lock:
                with self._faults("cannot take a memory snapshot"), self._db.write():
                    snap = build_snapshot(self.root, self._db.records(), self.class_names())
                prune_snapshots(self.root, 1, protect=snap.snapshot_id)
        except (StorageError, ReplayMemoryError, OSError) as exc:
            log.warning("replay memory %s: the evicted samples' files stay on disk until the "
                        "next rounds prune their snapshots (%s)", self.root, exc)

    def _record_config(self) -> None:
        """Keep the settings this memory is opened with in its index (see
        :func:`recorded_memory_config`: a tool run without the device's config then uses them
        instead of evicting down to its own defaults). Best effort: a full disk keeps the old
        record."""
        settings = dataclasses.asdict(self.cfg)
        try:
            if self._db.get_meta(MEMORY_CONFIG_KEY) != settings:
                self._db.set_meta(MEMORY_CONFIG_KEY, settings)
        except (OSError, sqlite3.Error, ReplayMemoryError) as exc:
            log.debug("memory %s: settings not recorded (%s)", self.root, exc)

    def _follow_replaced_index(self) -> None:
        """Reopen the index when the file this process opened was replaced or deleted since
        (the memory folder moved away, restored from a copy or deleted while the runtime
        runs), as a restart would: samples then go to the memory now in the folder (a new,
        empty one when it was deleted), not to an index no other process sees, whose samples
        would be lost and whose files would make the next start refuse the folder. One
        warning says so; the class names are kept when the memory now there has none.

        Raises:
            StorageError: the memory now in the folder cannot be opened (samples without
                their index, a read-only folder): the index opened before stays open for
                reading, and the next call tries again (the caller says so: storing pauses).
        """
        if self.read_only or atomic.path_identity(self.root / INDEX_FILE) == self._index_id:
            return
        with self._lock:
            now = atomic.path_identity(self.root / INDEX_FILE)
            if now == self._index_id:
                return
            self._sample_dirs()  # nothing opens at the old path when the memory's home went
            names = self.class_names()
            with contextlib.suppress(StorageError, ReplayMemoryError):
                self.flush()  # the old index's pending stream counters, best effort
            old = (self._db, self._admission, self._index_id, self.last_verify)
            try:
                self._open_index(None, verify=self.last_verify is not None)
            except ReplayMemoryError as exc:  # StorageError included
                self._db, self._admission, self._index_id, self.last_verify = old
                raise StorageError(f"the memory index was replaced or deleted while open, and "
                                   f"the folder cannot be opened again: {exc}") from None
            old[0].close()
            self.index_generation += 1
            with self._faults("cannot read the memory index"):
                held = self._db.count()
            log.warning("replay memory %s: its index was replaced or deleted while this process "
                        "had it open; samples now go to the memory there (%d samples)",
                        self.root, held)
            if names and not self.class_names():
                self.set_class_names(names)

    def _sample_dirs(self) -> None:
        """Make the sample folders again where they were deleted, only inside the folder that
        held the memory when it was opened (:func:`edgecl.atomic.make_dirs_in`): the sample
        files are then written without creating folders, so a state directory moved or
        deleted under a running store never grows again at the old path with files that the
        index (moved with it) names.

        Raises:
            StorageError: the folder holding the memory was moved, replaced or deleted.
            OSError: a sample folder cannot be made.
        """
        try:
            for sub in ("images", "labels"):
                atomic.make_dirs_in(self.root / sub, self.root.parent, self._home_identity)
        except FileNotFoundError:
            raise StorageError(f"the folder holding the replay memory, {self.root.parent}, was "
                               f"moved, replaced or deleted since it was opened: nothing is "
                               f"stored at the old path") from None

    @contextlib.contextmanager
    def _faults(self, what: str, note: str = "") -> Iterator[None]:
        """Turn OSError / sqlite3 errors raised inside into one-line memory errors; a damaged
        index (SQLite: malformed) names the command that rebuilds it."""
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            if not note and is_damage(exc):
                note = rebuild_hint(self.root)
            raise fault_error(exc, what, self.root, note) from None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """The memory's lock, held while the index is read; a fault is one line
        (:meth:`_faults`): before, a damaged page gave an internal error."""
        with self._lock, self._faults("cannot read the replay memory index"):
            yield

    def _refuse_if_read_only(self, what: str) -> None:
        """Raise :class:`StorageError` naming ``what`` when the memory was opened read-only."""
        if self.read_only:
            raise StorageError(f"{what}: the replay memory {self.root} is open read-only "
                               f"(a folder that may not be written here)")

    @property
    def capacity(self) -> int:
        """Maximum number of samples (training + held-out)."""
        return int(self.cfg.capacity)

    @property
    def holdout_capacity(self) -> int:
        """Slots reserved for the held-out slice."""
        return holdout_slots(self.cfg)

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
        with self._reading():
            try:
                names = self._db.get_meta("names")
                return {int(k): str(v) for k, v in names.items()} if names else None
            except (ReplayMemoryError, AttributeError, TypeError, ValueError) as exc:
                log.warning("memory index %s: the stored class names are damaged and are "
                            "ignored (%s)", self._db.path, exc)
                return None

    def set_class_names(self, names: dict[int, str]) -> None:
        """Store class names (they also bound the class ids accepted by :meth:`add`).

        Raises:
            StorageError: the index cannot be written.
        """
        self._refuse_if_read_only("cannot store class names")
        clean = {str(int(k)): str(v) for k, v in names.items()}
        with self._lock, self._faults("cannot store class names in the memory index"):
            self._db.set_meta("names", clean)

    def sync_class_names(self, names: dict[int, str]) -> None:
        """Store the class registry's names when the memory's differ (a class taught or renamed
        since), so that :meth:`add` accepts the new ids and exports name every class.

        Args:
            names: class id -> name (the device's class registry).

        Raises:
            StorageError: the index cannot be written.
        """
        if names and self.class_names() != {int(k): str(v) for k, v in names.items()}:
            self.set_class_names(names)

    def _known_nc(self) -> int | None:
        names = self.class_names()
        return max(names) + 1 if names else None

    def add(self, sample: Sample) -> int | None:
        """Offer a labelled sample.

        Args:
            sample: image, YOLO labels, task, source, time, origin of the labels.

        Returns:
            The new sample id, or None when the policy (or the held-out quota) declines it.

        Raises:
            StorageError: full disk or unwritable folder; nothing is half-stored and nothing
                stored before is lost, the memory stays usable.
            DuplicateSampleError: a sample with the same ``content_hash`` is stored (checked
                inside the write transaction, so two importers cannot both store it), unless
                it holds pseudo-labels and this one's labels are verified: then this one
                replaces it in the same transaction (:func:`replaces`).
            ReplayMemoryError: empty or malformed image, bad task, origin or content hash,
                sample larger than the byte budget, index failure (nothing stored is lost).
            LabelError: malformed label rows or class out of range.

        An index replaced or deleted since this process opened it (the memory folder moved
        away, restored from a copy, deleted) is reopened first, with one warning, so the
        sample goes to the memory now in the folder; when that cannot be opened (samples
        without their index) this raises :class:`StorageError`.
        """
        source = _short_source(sample.source or "<unknown source>")
        where = f"sample from {source} (task {str(sample.task)[:MAX_TASK_CHARS]!r})"
        self._refuse_if_read_only(f"cannot store {where}")
        self._follow_replaced_index()
        if not isinstance(sample.task, str) or not sample.task:
            raise ReplayMemoryError(f"{where}: task must be a non-empty string")
        if len(sample.task) > MAX_TASK_CHARS:
            raise ReplayMemoryError(f"{where}: task name has {len(sample.task)} characters, "
                                    f"at most {MAX_TASK_CHARS} are allowed")
        try:
            origin = LabelOrigin(sample.origin)
        except ValueError:
            raise ReplayMemoryError(f"{where}: unknown label origin {sample.origin!r} (choose "
                                    f"from {', '.join(o.value for o in LabelOrigin)})") from None
        digest = sample.content_hash
        if digest is not None and (not isinstance(digest, str)
                                   or not re.fullmatch(r"[0-9a-f]{8,64}", digest)):
            raise ReplayMemoryError(f"{where}: content hash must be 8-64 lower-case hex digits, "
                                    f"got {str(digest)[:70]!r}")
        image = check_image(sample.image, where)
        labels = check_labels(sample.labels, where, self._known_nc())
        classes = classes_of(labels)
        with self._lock:
            replacing = False
            if digest is not None:  # a copy is refused before it counts as an offered frame
                with self._faults("cannot read the memory index"):
                    held = self._db.find_content(digest)
                    replacing = held is not None and self._replaces(held, origin)
                    if held is None:
                        held = self._unhashed_copy(_short_source(sample.source), image)
                if held is not None and not replacing:
                    raise DuplicateSampleError(f"{where}: already in memory as sample {held} "
                                               f"(same image content)", held)
            counted = dict(self._admission.counters), dict(self._admission.pending)
            decision = self._admission.decide(sample.task, classes, origin, sample.ts_s,
                                              replacing=replacing,
                                              planned=sample.planned_held_out)
            if decision is None:
                self._flush_if_due()
                return None
            try:
                blob = encode_jpeg(image, self.cfg.jpeg_quality, where)
                text = labels_to_text(labels).encode("utf-8")
                self._check_fits(_rounded(len(blob)) + _rounded(len(text)), where)
                row = {"task": sample.task, "classes": classes_to_text(classes),
                       "primary_class": decision.item.primary_class,
                       "source": _short_source(sample.source),
                       "ts_s": float(sample.ts_s), "held_out": int(decision.held_out),
                       "width": int(image.shape[1]), "height": int(image.shape[0]),
                       "origin": origin.value, "image_bytes": len(blob), "content_hash": digest,
                       "embedding": embedding_to_blob(thumbnail_embedding(image))}
                return self._store(decision, blob, text, row, where)
            except BaseException:
                # not stored (a full disk, an image too large, a copy another process stored
                # since the check above): not an offered frame either. Before, a full disk
                # counted it, and the import run again once there was room drew another
                # held-out slice (3 frames instead of 8 of the same folder); two imports of
                # one folder counted 64 "seen" frames for its 40 images
                self._admission.counters, self._admission.pending = counted
                raise

    def _unhashed_copy(self, source: str, image: np.ndarray) -> int | None:
        """A human-labelled sample of the same image file, size and picture stored without a
        content hash (by an older release, which kept none): its id, so that importing a folder
        again after an upgrade does not store each image twice.

        A stored JPEG cannot give the original pixels' hash, so a sample counts as the same
        image when its source names the same file (the same name without folder and suffix:
        an import records the path, a ``dir://`` stream the name) and its thumbnail lies within
        :data:`UNHASHED_COPY_DISTANCE` (a small object barely moves a thumbnail, so the picture
        alone would not do). Frames of a camera or a stream URI are never matched. The view of
        such samples is read once per open memory (thumbnails computed where missing, once).
        """
        stem = _file_stem_of(source)
        if stem is None:
            return None
        if self._unhashed is None:
            rows = self._db.unhashed_samples()
            views: dict[str, list[tuple[int, int, int, np.ndarray]]] = {}
            if rows:
                ids, matrix = self.embeddings()
                held = dict(zip(ids.tolist(), matrix))
                for sample_id, src, width, height in rows:
                    key = _file_stem_of(src)
                    if key is not None and sample_id in held:
                        views.setdefault(key, []).append((sample_id, width, height,
                                                          held[sample_id]))
            self._unhashed = views
        same_size = [(sample_id, stored) for sample_id, width, height, stored
                     in self._unhashed.get(stem, ()) if (width, height) == image.shape[1::-1]]
        if not same_size:
            return None
        emb = thumbnail_embedding(image)
        for sample_id, stored in same_size:
            near = distances_to(stored[None, :], emb)[0]
            if near < UNHASHED_COPY_DISTANCE and self._db.exists(sample_id):
                return sample_id
        return None

    def evicted_before(self, digest: str | None) -> bool:
        """Whether this memory's bounds evicted a sample of this content hash (the newest
        :data:`~edgecl.continual.memory.index.EVICTED_KEPT` evictions are remembered): a
        stream that offers the image again (a looping recording larger than the memory) is
        told so, rather than storing it as a new sample, which started a round on each pass
        and could hold out a frame a model had trained on.

        Args:
            digest: a content hash (``None`` or empty: unknown, False).
        """
        if not digest:
            return False
        with self._lock, self._faults("cannot read the memory index"):
            return self._db.was_evicted(digest)

    def held_content(self, digest: str | None, origin: LabelOrigin) -> int | None:
        """The id of a stored sample with this content hash that a new sample of ``origin``
        would not replace (:meth:`add` refuses the new one), or None.

        Args:
            digest: a content hash (``None`` or empty: unknown, nothing is held).
            origin: the new sample's label origin.

        Returns:
            The held sample's id, or None when none is stored or the new one would replace it.
        """
        if not digest:
            return None
        with self._lock, self._faults("cannot read the memory index"):
            held = self._db.find_content(digest)
            if held is None or self._replaces(held, origin):
                return None
            return held

    def _replaces(self, held: int, origin: LabelOrigin) -> bool:
        """Whether a sample of ``origin`` replaces the stored copy ``held`` of its image (under
        the memory's lock; see :func:`replaces`)."""
        records = self._db.records(ids=[held])
        return bool(records) and replaces(LabelOrigin(origin), records[0].origin)

    def find_content(self, digest: str) -> int | None:
        """The id of the stored sample with this content hash (see :class:`Sample`), or None.

        Args:
            digest: a content hash (:func:`edgecl.data.images.content_hash`).

        Returns:
            The sample id, or None when no stored sample has it.
        """
        with self._lock, self._faults("cannot read the memory index"):
            return self._db.find_content(digest)

    def relabel(self, sample_id: int, labels: np.ndarray,
                origin: LabelOrigin | None = LabelOrigin.OPERATOR) -> int:
        """Replace a stored sample's labels (a person corrects an answer or an import).

        The image, task, source, time, content hash and held-out flag stay; the sample gets a
        new id, so the learner counts it as new and the next round learns the corrected boxes
        (a held-out sample stays held out: its image was never trained on). Per-sample replay
        statistics (recall, loss, times replayed) start again. Crash-safe: the new files are
        written before the index changes in one transaction; a kill leaves either sample,
        never both, and ``verify`` removes files no row names.

        Args:
            sample_id: the stored sample.
            labels: ``(N, 5)`` float YOLO rows ``class cx cy w h`` (normalised); ``N = 0``
                marks the image as showing nothing to label.
            origin: the corrected labels' origin (a person: ``operator``); None keeps the
                sample's own (a class merged into another: the same labels, renumbered).

        Returns:
            The sample's new id.

        Raises:
            ReplayMemoryError: no such sample (evicted or removed), or a pseudo-label origin.
            LabelError: malformed label rows or class out of range.
            StorageError: full disk or unwritable folder (the sample is kept as it was).
        """
        origin = None if origin is None else LabelOrigin(origin)
        if origin is LabelOrigin.PSEUDO:
            raise ReplayMemoryError(f"cannot relabel sample {int(sample_id)} of {self.root}: "
                                    f"corrected labels come from a person or a labelled file, "
                                    f"not from the model")
        where = f"sample {int(sample_id)} of {self.root}"
        labels = check_labels(labels, where, self._known_nc())
        return self._relabel(sample_id, lambda read_stored: labels, origin)

    def remap_classes(self, sample_id: int, mapping: dict[int, int]) -> int | None:
        """Renumber a stored sample's classes (a class merged into another), reading its labels
        inside the write transaction: a correction or a merge in another process between a
        caller's look-up and this write is seen, not overwritten. A box given under both ids
        is kept once; image, origin and held-out slot stay.

        Args:
            sample_id: the stored sample.
            mapping: class id -> the id it becomes.

        Returns:
            The sample's new id; ``sample_id`` itself when it holds none of the mapped classes
            (nothing written); None when it is no longer stored (relabelled under a new id or
            removed meanwhile: the caller looks again).

        Raises:
            LabelError: its stored labels cannot be parsed.
            StorageError: full disk or unwritable folder (the sample is kept as it was).
        """
        wanted = {int(k): int(v) for k, v in mapping.items()}
        try:
            return self._relabel(sample_id, lambda read_stored: renumber_classes(read_stored(),
                                                                                 wanted), None)
        except MissingSampleError:
            return None

    def _relabel(self, sample_id: int, make_labels, origin: LabelOrigin | None) -> int:
        """The body of :meth:`relabel` and :meth:`remap_classes`: ``make_labels(read_stored)``
        gives the new rows inside the write transaction (None: keep the sample as it is);
        ``read_stored()`` parses the sample's stored rows."""
        where = f"sample {int(sample_id)} of {self.root}"
        self._refuse_if_read_only(f"cannot relabel {where}")
        self._follow_replaced_index()
        written: list[Path] = []
        at = self._db.path
        with self._lock:
            try:
                with self._db.write():
                    row = self._db.row_values(sample_id)
                    if row is None:
                        raise MissingSampleError(f"memory {self.root} has no sample "
                                                 f"{int(sample_id)} (evicted or removed)")
                    labels = make_labels(lambda: parse_label_file(self.label_path(sample_id)))
                    if labels is None:
                        return int(sample_id)
                    labels = check_labels(labels, where, self._known_nc())
                    classes = classes_of(labels)
                    text = labels_to_text(labels).encode("utf-8")
                    new_id = self._db.next_id()
                    self._sample_dirs()
                    image = self.image_path(new_id)
                    written.append(image)
                    at = image
                    _link_or_copy(self.image_path(sample_id), image)
                    written.append(self.label_path(new_id))
                    at = self.label_path(new_id)
                    atomic.atomic_write_bytes(self.label_path(new_id), text, parents=False)
                    at = self._db.path
                    self._db.delete(sample_id)
                    self._note_unlinking([int(sample_id)])
                    counts = self._db.group_counts("primary_class", held_out=False)
                    self._db.insert({
                        **row, "id": new_id, "classes": classes_to_text(classes),
                        "primary_class": primary_class(classes, counts),
                        "origin": row["origin"] if origin is None else origin.value,
                        "bytes": sum(disk_bytes(p) for p in written),
                        "recall_baseline": None, "last_recall": None, "last_loss": None,
                        "times_replayed": 0})
            except (OSError, sqlite3.Error) as exc:
                self._unlink(written)
                raise fault_error(exc, f"cannot relabel {where}", at,
                                  "the sample is kept as it was") from None
            except BaseException:
                self._unlink(written)
                raise
            self._unlinked = [] if self._unlink_samples([int(sample_id)]) else [int(sample_id)]
            self._unhashed = None
        log.debug("replay memory: sample %d relabelled (%s) as sample %d", sample_id,
                  "origin kept" if origin is None else origin.value, new_id)
        return new_id

    def remove(self, ids: list[int]) -> list[int]:
        """Delete samples for good (a withdrawn answer, a frame that must not be kept).

        All or nothing: an unknown id removes none. Snapshots built before (a round's
        training view) keep their own links to the files until they are pruned, so a round
        under way is not disturbed; :meth:`snapshot_copies` counts them.

        Args:
            ids: sample ids.

        Returns:
            The removed ids, in the order given (each once).

        Raises:
            ReplayMemoryError: an id is not stored (nothing is removed).
            StorageError: the index cannot be written (nothing is removed).
        """
        wanted = list(dict.fromkeys(int(i) for i in ids))
        self._refuse_if_read_only(f"cannot remove samples {wanted[:5]}")
        self._follow_replaced_index()
        with self._lock:
            with self._faults("cannot remove samples from the memory index",
                              "nothing was removed"):
                with self._db.write():
                    missing = [i for i in wanted if not 0 < i < 2**63 or not self._db.exists(i)]
                    if missing:
                        many = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                        raise MissingSampleError(f"memory {self.root} has no sample id(s) "
                                                 f"{missing[:5]}{many} (evicted or removed); "
                                                 f"nothing was removed")
                    for sample_id in wanted:
                        self._db.delete(sample_id)
                    # a kill before the unlinks below left whole samples no row lists; more
                    # than 4 stopped the memory from opening (taken for a lost index)
                    self._note_unlinking(wanted)
            failed = self._unlink_samples(wanted)
            if not failed:
                self._forget_unlinking(wanted)
            self._unhashed = None
        for problem in failed:
            log.warning("replay memory: removed sample's file left behind (verify removes "
                        "it): %s", problem)
        return wanted

    def snapshot_copies(self, sample_id: int) -> int:
        """How many snapshots (training views kept for rounds) still hold this sample's image."""
        name = self.image_path(sample_id).name
        root = self.root / "snapshots"
        with contextlib.suppress(OSError):
            return sum(1 for d in root.iterdir() if (d / "images" / name).exists())
        return 0

    def _check_fits(self, n_bytes: int, where: str) -> None:
        if n_bytes > self.sample_budget_bytes:
            raise SampleTooLargeError(
                f"{where}: needs {n_bytes} bytes on disk, more than the memory's sample budget "
                f"of {self.sample_budget_bytes} bytes (memory.max_bytes={self.cfg.max_bytes})")

    def _store(self, decision: Decision, blob: bytes, text: bytes, row: dict, where: str) -> int:
        written: list[Path] = []
        replaced: list[int] = []
        at = self._db.path  # what the disk refused, when the error names no file
        try:
            with self._db.write():
                if row.get("content_hash"):
                    held = self._db.find_content(row["content_hash"])
                    if held is not None:
                        if not self._replaces(held, row["origin"]):
                            raise DuplicateSampleError(f"{where}: already in memory as sample "
                                                       f"{held} (same image content)", held)
                        self._db.delete(held)  # before make_room: its slot is the new one's
                        replaced.append(held)
                new_id = self._db.next_id()
                self._sample_dirs()
                for path, data in ((self.image_path(new_id), blob), (self.label_path(new_id), text)):
                    written.append(path)
                    at = path
                    atomic.atomic_write_bytes(path, data, parents=False)
                at = self._db.path
                n_bytes = sum(disk_bytes(p) for p in written)
                self._check_fits(n_bytes, where)
                victims = self._admission.make_room(decision, n_bytes)
                self._db.insert({"id": new_id, **row, "bytes": n_bytes})
                self._db.add_counters(self._admission.pending)
                if victims or replaced or self._unlinked:
                    self._note_unlinking(victims + replaced)
        except (OSError, sqlite3.Error) as exc:
            self._unlink(written)
            raise fault_error(exc, f"cannot store {where}", at,
                              "nothing stored was lost") from None
        except BaseException:
            self._unlink(written)
            raise
        self._admission.pending = {}
        self.evicted += len(victims)
        self.pseudo_replaced += len(replaced)
        # forgotten in the next write that records removals (one commit, not one more each)
        self._unlinked = [] if self._unlink_samples(victims + replaced) else victims + replaced
        if replaced:
            log.info("replay memory: sample %d (pseudo-labels) replaced by sample %d, the same "
                     "image with verified labels (%s)", replaced[0], new_id, row["origin"])
        return new_id

    def _unlink(self, paths: list[Path]) -> list[str]:
        failed = []
        for path in paths:
            try:
                Path(path).unlink(missing_ok=True)
            except OSError as exc:
                failed.append(f"{path}: {exc.strerror or exc}")
        return failed

    def _note_unlinking(self, ids: list[int]) -> None:
        """Inside the write transaction that deletes the rows of ``ids``: record them as
        removals under way (:meth:`~.index.MemoryIndex.mark_unlinking`), and forget those of
        the previous store or relabel, whose files went after its commit."""
        if self._unlinked:
            self._db.clear_unlinking(self._unlinked)
        self._db.mark_unlinking(ids)

    def _forget_unlinking(self, ids: list[int]) -> None:
        """Drop ids whose files are gone from the index's record of removals under way; a
        failure only leaves them recorded (the next check forgets them)."""
        try:
            with self._db.write():
                self._db.clear_unlinking(ids)
        except sqlite3.Error as exc:
            log.debug("replay memory: removals under way not updated (%s)", exc)

    def _unlink_samples(self, ids: list[int]) -> list[str]:
        paths = [p for i in ids for p in (self.image_path(i), self.label_path(i))]
        return self._unlink(paths)

    def _flush_if_due(self) -> None:
        if self._admission.pending.get("frames/all", 0) >= COUNTER_FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Commit pending stream counters (declined offers).

        Raises:
            StorageError: the index cannot be written (the counters stay pending).
        """
        with self._lock:
            if self._admission.pending:
                with self._faults("cannot update the replay memory's index (its count of the "
                                  "frames it was offered)"):
                    with self._db.write():
                        self._db.add_counters(self._admission.pending)
                self._admission.pending = {}

    def close(self) -> None:
        """Flush counters and close the index (the index is closed even when the flush fails).

        Raises:
            StorageError: the counters could not be written (at most
                :data:`COUNTER_FLUSH_EVERY` declined offers are forgotten).
        """
        with self._lock:
            try:
                self.flush()
            finally:
                self._db.close()

    def __enter__(self) -> "ReplayMemory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        with self._reading():
            return self._db.count()

    def reserve_import_draws(self, task: str, units: int, plan_key: str | None = None) -> int:
        """Reserve the next ``units`` positions of ``task``'s imported units (blocks of
        consecutive frames, single images) in the held-out draw
        (:func:`~edgecl.continual.memory.admission.plan_import_held_out`), so that imports of
        a few frames each go on where the last one stopped (each restarted at 0, and folders
        of 5 consecutive frames never held one out). Committed with the next stored sample.

        Args:
            task: the import's task.
            units: how many units it draws for.
            plan_key: what names the import's list of frames (a digest of it): the same list
                imported again (after a full disk stopped it) gets the positions it got the
                first time, so its held-out slice is the one the import would have drawn
                uninterrupted (before, 3 held-out images of a folder instead of 8).

        Returns:
            The first reserved position.
        """
        with self._lock:
            plan = f"import_plan/{plan_key}" if plan_key else None
            if plan is not None and plan in self._admission.counters:
                return int(self._admission.counters[plan])
            first = self._admission.reserve(f"import_units/task:{task}", int(units))
            if plan is not None:  # a new counter, so adding ``first`` to it sets it
                self._admission.reserve(plan, first)
            return first

    def ids(self, held_out: bool | None = None, task: str | None = None) -> list[int]:
        """Stored ids (ascending), filtered by held-out flag and task."""
        with self._reading():
            return self._db.ids(held_out=held_out, task=task)

    def records(self, ids: list[int] | None = None, held_out: bool | None = None,
                task: str | None = None) -> list[SampleRecord]:
        """Index rows: of ``ids`` (order kept, unknown skipped) or of all matching rows."""
        with self._reading():
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
            raise MissingSampleError(f"memory {self.root} has no sample id(s) {missing[:5]} "
                                     f"(evicted? train from a snapshot)")
        return [StoredSample.from_record(r, self.image_path(r.id), self.label_path(r.id),
                                         parse_label_file(self.label_path(r.id)))
                for r in records]

    def change_signature(self) -> tuple[int, int]:
        """``(samples stored, last id ever given)``: changes with every add, eviction or
        removal, whichever process made it (a cheap check before re-reading the memory). An
        index replaced or deleted since it was opened is reopened first (see :meth:`add`);
        when the memory now there cannot be opened, the index open is read.

        Raises:
            StorageError / ReplayMemoryError: the index cannot be read.
        """
        with contextlib.suppress(StorageError):  # not reopened: read the index open (add says)
            self._follow_replaced_index()
        with self._lock, self._faults("cannot read the memory index"):
            return self._db.change_signature()

    def embeddings(self, after_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The thumbnail embedding of every stored sample, held-out ones included
        (:mod:`~edgecl.continual.memory.embedding`; the ``novel`` selection policy compares
        camera frames with them), or of those stored after a given id (ids only grow, so a
        caller that keeps what it read before reads only the new samples).

        A sample stored before embeddings were kept (or whose stored value is damaged: another
        length, text, a value that is not finite or outside -1..1) gets one computed from its
        image file, stored (in batches, so an interrupted start keeps what it made) when the
        memory may be written, so it is computed once; a storage fault while storing it is
        logged once and the values are still returned. A sample whose image cannot be read is
        left out, with one warning (``memory verify`` names it).

        Args:
            after_id: only samples with a larger id (0: every sample).

        Returns:
            ``(ids, matrix)``: int64 (N,) ascending and float32 (N, 256).

        Raises:
            StorageError / ReplayMemoryError: the index cannot be read.
        """
        with self._lock, self._faults("cannot read the memory index"), self._db.read():
            n = self._db.count_after(after_id)
            ids = np.zeros(n, np.int64)
            matrix = np.zeros((n, EMBEDDING_DIM), np.float32)
            valid = np.zeros(n, bool)
            at = 0
            for rows in self._db.embeddings(after_id):  # one read transaction: n rows at most
                stop = at + len(rows)
                ids[at:stop] = [sample_id for sample_id, _ in rows]
                matrix[at:stop], valid[at:stop] = embeddings_from_blobs([b for _, b in rows])
                at = stop
        if not valid.all():
            missing = np.flatnonzero(~valid)
            computed = self._compute_embeddings([int(ids[k]) for k in missing])
            for k in missing:
                emb = computed.get(int(ids[k]))
                if emb is not None:
                    matrix[k], valid[k] = emb, True
            if not valid.all():
                ids, matrix = ids[valid], matrix[valid]
        return ids, matrix

    def _compute_embeddings(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Compute (and, when the memory may be written, store) the embeddings of samples
        from their image files; an image evicted meanwhile is skipped, one that cannot be read
        is counted and named in one warning."""
        many = len(ids) > EMBEDDING_LOG_MIN
        if many:
            log.info("memory %s: computing the thumbnail embeddings of %d stored samples (once)",
                     self.root, len(ids))
        started = time.monotonic()
        computed: dict[int, np.ndarray] = {}
        unreadable: list[str] = []
        batch: list[tuple[int, bytes]] = []
        store = not self.read_only
        for sample_id in ids:
            path = self.image_path(sample_id)
            try:
                emb = thumbnail_embedding(read_image(path))
            except ImageError as exc:
                if path.exists():  # a missing file was evicted meanwhile: nothing to say
                    unreadable.append(str(exc))
                continue
            computed[sample_id] = emb
            batch.append((sample_id, embedding_to_blob(emb)))
            if store and len(batch) >= EMBEDDING_STORE_BATCH:
                store, batch = self._store_embeddings(batch), []
        if store and batch:
            self._store_embeddings(batch)
        if many:
            log.info("memory %s: %d thumbnail embeddings computed in %.1f s", self.root,
                     len(computed), time.monotonic() - started)
        if unreadable:
            log.warning("memory %s: %d stored image(s) cannot be read, novelty leaves them out "
                        "(`edgecl memory verify` names them); first: %s", self.root,
                        len(unreadable), unreadable[0])
        return computed

    def _store_embeddings(self, values: list[tuple[int, bytes]]) -> bool:
        """Store computed embeddings; a storage fault is logged and returns False."""
        try:
            with self._lock, self._faults("cannot store sample embeddings"):
                self._db.set_embeddings(values)
        except (StorageError, ReplayMemoryError) as exc:
            log.warning("%s; they are computed again next time", exc)
            return False
        return True

    def image_paths(self, ids: list[int]) -> list[Path]:
        """The memory's image files of the given ids."""
        return [self.image_path(i) for i in ids]

    def snapshot(self) -> MemorySnapshot:
        """Take a consistent, immutable snapshot (hard links; older ones beyond
        ``keep_snapshots`` are pruned).

        Raises:
            StorageError: the disk refused the snapshot (the memory is unchanged).
            ReplayMemoryError: a sample file is missing (run verify).
        """
        self._refuse_if_read_only("cannot take a memory snapshot")
        with self._lock:
            with self._faults("cannot take a memory snapshot"), self._db.write():
                snap = build_snapshot(self.root, self._db.records(), self.class_names())
            mark_in_use(self.root, snap.snapshot_id)
            prune_snapshots(self.root, self.keep_snapshots, protect=snap.snapshot_id)
        return snap

    def set_recall_baseline(self, ids: list[int], values: list[float]) -> int:
        """Store each sample's recall right after its task was learnt (FAR's baseline).

        Args:
            ids: sample ids (evicted ones are skipped).
            values: one value per id (NaN is stored as NULL).

        Returns:
            Rows updated.

        Raises:
            ReplayMemoryError: ``ids`` and ``values`` differ in length.
            StorageError: the index cannot be written.
        """
        return self._update("recall_baseline", ids, values)

    def update_recall(self, ids: list[int], values: list[float]) -> int:
        """Store each sample's latest recall.

        Args:
            ids: sample ids (evicted ones are skipped).
            values: one value per id (NaN is stored as NULL).

        Returns:
            Rows updated.

        Raises:
            ReplayMemoryError: ``ids`` and ``values`` differ in length.
            StorageError: the index cannot be written.
        """
        return self._update("last_recall", ids, values)

    def update_loss(self, ids: list[int], values: list[float]) -> int:
        """Store each sample's latest training loss.

        Args:
            ids: sample ids (evicted ones are skipped).
            values: one value per id (NaN is stored as NULL).

        Returns:
            Rows updated.

        Raises:
            ReplayMemoryError: ``ids`` and ``values`` differ in length.
            StorageError: the index cannot be written.
        """
        return self._update("last_loss", ids, values)

    def _update(self, column: str, ids: list[int], values: list[float]) -> int:
        if len(ids) != len(values):
            raise ReplayMemoryError(f"{column}: {len(ids)} ids but {len(values)} values")
        with self._lock, self._faults(f"cannot update {column} in the memory index"):
            return self._db.update_column(column, list(ids), [nan_to_none(v) for v in values])

    def record_replay(self, ids: list[int]) -> int:
        """Count one replay of each id.

        Raises:
            StorageError: the index cannot be written.
        """
        with self._lock, self._faults("cannot count replays in the memory index"):
            return self._db.increment_replayed(list(ids))

    def verify(self, repair: bool = True, deep: bool = False) -> VerifyReport:
        """Check that index and files agree and the bounds hold; optionally repair.

        Runs under the index write lock, so no add (in any process) is half-way through: every
        file without a row is an orphan, every temp file a leftover. The checks themselves are
        in :mod:`.verify`.

        Args:
            repair: drop rows whose files are missing or broken, after moving what is left
                of their files to ``quarantine/<id>/`` (:mod:`.quarantine`; a row whose files
                cannot be moved is kept and reported), remove orphans, temp files and stale
                snapshot folders, evict over bounds, and keep the quarantine within its bound.
                Without it, every problem found is reported as unrepaired.
            deep: also decode every image (the quick check compares each image's length and
                JPEG markers; every check parses each label file and compares its classes
                with the row's).

        Returns:
            What was found, what was repaired, what could not be.

        Raises:
            StorageError: the index cannot be written (read-only or full disk).
        """
        if repair:
            self._refuse_if_read_only("cannot repair the replay memory (check it with "
                                      "repair=False)")
        with self._lock, self._faults("cannot verify the replay memory"):
            integrity = self._db.integrity_problems()
            if integrity:
                said = [f"index {self._db.path} is damaged: {p}" for p in integrity[:5]]
                said[-1] += f"; {rebuild_hint(self.root)}"
                return VerifyReport(repaired=repair, unrepaired=tuple(said))
            return self._verify(repair, deep)

    def _verify(self, repair: bool, deep: bool) -> VerifyReport:
        unrepaired: list[str] = []
        quarantined: list[tuple[int, Quarantined]] = []
        pruned: list[int] = []
        # the write lock keeps adds in other processes out; a read-only copy has none
        with self._db.read() if self.read_only else self._db.write():
            damaged: list[DamagedRowError] = []
            records = self._db.records(damaged=damaged)
            by_id = {r.id: r for r in records}
            verdicts: dict[int, checks.RowProblem | None] = {
                r.id: checks.row_problem(r, self.image_path(r.id), self.label_path(r.id), deep)
                for r in records}
            verdicts.update({d.sample_id: checks.RowProblem("corrupt", str(d), "index row")
                             for d in damaged})
            broken = {i: v for i, v in verdicts.items() if v is not None}
            missing = sorted(i for i, v in broken.items() if v.kind == "missing")
            corrupt = sorted(i for i, v in broken.items() if v.kind == "corrupt")
            # a broken row's files are that row's problem (missing/corrupt), not orphans as well:
            # each damaged sample is counted once
            orphans, temps = checks.scan_files(self.root, set(verdicts))
            stale = checks.stale_snapshot_dirs(self.root)
            q_temps, q_trash = quarantine.stale_paths(self.root)
            temps, stale = temps + q_temps, stale + q_trash
            evicted: list[int] = []
            removing = self._db.unlinking()
            lost = ({s for s in checks.sample_stems(orphans) if int(s) not in removing}
                    if not verdicts else set())
            if repair and len(lost) > MAX_ORPHANS_WITHOUT_ROWS:
                raise ReplayMemoryError(
                    f"the replay memory {self.root} holds {len(lost)} samples on disk but its "
                    f"index {self._db.path} has no row (missing, emptied or replaced?): nothing "
                    f"was deleted; restore the index, or move the folder away to start an empty "
                    f"memory")
            # whole samples (image and labels) the index does not list: an older copy of the
            # index restored, or another device's swapped in. Before, any open that verifies
            # (a 'labels answered') deleted them without a word: 40 imported samples gone.
            # Those of a removal or eviction cut short between its commit and its unlinks are
            # its leftovers, recorded as such: deleted
            unlisted = {s for s in _whole_samples(orphans) if int(s) not in removing}
            if repair and len(unlisted) > MAX_ORPHANS_WITHOUT_ROWS:
                raise ReplayMemoryError(
                    f"the replay memory {self.root} holds {len(unlisted)} whole samples on disk "
                    f"(e.g. {min(unlisted, key=int)}) that its index {self._db.path} does not "
                    f"list (an older or another device's index?): nothing was deleted; "
                    f"{rebuild_hint(self.root)}")
            if repair:
                dropped, failed = self._quarantine(broken, by_id)
                unrepaired += failed
                for sample_id, _ in dropped:
                    self._db.delete(sample_id)
                quarantined = [(i, q) for i, q in dropped if q is not None]
                kept, failed = self._quarantine_unlisted(sorted(unlisted, key=int))
                unrepaired += failed
                quarantined += kept
                if unlisted:  # a quarantined id is never handed out again
                    self._db.reserve_ids(max(int(s) for s in unlisted))
                orphans = [p for p in orphans if p.stem not in unlisted]
                unrepaired += self._unlink(orphans + temps) + _remove_dirs(stale)
                self._db.clear_unlinking(
                    i for i in removing
                    if not self.image_path(i).exists() and not self.label_path(i).exists())
                self._unlinked = []
                evicted = self.enforce_bounds()
                self._db.mark_unlinking(evicted)
                pruned, failed = quarantine.prune(self.root, self.cfg.max_bytes,
                                                  set(self._db.ids()))
                unrepaired += failed
            else:
                unrepaired += self.bound_problems()
        details = {i: _detail(i, v) for i, v in broken.items()}
        for sample_id, item in quarantined:
            details[sample_id] = (details[sample_id] if sample_id in details else
                                  f"sample {sample_id}: {item.reason}") + \
                f"; files kept in {item.folder}"
        details = tuple(details[i] for i in sorted(details))
        if repair:
            failed = self._unlink_samples(evicted)
            unrepaired += failed
            if evicted and not failed:
                self._forget_unlinking(evicted)
        else:
            unrepaired += (list(details) + [f"orphan file {p}" for p in orphans]
                           + [f"temp file {p} (a write cut short)" for p in temps]
                           + [f"stale snapshot folder {p}" for p in stale])
        return VerifyReport(rows_checked=len(verdicts), missing_rows=tuple(missing),
                            corrupt_rows=tuple(corrupt), orphan_files=tuple(map(str, orphans)),
                            temp_files=tuple(map(str, temps)),
                            stale_snapshot_dirs=tuple(map(str, stale)),
                            bound_evictions=tuple(evicted), repaired=repair,
                            unrepaired=tuple(unrepaired), details=details,
                            quarantined=tuple(q.line() for _, q in quarantined),
                            quarantine_pruned=tuple(pruned))

    def _quarantine(self, broken: dict[int, checks.RowProblem], by_id: dict[int, SampleRecord]
                    ) -> tuple[list[tuple[int, Quarantined | None]], list[str]]:
        """Move what is left of each broken row's files to the quarantine (inside the
        caller's write transaction; the caller deletes the rows returned).

        Returns:
            ``(dropped, failures)``: ``(id, what was quarantined)`` per row to delete (None
            for a damaged row whose id names no files), one line per row left in place
            because its files could not be moved.
        """
        moved: list[tuple[int, Quarantined | None]] = []
        failed = []
        seq = quarantine.next_seq(self.root) if broken else 0
        for sample_id in sorted(broken):
            problem = broken[sample_id]
            if sample_id < 1:  # an unreadable id names no files: the row alone is dropped
                moved.append((sample_id, None))
                continue
            record = by_id.get(sample_id)
            row = record.to_json() if record is not None else self._db.raw_row(sample_id)
            try:
                item = quarantine.quarantine_sample(
                    self.root, sample_id, [self.image_path(sample_id), self.label_path(sample_id)],
                    row, problem.kind, problem.reason, problem.file, seq)
            except OSError as exc:
                failed.append(f"row {sample_id}: {problem.reason}; it could not be moved to "
                              f"the quarantine ({exc.strerror or exc}: "
                              f"{exc.filename or self.root}), so it was left in the memory")
                continue
            seq += 1
            moved.append((sample_id, item))
        return moved, failed

    def _quarantine_unlisted(self, stems: list[str]) -> tuple[list[tuple[int, Quarantined]],
                                                              list[str]]:
        """Move whole samples no index row lists (at most :data:`MAX_ORPHANS_WITHOUT_ROWS`: an
        add cut short, or samples an older index restored does not know) to the quarantine,
        where an operator's labels are kept, instead of deleting them.

        Returns:
            ``(kept, failures)``: ``(id, what was quarantined)`` per sample moved, one line
            per sample left in place.
        """
        kept, failed = [], []
        seq = quarantine.next_seq(self.root) if stems else 0
        for stem in stems:
            sample_id = int(stem)
            try:
                item = quarantine.quarantine_sample(
                    self.root, sample_id, [self.image_path(sample_id), self.label_path(sample_id)],
                    {"origin": "unknown", "source": ""}, "unlisted",
                    "a whole sample on disk that the index does not list (an add cut short, or "
                    "an older copy of the index restored)", self.image_path(sample_id).name, seq)
            except OSError as exc:
                failed.append(f"sample {sample_id} that the index does not list could not be "
                              f"moved to the quarantine ({exc.strerror or exc}); left in place")
                continue
            seq += 1
            kept.append((sample_id, item))
        return kept, failed

    def bound_problems(self) -> list[str]:
        """What exceeds this memory's bounds as opened (a smaller ``capacity`` or ``max_bytes``
        than it was filled with): what opening it for writing would evict.

        Returns:
            One line per bound exceeded (training slots, held-out slots, sample bytes); empty
            when everything fits.
        """
        training, held, size = self._bound_counts()
        cap, fraction = self.capacity, self.cfg.holdout_fraction
        out = []
        if training > self.train_capacity:  # a raised holdout_fraction shrinks these slots too
            less = (f" less the {self.holdout_capacity} held-out slots of "
                    f"memory.holdout_fraction {fraction:g}" if self.holdout_capacity else "")
            out.append(f"{training} training samples exceed the {self.train_capacity} training "
                       f"slots (memory.capacity {cap}{less})")
        if held > self.holdout_capacity:
            out.append(f"{held} held-out samples exceed the {self.holdout_capacity} held-out "
                       f"slots (memory.capacity {cap} x memory.holdout_fraction {fraction:g})")
        if size > self.sample_budget_bytes:
            mib = 2 ** 20
            out.append(f"{size / mib:.1f} MiB of samples exceed the {self.sample_budget_bytes / mib:.1f}"
                       f" MiB they may take (memory.max_bytes {self.cfg.max_bytes / mib:.1f} MiB "
                       f"less room for the index)")
        return out

    def over_capacity(self) -> int:
        """Samples past this memory's slots as opened (training and held-out slots are bounded
        apart): what opening it for writing evicts before any byte budget.
        """
        training, held, _ = self._bound_counts()
        return max(0, training - self.train_capacity) + max(0, held - self.holdout_capacity)

    def _bound_counts(self) -> tuple[int, int, int]:
        """``(training samples, held-out samples, sample bytes)`` stored."""
        with self._reading():
            return (self._db.count(held_out=False), self._db.count(held_out=True),
                    self._db.total_bytes())

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
            ``per_class_held_out`` (those of them held out, zeros included), ``per_task``,
            ``per_task_held_out``, ``per_origin`` (samples per label origin,
            every origin present, zeros included; ``unknown`` too where an index rebuilt from
            the sample files could not tell, :mod:`.rebuild`: those samples are treated as
            ``pseudo``, replayed and never evaluated on), ``seen``, ``policy``, ``names``.
        """
        records = self.records()
        with self._reading():
            raw_origins = self._db.group_counts("origin")
        per_class: dict[str, int] = {}
        per_class_held: dict[str, int] = {}
        per_task: dict[str, int] = {}
        held: dict[str, int] = {}
        per_origin = {o.value: 0 for o in LabelOrigin}
        for r in records:
            for c in r.classes:
                per_class[str(c)] = per_class.get(str(c), 0) + 1
                if r.held_out:
                    per_class_held[str(c)] = per_class_held.get(str(c), 0) + 1
            target = held if r.held_out else per_task
            target[r.task] = target.get(r.task, 0) + 1
            per_origin[r.origin.value] += 1
        known = {o.value for o in LabelOrigin}
        unknown = sum(n for text, n in raw_origins.items() if text is not None and text not in known)
        if unknown:  # read as pseudo (records.origin_from_text); say what they are
            per_origin[LabelOrigin.PSEUDO.value] = max(0, per_origin[LabelOrigin.PSEUDO.value] - unknown)
            per_origin["unknown"] = unknown
        names = self.class_names()
        return {"samples": len(records), "bytes": sum(r.bytes for r in records),
                "held_out": sum(held.values()), "capacity": self.capacity,
                "max_bytes": int(self.cfg.max_bytes),
                "sample_budget_bytes": self.sample_budget_bytes,
                "per_class": dict(sorted(per_class.items(), key=lambda kv: int(kv[0]))),
                "per_class_held_out": {c: per_class_held.get(c, 0)
                                       for c in sorted(per_class, key=int)},
                "per_task": per_task, "per_task_held_out": held, "per_origin": per_origin,
                "seen": self._admission.counters.get("frames/all", 0), "policy": self.policy.name,
                "names": {str(k): v for k, v in names.items()} if names else None}


def _recorded_settings_from_a_copy(path: Path) -> tuple[str] | None:
    """The recorded settings' row read through a private copy of the index (None when that
    cannot be read either: the memory's open says why)."""
    try:
        db = IndexDB(path, read_only=True)
    except (StorageError, ReplayMemoryError):
        return None
    try:
        row = db.conn.execute("SELECT value FROM meta WHERE key = ?",
                              (MEMORY_CONFIG_KEY,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return None if row is None else (row[0],)


def recorded_memory_config(root: str | Path) -> MemoryConfig | None:
    """The settings a memory was last opened for writing with (its runtime's ``memory.*``),
    read from its index without writing anything.

    A tool run on a device's state directory without the device's config (``edgecl labels
    import --state-dir DIR``) would otherwise open the memory with the default settings: a
    smaller ``capacity`` or ``max_bytes`` evicts samples on open, another ``seed`` or
    ``holdout_block_s`` draws other held-out samples.

    Args:
        root: the memory folder (``STATE/memory``).

    Returns:
        The recorded settings, or None when the memory has none recorded (an older release, a
        new memory), cannot be read here, or holds settings that are not valid.
    """
    from urllib.parse import quote

    path = Path(root) / INDEX_FILE
    if not path.is_file():
        return None
    try:
        # the path's bytes: a name that is not UTF-8 (a surrogate in str) cannot be encoded
        conn = sqlite_room.connect(f"file:{quote(os.fsencode(path.resolve()))}?mode=ro",
                                   file_path=path.resolve(), uri=True, timeout=5.0)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = ?",
                               (MEMORY_CONFIG_KEY,)).fetchone()
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        # a read-only medium or a full disk (no -shm can be made beside it): read it from a
        # private copy, as the tools that read such a memory do (before: this command's
        # defaults were shown as the device's bounds, "as no device has run on it yet")
        row = _recorded_settings_from_a_copy(path)
    try:
        data = json.loads(row[0]) if row else None
    except (TypeError, ValueError, RecursionError):
        log.warning("memory %s: its recorded settings are not valid (not JSON); this command's "
                    "are used", root)
        return None
    if data is None:
        return None
    if not isinstance(data, dict):
        log.warning("memory %s: its recorded settings are not valid (a JSON %s, not an object); "
                    "this command's are used", root, type(data).__name__)
        return None
    defaults = dataclasses.asdict(MemoryConfig())
    values = {}
    for name, default in defaults.items():
        value = data.get(name, default)
        if type(value) is int and type(default) is float:
            value = float(value)
        if type(value) is not type(default):
            log.warning("memory %s: its recorded settings are not valid (%s=%r); this command's "
                        "are used", root, name, value)
            return None
        values[name] = value
    recorded = MemoryConfig(**values)
    try:
        _check_config(recorded)
    except ReplayMemoryError as exc:
        log.warning("memory %s: its recorded settings are not valid (%s); this command's are "
                    "used", root, exc)
        return None
    return recorded


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


def held_copy(memory, digest: str | None, origin: LabelOrigin) -> int | None:
    """Id of the sample a memory holds with this content hash and that a new sample of
    ``origin`` would not replace (:meth:`ReplayMemory.held_content`), or ``None``.

    Args:
        memory: a :class:`ReplayMemory`; a memory without a content index (a test double)
            holds no copies.
        digest: a content hash (:func:`~edgecl.data.images.pixels_hash`); ``None`` or ``""``:
            unknown, nothing is found.
        origin: the new sample's label origin.

    Raises:
        StorageError: the memory's index cannot be read.
    """
    held = getattr(memory, "held_content", None)
    if not digest or held is None:
        return None
    return held(digest, origin)


def replaces(new: LabelOrigin, held: LabelOrigin) -> bool:
    """Whether a new sample replaces a stored one of the same image: verified labels (a person's
    answer, an import, ground truth) replace pseudo-labels; anything else is a duplicate.

    Args:
        new: the new sample's label origin.
        held: the stored sample's label origin.
    """
    return held == LabelOrigin.PSEUDO and new != LabelOrigin.PSEUDO


def _remove_dirs(folders: list[Path]) -> list[str]:
    failed = []
    for folder in folders:
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            failed.append(f"{folder}: {exc.strerror or exc}")
    return failed


def _detail(sample_id: int, problem: checks.RowProblem) -> str:
    """One line for a broken row (a damaged index row's reason already names it)."""
    if problem.file == "index row":
        return problem.reason
    return f"row {sample_id}: {problem.reason}"


def memory_from_config(cfg: Config, names: dict[int, str] | None = None,
                       record_settings: bool = False) -> ReplayMemory:
    """Open the memory of a deployment (``Path(cfg.state_dir) / "memory"``).

    Args:
        cfg: the deployment configuration.
        names: class names to record, if known.
        record_settings: keep ``cfg.memory`` in the index as the device's settings (the
            runtime's own memory; see :class:`ReplayMemory`).

    Returns:
        The opened (and verified) memory.

    Raises:
        StorageError: the state directory is read-only or full.
        ReplayMemoryError: the index is damaged beyond use or the configuration is unusable.
    """
    return ReplayMemory(Path(cfg.state_dir) / "memory", cfg.memory, names,
                        record_settings=record_settings)
