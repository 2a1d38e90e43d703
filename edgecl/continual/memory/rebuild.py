"""Rebuilding a lost or damaged memory index from the sample files and the newest snapshot.

Every sample stays on disk as ``images/<id>.jpg`` and ``labels/<id>.txt``; the newest readable
snapshot's ``records.json`` holds the index rows as they were when it was taken. A rebuild
takes each row's provenance (task, source, origin, held-out flag, metrics, capture time) from
that snapshot where it lists the id, and for a sample added after it from its files alone:
classes from the label file, task :data:`~edgecl.frames.STREAM_TASK`, not held out, origin
:data:`UNKNOWN_ORIGIN` (read back as not human-verified, so the sample is replayed but never
used to evaluate a model). Sizes and classes always come from the files. A sample whose image
or label file cannot be read goes to the quarantine (:mod:`.quarantine`) instead of the index.

Lost for good: the stream counters (set to what the rows show: at least that many frames per
task were seen), import content hashes (an image imported again is no longer recognised), the
recorded ``memory.*`` settings and the thumbnail embeddings (recomputed on first use).

The runtime rebuilds by itself at start (:func:`rebuild_damaged_index`), only where a rebuild
is the cure (:func:`damage_to_rebuild`): an index that SQLite says is damaged, or one missing or
empty beside sample files. A storage fault (full disk, I/O error, a file or folder that may not
be written), a lock, or a SQLite file of a newer format is left to the usual open, which reports
it in one line; the tools that read the memory never rebuild (they name ``memory verify
--rebuild-index``).

Crash safety. The new index is built under a temp name beside the old one (the schema is
:mod:`.index`'s), closed (its WAL checkpointed), fsynced; then a marker file records that the
new index is whole and where the old one goes, the old index and its ``-wal`` / ``-shm`` are
renamed to ``index.sqlite.corrupt-<UTC time>`` (kept, never deleted), the new one is renamed
into place, the folder fsynced and the marker removed. A kill leaves either the old index, or
no index with the old one kept aside, or the new index. The next rebuild first settles a swap a
kill cut short (:func:`_settle_cut_swap`): with no index in place it finishes the swap with the
whole new index (before, it built again from the snapshot and files, which lost the rows of a
readable old index that no snapshot held); with the old index still in place it drops the new
one and starts over.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgecl import atomic
from edgecl.continual.memory import quarantine
from edgecl.continual.memory.faults import fault_error, sqlite_damage
from edgecl.continual.memory.index import IndexDB
from edgecl.continual.memory.policies import BACKGROUND_CLASS, primary_class
from edgecl.continual.memory.records import (
    IMAGE_SUFFIX,
    LABEL_SUFFIX,
    SampleRecord,
    classes_of,
    classes_to_text,
    decode_image_file,
    file_stem,
    parse_label_file,
)
from edgecl.continual.memory.snapshot import RECORDS_FILE, _snapshot_names
from edgecl.continual.memory.store import MEMORY_CONFIG_KEY, is_writable
from edgecl.continual.memory.verify import sample_stems, scan_files
from edgecl.errors import LabelError, ReplayMemoryError, StorageError
from edgecl.frames import STREAM_TASK

INDEX_FILE = "index.sqlite"
SIDE_SUFFIXES = ("-wal", "-shm")
TEMP_NAME = ".index.sqlite.rebuild.tmp"
SWAP_MARKER = ".index.sqlite.rebuild.swap"
"""Present while a rebuild swaps its whole new index in; names where the old one goes."""
UNKNOWN_ORIGIN = "unknown"
"""Origin written for a sample no snapshot lists (its labels' origin is not known)."""
FILES_ONLY_SOURCE = "unknown (index rebuilt from the sample files)"
SQLITE_MAGIC = b"SQLite format 3\x00"
READ_VERSION_OFFSET = 19
"""Header byte holding the file format's read version (1: rollback journal, 2: WAL)."""
NEWEST_READ_VERSION = 2
CHECK_BUSY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RebuildReport:
    """What a rebuild did.

    Attributes:
        rows: rows in the new index.
        from_snapshot: rows whose provenance came from the snapshot.
        from_files: rows built from the sample files alone.
        quarantined: one line per sample moved to the quarantine.
        snapshot_id: the snapshot used (None without a readable one).
        names_from: where the class names came from (``snapshot``, ``classes.json`` or None).
        moved_aside: the old index's new path (None when there was none).
        snapshot_notes: snapshots passed over and records left out as damaged, one line each.
        from_index: rows kept from the old index, when it was readable (a rebuild that adopts
            the samples a stale index does not list); counted in neither of the above.
        resumed: this call finished a rebuild a kill cut short (the counts above are then 0
            but for ``rows``: that rebuild's report was lost with it).
    """

    rows: int
    from_snapshot: int
    from_files: int
    quarantined: tuple[str, ...]
    snapshot_id: str | None
    names_from: str | None
    moved_aside: Path | None
    snapshot_notes: tuple[str, ...] = ()
    from_index: int = 0
    resumed: bool = False
    from_answers: int = 0
    """Rows rebuilt from their files whose provenance an operator's answer record gave (source
    ``operator:<item>``, origin ``operator``); counted in ``from_files`` too."""

    def summary(self) -> str:
        """One line for humans."""
        where = (f"the old index was moved to {self.moved_aside}" if self.moved_aside
                 else "there was no old index to keep")
        if self.resumed:
            return (f"index rebuilt: finished the rebuild that a stop cut short, {self.rows} "
                    f"rows; {where}")
        names = f"class names from {self.names_from}" if self.names_from else "no class names"
        parts = ([f"{self.from_index} as the old index listed them"] if self.from_index else [])
        parts += ([f"{self.from_snapshot} from snapshot {self.snapshot_id}"] if self.snapshot_id
                  else ["no readable snapshot"])
        parts.append(f"{self.from_files} from the files only" + (
            f", {self.from_answers} of them an operator's answers as their records say"
            if self.from_answers else ""))
        text = (f"index rebuilt: {self.rows} rows ({', '.join(parts)}), "
                f"{len(self.quarantined)} quarantined, {names}; {where}")
        more = quarantine.summary_text(self.quarantined)
        damaged = "".join(f"; {note}" for note in self.snapshot_notes)
        return text + damaged + (f"; {more}" if more else "")

    def to_json(self) -> dict:
        """The counts as a JSON-ready dict."""
        return {"rows": self.rows, "from_snapshot": self.from_snapshot,
                "from_files": self.from_files, "from_index": self.from_index,
                "quarantined": len(self.quarantined),
                "quarantined_samples": list(self.quarantined), "snapshot_id": self.snapshot_id,
                "names_from": self.names_from, "snapshot_notes": list(self.snapshot_notes),
                "resumed": self.resumed, "from_answers": self.from_answers,
                "moved_aside": None if self.moved_aside is None else str(self.moved_aside)}


def index_problem(memory_root: Path) -> str | None:
    """Why the index of a memory folder needs a rebuild, or None when it is readable.

    Readable means: SQLite opens a private copy of it, ``integrity_check`` passes, and every
    row and the class names read back.

    Args:
        memory_root: the memory folder.
    """
    path = Path(memory_root) / INDEX_FILE
    if not path.is_file():
        return f"the index {path} is missing"
    if path.stat().st_size == 0:
        return f"the index {path} is empty"
    try:
        db = IndexDB(path, read_only=True)
    except ReplayMemoryError as exc:
        return str(exc)
    try:
        problems = db.integrity_problems()
        if problems:
            return f"the index {path} is damaged ({problems[0]})"
        db.records()
        db.get_meta("names")
    except (sqlite3.Error, ReplayMemoryError) as exc:
        return f"the index {path} is damaged ({exc})"
    finally:
        db.close()
    return None


def _newer_file_format(path: Path) -> bool:
    """True when ``path`` is a SQLite file whose header asks for a newer SQLite than any this
    program knows (read version above :data:`NEWEST_READ_VERSION`): written by a newer program,
    not damaged (SQLite says "file is not a database" for both).

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as fh:
        head = fh.read(READ_VERSION_OFFSET + 1)
    return (head.startswith(SQLITE_MAGIC) and len(head) > READ_VERSION_OFFSET
            and head[READ_VERSION_OFFSET] > NEWEST_READ_VERSION)


def damage_to_rebuild(memory_root: Path,
                      busy_timeout_s: float = CHECK_BUSY_TIMEOUT_S) -> str | None:
    """Why the index of a memory folder is a case for an automatic rebuild, or None.

    A case: the index is missing or empty (0 bytes) while sample files are on disk, or SQLite
    says the file is damaged (not a database, malformed, ``integrity_check`` fails). Not a case:
    a readable index, a missing one beside no sample file (a memory not made yet), a folder or
    index that may not be written, a storage fault (full disk, I/O error, a file that cannot be
    opened), a lock another process holds, a SQLite file of a newer format (see
    :func:`_newer_file_format`); opening the memory reports those as it always did. Damaged
    rows in a readable index are no case either: the store's check quarantines them one by one.
    Reads only (a read-only connection).

    Args:
        memory_root: the memory folder.
        busy_timeout_s: how long the check waits for another process's lock.

    Returns:
        One line: ``"the index PATH is missing"``, ``"... is empty (0 bytes)"`` or
        ``"... is damaged (REASON)"``; None when no rebuild is called for.
    """
    root = Path(memory_root)
    path = root / INDEX_FILE
    try:
        if not root.is_dir() or not is_writable(root):
            return None
        size = path.stat().st_size if path.is_file() else None
        if not size:
            if not sample_stems(scan_files(root, set())[0]):
                return None
            return f"the index {path} is " + ("missing" if size is None else "empty (0 bytes)")
        if _newer_file_format(path):
            return None
    except OSError:  # a storage fault: the memory's open names it
        return None
    said = sqlite_damage(path, busy_timeout_s, check="integrity_check")  # small: one row a sample
    return None if said is None else f"the index {path} is damaged ({said})"


def rebuild_damaged_index(memory_root: Path, state_dir: Path | None = None,
                          busy_timeout_s: float = CHECK_BUSY_TIMEOUT_S,
                          provenance: Mapping[int, Mapping] | None = None
                          ) -> tuple[str, RebuildReport] | None:
    """Rebuild the index (:func:`rebuild_index`) when :func:`damage_to_rebuild` finds a case
    for it, as the runtime does at start.

    Args:
        memory_root: the memory folder (``STATE/memory``).
        state_dir: the state directory, for ``classes.json`` (default: the folder above).
        busy_timeout_s: how long the check waits for another process's lock.
        provenance: as :func:`rebuild_index`'s.

    Returns:
        ``(what was wrong, what the rebuild did)``; None when nothing was done.

    Raises:
        StorageError: the rebuild could not write (full disk, read-only); the old index stays.
            The message says what was wrong with the index, then what failed.
        ReplayMemoryError: the rebuild found nothing to rebuild after all.
    """
    why = damage_to_rebuild(memory_root, busy_timeout_s)
    if why is None:
        return None
    try:
        report = rebuild_index(memory_root, state_dir, provenance=provenance)
    except (StorageError, ReplayMemoryError) as exc:
        cls = StorageError if isinstance(exc, StorageError) else ReplayMemoryError
        raise cls(f"replay memory: {why}; {exc}") from None
    return why, report


def rebuild_warning(why: str, report: RebuildReport) -> str:
    """The one warning line for an index rebuilt at start.

    Args:
        why: what was wrong (from :func:`damage_to_rebuild`).
        report: what the rebuild did.

    Returns:
        ``"replay memory: the index PATH is damaged (REASON): rebuilt from the sample files and
        snapshot ID, N rows back (...); the damaged index is kept as PATH"``.
    """
    snap = f"snapshot {report.snapshot_id}" if report.snapshot_id else "no readable snapshot"
    kept = (f"the damaged index is kept as {report.moved_aside}" if report.moved_aside
            else "there was no old index to keep")
    if report.resumed:
        return (f"replay memory: {why}: finished the rebuild that a stop cut short, "
                f"{report.rows} rows back; {kept}")
    text = (f"replay memory: {why}: rebuilt from the sample files and {snap}, {report.rows} "
            f"rows back ({report.from_snapshot} as the snapshot recorded them, "
            f"{report.from_files} from their files only, origin unknown"
            + (f" but for {report.from_answers} an operator's answers as their records say"
               if report.from_answers else "") + "), "
            f"{len(report.quarantined)} samples quarantined; {kept}")
    more = quarantine.summary_text(report.quarantined)
    return text + (f"; {more}" if more else "")


def newest_snapshot(memory_root: Path, notes: list[str] | None = None
                    ) -> tuple[str | None, dict[int, SampleRecord], dict[int, str] | None]:
    """The rows and class names of the newest snapshot whose ``records.json`` reads.

    A snapshot whose file does not read (or is not a list of records) is passed over for the
    one before; within the one used, a record of the wrong shape (``"held_out": "yes"``,
    ``"origin": 5``) is left out, so that its sample is rebuilt from its files alone. Each is
    said in ``notes``.

    Args:
        memory_root: the memory folder.
        notes: where to append one line per snapshot passed over and per record left out.

    Returns:
        ``(snapshot id or None, id -> row, names or None)``.
    """
    notes = [] if notes is None else notes
    snaps = Path(memory_root) / "snapshots"
    try:
        names_found = _snapshot_names(snaps)
    except OSError:
        return None, {}, None
    for name in reversed(names_found):
        try:
            data = json.loads((snaps / name / RECORDS_FILE).read_text(encoding="utf-8"))
            records = data["records"]
            if not isinstance(records, list):
                raise TypeError(f"'records' is {type(records).__name__}, not a list")
            raw = data.get("names")
            names = {int(k): str(v) for k, v in raw.items()} if raw else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            notes.append(f"snapshot {name} passed over ({type(exc).__name__}: "
                         f"{str(exc)[:80] or 'unreadable'})")
            continue  # a damaged snapshot: try the one before
        rows, bad = {}, []
        for record in records:
            try:
                row = SampleRecord.from_json(record)
            except (ValueError, KeyError, TypeError) as exc:
                bad.append(str(exc)[:100] or type(exc).__name__)
                continue
            rows[row.id] = row
        if bad:
            notes.append(f"{len(bad)} record(s) of snapshot {name} left out, their samples "
                         f"rebuilt from their files ({bad[0]})")
        return str(data.get("snapshot_id") or name), rows, names
    return None, {}, None


def registry_names(state_dir: Path) -> dict[int, str] | None:
    """The class names of ``STATE/classes.json`` (None when absent or unreadable).

    Args:
        state_dir: the state directory.
    """
    from edgecl.models.classes import ClassRegistry, ClassRegistryError

    if not (Path(state_dir) / "classes.json").is_file():
        return None
    try:
        return ClassRegistry(state_dir).names() or None
    except ClassRegistryError:
        return None


def _remove(path: Path) -> None:
    for p in [path] + [Path(f"{path}{s}") for s in SIDE_SUFFIXES]:
        if p.exists():
            p.unlink()


def _read_sample(root: Path, sample_id: int) -> tuple[dict, str, str] | tuple[None, str, str]:
    """The file-derived values of one sample, or ``(None, damaged file, reason)``."""
    stem = file_stem(sample_id)
    image = root / "images" / f"{stem}{IMAGE_SUFFIX}"
    label = root / "labels" / f"{stem}{LABEL_SUFFIX}"
    for path in (image, label):
        if not path.is_file():
            return None, str(path), f"{path} is missing"
    try:
        pixels = decode_image_file(image)
    except ReplayMemoryError as exc:
        return None, str(image), str(exc)
    try:
        labels = parse_label_file(label)
    except LabelError as exc:
        return None, str(label), str(exc)
    try:
        sizes = [os.stat(p) for p in (image, label)]
    except OSError as exc:
        return None, str(exc.filename), str(exc.strerror or exc)
    n_bytes = sum(max(int(s.st_size), int(getattr(s, "st_blocks", 0)) * 512) for s in sizes)
    return {"classes": classes_of(labels), "width": int(pixels.shape[1]),
            "height": int(pixels.shape[0]), "bytes": n_bytes,
            "image_bytes": int(sizes[0].st_size), "mtime": float(sizes[0].st_mtime)}, "", ""


def _row(sample_id: int, files: dict, rec: SampleRecord | None,
         given: Mapping | None = None) -> dict:
    """The index row of one sample (file values always; provenance from ``rec`` when given,
    else ``source``, ``origin`` and ``ts_s`` from ``given``)."""
    classes = tuple(files["classes"])
    row = {"id": int(sample_id), "classes": classes_to_text(classes),
           "primary_class": BACKGROUND_CLASS, "width": files["width"],
           "height": files["height"], "bytes": files["bytes"], "image_bytes": files["image_bytes"]}
    if rec is None:
        given = given or {}
        return {**row, "task": STREAM_TASK, "source": str(given.get("source") or FILES_ONLY_SOURCE),
                "ts_s": float(given.get("ts_s") or files["mtime"]), "held_out": 0,
                "origin": str(given.get("origin") or UNKNOWN_ORIGIN), "times_replayed": 0}
    return {**row, "task": rec.task, "source": rec.source, "ts_s": float(rec.ts_s),
            "held_out": int(rec.held_out), "origin": rec.origin.value,
            "recall_baseline": rec.recall_baseline, "last_recall": rec.last_recall,
            "last_loss": rec.last_loss, "times_replayed": int(rec.times_replayed)}


def _last_id_given(root: Path, snapshot_rows: dict[int, SampleRecord], stems: set[str]) -> int:
    """The largest id ever seen (files, snapshot rows, quarantine): ids are never reused."""
    ids = [int(s) for s in stems] + list(snapshot_rows)
    try:
        ids += [int(p.name) for p in quarantine.quarantine_root(root).iterdir()
                if p.name.isdigit()]
    except OSError:  # no quarantine yet
        pass
    return max(ids, default=0)


def rebuild_index(memory_root: Path, state_dir: Path | None = None,
                  adopt_unlisted: bool = False,
                  provenance: Mapping[int, Mapping] | None = None) -> RebuildReport:
    """Rebuild the index of a memory folder (see the module docstring).

    Args:
        memory_root: the memory folder (``STATE/memory``).
        state_dir: the state directory, for ``classes.json`` (default: the folder above).
        adopt_unlisted: also rebuild a readable index (an older copy restored, which does
            not list samples stored since): its rows are kept as they are, the samples it
            does not list are taken from the newest snapshot or their files, its stream
            counters are kept where the rows show fewer frames. Before, the command that the
            'does not list' error named refused such an index as having nothing to rebuild.
        provenance: sample id -> ``{"source", "origin", "ts_s"}`` known from elsewhere (the
            operator queue's answer records: :meth:`~edgecl.runtime.labels.OperatorQueue.
            answered_provenance`), for a sample that neither the old index nor the snapshot
            lists (before, an answer stored after the newest snapshot came back of unknown
            origin: off the answered list, and no longer correctable or withdrawable).

    Returns:
        What was rebuilt, quarantined and kept.

    Raises:
        ReplayMemoryError: the index is readable and ``adopt_unlisted`` is False (nothing to
            rebuild).
        StorageError: the disk refused a write (full, read-only); the old index stays.
    """
    root = Path(memory_root)
    state_dir = Path(state_dir) if state_dir is not None else root.parent
    try:
        settled = _settle_cut_swap(root)
        if settled is not None:
            return RebuildReport(rows=_row_count(root), from_snapshot=0, from_files=0,
                                 quarantined=(), snapshot_id=None, names_from=None,
                                 moved_aside=settled[0], resumed=True)
    except OSError as exc:
        raise fault_error(exc, f"cannot finish the rebuild of the memory index in {root}",
                          root) from None
    readable = index_problem(root) is None
    if readable and not adopt_unlisted:
        raise ReplayMemoryError(f"the index {root / INDEX_FILE} is readable; nothing to rebuild")
    notes: list[str] = []
    snap_id, snap_rows, snap_names = newest_snapshot(root, notes)
    names, names_from = snap_names, "snapshot" if snap_names else None
    index_rows, index_names, counters, hashes, settings = (
        _readable_index(root) if readable else ({}, None, {}, {}, None))
    if index_names:
        names, names_from = index_names, "the old index"
    reg = registry_names(state_dir)
    if reg and (not names or set(reg) >= set(names)):
        names, names_from = reg, "classes.json"
    tmp = root / TEMP_NAME
    try:
        stems = sample_stems(scan_files(root, set())[0])
        if readable and not {int(stem) for stem in stems} - set(index_rows):
            raise ReplayMemoryError(f"the index {root / INDEX_FILE} is readable and lists every "
                                    f"sample on disk; nothing to rebuild")
        _remove(tmp)
        quarantined, rows, counts, mismatched, answered = [], [], {}, 0, 0
        seq = quarantine.next_seq(root)
        for stem in sorted(stems):
            sample_id = int(stem)
            files, damaged, reason = _read_sample(root, sample_id)
            rec = index_rows.get(sample_id) or snap_rows.get(sample_id)
            if rec is not None and files is not None and not _row_fits(rec, files):
                # another device's row under this id (its index swapped in): its source, hash
                # and held-out flag are not this file's (before, kept: an import of that
                # device's folder then took these samples for its own and --relabel deleted them)
                mismatched += 1
                index_rows.pop(sample_id, None)
                hashes.pop(sample_id, None)
                rec = None
            if files is None:
                row = rec.to_json() if rec else {"id": sample_id, "origin": UNKNOWN_ORIGIN,
                                                 "source": FILES_ONLY_SOURCE}
                item = quarantine.quarantine_sample(
                    root, sample_id, [root / "images" / f"{stem}{IMAGE_SUFFIX}",
                                      root / "labels" / f"{stem}{LABEL_SUFFIX}"],
                    row, "corrupt" if Path(damaged).exists() else "missing", reason, damaged, seq)
                seq += 1
                quarantined.append(item.line())
                continue
            given = (provenance or {}).get(sample_id) if rec is None else None
            row = _row(sample_id, files, rec, given)
            answered += given is not None
            if hashes.get(sample_id):  # an import's: the same image imported again is known
                row["content_hash"] = hashes[sample_id]
            if not row["held_out"]:  # the class an image counts for, as the store chooses it
                row["primary_class"] = primary_class(files["classes"], counts)
                counts[row["primary_class"]] = counts.get(row["primary_class"], 0) + 1
            rows.append((row, "index" if sample_id in index_rows else
                         "snapshot" if rec is not None else "files"))
        _write_index(tmp, [r for r, _ in rows], names,
                     _last_id_given(root, {**snap_rows, **index_rows}, stems), counters,
                     settings)
        moved = _swap_in(root, tmp)
    except OSError as exc:
        _remove_quietly(tmp)
        raise fault_error(exc, f"cannot rebuild the memory index in {root}", root) from None
    except sqlite3.Error as exc:
        _remove_quietly(tmp)
        raise fault_error(exc, f"cannot rebuild the memory index in {root}", tmp) from None
    came = [known for _, known in rows]
    if came.count("files"):
        notes.append(f"{came.count('files')} sample(s) rebuilt from their files alone are "
                     f"trained on, not held out, and carry no import hash: an import of their "
                     f"folder stores its images again")
    if mismatched:
        notes.append(f"{mismatched} row(s) of the old index did not fit their files (size in "
                     f"bytes or pixels; another device's index?): those samples were rebuilt "
                     f"from their files alone")
    return RebuildReport(rows=len(rows), from_snapshot=came.count("snapshot"),
                         from_files=came.count("files"), quarantined=tuple(quarantined),
                         snapshot_id=snap_id, names_from=names_from if names else None,
                         moved_aside=moved, snapshot_notes=tuple(notes),
                         from_index=came.count("index"), from_answers=answered)


def _row_fits(rec: SampleRecord, files: dict) -> bool:
    """Whether a recorded row describes this sample file: the same image size in pixels and,
    where the row records it, the same file length in bytes."""
    return (int(rec.width) == files["width"] and int(rec.height) == files["height"]
            and (rec.image_bytes is None or int(rec.image_bytes) == files["image_bytes"]))


def _readable_index(root: Path) -> tuple[dict[int, SampleRecord], dict[int, str] | None,
                                         dict[str, int], dict[int, str], object]:
    """The rows, class names, stream counters, content hashes and recorded memory settings
    of a readable index (read from a private copy), for a rebuild that adopts the samples it
    does not list."""
    db = IndexDB(root / INDEX_FILE, read_only=True)
    try:
        with db.read() as conn:
            rows = {r.id: r for r in db.records()}
            raw = db.get_meta("names")
            counters = db.load_counters()
            settings = db.get_meta(MEMORY_CONFIG_KEY)
            hashes = {int(i): str(h) for i, h in conn.execute(
                "SELECT id, content_hash FROM samples WHERE content_hash IS NOT NULL")}
    finally:
        db.close()
    names = {int(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) and raw else None
    return rows, names, counters, hashes, settings


def _row_count(root: Path) -> int:
    """The number of rows in the memory's index."""
    db = IndexDB(root / INDEX_FILE, read_only=True)
    try:
        return len(db.records())
    finally:
        db.close()


def _remove_quietly(path: Path) -> None:
    try:
        _remove(path)
    except OSError:  # the temp index of a failed rebuild: the error being raised matters more
        pass


def _write_index(path: Path, rows: list[dict], names: dict[int, str] | None, last_id: int,
                 counters: dict[str, int] | None = None, settings: object = None) -> None:
    """Write a complete index at ``path`` (the schema and its writes are :mod:`.index`'s);
    each stream counter is the larger of what the rows show and ``counters``, and the
    recorded memory settings are ``settings`` (an old readable index's, when given)."""
    db = IndexDB(path)
    try:
        with db.write():
            for row in rows:
                db.insert(row)
            db.reserve_ids(last_id)
            seen: dict[str, int] = {"frames/all": len(rows)}
            for row in rows:
                key = f"frames/task:{row['task']}"
                seen[key] = seen.get(key, 0) + 1
            for key, n in (counters or {}).items():
                seen[key] = max(seen.get(key, 0), int(n))
            db.add_counters(seen)
        if names:
            db.set_meta("names", {str(int(k)): str(v) for k, v in names.items()})
        if settings is not None:
            db.set_meta(MEMORY_CONFIG_KEY, settings)
        db.checkpoint()
    finally:
        db.close()
    for side in SIDE_SUFFIXES:  # closed: the WAL is folded into the file
        side_path = Path(f"{path}{side}")
        if side_path.exists():
            side_path.unlink()
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _swap_in(root: Path, tmp: Path) -> Path | None:
    """Move the old index (and its ``-wal`` / ``-shm``) aside, then the whole new one at
    ``tmp`` into place, under :data:`SWAP_MARKER` (see the module docstring).

    Returns:
        The old index's new path, None when there was none.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = atomic.damaged_copy_path(root / INDEX_FILE, stamp, ("",) + SIDE_SUFFIXES)
    atomic.atomic_write_json(root / SWAP_MARKER, {"aside": aside.name})
    atomic.fsync_dir(root)
    return _finish_swap(root, tmp, aside)


def _finish_swap(root: Path, tmp: Path, aside: Path) -> Path | None:
    """The renames of :func:`_swap_in` from wherever a kill stopped them, then the marker's
    removal: each side of the old index still in place goes aside, the new index comes in.

    Returns:
        The old index's new path, None when there was none.
    """
    index = root / INDEX_FILE
    for side in ("",) + SIDE_SUFFIXES:  # the main file first; a stale WAL must never meet
        src = Path(f"{index}{side}")     # the new index
        if src.exists():
            os.replace(src, Path(f"{aside}{side}"))
    atomic.fsync_dir(root)  # the old index is aside before the new one takes its name
    os.replace(tmp, index)
    atomic.fsync_dir(root)
    _remove(root / SWAP_MARKER)
    atomic.fsync_dir(root)
    return aside if aside.exists() else None


def _settle_cut_swap(root: Path) -> tuple[Path | None] | None:
    """Settle a swap a kill cut short (:data:`SWAP_MARKER` present).

    The old index's main file is renamed first, so: with it still in place nothing was
    renamed, and the new index (or what is left of it) is dropped; with it gone and the whole
    new index at :data:`TEMP_NAME`, the renames are finished. A marker that cannot be read
    (cut short as it was written) means no rename began.

    Returns:
        ``(the old index's new path or None,)`` when the swap was finished; None otherwise.

    Raises:
        OSError: a rename or removal failed (full or read-only disk).
    """
    marker, tmp = root / SWAP_MARKER, root / TEMP_NAME
    if not marker.exists():
        return None
    try:
        name = json.loads(marker.read_text(encoding="utf-8"))["aside"]
    except (ValueError, KeyError, TypeError):
        name = None
    finished = None
    if (isinstance(name, str) and name.startswith(f"{INDEX_FILE}.corrupt-")
            and "/" not in name and not (root / INDEX_FILE).exists() and tmp.is_file()):
        finished = (_finish_swap(root, tmp, root / name),)
    _remove(tmp)
    _remove(marker)
    atomic.fsync_dir(root)
    return finished
