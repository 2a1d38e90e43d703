"""A live source stops within a fraction of a second whatever its driver does: an open, a
reopen or a read blocked in native code (FFmpeg waiting for an RTSP camera that does not
answer, a stalled V4L2 or GStreamer driver) is left to a worker thread, and a capture left
behind is released when its driver returns, never used again; a camera down for hours holds
at most one such thread."""

import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecl.config import SourceConfig
from edgecl.frames import StreamState
from edgecl.runtime.sources import live, open_source

CFG = SourceConfig(reconnect_initial_s=0.01, reconnect_max_s=0.01, max_consecutive_failures=10**6)
STOP_BOUND_S = 0.5  # before: the driver's timeout (10 s for RTSP), or for ever


def camera_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == live.WORKER_THREAD_NAME and t.is_alive()]


def wait_until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture(autouse=True)
def no_camera_thread_left():
    """Every test ends with its drivers released: no worker thread outlives it."""
    gc.collect()  # a source dropped unclosed by an earlier test retires its worker
    assert wait_until(lambda: not camera_threads()), "a previous test left a camera thread"
    yield
    assert wait_until(lambda: not camera_threads()), [t.name for t in camera_threads()]


class Driver:
    """A scripted camera driver: each capture it makes is numbered; ``block_open`` (a set of
    capture numbers) makes those opens wait for ``unblock``, ``block_read``/``block_release``
    do the same for every read/release; ``fail_reads`` makes reads fail."""

    def __init__(self, block_open=(), block_read=False, block_release=False, fail_reads=False,
                 opened=True):
        self.block_open, self.block_read = set(block_open), block_read
        self.block_release, self.fail_reads, self.opened = block_release, fail_reads, opened
        self.unblock = threading.Event()
        self.entered = threading.Event()  # a blocking call has been entered
        self.captures: list[FakeCapture] = []
        self.threads: set[str] = set()
        self.max_workers_at_open = 0

    def factory(self):
        self.threads.add(threading.current_thread().name)
        self.max_workers_at_open = max(self.max_workers_at_open, len(camera_threads()))
        number = len(self.captures) + 1
        capture = FakeCapture(self, number)
        self.captures.append(capture)
        if number in self.block_open:
            self.entered.set()
            self.unblock.wait(30)
        return capture

    def block(self):
        self.entered.set()
        self.unblock.wait(30)


class FakeCapture:
    def __init__(self, driver, number):
        self.driver, self.number = driver, number
        self.reads = self.released = 0

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return self.driver.opened

    def read(self):
        assert not self.released, "a released capture was read"
        self.reads += 1
        self.driver.threads.add(threading.current_thread().name)
        if self.driver.block_read:
            self.driver.block()
        if self.driver.fail_reads:
            return False, None
        return True, np.full((4, 4, 3), self.number, np.uint8)

    def release(self):
        self.driver.threads.add(threading.current_thread().name)
        if self.driver.block_release:
            self.driver.block()
        self.released += 1


def in_thread(fn):
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def test_close_ends_an_open_blocked_in_the_driver_and_the_late_capture_is_released():
    driver = Driver(block_open={1})
    source = open_source("rtsp://cam/x", CFG, capture_factory=driver.factory)
    opener, result = in_thread(source.open)
    assert driver.entered.wait(5)
    t0 = time.monotonic()
    source.close()
    opener.join(STOP_BOUND_S)
    assert not opener.is_alive() and result == [source]  # before: blocked for the driver's timeout
    assert time.monotonic() - t0 < STOP_BOUND_S
    assert source.state is StreamState.CLOSED and source.read() is None  # before: reopened
    assert len(camera_threads()) == 1  # the open in progress, left to its worker
    driver.unblock.set()  # the driver returns at last: that capture is released, never read
    assert wait_until(lambda: not camera_threads())
    assert [(c.released, c.reads) for c in driver.captures] == [(1, 0)]
    assert driver.threads == {live.WORKER_THREAD_NAME}


# A signal is sent to the process running the check, so each runs in a fresh interpreter: an
# earlier test of the suite can leave the pytest process unable to take a signal at all (after
# test_learning_e2e.py's hot swap, the main thread's alternate signal stack is unmapped memory,
# and any signal with a Python handler ends the process with SIGSEGV).

