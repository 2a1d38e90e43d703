"""Immutable snapshots of the replay memory, the learner's training view.

A snapshot is a folder ``memory/snapshots/<id>/`` with hard links to the sample files it
references (copies where links are impossible), ``records.json`` (the index rows) and
``train.txt`` / ``heldout.txt`` (lists of image paths for an ultralytics ``YOLODataset``).
Evictions after the snapshot unlink only the memory's own names, so the snapshot's files stay
readable until the snapshot itself is pruned. It is built under ``.tmp-<id>`` and renamed into
place when complete; a crash leaves only a ``.tmp-`` folder, removed by ``verify``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from edgecl import atomic
from edgecl.continual.memory.faults import fault_error
from edgecl.continual.memory.index import IndexDB
from edgecl.continual.memory.records import (
    IMAGE_SUFFIX,
    LABEL_SUFFIX,
    SampleRecord,
    StoredSample,
    file_stem,
    parse_label_file,
)
from edgecl.errors import ReplayMemoryError

RECORDS_FILE = "records.json"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class MemorySnapshot:
    """A consistent, immutable copy of the memory index with its own file links.

    Attributes:
        snapshot_id: unique id (recorded in model manifests).
        path: the snapshot folder.
        memory_root: the live memory folder (metric updates are forwarded there).
        created_s: creation time in seconds.
        rows: the index rows at snapshot time, ascending id.
        names: class id -> name, when known.
    """

    snapshot_id: str
    path: Path
    memory_root: Path
    created_s: float
    rows: tuple[SampleRecord, ...]
    names: dict[int, str] | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.rows)

    def _by_id(self) -> dict[int, SampleRecord]:
        return {r.id: r for r in self.rows}

    def ids(self, held_out: bool | None = None, task: str | None = None) -> list[int]:
        """Ids in the snapshot, filtered by held-out flag and task."""
        return [r.id for r in self.records(held_out=held_out, task=task)]

    def records(self, ids: list[int] | None = None, held_out: bool | None = None,
                task: str | None = None) -> list[SampleRecord]:
        """Rows of ``ids`` (order kept, unknown skipped) or all rows matching the filter."""
        if ids is not None:
            by_id = self._by_id()
            return [by_id[int(i)] for i in ids if int(i) in by_id]
        return [r for r in self.rows
                if (held_out is None or r.held_out == held_out) and (task is None or r.task == task)]

    def image_paths(self, ids: list[int]) -> list[Path]:
        """Image files of the given ids inside the snapshot."""
        return [self.path / "images" / f"{file_stem(int(i))}{IMAGE_SUFFIX}" for i in ids]

    def get(self, ids: list[int]) -> list[StoredSample]:
        """Load samples (labels parsed) in the given order.

        Raises:
            ReplayMemoryError: an id is not in the snapshot.
            LabelError: a label file is malformed.
        """
        by_id = self._by_id()
        missing = [int(i) for i in ids if int(i) not in by_id]
        if missing:
            raise ReplayMemoryError(f"snapshot {self.snapshot_id} has no sample id(s) {missing[:5]}")
        out = []
        for i in ids:
            rec = by_id[int(i)]
            img = self.path / "images" / f"{file_stem(rec.id)}{IMAGE_SUFFIX}"
            lbl = self.path / "labels" / f"{file_stem(rec.id)}{LABEL_SUFFIX}"
            out.append(StoredSample.from_record(rec, img, lbl, parse_label_file(lbl)))
        return out

    def list_file(self, held_out: bool = False) -> Path:
        """The text file listing this snapshot's training (or held-out) image paths."""
        return self.path / ("heldout.txt" if held_out else "train.txt")

    def _forward(self, column: str, ids: list[int], values: list) -> int:
        db_path = self.memory_root / "index.sqlite"
        if not db_path.exists():
            return 0
        db = IndexDB(db_path)
        try:
            if column == "times_replayed":
                return db.increment_replayed(list(ids))
            return db.update_column(column, list(ids), [None if v is None else float(v)
                                                        for v in values])
        except sqlite3.Error as exc:
            raise fault_error(exc, f"cannot update {column} in the memory index", db_path) from None
        finally:
            db.close()

    def update_recall(self, ids: list[int], values: list[float]) -> int:
        """Record the latest recall of samples in the live index (evicted ids are skipped).

        Returns:
            Rows updated. The snapshot's own records do not change.

        Raises:
            StorageError: the live index cannot be written (read-only, disk full).
        """
        return self._forward("last_recall", ids, values)

    def set_recall_baseline(self, ids: list[int], values: list[float]) -> int:
        """Record recall baselines in the live index (evicted ids are skipped).

        Raises:
            StorageError: the live index cannot be written (read-only, disk full).
        """
        return self._forward("recall_baseline", ids, values)

    def record_replay(self, ids: list[int]) -> int:
        """Count one replay of each id in the live index (evicted ids are skipped).

        Raises:
            StorageError: the live index cannot be written (read-only, disk full).
        """
        return self._forward("times_replayed", ids, [])

    @classmethod
    def load(cls, path: Path, memory_root: Path | None = None) -> "MemorySnapshot":
        """Open a snapshot folder.

        Args:
            path: ``memory/snapshots/<id>``.
            memory_root: the live memory folder (default: two levels up).

        Returns:
            The snapshot.

        Raises:
            ReplayMemoryError: the folder is not a complete snapshot.
        """
        path = Path(path)
        try:
            data = json.loads((path / RECORDS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ReplayMemoryError(f"{path} is not a complete memory snapshot: {exc}") from None
        names = data.get("names")
        return cls(snapshot_id=data["snapshot_id"], path=path,
                   memory_root=Path(memory_root) if memory_root else path.parent.parent,
                   created_s=float(data["created_s"]),
                   rows=tuple(SampleRecord.from_json(r) for r in data["records"]),
                   names={int(k): v for k, v in names.items()} if names else None)


SEQ_DIGITS = 10


def snapshot_order(name: str) -> tuple[int, str]:
    """Sort key of a snapshot folder: its sequence number, then its name.

    Ids are ``<sequence>-<UTC time>-<random>``: the sequence, not the wall clock, orders
    them, so a board that reboots to an earlier date (no battery-backed clock) still sorts
    its new snapshot last. Ids of older releases (``<UTC time>-<random>``) sort first.
    """
    head = name.split("-", 1)[0]
    seq = int(head) if len(head) == SEQ_DIGITS and head.isdigit() else -1
    return seq, name


def _snapshot_names(snaps: Path) -> list[str]:
    """Complete snapshot folders, oldest first (see :func:`snapshot_order`)."""
    if not snaps.is_dir():
        return []
    return sorted((p.name for p in snaps.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=snapshot_order)


def new_snapshot_id(snaps: Path) -> str:
    """A unique snapshot id, after every snapshot in ``snaps`` (the caller holds the index's
    write lock, so no other process numbers one at the same time).

    Args:
        snaps: the ``snapshots`` folder.

    Returns:
        ``<10-digit sequence>-<UTC time>-<6 hex digits>``.
    """
    last = max((snapshot_order(n)[0] for n in _snapshot_names(snaps)), default=0)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{max(last, 0) + 1:0{SEQ_DIGITS}d}-{stamp}-{uuid.uuid4().hex[:6]}"


def build_snapshot(memory_root: Path, records: list[SampleRecord],
                   names: dict[int, str] | None) -> MemorySnapshot:
    """Write a snapshot folder for ``records`` (caller holds the index write lock).

    Args:
        memory_root: the memory folder (with images/, labels/, snapshots/).
        records: the committed rows to include.
        names: class names to record, if known.

    Returns:
        The new snapshot.

    Raises:
        StorageError: the disk refused a write (full, read-only); nothing is left behind.
        ReplayMemoryError: a referenced file is missing.
    """
    snaps = memory_root / "snapshots"
    sid = new_snapshot_id(snaps)
    tmp = snaps / f"{TMP_PREFIX}{sid}"
    final = snaps / sid
    try:
        for sub in ("images", "labels"):
            (tmp / sub).mkdir(parents=True)
        for rec in records:
            stem = file_stem(rec.id)
            for sub, suffix in (("images", IMAGE_SUFFIX), ("labels", LABEL_SUFFIX)):
                atomic.link_or_copy(memory_root / sub / f"{stem}{suffix}",
                                    tmp / sub / f"{stem}{suffix}")
        _write_snapshot_meta(tmp, final, sid, records, names)
        os.replace(tmp, final)
        atomic.fsync_dir(snaps)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise fault_error(exc, f"cannot write a memory snapshot in {snaps}", snaps) from None
    return MemorySnapshot.load(final, memory_root)


def _write_snapshot_meta(tmp: Path, final: Path, sid: str, records: list[SampleRecord],
                         names: dict[int, str] | None) -> None:
    for sub in ("images", "labels"):
        atomic.fsync_dir(tmp / sub)
    for name, held in (("train.txt", False), ("heldout.txt", True)):
        lines = [str(final / "images" / f"{file_stem(r.id)}{IMAGE_SUFFIX}")
                 for r in records if r.held_out == held]
        atomic.atomic_write_text(tmp / name, "".join(line + "\n" for line in lines))
    atomic.atomic_write_json(tmp / RECORDS_FILE, {
        "snapshot_id": sid, "created_s": time.time(),
        "names": {str(k): v for k, v in names.items()} if names else None,
        "records": [r.to_json() for r in records]})


IN_USE_PREFIX = ".in-use-"
"""``snapshots/<id>/.in-use-<pid>``: the process ``pid`` reads that snapshot (a round trains
from it, an export copies it)."""


def mark_in_use(memory_root: Path, snapshot_id: str) -> None:
    """Mark a snapshot as read by this process, and its earlier ones as no longer (a process
    works from its newest snapshot: a fleet device's, a runtime's bench).

    Args:
        memory_root: the memory folder.
        snapshot_id: the snapshot just taken.
    """
    snaps = memory_root / "snapshots"
    mine = f"{IN_USE_PREFIX}{os.getpid()}"
    for sid in _snapshot_names(snaps):
        if sid != snapshot_id:
            with contextlib.suppress(OSError):
                (snaps / sid / mine).unlink()
    with contextlib.suppress(OSError):  # advisory: a full disk must not fail the snapshot
        (snaps / snapshot_id / mine).touch()


def in_use(snapshot_dir: Path) -> bool:
    """Whether a live process other than this one marked the snapshot as read by it."""
    try:
        markers = [p.name for p in snapshot_dir.iterdir() if p.name.startswith(IN_USE_PREFIX)]
    except OSError:
        return False
    for name in markers:
        pid = name[len(IN_USE_PREFIX):]
        if pid.isdigit() and int(pid) != os.getpid() and atomic.process_alive(int(pid)):
            return True
    return False


def prune_snapshots(memory_root: Path, keep: int, protect: str | None = None) -> list[str]:
    """Delete all but the ``keep`` newest complete snapshots (rename, then remove); a snapshot
    another live process reads (:func:`in_use`) is kept too. Before, a ``memory export`` run
    twice while a round trained deleted the round's snapshot under it ("cannot read label
    file .../snapshots/.../labels/00000044.txt").

    Args:
        memory_root: the memory folder.
        keep: how many to keep.
        protect: a snapshot id never removed (the one just taken).

    Returns:
        Ids of the removed snapshots.
    """
    snaps = memory_root / "snapshots"
    complete = _snapshot_names(snaps)
    removed = complete[:-keep] if keep > 0 else complete
    removed = [sid for sid in removed if sid != protect and not in_use(snaps / sid)]
    for sid in removed:
        trash = snaps / f"{TRASH_PREFIX}{sid}"
        os.replace(snaps / sid, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return removed
