"""Reading a SQLite database that may not be written: a private copy with its WAL replayed.

A state directory pulled from a device (a copied SD card, a read-only mount) holds SQLite files
in WAL mode. SQLite cannot open such a file read-only unless it may write the ``-shm`` index
beside it, and ``immutable=1`` ignores the ``-wal`` file, which after a power loss or a kill
holds the newest committed transactions. :class:`PrivateCopy` copies the database and its WAL
into a temporary folder, where SQLite replays the WAL when the copy is opened: the reader sees
every committed transaction, and nothing is written beside the original.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import weakref
from pathlib import Path

WAL_SUFFIX = "-wal"


class PrivateCopy:
    """A throw-away copy of one SQLite database (and its ``-wal``), removed on :meth:`close`.

    Attributes:
        source: the database that was copied.
        path: the copy; open it with ``sqlite3.connect``. Writes to it are lost on close.
    """

    def __init__(self, source: str | Path):
        """Copy ``source`` and its ``-wal`` file (when present) into a new temporary folder.

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
            shutil.copyfile(self.source, self.path)
            wal = self.source.with_name(self.source.name + WAL_SUFFIX)
            if wal.is_file() and wal.stat().st_size > 0:
                shutil.copyfile(wal, self.path.with_name(self.path.name + WAL_SUFFIX))
        except BaseException:
            self.close()
            raise

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
