"""Tests of :mod:`edgecl.sqlite_copy`: a private copy of a database that a writer is using."""

import os
import shutil
import sqlite3

import edgecl.sqlite_copy as sqlite_copy
from edgecl.sqlite_copy import PrivateCopy


def _live_database(path):
    """A WAL database with 50 rows, its writer's connection left open (``-shm`` and WAL there)."""
    writer = sqlite3.connect(str(path), isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, b BLOB)")
    for _ in range(50):
        writer.execute("INSERT INTO t (b) VALUES (randomblob(2000))")
    return writer


def _rows(copy):
    conn = copy.connect()
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        conn.close()


def test_a_checkpoint_while_the_copy_is_taken_gives_a_consistent_copy(tmp_path, monkeypatch):
    db = tmp_path / "metrics.sqlite"
    writer = _live_database(db)
    real_copyfile = shutil.copyfile
    calls = []

    def copyfile_then_checkpoint(src, dst):
        real_copyfile(src, dst)
        calls.append(src)
        if len(calls) == 1:  # the writer checkpoints and goes on between the two files
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for _ in range(30):
                writer.execute("INSERT INTO t (b) VALUES (randomblob(2000))")
            writer.execute("DELETE FROM t WHERE i <= 40")
        return dst

    monkeypatch.setattr(sqlite_copy.shutil, "copyfile", copyfile_then_checkpoint)
    copy = PrivateCopy(db)
    try:
        assert _rows(copy) in (50, 40)  # before or after the writer's changes, never a mix
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "metrics.sqlite", "metrics.sqlite-shm", "metrics.sqlite-wal"]
    finally:
        copy.close()
        writer.close()


def test_files_that_change_while_copied_with_no_writer_are_copied_again(tmp_path, monkeypatch):
    db = tmp_path / "memory.sqlite"
    _live_database(db).close()  # a clean close: no -wal, no -shm
    real_copyfile = shutil.copyfile
    calls = []

    def copyfile_while_changed(src, dst):
        real_copyfile(src, dst)
        calls.append(src)
        if len(calls) == 1:
            os.utime(src, ns=(os.stat(src).st_atime_ns, os.stat(src).st_mtime_ns + 10**9))
        return dst

    monkeypatch.setattr(sqlite_copy.shutil, "copyfile", copyfile_while_changed)
    copy = PrivateCopy(db)
    try:
        assert _rows(copy) == 50
        assert len(calls) == 2
    finally:
        copy.close()
    assert [p.name for p in tmp_path.iterdir()] == ["memory.sqlite"]


def test_a_copy_of_a_folder_that_may_not_be_written_reads_the_wal(tmp_path):
    db = tmp_path / "metrics.sqlite"
    writer = _live_database(db)
    crashed = tmp_path / "pulled"
    crashed.mkdir()
    for suffix in ("", "-wal"):  # a card pulled after a power cut: no -shm, the WAL holds rows
        shutil.copyfile(f"{db}{suffix}", crashed / f"metrics.sqlite{suffix}")
    writer.close()
    copy = PrivateCopy(crashed / "metrics.sqlite")
    try:
        assert _rows(copy) == 50
    finally:
        copy.close()
    assert sorted(p.name for p in crashed.iterdir()) == ["metrics.sqlite", "metrics.sqlite-wal"]
