"""Rebuilding a damaged or missing memory index from the sample files and the newest snapshot."""

import json
import os
import shutil
import signal
import sqlite3
import time

import numpy as np
import pytest

from edgecl import atomic
from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.continual.memory import rebuild as rebuild_mod
from edgecl.continual.memory.faults import is_damage
from edgecl.continual.memory.index import IndexDB
from edgecl.continual.memory.rebuild import (
    UNKNOWN_ORIGIN,
    damage_to_rebuild,
    index_problem,
    rebuild_damaged_index,
    rebuild_index,
    rebuild_warning,
)
from edgecl.errors import ReplayMemoryError, StorageError
from edgecl.frames import STREAM_TASK, LabelOrigin

BOX = np.array([[1, 0.5, 0.5, 0.25, 0.5]], np.float32)
NAMES = {0: "car", 1: "drone"}


def make_memory(root):
    """Four samples in a snapshot (one operator-labelled, some held out), one added after."""
    cfg = MemoryConfig(capacity=20, max_bytes=64 * 2**20, holdout_fraction=0.5, seed=3,
                       policy="reservoir")
    with ReplayMemory(root, cfg, names=NAMES) as m:
        for i in range(4):
            origin = LabelOrigin.OPERATOR if i == 1 else LabelOrigin.IMPORT
            m.add(Sample(np.full((24, 32, 3), 30 * i, np.uint8), BOX, task=f"t{i % 2}",
                         source=f"cam{i}", ts_s=10.0 + i, origin=origin))
        snap = m.snapshot()
        late = m.add(Sample(np.full((24, 32, 3), 200, np.uint8),
                            np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="t9",
                            source="late", origin=LabelOrigin.OPERATOR))
        before = {r.id: r for r in m.records()}
    return snap, late, before


def zero_fill(path):
    data = path.read_bytes()
    path.write_bytes(b"\0" * len(data))
    return b"\0" * len(data)


def test_rebuild_restores_rows_from_snapshot_and_files(tmp_path):
    root = tmp_path / "state" / "memory"
    snap, late, before = make_memory(root)
    damaged = zero_fill(root / "index.sqlite")
    with pytest.raises(ReplayMemoryError, match="--rebuild-index"):
        ReplayMemory(root, verify_on_open=False)
    report = rebuild_index(root)
    assert (report.rows, report.from_snapshot, report.from_files) == (5, 4, 1)
    assert report.snapshot_id == snap.snapshot_id and not report.quarantined
    assert report.moved_aside.read_bytes() == damaged  # kept aside byte for byte
    assert report.moved_aside.name.startswith("index.sqlite.corrupt-")
    with ReplayMemory(root) as m:
        rows = {r.id: r for r in m.records()}
        assert m.class_names() == NAMES
        assert m.last_verify.ok and not m.last_verify.orphan_files
        for sid in range(1, 5):
            got, want = rows[sid], before[sid]
            assert (got.origin, got.source, got.held_out, got.task, got.classes, got.ts_s) == (
                want.origin, want.source, want.held_out, want.task, want.classes, want.ts_s)
        assert rows[2].origin is LabelOrigin.OPERATOR and rows[3].held_out
        new = rows[late]
        assert new.classes == (0,) and new.task == STREAM_TASK and not new.held_out
        assert new.origin is not LabelOrigin.OPERATOR and (new.width, new.height) == (32, 24)
        assert m.stats()["samples"] == 5
        assert m.add(Sample(np.full((24, 32, 3), 90, np.uint8), BOX, task="t0")) > late
    raw = sqlite3.connect(root / "index.sqlite").execute(
        "SELECT origin FROM samples WHERE id = ?", (late,)).fetchone()[0]
    assert raw == UNKNOWN_ORIGIN


