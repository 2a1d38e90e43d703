"""The learner process and its supervisor.

The supervisor (main thread of ``edgecl run``) watches the triggers, spawns one learner
process at a time (multiprocessing ``spawn``: a crash or out-of-memory there never takes
capture down), and promotes the version the round staged. The round itself lives in
:mod:`edgecl.continual.round`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

from edgecl.config import Config, LearnerConfig

log = logging.getLogger(__name__)


def learner_dir(state_dir: str | Path) -> Path:
    """Return ``STATE/learner`` (created)."""
    path = Path(state_dir) / "learner"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def round_lock(state_dir: str | Path, wait: bool = False):
    """Hold the one-round-at-a-time lock (released by the kernel if the holder dies).

    Args:
        state_dir: state directory.
        wait: block until free instead of failing.

    Yields:
        ``True`` when the lock is held, ``False`` when another round is running.
    """
    with open(learner_dir(state_dir) / "round.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no orphan learner keeps
    writing to a state directory that nobody supervises). A no-op elsewhere."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def learner_main(cfg: Config, reason: str, max_sample_id: int | None = None) -> None:
    """Entry point of the spawned learner process: one round, result written to disk.

    Args:
        cfg: the configuration (picklable frozen dataclass).
        reason: why the round was triggered (recorded in the manifest).
        max_sample_id: learn only samples up to this memory id (those present at the trigger).
    """
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s learner: %(message)s")
    die_with_parent()
    from edgecl.continual.finetune import apply_low_priority
    from edgecl.continual.round import run_round

    apply_low_priority(cfg.learner)
    with round_lock(cfg.state_dir) as held:
        if not held:
            log.warning("another learning round is running; this one is skipped")
            return
        run_round(cfg, reason=reason, max_sample_id=max_sample_id)


@dataclass
class TriggerState:
    """Counters since the last round, read by :func:`should_learn`."""

    new_samples: int = 0
    new_classes: bool = False
    last_round_s: float = 0.0


def should_learn(state: TriggerState, cfg: LearnerConfig, now_s: float) -> str | None:
    """Decide whether a round is due.

    Args:
        state: counters since the last round.
        cfg: learner settings.
        now_s: current monotonic time in seconds.

    Returns:
        The trigger's name (``new_samples``, ``new_class``, ``interval``) or ``None``.
    """
    if cfg.trigger_new_class and state.new_classes and state.new_samples > 0:
        return "new_class"
    if cfg.trigger_new_samples > 0 and state.new_samples >= cfg.trigger_new_samples:
        return "new_samples"
    if (cfg.trigger_interval_s > 0 and state.new_samples > 0
            and now_s - state.last_round_s >= cfg.trigger_interval_s):
        return "interval"
    return None


class LearnerSupervisor:
    """Schedules learning rounds in a spawned process and promotes what they stage.

    Args:
        cfg: configuration.
        registry: the model registry (the supervisor owns its ``current`` pointer).
        memory_sink: the loop's memory sink (its counters drive the triggers).
        known_classes: classes the current model already has.
        on_round: optional callback with each round's result dict.
    """

    def __init__(self, cfg: Config, registry, memory_sink=None, known_classes=(), on_round=None):
        self.cfg = cfg
        self.registry = registry
        self.memory_sink = memory_sink
        self.known_classes = set(known_classes)
        self.on_round = on_round
        self.state = TriggerState(last_round_s=time.monotonic())
        self.rounds: list[dict] = []
        self._proc: mp.Process | None = None
        self._started_wall_s = 0.0

    @property
    def busy(self) -> bool:
        """True while a learner process is alive."""
        return self._proc is not None and self._proc.is_alive()

    def tick(self) -> None:
        """Called periodically from the main thread: collect results, start a round if due."""
        if self.memory_sink is not None:
            added, classes = self.memory_sink.take_counters()
            self.state.new_samples += added
            self.state.new_classes |= bool(classes - self.known_classes)
        if self._proc is not None and not self._proc.is_alive():
            self._finish()
        if self._proc is None and self.cfg.learner.enabled:
            reason = should_learn(self.state, self.cfg.learner, time.monotonic())
            if reason:
                self.start_round(reason)

    def start_round(self, reason: str) -> None:
        """Spawn a learner process for one round."""
        ctx = mp.get_context("spawn")
        ceiling = None
        if self.memory_sink is not None:
            ceiling = max(self.memory_sink.memory.ids(), default=0)
        self._proc = ctx.Process(target=learner_main, args=(self.cfg, reason, ceiling),
                                 name="edgecl-learner", daemon=True)
        self._started_wall_s = time.time()
        self._proc.start()
        self.state = TriggerState(last_round_s=time.monotonic())
        log.info("learning round started (trigger: %s, pid %d)", reason, self._proc.pid)

    def _finish(self) -> None:
        proc, self._proc = self._proc, None
        result = read_last_round(self.cfg.state_dir)
        # INVARIANT: only a result written by the round this supervisor started is handled
        if proc.exitcode != 0 or result is None or result.get("started_s", 0) < self._started_wall_s:
            log.error("learning round failed (exit code %s); detection goes on with %s",
                      proc.exitcode, self.registry.current())
            return
        self.handle_result(result)

    def handle_result(self, result: dict) -> None:
        """Promote a staged version (or log a rejection) and report the round."""
        if result.get("status") == "skipped":
            log.info("learning round skipped: %s", result.get("reason"))
            return
        if result.get("status") == "staged":
            from edgecl.runtime.promote import promote_version

            promote_version(self.cfg.state_dir, result["version"])
            result = dict(result, status="promoted")
            self.known_classes.update(int(c) for c in result.get("classes", []))
            log.info("promoted %s (acc %.3f)", result["version"], result.get("acc", float("nan")))
        else:
            log.warning("round rejected %s: %s", result.get("version"), result.get("reason"))
        self.rounds.append(result)
        if self.on_round is not None:
            self.on_round(result)

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for a running round to finish and handle its result."""
        if self._proc is not None:
            self._proc.join(timeout_s)
            if not self._proc.is_alive():
                self._finish()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop a running round (it is abandoned; the next one starts clean)."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.kill()
        self._proc = None


def read_last_round(state_dir: str | Path) -> dict | None:
    """Read the result of the most recent finished round, if any."""
    path = learner_dir(state_dir) / "last_round.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
