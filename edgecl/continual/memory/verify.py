"""Consistency checks of the replay memory: each index row against its files, the folders
against the index. Pure checks over paths and records: the store
(:meth:`~edgecl.continual.memory.ReplayMemory.verify`) runs them inside its write transaction
and applies the repairs, so this module needs nothing of the store and the store owns its index.

Two depths. The quick check (run on every open) costs one ``stat`` and two 2-byte reads per
image and one ``stat`` per label file: the image exists, its length equals the length recorded
at store time, it starts with the JPEG start-of-image marker and ends with the end-of-image
marker (a truncated or overwritten JPEG fails it); the label file exists and is not empty when
the index row records classes (an emptied label file would turn a labelled sample into a
"nothing here" one). The deep check also decodes every image with the project's image rule,
parses every label file with its label rule and compares the classes it holds with the ones the
index row records.

A broken row is ``missing`` (a file is gone) or ``corrupt``; the repairing check moves what is
left of it to the quarantine (:mod:`.quarantine`) before it drops the row.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from edgecl.continual.memory.records import (
    IMAGE_SUFFIX,
    LABEL_SUFFIX,
    SampleRecord,
    classes_of,
    decode_image_file,
    file_stem,
    parse_label_file,
)
from edgecl.continual.memory.quarantine import summary_text
from edgecl.continual.memory.snapshot import TMP_PREFIX, TRASH_PREFIX
from edgecl.errors import EdgeclError, StorageError

PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM})

JPEG_START = b"\xff\xd8"
JPEG_END = b"\xff\xd9"


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`ReplayMemory.verify` found and did.

    Attributes:
        rows_checked: index rows examined.
        missing_rows: ids whose image or label file was missing.
        corrupt_rows: ids whose image failed the quick check (size, JPEG markers) or did not
            decode, or whose label file was malformed (the last two: deep check only).
        orphan_files: sample files no index row refers to.
        temp_files: leftovers of interrupted atomic writes.
        stale_snapshot_dirs: unfinished or half-deleted snapshot folders.
        bound_evictions: ids evicted because a bound (capacity, bytes, held-out quota) was
            exceeded, e.g. after the configuration shrank.
        repaired: whether repairs were attempted.
        unrepaired: one line per problem left in place.
        details: one line per broken row, saying what is wrong with it (with a repair, and
            where its files were kept).
        quarantined: one line per broken row moved to the quarantine (id, label origin,
            source, damaged file, reason, folder; see :mod:`.quarantine`).
        quarantine_pruned: ids of older quarantined samples deleted to keep the quarantine
            within its bound.
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
    details: tuple[str, ...] = ()
    quarantined: tuple[str, ...] = ()
    quarantine_pruned: tuple[int, ...] = ()

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
                + (" (repaired)" if self.repaired and self.problems_found else "")
                + (f"; {summary_text(self.quarantined)}" if self.quarantined else "")
                + (f"; {len(self.quarantine_pruned)} older quarantined sample(s) deleted over "
                   f"the quarantine's bound" if self.quarantine_pruned else ""))


def _refuse_permission(exc: OSError, path: Path) -> None:
    """Raise the one line of a sample file this user may not read: a permission problem (files
    copied in as another user), not damage (before, the sample went to the quarantine).

    Raises:
        StorageError: for a permission error (EACCES, EPERM); other errors return.
    """
    if exc.errno in PERMISSION_ERRNOS:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc} (a permission problem, "
                           f"not damage: give the user running edgecl read access to the "
                           f"replay memory's files; nothing was moved)") from None


def quick_image_problem(path: Path, expected_bytes: int | None) -> str | None:
    """The cheap check of a stored JPEG: length as recorded, start and end markers.

    Args:
        path: the image file (known to exist).
        expected_bytes: its length when stored (None for rows older than that column).

    Returns:
        What is wrong, or None.

    Raises:
        StorageError: this user may not read the file.
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if expected_bytes is not None and size != expected_bytes:
                return f"image {path.name} has {size} bytes, {expected_bytes} were stored"
            if size < len(JPEG_START) + len(JPEG_END):
                return f"image {path.name} has only {size} bytes"
            start = fh.read(len(JPEG_START))
            fh.seek(-len(JPEG_END), os.SEEK_END)
            end = fh.read(len(JPEG_END))
    except OSError as exc:
        _refuse_permission(exc, path)
        return f"image {path.name} is unreadable: {exc.strerror or exc}"
    if start != JPEG_START or end != JPEG_END:
        return f"image {path.name} is not a complete JPEG (start/end marker missing)"
    return None


