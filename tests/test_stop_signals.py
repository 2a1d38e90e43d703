"""A stop signal unwinds a process once: a second one, which ``timeout`` and service managers
send to the whole process group right after the first, is ignored while the first unwinds (it
raised again inside the unwinding and left 'fleet join' hanging in gRPC's channel cleanup)."""

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from edgecl.stop_signals import unwind_once_on_stop_signals


def _work_with_a_slow_cleanup(marker: Path, ignore_sigint: bool):
    unwind_once_on_stop_signals(ignore_sigint=ignore_sigint)
    try:  # said inside: a signal sent as soon as it is said lands in the work, not before it
        marker.with_suffix(".started").write_text("")
        time.sleep(60)
    finally:
        time.sleep(0.6)  # a cleanup that takes a while (closing a gRPC channel, say)
        marker.write_text("cleaned")


def _started(target, args, started: Path) -> mp.Process:
    """A forked child running ``target(*args)``, once it wrote ``started``."""
    proc = mp.get_context("fork").Process(target=target, args=args, daemon=True)
    proc.start()
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline and proc.is_alive(), "the child never started"
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("signum, ignore_sigint, exit_code", [
    (signal.SIGTERM, False, 143), (signal.SIGTERM, True, 143), (signal.SIGINT, False, 1),
    (signal.SIGHUP, False, 129)])  # SIGHUP: before, killed where it stood (no cleanup)
def test_a_second_stop_signal_does_not_break_the_unwinding(tmp_path, signum, ignore_sigint,
                                                           exit_code):
    marker = tmp_path / "marker.txt"
    proc = _started(_work_with_a_slow_cleanup, (marker, ignore_sigint),
                    marker.with_suffix(".started"))
    try:
        os.kill(proc.pid, signum)
        time.sleep(0.2)  # inside the cleanup now
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGHUP)
        proc.join(10)
        assert proc.exitcode == exit_code  # 1: KeyboardInterrupt out of a child process
        assert marker.read_text() == "cleaned", "the cleanup ran to its end"
    finally:
        if proc.is_alive():
            proc.kill()


def test_a_spawned_process_ignores_ctrl_c(tmp_path):
    marker = tmp_path / "marker.txt"
    proc = _started(_work_with_a_slow_cleanup, (marker, True), marker.with_suffix(".started"))
    try:
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        assert proc.is_alive() and not marker.exists()
    finally:
        proc.kill()


def _work_with_a_cleanup_that_never_returns(started: Path):
    unwind_once_on_stop_signals()
    started.write_text("")
    try:
        time.sleep(60)
    finally:
        time.sleep(60)  # gRPC waiting on a channel's threads that were cut short


def _waiting_with_a_short_deadline(started: Path):
    from edgecl.stop_signals import force_exit_after

    with force_exit_after(0.5):  # a fleet client waiting for its server
        _work_with_a_cleanup_that_never_returns(started)


@pytest.mark.parametrize("work, deadline_s", [
    # before: 'fleet join' stopped by one SIGTERM could wait forever in gRPC's channel cleanup,
    # and ignored every later SIGTERM
    (_work_with_a_cleanup_that_never_returns, 0.5),
    # before: 'fleet join' stopped while it retried its server waited the full 20 s (gRPC's
    # release of a failed connection never returned); it has no state to save there
    (_waiting_with_a_short_deadline, None)])
def test_a_stop_that_never_ends_exits_at_its_deadline(tmp_path, monkeypatch, work, deadline_s):
    from edgecl import stop_signals

    if deadline_s is not None:
        monkeypatch.setattr(stop_signals, "FORCE_EXIT_AFTER_S", deadline_s)
    started = tmp_path / "started"
    proc = _started(work, (started,), started)
    try:
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
        assert proc.exitcode == 143 and time.monotonic() - t0 < 5
    finally:
        if proc.is_alive():
            proc.kill()


