"""Room for SQLite's WAL index where the file system's blocks are smaller than 4 KiB.

SQLite maps a WAL database's index (the ``-shm`` file) into memory and grows it by writing one
byte at the end of each 4 KiB page, taking for granted that this gives the whole page disk
room. On a file system whose blocks are smaller (ext4 made with 1 KiB blocks: what
``mkfs.ext4`` picks for a volume under 512 MiB, such as a small data partition), the rest of
each page stays a hole; when the disk is full, SQLite's first touch of a hole kills the process
with SIGBUS, without a word (measured on such a volume: ``edgecl run``, ``learn`` and
``models promote`` died with exit code 135 at 10-35 KiB free, the detector with them).

Where the blocks are smaller than that, :func:`connect` and :func:`before_write` therefore
refuse to open or write a database with less than :data:`WAL_INDEX_ROOM_BYTES` free, raising
SQLite's own full-disk error (which every caller already reports as a full disk), and give
the index file's holes real blocks (``posix_fallocate``) once SQLite has mapped it. Elsewhere
they do nothing more than :func:`sqlite3.connect`.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

WAL_INDEX_ROOM_BYTES = 64 * 1024
"""Free bytes below which a database on a small-block file system is neither opened nor
written: two of the index's 32 KiB regions."""
FULL_DISK = "database or disk is full"
"""The message of SQLite's own SQLITE_FULL error, which callers report as a full disk."""
SHM_SUFFIX = "-shm"
SHM_STEP_BYTES = 4096
"""The step at which SQLite's unix VFS writes a byte to grow ``-shm`` (its ``pgsz``): blocks
this size or larger get no hole, whatever the machine's memory page size."""


def free_bytes_if_small_blocks(directory: str | os.PathLike) -> int | None:
    """The bytes free to this user on the file system holding ``directory`` when its blocks are
    smaller than :data:`SHM_STEP_BYTES`; None on any other file system, or when it cannot be
    asked.

    Args:
        directory: a folder on the file system.
    """
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    if not st.f_frsize or st.f_frsize >= SHM_STEP_BYTES:
        return None
    return st.f_bavail * st.f_frsize


def allocate_wal_index(db_path: str | os.PathLike) -> None:
    """Give the holes of a database's ``-shm`` file real blocks, over its present length.

    Nothing is done where there is no ``-shm`` file or it may not be written (a read-only
    medium, another user's file).

    Args:
        db_path: the database file.

    Raises:
        OSError: the file system could not give the blocks (ENOSPC: the disk is full).
    """
    try:
        fd = os.open(f"{os.fspath(db_path)}{SHM_SUFFIX}", os.O_RDWR)
    except OSError:
        return
    try:
        size = os.fstat(fd).st_size
        if size:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def _full_disk() -> sqlite3.OperationalError:
    return sqlite3.OperationalError(FULL_DISK)


def before_write(db_path: str | os.PathLike) -> None:
    """Check the room for a write transaction on a connection held open (the index may have
    grown since it was opened) and allocate what the index file holds.

    Args:
        db_path: the database file.

    Raises:
        sqlite3.OperationalError: ``database or disk is full`` on a small-block file system
            with too little room.
    """
    free = free_bytes_if_small_blocks(Path(db_path).parent)
    if free is None:
        return
    if free < WAL_INDEX_ROOM_BYTES:
        raise _full_disk()
    try:
        allocate_wal_index(db_path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise _full_disk() from None
        # a file system without fallocate: the guard of the free room above is what it gets


def connect(database: str, file_path: str | os.PathLike | None = None,
            **kwargs) -> sqlite3.Connection:
    """:func:`sqlite3.connect`, made safe from SIGBUS on a small-block file system (see the
    module docstring).

    Args:
        database: what :func:`sqlite3.connect` takes (a path, or a ``file:`` URI with
            ``uri=True``).
        file_path: the database file, when ``database`` is a URI.
        **kwargs: passed to :func:`sqlite3.connect`.

    Returns:
        The connection.

    Raises:
        sqlite3.OperationalError: ``database or disk is full`` on a small-block file system
            with too little room; as :func:`sqlite3.connect` otherwise.
    """
    path = Path(file_path if file_path is not None else database)
    free = free_bytes_if_small_blocks(path.parent)
    if free is not None and free < WAL_INDEX_ROOM_BYTES:
        raise _full_disk()
    conn = sqlite3.connect(database, **kwargs)
    if free is None:
        return conn
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # maps the index
    except sqlite3.DatabaseError:
        return conn  # not a database, locked, ...: the caller's first statement says so
    try:
        allocate_wal_index(path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            conn.close()
            raise _full_disk() from None
        # a file system without fallocate: the guard of the free room above is what it gets
    return conn
