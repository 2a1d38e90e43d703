"""The learner process and its supervisor.

The supervisor (main thread of ``edgecl run``) watches the triggers, spawns one learner
process at a time (multiprocessing ``spawn``: a crash or out-of-memory there never takes
capture down), and promotes the version the round staged. The round itself lives in
:mod:`edgecl.continual.round`.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import math
import multiprocessing as mp
import os
import shlex
import shutil
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgecl.atomic import atomic_write_json
from edgecl.boot import iso_time, now_iso
from edgecl.config import Config, LearnerConfig
from edgecl.continual.round_state import (RoundResult, RoundStatus, learner_dir, load_state,
                                          progress_within_memory, state_path)
from edgecl.errors import EdgeclError, storage_fault, storage_faults
from edgecl.logs import basic_config
from edgecl.runtime.lock import import_running
from edgecl.stop_signals import SigtermExit, raise_if_stopping, unwind_once_on_stop_signals

log = logging.getLogger(__name__)


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


RUNNING_FILE = "running.json"
"""``STATE/learner/running.json``: the round running now (written when it starts, updated with
its fine-tuning's progress, removed when its result is written), so the runtime shows how far
it is and the next start can say that a round was cut short."""


def _mark_running(state_dir: str | Path, reason: str, round_id: str):
    """Record that a round starts (a full disk only loses this record, never the round).

    Returns:
        The fine-tuning's progress callback (:data:`edgecl.continual.finetune.ProgressCallback`)
        that adds ``steps``, ``total_steps``, ``elapsed_s`` and ``budget_s`` to the record.
    """
    path = learner_dir(state_dir) / RUNNING_FILE
    record = {"started": now_iso(), "started_s": round(time.time(), 3),
              "trigger": str(reason)[:200], "round_id": round_id,
              "versions_before": _newest_version_number(state_dir)}

    def write(**progress) -> None:
        try:
            atomic_write_json(path, {**record, **progress})
        except OSError as exc:
            log.debug("the running round's record not written: %s", exc)

    write()
    return lambda steps, total, elapsed_s, budget_s: write(
        steps=int(steps), total_steps=int(total), elapsed_s=round(float(elapsed_s), 1),
        budget_s=round(float(budget_s), 1))


def running_record(path: Path) -> dict | None:
    """The running round's record (:data:`RUNNING_FILE` at ``path``), or None when absent,
    unreadable or not a JSON object."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested 200,000 deep
        return None
    return record if isinstance(record, dict) else None


def running_progress(state_dir: str | Path, round_id: str) -> float | None:
    """The running round's fine-tuning progress, 0..1, from :data:`RUNNING_FILE`.

    Args:
        state_dir: the state directory.
        round_id: the round asked about (a record of another round says nothing).

    Returns:
        The larger of steps / total steps and seconds / budget (training stops at the first
        bound reached), or ``None`` before training reports or when unreadable.
    """
    record = running_record(Path(state_dir) / "learner" / RUNNING_FILE)
    if record is None or record.get("round_id") != round_id:
        return None
    fractions = []
    for done, bound in (("steps", "total_steps"), ("elapsed_s", "budget_s")):
        a, b = record.get(done), record.get(bound)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 \
                and math.isfinite(a) and math.isfinite(b):
            fractions.append(min(1.0, max(0.0, a / b)))
    return max(fractions) if fractions else None


FLEET_WORK = "fleet-work"
"""``STATE/learner/fleet-work``: the work folder of a fleet round (its fine-tuned model, the
engines exported from the global model it adopts)."""


def interrupted_round(state_dir: str | Path) -> str | None:
    """Say and clear a round that a stop cut short; call it holding the round lock
    (:func:`round_lock`), so that no round of another process is running.

    A round that was killed with its process (the device powered off, the runtime killed, the
    learner killed for memory) leaves its record (:data:`RUNNING_FILE`) and its work folder,
    which holds copies of the model files until the next round; both are removed here, and so
    is a killed fleet round's work folder (:data:`FLEET_WORK`: before, about 10 MB stayed on
    the card for good).

    Args:
        state_dir: the state directory.

    Returns:
        One line saying when the round started, its trigger and what it means, or ``None``
        when the last round finished.
    """
    folder = learner_dir(state_dir)
    shutil.rmtree(folder / FLEET_WORK, ignore_errors=True)  # no fleet round runs: the lock
    path = folder / RUNNING_FILE
    if not path.exists():
        return None
    record = running_record(path) or {}
    shutil.rmtree(folder / "work", ignore_errors=True)
    with contextlib.suppress(OSError):
        path.unlink()
    started = str(record.get("started", "at an unknown time"))[:40]
    trigger = str(record.get("trigger", "unknown"))[:200]
    kept = _version_made_since(state_dir, record)
    if kept:  # killed after it staged: a start promotes it (before: "nothing ... kept" as well)
        log.info("the learning round started %s (trigger: %s) stopped after it staged %s: what "
                 "it learnt is kept there", started, trigger, kept)
        return None
    return (f"the learning round started {started} (trigger: {trigger}) did not finish: the "
            f"device or its learner stopped during it (killed, out of memory or powered off); "
            f"nothing it learnt was kept, and the next round learns its samples again")


def _newest_version_number(state_dir: str | Path) -> int:
    """The highest number among the model registry's version folders (0: none)."""
    from edgecl.models.registry import version_names

    try:
        names = version_names(Path(state_dir) / "models")
    except OSError:
        return 0
    return int(names[-1][1:]) if names else 0


def _version_made_since(state_dir: str | Path, record: dict) -> str | None:
    """The newest model version a learning round made (its manifest names a memory snapshot)
    after the round in ``record`` (the running record) started, or None.

    "After" is by version number: the record's ``versions_before``, the newest version when
    the round started. Before, it was by time (created at or after ``started``), and a round
    killed after the clock went back read a version made in the clock's old future as its own.
    A record of a release without the number falls back to the times."""
    from edgecl.models.registry import Registry

    if not (Path(state_dir) / "models").is_dir():
        return None
    before, started = record.get("versions_before"), record.get("started")
    by_number = isinstance(before, int) and not isinstance(before, bool) and before >= 0
    if not by_number and not isinstance(started, str):
        return None
    try:
        registry = Registry(Path(state_dir) / "models")
        for version in reversed(registry.versions()):
            if by_number and int(version[1:]) <= before:
                break
            manifest = registry.manifest(version)
            if not manifest.get("memory_snapshot"):
                continue
            if by_number or str(manifest.get("created", "")) >= started:
                return version
    except (EdgeclError, OSError, ValueError) as exc:  # the registry says so at its own open
        log.debug("versions not checked for the round cut short: %s", exc)
    return None


HELD_OUT_WAIT = ("a learning round is due and waits for the first held-out sample with a box "
                 "(the gate needs one to judge a candidate): label or import a few more frames")
"""What the console and ``/healthz`` say while a due round waits for a held-out sample."""
OTHER_WRITERS_SAY_EVERY_S = 60.0
"""Least seconds between two log lines counting samples other processes stored."""
IMPORT_WAIT = ("a learning round is due and waits for an import into the memory to finish "
               "(a round now would learn half the folder)")
"""What the console and ``/healthz`` say while a due round waits for an import."""
TRAIN_SHARE = 0.8
"""Share of a round's wall time spent training when no earlier round tells (progress bar)."""


PACKAGE_SUFFIXES = frozenset({".py", ".js", ".css", ".html", ".svg", ".json", ".yaml", ".typed"})
"""Files of the package that :func:`installed_version` identifies (code and console files)."""


def installed_version() -> str | None:
    """The edgecl on disk now, as a learning round's new process would import it: its
    distribution's version (read afresh) and an identity of its files (the name, size and
    modification time of every source and console file, compiled caches left out), since a
    release, a ``pip install -U`` of a build or a ``git pull`` into an editable install may
    all keep the same version number.

    Returns:
        E.g. ``"0.1.0 (files 3f2a9c1b7d04)"``; ``None`` when the package folder cannot be read.
    """
    import hashlib
    from importlib import metadata

    import edgecl

    try:
        version = metadata.version("edgecl")
    except metadata.PackageNotFoundError:
        version = "source tree"
    root = Path(edgecl.__file__).resolve().parent
    digest = hashlib.sha256()
    try:
        for path in sorted(root.rglob("*")):
            # what a new process reads: editor swap files and backups (.config.py.swp,
            # config.py~) beside them are no upgrade (they stopped learning until a restart)
            if ("__pycache__" in path.parts or path.suffix not in PACKAGE_SUFFIXES
                    or path.name.startswith(".") or path.is_dir()):
                continue
            info = path.stat()
            digest.update(f"{path.relative_to(root)}\0{info.st_size}\0{info.st_mtime_ns}\n"
                          .encode("utf-8", "surrogateescape"))
    except OSError:
        return None
    return f"{version} (files {digest.hexdigest()[:12]})"


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


def monitor_recorder(state_dir: str | Path):
    """The round's recording hook: write the evaluation and the round to the metrics database.

    Args:
        state_dir: the state directory.

    Returns:
        A :data:`edgecl.continual.round.RoundRecorder`.
    """
    from edgecl.runtime.monitor import Monitor

    def record(**recorded) -> dict:
        return Monitor(state_dir).record_finished_round(**recorded)

    return record


ROUND_TEMP = "tmp"
"""``STATE/learner/tmp``: the system temp folder of a round (:func:`round_temp_folder`)."""


@contextlib.contextmanager
def round_temp_folder(state_dir: str | Path):
    """Make ``STATE/learner/tmp`` this process's temp folder while a round runs, and empty it
    before and after: the libraries a round calls (ultralytics' dataset scan, onnxruntime's
    INT8 quantiser, its ``ort.quant.*`` copy of the model) write scratch files in the system
    temp folder, where a learner killed by the OOM killer or a power cut left them for good;
    here the next round removes them. Where that folder cannot be made, the system's serves.

    Args:
        state_dir: the state directory.
    """
    import tempfile

    folder = Path(state_dir) / "learner" / ROUND_TEMP
    shutil.rmtree(folder, ignore_errors=True)  # a killed round's leftovers
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        yield
        return
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before
        shutil.rmtree(folder, ignore_errors=True)


def run_learning_round(cfg: Config, reason: str = "on_demand",
                       max_sample_id: int | None = None, round_id: str = "",
                       hold: bool = False, again: bool = False) -> RoundResult:
    """Run one round with the monitor recording it, and write ``last_round.json``.

    While it runs, ``learner/running.json`` says so (:func:`interrupted_round` reports a round
    that a stop cut short: at the runtime's next start, or before the next round).

    A fault inside the round is contained here: it becomes a ``failed`` result whose reason
    names the error (the supervisor backs off when the same failure repeats).

    Args:
        cfg: configuration.
        reason: what triggered the round.
        max_sample_id: learn only samples up to this memory id.
        round_id: the supervisor's id of this round, written into the result (a new one
            when empty).
        hold: a staged candidate waits for ``edgecl models promote`` (see
            :func:`edgecl.continual.round.run_round`).
        again: with nothing new, learn the memory's training samples again (see
            :func:`edgecl.continual.round.run_round`).

    A full disk is one line naming what could not be written where, never a traceback: the
    round fails (or, after its version is staged, lists what it could not write in
    ``unsaved``), its work folder is removed (the round's copies of its model files would
    otherwise hold the card's room until the next round), and a ``last_round.json`` that
    cannot be written is logged: the result is returned all the same.

    Returns:
        The round's result.
    """
    from edgecl.continual.round import run_round

    round_id = round_id or uuid.uuid4().hex  # 'edgecl learn': before, its result had none
    progress = None
    try:
        cut_short = interrupted_round(cfg.state_dir)
        progress = _mark_running(cfg.state_dir, reason, round_id)
    except OSError as exc:  # a state directory that cannot be written: the round says why
        cut_short = None
        log.debug("the running round's record not checked: %s", exc)
    if cut_short:
        log.warning("%s", cut_short)
    started_s, started_mono_s = time.time(), time.monotonic()
    try:
        with round_temp_folder(cfg.state_dir):
            result = run_round(cfg, reason=reason, max_sample_id=max_sample_id,
                               record=monitor_recorder(cfg.state_dir), hold=hold,
                               progress=progress, again=again)
    except Exception as exc:  # a round's fault must never escape the learner; it is reported
        raise_if_stopping()  # a stop signal inside torch or OpenVINO is no round fault
        exc = storage_fault(exc, "cannot write the round's files") or exc
        if isinstance(exc, EdgeclError):  # a refusal that names its cause: one line
            log.error("learning round failed: %s", exc)
        else:
            log.exception("learning round failed")
        said = str(exc) if isinstance(exc, EdgeclError) else f"{type(exc).__name__}: {exc}"
        result = RoundResult(RoundStatus.FAILED, reason=said,
                             trigger=reason, started_s=started_s,
                             seconds=round(time.monotonic() - started_mono_s, 1))
    except (KeyboardInterrupt, SigtermExit):
        # stopped (Ctrl-C on 'edgecl learn', a SIGTERM): not cut short by a kill or a power
        # loss, as the next start would say if the record stayed
        with contextlib.suppress(OSError):
            (learner_dir(cfg.state_dir) / RUNNING_FILE).unlink()
        log.info("the learning round was stopped: nothing it learnt was kept, and the next "
                 "round learns its samples again")
        raise
    finally:
        # the staged version holds copies of what it needs: the work folder is only room taken
        shutil.rmtree(learner_dir(cfg.state_dir) / "work", ignore_errors=True)
    result.round_id = round_id
    try:
        write_last_round(cfg.state_dir, result)
    except OSError as exc:
        fault = storage_fault(exc, "the round's result file cannot be written")
        if fault is None:
            raise
        log.warning("%s; the result is handed over all the same", fault)
    with contextlib.suppress(OSError):
        (learner_dir(cfg.state_dir) / RUNNING_FILE).unlink()
    return result


ROUND_ELSEWHERE = ("another learning round is running on this state directory ('edgecl "
                   "learn', say); the samples it does not learn count towards the next round")
"""Why the runtime's round did not run: the one-round lock was held."""


def learner_main(cfg: Config, reason: str, max_sample_id: int | None = None,
                 round_id: str = "", result_conn=None) -> None:
    """Entry point of the spawned learner process: one round, result written to disk and, when
    given a connection, sent through it too (a full disk cannot keep the result from the
    supervisor: the version the round staged is promoted without waiting for a restart).

    Args:
        cfg: the configuration (picklable frozen dataclass).
        reason: why the round was triggered (recorded in the manifest).
        max_sample_id: learn only samples up to this memory id (those present at the trigger).
        round_id: the supervisor's id of this round (see :attr:`RoundResult.round_id`).
        result_conn: the sending end of a ``multiprocessing`` pipe, or ``None``.
    """
    basic_config(logging.INFO, "%(asctime)s %(levelname)s learner: %(message)s")
    # the runtime's SIGTERM (or its death) unwinds the round, removing an export's temporary
    # folder; Ctrl-C reaches the whole process group and is the runtime's to act on
    unwind_once_on_stop_signals(ignore_sigint=True, spawned=True)
    die_with_parent()
    from edgecl.continual.finetune import apply_low_priority

    apply_low_priority(cfg.learner)
    with round_lock(cfg.state_dir) as held:
        if held:
            result = run_learning_round(cfg, reason=reason, max_sample_id=max_sample_id,
                                        round_id=round_id)
        else:  # said as a skip (before: nothing sent, and the runtime logged a failed round)
            result = RoundResult(RoundStatus.SKIPPED, trigger=reason, started_s=time.time(),
                                 round_id=round_id, reason=ROUND_ELSEWHERE)
            log.info("round skipped: %s", ROUND_ELSEWHERE)
    if result_conn is not None:
        try:
            result_conn.send(result.to_json())
        except (OSError, ValueError) as exc:  # the supervisor is gone: the file is what is left
            log.warning("round result not sent to the runtime: %s", exc)
        finally:
            result_conn.close()


@dataclass
class TriggerState:
    """Counters since the last round, read by :func:`should_learn`."""

    new_samples: int = 0
    new_classes: bool = False
    last_round_s: float = 0.0


CLOCK_BACK_S = 60.0
"""A time read more than this in the future of the wall clock: the clock was set back since."""


def interval_origin_s(state_dir: str | Path, interval_s: float) -> float:
    """When, on ``time.monotonic()``, the interval trigger's wait began: the last round's end
    (``learner/last_round.json``'s modification time, written by rounds only: a promotion or
    a rollback, which rewrite ``learner/state.json``, do not restart the wait; a state
    directory of a release without it: ``state.json``'s), not this start. Before, the wait
    began at each start: a device run per sortie, shorter than the interval, never had an
    interval round. A wall clock set since (no battery on the board) counts as at most one
    interval, and so does one set back since (the round's end stamped more than a minute in
    the future: a board that boots at 1970 every sortie, with no time sync, reads its last
    round as later than now; counting no wait restarted the interval at every start, as
    before).

    Args:
        state_dir: the state directory.
        interval_s: ``learner.trigger_interval_s``.

    Returns:
        A monotonic time, ``now`` when no round has finished yet.
    """
    now_s = time.monotonic()
    for path in (Path(state_dir) / "learner" / "last_round.json", state_path(state_dir)):
        try:
            finished_s = path.stat().st_mtime
            break
        except OSError:
            continue
    else:
        return now_s
    waited_s = time.time() - finished_s
    if waited_s < -CLOCK_BACK_S and interval_s > 0:  # said only where an interval counts
        log.info("the last learning round ended %s, later than the clock reads now (%s): the "
                 "clock was set back since; learner.trigger_interval_s counts as elapsed",
                 iso_time(finished_s), now_iso())
        waited_s = interval_s
    return now_s - min(max(0.0, waited_s), max(0.0, interval_s))


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


SCAN_EVERY_S = 2.0
"""How often the supervisor looks for samples other processes stored (seconds)."""

ROUND_ROOM_MARGIN_BYTES = 4 * 1024 * 1024
"""Room a round needs beyond its model files (memory snapshot, record, result, manifest)."""


def room_problem(state_dir: str | Path) -> str | None:
    """Why the state directory has no room for a learning round, or None when it has.

    A round writes its model files twice (its work copy, then the staged version) and a few
    small files; the serving version's files give their size (a first round: the margin only).

    Args:
        state_dir: the state directory.

    Returns:
        One line naming what is free and what a round needs, or None (also when it cannot
        tell: the round itself then fails in one line).
    """
    current = Path(state_dir) / "models" / "current"
    try:
        serving = current.resolve() if current.is_dir() else None
        files = [f for f in serving.iterdir() if f.is_file()] if serving is not None else []
        need = 2 * sum(f.stat().st_size for f in files) + ROUND_ROOM_MARGIN_BYTES
        usage = shutil.disk_usage(state_dir)
        others = sum(f.stat().st_size for v in (Path(state_dir) / "models").glob("v[0-9]*")
                     # resolved as the serving one is (before, a relative --state-dir counted
                     # the serving version among the others, and 'prune' was named for nothing)
                     if v.is_dir() and not v.is_symlink() and v.resolve() != serving
                     for f in v.iterdir() if f.is_file() and f.name != "manifest.json")
    except OSError:
        return None
    if usage.free >= need:
        return None
    said = (f"{state_dir} has {usage.free / 2**20:.1f} MiB free; a round needs about "
            f"{need / 2**20:.1f} MiB (the serving model's files twice, and its small files)")
    if usage.total < need:  # before: advice to prune, on a volume no round fits on
        return (f"{said}, more than the whole volume holds ({usage.total / 2**20:.1f} MiB): "
                f"learning needs a larger volume for the state directory")
    if others:
        return (f"{said}; other model versions hold {others / 2**20:.1f} MiB: keeping fewer "
                f"frees room: set export.keep_promoted and export.keep_rejected lower in the "
                f"device's config and run 'edgecl models prune --config CONFIG.yaml "
                f"--state-dir {shlex.quote(str(state_dir))}' with it")
    return (f"{said}; no other model version is kept to prune: free room on the volume (the "
            f"replay memory's bound memory.max_bytes, --out and --save-video files, other "
            f"files on it)")


def ended_how(exitcode: int | None) -> str:
    """How a learner process ended, for the log: ``ended with exit code 3``, or the signal
    that ended it (``-9``: ``was killed (SIGKILL: ...)``, which on a device is most often the
    kernel's out-of-memory killer).

    Args:
        exitcode: ``multiprocessing.Process.exitcode`` (negative: the signal's number).
    """
    if exitcode is None or exitcode >= 0:
        return f"ended with exit code {exitcode}"
    if -exitcode == signal.SIGKILL:
        return ("was killed (SIGKILL: on a device most often the kernel's out-of-memory "
                "killer; lower learner.batch or learner.imgsz, or add swap)")
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return f"was ended by {name}"


def _saved_progress(cfg: Config, otherwise: str, memory=None) -> tuple[int, int, int] | None:
    """What the learner saved: ``(highest sample id learnt, number of the last finished round,
    highest sample id that starts no round by itself)`` (``LearnerState.trigger_from_id``: set
    by a rollback).

    The round number is the one the model versions, the metrics database (``edgecl monitor``,
    the console's Forgetting page: ``r3 v0003``) and the next round (``round + 1``) use.

    Args:
        cfg: configuration (state directory).
        otherwise: what the caller does without it, for the warning.
        memory: the open replay memory, to check the progress against
            (:func:`~edgecl.continual.round_state.progress_within_memory`); None: not checked.

    Returns:
        The pair, or None when the state cannot be read (logged with ``otherwise``).
    """
    try:
        state = load_state(cfg.state_dir)
        if memory is not None:
            state = progress_within_memory(cfg.state_dir, state, memory.change_signature()[1])
        return int(state.last_sample_id), int(state.round), int(state.trigger_from_id)
    except (EdgeclError, OSError, TypeError, ValueError) as exc:
        log.warning("learner: cannot read its state (%s); %s", exc, otherwise)
        return None


def _trained(result: RoundResult) -> bool:
    """Whether a result times a round: it took steps, in known seconds (numbers, not junk)."""
    figures = (result.steps, result.train_s, result.seconds)
    return (all(isinstance(v, (int, float)) and math.isfinite(v) for v in figures)
            and result.steps > 0 and result.train_s > 0)


def expected_round_s(cfg: LearnerConfig, first: bool, previous: RoundResult | None) -> float:
    """Estimated wall time of a round, for its progress bar (:meth:`LearnerSupervisor.health`).

    Training stops at the round's time budget (``learner.budget_s``; ``first_round_budget_s``
    for a first round) or at its step bound (``max_steps``; ``first_round_max_steps``),
    whichever comes first. The learner process reports no step count while it runs, so the
    step bound is turned into time with the seconds per step of the previous round that
    trained (its ``train_s / steps``), and that round's time outside training (replay
    selection, evaluation, export) is added: progress is then the larger of the two fractions
    (time budget, estimated steps) of the training, with the rest of the round on top. Without
    such a round, the time budget alone. The epochs bound (a round with few new samples) is not
    estimated: such a round ends before its bar is full.

    Args:
        cfg: learner settings.
        first: whether the round is a first one (the supervisor's guess: no version serves
            yet; a pretrained ``model.path`` checkpoint's first round trains on the later
            bounds, so its bar stops short when it ends).
        previous: the result of the previous round that trained, or None.

    Returns:
        Seconds (at least 1).
    """
    budget_s = cfg.first_round_budget_s if first else cfg.budget_s
    max_steps = cfg.first_round_max_steps if first else cfg.max_steps
    if previous is None or not _trained(previous):
        return max(1.0, budget_s)
    step_s = previous.train_s / previous.steps
    outside_s = max(0.0, previous.seconds - previous.train_s)
    return max(1.0, outside_s + min(budget_s, max_steps * step_s))


def promote_leftover_staged(cfg: Config, registry, infer_opts) -> str | None:
    """At start: promote a version that a kill left ``staged`` after its round passed the gate.

    Leaving the version staged would lose what its round learnt. The newest staged version
    that is intact, loads and was learnt on the version serving now is promoted (one learnt on
    a version that a rollback or a promotion has replaced since is retired, with a warning:
    promoting it would undo the operator's choice); one that fails is marked ``rejected`` with the
    reason, and older staged versions are marked ``retired`` (superseded). When the kill came
    before the round saved the learner's progress, the progress recorded in the version's
    manifest is adopted; the metrics database's rounds take the statuses the registry holds
    (a kill between the two writes of a promotion or a rollback left them behind), and a round
    a kill left unrecorded there is recorded (:func:`record_missing_rounds`).

    Args:
        cfg: configuration (state directory).
        registry: the state directory's model registry.
        infer_opts: inference options to load-check a staged version with.

    Returns:
        The version promoted, or ``None``.

    Raises:
        EdgeclError: the promotion itself failed (the caller decides whether that stops the start).
    """
    from edgecl.models.registry import NEVER_SERVED, promoted_at_start
    from edgecl.runtime.promote import promote_version, sync_monitor

    record_missing_rounds(cfg.state_dir, registry)
    promoted = None
    # INVARIANT: only versions a learning round staged (its manifest names the memory snapshot
    # it learnt) are promoted here; a version added by hand, or one 'edgecl learn --no-promote'
    # left for a person, waits for 'models promote'
    manifests = {v: registry.manifest(v) for v in registry.staged_versions()}
    from_rounds = [v for v, m in manifests.items() if promoted_at_start(m)]
    serving = registry.current()
    for version in reversed(from_rounds):
        if promoted is not None:
            registry.set_status(version, "retired", reason=f"{NEVER_SERVED} {promoted}")
            continue
        parent = manifests[version].get("parent")
        if serving and parent and parent != serving:  # a rollback or a promotion came since
            log.warning("staged version %s is not promoted: it was learnt on %s, and %s serves "
                        "now (rolled back or promoted since); 'edgecl models promote %s' serves "
                        "it", version, parent, serving, version)
            registry.set_status(version, "retired",
                                reason=f"learnt on {parent}, which no longer served at restart")
            continue
        try:
            registry.check_integrity(version)
            registry.load_serving(version, infer_opts, warmup_runs=1).close()
        except EdgeclError as exc:
            log.error("staged version %s cannot serve (%s); marked rejected", version, exc)
            registry.set_status(version, "rejected", reason=f"could not serve after a restart: {exc}")
            continue
        promote_version(cfg.state_dir, version)
        _adopt_round_progress(cfg.state_dir, registry.manifest(version))
        _note_leftover_round(cfg.state_dir, version, registry.manifest(version))
        log.info("promoted %s, staged by a round before the last shutdown", version)
        promoted = version
    # a kill between the registry's write and the monitor's (a promotion, a rollback)
    sync_monitor(cfg.state_dir, registry)
    return promoted


def record_in_monitor(state_dir, registry, version: str, recorded: dict) -> bool:
    """Record a staged version's evaluation in the metrics database and put the figures it
    derives (ACC, BWT, ...) into the version's manifest. A fault is logged, not raised: the
    version stays staged, and the next start records it (:func:`record_missing_rounds`).

    Args:
        state_dir: the state directory.
        registry: its model registry.
        version: the version.
        recorded: the recording hook's keyword arguments (see
            :func:`edgecl.continual.round.write_round_record`).

    Returns:
        True when recorded.
    """
    try:
        figures = monitor_recorder(state_dir)(version=version, **recorded)
        metrics = registry.manifest(version).get("metrics") or {}
        registry.update_manifest(version, {"metrics": dict(metrics, **figures)})
    except (EdgeclError, OSError, ValueError) as exc:
        log.warning("round of %s not recorded in the metrics database: %s", version, exc)
        return False
    return True


def record_missing_rounds(state_dir, registry, failed: list | None = None) -> list[str]:
    """At start: record in the metrics database the rounds a kill left unrecorded.

    A round stages its version, then records its evaluation; a kill between the two left the
    version without its row, so the forgetting monitor, ``monitor report`` and ``/metrics``
    skipped that round. Each version a round staged keeps what the recording hook received
    (``round_record.json``); a version without a row is recorded from it, and its manifest
    gains the figures the record derives. When the round was rejected, the learner's round
    number moves past it too (a staged one's progress is adopted at its promotion).

    Args:
        state_dir: the state directory.
        registry: its model registry.
        failed: when given, the versions that could not be recorded are appended to it (a
            database that cannot even be read appends ``"*"``).

    Returns:
        The versions recorded now (oldest first).
    """
    from edgecl.continual.round import ROUND_RECORD_FILE, read_round_record
    from edgecl.continual.round_state import load_state, save_state
    from edgecl.runtime.monitor import Monitor

    failed = [] if failed is None else failed
    try:
        recorded = Monitor(state_dir).recorded_versions()
    except (EdgeclError, OSError) as exc:
        log.warning("metrics database not checked for unrecorded rounds: %s", exc)
        failed.append("*")
        return []
    done = []
    for version in registry.versions():
        if version in recorded:
            continue
        try:
            manifest = registry.manifest(version)
            if ROUND_RECORD_FILE not in (manifest.get("files") or {}):
                continue  # added by hand, or staged by an older release
            kwargs = read_round_record(registry.file_path(version, ROUND_RECORD_FILE))
        except (EdgeclError, OSError, ValueError) as exc:
            log.warning("round of %s not recorded in the metrics database: %s", version, exc)
            continue
        if not record_in_monitor(state_dir, registry, version, kwargs):
            failed.append(version)
            continue
        if kwargs["status"] == "rejected":
            state = load_state(state_dir)
            if kwargs["round_no"] > state.round:
                state.round = kwargs["round_no"]
                try:
                    save_state(state_dir, state)
                except OSError as exc:  # the round's number is taken again: nothing is lost
                    log.warning("learner progress not moved past rejected round %d: %s",
                                kwargs["round_no"], exc)
        log.warning("round %d (%s) recorded in the metrics database from its version: a "
                    "shutdown or a full disk came before the round recorded it",
                    kwargs["round_no"], version)
        done.append(version)
    return done


def write_unsaved(state_dir, registry, result: RoundResult) -> bool:
    """Write from its version what a round could not write after staging it (its
    :attr:`~edgecl.continual.round_state.RoundResult.unsaved`: a full disk): the learner's
    progress from the manifest, the round's record from ``round_record.json`` (then the
    database's statuses follow the registry's).

    Args:
        state_dir: the state directory.
        registry: its model registry.
        result: the round's result.

    Returns:
        True when the metrics database holds the round; False when it still cannot be written
        (the caller tries again later: :meth:`LearnerSupervisor.tick`).

    Raises:
        StorageError: the learner's progress still cannot be written (nothing else is
            tried; the caller keeps the result and tries again).
    """
    if "progress" in result.unsaved and result.version:
        with storage_faults(f"the learner's progress after round {result.round} cannot be "
                            f"written"):
            _adopt_round_progress(state_dir, registry.manifest(result.version))
    if "metrics" not in result.unsaved:
        return True
    from edgecl.runtime.promote import sync_monitor

    failed: list = []
    record_missing_rounds(state_dir, registry, failed=failed)
    return not failed and sync_monitor(state_dir, registry)


def _note_leftover_round(state_dir, version: str, manifest: dict) -> None:
    """Make a round whose version a start promoted the last round ``edgecl status`` shows
    (``last_round.json``; before, a kill after staging left the round before it there, said
    to be the last). A failure to write is logged: the promotion stands."""
    from edgecl.continual.round_state import state_from_json

    after = state_from_json(manifest.get("learner_state"))
    last = read_last_round(state_dir)
    if after is None or (last is not None and last.round is not None and last.round >= after.round):
        return
    training = manifest.get("training") if isinstance(manifest.get("training"), dict) else {}
    seconds = training.get("seconds")
    result = RoundResult(status=RoundStatus.PROMOTED, round=after.round, version=version,
                         trigger=str(manifest.get("trigger") or ""),
                         reason=f"{manifest.get('reason') or 'accepted'}; promoted at the start "
                                f"after a stop cut the round short",
                         seconds=float(seconds) if isinstance(seconds, (int, float)) else 0.0)
    try:
        write_last_round(state_dir, result)
    except OSError as exc:
        log.warning("%s: the round's result not recorded (%s)", version, exc.strerror or exc)


def _adopt_round_progress(state_dir, manifest: dict) -> None:
    """Move the learner's progress to the one a promoted round recorded in its manifest, when
    a kill came between staging the version and saving the progress (else its samples would be
    learnt again and its round number reused)."""
    from edgecl.continual.round_state import load_state, save_state, state_from_json

    after = state_from_json(manifest.get("learner_state"))
    if after is None:
        return  # staged by a release that did not record it (or damaged)
    state = load_state(state_dir)
    if after.round > state.round:
        save_state(state_dir, after)
        log.info("learner progress restored from the promoted round: round %d, samples up to "
                 "%d learnt", after.round, after.last_sample_id)


ROUNDS_KEPT = 100  # results kept in memory for /healthz and the console; the monitor keeps all
BACKOFF_AFTER = 3
BACKOFF_INITIAL_S = 30.0
BACKOFF_MAX_S = 1800.0
APPLY_ATTEMPTS = 3
STORAGE_RETRY_S = 10.0
"""Seconds between two tries to apply a round's result that a full disk refused (it is kept,
however long the disk stays full: dropping it would lose the round)."""
CATCH_UP_EVERY_S = 30.0
"""Seconds between two tries to bring a metrics database a full disk left behind in line."""


def unguarded_classes(result: RoundResult, names: dict[int, str]) -> list[str]:
    """The classes of a round's model that its evaluation could not measure (no held-out box
    of them), where frames carry no task (the matrix's columns are classes); empty with tasks.

    Args:
        result: the round's result (``classes``: ids of its model; ``per_task``: column ->
            mAP50-95, ``None`` or absent when not measured).
        names: the device's class names by id.

    Returns:
        Their names, in id order.
    """
    known = set(names.values())
    if any(column not in known for column in result.per_task):  # a task view: tasks, not classes
        return []
    return [names[c] for c in sorted(set(result.classes))
            if c in names and result.per_task.get(names[c]) is None]


def unguarded_warning(result: RoundResult, state_dir: str | Path) -> str:
    """The warning a promotion of a round gives (the runtime's, ``edgecl learn``'s) when its
    gate could not measure some of its classes (:func:`unguarded_classes`), or ``""`` (also
    when the class registry cannot be read).

    Args:
        result: the round's result.
        state_dir: the state directory (its class registry names the classes).
    """
    from edgecl.models.classes import ClassRegistry

    try:
        names = ClassRegistry(state_dir).names()
    except (EdgeclError, OSError):
        return ""
    unguarded = unguarded_classes(result, names)
    if not unguarded:
        return ""
    them = "it" if len(unguarded) == 1 else "them"
    shown = ", ".join(unguarded[:8]) + (f" ... ({len(unguarded)} classes)" if len(unguarded) > 8
                                        else "")
    return (f"{result.version}: {shown} had no held-out box, so the gate could not see what "
            f"this round forgot of {them}; answer or import a few frames showing {them} (the "
            f"held-out slice takes its share)")


class LearnerSupervisor:
    """Schedules learning rounds in a spawned process and promotes what they stage.

    Every step that applies a result (promotion, monitor writes) is contained: a failure is
    logged, counted, shown by :meth:`health` and retried on the next ticks (then dropped).
    A full disk is retried every :data:`STORAGE_RETRY_S` until there is room (no round starts
    meanwhile), never dropped; a metrics database a full disk left behind (a promotion it did
    not record, a round the learner could not record) is brought in line every
    :data:`CATCH_UP_EVERY_S` until it can be written, without a restart.
    When rounds fail the same way :data:`BACKOFF_AFTER` times in a row, the supervisor waits
    (30 s, doubling up to 30 min) before the next round, and says so in :meth:`health`.

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
        # INVARIANT: a class fires the new-class trigger once; when the round that tried it was
        # rejected, the next round waits for the new-samples trigger (more labels of it), so a
        # camera that keeps seeing the new object does not start round after round
        self.tried_classes: set[int] = set()
        self._waiting_for_held_out = False
        self._waiting_for_room: str | None = None  # why a due round waits for disk room
        self._waiting_for_import = False  # a due round waits for an import to finish
        self._waiting_for_model: str | None = None  # why no round can learn from the current one
        self._unlearnable_memo: tuple[tuple, str | None] | None = None
        self._other_writers_said_s: float | None = None  # when other writers' samples were said
        self._other_writers_unsaid = 0
        self._stored_classes: set[int] = set()
        self.on_round = on_round
        interval_s = cfg.learner.trigger_interval_s if cfg.learner.enabled else 0.0
        self.state = TriggerState(last_round_s=interval_origin_s(cfg.state_dir, interval_s))
        self.rounds: collections.deque[dict] = collections.deque(maxlen=ROUNDS_KEPT)
        self.rounds_done = 0
        self.rounds_stopped = 0  # rounds in progress when stop() ended them (nothing kept)
        self.apply_errors = 0
        self.last_error = ""
        self._proc: mp.Process | None = None
        self._round_id = ""
        self._result_to_write: RoundResult | None = None  # a result the round could not record
        self._result_retry_at_s = 0.0
        self._round_started_mono_s = 0.0
        self._progress_shown = 0.0  # the running round's progress as last reported: never less
        self._pending: RoundResult | None = None
        self._pending_attempts = 0
        self._pending_retry_at_s = 0.0
        self._result_conn = None  # the receiving end of the running learner's result pipe
        self._piped: dict | None = None  # what came through it
        self._monitor_behind = False
        self._next_catch_up_s = 0.0
        self._same_failures = 0
        self._last_failure = ""
        self._round_took: tuple[int | None, set] | None = None
        self._backoff_until_s = 0.0
        open_sink = memory_sink is not None and not getattr(memory_sink, "closed", False)
        saved = _saved_progress(cfg, "counting samples from now on",
                                memory_sink.memory if open_sink else None)
        # samples other processes store (edgecl labels import, CLI answers) count as well;
        # those a rollback's retired versions had learnt start no round by themselves
        self._seen_max_id = max(saved[0], saved[2]) if saved else 0
        # INVARIANT: the device's round numbering (the next round is last_round + 1), not a
        # count since this start: a device restarted daily is not "round 1" for its 300th
        self.last_round = saved[1] if saved else 0
        # the progress last taken into account: a rollback or a promotion moves it between rounds
        self._progress_seen = saved
        self._held_unpromoted = False
        self._round_no = 0  # the running round's number
        self._round_expected_s = 1.0  # its estimated wall time (expected_round_s)
        self._train_share = TRAIN_SHARE  # the share of its time spent training
        self._own_ids: set[int] = set()
        self._next_scan_s = 0.0
        # a round runs in a new process that imports edgecl from disk: after an upgrade in
        # place it would run other code against this runtime's state and models
        self._started_version = installed_version()
        self._upgraded: str | None = None
        cut_short = _clear_cut_short_round(cfg.state_dir)
        if cut_short:
            log.warning("%s", cut_short)

    @property
    def busy(self) -> bool:
        """True while a learner process is alive."""
        return self._proc is not None and self._proc.is_alive()

    def health(self) -> dict:
        """Learner state for ``/healthz`` and the console.

        Returns:
            ``state`` (``idle``, ``training`` or ``backoff``; ``off`` with
            ``learner.enabled: false``: before, ``idle``, as if answers led to a round),
            ``rounds`` (rounds finished
            since this start), ``last_round`` (the device's number of the last finished round,
            as the model versions and the metrics count them: it goes on across restarts),
            ``apply_errors``; while training ``round`` (the running round's number),
            ``round_running_s`` and ``progress`` (0..1: the fine-tuning's own report,
            :func:`running_progress`, times the share of a round the previous one spent
            training, so the bar waits there while the round evaluates and exports; before
            training reports, estimated: :func:`expected_round_s`; never less than it was
            within the round);
            in back-off ``retry_in_s`` and ``reason``; ``last_error``, ``last_failure`` (why
            the last round failed, until a round is promoted), ``metrics_behind`` and
            ``waiting_for_room``, ``waiting_for_held_out`` (a round is due and waits for
            the memory's first held-out sample) and ``waiting_for_model`` (a round is due and
            no round can fine-tune the current version: why) when they apply.
        """
        now = time.monotonic()
        out = {"state": "idle" if self.cfg.learner.enabled else "off", "rounds": self.rounds_done,
               "last_round": self.last_round, "apply_errors": self.apply_errors}
        if self.busy:
            running_s = now - self._round_started_mono_s
            reported = running_progress(self.cfg.state_dir, self._round_id)
            progress = (min(1.0, running_s / self._round_expected_s) if reported is None
                        else reported * self._train_share)
            # INVARIANT: a bar never goes back within a round (the estimate made before
            # training reports may be ahead of the training's own first figures)
            progress = self._progress_shown = max(self._progress_shown, progress)
            out.update(state="training", round=self._round_no, round_running_s=round(running_s, 1),
                       progress=round(progress, 3))
        elif now < self._backoff_until_s:
            out.update(state="backoff", retry_in_s=round(self._backoff_until_s - now, 1),
                       reason=f"{self._same_failures} rounds in a row failed: {self._last_failure}")
        if self.last_error:
            out["last_error"] = self.last_error
        if self._last_failure and not self.busy:  # cleared by the next promoted round
            out["last_failure"] = f"the last learning round failed: {self._last_failure}"
        if self._monitor_behind:
            out["metrics_behind"] = True
        if self._waiting_for_room and not self.busy:
            out["waiting_for_room"] = self._waiting_for_room
        if self._waiting_for_held_out and not self.busy:
            out["waiting_for_held_out"] = HELD_OUT_WAIT
        if self._waiting_for_import and not self.busy:
            out["waiting_for_import"] = IMPORT_WAIT
        if self._waiting_for_model and not self.busy:
            out["waiting_for_model"] = self._waiting_for_model
        return out

    def tick(self) -> None:
        """Called periodically from the main thread: collect results, start a round if due."""
        if self.memory_sink is not None:
            added, classes = self.memory_sink.take_counters()
            self._count_new(added, classes)
            self._count_other_writers()
        self._poll_result()
        if self._proc is not None and not self._proc.is_alive():
            self._finish()
        if self._pending is not None and time.monotonic() >= self._pending_retry_at_s:
            self._apply_pending()
        if self._result_to_write is not None and time.monotonic() >= self._result_retry_at_s:
            self._record_result(self._result_to_write)
        self._catch_up_monitor()
        if (self._proc is None and self._pending is None and self.cfg.learner.enabled
                and time.monotonic() >= self._backoff_until_s):
            reason = should_learn(self.state, self.cfg.learner, time.monotonic())
            if reason and self._no_held_out_yet():
                # the trigger stays armed: the round starts once a held-out sample exists
                if not self._waiting_for_held_out:
                    log.info("learning round due (%s) waits: the memory holds no held-out sample "
                             "with a box yet, so the gate could not judge a candidate", reason)
                self._waiting_for_held_out = True
            elif reason and import_running(self.cfg.state_dir):
                # the trigger stays armed: a round now would learn half the imported folder
                # (and could gate on a held-out slice the import is still filling)
                self._waiting_for_held_out = False
                if not self._waiting_for_import:
                    log.info("learning round due (%s) waits for the import into %s to finish",
                             reason, self.cfg.state_dir)
                self._waiting_for_import = True
            elif reason:
                self._waiting_for_held_out = False
                self._waiting_for_import = False
                problem = room_problem(self.cfg.state_dir)
                if problem:
                    # the trigger stays armed: on a full disk a round would train, fail to
                    # export, free its work folder (which storing then fills) and start again
                    if not self._waiting_for_room:
                        log.warning("learning round due (%s) waits for room: %s", reason, problem)
                    self._waiting_for_room = problem
                    return
                if self._waiting_for_room:
                    log.info("learning resumes: %s has room for a round again", self.cfg.state_dir)
                self._waiting_for_room = None
                problem = self._unlearnable()
                if problem:
                    # the trigger stays armed: every round would start a process that fails the
                    # same way, until a version with a checkpoint serves
                    if self._waiting_for_model != problem:
                        log.warning("learning round due (%s) waits: %s", reason, problem)
                    self._waiting_for_model = problem
                    return
                if self._waiting_for_model:
                    current = self.registry.current()
                    log.info("learning resumes: %s can be fine-tuned", f"version {current}"
                             if current else f"model.path {self.cfg.model.path}")
                self._waiting_for_model = None
                self.start_round(reason)

    def _unlearnable(self) -> str | None:
        """:func:`~edgecl.continual.round.unlearnable_current`, looked at again only when the
        current version or ``model.path``'s file changed (it may load a checkpoint)."""
        from edgecl.continual.round import unlearnable_current

        path = self.cfg.model.path
        try:
            stamp = os.stat(path).st_mtime_ns if path else None
        except OSError:
            stamp = None
        try:
            key = (self.registry.current(), stamp)
        except EdgeclError:
            return None  # a damaged registry: the round reports it
        if self._unlearnable_memo is None or self._unlearnable_memo[0] != key:
            self._unlearnable_memo = (key, unlearnable_current(self.cfg, self.registry))
        return self._unlearnable_memo[1]

    def _count_new(self, added: int, classes) -> None:
        self.state.new_samples += added
        self._stored_classes |= set(classes)
        self.state.new_classes |= bool(set(classes) - self.known_classes - self.tried_classes)

    def _count_other_writers(self) -> None:
        """Count samples that other processes stored in the memory since the last look (an
        import or a CLI answer while the runtime runs), at most every :data:`SCAN_EVERY_S`."""
        sink, now = self.memory_sink, time.monotonic()
        if now < self._next_scan_s or getattr(sink, "closed", False):
            return
        self._next_scan_s = now + SCAN_EVERY_S
        take = getattr(sink, "take_own_ids", None)
        self._own_ids.update(take() if take is not None else ())
        try:
            ids = sink.memory.ids()
            # INVARIANT: taken after the read, the sink's ids include every one it read
            self._own_ids.update(take() if take is not None else ())
            new = [i for i in ids if i > self._seen_max_id and i not in self._own_ids]
            records = sink.memory.records(new) if new else []
        except (EdgeclError, OSError) as exc:
            log.warning("learner: cannot read the memory for samples stored elsewhere: %s", exc)
            return
        self._seen_max_id = max([self._seen_max_id, *ids])
        self._own_ids = {i for i in self._own_ids if i > self._seen_max_id}
        # held-out samples are never learnt, as a round counts its new samples (one held out
        # above the last learnt id read as "1 sample(s) stored outside the runtime" at start)
        learnable = [r for r in records if not r.held_out]
        first = self._other_writers_said_s is None
        if first:
            self._other_writers_said_s = now
        if first and self.cfg.learner.enabled:
            self._say_given_back(sink.memory)
        if learnable and self.cfg.learner.enabled:
            self._say_other_writers(len(learnable), now, first)
            self._count_new(len(learnable), {c for r in learnable for c in r.classes})
        if self._proc is None and self._pending is None:  # no round of its own in hand
            self._follow_rounds_elsewhere(sink.memory)

    def _follow_rounds_elsewhere(self, memory) -> None:
        """Count anew after a round another process finished (``edgecl learn`` while the
        runtime runs): the samples it learnt no longer count towards the next round, and the
        classes its version serves are known. Before, they did: ``edgecl learn`` learnt 87
        samples, and 16 more then started a ``new_samples`` round at its threshold of 100.

        Likewise after a rollback or a promotion (the console's or the command line's), which
        moves the progress to what the version now serving learnt: the samples it did not
        learn count towards the next round at once, as they do after a restart (before, they
        waited for new ones, or for the restart)."""
        saved = _saved_progress(self.cfg, "the trigger counts on as before")
        if saved is None or saved == self._progress_seen:
            return
        elsewhere = saved[1] > self.last_round
        if not elsewhere and self._progress_seen is not None and saved[0] == self._progress_seen[0]:
            self._progress_seen = saved
            return
        self._progress_seen = saved
        last_id, held_back = saved[0], max(saved[0], saved[2])
        if elsewhere:
            self.last_round = saved[1]
        try:
            left = [r for r in memory.records(held_out=False) if r.id > last_id]
            current = self.registry.current()
            names = (self.registry.manifest(current).get("names") or {}) if current else {}
            self.known_classes.update(int(k) for k in names)
        except (EdgeclError, OSError, TypeError, ValueError) as exc:
            log.warning("learner: %s, but its progress cannot be read (%s); the trigger counts "
                        "on as before", f"round {self.last_round} ran in another process"
                        if elsewhere else "the version serving changed", exc)
            return
        counted = [r for r in left if r.id > held_back]
        classes = {c for r in counted for c in r.classes}
        self.state = TriggerState(
            new_samples=len(counted), last_round_s=time.monotonic(),
            new_classes=bool(classes - self.known_classes - self.tried_classes))
        self._seen_max_id = max(self._seen_max_id, held_back)
        if elsewhere:
            log.info("round %d ran in another process ('edgecl learn'): %d stored sample(s) it "
                     "did not learn count towards the next round", self.last_round, len(left))
        elif len(counted) < len(left):
            log.info("the learner's progress is now what %s learnt (a rollback): the next "
                     "round learns again the %d sample(s) the versions it retired had learnt, "
                     "and starts when new ones arrive (learner.trigger_new_samples: %d) or on "
                     "'edgecl learn'; %d stored since count towards it",
                     current or "the starting model",
                     len(left) - len(counted), self.cfg.learner.trigger_new_samples,
                     len(counted))
        else:
            log.info("the learner's progress is now what %s learnt (a rollback or a promotion): "
                     "%d stored training sample(s) it did not learn count towards the next round",
                     current or "the starting model", len(left))

    def _say_given_back(self, memory) -> None:
        """Say at start how many training samples a rollback gave back to the next round (they
        start no round by themselves, and the start's count of samples not learnt yet leaves
        them out: before, '5 sample(s) ... count towards the next round' was followed by a
        round of 202 new samples)."""
        from edgecl.continual.round_state import load_state

        try:
            state = load_state(self.cfg.state_dir)
            if state.trigger_from_id <= state.last_sample_id:
                return
            given_back = state.given_back(memory.records(held_out=False))
        except (EdgeclError, OSError, ValueError) as exc:
            log.warning("learner: cannot count the samples a rollback gave back: %s", exc)
            return
        if given_back:
            log.info("the next round also learns again the %d training sample(s) a rollback "
                     "gave back (the versions it retired had learnt them); they start no "
                     "round by themselves", given_back)

    def _say_other_writers(self, n: int, now_s: float, first: bool) -> None:
        """Say what other writers stored: what the first look at start finds at once, then at
        most once every :data:`OTHER_WRITERS_SAY_EVERY_S` (an import stores hundreds, and a
        line per look every few seconds buried the log)."""
        if first:
            log.info("%d training sample(s) stored before this start and not learnt yet count "
                     "towards the next round", n)
            return
        self._other_writers_unsaid += n
        if now_s - self._other_writers_said_s >= OTHER_WRITERS_SAY_EVERY_S:
            log.info("%d training sample(s) stored by another process (labels import, answers "
                     "or corrections on the command line, samples a class merge relabelled) "
                     "count towards the next round (held-out ones judge it instead)",
                     self._other_writers_unsaid)
            self._other_writers_said_s, self._other_writers_unsaid = now_s, 0

    def _no_held_out_yet(self) -> bool:
        """True while the running memory holds no held-out sample with a box (background frames
        give the gate no AP to judge on; False when it cannot tell: the round itself then
        skips, see :func:`edgecl.continual.round.run_round`)."""
        sink = self.memory_sink
        if sink is None or getattr(sink, "closed", False):
            return False
        try:
            return not any(r.classes for r in sink.memory.records(held_out=True))
        except (EdgeclError, OSError) as exc:
            log.warning("learner: cannot read the memory's held-out slice: %s", exc)
            return False

    def start_round(self, reason: str) -> None:
        """Start one round in a learner process and reset the trigger counters (a no-op, with a
        warning, while a round runs: a second process would lose track of the first, which
        then runs on unsupervised, past a stop)."""
        if self.busy:
            log.warning("learning round not started (trigger: %s): round %s is still running",
                        reason, self._round_id)
            return
        if self.upgraded_on_disk():  # a round would import what is on disk now
            return
        ceiling = None  # learn every stored sample: also when the stream ended and the sink closed
        if self.memory_sink is not None and not getattr(self.memory_sink, "closed", False):
            ceiling = max(self.memory_sink.memory.ids(), default=0)
        self._round_id = uuid.uuid4().hex
        # re-read: a round another process ran meanwhile ('edgecl learn') counts too
        saved = _saved_progress(self.cfg, f"this round is shown as round {self.last_round + 1}")
        if saved is not None:
            self.last_round = saved[1]
        self._round_no = self.last_round + 1  # the number the round gives itself
        previous = self._previous_trained()
        self._round_expected_s = expected_round_s(self.cfg.learner, self.registry.current() is None,
                                                  previous)
        self._train_share = (min(1.0, max(0.5, previous.train_s / previous.seconds))
                             if previous is not None and previous.seconds > 0 else TRAIN_SHARE)
        self._round_started_mono_s = time.monotonic()
        self._progress_shown = 0.0
        self._proc = self._spawn(reason, ceiling)
        self._round_took = (ceiling, set(self.tried_classes))  # given back if it fails
        self.state = TriggerState(last_round_s=time.monotonic())
        if ceiling is not None:  # this round learns them: not counted again for the next one
            self._seen_max_id = max(self._seen_max_id, ceiling)
            # nor said later as counting towards the next round (the round's own line counts them)
            self._other_writers_unsaid = 0
        self.tried_classes |= self._stored_classes - self.known_classes
        log.info("learning round started (trigger: %s, pid %s)", reason,
                 getattr(self._proc, "pid", None))

    def upgraded_on_disk(self) -> bool:
        """True when edgecl was upgraded (or downgraded) on disk since this runtime started:
        rounds then wait for a restart, said once (and kept as ``last_error``, a console
        alert). Looked at each time a new process would import edgecl (a round, a fleet
        client: a few ms); a look at most once a minute let a round started within the minute
        run the new code."""
        if self._upgraded is None:
            if self._started_version is None:
                return False
            on_disk = installed_version()
            if on_disk is None or on_disk == self._started_version:
                return False
            self._upgraded = (f"edgecl was upgraded on disk ({self._started_version} -> "
                              f"{on_disk}) while this runtime runs: learning rounds wait until "
                              f"this edgecl command is started again (a round would run the new "
                              f"code against this runtime); detection goes on")
            log.error("%s", self._upgraded)
            self.last_error = self._upgraded
        return True

    def _previous_trained(self) -> RoundResult | None:
        """The newest round result that trained (its steps time the next round's bar): the
        last round's file (it survives a restart), else the newest this start handled."""
        try:
            candidates = [read_last_round(self.cfg.state_dir)]
        except OSError as exc:  # the round starts all the same; its bar keeps to the budget
            log.warning("learner: the last round's result cannot be read (%s)", exc)
            candidates = []
        for data in reversed(self.rounds):
            try:
                candidates.append(RoundResult.from_json(data))
            except (ValueError, TypeError, KeyError):
                continue
        return next((r for r in candidates if r is not None and _trained(r)), None)

    def _spawn(self, reason: str, ceiling: int | None):
        """The learner process (spawned, so the loop's threads are not inherited), with a pipe
        for its result (the result file may not fit on a full disk)."""
        ctx = mp.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=learner_main,
                           args=(self.cfg, reason, ceiling, self._round_id, send),
                           name="edgecl-learner", daemon=True)
        proc.start()
        send.close()  # the child holds its own copy
        self._result_conn, self._piped = receive, None
        return proc

    def _poll_result(self) -> None:
        """Take the learner's result from its pipe as soon as it is there: a result larger than
        the pipe's buffer blocks the sender until it is read, so waiting for the process to
        end first would wait forever. The connection is closed once read or broken."""
        conn = self._result_conn
        if conn is None:
            return
        try:
            if not conn.poll():
                return
            self._piped = conn.recv()
        except EOFError:  # it sent nothing (killed, or skipped: another round ran)
            pass
        except (OSError, ValueError, TypeError) as exc:
            log.warning("learner: its result could not be received (%s); reading its file", exc)
        conn.close()
        self._result_conn = None

    def _record_result(self, result: RoundResult) -> None:
        """Write ``last_round.json`` where the round could not (a full disk), so that ``edgecl
        status`` shows this round, not the one before it (before, a round that failed for the
        card left no trace there); tried again at each tick, every :data:`STORAGE_RETRY_S`,
        until it is written or a newer round's result replaces it."""
        written = read_last_round(self.cfg.state_dir)
        if written is not None and written.round_id == result.round_id:
            self._result_to_write = None
            return
        try:
            write_last_round(self.cfg.state_dir, result)
            self._result_to_write = None
        except OSError as exc:
            if self._result_to_write is None:
                log.warning("learner: round %s's result not recorded yet (%s); written once "
                            "there is room", result.round, exc.strerror or exc)
            self._result_to_write = result
            self._result_retry_at_s = time.monotonic() + STORAGE_RETRY_S

    def _received_result(self) -> RoundResult | None:
        """The result the learner process sent through its pipe, if any."""
        self._poll_result()
        piped, self._piped = self._piped, None
        if self._result_conn is not None:
            self._result_conn.close()
            self._result_conn = None
        if piped is None:
            return None
        try:
            return RoundResult.from_json(piped)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("learner: its result could not be read (%s); reading its file", exc)
            return None

    def _finish(self) -> None:
        proc, self._proc = self._proc, None
        result = self._received_result() or read_last_round(self.cfg.state_dir)
        # INVARIANT: only a result written by the round this supervisor started is handled
        if result is None or result.round_id != self._round_id:
            self._note_failure(f"learner process {ended_how(proc.exitcode)} and sent no result")
            return
        self._record_result(result)
        self._pending, self._pending_attempts, self._pending_retry_at_s = result, 0, 0.0
        self._apply_pending()
        self._round_took = None

    def _note_failure(self, reason: str) -> None:
        self._same_failures = self._same_failures + 1 if reason == self._last_failure else 1
        self._last_failure = reason
        given_back = self._give_back_failed_round()
        again = (f"; its {given_back} training sample(s) count towards the next round"
                 if given_back else "")
        log.error("learning round failed: %s; detection goes on with %s%s", reason,
                  self.registry.current(), again)
        if self._same_failures >= BACKOFF_AFTER:
            delay_s = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (self._same_failures - BACKOFF_AFTER))
            self._backoff_until_s = time.monotonic() + delay_s
            log.warning("%d learning rounds in a row failed the same way (%s); next round in %.0f s",
                        self._same_failures, reason, delay_s)

    def _give_back_failed_round(self) -> int:
        """Count the samples a failed round was to learn towards the next round again (before,
        the trigger's count was reset when the round started: after a learner killed by the
        out-of-memory killer no round came until new samples arrived or a restart), and its
        classes as new again.

        Returns:
            How many training samples count again (0 when unknown).
        """
        took, self._round_took = self._round_took, None
        if took is None:
            return 0
        ceiling, tried_before = took
        self.tried_classes = tried_before
        sink = self.memory_sink
        if ceiling is None or sink is None or getattr(sink, "closed", False):
            return 0
        saved = _saved_progress(self.cfg, "its samples count when new ones arrive")
        learnt = max(saved[0], saved[2]) if saved else ceiling
        try:
            records = [r for r in sink.memory.records(held_out=False) if learnt < r.id <= ceiling]
        except (EdgeclError, OSError) as exc:
            log.warning("learner: cannot read the memory to count the failed round's samples "
                        "again (%s); they count when new ones arrive", exc)
            return 0
        self._count_new(len(records), {c for r in records for c in r.classes})
        return len(records)

    def _apply_pending(self) -> None:
        result = self._pending
        if result is None:
            return
        try:
            self.handle_result(result)
        except Exception as exc:  # a supervisor step: contained, logged, counted and retried
            fault = storage_fault(exc, "the state directory cannot be written")
            if fault is not None:  # a full disk: the result waits for room, never dropped
                self._pending_retry_at_s = time.monotonic() + STORAGE_RETRY_S
                message = (f"applying round {result.round} ({result.version}) waits for room "
                           f"on the disk: {fault}; retrying every {STORAGE_RETRY_S:.0f} s")
                if message == self.last_error:
                    self.apply_errors += 1  # counted, logged once
                else:
                    self._record_apply_error(message)
                return
            self._pending_attempts += 1
            self._record_apply_error(f"applying round {result.round} ({result.version}) failed "
                                     f"(attempt {self._pending_attempts}/{APPLY_ATTEMPTS}): {exc}")
            if self._pending_attempts >= APPLY_ATTEMPTS:
                log.error("round %s result dropped after %d attempts", result.round, APPLY_ATTEMPTS)
                self._pending, self._pending_attempts = None, 0
                self._progress_seen = _saved_progress(self.cfg, "the trigger counts on as before")
            return
        self._pending, self._pending_attempts = None, 0
        # this supervisor's own round moved the progress: nothing to follow; but a round held
        # unpromoted moved nothing: the progress a promotion or rollback made while it ran is
        # followed at the next look (before, it was taken as seen: 'models add --promote'
        # left every sample unlearnt, and no round came until a restart)
        self._progress_seen = (None if self._held_unpromoted else
                               _saved_progress(self.cfg, "the trigger counts on as before"))

    def _record_apply_error(self, message: str) -> None:
        self.apply_errors += 1
        self.last_error = message
        log.error("%s; detection goes on", message)

    def _serving_instead(self, version: str) -> str | None:
        """The version serving instead of ``version``, which is not promoted (a rollback, a
        promotion or a class merge while its round ran: :func:`~edgecl.runtime.promote.
        not_promoted_because`), said in one warning; ``None`` when it is promoted. Such a
        version stays staged: the Models page or ``edgecl models promote`` serves it."""
        from edgecl.runtime.promote import not_promoted_because

        held = not_promoted_because(self.cfg.state_dir, self.registry, version)
        if held is None:
            return None
        log.warning("%s", held[1])
        return held[0]

    def _promote(self, version: str) -> None:
        from edgecl.runtime.promote import promote_version

        if not promote_version(self.cfg.state_dir, version):
            self._monitor_behind_from_now()
        self._prune()

    def _write_unsaved(self, result: RoundResult) -> None:
        """See :func:`write_unsaved`; a metrics database still behind is caught up later.

        Raises:
            StorageError: the learner's progress cannot be written yet (the result is retried).
        """
        if result.unsaved and not write_unsaved(self.cfg.state_dir, self.registry, result):
            self._monitor_behind_from_now()

    def _monitor_behind_from_now(self) -> None:
        if not self._monitor_behind:
            self._monitor_behind = True
            self._next_catch_up_s = time.monotonic() + CATCH_UP_EVERY_S

    def _catch_up_monitor(self) -> None:
        """Record the rounds and statuses a full disk kept out of the metrics database, at most
        every :data:`CATCH_UP_EVERY_S`, until it can be written (a no-op when in line)."""
        now = time.monotonic()
        if not self._monitor_behind or now < self._next_catch_up_s:
            return
        from edgecl.runtime.promote import sync_monitor

        self._next_catch_up_s = now + CATCH_UP_EVERY_S
        failed: list = []
        record_missing_rounds(self.cfg.state_dir, self.registry, failed=failed)
        if not failed and sync_monitor(self.cfg.state_dir, self.registry):
            self._monitor_behind = False
            log.info("metrics database brought in line with the model registry")

    def _prune(self) -> None:
        """Apply the registry's retention rule (after every promoted or rejected round: a
        rejected version's files stay on disk until retention removes them)."""
        exp = self.cfg.export
        try:
            self.registry.prune(exp.keep_promoted, exp.keep_rejected,
                                engine_cache_entries=exp.engine_cache_entries)
        except (EdgeclError, OSError) as exc:
            self._record_apply_error(f"pruning old model versions failed: {exc}")

    def handle_result(self, result: RoundResult | dict) -> None:
        """Promote a staged version (or log a rejection or failure) and report the round.

        Raises:
            EdgeclError, OSError, sqlite3.Error: promotion or monitor write failed (the caller
                contains it and retries; a full disk until there is room).
        """
        if isinstance(result, dict):
            result = RoundResult.from_json(result)
        if result.status is RoundStatus.SKIPPED:
            log.info("learning round skipped: %s", result.reason)
            return
        if result.status is RoundStatus.FAILED:
            self._note_failure(result.reason)
            return
        serving = (self._serving_instead(result.version)
                   if result.status is RoundStatus.STAGED else None)
        self._held_unpromoted = bool(serving)
        if serving:
            from edgecl.runtime.promote import hold_unpromoted

            self._write_unsaved(result)
            hold_unpromoted(self.cfg.state_dir, self.registry, result.version, serving)
        elif result.status is RoundStatus.STAGED:
            self._promote(result.version)  # first: the round's model serves, even on a full disk
            self._write_unsaved(result)  # a retry after it raised promotes again (a no-op)
            result.status = RoundStatus.PROMOTED
            self.known_classes.update(int(c) for c in result.classes)
            acc = result.acc
            # the monitor's ACC (over the classes held out, or the tasks where frames carry
            # them), which the gate's verdict may not be: it counts the classes with enough
            # held-out boxes to judge (before, 'over every class' in the tasks' view too)
            log.info("promoted %s (ACC %s, as the Forgetting page shows it)", result.version,
                     f"{acc:.3f}" if isinstance(acc, (int, float)) and math.isfinite(acc) else "n/a")
            warning = unguarded_warning(result, self.cfg.state_dir)
            if warning:  # before: said only in the monitor report's footnote
                log.warning("%s", warning)
            self._same_failures, self._last_failure, self._backoff_until_s = 0, "", 0.0
        else:
            self._write_unsaved(result)
            log.warning("round rejected %s: %s", result.version, result.reason)
            if result.reason.startswith("training failed"):
                self._note_failure(result.reason)
            if result.version:
                self._prune()
        self.rounds.append(result.to_json())
        self.rounds_done += 1
        if isinstance(result.round, int):
            self.last_round = max(self.last_round, result.round)
        if self.on_round is not None:
            self.on_round(result.to_json())

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for a running round to finish and handle its result (its pipe is read while
        it runs, see :meth:`_poll_result`)."""
        if self._proc is None:
            return
        deadline_s = None if timeout_s is None else time.monotonic() + timeout_s
        while self._proc.is_alive():
            self._poll_result()
            left_s = None if deadline_s is None else deadline_s - time.monotonic()
            if left_s is not None and left_s <= 0:
                return
            self._proc.join(0.2 if left_s is None else min(0.2, left_s))
        self._finish()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop a running round (it is abandoned; the next one starts clean): its record and
        work folder are cleared and one line says so, so that the next start does not report
        a round cut short by a kill or a power loss."""
        stopped = False
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout_s)
            stopped = True
            self.rounds_stopped += 1
        self._proc = None
        self._piped = None
        if self._result_conn is not None:
            self._result_conn.close()
            self._result_conn = None
        if stopped:
            self._clear_stopped_round()

    def _clear_stopped_round(self) -> None:
        """Clear the record of the round :meth:`stop` ended (once its process let go of the
        round lock), saying what it means."""
        if _clear_cut_short_round(self.cfg.state_dir):
            log.info("the learning round in progress was stopped: nothing it learnt was kept, "
                     "and the next round learns its samples again")


def _clear_cut_short_round(state_dir: str | Path) -> str | None:
    """:func:`interrupted_round` under the round lock, when no round of another process holds
    it; ``None`` also where the state directory cannot be written (then the next start says
    it)."""
    try:
        with round_lock(state_dir) as held:  # held elsewhere: a round runs there now
            return interrupted_round(state_dir) if held else None
    except OSError as exc:  # a read-only state directory
        log.debug("cannot check for a round cut short: %s", exc)
        return None


def write_last_round(state_dir: str | Path, result: RoundResult) -> None:
    """Write ``learner/last_round.json`` (atomically), which :func:`read_last_round` reads.

    Raises:
        OSError: it cannot be written (a full disk; the previous file stays whole).
    """
    atomic_write_json(learner_dir(state_dir) / "last_round.json", result.to_json())


def read_last_round(state_dir: str | Path) -> RoundResult | None:
    """Read the result of the most recent finished round, if any (``None`` when unreadable)."""
    path = learner_dir(state_dir) / "last_round.json"
    if not path.is_file():
        return None
    try:
        return RoundResult.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError):
        return None