def test_a_stop_signal_while_the_interpreter_exits_is_quiet(tmp_path):
    """Before: a SIGTERM that reached 'edgecl learn' after its work was done (systemd stops the
    whole process group) raised inside a library's exit callback (torch's): "Exception ignored
    in atexit callback ... SigtermExit: 143" and a traceback."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import atexit, os, signal, time
        from edgecl.stop_signals import unwind_once_on_stop_signals

        def library_cleanup():  # as torch's finalizers run at exit
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)

        unwind_once_on_stop_signals()
        atexit.register(library_cleanup)
        print("done", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.stdout == "done\n" and proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "SigtermExit" not in proc.stderr


def test_a_command_stopped_by_a_signal_ignores_the_next_one_through_the_interpreters_exit():
    """Before: 'edgecl learn --json' stopped by SIGTERM printed its error line, and a second
    SIGTERM 0.3 s later (systemd, timeout) found the default action again while the interpreter
    shut down: the process died by the signal (a parent saw -15, not 143)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import os, signal, sys, time
        from edgecl import cli

        def stopped(argv):  # a command that SIGTERM stops where it stands
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

        cli._main = stopped
        try:
            cli.main()
        except SystemExit as exc:
            print(exc.code, signal.getsignal(signal.SIGTERM) is signal.SIG_IGN,
                  signal.getsignal(signal.SIGINT) is signal.SIG_IGN, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # the second one, while the process ends
        time.sleep(0.2)
        sys.exit(143)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert proc.stdout == "143 True True\n" and proc.returncode == 143, proc.stderr


def _log_the_stop(marker: Path, spawned: bool):
    import logging

    logging.basicConfig(filename=str(marker.with_suffix(".log")), level=logging.DEBUG,
                        format="%(levelname)s %(message)s", force=True)
    unwind_once_on_stop_signals(ignore_sigint=True, spawned=spawned)
    marker.with_suffix(".started").write_text("")
    time.sleep(60)


@pytest.mark.parametrize("spawned, line", [
    # a command stopped by a user or a manager (one a shell started in the background too)
    (False, "WARNING received SIGTERM: stopping"),
    # a child the runtime spawned, which its parent stops at every normal end (before: "WARNING
    # fleet DEVICE: received SIGTERM: stopping" ended every `edgecl run` with a fleet)
    (True, "DEBUG received SIGTERM: stopping")])
def test_a_spawned_process_stopped_by_its_parent_is_no_warning(tmp_path, spawned, line):
    marker = tmp_path / "marker.txt"
    proc = _started(_log_the_stop, (marker, spawned), marker.with_suffix(".started"))
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
        assert proc.exitcode == 143
        assert marker.with_suffix(".log").read_text().splitlines() == [line]
    finally:
        if proc.is_alive():
            proc.kill()


def _contain_a_converted_stop(marker: Path):
    from edgecl.stop_signals import SigtermExit, raise_if_stopping

    unwind_once_on_stop_signals(ignore_sigint=True, spawned=True)
    raise_if_stopping()  # no stop yet: nothing happens
    marker.with_suffix(".started").write_text("")
    try:
        try:
            time.sleep(60)  # inside a library's C++ code when the signal comes
        except SigtermExit:
            raise RuntimeError("Check 'false' failed at src/frontends/common/src/frontend.cpp")
    except Exception:  # a fault contained, as an export or a fleet round contains one
        raise_if_stopping()
        marker.write_text("went on")
        time.sleep(60)


def test_a_stop_that_a_library_turned_into_its_own_error_still_stops(tmp_path):
    """Before: a SIGTERM that arrived inside OpenVINO's export came back as its RuntimeError,
    was contained as an export fault ('OpenVINO IR not exported'), and the device went on
    until its forced exit 20 s later."""
    marker = tmp_path / "marker.txt"
    proc = _started(_contain_a_converted_stop, (marker,), marker.with_suffix(".started"))
    try:
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
        assert proc.exitcode == 143 and time.monotonic() - started < 5
        assert not marker.exists()
    finally:
        if proc.is_alive():
            proc.kill()