def test_a_damaged_snapshot_and_damaged_records_are_named_and_passed_over(tmp_path):
    """Before: a newest snapshot whose records were not a list was skipped unsaid (its samples
    rebuilt with origin unknown), and a record saying "origin": 5 or "held_out": "yes" was taken
    (an import rebuilt as a pseudo-label, evicted first)."""
    root = tmp_path / "state" / "memory"
    snap, _late, before = make_memory(root)
    with ReplayMemory(root) as m:
        newer = m.snapshot()
    path = root / "snapshots" / newer.snapshot_id / "records.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), records="x")))
    older = root / "snapshots" / snap.snapshot_id / "records.json"
    data = json.loads(older.read_text())
    data["records"][0]["origin"] = 5
    data["records"][1]["held_out"] = "yes"
    older.write_text(json.dumps(data))
    (root / "index.sqlite").unlink()
    report = rebuild_index(root)
    assert report.snapshot_id == snap.snapshot_id
    assert (report.rows, report.from_snapshot, report.from_files) == (5, 2, 3)
    assert report.snapshot_notes[0] == (f"snapshot {newer.snapshot_id} passed over (TypeError: "
                                        f"'records' is str, not a list)")
    assert report.snapshot_notes[1].startswith(
        f"2 record(s) of snapshot {snap.snapshot_id} left out, their samples rebuilt from their "
        f"files (record 1: 'origin' is '5', not text or null)")
    assert report.snapshot_notes[1] in report.summary()
    with ReplayMemory(root) as m:
        rows = {r.id: r for r in m.records()}
    assert rows[3].origin == before[3].origin and rows[1].source != before[1].source


def test_rebuild_of_a_missing_index_quarantines_unreadable_samples(tmp_path):
    root = tmp_path / "state" / "memory"
    make_memory(root)
    for side in ("", "-wal", "-shm"):
        (root / f"index.sqlite{side}").unlink(missing_ok=True)
    (root / "labels" / "00000002.txt").write_text("not a label\n")
    with pytest.raises(ReplayMemoryError, match="--rebuild-index"):
        ReplayMemory(root)
    report = rebuild_index(root)
    assert report.moved_aside is None and report.rows == 4 and len(report.quarantined) == 1
    entry = json.loads((root / "quarantine" / "00000002" / "sample.json").read_text())
    assert entry["origin"] == "operator" and entry["source"] == "cam1"
    with ReplayMemory(root) as m:
        assert 2 not in m.ids() and len(m) == 4 and m.class_names() == NAMES


def test_rebuild_refuses_a_readable_index(tmp_path):
    root = tmp_path / "state" / "memory"
    make_memory(root)
    data = (root / "index.sqlite").read_bytes()
    with pytest.raises(ReplayMemoryError, match="is readable; nothing to rebuild"):
        rebuild_index(root)
    assert (root / "index.sqlite").read_bytes() == data
    assert not list(root.glob("index.sqlite.corrupt-*"))


def test_class_names_from_the_registry_without_snapshot_names(tmp_path):
    root = tmp_path / "state" / "memory"
    make_memory(root)
    for records in root.glob("snapshots/*/records.json"):
        data = json.loads(records.read_text())
        data["names"] = None
        records.write_text(json.dumps(data))
    (tmp_path / "state" / "classes.json").write_text(json.dumps({"format": 1, "classes": [
        {"id": 0, "name": "car", "first_seen": "2026-01-01T00:00:00+00:00"},
        {"id": 1, "name": "drone", "first_seen": "2026-01-01T00:00:00+00:00"}]}))
    zero_fill(root / "index.sqlite")
    report = rebuild_index(root)
    assert report.names_from == "classes.json"
    with ReplayMemory(root) as m:
        assert m.class_names() == NAMES


def sqlite_error(message, code, name, cls=sqlite3.OperationalError):
    """An error as SQLite raises it (with its result code and name)."""
    exc = cls(message)
    exc.sqlite_errorcode, exc.sqlite_errorname = code, name
    return exc


def random_fill(path):
    data = os.urandom(path.stat().st_size)
    path.write_bytes(data)
    return data


def half_truncate(path):
    os.truncate(path, path.stat().st_size // 2)


def spoil_a_page(path):
    data = bytearray(path.read_bytes())
    data[4096 + 8:4096 + 64] = b"\xff" * 56  # page 2's header and cell pointers: a b-tree page
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("spoil, said", [
    (zero_fill, "is damaged (file is not a database)"),
    (random_fill, "is damaged (file is not a database)"),
    (half_truncate, "is damaged (database disk image is malformed)"),
    (spoil_a_page, "is damaged ("),
    (lambda path: path.unlink(), "is missing"),
    (lambda path: path.write_bytes(b""), "is empty (0 bytes)"),
])
def test_damage_to_rebuild_names_damage_and_a_lost_index(tmp_path, spoil, said):
    root = tmp_path / "state" / "memory"
    make_memory(root)
    index = root / "index.sqlite"
    assert damage_to_rebuild(root) is None  # a readable index
    spoil(index)
    why = damage_to_rebuild(root)
    assert why.startswith(f"the index {index} {said}") and "\n" not in why
    assert index_problem(root) is not None  # rebuild_index agrees: it will not refuse


def test_a_memory_not_made_yet_is_no_case_for_a_rebuild(tmp_path):
    root = tmp_path / "state" / "memory"
    assert damage_to_rebuild(root) is None  # no folder
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    assert damage_to_rebuild(root) is None  # folders, no index, no sample
    (root / "index.sqlite").write_bytes(b"")
    assert damage_to_rebuild(root) is None


def test_is_damage_tells_damage_from_storage_faults_and_locks():
    assert is_damage(sqlite_error("file is not a database", 26, "SQLITE_NOTADB",
                                  sqlite3.DatabaseError))
    assert is_damage(sqlite_error("database disk image is malformed", 11, "SQLITE_CORRUPT",
                                  sqlite3.DatabaseError))
    assert is_damage(sqlite3.DatabaseError("database disk image is malformed"))  # no code
    for message, code, name in STORAGE_FAULTS + [("database is locked", 5, "SQLITE_BUSY")]:
        assert not is_damage(sqlite_error(message, code, name)), message
        assert not is_damage(sqlite3.OperationalError(message)), message
    assert not is_damage(OSError(5, "Input/output error"))


STORAGE_FAULTS = [("disk I/O error", 10, "SQLITE_IOERR"),
                  ("database or disk is full", 13, "SQLITE_FULL"),
                  ("attempt to write a readonly database", 8, "SQLITE_READONLY"),
                  ("unable to open database file", 14, "SQLITE_CANTOPEN")]


class _Refusing:
    """A connection whose every statement fails with ``exc``."""

    def __init__(self, exc):
        self.exc = exc

    def execute(self, *args, **kwargs):
        raise self.exc

    def close(self):
        pass


@pytest.mark.parametrize("message, code, name", STORAGE_FAULTS)
@pytest.mark.parametrize("when", ["connect", "quick_check"])
def test_a_storage_fault_is_no_case_for_a_rebuild(tmp_path, monkeypatch, message, code, name,
                                                  when):
    """Before the check was written, nothing was rebuilt at all; this guards the check: a
    full disk or an I/O error met while checking (even on a damaged index) is left to the
    memory's open, which says it in one line, and nothing is moved aside."""
    root = tmp_path / "state" / "memory"
    make_memory(root)
    damaged = random_fill(root / "index.sqlite")
    exc = sqlite_error(message, code, name)

    def connect(*args, **kwargs):
        if when == "connect":
            raise exc
        return _Refusing(exc)

    monkeypatch.setattr(rebuild_mod.sqlite3, "connect", connect)
    monkeypatch.setattr(rebuild_mod, "rebuild_index", _never)
    assert damage_to_rebuild(root) is None and rebuild_damaged_index(root) is None
    assert (root / "index.sqlite").read_bytes() == damaged
    assert not list(root.glob("index.sqlite.corrupt-*"))


def _never(*args, **kwargs):
    raise AssertionError("rebuilt where no rebuild was called for")


def test_an_index_that_may_not_be_written_is_no_case_for_a_rebuild(tmp_path, monkeypatch):
    """A permission problem keeps the memory's own error (the tests run as root: os.access
    is what the store asks too)."""
    root = tmp_path / "state" / "memory"
    make_memory(root)
    damaged = random_fill(root / "index.sqlite")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        False if str(path).startswith(str(root)) and mode == os.W_OK else real_access(path, mode)))
    monkeypatch.setattr(rebuild_mod, "rebuild_index", _never)
    assert rebuild_damaged_index(root) is None
    with pytest.raises(StorageError, match="the folder is not writable"):
        ReplayMemory(root)
    assert (root / "index.sqlite").read_bytes() == damaged


def test_a_locked_index_is_no_case_for_a_rebuild(tmp_path, monkeypatch):
    root = tmp_path / "state" / "memory"
    make_memory(root)
    holder = sqlite3.connect(root / "index.sqlite", isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        monkeypatch.setattr(rebuild_mod, "rebuild_index", _never)
        assert rebuild_damaged_index(root, busy_timeout_s=0.1) is None
    finally:
        holder.close()
    assert not list(root.glob("index.sqlite.corrupt-*"))


def test_an_index_of_a_newer_format_is_no_case_for_a_rebuild(tmp_path, monkeypatch):
    """A SQLite file whose header asks for a newer SQLite (read version 3), and a database
    whose tables are not this version's: both keep the open's one-line error."""
    root = tmp_path / "state" / "memory"
    make_memory(root)
    index = root / "index.sqlite"
    data = bytearray(index.read_bytes())
    data[rebuild_mod.READ_VERSION_OFFSET] = 3
    index.write_bytes(bytes(data))
    monkeypatch.setattr(rebuild_mod, "rebuild_index", _never)
    assert rebuild_damaged_index(root) is None
    with pytest.raises(ReplayMemoryError, match="memory index is unusable: file is not a database"):
        ReplayMemory(root, verify_on_open=False)
    assert index.read_bytes() == bytes(data)

    index.unlink()
    conn = sqlite3.connect(index)
    conn.execute("CREATE TABLE samples(id INTEGER PRIMARY KEY, kind TEXT)")
    conn.commit()
    conn.close()
    assert rebuild_damaged_index(root) is None
    with pytest.raises(ReplayMemoryError, match="memory index is unusable: no such column"):
        ReplayMemory(root, verify_on_open=False)


def test_a_damaged_index_that_cannot_be_rebuilt_for_a_full_disk_is_one_storage_line(
        tmp_path, monkeypatch):
    root = tmp_path / "state" / "memory"
    make_memory(root)
    index = root / "index.sqlite"
    damaged = random_fill(index)

    def full(*args, **kwargs):
        raise sqlite_error("database or disk is full", 13, "SQLITE_FULL")

    monkeypatch.setattr(rebuild_mod, "_write_index", full)
    with pytest.raises(StorageError) as err:
        rebuild_damaged_index(root)
    assert str(err.value) == (
        f"replay memory: the index {index} is damaged (file is not a database); cannot rebuild "
        f"the memory index in {root}: database or disk is full ({root / rebuild_mod.TEMP_NAME}); "
        f"free some room on its volume and run it again (nothing stored was lost)")
    assert index.read_bytes() == damaged and not (root / rebuild_mod.TEMP_NAME).exists()
    assert not list(root.glob("index.sqlite.corrupt-*"))


def test_rebuild_damaged_index_returns_what_the_warning_says(tmp_path):
    root = tmp_path / "state" / "memory"
    snap, _, _ = make_memory(root)
    index = root / "index.sqlite"
    assert rebuild_damaged_index(root) is None  # readable: nothing done
    random_fill(index)
    why, report = rebuild_damaged_index(root)
    assert why == f"the index {index} is damaged (file is not a database)"
    assert rebuild_warning(why, report) == (
        f"replay memory: the index {index} is damaged (file is not a database): rebuilt from "
        f"the sample files and snapshot {snap.snapshot_id}, 5 rows back (4 as the snapshot "
        f"recorded them, 1 from their files only, origin unknown), 0 samples quarantined; the "
        f"damaged index is kept as {report.moved_aside}")
    assert rebuild_damaged_index(root) is None  # rebuilt once, then readable


def _kill_at(step):
    """In this (forked) process: SIGKILL itself at the ``step``-th file operation of a
    rebuild (an index row written, an fsync, a rename, a folder flushed), before it runs."""
    calls = [0]

    def wrap(fn):
        def wrapped(*args, **kwargs):
            calls[0] += 1
            if calls[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped

    IndexDB.insert = wrap(IndexDB.insert)
    os.fsync = wrap(os.fsync)
    os.replace = wrap(os.replace)
    atomic.fsync_dir = wrap(atomic.fsync_dir)


def _rebuild_killed_at(root, step, rebuild=rebuild_damaged_index):
    """Run ``rebuild(root)`` (the runtime's by default) in a child killed at ``step``; True
    when it was killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            _kill_at(step)
            code = 0 if rebuild(root) is not None else 4
        finally:
            os._exit(code)
    deadline_s = time.monotonic() + 60.0
    while True:  # bounded: a child stuck on a lock another thread held at the fork fails here
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline_s:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the rebuild killed at step {step} hung")
        time.sleep(0.01)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, f"the rebuild failed (exit {os.WEXITSTATUS(status)})"
    return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_kill_at_any_step_of_the_rebuild_leaves_a_memory_the_next_start_rebuilds(tmp_path):
    """The module docstring's promise: a kill leaves the old index, or no index with the
    damaged one kept aside, or the new index; the next start (the same call) ends with every
    row back and the damaged bytes kept."""
    made = tmp_path / "made"
    make_memory(made)
    damaged = random_fill(made / "index.sqlite")
    want = {r.id: r.origin for r in _records_after_rebuild(tmp_path / "reference", made)}
    assert len(want) == 5
    step, killed_states = 0, set()
    while True:
        step += 1
        root = tmp_path / f"kill{step}" / "memory"
        shutil.copytree(made, root)
        if not _rebuild_killed_at(root, step):
            break
        index, aside = root / "index.sqlite", list(root.glob("index.sqlite.corrupt-*"))
        if index.exists() and index.read_bytes() == damaged:
            state = "old index"
        elif not index.exists():
            state = "no index, the damaged one aside"
            assert [p.read_bytes() for p in aside] == [damaged]
        else:
            state = "new index"
            assert index_problem(root) is None
        killed_states.add(state)
        rebuild_damaged_index(root)  # the next start
        with ReplayMemory(root) as m:
            assert {r.id: r.origin for r in m.records()} == want, (step, state)
            assert m.last_verify.ok and not m.last_verify.orphan_files
        assert damaged in [p.read_bytes() for p in root.glob("index.sqlite.corrupt-*")]
        assert not (root / rebuild_mod.TEMP_NAME).exists()
    assert step > 5 and killed_states == {"old index", "no index, the damaged one aside",
                                          "new index"}


def _adopt(root):
    return rebuild_index(root, adopt_unlisted=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_kill_at_any_step_of_an_adopting_rebuild_keeps_the_old_index_rows(tmp_path):
    """An older index copy restored (readable, not listing a sample stored since): a kill at
    any step of 'memory verify --rebuild-index', then the command again, keeps the rows of the
    old index. Before, a kill between its renames left no index, and the rerun built from the
    snapshot and files: the operator-labelled sample stored after the snapshot came back with
    origin 'unknown' (never used to evaluate a model again)."""
    made = tmp_path / "made"
    _, late, _ = make_memory(made)
    older = (made / "index.sqlite").read_bytes()
    with ReplayMemory(made) as m:
        m.add(Sample(np.full((24, 32, 3), 90, np.uint8), BOX, task="t1", source="later"))
    (made / "index.sqlite").write_bytes(older)
    for side in ("-wal", "-shm"):
        (made / f"index.sqlite{side}").unlink(missing_ok=True)
    ref = tmp_path / "reference" / "memory"
    shutil.copytree(made, ref)
    _adopt(ref)
    with ReplayMemory(ref) as m:
        want = {r.id: (r.origin, r.task) for r in m.records()}
    assert len(want) == 6 and want[late] == (LabelOrigin.OPERATOR, "t9")
    step, killed_states = 0, set()
    while True:
        step += 1
        root = tmp_path / f"kill{step}" / "memory"
        shutil.copytree(made, root)
        if not _rebuild_killed_at(root, step, _adopt):
            break
        index = root / "index.sqlite"
        state = ("old index" if index.exists() and index.read_bytes() == older else
                 "no index" if not index.exists() else "new index")
        killed_states.add(state)
        try:
            report = _adopt(root)  # the command again
        except ReplayMemoryError as exc:  # the kill came after the new index was in place
            assert state == "new index" and "nothing to rebuild" in str(exc)
            report = None
        with ReplayMemory(root) as m:
            assert {r.id: (r.origin, r.task) for r in m.records()} == want, (step, state)
        if report is not None:
            assert report.rows == 6
            if state == "no index":
                assert report.resumed and "finished the rebuild that a stop cut short, 6 " \
                    "rows" in report.summary()
        assert older in [p.read_bytes() for p in root.glob("index.sqlite.corrupt-*")] or \
            state == "old index"
        assert not (root / rebuild_mod.TEMP_NAME).exists()
        assert not (root / rebuild_mod.SWAP_MARKER).exists()
    assert step > 5 and killed_states == {"old index", "no index", "new index"}


def test_a_rebuild_drops_a_cut_swap_whose_old_index_is_still_in_place(tmp_path):
    """A kill after the swap's marker was written and before any rename: the old index is in
    place (and may have been written since, by a runtime that started on it), so the next
    rebuild drops the stale new index instead of swapping it in."""
    root = tmp_path / "memory"
    make_memory(root)
    (root / rebuild_mod.TEMP_NAME).write_bytes(b"stale")
    (root / rebuild_mod.SWAP_MARKER).write_text(
        json.dumps({"aside": "index.sqlite.corrupt-20260101T000000Z"}))
    random_fill(root / "index.sqlite")
    report = rebuild_index(root)
    assert not report.resumed and report.rows == 5
    assert not (root / rebuild_mod.TEMP_NAME).exists()
    assert not (root / rebuild_mod.SWAP_MARKER).exists()
    assert index_problem(root) is None


def _records_after_rebuild(dst, made):
    root = dst / "memory"
    shutil.copytree(made, root)
    assert rebuild_damaged_index(root) is not None
    with ReplayMemory(root) as m:
        return m.records()


def _lose_index_rows(path):
    """Make ``samples_by_task`` miss every row while its pages stay whole (as a copy taken while
    the memory was written can): ``quick_check`` passes, ``integrity_check`` does not."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema=ON")
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name='samples_by_task'").fetchone()[0]
    conn.execute("UPDATE sqlite_master SET sql=? WHERE name='samples_by_task'",
                 (sql + " WHERE 0",))
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)
    conn.execute("REINDEX samples_by_task")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_master SET sql=? WHERE name='samples_by_task'", (sql,))
    conn.commit()
    conn.close()