class RowProblem(NamedTuple):
    """What is wrong with one index row.

    Attributes:
        kind: ``"missing"`` (a file is gone) or ``"corrupt"``.
        reason: what is wrong, naming the file.
        file: the damaged file's name (both names, comma-separated, when both are missing).
    """

    kind: str
    reason: str
    file: str


def row_problem(record: SampleRecord, image_path: Path, label_path: Path,
                deep: bool) -> RowProblem | None:
    """Check one index row against its files.

    Args:
        record: the row.
        image_path: its image file.
        label_path: its label file.
        deep: also decode the image (the labels are parsed and their classes compared with
            the row's in every check).

    Returns:
        None when healthy, else what is wrong.
    """
    if not image_path.is_file() or not label_path.is_file():
        gone = [p.name for p in (image_path, label_path) if not p.is_file()]
        return RowProblem("missing", f"{', '.join(gone)} missing", ", ".join(gone))
    why = quick_image_problem(image_path, record.image_bytes)
    if why is not None:
        return RowProblem("corrupt", why, image_path.name)
    why = quick_label_problem(label_path, record.classes)
    if why is None and deep:
        try:
            decode_image_file(image_path)
        except EdgeclError as exc:
            return RowProblem("corrupt", str(exc), image_path.name)
    return None if why is None else RowProblem("corrupt", why, label_path.name)


def quick_label_problem(path: Path, classes: tuple[int, ...]) -> str | None:
    """The check of a stored label file at every open: not empty when the row records
    classes, and parsed with the label rule, holding the classes the row records (a label
    file is a few lines: before, a garbage one passed the open's check and failed every
    learning round's snapshot read, until ``memory verify`` was run by hand).

    Args:
        path: the label file (known to exist).
        classes: the classes the index row records.

    Returns:
        What is wrong, or None.
    """
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        _refuse_permission(exc, path)
        return f"label {path.name} is unreadable: {exc.strerror or exc}"
    if size == 0 and classes:
        return f"label {path.name} is empty, the index recorded classes {list(classes)}"
    return deep_label_problem(path, classes)


def deep_label_problem(path: Path, classes: tuple[int, ...]) -> str | None:
    """Parse a stored label file and compare its classes with the ones the row records.

    Args:
        path: the label file.
        classes: the classes the index row records.

    Returns:
        What is wrong, or None.

    Raises:
        StorageError: this user may not read the file.
    """
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        _refuse_permission(exc, path)
    try:
        held = classes_of(parse_label_file(path))
    except EdgeclError as exc:
        return str(exc)
    if held != tuple(classes):
        return (f"label {path.name} holds classes {list(held)}, the index recorded "
                f"{list(classes)}")
    return None


def scan_files(root: Path, row_ids: set[int]) -> tuple[list[Path], list[Path]]:
    """Files in ``images/`` and ``labels/`` that no index row owns.

    The files of a broken row (missing or corrupt) are that row's: they are reported (and
    removed) with the row, never as orphans too, so each damaged sample counts once.

    Args:
        root: the memory folder.
        row_ids: ids of every index row (healthy or broken).

    Returns:
        ``(orphans, temps)``: sample files without a row, leftovers of interrupted
        atomic writes (``.<name>.<random>.tmp``), each sorted.
    """
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
            if not (known and int(stem) in row_ids):
                orphans.append(path)
    return sorted(orphans), sorted(temps)


def sample_stems(paths: list[Path]) -> set[str]:
    """The sample ids (file stems in the memory's numbering) among some files.

    Args:
        paths: files of ``images/`` or ``labels/``.

    Returns:
        The stems that name a sample (an image and its label file count once).
    """
    return {p.stem for p in paths if p.suffix in (IMAGE_SUFFIX, LABEL_SUFFIX) and p.stem.isdigit()}


def stale_snapshot_dirs(root: Path) -> list[Path]:
    """Unfinished (``.tmp-``) or half-deleted (``.trash-``) snapshot folders.

    Args:
        root: the memory folder.

    Returns:
        Their paths, sorted.
    """
    snaps = root / "snapshots"
    if not snaps.is_dir():
        return []
    return sorted(p for p in snaps.iterdir()
                  if p.name.startswith(TMP_PREFIX) or p.name.startswith(TRASH_PREFIX))
