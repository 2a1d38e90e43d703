"""SQLite's WAL index on a file system whose blocks are smaller than 4 KiB: a full disk is
SQLite's full-disk error, never a SIGBUS."""

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from edgecl import sqlite_room


def small_blocks(free_bytes):
    """An ``os.statvfs`` of a file system with 1 KiB blocks and ``free_bytes`` free."""
    return lambda path: SimpleNamespace(f_frsize=1024, f_bavail=free_bytes // 1024)


def test_a_small_block_file_system_with_too_little_room_is_a_full_disk(tmp_path, monkeypatch):
    db = tmp_path / "x.sqlite"
    monkeypatch.setattr(os, "statvfs", small_blocks(63 * 1024))
    with pytest.raises(sqlite3.OperationalError, match="^database or disk is full$"):
        sqlite_room.connect(str(db))
    assert not db.exists()  # refused before SQLite made anything
    monkeypatch.setattr(os, "statvfs", small_blocks(64 * 1024))
    sqlite_room.connect(str(db)).close()


def test_the_index_files_holes_get_blocks_before_a_write(tmp_path, monkeypatch):
    """SQLite grows ``-shm`` one byte per 4 KiB page; with 1 KiB blocks the rest of each page is
    a hole, which SIGBUS kills the process on touching once the disk is full."""
    db = tmp_path / "x.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    shm = tmp_path / "x.sqlite-shm"
    size = shm.stat().st_size
    shm.write_bytes(b"")  # as sparse as a hole can be, at the same length
    os.truncate(shm, size)
    assert shm.stat().st_blocks * 512 < size
    monkeypatch.setattr(os, "statvfs", small_blocks(10 * 2**20))
    sqlite_room.before_write(db)
    assert shm.stat().st_blocks * 512 >= size
    monkeypatch.setattr(os, "statvfs", small_blocks(16 * 1024))
    with pytest.raises(sqlite3.OperationalError, match="full"):
        sqlite_room.before_write(db)
    conn.close()


def test_a_file_system_of_4k_blocks_is_left_to_sqlite(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_frsize=4096, f_bavail=0))
    assert sqlite_room.free_bytes_if_small_blocks(tmp_path) is None
    sqlite_room.connect(str(tmp_path / "x.sqlite")).close()
    sqlite_room.before_write(tmp_path / "x.sqlite")


WRITER = textwrap.dedent("""
    import os, sqlite3, sys
    from edgecl.runtime.monitor import Monitor
    from edgecl.errors import StorageError
    state = sys.argv[1]
    Monitor(state)  # the metrics database, in WAL mode, made while there is room
    # a reader holds it open (the console's, another process's): its WAL index stays mapped
    reader = sqlite3.connect(os.path.join(state, "metrics", "metrics.sqlite"))
    reader.execute("SELECT count(*) FROM rounds").fetchall()
    free = os.statvfs(state).f_bavail * os.statvfs(state).f_frsize
    with open(os.path.join(state, "filler"), "wb") as fh:  # leave 20 KiB
        os.posix_fallocate(fh.fileno(), 0, free - 20 * 1024)
    try:
        for i in range(500):
            Monitor(state).record_runtime(fps=1.0, latency_ms_p50=1.0, memory_bytes=0,
                                          memory_samples=0, model_version="v0001")
    except StorageError as exc:
        print("refused:", exc)
""")


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (e2fsprogs)")
def test_the_metrics_database_on_a_full_1k_block_ext4_says_disk_full(tmp_path):
    """Measured before: on ext4 made with 1 KiB blocks, 'models promote' and 'edgecl run' died
    of SIGBUS (exit code 135) with 10-35 KiB free, in the metrics database's write."""
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(8 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-b", "1024", str(image)], check=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a loop file system here: {mounted.stderr.decode().strip()}")
    try:
        state = mnt / "state"
        state.mkdir()
        done = subprocess.run([sys.executable, "-c", WRITER, str(state)], capture_output=True,
                              text=True, timeout=120)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "refused:" in done.stdout
    assert "database or disk is full" in done.stdout, done.stdout
