"""Reading a SQLite database that may not be written: a private copy with its WAL replayed.

A state directory pulled from a device (a copied SD card, a read-only mount) holds SQLite files
in WAL mode. SQLite cannot open such a file read-only unless it may write the ``-shm`` index
beside it, and ``immutable=1`` ignores the ``-wal`` file, which after a power loss or a kill
holds the newest committed transactions. :class:`PrivateCopy` copies the database and its WAL
into a temporary folder, where SQLite replays the WAL when the copy is opened: the reader sees
every committed transaction, and nothing is written beside the original.

A live writer may checkpoint (move WAL pages into the database file and start the WAL afresh)
between the two copies, which gives a database older than a WAL that continues a newer one: SQLite
then reads it as damaged. The files are therefore copied again while either changed meanwhile;
once one did (a writer is at work), the copy is taken with SQLite's online backup from a read-only
connection instead, one consistent snapshot. A database that nobody writes (a pulled card) is only
copied: the read-only connection would rebuild a stale ``-shm`` index beside it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
import weakref
from pathlib import Path

from edgecl import sqlite_room

WAL_SUFFIX = "-wal"
SHM_SUFFIX = "-shm"
BUSY_TIMEOUT_S = 5.0
"""How long the online backup waits for a writer's exclusive lock."""
COPY_ATTEMPTS = 20
"""Copies taken at most while a writer keeps changing the files; the last one is kept."""
RETRY_WAIT_S = 0.02
"""First wait before a copy is taken again (doubled each time, at most 0.5 s)."""


class PrivateCopy:
    """A throw-away copy of one SQLite database (and its ``-wal``), removed on :meth:`close`.

    Attributes:
        source: the database that was copied.
        path: the copy; open it with ``sqlite3.connect``. Writes to it are lost on close.
    """

    def __init__(self, source: str | Path):
        """Copy ``source`` and its ``-wal`` file (when present) into a new temporary folder.

        The two are copied again (up to :data:`COPY_ATTEMPTS` times) while either changed
        during the copy, so that a checkpoint does not pair an older database with a newer WAL;
        after such a change, SQLite's online backup of one consistent snapshot is taken instead
        where the writer's ``-shm`` index is there to share.

        Args:
            source: the SQLite database file.

        Raises:
            OSError: the database cannot be read, or the temporary folder cannot be written.
        """
        self.source = Path(source)
        folder = Path(tempfile.mkdtemp(prefix="edgecl-db-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, folder, True)
        self.path = folder / self.source.name
        try:
            wait_s = RETRY_WAIT_S
            for attempt in range(COPY_ATTEMPTS):
                if (attempt and self._backup()) or self._copy_once():
                    break
                time.sleep(wait_s)
                wait_s = min(0.5, wait_s * 2)
        except BaseException:
            self.close()
            raise

    def _backup(self) -> bool:
        """Take the copy with SQLite's online backup where a writer's ``-shm`` index is there.

        Returns:
            True when the copy was taken; False where there is no index to share or it may not
            be written (the files are copied instead), or the backup failed (busy, damaged).
        """
        shm = self.source.with_name(self.source.name + SHM_SUFFIX)
        if not (shm.is_file() and os.access(shm, os.R_OK | os.W_OK)):
            return False
        uri = f"file:{urllib.parse.quote(os.fsencode(self.source.absolute()))}?mode=ro"
        try:
            source = sqlite_room.connect(uri, file_path=self.source.absolute(), uri=True,
                                         timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error:
            return False
        try:
            self.path.unlink(missing_ok=True)
            self.path.with_name(self.path.name + WAL_SUFFIX).unlink(missing_ok=True)
            copy = sqlite3.connect(str(self.path))
            try:
                source.backup(copy)
            finally:
                copy.close()
            return True
        except sqlite3.Error:
            return False
        finally:
            source.close()

    def _copy_once(self) -> bool:
        """Copy the database and its WAL once; True when neither changed while they were copied.

        Raises:
            OSError: a file cannot be read, or the copy cannot be written.
        """
        wal = self.source.with_name(self.source.name + WAL_SUFFIX)
        wal_copy = self.path.with_name(self.path.name + WAL_SUFFIX)
        before = (_identity(self.source), _identity(wal))
        shutil.copyfile(self.source, self.path)
        wal_copy.unlink(missing_ok=True)
        if before[1] is not None and before[1][1] > 0:
            try:
                shutil.copyfile(wal, wal_copy)
            except FileNotFoundError:
                return False  # the writer closed and removed it: take both again
        return (_identity(self.source), _identity(wal)) == before

    def connect(self, **kwargs) -> sqlite3.Connection:
        """Open the copy (its WAL, if any, is replayed into it on the first read).

        Args:
            **kwargs: passed to :func:`sqlite3.connect`.

        Returns:
            A connection to the copy.
        """
        return sqlite3.connect(str(self.path), **kwargs)

    def close(self) -> None:
        """Delete the copy (a second call does nothing)."""
        self._cleanup()


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size in bytes, modification time in ns) of ``path``; None when it is missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns
