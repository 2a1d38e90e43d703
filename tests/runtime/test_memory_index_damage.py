"""``edgecl run`` on a state directory whose replay-memory index an SD-card fault damaged or lost:
it rebuilds the index from the sample files and the newest snapshot with one warning (the
damaged index kept aside) and runs; a storage fault, a permission problem or a lock is never
taken for damage (nothing rebuilt, the one-line error it always gave).

Before: the runtime refused to start (``error: memory index is unusable: file is not a
database (...); 'edgecl memory verify --rebuild-index --state-dir STATE' rebuilds it ...``,
exit 2): the device stopped detecting. The tools that read the memory still refuse."""

import logging
import os
import sqlite3

import cv2
import numpy as np
import pytest

from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.continual.memory import rebuild as rebuild_mod
from edgecl.frames import LabelOrigin

IMGSZ = 64
BOX = np.array([[1, 0.5, 0.5, 0.25, 0.5]], np.float32)
NAMES = {0: "car", 1: "drone"}
# ids 1-4 are in the snapshot (their origins as recorded), id 5 was added after it: rebuilt from
# its files alone, its origin is not known ("unknown", read back as not human-verified: pseudo)
ORIGINS = {1: "import", 2: "operator", 3: "import", 4: "import", 5: "pseudo"}


@pytest.fixture()
def device(tmp_path):
    """A state directory whose memory holds five samples (four in its snapshot), and a folder
    of two unlabelled frames: a run with a fresh network stores nothing, so the memory holds
    exactly the rows the rebuild brought back."""
    state = tmp_path / "state"
    cfg = MemoryConfig(capacity=20, max_bytes=64 * 2**20, holdout_fraction=0.5, seed=3,
                       policy="reservoir")
    with ReplayMemory(state / "memory", cfg, names=NAMES) as memory:
        for i in range(4):
            memory.add(Sample(np.full((24, 32, 3), 30 * i, np.uint8), BOX, task=f"t{i % 2}",
                              source=f"cam{i}", ts_s=10.0 + i,
                              origin=LabelOrigin.OPERATOR if i == 1 else LabelOrigin.IMPORT))
        snap = memory.snapshot()
        memory.add(Sample(np.full((24, 32, 3), 200, np.uint8),
                          np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32), task="t9",
                          source="late", origin=LabelOrigin.OPERATOR))
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"f{i}.jpg"), np.full((IMGSZ, IMGSZ, 3), 60 * i, np.uint8))
    return state, frames, snap.snapshot_id


def _run(run_edgecl, state, frames):
    return run_edgecl(["run", "--state-dir", state, "--source", f"dir://{frames}", "--model",
                       "yolo11n.yaml", "--frames", 2, "--quiet", f"model.imgsz={IMGSZ}",
                       "learner.enabled=false", "runtime.warmup_runs=1"])


