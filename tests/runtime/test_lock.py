"""One runtime per state directory: a second holder is refused with the first one's pid; the
kernel frees the lock when the holder is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edgecl.errors import EdgeclError, StorageError
from edgecl.runtime.lock import RuntimeLock, StateLockedError, holder_pid

HOLD = textwrap.dedent("""
    import sys, time
    from edgecl.runtime.lock import RuntimeLock
    lock = RuntimeLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def test_second_holder_is_refused_with_one_line_naming_the_pid(tmp_path):
    state = tmp_path / "state"
    with RuntimeLock(state) as first:
        assert first.held and (state / "lock").read_text() == f"{os.getpid()}\n"
        assert holder_pid(state) == os.getpid()
        with pytest.raises(StateLockedError) as err:
            RuntimeLock(state).acquire()
        message = str(err.value)
        assert isinstance(err.value, EdgeclError) and "\n" not in message
        assert f"pid {os.getpid()}" in message and str(state) in message
    assert holder_pid(state) is None
    RuntimeLock(state).acquire().release()


def test_release_is_idempotent_and_acquire_twice_is_a_no_op(tmp_path):
    lock = RuntimeLock(tmp_path)
    assert lock.acquire() is lock.acquire()
    lock.release()
    lock.release()
    assert not lock.held and holder_pid(tmp_path) is None
    RuntimeLock(tmp_path).acquire()  # dropped without release: garbage collection frees it
    assert holder_pid(tmp_path) is None


def test_kill_9_of_the_holder_frees_the_lock(tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdout=subprocess.PIPE,
                            env=dict(os.environ, YOLO_OFFLINE="1"))
    try:
        assert proc.stdout.readline().strip() == b"held"
        with pytest.raises(StateLockedError, match=f"pid {proc.pid}"):
            RuntimeLock(state).acquire()
        assert holder_pid(state) == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with RuntimeLock(state) as lock:
        assert lock.held and holder_pid(state) == os.getpid()


def test_the_next_start_after_a_kill_9_says_the_last_run_died(tmp_path, caplog):
    """Before: a runtime killed with SIGKILL during a round's export left nothing that the next
    start named; only its counts ("72 training sample(s) stored before this start...")."""
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdout=subprocess.PIPE,
                            env=dict(os.environ, YOLO_OFFLINE="1"))
    try:
        assert proc.stdout.readline().strip() == b"held"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with RuntimeLock(state):
        pass
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said == [f"the last edgecl process holding {state} (pid {proc.pid}) did not stop "
                    "cleanly (killed, crashed or powered off); what it left is checked as the "
                    "state opens"]
    caplog.clear()
    with RuntimeLock(state):  # the last one stopped cleanly
        pass
    assert not caplog.records


def test_a_state_directory_that_cannot_be_created_is_one_storage_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StorageError, match="cannot create the lock file") as err:
        RuntimeLock(tmp_path / "file" / "state").acquire()
    assert "\n" not in str(err.value)


def test_a_full_disk_keeps_the_lock_without_its_pid(tmp_path, monkeypatch, caplog):
    """The pid is informative; a full card must not keep a device from starting."""
    import errno

    from edgecl.runtime import lock as lock_mod

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock_mod.os, "pwrite", full)
    lock = RuntimeLock(tmp_path).acquire()
    try:
        assert lock.held and "without its pid (No space left on device)" in caplog.text
        with pytest.raises(StateLockedError):
            RuntimeLock(tmp_path).acquire()
    finally:
        lock.release()

    def read_only(fd, data, offset):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(lock_mod.os, "pwrite", read_only)
    with pytest.raises(StorageError, match="cannot write the lock file"):
        RuntimeLock(tmp_path).acquire()


def test_an_import_that_cannot_announce_itself_says_so(tmp_path, caplog):
    """Before: a folder where import.lock belongs let the import run unannounced, without a
    word (a runtime could start a round on half of it)."""
    from edgecl.runtime.lock import IMPORT_LOCK_NAME, importing

    (tmp_path / IMPORT_LOCK_NAME).mkdir()
    with importing(tmp_path):
        pass
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "a runtime on this state directory may start a learning round" in caplog.text
