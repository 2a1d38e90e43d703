"""Storage faults (full disk, read-only folder) and the memory's own bounds (row text, WAL,
counters): one-line StorageError, nothing half-stored, the memory usable afterwards."""

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.continual.memory.index import WAL_LIMIT_BYTES, IndexDB
from edgecl.continual.memory.store import MAX_SOURCE_CHARS
from edgecl.errors import ReplayMemoryError, StorageError

REPO = Path(__file__).resolve().parents[2]
BOX = np.array([[0, 0.5, 0.5, 0.25, 0.5]], np.float32)


def cfg(**kw):
    base = dict(capacity=20, max_bytes=64 * 2**20, holdout_fraction=0.0, policy="reservoir")
    base.update(kw)
    return MemoryConfig(**base)


def sample(i, task="t0", source=None, cls=0):
    labels = BOX.copy()
    labels[:, 0] = cls
    return Sample(np.full((16, 16, 3), i % 250, np.uint8), labels, task=task,
                  source=source or f"s{i}")


def files(root):
    return sorted(p.name for sub in ("images", "labels") for p in (root / sub).iterdir())


def test_enospc_at_fsync_leaves_nothing_half_stored(tmp_path, monkeypatch):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        keep = [m.add(sample(i)) for i in range(3)]
        before = files(m.root)

        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(StorageError) as info:
            m.add(sample(7, source="cam0/frame7.jpg"))
        message = str(info.value)
        assert "\n" not in message and "No space left on device" in message
        assert message.startswith("cannot store sample from cam0/frame7.jpg (task 't0')")
        assert f"({m.root / 'images' / '00000004.jpg'})" in message
        assert message.endswith("; nothing stored was lost")
        monkeypatch.undo()
        assert m.ids() == keep and files(m.root) == before  # no temp file, no orphan
        assert m.verify(repair=False, deep=True).problems_found == 0
        assert m.add(sample(8)) == 4  # the refused id 4 was never committed
        assert m.stats()["seen"] == 4  # nor was its frame counted as offered


def test_a_frame_the_disk_refused_draws_no_held_out_position(tmp_path, monkeypatch):
    """Before: the refused frame counted as seen, so an import run again once there was room
    drew its held-out slice one position on: 3 held-out frames of a folder instead of the 8
    the same import drew uninterrupted."""
    def held_sources(root, refuse_first):
        with ReplayMemory(root, cfg(holdout_fraction=0.25, seed=3)) as m:
            if refuse_first:
                def full(fd):
                    raise OSError(errno.ENOSPC, "No space left on device")

                monkeypatch.setattr(os, "fsync", full)
                with pytest.raises(StorageError):
                    m.add(sample(0))
                monkeypatch.undo()
            for i in range(16):
                m.add(sample(i))
            return sorted(r.source for r in m.records(held_out=True))

    want = held_sources(tmp_path / "uninterrupted", False)
    assert want and held_sources(tmp_path / "refused", True) == want


def test_full_index_rolls_back_the_evictions(tmp_path, monkeypatch):
    with ReplayMemory(tmp_path / "m", cfg(capacity=3)) as m:
        keep = [m.add(sample(i)) for i in range(3)]
        before = files(m.root)
        real_insert = IndexDB.insert

        def full(self, values):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(IndexDB, "insert", full)
        refused = 0
        for i in range(3, 40):  # reservoir: some offers are declined, the admitted ones fail
            try:
                assert m.add(sample(i)) is None
            except StorageError as exc:
                assert "database or disk is full" in str(exc) and "\n" not in str(exc)
                refused += 1
            assert m.ids() == keep and files(m.root) == before  # victims restored
        assert refused >= 1
        monkeypatch.setattr(IndexDB, "insert", real_insert)
        assert m.verify(repair=False, deep=True).problems_found == 0
        assert len(m) == 3
    with ReplayMemory(tmp_path / "m", cfg(capacity=3)) as m:
        assert m.last_verify.problems_found == 0 and m.ids() == keep


def test_full_disk_during_snapshot_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        m.add(sample(1))

        def full(src, dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))

        monkeypatch.setattr(os, "link", full)
        monkeypatch.setattr(shutil, "copy2", full)
        with pytest.raises(StorageError, match="No space left on device"):
            m.snapshot()
        assert list((m.root / "snapshots").iterdir()) == []
        monkeypatch.undo()
        assert len(m.snapshot()) == 1


