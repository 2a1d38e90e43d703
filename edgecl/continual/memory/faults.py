"""How the replay memory reports storage faults: one :class:`~edgecl.errors.StorageError` line
(what failed and where) for a full disk or an unwritable directory, a
:class:`~edgecl.errors.ReplayMemoryError` for everything else (damage, missing files);
:func:`is_damage` tells a damaged file from both a storage fault and a lock (for the state
directory's other SQLite files too: the metrics database)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from edgecl import sqlite_room
from edgecl.errors import (STORAGE_ERRNOS, EdgeclError, ReplayMemoryError, StorageError,
                           misplaced_path)

# sqlite3 error names (prefixes) with the same meaning.
STORAGE_SQLITE_NAMES = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN",
                        "SQLITE_PERM")
SQLITE_DAMAGE_CODES = frozenset({11, 26})
"""SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes): the file is damaged."""


def is_storage_fault(exc: BaseException) -> bool:
    """True when an OSError or sqlite3 error means a full disk or an unwritable file/directory.

    Args:
        exc: the error raised.

    Returns:
        Whether it is a storage fault (as opposed to damage or a programming error).
    """
    if isinstance(exc, OSError):
        return exc.errno in STORAGE_ERRNOS
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc).lower()
        return (name.startswith(STORAGE_SQLITE_NAMES) or "disk is full" in text
                or "readonly" in text or "unable to open" in text)
    return False


def is_damage(exc: BaseException) -> bool:
    """True when SQLite says a file is not (or no longer) a database: ``SQLITE_CORRUPT`` or
    ``SQLITE_NOTADB``. Never for a storage fault (a full disk, a read-only or unopenable file,
    an I/O error) nor for a lock, which are not cured by rebuilding the file.

    Args:
        exc: the error raised.

    Returns:
        Whether the file itself is damaged.
    """
    if not isinstance(exc, sqlite3.DatabaseError) or is_storage_fault(exc):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in SQLITE_DAMAGE_CODES
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def sqlite_damage(path: Path, busy_timeout_s: float,
                  also: Callable[[sqlite3.Connection], str | None] | None = None,
                  check: str = "quick_check") -> str | None:
    """What SQLite says is damaged in a database file: ``PRAGMA quick_check`` through a
    read-only connection (one that may write deletes, on closing, a WAL it cannot use: a
    damaged copy is kept whole). Used for the memory's index and the metrics database.

    Args:
        path: the database file.
        busy_timeout_s: how long the check waits for another process's lock.
        also: a check of the file's contents that SQLite's cannot see (the metrics database's
            text in a number column), run on the same connection when the pages are whole:
            what it returns is the damage.
        check: the SQLite check, ``quick_check`` or ``integrity_check`` (slower: also
            compares each index with its table).

    Returns:
        The damage in one line, or None: also when the check itself cannot run (a storage
        fault, a lock), which the connection that opens the file for use then reports.
    """
    try:
        conn = sqlite_room.connect(f"{Path(os.path.abspath(path)).as_uri()}?mode=ro",
                                   file_path=os.path.abspath(path), uri=True,
                                   timeout=busy_timeout_s, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        if check not in ("quick_check", "integrity_check"):
            raise ValueError(f"unknown SQLite check {check!r}")
        problems = [str(row[0]) for row in conn.execute(f"PRAGMA {check}(1)")]
        if problems == ["ok"]:
            return None if also is None else also(conn)
    except sqlite3.Error as exc:
        return str(exc) if is_damage(exc) else None
    finally:
        conn.close()
    return " ".join(" ".join(problems).split()) or "quick_check gave no answer"


def fault_error(exc: OSError | sqlite3.Error, what: str, where: object,
                note: str = "") -> EdgeclError:
    """The one-line error to raise for ``exc``.

    Args:
        exc: the OSError or sqlite3 error.
        what: what was being done, e.g. ``"cannot store sample from cam0"``.
        where: the path involved when the error names none.
        note: appended after ``"; "`` when given (e.g. what was kept).

    Returns:
        A StorageError for a storage fault, else a ReplayMemoryError; the message reads
        ``"<what>: <reason> (<path>)[; <note>]"``.
    """
    cls = StorageError if is_storage_fault(exc) else ReplayMemoryError
    misplaced = misplaced_path(exc) if isinstance(exc, OSError) else None
    if misplaced:  # "File exists (D/memory/images)" said nothing of a file where a folder belongs
        return cls(f"{what}: {misplaced}" + (f"; {note}" if note else ""))
    at = getattr(exc, "filename", None) or where
    reason = error_reason(exc, at)
    if not note and (_is_full(exc) or reason.startswith("the disk is full")):
        note = "free some room on its volume and run it again (nothing stored was lost)"
    return cls(f"{what}: {reason} ({at})" + (f"; {note}" if note else ""))


def _is_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full (an OSError's ENOSPC or EDQUOT, SQLite's
    SQLITE_FULL)."""
    from edgecl.errors import is_disk_full

    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        return name.startswith("SQLITE_FULL") or "disk is full" in str(exc).lower()
    return is_disk_full(exc)


def error_reason(exc: BaseException, where: object) -> str:
    """What an OSError or sqlite3 error says, in words: a SQLite I/O error on a disk with under
    :data:`FULL_DISK_BYTES` free is a full disk (SQLite says "disk I/O error" when a full disk
    refuses its journal, which reads as a failing card).

    Args:
        exc: the error.
        where: the file involved (its disk's free space is looked at).

    Returns:
        e.g. ``"the disk is full (0 KiB free; SQLite: disk I/O error)"``.
    """
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, sqlite3.Error) and is_storage_fault(exc) and "disk is full" not in reason:
        free = _free_bytes(where)
        if free is not None and free < FULL_DISK_BYTES:
            reason = f"the disk is full ({free / 1024:.0f} KiB free; SQLite: {reason})"
    return reason


def disk_nearly_full(where: object) -> bool:
    """Whether the file system holding ``where`` has under :data:`FULL_DISK_BYTES` free (the
    rule by which :func:`error_reason` calls a SQLite I/O error a full disk).

    Args:
        where: a file or folder (its nearest existing folder is looked at).
    """
    free = _free_bytes(where)
    return free is not None and free < FULL_DISK_BYTES


FULL_DISK_BYTES = 1 << 20
"""Free space below which a SQLite I/O error is reported as a full disk."""


def _free_bytes(where: object) -> int | None:
    """Free bytes of the file system holding ``where`` (its nearest existing folder), or None."""
    import shutil

    path = Path(str(where))
    for folder in (path, *path.parents):
        if folder.is_dir():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def rebuild_hint(memory_root: Path) -> str:
    """The note naming the rebuild command, for errors about a damaged or missing index.

    Args:
        memory_root: the memory folder (``STATE/memory``).

    Returns:
        ``"'edgecl memory verify --rebuild-index --state-dir STATE' rebuilds it ..."``.
    """
    return (f"'edgecl memory verify --rebuild-index --state-dir {Path(memory_root).parent}' "
            f"rebuilds it from the sample files and the newest snapshot")