def _memory_warnings(caplog, state):
    """The warnings that name the memory folder (the class registry's adoption of the
    memory's names names no path)."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and str(state / "memory") in r.getMessage()]


def _origins(state):
    with ReplayMemory(state / "memory", read_only=True, verify_on_open=False) as memory:
        return {r.id: r.origin.value for r in memory.records()}


def _aside(state):
    return sorted((state / "memory").glob("index.sqlite.corrupt-*"))


def test_run_rebuilds_an_index_replaced_by_random_bytes_with_one_warning(device, run_edgecl,
                                                                         caplog):
    state, frames, snapshot_id = device
    index = state / "memory" / "index.sqlite"
    damaged = os.urandom(index.stat().st_size)
    index.write_bytes(damaged)
    code, _, err = run_edgecl(["memory", "stats", "--state-dir", state])
    assert code == 2 and "--rebuild-index" in err, "the tools still refuse (and change nothing)"
    assert index.read_bytes() == damaged and _aside(state) == []
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code, _, err = _run(run_edgecl, state, frames)
    assert code == 0, err
    (aside,) = _aside(state)
    assert aside.read_bytes() == damaged  # kept byte for byte
    assert _memory_warnings(caplog, state) == [
        f"replay memory: the index {index} is damaged (file is not a database): rebuilt from "
        f"the sample files and snapshot {snapshot_id}, 5 rows back (4 as the snapshot recorded "
        f"them, 1 from their files only, origin unknown), 0 samples quarantined; the damaged "
        f"index is kept as {aside}"]
    assert _origins(state) == ORIGINS
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the next start finds a readable index
        code, _, err = _run(run_edgecl, state, frames)
    assert code == 0, err
    assert _memory_warnings(caplog, state) == [] and _aside(state) == [aside]
    assert _origins(state) == ORIGINS


def test_run_rebuilds_a_deleted_index_with_one_warning(device, run_edgecl, caplog):
    state, frames, snapshot_id = device
    index = state / "memory" / "index.sqlite"
    for side in ("", "-wal", "-shm"):
        index.with_name(index.name + side).unlink(missing_ok=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code, _, err = _run(run_edgecl, state, frames)
    assert code == 0, err
    assert _memory_warnings(caplog, state) == [
        f"replay memory: the index {index} is missing: rebuilt from the sample files and "
        f"snapshot {snapshot_id}, 5 rows back (4 as the snapshot recorded them, 1 from their "
        f"files only, origin unknown), 0 samples quarantined; there was no old index to keep"]
    assert _origins(state) == ORIGINS and _aside(state) == []


def _refused(message, code, name):
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode, exc.sqlite_errorname = code, name
    return exc


@pytest.mark.parametrize("message, code, name, error", [
    ("disk I/O error", 10, "SQLITE_IOERR", "cannot open the memory index: disk I/O error"),
    ("database or disk is full", 13, "SQLITE_FULL",
     "cannot open the memory index: database or disk is full"),
    ("database is locked", 5, "SQLITE_BUSY", "memory index is unusable: database is locked"),
])
def test_run_takes_no_storage_fault_or_lock_for_damage(device, run_edgecl, monkeypatch, message,
                                                       code, name, error):
    """Every connection to the index fails as SQLite fails on that fault: the run stops with
    the memory's one-line error, as before, and nothing is rebuilt or moved aside."""
    state, frames, _ = device
    index = state / "memory" / "index.sqlite"
    before = index.read_bytes()
    real_connect = sqlite3.connect

    def connect(database, *args, **kwargs):
        if "memory/index.sqlite" in str(database):
            raise _refused(message, code, name)
        return real_connect(database, *args, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("a storage fault was taken for damage")

    monkeypatch.setattr(sqlite3, "connect", connect)
    monkeypatch.setattr(rebuild_mod, "rebuild_index", never)
    code, _, err = _run(run_edgecl, state, frames)
    assert code == 2
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: {error} ({index})" + (
            "; free a few MiB on its volume (or make it writable) and start again"
            if name != "SQLITE_BUSY" else
            f"; 'edgecl memory verify --rebuild-index --state-dir {state}' rebuilds it from the "
            f"sample files and the newest snapshot")]
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    assert index.read_bytes() == before and _aside(state) == []


def test_run_does_not_rebuild_a_damaged_index_it_may_not_write(device, run_edgecl,
                                                               monkeypatch):
    """A permission problem keeps its one-line error even beside damage (the tests run as
    root: the runtime and the store ask os.access)."""
    state, frames, _ = device
    memory = state / "memory"
    damaged = os.urandom((memory / "index.sqlite").stat().st_size)
    (memory / "index.sqlite").write_bytes(damaged)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        False if str(path).startswith(str(memory)) and mode == os.W_OK
        else real_access(path, mode, **kw)))
    code, _, err = _run(run_edgecl, state, frames)
    assert code == 2
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        f"error: cannot open the replay memory {memory}: the folder is not writable (read-only "
        f"file system or permissions)"]
    assert (memory / "index.sqlite").read_bytes() == damaged and _aside(state) == []