def test_read_only_folder_simulated(tmp_path, monkeypatch, capsys):
    """The same faults as the bind-mount tests below, simulated (runs everywhere)."""
    import tempfile

    from edgecl.cli import main

    root = tmp_path / "state" / "memory"
    with ReplayMemory(root, cfg()) as m:
        keep = [m.add(sample(1)), m.add(sample(2))]

        def read_only(*args, dir=None, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", dir)

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
        with pytest.raises(StorageError, match=r"Read-only file system \(.*images/00000003\.jpg\)"):
            m.add(sample(3))
        monkeypatch.undo()
        assert m.ids() == keep and m.add(sample(4)) == 3
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == root
                        else real_access(path, mode))
    with pytest.raises(StorageError, match="the folder is not writable"):
        ReplayMemory(root, cfg())
    capsys.readouterr()
    assert main(["memory", "stats", "--json", "--state-dir", str(root.parent)]) == 0  # read-only
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["samples"] == 3
    assert main(["memory", "verify", "--state-dir", str(root.parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the replay memory {root} cannot be written here, so it cannot be "
                   f"repaired: 'edgecl memory verify --no-repair' checks it without changing "
                   f"anything"]


# -- read-only folder: as root chmod does not stop writes, so the folder is bind-mounted
# read-only inside a private mount namespace of a child process (gone when it exits).

CHILD = r"""
import json, subprocess, sys
import numpy as np
from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory, Sample
from edgecl.errors import EdgeclError

root, mode = sys.argv[1], sys.argv[2]
if mode.startswith("cli "):  # "cli ARGS...": the CLI on the state directory, one line per call
    from edgecl.cli import main
    state = str(__import__("pathlib").Path(root).parent)
    for call in mode[4:].split(";"):
        code = main(call.split() + ["--state-dir", state])
        print(f"exit {code}", flush=True)
        print(f"exit {code}", file=sys.stderr, flush=True)
    sys.exit(0)
out = {}
box = np.array([[0, .5, .5, .25, .5]], np.float32)
offer = lambda v: Sample(np.full((16, 16, 3), v, np.uint8), box, task="t0", source=f"v{v}")
cfg = MemoryConfig(capacity=20, holdout_fraction=0.0, policy="reservoir")
with ReplayMemory(root, cfg) as m:
    out["before"] = m.ids()
    for sub in ("images", "labels"):  # the index stays open for writing: its folder cannot
        subprocess.run(["mount", "-o", "remount,bind,ro", f"{root}/{sub}"], check=True)
    try:
        m.add(offer(50))
    except EdgeclError as exc:
        out["error"] = [type(exc).__name__, str(exc)]
    out["after_error"] = m.ids()
    for sub in ("images", "labels"):
        subprocess.run(["mount", "-o", "remount,bind,rw", f"{root}/{sub}"], check=True)
    out["added"] = m.add(offer(60))
    out["verify"] = m.verify(repair=False, deep=True).problems_found
    out["final"] = m.ids()
print(json.dumps(out))
"""


def run_with_bind_mount(root: Path, mode: str, read_only: bool) -> subprocess.CompletedProcess:
    """Run CHILD with ``root`` (read_only) or its images/ and labels/ (else) bind-mounted."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare and mount to make a folder read-only for root")
    if read_only:
        mounts = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"'
    else:
        mounts = 'mount --bind "$1/images" "$1/images" && mount --bind "$1/labels" "$1/labels"'
    script = f'{mounts} || exit 77; exec "$2" -c "$3" "$1" "$4"'
    env = dict(os.environ, PYTHONPATH=str(REPO), YOLO_OFFLINE="1")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                           str(root), sys.executable, CHILD, mode],
                          capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode == 77 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot bind-mount read-only here (needs CAP_SYS_ADMIN): {proc.stderr[-200:]}")
    return proc


def test_a_read_only_state_dir_is_read_and_never_written(tmp_path):
    """A state directory on a read-only mount (a card pulled from a device): stats, a check
    without repair and an export work, read from a private copy of the index; a repairing check
    is one line naming the option that works; nothing in the folder changes."""
    root = tmp_path / "state" / "memory"
    with ReplayMemory(root, cfg()) as m:
        m.add(sample(1))
        m.add(sample(2))
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    out_dir = tmp_path / "export"
    proc = run_with_bind_mount(root, f"cli memory stats --json;memory verify --no-repair --json;"
                                     f"memory verify;memory export --out {out_dir}",
                               read_only=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    stdout = proc.stdout.splitlines()
    stats = json.loads(stdout[0])
    assert stats["samples"] == 2 and stdout[1] == "exit 0"
    verify = json.loads(stdout[2])
    assert verify["ok"] and verify["rows_checked"] == 2 and stdout[3] == "exit 0"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: the replay memory {root} cannot be written here, so it cannot be "
                      f"repaired: 'edgecl memory verify --no-repair' checks it without changing "
                      f"anything"]
    assert stdout[4] == "exit 2"
    assert stdout[5].startswith("exported 2 training and 0 held-out samples (read-only memory)")
    assert stdout[6] == "exit 0"
    assert sorted(p.name for p in (out_dir / "images").iterdir()) == ["00000001.jpg", "00000002.jpg"]
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before


def test_read_only_memory_refuses_every_write_and_reads_the_wal(tmp_path):
    """Opened read-only, the memory sees samples still in the index's WAL (a device switched
    off before a checkpoint) and refuses add, snapshot, names and repair with one line."""
    root = tmp_path / "memory"
    keeper_path = root / "index.sqlite"
    with ReplayMemory(root, cfg()) as m:
        m.add(sample(1))
        keeper = sqlite3.connect(keeper_path)  # stays open: the writer's close checkpoints nothing
        keeper.execute("SELECT count(*) FROM samples").fetchone()
        m.add(sample(2))
    pulled = tmp_path / "pulled"
    shutil.copytree(root, pulled)
    keeper.close()
    assert (pulled / "index.sqlite-wal").stat().st_size > 0
    before = {p.name: p.read_bytes() for p in pulled.iterdir() if p.is_file()}
    with ReplayMemory(pulled, cfg(), read_only=True) as m:
        assert m.ids() == [1, 2] and m.last_verify.problems_found == 0
        for write in (lambda: m.add(sample(3)), m.snapshot, lambda: m.set_class_names({0: "car"}),
                      lambda: m.verify(repair=True)):
            with pytest.raises(StorageError, match="is open read-only"):
                write()
        with pytest.raises(StorageError, match="readonly"):
            m.record_replay([1])
        assert m.ids() == [1, 2]
    assert {p.name: p.read_bytes() for p in pulled.iterdir() if p.is_file()} == before


def test_add_into_a_folder_turned_read_only(tmp_path):
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as m:
        m.add(sample(1))
        m.add(sample(2))
    proc = run_with_bind_mount(root, "add", read_only=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == [1, 2] and out["after_error"] == [1, 2]
    kind, message = out["error"]
    assert kind == "StorageError" and "Read-only file system" in message and "\n" not in message
    assert out["added"] == 3 and out["verify"] == 0 and out["final"] == [1, 2, 3]


# -- bounds of the memory's own structures

def test_long_source_is_cut_and_long_task_refused(tmp_path):
    with ReplayMemory(tmp_path / "m", cfg()) as m:
        source = "rtsp://camera/" + "x" * 5000 + "/frame.jpg"
        sid = m.add(sample(1, source=source))
        stored = m.records([sid])[0].source
        assert len(stored) == MAX_SOURCE_CHARS
        assert stored == "..." + source[-(MAX_SOURCE_CHARS - 3):]
        with pytest.raises(ReplayMemoryError, match="task name has 129 characters, at most 128"):
            m.add(sample(2, task="t" * 129))
        assert m.ids() == [sid]


def test_wal_and_counters_stay_bounded(tmp_path):
    root = tmp_path / "m"
    wal = root / "index.sqlite-wal"
    counters = []
    with ReplayMemory(root, cfg(capacity=10, holdout_fraction=0.2), keep_snapshots=2) as m:
        for i in range(400):
            m.add(sample(i, task=f"t{i % 2}", cls=i % 3))
            if i % 50 == 49:
                m.snapshot()
                m.update_recall(m.ids(), [0.5] * len(m))
                m.flush()
                counters.append(sqlite3.connect(root / "index.sqlite").execute(
                    "SELECT COUNT(*) FROM counters").fetchone()[0])
            assert not wal.exists() or wal.stat().st_size <= WAL_LIMIT_BYTES
        assert len(m) <= 10
    # 2 tasks x 3 classes: the counter keys stop growing once each was seen
    assert counters[1:] == counters[:1] * (len(counters) - 1)
    assert len([p for p in (root / "snapshots").iterdir()]) == 2


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_lost_index_is_refused_and_its_samples_are_kept(tmp_path, damage):
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as memory:
        for i in range(3):
            memory.add(sample(i))
    before = files(root)
    index = root / "index.sqlite"
    for extra in root.glob("index.sqlite-*"):
        extra.unlink()
    if damage == "missing":
        index.unlink()
    else:
        index.write_bytes(b"")
    for _ in range(2):  # a new index would own none of them: its check would delete all six files
        with pytest.raises(ReplayMemoryError, match=f"holds 3 samples on disk but its index .* is "
                                                    f"{damage}: nothing was changed"):
            ReplayMemory(root, cfg())
    assert files(root) == before and len(before) == 6


def test_an_index_emptied_of_rows_keeps_the_samples_on_disk(tmp_path):
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as memory:
        for i in range(6):
            memory.add(sample(i))
    conn = sqlite3.connect(root / "index.sqlite")
    conn.execute("DELETE FROM samples")
    conn.commit()
    conn.close()
    with pytest.raises(ReplayMemoryError, match="holds 6 samples on disk but its index .* has no "
                                                "row"):
        ReplayMemory(root, cfg())
    assert len(files(root)) == 12


def _meta(path, key):
    db = IndexDB(path, read_only=True)
    try:
        return db.get_meta(key)
    finally:
        db.close()


def _restore_an_older_index(root, tmp_path, added: int) -> list[int]:
    """Store 3 samples, copy the index, store ``added`` more, then put the copy back (a
    backup of the card restored): returns the ids the restored index does not list."""
    with ReplayMemory(root, cfg()) as memory:
        for i in range(3):
            memory.add(sample(i))
    shutil.copy(root / "index.sqlite", tmp_path / "old-index.sqlite")
    with ReplayMemory(root, cfg()) as memory:
        ids = [memory.add(sample(i)) for i in range(3, 3 + added)]
    for extra in root.glob("index.sqlite-*"):
        extra.unlink()
    shutil.copy(tmp_path / "old-index.sqlite", root / "index.sqlite")
    return ids


def test_an_older_index_restored_keeps_the_samples_it_does_not_list(tmp_path, capsys):
    """Before: with an older copy of the index restored (or another device's swapped in), any
    open that verifies (a 'labels answered') deleted the samples it did not list without a
    word: 40 imported samples gone. Now that is refused, every file kept, and the rebuild
    named (up to 4 such samples go to the quarantine)."""
    root = tmp_path / "memory"
    _restore_an_older_index(root, tmp_path, added=6)
    before = files(root)
    with pytest.raises(ReplayMemoryError) as err:
        ReplayMemory(root, cfg())
    assert "holds 6 whole samples on disk (e.g. 00000004) that its index" in str(err.value)
    assert str(err.value).endswith(f"nothing was deleted; 'edgecl memory verify --rebuild-index "
                                   f"--state-dir {tmp_path}' rebuilds it from the sample files "
                                   f"and the newest snapshot")
    assert files(root) == before and len(before) == 18
    # the command it names rebuilds it (before: 'the index is readable; nothing to rebuild'):
    # the 3 rows the old index lists kept as they were, the 6 others from their files
    recorded = {"capacity": 321}  # as a runtime records the device's memory settings
    db = IndexDB(root / "index.sqlite")
    db.set_meta("memory_config", recorded)
    db.close()
    assert main(["memory", "verify", "--rebuild-index", "--state-dir", str(tmp_path),
                 "--json"]) == 0
    assert _meta(root / "index.sqlite", "memory_config") == recorded  # the device's settings
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["rows"], report["from_index"], report["from_files"]) == (9, 3, 6)
    with ReplayMemory(root, cfg()) as memory:
        assert len(memory) == 9 and memory.verify().ok
        assert memory.add(sample(20)) == 10


def test_a_damaged_row_is_one_line_and_the_repairing_check_drops_it_alone(tmp_path):
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg(), names={0: "car"}) as memory:
        ids = [memory.add(sample(i)) for i in range(3)]
    conn = sqlite3.connect(root / "index.sqlite")
    conn.execute("UPDATE samples SET classes = 'garbage' WHERE id = ?", (ids[1],))
    conn.execute("UPDATE samples SET ts_s = 'x' WHERE id = ?", (ids[2],))
    conn.execute("UPDATE meta SET value = '{\"0\": ' WHERE key = 'names'")
    conn.commit()
    conn.close()
    with ReplayMemory(root, cfg(), verify_on_open=False) as memory:
        with pytest.raises(ReplayMemoryError, match=f"row {ids[1]} of the memory index is damaged") as info:
            memory.records()
        # before: neither the file nor the repair was named
        assert str(info.value).endswith(
            f" in {root / 'index.sqlite'}: 'edgecl memory verify --state-dir {tmp_path}' sets the "
            f"sample aside in its quarantine, files kept")
        report = memory.verify(repair=False)
        assert report.corrupt_rows == (ids[1], ids[2]) and report.rows_checked == 3
        assert memory.class_names() is None  # damaged names are ignored, not fatal
        report = memory.verify(repair=True)
        assert report.corrupt_rows == (ids[1], ids[2]) and not report.unrepaired
        assert [r.id for r in memory.records()] == [ids[0]]
    assert files(root) == [f"{ids[0]:08d}.jpg", f"{ids[0]:08d}.txt"]


def test_a_read_only_memory_with_an_empty_index_beside_its_samples_is_damage(tmp_path):
    """An SD-card copy cut short: a 0-byte index beside the samples read as an empty memory
    (stats 0, export of nothing, exit 0) when read-only, while a writable open refused it."""
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as m:
        m.add(sample(1))
    (root / "index.sqlite").write_bytes(b"")
    for sidecar in ("index.sqlite-wal", "index.sqlite-shm"):
        (root / sidecar).unlink(missing_ok=True)
    with pytest.raises(ReplayMemoryError, match="holds 1 samples on disk but its index .* is empty"):
        ReplayMemory(root, cfg(), read_only=True, verify_on_open=False)


def test_a_sqlite_io_error_on_a_full_disk_says_the_disk_is_full(tmp_path, monkeypatch):
    """Before: 'memory stats' and 'labels import' on a full disk said "cannot open the memory
    index: disk I/O error", which reads as a failing card."""
    from edgecl.continual.memory.faults import fault_error

    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorname = "SQLITE_IOERR_WRITE"
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=12 * 1024))
    err = fault_error(exc, "cannot open the memory index", tmp_path / "memory" / "index.sqlite")
    assert isinstance(err, StorageError)
    assert str(err) == ("cannot open the memory index: the disk is full (12 KiB free; SQLite: "
                        f"disk I/O error) ({tmp_path / 'memory' / 'index.sqlite'}); free some "
                        f"room on its volume and run it again (nothing stored was lost)")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=5 * 2**30))
    assert str(fault_error(exc, "cannot open the memory index", tmp_path)).endswith(
        f"disk I/O error ({tmp_path})")  # room left: a fault of the card, said as SQLite says it


