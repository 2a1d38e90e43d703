"""Quarantine of damaged samples: where the repairing check puts what is left of a sample it
drops, instead of deleting it (an operator's label may be the only copy of a rare class).

Layout: ``STATE/memory/quarantine/<id>/`` (``<id>`` is the sample's 8-digit file stem) holds
whatever is left of the sample's image and label files, under their memory names, and
``sample.json``: the index row (``id``, ``origin``, ``source``, ``classes``, ``task``, ...),
``kind`` (``missing`` or ``corrupt``), ``reason``, ``damaged_file`` and ``seq`` (the order in
which samples were quarantined, independent of the clock). This module is the one rule for
that folder and that file.

Crash safety. The check holds the index write lock. ``sample.json`` is written first
(temp file, fsync, rename), then each file is renamed into the folder (no copy: at every
instant a file is in exactly one place), the folders are fsynced, and only then is the row
deleted from the index (committed by the caller). A kill leaves either the row, with its
files in the memory or already in the quarantine folder (the next check finds the row
damaged or missing and completes the move, keeping the first reason recorded), or the row
gone and the quarantined copy complete.

Bound. At most :data:`QUARANTINE_KEEP` quarantined samples, using at most
``max_bytes // QUARANTINE_SHARE`` bytes (5 % of ``memory.max_bytes``), are kept; older ones
are deleted first, and the newest one is always kept. The quarantined files are files the
memory held already (moved, not copied), so quarantining never adds bytes to the card; the
memory folder may exceed ``max_bytes`` by at most that share (plus the newest quarantined
sample, when it alone is larger) once the freed budget fills again.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgecl import atomic
from edgecl.continual.memory.records import file_stem

QUARANTINE_DIR = "quarantine"
ENTRY_FILE = "sample.json"
QUARANTINE_KEEP = 64
"""At most this many quarantined samples are kept (the newest)."""
QUARANTINE_SHARE = 20
"""Quarantined files may use at most ``max_bytes // QUARANTINE_SHARE`` bytes (the newest
quarantined sample is kept even when it alone is larger)."""
TRASH_PREFIX = ".trash-"
REPORT_LINES = 3
"""Quarantined samples named one by one in a one-line summary (then a count)."""


@dataclass(frozen=True)
class Quarantined:
    """One sample moved to the quarantine.

    Attributes:
        sample_id: its id.
        origin: where its labels came from (``operator``, ``import``, ``pseudo``,
            ``ground_truth``), or ``unknown`` for a damaged index row.
        source: its recorded source.
        damaged_file: the file found damaged (or ``index row``).
        reason: what is wrong.
        folder: the quarantine folder holding what is left of it.
    """

    sample_id: int
    origin: str
    source: str
    damaged_file: str
    reason: str
    folder: Path

    def line(self) -> str:
        """One line for humans: id, origin, source, damaged file, reason and folder."""
        why = self.reason if self.damaged_file in self.reason else \
            f"{self.damaged_file}: {self.reason}"
        return (f"sample {self.sample_id} ({self.origin} labels, source {self.source!r}): "
                f"{why}; kept in {self.folder}")


def quarantine_root(memory_root: Path) -> Path:
    """The quarantine folder of a memory folder."""
    return Path(memory_root) / QUARANTINE_DIR


def entry_folder(memory_root: Path, sample_id: int) -> Path:
    """The quarantine folder of one sample id."""
    return quarantine_root(memory_root) / file_stem(int(sample_id))


def read_entry(folder: Path) -> dict | None:
    """The ``sample.json`` of a quarantine folder, or None when absent or unreadable.

    Args:
        folder: ``quarantine/<id>``.
    """
    try:
        data = json.loads((Path(folder) / ENTRY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _entries(memory_root: Path) -> list[tuple[int, int, Path]]:
    """``(seq, id, folder)`` of every quarantine folder (seq -1 without a readable entry),
    oldest first."""
    try:
        folders = list(quarantine_root(memory_root).iterdir())
    except OSError:  # no quarantine yet (or one that cannot be listed: nothing to order)
        return []
    out = []
    for folder in folders:
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        entry = read_entry(folder) or {}
        seq = entry.get("seq")
        out.append((seq if type(seq) is int else -1,
                    int(folder.name) if folder.name.isdigit() else -1, folder))
    return sorted(out, key=lambda e: (e[0], e[1], e[2].name))


def _folder_bytes(folder: Path) -> int:
    """Bytes the files of a quarantine folder occupy on disk (0 when it cannot be listed)."""
    total = 0
    try:
        for entry in os.scandir(folder):
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                total += max(int(st.st_size), int(getattr(st, "st_blocks", 0)) * 512)
    except OSError:
        return total
    return total


def _move(src: Path, dst: Path) -> None:
    """Rename one file into the quarantine (one step: the file is never in two places or
    none)."""
    os.replace(src, dst)


def next_seq(memory_root: Path) -> int:
    """The ``seq`` the next quarantined sample gets (one more than any recorded).

    Args:
        memory_root: the memory folder.
    """
    return max([0] + [e[0] for e in _entries(memory_root)]) + 1


def quarantine_sample(memory_root: Path, sample_id: int, files: list[Path], row: dict,
                      kind: str, reason: str, damaged_file: str, seq: int) -> Quarantined:
    """Move what is left of a sample into ``quarantine/<id>/`` (see the module docstring).

    The caller holds the index write lock and deletes the row afterwards, in its transaction.
    An earlier, interrupted attempt for the same id is completed: its ``sample.json`` (the
    first reason recorded) is kept and the files still in the memory are moved.

    Args:
        memory_root: the memory folder.
        sample_id: the sample's id.
        files: its image and label paths in the memory (missing ones are skipped).
        row: the index row as JSON-ready values (``id``, ``origin``, ``source``, ...).
        kind: ``missing`` or ``corrupt``.
        reason: what is wrong with it.
        damaged_file: the file found damaged.
        seq: its place in the quarantine's order (:func:`next_seq`).

    Returns:
        What was quarantined, and where.

    Raises:
        OSError: the folder, the entry or a move failed (disk full, permissions); files
            already moved stay in the quarantine folder and the row is the caller's to keep.
    """
    top = quarantine_root(memory_root)
    folder = entry_folder(memory_root, sample_id)
    made_top = not top.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if made_top:
        atomic.fsync_dir(Path(memory_root))
    atomic.fsync_dir(top)
    entry = read_entry(folder)
    if entry is None or entry.get("id") != int(sample_id):
        entry = {**row, "id": int(sample_id), "kind": kind, "reason": reason,
                 "damaged_file": damaged_file, "seq": int(seq)}
        atomic.atomic_write_json(folder / ENTRY_FILE, entry)
    parents = set()
    for src in files:
        src = Path(src)
        if src.is_file():
            _move(src, folder / src.name)
            parents.add(src.parent)
    for parent in sorted(parents) + [folder]:
        atomic.fsync_dir(parent)
    return Quarantined(int(sample_id), str(entry.get("origin", "unknown")),
                       str(entry.get("source", "")), str(entry.get("damaged_file", damaged_file)),
                       str(entry.get("reason", reason)), folder)


def prune(memory_root: Path, max_bytes: int, in_index: set[int],
          keep: int | None = None) -> tuple[list[int], list[str]]:
    """Delete the oldest quarantined samples beyond the bound (see the module docstring).

    Folders whose id still has an index row (a quarantine in progress) are neither counted
    nor deleted; the newest quarantined sample is never deleted. A folder is renamed to
    ``.trash-<id>`` before it is removed, so a kill leaves no half-deleted entry.

    Args:
        memory_root: the memory folder.
        max_bytes: ``memory.max_bytes``; the quarantine may use ``max_bytes //
            QUARANTINE_SHARE`` of it.
        in_index: ids that have an index row.
        keep: at most this many quarantined samples (default :data:`QUARANTINE_KEEP`).

    Returns:
        ``(pruned ids, failures)``: ids deleted, one line per folder that could not be.
    """
    keep = QUARANTINE_KEEP if keep is None else int(keep)
    entries = [e for e in _entries(memory_root) if e[1] not in in_index]
    sizes = {e[2]: _folder_bytes(e[2]) for e in entries}
    budget = int(max_bytes) // QUARANTINE_SHARE
    total = sum(sizes.values())
    pruned, failed = [], []
    for entry in entries[:-1]:  # oldest first, never the newest
        if len(entries) - len(pruned) <= keep and total <= budget:
            break
        folder = entry[2]
        trash = folder.parent / f"{TRASH_PREFIX}{folder.name}"
        try:
            os.replace(folder, trash)
        except OSError as exc:
            failed.append(f"quarantine folder {folder}: {exc.strerror or exc}")
            continue
        shutil.rmtree(trash, ignore_errors=True)
        pruned.append(entry[1])
        total -= sizes[folder]
    return pruned, failed


def stale_paths(memory_root: Path) -> tuple[list[Path], list[Path]]:
    """Leftovers of interrupted quarantine work.

    Args:
        memory_root: the memory folder.

    Returns:
        ``(temp files, folders)``: temp files of an interrupted ``sample.json`` write, and
        ``.trash-`` folders of a prune cut short; each sorted.
    """
    temps, trash = [], []
    try:
        for path in quarantine_root(memory_root).iterdir():
            if path.name.startswith(TRASH_PREFIX) and path.is_dir():
                trash.append(path)
            elif path.is_dir() and not path.name.startswith("."):
                temps += [p for p in path.iterdir()
                          if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file()]
    except OSError:  # no quarantine (or one that cannot be listed): nothing to clean
        return sorted(temps), sorted(trash)
    return sorted(temps), sorted(trash)


def summary_text(items: tuple[str, ...], limit: int = REPORT_LINES) -> str:
    """The quarantined samples for a one-line summary: the first ``limit`` lines, then a count.

    Args:
        items: one line per quarantined sample (:meth:`Quarantined.line`).
        limit: lines named one by one.

    Returns:
        ``"N damaged sample(s) quarantined: LINE; LINE; and K more"`` or ``""`` when none.
    """
    if not items:
        return ""
    shown = "; ".join(items[:limit])
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} damaged sample(s) quarantined: {shown}{more}"
