"""Per-stage heartbeats of the device runtime, read by ``/healthz``.

Each stage of the runtime (``capture``, ``inference``, ``sinks``, ``supervisor`` -- the main
thread --, ``learner``, ``server``) tells the :class:`Watchdog` what it is doing, from its own
thread:

- :meth:`Watchdog.beat` -- "I am working and made progress now"; a stage that stays in this state
  longer than its ``stuck_after_s`` without another beat is reported ``stuck`` (a camera read
  that never returns, an inference call that hangs, a sink blocked on a dead disk);
- :meth:`Watchdog.idle` -- "I am waiting by design" (capture on a paused source or on a full
  buffer, inference waiting for frames, a learner with no round due): never ``stuck``;
- :meth:`Watchdog.fault` -- "I am alive but what I do fails" (a sink whose writes raise, a learner
  backing off after failed rounds, with ``waiting=True``): ``degraded`` until its next report;
- :meth:`Watchdog.stop` -- the stage ended normally (the source is exhausted): not ``stuck``.

A stage may have *parts* (one per sink): the stage shows the worst of its parts. The design
follows roboflow/inference's ``InferencePipeline`` watchdog (a status per stage, read by a
health endpoint), with "idle by design" made explicit so a paused stream is not a fault.

The clock is injectable (tests pass a fake); every method is thread-safe and O(1) except
:meth:`Watchdog.snapshot`, which is O(stages + parts).
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


class StageState(str, enum.Enum):
    """What a stage reported last (``stuck`` is derived from the time since then)."""

    STARTING = "starting"
    OK = "ok"
    IDLE = "idle"
    DEGRADED = "degraded"
    STUCK = "stuck"
    STOPPED = "stopped"


class HealthStatus(str, enum.Enum):
    """Overall status: ``stuck`` if any stage is stuck, else ``degraded`` if any is, else ``ok``."""

    OK = "ok"
    DEGRADED = "degraded"
    STUCK = "stuck"


# INVARIANT: a larger rank is a worse state; a stage shows the worst state of its parts.
_RANK = {StageState.STOPPED: 0, StageState.IDLE: 1, StageState.OK: 2, StageState.STARTING: 3,
         StageState.DEGRADED: 4, StageState.STUCK: 5}
# States whose age turns them into STUCK (a stage that is working, failing while working, or
# never started working); idle and stopped stages never do.
_ESCALATES = (StageState.OK, StageState.STARTING, StageState.DEGRADED)

# Default stuck thresholds in seconds (a stage not listed gets DEFAULT_STUCK_AFTER_S).
DEFAULT_STUCK_AFTER_S = 60.0
STUCK_AFTER_S = {"capture": 30.0, "inference": 30.0, "sinks": 60.0, "supervisor": 120.0,
                 "server": 30.0, "learner": 1800.0}


@dataclass
class _Beat:
    state: StageState
    at_s: float
    detail: str = ""
    escalates: bool = True


@dataclass
class _Stage:
    stuck_after_s: float
    probe: Callable[[], tuple[StageState, str] | None] | None
    beat: _Beat
    parts: dict[str, _Beat] = field(default_factory=dict)


class Watchdog:
    """Collects per-stage heartbeats and derives ``ok`` / ``degraded`` / ``stuck``.

    Args:
        clock: monotonic time in seconds (``time.monotonic`` by default; tests pass a fake).
        stuck_after_s: per-stage stuck thresholds overriding :data:`STUCK_AFTER_S`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 stuck_after_s: dict[str, float] | None = None):
        self._clock = clock
        self._thresholds = dict(STUCK_AFTER_S, **(stuck_after_s or {}))
        self._stages: dict[str, _Stage] = {}
        self._lock = threading.Lock()

    def register(self, stage: str, stuck_after_s: float | None = None,
                 probe: Callable[[], tuple[StageState, str] | None] | None = None) -> None:
        """Declare a stage (state ``starting``: it turns ``stuck`` if it never beats).

        Registering again keeps the stage's last beat and updates its threshold and probe.

        Args:
            stage: stage name (``capture``, ``inference``, ``sinks``, ``learner``, ``server``...).
            stuck_after_s: seconds without a beat after which a working stage is ``stuck``
                (default: :data:`STUCK_AFTER_S` or the constructor's override).
            probe: optional callable returning ``(state, detail)`` that overrides a working
                (``ok``/``starting``) stage's state, or ``None`` to keep it; it lets a stage
                that blocks inside a call say why (e.g. a source that is paused or
                reconnecting). It must be fast and must not raise.
        """
        threshold = stuck_after_s if stuck_after_s is not None else self._thresholds.get(
            stage, DEFAULT_STUCK_AFTER_S)
        with self._lock:
            old = self._stages.get(stage)
            if old is not None:
                old.stuck_after_s, old.probe = threshold, probe
                return
            self._stages[stage] = _Stage(threshold, probe, _Beat(StageState.STARTING, self._clock()))

    def beat(self, stage: str, detail: str = "", part: str | None = None) -> None:
        """Record progress of a working stage (or of one of its parts).

        Args:
            stage: stage name (registered on first use with the default threshold).
            detail: short human-readable note shown on ``/healthz``.
            part: optional part name (e.g. one sink of the ``sinks`` stage).
        """
        self._set(stage, StageState.OK, detail, part)

    def idle(self, stage: str, detail: str = "", part: str | None = None) -> None:
        """Record that a stage waits by design (never reported ``stuck`` while idle).

        Args:
            stage: stage name.
            detail: what it waits for.
            part: optional part name.
        """
        self._set(stage, StageState.IDLE, detail, part)

    def fault(self, stage: str, detail: str, part: str | None = None, waiting: bool = False) -> None:
        """Record that a stage is alive but failing (``degraded`` until its next report).

        A degraded stage that is still working must keep reporting (``fault`` again on each
        failed attempt, ``beat`` on success): without a report for ``stuck_after_s`` it turns
        ``stuck``, like a working one. One that waits by design while failing (a learner
        backing off after failed rounds) passes ``waiting=True`` and is never ``stuck``.

        Args:
            stage: stage name.
            detail: what fails, in one line.
            part: optional part name.
            waiting: the stage waits by design until its next report.
        """
        self._set(stage, StageState.DEGRADED, detail, part, escalates=not waiting)

    def stop(self, stage: str, detail: str = "", part: str | None = None) -> None:
        """Record that a stage (or part) ended normally.

        Args:
            stage: stage name.
            detail: why it ended.
            part: optional part name.
        """
        self._set(stage, StageState.STOPPED, detail, part)

    def _set(self, stage: str, state: StageState, detail: str, part: str | None,
             escalates: bool = True) -> None:
        now = self._clock()
        beat = _Beat(state, now, detail, escalates and state in _ESCALATES)
        with self._lock:
            entry = self._stages.get(stage)
            if entry is None:  # first report of an unregistered stage (a part's: no own beat yet)
                own = beat if part is None else _Beat(StageState.STARTING, now, "", False)
                entry = _Stage(self._thresholds.get(stage, DEFAULT_STUCK_AFTER_S), None, own)
                self._stages[stage] = entry
            if part is None:
                entry.beat = beat
            else:
                entry.parts[part] = beat

    def _view(self, beat: _Beat, stuck_after_s: float, now: float) -> dict:
        age_s = max(0.0, now - beat.at_s)
        state, detail = beat.state, beat.detail
        if beat.escalates and age_s > stuck_after_s:
            state = StageState.STUCK
            detail = f"no progress for {age_s:.0f} s (stuck after {stuck_after_s:g} s)" + (
                f"; last: {beat.detail}" if beat.detail else "")
        return {"state": state, "last_beat_s_ago": round(age_s, 1), "detail": detail}

    def snapshot(self) -> dict:
        """The status ``/healthz`` shows.

        Returns:
            ``{"status": "ok"|"degraded"|"stuck", "stages": {name: {"state": str,
            "last_beat_s_ago": float, "detail": str, "stuck_after_s": float
            [, "parts": {part: {"state", "last_beat_s_ago", "detail"}}]}}}``; states are
            ``starting``, ``ok``, ``idle``, ``degraded``, ``stuck`` or ``stopped``. A stage with
            parts shows the worst part (or its own beat, if worse).
        """
        now = self._clock()
        with self._lock:
            stages = {name: (s.stuck_after_s, s.probe, s.beat, dict(s.parts))
                      for name, s in self._stages.items()}
        out, worst = {}, StageState.STOPPED
        for name, (threshold, probe, beat, parts) in stages.items():
            view = self._view(beat, threshold, now)
            if probe is not None and beat.state in (StageState.OK, StageState.STARTING):
                override = probe()
                if override is not None:
                    view["state"], view["detail"] = override
            part_views = {p: self._view(b, threshold, now) for p, b in parts.items()}
            if part_views:
                # the worst part (the most recent among equals) speaks for the stage, unless
                # the stage's own report is worse (a stage-level fault)
                part, pv = max(part_views.items(),
                               key=lambda kv: (_RANK[kv[1]["state"]], -kv[1]["last_beat_s_ago"]))
                if beat.state is StageState.STARTING or _RANK[pv["state"]] >= _RANK[view["state"]]:
                    view = dict(pv, detail=f"{part}: {pv['detail']}" if pv["detail"] else part)
            entry = {"state": view["state"].value, "last_beat_s_ago": view["last_beat_s_ago"],
                     "detail": view["detail"], "stuck_after_s": threshold}
            if part_views:
                entry["parts"] = {p: dict(v, state=v["state"].value) for p, v in part_views.items()}
            out[name] = entry
            if _RANK[view["state"]] > _RANK[worst]:
                worst = view["state"]
        if worst is StageState.STUCK:
            status = HealthStatus.STUCK
        elif worst is StageState.DEGRADED:
            status = HealthStatus.DEGRADED
        else:
            status = HealthStatus.OK
        return {"status": status.value, "stages": out}