def _kill_before_unlinks(monkeypatch):
    """Make the next unlink of removed or evicted samples' files die as a kill -9 would
    between the commit and the unlinks (files left, nothing after it run)."""
    from edgecl.continual.memory.store import ReplayMemory as Store

    def killed(self, ids):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Store, "_unlink_samples", killed)


def test_a_remove_killed_between_its_commit_and_its_unlinks_leaves_a_memory_that_opens(
        tmp_path, monkeypatch):
    """Before: 'memory remove' of 5 or more samples killed after its commit left whole samples
    no row listed; every writing command (run, learn, import, verify) then refused the memory
    as 'an older or another device's index', and the rebuild it named refused too."""
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as memory:
        ids = [memory.add(sample(i)) for i in range(12)]
    memory = ReplayMemory(root, cfg())
    with monkeypatch.context() as patch:
        _kill_before_unlinks(patch)
        with pytest.raises(KeyboardInterrupt):
            memory.remove(ids[2:9])
    assert len(files(root)) == 24  # the 7 removed samples' files are still there
    with ReplayMemory(root, cfg()) as memory:  # the open verifies and finishes the removal
        assert sorted(memory.ids()) == sorted(ids[:2] + ids[9:])
        report = memory.verify(repair=False)
        assert report.unrepaired == () and report.quarantined == ()
    assert len(files(root)) == 10
    assert not (root / "quarantine").exists()
    assert IndexDB(root / "index.sqlite", read_only=True).unlinking() == set()


