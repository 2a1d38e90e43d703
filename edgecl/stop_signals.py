"""How a process of edgecl's stops on SIGTERM and Ctrl-C: by unwinding, once.

The first stop signal raises where the main thread stands (``SystemExit(143)`` for SIGTERM,
``KeyboardInterrupt`` for SIGINT), so that ``with`` blocks and ``finally`` clauses remove
temporary files and release locks. Every later one is ignored: ``timeout`` and service managers
send SIGTERM to the command and then to its process group, and a second exception raised inside
that unwinding (in a gRPC channel's ``__del__``, say) broke it and left the process hanging.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger(__name__)


class SigtermExit(SystemExit):
    """The exit a SIGTERM makes (code 143), raised where the main thread stands."""


def unwind_once_on_stop_signals(ignore_sigint: bool = False) -> None:
    """Install the stop handlers for SIGTERM and SIGINT in this (main) thread.

    Args:
        ignore_sigint: ignore SIGINT altogether: a process the runtime spawned (its learner,
            its fleet client), which a terminal's Ctrl-C reaches with the whole process group
            while the runtime, which receives it too, stops its children itself.
    """
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        if stopping:  # already unwinding: a second exception would break the unwinding
            return
        stopping = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("received %s: stopping", signal.Signals(signum).name)
        raise SigtermExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else stop)