def run_isolated(check: str) -> None:
    """Run the function ``check`` of this module in a new interpreter; it must not fail."""
    here = Path(__file__)
    code = (f"import sys; sys.path.insert(0, {str(here.parent)!r}); import {here.stem} as m; "
            f"m.{check}(); assert m.wait_until(lambda: not m.camera_threads())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_stop_signal_during_a_blocked_open_ends_the_open_and_runs_the_handler():
    run_isolated("check_a_stop_signal_during_a_blocked_open_ends_the_open_and_runs_the_handler")


def test_a_signal_handler_that_raises_unwinds_a_blocked_open():
    run_isolated("check_a_signal_handler_that_raises_unwinds_a_blocked_open")


def check_a_stop_signal_during_a_blocked_open_ends_the_open_and_runs_the_handler():
    """What ``edgecl run`` does on SIGTERM/SIGINT while the camera opens (the open is on the
    main thread; its handler only asks the loop to stop)."""
    from edgecl.runtime.app import stop_on_signals

    assert threading.current_thread() is threading.main_thread()
    driver, stops = Driver(block_open={1}), []
    source = open_source("rtsp://cam/x", CFG, capture_factory=driver.factory)
    before = signal.getsignal(signal.SIGTERM)

    def open_until(signum, when):
        killer, _ = in_thread(lambda: when() and os.kill(os.getpid(), signum))
        with stop_on_signals(lambda _signum: stops.append(time.monotonic())):
            source.open()
            returned_s = time.monotonic()
        killer.join(5)
        assert stops and returned_s - stops[-1] < STOP_BOUND_S  # before: ~10 s, then exit 2
        assert source.state is StreamState.CLOSED and source.read() is None

    open_until(signal.SIGTERM, lambda: driver.entered.wait(5))
    # the open left behind is still in the driver: a reopen waits for it (no second capture in
    # flight), and a signal stops that wait too
    open_until(signal.SIGINT, lambda: time.sleep(0.2) or True)
    # a stopped block leaves later signals ignored (the process is stopping: a second one
    # must not raise in the handler the block had replaced)
    from edgecl.runtime.app import ignored_after_stop

    assert len(stops) == 2 and signal.getsignal(signal.SIGTERM) is ignored_after_stop
    signal.signal(signal.SIGTERM, before)
    assert len(driver.captures) == 1 and len(camera_threads()) == 1
    driver.unblock.set()
    assert wait_until(lambda: not camera_threads())
    assert driver.captures[0].released == 1 and driver.captures[0].reads == 0
    frame = source.open().read()  # once the driver has let go, the source opens again
    source.close()
    assert frame is not None and int(frame.image[0, 0, 0]) == 2


class Stop(Exception):
    """What the handler below raises."""


def check_a_signal_handler_that_raises_unwinds_a_blocked_open():
    """Ctrl-C outside ``edgecl run`` (KeyboardInterrupt), or the CLI's SIGTERM -> SystemExit."""
    driver = Driver(block_open={1})
    source = open_source("rtsp://cam/x", CFG, capture_factory=driver.factory)

    def raise_stop(signum, frame):
        raise Stop()

    previous = signal.signal(signal.SIGTERM, raise_stop)
    try:
        killer, _ = in_thread(lambda: driver.entered.wait(5) and os.kill(os.getpid(), signal.SIGTERM))
        t0 = time.monotonic()
        with pytest.raises(Stop):
            source.open()
        assert time.monotonic() - t0 < 5.0 and driver.entered.is_set()
        killer.join(5)
        assert signal.getsignal(signal.SIGTERM) is raise_stop
    finally:
        signal.signal(signal.SIGTERM, previous)
    driver.unblock.set()
    assert wait_until(lambda: not camera_threads())
    assert driver.captures[0].released == 1 and driver.captures[0].reads == 0


def test_close_ends_a_reconnection_blocked_in_the_driver():
    driver = Driver(block_open={2}, fail_reads=True)  # the stream drops; its reopen hangs
    source = open_source("rtsp://cam/x", CFG, capture_factory=driver.factory).open()
    reader, result = in_thread(source.read)
    assert driver.entered.wait(5)
    assert source.state is StreamState.RECONNECTING
    t0 = time.monotonic()
    source.close()
    reader.join(STOP_BOUND_S)
    assert not reader.is_alive() and result == [None]  # before: waited for the driver
    assert time.monotonic() - t0 < STOP_BOUND_S
    assert driver.captures[0].released == 1 and driver.captures[1].released == 0
    driver.unblock.set()
    assert wait_until(lambda: not camera_threads())
    assert [(c.released, c.reads) for c in driver.captures] == [(1, 1), (1, 0)]


def test_close_ends_a_read_blocked_in_the_driver_at_once():
    driver = Driver(block_read=True)
    source = open_source("rtsp://cam/x", CFG, capture_factory=driver.factory).open()
    reader, result = in_thread(source.read)
    assert driver.entered.wait(5)
    t0 = time.monotonic()
    source.close()
    reader.join(STOP_BOUND_S)
    assert not reader.is_alive() and result == [None]  # before: the reader stayed blocked
    assert time.monotonic() - t0 < live.CLOSE_WAIT_S + STOP_BOUND_S
    assert driver.captures[0].released == 0  # still in the driver's hands
    driver.unblock.set()
    assert wait_until(lambda: not camera_threads())
    assert driver.captures[0].released == 1 and driver.captures[0].reads == 1


def test_a_release_blocked_in_the_driver_holds_back_the_next_open():
    driver = Driver(fail_reads=True, block_release=True)
    source = open_source("rtsp://cam/x", CFG, capture_factory=driver.factory).open()
    reader, result = in_thread(source.read)
    assert driver.entered.wait(5)
    time.sleep(0.2)
    assert len(driver.captures) == 1 and len(camera_threads()) == 1  # no second capture meanwhile
    source.close()
    reader.join(STOP_BOUND_S)
    assert not reader.is_alive() and result == [None]
    driver.unblock.set()
    assert wait_until(lambda: not camera_threads())
    assert len(driver.captures) == 1 and driver.captures[0].released == 1


def test_a_camera_down_for_hours_holds_one_worker_and_releases_every_capture():
    driver = Driver(fail_reads=True)
    source = open_source("rtsp://cam/x", CFG, capture_factory=driver.factory, sleep=lambda s: None)
    source.open()
    driver.opened = False  # every reopen fails from now on
    reader, result = in_thread(source.read)
    assert wait_until(lambda: source.stats.reconnects >= 300, timeout_s=20)
    source.close()
    reader.join(5)
    assert not reader.is_alive() and result == [None]
    assert driver.max_workers_at_open == 1  # each worker had ended before the next opened
    assert all(c.released == 1 for c in driver.captures) and len(driver.captures) >= 300
    assert driver.threads == {live.WORKER_THREAD_NAME}


def test_reconnection_and_frames_still_work_through_the_worker():
    driver = Driver()
    source = open_source("rtsp://cam/x", CFG, capture_factory=driver.factory).open()
    frames = [source.read() for _ in range(3)]
    driver.fail_reads = True
    reader, result = in_thread(source.read)
    assert wait_until(lambda: len(driver.captures) >= 3)
    driver.fail_reads = False
    reader.join(5)
    source.close()
    assert [f.frame_id for f in frames] == [0, 1, 2] and result[0].frame_id == 3
    assert source.stats.reconnects >= 2
    assert all(c.released == 1 for c in driver.captures)


def test_a_driver_that_raises_on_open_leaves_no_thread():
    def broken():
        raise RuntimeError("GStreamer: pipeline could not be constructed")

    source = open_source("rtsp://cam/x", CFG, capture_factory=broken)
    with pytest.raises(RuntimeError, match="pipeline could not be constructed"):
        source.open()
    assert wait_until(lambda: not camera_threads())


def test_a_source_dropped_without_close_releases_its_capture():
    driver = Driver()
    source = open_source("rtsp://cam/x", CFG, capture_factory=driver.factory).open()
    assert source.read() is not None
    del source
    gc.collect()
    assert wait_until(lambda: not camera_threads())
    assert driver.captures[0].released == 1


# --- the real process: FFmpeg opening an RTSP stream that never answers ----------------------

def _ffmpeg_available() -> bool:
    import cv2

    return "FFMPEG:                      YES" in cv2.getBuildInformation()


@pytest.mark.skipif(not _ffmpeg_available(), reason="this OpenCV has no FFmpeg")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_edgecl_run_stops_at_once_while_ffmpeg_opens_a_silent_camera(tmp_path, sig):
    """A local socket that accepts and never answers: FFmpeg's open waits its 10 s timeout.
    Before: the signal took effect after it, and the run ended with exit 2 'cannot open'."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    cmd = [sys.executable, "-m", "edgecl.cli", "run", "--source", f"rtsp://127.0.0.1:{port}/stream",
           "--model", "yolo11n.yaml", "--quiet", "model.imgsz=64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, YOLO_OFFLINE="1"))
    try:
        server.settimeout(60)
        conn, _ = server.accept()  # FFmpeg is in its open
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        stop_s = time.monotonic() - t0
        conn.close()
    finally:
        proc.kill()
        server.close()
    assert stop_s < 3.0, (stop_s, err.decode()[-2000:])
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip().splitlines()[-1].startswith("frames=0 ")
    assert b"shutting down cleanly" in err and b"cannot open" not in err