def test_evictions_killed_after_their_commit_are_finished_not_taken_for_a_lost_index(
        tmp_path, monkeypatch):
    """A lowered capacity evicts many samples at the next open; a kill before their files
    went left the same wedge as a cut-short removal."""
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as memory:
        for i in range(12):
            memory.add(sample(i))
    with monkeypatch.context() as patch:
        _kill_before_unlinks(patch)
        with pytest.raises(KeyboardInterrupt):
            ReplayMemory(root, cfg(capacity=4))
    assert len(files(root)) == 24
    with ReplayMemory(root, cfg(capacity=4)) as memory:
        assert len(memory) == 4
    assert len(files(root)) == 8 and not (root / "quarantine").exists()


def test_a_few_samples_an_older_index_does_not_list_are_quarantined_not_deleted(tmp_path):
    """Before: up to 4 whole samples the index did not list (an older copy restored after an
    import) were deleted, image and labels, by the next repairing open, with no copy kept."""
    root = tmp_path / "memory"
    added = _restore_an_older_index(root, tmp_path, added=3)
    with ReplayMemory(root, cfg(), verify_on_open=False) as memory:
        report = memory.verify()
    assert len(report.quarantined) == 3 and report.unrepaired == ()
    assert "the index does not list" in report.quarantined[0]
    for sample_id in added:
        kept = root / "quarantine" / f"{sample_id:08d}"
        assert sorted(p.name for p in kept.iterdir()) == [
            f"{sample_id:08d}.jpg", f"{sample_id:08d}.txt", "sample.json"]
    assert len(files(root)) == 6
    with ReplayMemory(root, cfg()) as memory:  # their ids are not handed out again
        assert memory.add(sample(7)) == max(added) + 1


