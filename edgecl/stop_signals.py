"""How a process of edgecl's stops on SIGTERM, SIGHUP and Ctrl-C: by unwinding, once, within a
deadline.

The first stop signal raises where the main thread stands (``SystemExit(143)`` for SIGTERM,
``SystemExit(129)`` for SIGHUP, the hang-up of a closed SSH session or terminal, whose default
action killed the process where it stood; ``KeyboardInterrupt`` for SIGINT), so that ``with``
blocks and ``finally`` clauses remove temporary files and release locks. Every later one is ignored: ``timeout`` and service managers
send SIGTERM to the command and then to its process group, and a second exception raised inside
that unwinding (in a gRPC channel's ``__del__``, say) broke it and left the process hanging. A
stop still under way :data:`FORCE_EXIT_AFTER_S` after the signal ends the process at once (every
state file is written atomically, so what a kill leaves is consistent).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

FORCE_EXIT_AFTER_S = 20.0
"""How long a stop may unwind before the process exits at once: a library's cleanup that never
returns (gRPC closing a channel whose threads were cut short) must not keep a stopped device
alive until a service manager's SIGKILL."""


_force_exit_after_s: float | None = None
"""The deadline a stop signal's unwinding gets now (:func:`force_exit_after`; None:
:data:`FORCE_EXIT_AFTER_S`)."""


@contextlib.contextmanager
def force_exit_after(seconds: float):
    """Within the block, a stop signal's unwinding may last only ``seconds`` before the
    process exits at once: for a process that holds nothing a kill could damage there (a
    fleet client waiting for its server: a stop raised inside gRPC's failed connection left
    a channel whose release never returned, and the stop took the full 20 s).

    Args:
        seconds: the deadline for a stop received within the block.
    """
    global _force_exit_after_s
    before, _force_exit_after_s = _force_exit_after_s, seconds
    try:
        yield
    finally:
        _force_exit_after_s = before


class SigtermExit(SystemExit):
    """The exit a SIGTERM makes (code 143), or a SIGHUP (129), raised where the main thread
    stands."""


HANGUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Signals that stop a command as SIGTERM does (:class:`SigtermExit`, ``128 + signum``)."""


def raise_stop(signum: int | None) -> None:
    """Raise, where the caller stands, the stop that a signal asked of a run that ended by it
    (a benchmark built on the runtime, whose handler only ended the loop): ``SigtermExit(143)``
    for SIGTERM, so that a service manager sees the signal's code; ``KeyboardInterrupt`` for
    Ctrl-C and for an unknown signal (the command line exits 130).

    Args:
        signum: the signal that stopped the run, or None where it is not known.

    Raises:
        SigtermExit: ``signum`` is SIGTERM or SIGHUP (:data:`HANGUP_SIGNALS`).
        KeyboardInterrupt: any other ``signum``.
    """
    if signum in HANGUP_SIGNALS:
        raise SigtermExit(128 + signum)
    raise KeyboardInterrupt


_stop_signum: int | None = None
"""The stop signal this process received (set by the handler of
:func:`unwind_once_on_stop_signals`), or None."""


def stop_received() -> int | None:
    """The stop signal this process received (``signal.SIGINT``, ``signal.SIGTERM``), or None:
    a fault raised after it may be the stop itself, turned by a library into its own error
    (numpy made Ctrl-C inside a structured-array comparison a ``TypeError``)."""
    return _stop_signum


def raise_if_stopping() -> None:
    """Raise again the stop this process received, where a fault is contained: a stop raised
    inside a library's C++ code comes back as that library's own error (OpenVINO turned it
    into ``RuntimeError: Check 'false' failed``), which a broad ``except`` then contained as
    an ordinary fault, and the process went on working until its forced exit 20 s later.
    Call it first in such an ``except`` clause; it does nothing when no stop was received.

    Raises:
        SigtermExit: SIGTERM or SIGHUP was received.
        KeyboardInterrupt: SIGINT was received.
    """
    if _stop_signum is not None:
        raise_stop(_stop_signum)


def unwind_once_on_stop_signals(ignore_sigint: bool = False, spawned: bool = False) -> None:
    """Install the stop handlers for SIGTERM, SIGINT and SIGHUP in this (main) thread (a
    SIGHUP ignored, as ``nohup`` starts a command, stays ignored).

    Args:
        ignore_sigint: ignore SIGINT altogether: a process the runtime spawned (its learner,
            its fleet client), which a terminal's Ctrl-C reaches with the whole process group
            while the runtime, which receives it too, stops its children itself (or a
            command a shell started in the background).
        spawned: a process another edgecl process spawned and stops with SIGTERM at every
            normal end: that SIGTERM is logged at DEBUG level, not as a warning (``edgecl
            run`` with a fleet ended with ``WARNING fleet DEVICE: received SIGTERM:
            stopping``).
    """
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        if stopping:  # already unwinding: a second exception would break the unwinding
            return
        if not threading.main_thread().is_alive():
            # the interpreter is shutting down (atexit callbacks run: the command's work is
            # done): an exception raised in a library's exit callback only printed a traceback
            return
        stopping = True
        global _stop_signum
        _stop_signum = signum
        _exit_if_still_stopping_after(FORCE_EXIT_AFTER_S if _force_exit_after_s is None
                                      else _force_exit_after_s, 128 + signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        # a spawned child's SIGTERM is its parent stopping it, at every normal end: no warning
        log.log(logging.DEBUG if spawned else logging.WARNING, "received %s: stopping",
                signal.Signals(signum).name)
        raise SigtermExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else stop)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, stop)


def _exit_if_still_stopping_after(seconds: float, code: int) -> None:
    """Start a daemon timer that ends the process with ``code`` (``os._exit``, after flushing
    the log and the standard streams) unless it has exited by itself within ``seconds``."""

    def force() -> None:
        # (a short deadline is one given where a kill is harmless: no error)
        log.log(logging.ERROR if seconds >= FORCE_EXIT_AFTER_S else logging.WARNING,
                "still stopping %g s after the stop signal: exiting now", seconds)
        for handler in logging.getLogger().handlers:
            handler.flush()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing more to say
                pass
        os._exit(code)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.name = "stop-deadline"  # not edgecl-*: the command line waits for none of its own
    timer.start()
