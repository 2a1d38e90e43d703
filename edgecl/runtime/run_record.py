"""``STATE/runtime.json``: what the runtime runs with and what its learner waits for.

``edgecl status`` reads a device's state directory alone. The learner's settings it showed were
the ones of the config it was given, or the defaults: a runtime started with overrides
(``learner.trigger_new_samples=5``) starts rounds at 5 while the status said 100, and a round
that waited for disk room (``/healthz``: degraded) read as about to start. The runtime writes
this record when it starts and when its learner's state changes (a few writes per round, none
per frame); the status reads it while the same runtime holds the state directory, and names it
as the last run's otherwise.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from edgecl.atomic import atomic_write_json

log = logging.getLogger(__name__)

RUN_RECORD_FILE = "runtime.json"
"""The record's file name in the state directory."""
SAME_STATE_EVERY_S = 60.0
"""Seconds between two writes for a new reason of the same state (a wait for room names the
free MiB, which move with every stored frame: each change written would wear the card)."""


SETTINGS = ("enabled", "trigger_new_samples", "trigger_interval_s", "trigger_new_class")
"""The ``learner.*`` settings the record keeps: whether rounds run and what starts one."""


def learner_settings(learner) -> dict:
    """The :data:`SETTINGS` of a ``learner`` section (:class:`edgecl.config.LearnerConfig`), as
    the record keeps them and ``edgecl status`` shows them."""
    return {key: getattr(learner, key) for key in SETTINGS}


class RunRecord:
    """The running runtime's record, written atomically (temp file, fsync, ``os.replace``).

    Args:
        state_dir: the state directory (the runtime holds its lock).
        pid: the runtime's process id.
        started: when it started (ISO time).
        learner: the learner settings it runs with (:func:`learner_settings`).
    """

    def __init__(self, state_dir: str | Path, pid: int, started: str, learner: dict):
        self.path = Path(state_dir) / RUN_RECORD_FILE
        self.record = {"pid": pid, "started": started, "learner": dict(learner),
                       "learner_state": None, "learner_why": None, "learner_since": None}
        self.failures = 0
        self._written_s = float("-inf")  # monotonic time of the last write

    def learner(self, state: str, why: str | None) -> None:
        """Record the learner's state (``idle``, ``training``, ``backoff``, ``off`` or a
        ``waiting_for_*``) and why; written when the state changes, and for a new reason of
        the same state at most every :data:`SAME_STATE_EVERY_S`. A write that fails (a full
        card) is logged once, counted, and tried again at the next change.

        Args:
            state: the state as the console and ``/metrics`` name it.
            why: its one-line reason (a wait's, a back-off's), or None.
        """
        if (self.record["learner_state"], self.record["learner_why"]) == (state, why):
            return
        if (state == self.record["learner_state"]
                and time.monotonic() - self._written_s < SAME_STATE_EVERY_S):
            return  # the same wait, new figures: written at most every SAME_STATE_EVERY_S
        from edgecl.boot import now_iso

        # when it was said: a card too full for this file keeps an older line, which 'status'
        # shows with its time rather than as now (before: beside the disk's real 0 B free)
        self.record.update(learner_state=state, learner_why=why, learner_since=now_iso())
        self.write()

    def write(self) -> None:
        """Write the record (contained: a failure is logged once and counted)."""
        try:
            atomic_write_json(self.path, self.record)
            self._written_s = time.monotonic()
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("%s not written (%s): edgecl status shows the learner's "
                            "settings as the config gives them", self.path, exc.strerror or exc)


def read_run_record(state_dir: str | Path) -> dict | None:
    """The last runtime's record, or None when there is none or it cannot be read (a kill
    cannot leave half of it: it is replaced whole).

    Args:
        state_dir: the state directory.

    Returns:
        The record's JSON object (``pid``, ``started``, ``learner`` settings,
        ``learner_state``, ``learner_why``, ``learner_since``), or None.
    """
    try:
        data = json.loads((Path(state_dir) / RUN_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("learner"), dict):
        return None
    return data