def test_a_rebuild_over_another_devices_index_keeps_none_of_its_rows(tmp_path, capsys):
    """Another device's index swapped in: its rows 1-3 (other images, other sources) were kept
    for this device's files 1-3, so an import of that device's folder took them for its own,
    and --relabel then deleted this device's samples."""
    root = tmp_path / "memory"
    with ReplayMemory(root, cfg()) as memory:
        for i in range(6):
            memory.add(sample(i, source=f"mine{i}.jpg"))
    other = tmp_path / "other" / "memory"
    with ReplayMemory(other, cfg()) as memory:
        for i in range(3):
            memory.add(Sample(np.full((24, 20, 3), 40 + i, np.uint8), BOX.copy(), task="t0",
                              source=f"theirs{i}.jpg"))
    for extra in root.glob("index.sqlite*"):
        extra.unlink()
    shutil.copy(other / "index.sqlite", root / "index.sqlite")
    assert main(["memory", "verify", "--rebuild-index", "--state-dir", str(tmp_path),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["rows"], report["from_index"], report["from_files"]) == (6, 0, 6)
    assert report["snapshot_notes"] == [
        "6 sample(s) rebuilt from their files alone are trained on, not held out, and carry no "
        "import hash: an import of their folder stores its images again",
        "3 row(s) of the old index did not fit their files (size in bytes or pixels; another "
        "device's index?): those samples were rebuilt from their files alone"]
    with ReplayMemory(root, cfg()) as memory:
        assert not [r.source for r in memory.records() if r.source.startswith("theirs")]


def test_a_full_disk_without_a_note_of_its_own_says_what_to_do(tmp_path):
    """Before: 'cannot update the memory's stream counters: database or disk is full (...)',
    with no next step, of a labels import started on a full card."""
    import sqlite3

    from edgecl.continual.memory.faults import fault_error

    full = sqlite3.OperationalError("database or disk is full")
    message = str(fault_error(full, "cannot update the replay memory's index", tmp_path))
    assert message == (f"cannot update the replay memory's index: database or disk is full "
                       f"({tmp_path}); free some room on its volume and run it again (nothing "
                       f"stored was lost)")
    kept = fault_error(OSError(28, "No space left on device"), "cannot store", tmp_path, "kept")
    assert str(kept).endswith("; kept")  # a caller's own note stands
    assert "free some room" not in str(fault_error(OSError(13, "Permission denied"), "x", tmp_path))
