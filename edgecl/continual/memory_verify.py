"""Consistency check and repair of the replay memory (index rows vs files, bounds)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgecl.continual.memory_records import (
    IMAGE_SUFFIX,
    LABEL_SUFFIX,
    SampleRecord,
    decode_image_file,
    file_stem,
    parse_label_file,
)
from edgecl.continual.memory_snapshot import TMP_PREFIX, TRASH_PREFIX
from edgecl.errors import EdgeclError

if TYPE_CHECKING:
    from edgecl.continual.memory import ReplayMemory

JPEG_END = b"\xff\xd9"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_memory` found and did.

    Attributes:
        rows_checked: index rows examined.
        missing_rows: ids whose image or label file was missing.
        corrupt_rows: ids whose image did not decode or whose label file was malformed
            (deep check only).
        orphan_files: sample files no index row refers to.
        temp_files: leftovers of interrupted atomic writes.
        stale_snapshot_dirs: unfinished or half-deleted snapshot folders.
        bound_evictions: ids evicted because a bound (capacity, bytes, held-out quota) was
            exceeded, e.g. after the configuration shrank.
        repaired: whether repairs were attempted.
        unrepaired: one line per problem left in place.
    """

    rows_checked: int = 0
    missing_rows: tuple[int, ...] = ()
    corrupt_rows: tuple[int, ...] = ()
    orphan_files: tuple[str, ...] = ()
    temp_files: tuple[str, ...] = ()
    stale_snapshot_dirs: tuple[str, ...] = ()
    bound_evictions: tuple[int, ...] = ()
    repaired: bool = False
    unrepaired: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing is left broken."""
        return not self.unrepaired

    @property
    def problems_found(self) -> int:
        """Number of problems found (repaired or not)."""
        return (len(self.missing_rows) + len(self.corrupt_rows) + len(self.orphan_files)
                + len(self.temp_files) + len(self.stale_snapshot_dirs) + len(self.bound_evictions))

    def to_json(self) -> dict:
        """JSON-ready dict with lists instead of tuples, plus ``ok``."""
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        out["ok"] = self.ok
        return out

    def summary(self) -> str:
        """One line for humans."""
        state = "ok" if self.ok else f"{len(self.unrepaired)} problem(s) NOT repaired"
        return (f"{state}: {self.rows_checked} rows checked, {len(self.missing_rows)} with missing "
                f"files, {len(self.corrupt_rows)} corrupt, {len(self.orphan_files)} orphan files, "
                f"{len(self.temp_files)} temp files, {len(self.stale_snapshot_dirs)} stale "
                f"snapshot dirs, {len(self.bound_evictions)} evicted over bounds"
                + (" (repaired)" if self.repaired and self.problems_found else ""))


def _row_problem(mem: "ReplayMemory", rec: SampleRecord, deep: bool) -> str | None:
    img, lbl = mem.image_path(rec.id), mem.label_path(rec.id)
    if not img.is_file() or not lbl.is_file():
        return "missing"
    if not deep:
        return None
    try:
        if not img.read_bytes().endswith(JPEG_END):
            return "corrupt"
        decode_image_file(img)
        parse_label_file(lbl)
    except (OSError, EdgeclError):
        return "corrupt"
    return None


def _scan_files(root: Path, good_ids: set[int]) -> tuple[list[Path], list[Path]]:
    orphans, temps = [], []
    for sub, suffix in (("images", IMAGE_SUFFIX), ("labels", LABEL_SUFFIX)):
        folder = root / sub
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            path = Path(entry.path)
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                temps.append(path)
                continue
            stem, ext = os.path.splitext(entry.name)
            known = ext == suffix and stem.isdigit() and file_stem(int(stem)) == stem
            if not (known and int(stem) in good_ids):
                orphans.append(path)
    return sorted(orphans), sorted(temps)


def _stale_snapshot_dirs(root: Path) -> list[Path]:
    snaps = root / "snapshots"
    if not snaps.is_dir():
        return []
    return sorted(p for p in snaps.iterdir()
                  if p.name.startswith(TMP_PREFIX) or p.name.startswith(TRASH_PREFIX))


def _bound_problems(mem: "ReplayMemory") -> list[str]:
    db = mem._db
    out = []
    if db.count(held_out=False) > mem.train_capacity:
        out.append(f"{db.count(held_out=False)} training samples exceed {mem.train_capacity} slots")
    if db.count(held_out=True) > mem.holdout_capacity:
        out.append(f"{db.count(held_out=True)} held-out samples exceed {mem.holdout_capacity} slots")
    if db.total_bytes() > mem.sample_budget_bytes:
        out.append(f"{db.total_bytes()} sample bytes exceed the budget of "
                   f"{mem.sample_budget_bytes}")
    return out


def _remove_paths(mem: "ReplayMemory", files: list[Path], dirs: list[Path]) -> list[str]:
    failed = mem._unlink(files)
    for folder in dirs:
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            failed.append(f"{folder}: {exc.strerror or exc}")
    return failed


def verify_memory(mem: "ReplayMemory", repair: bool = True, deep: bool = False) -> VerifyReport:
    """Check that the index and the files agree and that the bounds hold.

    Runs under the index write lock, so no add (in any process) is half-way through: every
    file without a row is an orphan, every temp file a leftover.

    Args:
        mem: the memory.
        repair: delete broken rows, orphans, temp files and stale snapshot folders, and evict
            over bounds. Without it, every problem found is reported as unrepaired.
        deep: also decode every image and parse every label file.

    Returns:
        The report.
    """
    db = mem._db
    integrity = db.integrity_problems()
    if integrity:
        return VerifyReport(repaired=repair, unrepaired=tuple(
            f"index {db.path} is damaged: {p}" for p in integrity[:5]))
    unrepaired: list[str] = []
    with db.write():
        records = db.records()
        verdicts = {r.id: _row_problem(mem, r, deep) for r in records}
        missing = sorted(i for i, v in verdicts.items() if v == "missing")
        corrupt = sorted(i for i, v in verdicts.items() if v == "corrupt")
        good = {i for i, v in verdicts.items() if v is None}
        orphans, temps = _scan_files(mem.root, good)
        stale = _stale_snapshot_dirs(mem.root)
        evicted: list[int] = []
        if repair:
            for sample_id in missing + corrupt:
                db.delete(sample_id)
            evicted = mem.enforce_bounds()
            unrepaired += _remove_paths(mem, orphans + temps, stale)
        else:
            unrepaired += _bound_problems(mem)
    if repair:
        unrepaired += mem._unlink_samples(missing + corrupt + evicted)
    else:
        unrepaired += ([f"row {i}: files missing" for i in missing]
                       + [f"row {i}: image or labels corrupt" for i in corrupt]
                       + [f"orphan file {p}" for p in orphans + temps]
                       + [f"stale snapshot folder {p}" for p in stale])
    return VerifyReport(rows_checked=len(records), missing_rows=tuple(missing),
                        corrupt_rows=tuple(corrupt), orphan_files=tuple(map(str, orphans)),
                        temp_files=tuple(map(str, temps)), stale_snapshot_dirs=tuple(map(str, stale)),
                        bound_evictions=tuple(evicted), repaired=repair,
                        unrepaired=tuple(unrepaired))