def test_an_index_missing_rows_is_a_case_for_a_rebuild(tmp_path):
    """Before: an index whose pages were whole but that had lost rows passed quick_check: every
    write then said 'malformed', and '--rebuild-index' refused it as readable."""
    root = tmp_path / "memory"
    make_memory(root)
    index = root / "index.sqlite"
    _lose_index_rows(index)
    conn = sqlite3.connect(index)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conn.close()
    said = f"the index {index} is damaged (row 1 missing from index samples_by_task)"
    assert damage_to_rebuild(root) == said
    assert index_problem(root) == said
    assert rebuild_index(root).rows == 5


def test_a_damaged_page_read_names_the_rebuild_not_an_internal_error(tmp_path, capsys,
                                                                           caplog):
    """Before: 'memory stats', 'classes list' and 'memory verify' on an index with a damaged
    page said 'internal error (DatabaseError: database disk image is malformed) ... please
    report it'; other commands named no way out."""
    from edgecl.cli import main

    state = tmp_path / "state"
    make_memory(state / "memory")
    index = state / "memory" / "index.sqlite"
    with open(index, "r+b") as fh:  # every page but the schema's: its b-tree header spoilt
        for offset in range(4096, index.stat().st_size, 4096):
            fh.seek(offset)
            fh.write(b"\xff" * 12)
    hint = (f"'edgecl memory verify --rebuild-index --state-dir {state}' rebuilds it from the "
            f"sample files and the newest snapshot")
    for argv in (["memory", "stats"], ["memory", "verify"], ["memory", "verify", "--no-repair"]):
        assert main([*argv, "--state-dir", str(state)]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "internal error" not in err, err
        assert err.startswith("error: cannot ") and err.endswith(f"; {hint}\n"), err
    assert main(["classes", "list", "--state-dir", str(state)]) == 0  # the registry's, no counts
    assert caplog.messages[-1] == (f"sample counts unavailable: cannot open the replay memory "
                                   f"{state / 'memory'}: database disk image is malformed "
                                   f"({state / 'memory'}); {hint}")
    assert main(["memory", "verify", "--rebuild-index", "--state-dir", str(state)]) == 0
    assert main(["memory", "stats", "--state-dir", str(state)]) == 0
