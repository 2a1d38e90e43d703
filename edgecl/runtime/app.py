"""Assembles the device runtime: source, backend, loop, hot swap, memory, learner, server."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgecl.atomic import atomic_write_bytes, path_identity
from edgecl.config import Config, RuntimeConfig
from edgecl.errors import (ConfigError, EdgeclError, LabelError, ModelLoadError, StorageError,
                           UnavailableError, file_as_state_dir, is_disk_full, link_problem)
from edgecl.runtime.volume import volume_read_only
from edgecl.ultra import is_model_yaml

log = logging.getLogger(__name__)


def learner_state(health: dict) -> str:
    """The learner's state as the console and ``/metrics`` show it: its own (``idle``,
    ``training``, ``backoff``), or, when idle while a round is due, what the round waits for
    (:data:`edgecl.runtime.prometheus.WAITING_STATES`).

    Args:
        health: :meth:`edgecl.runtime.learner.LearnerSupervisor.health`.
    """
    from edgecl.runtime.prometheus import WAITING_STATES

    state = health["state"]
    if state == "idle":
        state = next((key for key in WAITING_STATES if health.get(key)), state)
    return state


def clock_note(now_s: float | None = None) -> str | None:
    """The start's line on a wall clock that has not been set (a board without a battery boots
    at 1970, or at its image's build date, until NTP or GPS sets it), or None.

    Args:
        now_s: the wall clock's reading (default: now).

    Returns:
        One line: what reads wrong until the clock is set, and what does not.
    """
    from edgecl.boot import CLOCK_SET_S, iso_time

    now_s = time.time() if now_s is None else float(now_s)
    if now_s >= CLOCK_SET_S:
        return None
    return (f"the system clock reads {iso_time(now_s)}: it has not been set (no battery; NTP "
            f"or GPS sets it later). Until it is, the times edgecl records (model versions, classes' first "
            f"sighting, rounds) read as that date; detection, learning and the operator queue "
            f"measure durations on a clock that setting the date does not move")


def inference_options(cfg: Config):
    """Build backend options from the config's model section."""
    from edgecl.models.base import InferenceOptions

    m = cfg.model
    return InferenceOptions(conf=m.conf, iou=m.iou, max_det=m.max_det, threads=m.threads,
                            providers=m.providers, imgsz=m.imgsz)


def labelling_inference_options(cfg: Config):
    """Backend options for a detector whose detections the labels read: those of
    :func:`inference_options`, at the labels' band floor where it lies below ``model.conf``
    (:func:`~edgecl.runtime.labels.labelling_conf`). The serving model and the previous version
    that the disagreement policy compares it with run at this one threshold (before, the
    previous one ran at ``model.conf``, and every detection of the serving one in between
    counted as a disagreement)."""
    from edgecl.runtime.labels import labelling_conf

    opts = inference_options(cfg)
    floor = labelling_conf(cfg)
    return opts if floor is None else dataclasses.replace(opts, conf=floor)


def _intact_served_file(registry, version: str) -> str | None:
    """The file a version would serve (:meth:`~edgecl.models.registry.Registry.model_path`)
    when it matches its manifest sha256, as its manifest names it; None when it does not, or
    the version has none. Before, a damaged ``model.pt`` (which only rounds read) rolled the
    device back to an older version for good while its ``model.onnx`` was intact."""
    from edgecl.errors import RegistryError

    try:
        path = registry.model_path(version, verify=True)
        entry = path.relative_to(registry.root / version).as_posix()
    except (RegistryError, ValueError, OSError):
        return None
    if entry.lower().endswith(".pt") or not registry.file_intact(version, entry):
        return None
    return entry


def _warn_first_round_size(cfg: Config, registry, path: Path, served_imgsz) -> None:
    """At start, before the first round learns on a team's own model: say that the round
    trains, exports and then serves at ``learner.imgsz`` where the model serves at another
    size. Before, it was said only once the round had shrunk a 320 px checkpoint to 160 px (its
    10-40 px objects then 5-20 px), one log line among many."""
    from edgecl.errors import EdgeclError
    from edgecl.models.registry import added_by_person

    try:
        current = registry.current()
        first = current is None or added_by_person(registry.manifest(current))
    except EdgeclError:
        return
    side = int(served_imgsz or 0)
    if first and side and side != int(cfg.learner.imgsz):
        log.warning("learner: %s serves at %d px; the first round trains and exports at "
                    "learner.imgsz=%d px, and the device serves that size from then on (set "
                    "learner.imgsz: %d to keep its size)", path.name, side,
                    cfg.learner.imgsz, side)


def resolve_model(cfg: Config, explicit: str | None, registry) -> tuple[Path, str]:
    """Decide which model file the loop starts with.

    Args:
        cfg: configuration.
        explicit: ``--model`` value, if given.
        registry: the state directory's registry, or ``None``.

    Returns:
        ``(path, version_label)``.

    Raises:
        ModelLoadError: no model anywhere.
    """
    if explicit:
        return Path(explicit), f"file:{Path(explicit).name}"
    if registry is not None and registry.current():
        version = registry.current()
        return registry.model_path(version), version
    if cfg.model.path:
        path = Path(cfg.model.path).expanduser()
        if not path.exists() and not path.is_symlink() and not is_model_yaml(path):
            # a model yaml needs no file: ultralytics packages yolo11n.yaml
            looked = f" (looked for {path.absolute()})" if not path.is_absolute() else ""
            raise ModelLoadError(f"config key 'model.path': model file not found: "
                                 f"{cfg.model.path}{looked}")
        if path.is_dir():  # before: the folder's error, with no word of the key that named it
            from edgecl.models.base import folder_given

            raise ModelLoadError(f"config key 'model.path': {folder_given(path)}")
        return Path(cfg.model.path), f"file:{Path(cfg.model.path).name}"
    waiting = registry.added_unpromoted() if registry is not None else None
    if waiting is not None:
        from edgecl.models.registry import unpromoted_model_problem

        raise ModelLoadError(unpromoted_model_problem(cfg.state_dir, *waiting))
    # without a state directory, the commands below need one, and so does the run that reads
    # what they made (before: hints that wrote ./state, which this run never reads)
    where = f" --state-dir {shlex.quote(str(cfg.state_dir))}" if registry is not None else \
        " --state-dir DIR"
    seeded = _seeding_checkpoint(cfg.state_dir) if registry is not None else None
    if seeded is not None:  # before: the generic advice, whose 'learn' path is refused here
        quoted = shlex.quote(seeded)
        raise ModelLoadError(f"no model: this device's classes came from the checkpoint "
                             f"{seeded}; pass --model {quoted}, set model.path to it, or add it "
                             f"with 'edgecl models add {quoted} --promote{where}'")
    then = "" if registry is not None else ", then run with --state-dir DIR"
    raise ModelLoadError(f"no model: pass --model PATH (your own checkpoint, or yolo11n.yaml to "
                         f"start untrained and teach it), set model.path, or add one with "
                         f"'edgecl models add PATH --promote{where}'; without a pretrained model, "
                         f"'edgecl labels import{where} FOLDER' and 'edgecl learn{where}'{then}")


STATE_DIR_CHECK_S = 30.0
"""Seconds between two checks of a detect-only run's state directory."""
VOLUME_CHECK_S = 5.0
"""Seconds between two checks of a full run's state directory volume (read-only yet?)."""
STATE_DIR_MIN_FREE_BYTES = 16 << 20
"""Free bytes a state directory's volume needs before a detect-only run restarts on it."""


def _trained_checkpoint(cfg: Config, path: Path) -> str | None:
    """``path`` when it is a trained ``.pt`` checkpoint (one saved as untrained, the demo's
    fresh start, is none: rounds from scratch are what it asks for), else None."""
    from edgecl.continual.round import base_checkpoint

    given = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=str(path)))
    found = base_checkpoint(given)
    return None if found is None else str(found)


def state_dir_problem(state_dir: str | Path) -> str | None:
    """Why a state directory cannot take a full run now (it is missing, cannot be written, or
    its volume has under :data:`STATE_DIR_MIN_FREE_BYTES` free), or None. Writes only a probe
    file, removed at once; creates nothing.

    Args:
        state_dir: the state directory.
    """
    import shutil

    path = Path(state_dir)
    if not path.is_dir():
        return f"state directory {path} is missing"
    try:
        note = ensure_writable(path)
        free = shutil.disk_usage(path).free
    except (StorageError, OSError) as exc:
        return str(exc)
    if note:
        return note
    if free < STATE_DIR_MIN_FREE_BYTES:
        return f"state directory {path}'s volume has {free >> 10} KiB free"
    return None


def card_fault(state_dir: str | Path) -> str | None:
    """``read-only`` or ``full`` for a device's state directory (one that holds its models,
    memory or classes) on a volume mounted read-only or with under
    :data:`STATE_DIR_MIN_FREE_BYTES` free; None otherwise (a folder that is no device's, a
    file, a link to a card not mounted, a folder without rights: mistakes, not card faults).

    Args:
        state_dir: the state directory.
    """
    import shutil

    path = Path(state_dir)
    if not path.is_dir() or not any((path / name).exists()
                                    for name in ("models", "memory", "classes.json")):
        return None
    if volume_read_only(path):
        return "read-only"
    try:
        return "full" if shutil.disk_usage(path).free < STATE_DIR_MIN_FREE_BYTES else None
    except OSError:
        return None


def detect_only_options(cfg: Config, opts: RunOptions, exc: BaseException) -> RunOptions | None:
    """The options of a run that only detects, for a start its state directory refused.

    A card that went read-only (ext4's ``errors=remount-ro``, a worn SD card) or filled up to
    its last KiB refused the start in one line, and a service restarted into the same refusal
    every few seconds: the drone did not detect at all, though its serving model could be read.
    Such a start serves the device's current version (``--model`` if given, else
    ``model.path``) with nothing stored, labelled or learnt; its console (``server.enabled``)
    serves the Live page, ``/healthz`` (``degraded``, with ``detect_only``: why) and
    ``/metrics`` (``edgecl_detect_only 1``); its routes that read or change the state directory
    answer 503 with why (:func:`~edgecl.runtime.console.detect_only_console_hooks`). An
    ``--out`` or ``--save-video`` on a read-only volume too is left out. The run checks the
    state directory every :data:`STATE_DIR_CHECK_S` and ends with ``restart_wanted`` once it
    can be written (``edgecl run`` then starts itself again, in full).

    Args:
        cfg: the run's configuration.
        opts: the refused run's options.
        exc: why the start was refused.

    Returns:
        The detect-only options, or None: the run kept no state, the refusal was no card fault
        (:func:`card_fault`), or there is no model to serve.
    """
    if not opts.use_state or not isinstance(exc, StorageError):
        return None
    if card_fault(cfg.state_dir) is None:  # a typo, a file, /proc, no rights: its one line
        return None
    model, label = (opts.model, None) if opts.model else _readable_serving_model(cfg)
    if model is None:
        return None
    return dataclasses.replace(opts, model=str(model), use_state=False, fleet_client=None,
                               wait_for_state_dir=str(cfg.state_dir), model_label=label,
                               detect_only_reason=str(exc), **_outputs_that_can_open(opts))


def _outputs_that_can_open(opts: RunOptions) -> dict:
    """``out`` and ``save_video`` of a detect-only run: one on a read-only volume (the same card
    as the state directory, as a drone logs to its SD card) is left out, with one error line,
    until the runtime starts again in full (before, its refusal ended the run that had just
    said it would detect, exit 2, and a service restarted it into the same end)."""
    kept = {}
    for key, option in (("out", "--out"), ("save_video", "--save-video")):
        path = getattr(opts, key)
        if not path:
            continue
        folder = Path(path).absolute().parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if volume_read_only(folder):
            log.error("%s %s is on a read-only volume too: this run detects without writing it, "
                      "until the runtime starts again in full", option, path)
            kept[key] = None
    return kept


def _readable_serving_model(cfg: Config) -> tuple[Path | None, str | None]:
    """The current version's serving file and name, read without writing (a read-only
    registry), else ``model.path`` where it is a file (no name); ``(None, None)`` when neither
    can be found."""
    from edgecl.errors import EdgeclError
    from edgecl.models.registry import Registry

    models = Path(cfg.state_dir) / "models"
    try:
        if models.is_dir():  # read as it is: a detect-only run writes nothing there
            registry = Registry(models, create=False, repair=False)
            current = registry.current()
            if current is not None:
                return registry.model_path(current, verify=True), current
    except (EdgeclError, OSError) as exc:
        log.warning("the current version cannot be read for a detect-only run: %s", exc)
    path = Path(cfg.model.path).expanduser() if cfg.model.path else None
    return (path, None) if path is not None and path.is_file() else (None, None)


def _seeding_checkpoint(state_dir) -> str | None:
    """The checkpoint the device's classes came from (the class registry's record), or None
    (none recorded, or a registry that cannot be read: its own open says why)."""
    from edgecl.errors import EdgeclError
    from edgecl.models.classes import ClassRegistry

    try:
        return ClassRegistry(state_dir).seeding_checkpoint()
    except EdgeclError:
        return None


def ensure_writable(state_dir: str | Path) -> str | None:
    """Create the state directory and prove it can be written (a probe file, then removed).

    A full disk is not refused: detection needs no room, and storing, learning and metrics
    pause and resume by themselves once there is room.

    Returns:
        The warning a full disk calls for (said once the run has started: a start that fails
        for it says so in its one error line, not after a warning that detection starts), or
        ``None``.

    Raises:
        StorageError: one line naming the directory and the reason (read-only, no rights, a
            file standing there).
    """
    path = Path(state_dir)
    if path.exists() and not path.is_dir():
        raise StorageError(file_as_state_dir(path))
    why = link_problem(path)  # a link that loops, or leads to a card not mounted
    if why:
        raise StorageError(f"state directory {why}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path / ".write-probe", b"ok")
        (path / ".write-probe").unlink()
    except OSError as exc:
        if is_disk_full(exc) and path.is_dir():
            return (f"state directory {path} is full ({exc.strerror or exc}): detection "
                    f"starts; storing, learning and metrics wait for room and resume by "
                    f"themselves")
        why = exc.strerror or str(exc)
        if exc.errno == errno.ENOENT and path.is_dir():  # /proc/self: there, but takes no file
            why = f"no file can be created in it ({why}: a virtual file system such as /proc?)"
        raise StorageError(f"state directory {path} is not writable: {why}") from None
    return None


def _note_renamed(names: dict, known: dict[int, str], former: dict[int, list[str]],
                  what: str) -> None:
    """Warn that a labelled stream names a class by a name ``classes rename`` took from it:
    its boxes of that id are that class, under its name now."""
    from edgecl.data.class_names import same_name_key

    for cid, name in sorted((int(k), str(v)) for k, v in names.items()):
        if (cid in known and same_name_key(name) != same_name_key(known[cid])
                and same_name_key(name) in {same_name_key(n) for n in former.get(cid, [])}):
            log.warning("%s: class id %d is '%s', which this device renamed '%s': its boxes "
                        "are read as '%s'", what, cid, name, known[cid], known[cid])


def ignored_after_stop(signum, _frame) -> None:
    """The handler of SIGINT, SIGTERM and SIGHUP once a run has stopped: they are ignored (not
    ``SIG_IGN``, which means a signal the command was started ignoring)."""
    log.debug("%s ignored: the run has stopped", signal.Signals(signum).name)


@contextlib.contextmanager
def stop_on_signals(stop):
    """Route SIGINT, SIGTERM and SIGHUP to ``stop(signum)`` for the duration of the block (a
    signal ignored before, SIGINT of a command started in the background or SIGHUP of one
    started with ``nohup``, stays ignored). SIGHUP is a closed SSH session or terminal: its
    default action killed the runtime where it stood, with no summary and an unclean stop.

    After a block that a signal stopped, later signals are ignored (the process is stopping:
    the run's summary is printed and the command returns): before, the handler the block had
    replaced came back and a second signal 50 ms after the first (``timeout`` and service
    managers send two) raised there, so a clean stop ended with the signal's exit status.
    """
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    received = []

    def handler(signum, _frame):
        log.info("received %s; shutting down cleanly", signal.Signals(signum).name)
        received.append(signum)
        stop(signum)

    for sig, old in previous.items():
        if old is not signal.SIG_IGN:  # a command started in the background ignores SIGINT
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, ignored_after_stop if received else old)


def fresh_network(model: str) -> bool:
    """Whether a served model is a fresh network built from a ``.yaml``: it has learnt no class
    (its outputs are untrained, and their ids are not the device's classes).

    Args:
        model: the model's file or version (``file:yolo11n.yaml``, ``v0003``).
    """
    return str(model).lower().endswith(".yaml")


SERVER_RETRY_S = 30.0
"""Seconds between tries to start a console whose port was taken (another program, or the
socket of a run that has just stopped); detection never waits for it."""

SCAFFOLDING = frozenset({"lock", "models/.lock", "classes.lock", "metrics/metrics.sqlite",
                         "metrics/metrics.sqlite-wal", "metrics/metrics.sqlite-shm",
                         "metrics/.rebuild.lock"})
"""Files a runtime's start writes before it has stored anything (relative to the state dir)."""


def remove_scaffolding(state: Path) -> None:
    """Remove a state directory that a refused start made and left holding nothing but its own
    lock files (a bad model or source given to a fresh ``--state-dir``); one that holds any
    other file is left as it is.

    Args:
        state: the state directory this start created.
    """
    import shutil

    try:
        files = {p.relative_to(state).as_posix() for p in state.rglob("*") if not p.is_dir()}
    except OSError:
        return
    if files <= SCAFFOLDING:
        shutil.rmtree(state, ignore_errors=True)


def unpaced_source_warning(cfg, source) -> str | None:
    """Why reading a recording faster than a camera delivers it skews this run, or None.

    Two settings count seconds of capture time, which a file source read as fast as it
    decodes compresses: ``memory.holdout_block_s`` (one held-out draw per block, so one block
    may hold hundreds of frames) and the operator queue's ``labels.max_per_minute`` (one frame
    every ``60 / max_per_minute`` seconds of wall time: most of the recording passes unseen).

    Args:
        cfg: the run's configuration.
        source: the open or unopened frame source.

    Returns:
        One warning line naming the source, what is affected and how to pace it; None for a
        live source, a paced one (``runtime.realtime`` or a paced benchmark stream), or when
        neither setting applies.
    """
    if getattr(source, "is_live", False) or getattr(source, "real_time", False) \
            or cfg.runtime.realtime:
        return None
    effects = []
    if cfg.memory.holdout_block_s > 0:
        effects.append(f"memory.holdout_block_s={cfg.memory.holdout_block_s:g} holds out labelled "
                       "frames by blocks of capture time, so one block may hold many frames (0 "
                       "draws each frame alone)")
    labels = cfg.labels
    if labels.mode == "field" and labels.max_per_minute > 0 \
            and not getattr(source, "labelled", False):
        effects.append(f"labels.max_per_minute={labels.max_per_minute} counts minutes of wall "
                       "time, so the operator queue takes one frame every "
                       f"{60 / labels.max_per_minute:g} s of reading while most of the "
                       "recording passes unseen")
    if not effects:
        return None
    where = getattr(source, "uri", "this source")
    pace = ("'runtime.realtime: true' reads it at the ?fps its URI gives"
            if re.search(r"[?&]fps=", str(where)) else
            "'runtime.realtime: true' reads it at its own rate (a folder takes ?fps=N)")
    return f"{where} is read from files faster than a camera delivers: " + "; ".join(effects) \
        + "; " + pace


def _round_shown(learner: dict) -> dict:
    """``round`` and ``progress`` of the learner's health for the console and ``/metrics``: the
    running round and its progress while training, else the last finished round and None."""
    training = learner["state"] == "training"
    return {"round": learner["round"] if training else learner["last_round"],
            "progress": learner["progress"] if training else None}


def build_sinks(opts, names, runtime_cfg=None, source_fps=None, source_file=None) -> list:
    """Create the output sinks a run asks for (JSON lines, video, progress lines).

    Args:
        opts: object with ``out``, ``save_video`` and ``quiet`` attributes.
        names: class index -> name, or a callable returning the current mapping.
        runtime_cfg: the ``runtime`` config section (rotation of the JSON lines file); the
            defaults when ``None``.
        source_fps: ``callable() -> float | None``: the source's frame rate, for the saved
            video (``None``: 10 fps).
        source_file: the video file the source reads, if it reads one (never the saved video).

    Returns:
        The sinks.
    """
    from edgecl.runtime.sinks import (DEFAULT_VIDEO_FPS, JsonlSink, ProgressSink, VideoSink,
                                      same_file)

    if opts.out and opts.save_video and same_file(opts.out, opts.save_video):
        # before: the lines' new file was renamed aside as a video cut short, and the lines
        # went on into it
        raise ConfigError(f"--out {opts.out} and --save-video {opts.save_video} name the same "
                          f"file: name one for the detections and another for the video")
    sinks = []
    rc = runtime_cfg or RuntimeConfig()
    if opts.out:
        sinks.append(JsonlSink(opts.out, names, rc.out_max_bytes, rc.out_backups))
    if opts.save_video:
        sinks.append(VideoSink(opts.save_video, fps=source_fps or DEFAULT_VIDEO_FPS, names=names,
                               source_file=source_file, backups=rc.out_backups,
                               max_bytes=rc.out_max_bytes))
    if not opts.quiet:
        sinks.append(ProgressSink(names=names))
    return sinks


@dataclass(frozen=True)
class RunOptions:
    """What one ``edgecl run`` (or the demo's streaming phase) asks for."""

    source_uri: str
    model: str | None = None
    max_frames: int | None = None
    out: str | None = None
    save_video: str | None = None
    quiet: bool = False
    use_state: bool = True
    sinks: tuple = field(default_factory=tuple)
    fleet_client: object | None = None
    """The fleet client's starter (``check(cfg)``, ``start(cfg) -> process``:
    :class:`edgecl.fleet.client.FleetClientStarter`, which ``edgecl run`` passes); None: this run
    joins no fleet whatever ``fleet.enabled`` says (a benchmark, the demo)."""
    model_label: str | None = None
    """The name the served model goes by (a detect-only run's registry version, ``v0010``)
    instead of ``file:NAME``."""
    wait_for_state_dir: str | None = None
    """A detect-only run's state directory (:func:`detect_only_options`): checked every
    :data:`STATE_DIR_CHECK_S`, and the run ends with ``restart_wanted`` once it can be written."""
    detect_only_reason: str = ""
    """Why a detect-only run's state directory refused the start (shown on its console)."""
    restart_on_read_only: bool = False
    """End the run with ``restart_wanted`` once the state directory's volume turns read-only
    (``edgecl run``, which then starts again: detect-only, :func:`detect_only_options`)."""


class Runtime:
    """One running device: owns the loop and, with a state directory, its lock, the registry,
    class registry, memory, learner supervisor, monitor, watchdog and the web console.

    Args:
        cfg: configuration.
        opts: run options.
        on_round: callback for each finished learning round (the demo prints progress).
        supervise_hook: optional ``callable(runtime)`` run on every supervision tick.
    """

    def __init__(self, cfg: Config, opts: RunOptions, on_round=None, supervise_hook=None):
        from edgecl.runtime.watchdog import Watchdog

        if opts.model and not cfg.model.path and Path(opts.model).suffix.lower() not in (
                ".yaml", ".yml"):
            # a pretrained checkpoint named with --model is also what the first round learns on
            # top of (the learner reads model.path), not only what serves until then; an
            # exported engine is not something a round can start from, and the first round
            # says so (before, it trained a model from scratch and swapped it in for this one)
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(
                cfg.model, path=str(Path(opts.model).absolute())))
        self.cfg = cfg
        self.opts = opts
        self.on_round = on_round
        self.supervise_hook = supervise_hook
        self.interrupted = False  # set when SIGINT/SIGTERM stopped the run
        self.stop_signal: int | None = None  # the first of them
        self.server_error: str | None = None  # why the console did not start (port taken ...)
        self._server_retry_at = float("inf")  # monotonic time of the next try to start it
        self.registry = None
        self.classes = None
        self._registry_names = None
        self.lock = None
        self.run_record = None  # STATE/runtime.json: settings and learner state for 'status'
        self._full_note: str | None = None  # a full state directory, said once started
        self.memory_sink = None
        self.supervisor = None
        self._disk_round = None  # the newest round on disk, for the Live page (DiskRound)
        self.monitor = None
        self.server = None
        self.loop = None
        self.watcher = None
        self.live_view = None
        self.calibration = None
        self.previous_detector = None
        self.fleet_proc = None
        self._fleet_backoff_s, self._fleet_restart_at = 0.0, None
        self.watchdog = Watchdog()
        self._last_runtime_record_s = 0.0
        self._started_s = time.monotonic()
        self.step_errors: dict[str, dict] = {}
        self.step_error_total = 0
        self._state_identity: tuple[int, int] | None = None  # the state directory locked
        self.state_dir_error = ""  # why the run stopped: its state directory went away
        # a detect-only run's state directory can be written again, or a full run's volume
        # went read-only: 'edgecl run' starts again
        self.restart_wanted = False
        self._volume_checked_s = float("-inf")
        self._detect_only_lock = None  # a detect-only run's lock, outside its state directory
        self._state_dir_checked_s = time.monotonic()

    def _serving_version(self) -> str | None:
        return self.loop.model_version if self.loop is not None else None

    def _serving_names(self) -> dict:
        return self.loop.backend.meta.names if self.loop is not None else {}

    def _learnt_names(self) -> dict:
        """The classes the serving model has learnt (none: see :func:`fresh_network`)."""
        return {} if fresh_network(self._serving_version() or "") else self._serving_names()

    def _display_names(self) -> dict:
        """Class id -> name as a person should see it: the class registry's (a class renamed
        since the serving version was made shows its new name), over the serving model's."""
        names = dict(self._serving_names())
        if self._registry_names is not None:
            names.update(self._registry_names())
        return names

    def _build_state_parts(self, names: dict) -> list:
        """Memory sink (labelling pipeline), monitor and learner supervisor.

        Args:
            names: the classes the serving model has learnt (:meth:`_learnt_names`): a class
                taught outside them starts a round at once (the new-class trigger).
        """
        from edgecl.runtime.labels import MemorySink
        from edgecl.runtime.learner import LearnerSupervisor
        from edgecl.runtime.monitor import Monitor
        from edgecl.runtime.versions import CalibrationCache, PreviousVersionDetector, TimedCache

        cfg = self.cfg
        self.monitor = Monitor(cfg.state_dir, wait_for_room=True)  # a full card: detect anyway
        try:
            if self.monitor.follow_names(self.classes.names()):
                log.info("metrics: class names brought up to the class registry's")
        except EdgeclError as exc:  # the next round writes them; detection must start
            log.warning("metrics keep earlier class names until the next round: %s", exc)
        self.calibration = CalibrationCache(self.registry, self._serving_version,
                                            cfg.labels.pseudo_precision,
                                            cfg.labels.pseudo_min_true_positives)
        self.previous_detector = PreviousVersionDetector(self.registry, self._serving_version,
                                                         labelling_inference_options(cfg))
        known = lambda: set(self._learnt_names())  # noqa: E731 (a tiny closure)
        forgetting = TimedCache(lambda: self.monitor.forgetting_classes(cfg.gate.max_forgetting / 2),
                                ttl_s=30.0, default=set())
        self.memory_sink = MemorySink.from_config(
            cfg, classes=self.classes, thresholds=lambda: self.calibration.thresholds(known()),
            previous_detector=self.previous_detector, forgetting_classes=forgetting,
            known_classes=known)
        self.supervisor = LearnerSupervisor(cfg, self.registry, self.memory_sink,
                                            known_classes=names.keys(), on_round=self.on_round)
        return [self.memory_sink]

    def _check_current_version(self) -> None:
        """Verify the current version's files (sha256, confinement) before serving it; when it is
        damaged, fall back to the newest intact earlier version.

        Raises:
            ModelLoadError: the current version is damaged and no earlier one is intact.
        """
        from edgecl.runtime.promote import rollback_version

        registry = self.registry
        current = registry.current()
        while current is not None:
            problems = registry.verify(current, essential_only=True)
            if not problems:
                return
            served = _intact_served_file(registry, current)
            if served is not None:  # what it serves is intact: the damage is in model.pt,
                # which only rounds read, or in an engine it does not serve
                log.warning("current model version %s fails its integrity check (%s); it "
                            "serves its intact %s, but no round learns on it until it is "
                            "replaced: 'edgecl models rollback' serves the version before it, "
                            "or 'edgecl models add --promote' a checkpoint you trust", current,
                            problems[0], served)
                return
            log.error("current model version %s fails its integrity check (%s); rolling back",
                      current, problems[0])
            try:
                current = rollback_version(self.cfg.state_dir, registry)
            except EdgeclError as exc:
                raise ModelLoadError(f"current model version {current} fails its integrity check "
                                     f"({problems[0]}) and no earlier version can serve: {exc}; "
                                     f"'edgecl models add --promote FILE' serves a copy you trust"
                                     ) from None

    def _open_state(self) -> None:
        """Lock the state directory and open the registries (before the model is chosen)."""
        from edgecl.models.classes import ClassRegistry
        from edgecl.models.registry import Registry
        from edgecl.runtime.lock import RuntimeLock
        from edgecl.runtime.server import check_bind, resolve_token

        cfg = self.cfg
        if cfg.server.enabled:
            check_bind(cfg.server.host, resolve_token(cfg.server.token), cfg.server.tls_cert,
                       cfg.server.tls_key)
        if cfg.model.providers.strip() not in ("", "auto"):
            from edgecl.models.onnx_backend import providers_problem

            problem = providers_problem(cfg.model.providers)
            if problem is not None:  # a learnt version serves ONNX: said now, not at its swap
                raise ConfigError(f"model.providers={cfg.model.providers}: {problem}")
        if cfg.fleet.enabled and self.opts.fleet_client is None:
            log.warning("fleet.enabled: ignored, this run joins no fleet (only 'edgecl run' does)")
        elif cfg.fleet.enabled:  # one line before the model loads, not seconds later
            self.opts.fleet_client.check(cfg)
        if cfg.learner.enabled:
            from edgecl.continual.cpu_engines import check_export_settings
            from edgecl.continual.finetune import resolve_device
            from edgecl.continual.round import check_start_model

            check_export_settings(cfg)
            check_start_model(cfg)
            if cfg.learner.device.startswith("cuda"):  # refused at start, not in every round
                resolve_device(cfg.learner.device)
        self._full_note = ensure_writable(cfg.state_dir)
        self.lock = RuntimeLock(cfg.state_dir).acquire()
        self._state_identity = path_identity(cfg.state_dir)
        self.registry = Registry(Path(cfg.state_dir) / "models")
        self.classes = ClassRegistry(cfg.state_dir)
        note = clock_note()
        if note:
            log.warning("%s", note)
        self._repair_memory_index()
        self._repair_classes()
        if not self.opts.model:
            from edgecl.runtime.learner import promote_leftover_staged

            promote_leftover_staged(cfg, self.registry, inference_options(cfg))
            self._check_current_version()

    def _repair_memory_index(self) -> None:
        """Rebuild a damaged, or lost, replay-memory index from the sample files and the newest
        snapshot, with one warning (the damaged index is kept aside), before anything opens the
        memory: a device whose index an SD-card fault damaged refused to start. Only damage is
        rebuilt (:func:`edgecl.continual.memory.rebuild.damage_to_rebuild`); a full disk, a
        permission problem, a lock or a newer format keep their one-line errors from the
        memory's open.

        Raises:
            StorageError: the index is damaged and the rebuild could not write (full disk).
            ReplayMemoryError: the rebuild found nothing to rebuild after all.
        """
        from edgecl.continual.memory.rebuild import rebuild_damaged_index, rebuild_warning
        from edgecl.runtime.labels import answered_provenance

        done = rebuild_damaged_index(Path(self.cfg.state_dir) / "memory", self.cfg.state_dir,
                                     provenance=answered_provenance(self.cfg))
        if done is not None:
            log.warning("%s", rebuild_warning(*done))

    def _repair_classes(self) -> None:
        """Rebuild a damaged ``classes.json`` (or fill an empty one) from the replay memory's
        class names with their ids, as the tools that open the memory do
        (:func:`edgecl.models.classes.adopt_memory_class_names`); a device whose registry an
        SD-card fault damaged refused to start.

        Raises:
            ClassRegistryError: damaged, and the memory names no class to rebuild it from.
        """
        from edgecl.continual.memory import memory_from_config
        from edgecl.models.classes import ClassRegistryError, adopt_memory_class_names

        try:
            if self.classes.names():
                return
        except ClassRegistryError:
            pass
        if not (Path(self.cfg.state_dir) / "memory").is_dir():
            self.classes.names()  # a damaged registry with no memory: its one-line error
            return
        with memory_from_config(self.cfg) as memory:
            adopt_memory_class_names(memory, self.classes)

    def _seed_classes(self, model_names: dict, model_path: Path, source) -> None:
        """Give the class registry a labelled source's class names, then the model file's.

        The source's ids are the ids of its ground truth, so they must name the same classes
        as the device. A model file the user named (``--model`` or ``model.path``: a pretrained
        checkpoint, say) seeds its names too, and so does a version staged from such a file
        (``edgecl models add``: no parent version) while the registry has no class yet; a learnt
        registry version is not re-read (its names came from the registry, which a rename may
        have changed since), and neither is a ``.yaml`` model (a fresh network whose class
        "names" are only numbers).

        Raises:
            ConfigError: the source's or the model file's ids name other classes than the
                device's (checked before anything is written).
        """
        seeds = []
        names = getattr(source, "names", None)
        labels_seed = None
        known = self.classes.names()
        if not names and getattr(source, "labelled", False) and known:
            shown = ", ".join(f"{k} {v}" for k, v in list(sorted(known.items()))[:6])
            log.warning("the labels of %s name no class (no data.yaml names): their class ids "
                        "are read as this device's classes (%s%s); if they mean others, give "
                        "the folder a data.yaml with names", getattr(source, "uri", "the source"),
                        shown, ", ..." if len(known) > 6 else "")
        if names and getattr(source, "labelled", True):
            labels_seed = (names, f"the labels of {getattr(source, 'uri', 'the source')}",
                           "import the folder with 'edgecl labels import', which maps classes "
                           "by name", None)
            seeds.append(labels_seed)
        current = self.registry.current() if self.registry else None
        from_file = current is None or self.opts.model
        if model_path.suffix.lower() != ".yaml":
            if from_file:  # a trained checkpoint is recorded with its names: rounds start from it
                checkpoint = _trained_checkpoint(self.cfg, model_path)
                seeds.append((model_names, f"the model {model_path.name}",
                              "use a model trained with these class ids, or another --state-dir",
                              checkpoint))
            elif not self.classes.names() and "parent" not in self.registry.manifest(current):
                # a version staged from a user's file ('edgecl models add'), on a device that
                # has no class yet: its names are the device's first classes, as a --model
                # file's would be
                seeds.append((model_names, f"version {current} ({model_path.name})",
                              "use a model trained with these class ids, or another --state-dir",
                              None))
        from edgecl.models.classes import names_conflict

        known = dict(self.classes.names())
        planned = dict(known)
        # a model made before a rename still names the class so, and so does a labelled
        # stream's data.yaml (its ids are its classes: before, a start after 'classes rename'
        # of a class the stream names was refused, and the device did not come back)
        former = self.classes.former_names()
        if labels_seed is not None:
            _note_renamed(labels_seed[0], known, former, labels_seed[1])
        earlier = None  # the seed before this one (its ids are planned, not in the registry)
        for seed in seeds:  # every check before any write: a refused start
            names, what, advice, _ = seed
            conflict = names_conflict(known, names, former)
            if conflict:
                raise ConfigError(f"{what}: {conflict}; {advice}")
            conflict = names_conflict(planned, names, former)
            if conflict:  # with the seed before it, not with the registry (empty there)
                conflict = conflict.replace("this device's class registry has", f"{earlier} give")
                # the model first, then the folder by name (before: 'import the folder', which
                # gave the folder's order the ids and locked the model out of the device)
                first = (f"give the device the model first ('edgecl models add "
                         f"{shlex.quote(str(model_path))} --promote --state-dir "
                         f"{shlex.quote(str(self.cfg.state_dir))}'), then import the folder "
                         f"with 'edgecl labels import' (it maps classes by name onto the "
                         f"model's ids)" if from_file else
                         "import the folder with 'edgecl labels import' instead (it maps "
                         "classes by name)")
                raise ConfigError(f"{what}: {conflict}; {first}, or use a model trained with "
                                  f"these class ids")
            planned.update({int(k): str(v) for k, v in names.items() if int(k) not in planned})
            earlier = what
        for names, what, advice, checkpoint in seeds:
            try:
                self.classes.seed(names, checkpoint)  # checked above; refuses what changed since
            except LabelError as exc:  # the names themselves (twice the same): no other ids help
                raise ConfigError(f"{what}: {exc}") from None
            except StorageError as exc:  # a full or read-only card: no other ids help
                raise StorageError(f"{what}: {exc}; free a few MiB on the state directory's "
                                   f"volume (or make it writable) and start again") from None
            except EdgeclError as exc:
                raise ConfigError(f"{what}: {exc}; {advice}") from None

    def build(self, source=None) -> None:
        """Open the model, the source and every part the options ask for.

        Args:
            source: an already-built frame source (default: open ``opts.source_uri``).

        Raises:
            EdgeclError: bad model, bad source URI, bad state directory, a state directory
                another runtime holds.
        """
        state = Path(self.cfg.state_dir)
        made_here = self.opts.use_state and not state.exists()
        try:
            self._build(source)
        except BaseException:
            self.close()
            if made_here:
                remove_scaffolding(state)
            raise
        if self._full_note:
            log.warning("%s", self._full_note)
        if self.lock is not None:
            self._start_run_record()

    def _start_run_record(self) -> None:
        """Write ``STATE/runtime.json`` (:mod:`edgecl.runtime.run_record`) once the start
        succeeded: a refused start leaves no record of a run that never was."""
        from edgecl.boot import now_iso
        from edgecl.runtime.run_record import RunRecord, learner_settings

        self.run_record = RunRecord(self.cfg.state_dir, os.getpid(), now_iso(),
                                    learner_settings(self.cfg.learner))
        self.run_record.learner("idle" if self.cfg.learner.enabled else "off", None)

    def _calibration_note(self, version: str, names: dict, labelled: bool) -> str | None:
        """The start line on pseudo-labels that wait for a calibration: the version about to
        serve has none (:func:`~edgecl.runtime.labels.uncalibrated_note`), or its calibrator
        gives no class a threshold yet (:func:`~edgecl.runtime.labels.no_threshold_note`).
        Read for that version (before, it was read before the loop served any, so that every
        calibrated version was said to have no calibration)."""
        from edgecl.runtime.labels import no_threshold_note, uncalibrated_note
        from edgecl.runtime.versions import CalibrationCache

        if self.calibration is None:
            return None
        at_start = CalibrationCache(self.registry, lambda: version,
                                    self.calibration.target_precision,
                                    self.calibration.min_true_positives)
        if at_start.calibrator is None:
            return uncalibrated_note(self.cfg, version, labelled, unusable=at_start.unusable)
        if any(t is not None for t in at_start.thresholds(set(names)).values()):
            return None
        return no_threshold_note(self.cfg, version)

    def _build(self, source) -> None:
        from edgecl.models.backends import load_backend
        from edgecl.runtime.console import LiveViewSink
        from edgecl.runtime.labels import describe_labelling, learns_nothing, uncertain_band_problem
        from edgecl.runtime.loop import InferenceLoop
        from edgecl.runtime.sources import open_source
        from edgecl.runtime.watcher import ModelWatcher

        cfg, opts = self.cfg, self.opts
        if opts.use_state:
            self._open_state()
        elif opts.wait_for_state_dir:
            from edgecl.runtime.lock import RuntimeLock, detect_only_lock

            folder, name = detect_only_lock(opts.wait_for_state_dir)
            self._detect_only_lock = RuntimeLock(
                folder, name, holder="a runtime that only detects", shown=opts.wait_for_state_dir
            ).acquire()
        path, version = resolve_model(cfg, opts.model, self.registry)
        current = self.registry.current() if self.registry is not None else None
        infer_opts = inference_options(cfg)
        shown_conf = None
        if opts.use_state:
            labelling = labelling_inference_options(cfg)
            if labelling.conf != infer_opts.conf:  # the band's lower part: for the labels alone
                infer_opts, shown_conf = labelling, cfg.model.conf
                log.info("detector runs at score %g for the labels' uncertain band (model.conf "
                         "%g: what --out, the video and the console show)", labelling.conf,
                         cfg.model.conf)
        if version.startswith("file:"):
            backend = load_backend(path, infer_opts, warmup_runs=cfg.runtime.warmup_runs)
            if current:  # a service's --model, kept after learning (said once it loaded:
                # before, a file that does not load was warned of, then refused)
                log.warning("--model %s is served for this run, not the device's current "
                            "version %s (what its rounds learnt, which they go on learning on "
                            "top of); without --model a run serves %s", path, current, current)
        else:  # a registry version: an engine that does not load leaves the next one serving
            backend = self.registry.load_serving(version, infer_opts, cfg.runtime.warmup_runs)
            if (cfg.model.path and not Path(cfg.model.path).exists()
                    and not is_model_yaml(cfg.model.path)):  # yolo11n.yaml: ultralytics
                # before: a typo in model.path went unsaid once a version served
                log.warning("model.path %s does not exist (looked for %s); unused while the "
                            "device has a version: %s serves, and rounds learn on it", cfg.model.path,
                            Path(cfg.model.path).absolute(), version)
        version = opts.model_label or version  # a detect-only run's file: its version's name
        try:
            source = source or open_source(opts.source_uri, cfg.source)
            if opts.use_state:
                from edgecl.runtime.versions import TimedCache

                self._registry_names = TimedCache(self.classes.names, ttl_s=2.0, default={})
            names = self._display_names if opts.use_state else backend.meta.names
            sinks = build_sinks(opts, names, cfg.runtime, lambda: getattr(source, "fps", None),
                                getattr(source, "path", None)) + list(opts.sinks)
            if opts.wait_for_state_dir and cfg.server.enabled:  # its console's Live page
                self.live_view = LiveViewSink(self._display_names)
                sinks.append(self.live_view)
            if opts.use_state:
                self._seed_classes(backend.meta.names, Path(path), source)
                if cfg.learner.enabled:  # said once the model loaded (a missing file: its error)
                    from edgecl.continual.round import unlearnable_current

                    problem = unlearnable_current(cfg, self.registry)
                    if problem:  # detection runs; every round would fail the same way
                        log.warning("learner: no round can learn: %s", problem)
                    elif not fresh_network(path):
                        _warn_first_round_size(cfg, self.registry, Path(path), backend.meta.imgsz)
                else:  # before: said nowhere; the console showed the learner 'idle'
                    log.warning("learner.enabled: false: no learning round runs in this run; the "
                                "samples stored and the operator's answers wait for a run with "
                                "it on, or for 'edgecl learn'")
                sinks += self._build_state_parts({} if fresh_network(path) else backend.meta.names)
                if self.memory_sink is not None:  # ids of labels that name no class
                    self.memory_sink.unnamed_labels = bool(
                        getattr(source, "labelled", False) and not getattr(source, "names", None))
                if cfg.server.enabled:
                    self.live_view = LiveViewSink(self._display_names, calibrate=self._calibrated)
                    sinks.append(self.live_view)
                # the registry's current version counts as seen even when --model serves a file
                # for this run: only a version promoted from now on is swapped in
                self.watcher = ModelWatcher(
                    self.registry, infer_opts, self.registry.current(),
                    poll_s=cfg.runtime.swap_poll_s, warmup_runs=cfg.runtime.warmup_runs,
                    check=lambda version, meta: uncertain_band_problem(
                        cfg, meta.extra.get("nms_score_threshold"), version))
                labelled = bool(getattr(source, "labelled", False))
                log.log(logging.WARNING if learns_nothing(cfg, labelled) else logging.INFO, "%s",
                        describe_labelling(cfg, labelled))
                note = self._calibration_note(version, backend.meta.names, labelled)
                if note:  # answers or delivered labels lead to a calibration; pseudo mode alone not
                    alone = cfg.labels.mode == "pseudo" and not labelled
                    log.log(logging.WARNING if alone else logging.INFO, "%s", note)
                band = uncertain_band_problem(
                    cfg, backend.meta.extra.get("nms_score_threshold"), path)
                if band:
                    log.warning("%s", band)
                learn = cfg.learner
                if learn.enabled and self.supervise_hook is None and not (
                        learn.trigger_new_samples or learn.trigger_new_class
                        or learn.trigger_interval_s):  # (a hook such as the demo's starts rounds)
                    log.warning("learner: every trigger is off (learner.trigger_new_samples 0, "
                                "trigger_new_class false, trigger_interval_s 0), so no round "
                                "starts by itself; 'edgecl learn --state-dir %s' runs one",
                                cfg.state_dir)
                unpaced = unpaced_source_warning(cfg, source)
                if unpaced:
                    log.warning("%s", unpaced)
        except BaseException:
            backend.close()
            raise
        merged = None
        if opts.use_state:  # a merge made by another process is seen within 2 s
            from edgecl.runtime.versions import TimedCache

            merged = TimedCache(self.classes.merged, ttl_s=2.0, default={})
        self.loop = InferenceLoop(source, backend, version, sinks=sinks,
                                  back_pressure=cfg.runtime.back_pressure, watcher=self.watcher,
                                  max_frames=opts.max_frames,
                                  sink_queue_size=cfg.runtime.sink_queue_size,
                                  watchdog=self.watchdog, realtime=cfg.runtime.realtime,
                                  merged_classes=merged, merge_iou=cfg.model.iou,
                                  shown_conf=shown_conf)
        self.watchdog.register("supervisor")
        if self.supervisor is not None:
            lrn = cfg.learner
            self.watchdog.register("learner", stuck_after_s=max(lrn.budget_s, lrn.first_round_budget_s)
                                   + 1800.0)

    def _calibrated(self, detections):
        calibrator = self.calibration.calibrator if self.calibration is not None else None
        return calibrator.calibrate_detections(detections) if calibrator is not None else detections

    def health(self) -> dict:
        """Status for ``/healthz``: the watchdog's per-stage view plus what the parts report.

        ``status`` is ``stuck`` when a stage is stuck (``/healthz`` answers 503), ``degraded``
        when a stage or part reports a fault (storing paused, learner backing off or waiting
        for disk room, a supervisor step failing), the run only detects (``detect_only``) or
        is shutting down after a signal (``stopping``), else ``ok``.
        """
        snap = self.watchdog.snapshot()
        status = snap["status"]
        status = getattr(status, "value", status)
        loop = self.loop
        out = {"status": status, "stages": snap.get("stages", {}),
               "model_version": loop.model_version if loop else None,
               "frames": loop.frames_done if loop else 0,
               "uptime_s": round(time.monotonic() - self._started_s, 1)}
        if self.supervisor is not None:
            out["learner"] = self.supervisor.health()
            out["learner_busy"] = self.supervisor.busy
            out["rounds"] = self.supervisor.rounds_done
        if self.memory_sink is not None:
            out["storing"] = self.memory_sink.stats()
        if self.fleet_proc is not None:
            out["fleet"] = {"alive": self.fleet_proc.is_alive(), "pid": self.fleet_proc.pid}
        if self.step_errors:
            out["step_errors"] = dict(self.step_errors)
        if self.opts.wait_for_state_dir:
            out["detect_only"] = self.detect_only_alert()
        if self.interrupted:  # before: 'ok', learner 'training', 1.5 s into a SIGTERM's stop
            out["stopping"] = (f"received {signal.Signals(self.stop_signal or signal.SIGINT).name}:"
                               f" shutting down")
        degraded = (self.step_errors or self.opts.wait_for_state_dir or self.interrupted
                    or (self.memory_sink and self.memory_sink.paused_reason)
                    or out.get("learner", {}).get("state") == "backoff"
                    or out.get("learner", {}).get("waiting_for_room")
                    or out.get("fleet", {}).get("alive") is False)
        if status == "ok" and degraded:
            out["status"] = "degraded"
        return out

    def live(self) -> dict:
        """Figures for the console's Live page (fps, latency, version, memory, learner, alerts).

        ``learner`` is ``{"state", "round", "progress"}``: ``round`` is the device's round
        number (the running round while training, else the last finished one), numbered as the
        model versions and the Forgetting page number rounds, so it goes on across restarts;
        ``progress`` is the running round's estimated progress, 0..1 (see
        :func:`edgecl.runtime.learner.expected_round_s`), ``None`` when no round runs. Once the
        loop's end closed the memory (a stop, or a finite run waiting for its last round),
        ``memory`` and ``queue`` are left out and the rest still shows.
        """
        loop = self.loop
        out = {"fps": loop.delivered_fps() if loop else 0.0,
               "inference_fps": loop.current_fps() if loop else 0.0,
               "latency_ms_p50": loop.latency_p50() if loop else 0.0,
               "latency_ms_p95": loop.latency_p95() if loop else 0.0,
               "model_version": loop.model_version if loop else None,
               "frames": loop.frames_done if loop else 0, "alerts": self._alerts()}
        if self.memory_sink is not None:
            try:
                stats = self.memory_sink.memory_stats()
            except UnavailableError:  # the memory is closed: the rest of the page still shows
                stats = None
            if stats is not None:
                out["memory"] = {"samples": stats.get("samples", 0),
                                 "capacity": self.cfg.memory.capacity,
                                 "bytes": stats.get("bytes", 0),
                                 "max_bytes": self.cfg.memory.max_bytes,
                                 "per_origin": stats.get("per_origin", {})}
                out["queue"] = len(self.memory_sink.queue.pending())
        if self.supervisor is not None:
            from edgecl.runtime.prometheus import DiskRound, with_disk_round

            learner = self.supervisor.health()
            if self._disk_round is None:
                self._disk_round = DiskRound(self.cfg.state_dir)
            # as /metrics shows it: a round 'edgecl learn' finished beside the runtime counts
            shown = with_disk_round({"learner": _round_shown(learner)}, self._disk_round())
            out["learner"] = {"state": learner_state(learner), **shown["learner"]}
        elif self.opts.wait_for_state_dir:  # a detect-only run learns nothing (not 'idle')
            out["learner"] = {"state": "off", "round": None, "progress": None}
        return out

    def vitals(self) -> dict:
        """The running process's figures for ``/metrics``, read at each scrape (the keys
        :func:`edgecl.runtime.prometheus.runtime_families` takes).

        Only counters and cheap reads (:meth:`InferenceLoop.counters`): nothing here waits on
        the inference thread.

        Returns:
            ``status`` (as ``/healthz``), ``stages`` (``{stage: state}``), ``uptime_s``,
            ``frames_captured``, ``frames_processed``, ``frames_dropped`` (back-pressure),
            ``frames_skipped`` and ``reconnects`` (the source's), ``swaps``,
            ``model_refusals`` (promoted versions the loader refused, the loop keeping its
            model; with a registry), ``model_version`` (what the loop serves now),
            ``processed_fps``, ``inference_fps``, ``sinks`` (``{name: {"dropped",
            "errors"}}``), ``step_errors``; with a state directory ``queue_items``,
            ``storing_paused``, ``labelling`` (the labelling pipeline's counts) and ``learner``
            (``{"enabled", "state"`` (``idle``, ``training``, ``backoff``, or what a due round
            waits for: ``waiting_for_room``, ``waiting_for_model``, ``waiting_for_held_out``,
            ``waiting_for_import``), ``"round"``, ``"rounds"``, ``"progress"``,
            ``"apply_errors"}``); ``detect_only`` (True for a run that only detects).
        """
        health = self.health()
        out = {"status": health["status"], "uptime_s": health["uptime_s"],
               "stages": {name: stage.get("state") for name, stage in health["stages"].items()},
               "step_errors": self.step_error_total}
        loop = self.loop
        if loop is not None:
            counts = loop.counters()
            out.update(model_version=loop.model_version,  # the swap's own, not the last sample's
                       frames_processed=counts["processed"], processed_fps=loop.delivered_fps(),
                       inference_fps=loop.current_fps(), swaps=counts["swaps"],
                       frames_captured=counts["captured"], frames_dropped=counts["dropped"],
                       frames_skipped=counts["skipped"], reconnects=counts["reconnects"],
                       sinks=counts["sinks"])
        if self.watcher is not None:
            out["model_refusals"] = self.watcher.refusals
        # always said, 0 or 1: a dashboard tells 'fine' from 'not reported' (before: only 1)
        out["detect_only"] = bool(self.opts.wait_for_state_dir)
        storing = health.get("storing")
        if storing is not None:
            out["storing_paused"] = storing.get("paused_reason") is not None
            out["labelling"] = dict(storing.get("counts") or {})
            out["queue_items"] = len(self.memory_sink.queue.pending())
        learner = health.get("learner")
        if learner is not None:
            out["learner"] = {"enabled": self.cfg.learner.enabled, "state": learner_state(learner),
                              "rounds": learner["rounds"], "apply_errors": learner["apply_errors"],
                              **_round_shown(learner)}
        return out

    def detect_only_alert(self) -> str:
        """What a detect-only run's console says (:func:`detect_only_options`): its first
        alert, and the 503 of each page that needs the state directory."""
        why = self.opts.detect_only_reason or "its state directory cannot be written"
        return (f"detecting only: {why}; nothing is stored, labelled or learnt until "
                f"{self.opts.wait_for_state_dir} can be written again (checked every "
                f"{STATE_DIR_CHECK_S:g} s; the runtime then starts again by itself, in full)")

    def _alerts(self) -> list[str]:
        alerts = [self.detect_only_alert()] if self.opts.wait_for_state_dir else []
        stages = self.watchdog.snapshot().get("stages", {})
        capture = stages.get("capture", {})
        if getattr(capture.get("state"), "value", capture.get("state")) in ("degraded", "stuck"):
            alerts.append(f"camera: {capture.get('detail') or capture.get('state')}")
        if self.memory_sink is not None and self.memory_sink.paused_reason:
            alerts.append(f"storing paused: {self.memory_sink.paused_reason}")
        pointer = self.watcher.pointer if self.watcher is not None else None
        why = self.watcher.refused.get(pointer) if pointer is not None else None
        if why is not None and self.loop is not None:
            alerts.append(f"model version {pointer} is current but does not load; "
                          f"{self.loop.model_version} serves: {why}")
        if self.supervisor is not None:
            learner = self.supervisor.health()
            if learner["state"] == "backoff":
                alerts.append(f"learner backing off: {learner.get('reason')}")
            if learner.get("waiting_for_room"):
                alerts.append(f"learning waits for room: {learner['waiting_for_room']}")
            if learner.get("waiting_for_held_out"):
                alerts.append(learner["waiting_for_held_out"])
            if learner.get("waiting_for_import"):
                alerts.append(learner["waiting_for_import"])
            if learner.get("waiting_for_model"):
                alerts.append(f"learning waits: {learner['waiting_for_model']}")
            if learner.get("last_error"):
                alerts.append(learner["last_error"])
            if learner.get("last_failure") and learner.get("state") != "backoff":
                alerts.append(learner["last_failure"])
            last = self.supervisor.rounds[-1] if self.supervisor.rounds else None
            if last and last.get("status") == "rejected":
                alerts.append(f"round {last.get('round')} rejected: {last.get('reason')}")
        alerts += [f"{name}: {err['error']}" for name, err in self.step_errors.items()]
        return alerts

    def _start_server(self, retrying: bool = False) -> None:
        """Start the console's HTTP server; where it cannot bind (its port held by another
        program, or by a run that just stopped), detection goes on and :meth:`_tick_server`
        tries again every :data:`SERVER_RETRY_S`."""
        if not ((self.opts.use_state or self.opts.wait_for_state_dir)
                and self.cfg.server.enabled):
            return
        from edgecl.runtime.console import build_console_hooks, detect_only_console_hooks
        from edgecl.runtime.server import (StatusServer, allowed_host_names, resolve_token,
                                           url_host)
        from edgecl.web import create_app
        from edgecl.web.app import origin_names

        token = resolve_token(self.cfg.server.token) or None
        hooks = (build_console_hooks(self) if self.opts.use_state
                 else detect_only_console_hooks(self))
        app = create_app(hooks, token=token,
                         allowed_hosts=allowed_host_names(self.cfg.server.allowed_hosts),
                         allowed_origins=origin_names(self.cfg.server.allowed_origins))
        self.server = StatusServer(app, self.cfg.server.host, self.cfg.server.port,
                                   tls_cert=self.cfg.server.tls_cert,
                                   tls_key=self.cfg.server.tls_key,
                                   trusted_proxies=self.cfg.server.trusted_proxies)
        where = f"{url_host(self.cfg.server.host)}:{self.cfg.server.port}"
        try:
            self.server.start()
        except OSError as exc:
            self.server = None
            self._server_retry_at = time.monotonic() + SERVER_RETRY_S
            if retrying:
                log.debug("console still not started on %s (%s)", where, exc.strerror or exc)
                return
            self.server_error = f"console not started on {where}: {exc.strerror or exc}"
            log.error("HTTP server not started on %s (%s): detection goes on without this "
                      "device's console (whatever answers there is another program), tried "
                      "again every %.0f s; queued frames: 'edgecl labels pending --state-dir "
                      "%s'; or set server.port to a free port", where, exc.strerror or exc,
                      SERVER_RETRY_S, self.cfg.state_dir)
            return
        if retrying:
            log.info("console started on %s at last (its port is free now)", where)
            self.server_error = None
        self._server_retry_at = float("inf")
        self.watchdog.register("server", probe=self._server_probe)

    def _tick_server(self) -> bool:
        """Try again to start a console that could not bind its port, once it is time.

        Returns:
            False while it waits (nothing tried).
        """
        if self.server is not None or time.monotonic() < self._server_retry_at:
            return False
        self._start_server(retrying=True)
        return True

    def _server_probe(self):
        from edgecl.runtime.watchdog import StageState

        if self.server is None or not self.server.alive:
            return StageState.DEGRADED, "server thread not running"
        return StageState.IDLE, f"serving on {self.cfg.server.host}:{self.server.port}"

    def supervise(self) -> None:
        """Periodic main-thread work: learning triggers, the caller's hook, runtime metrics.

        Each step is contained: whatever it raises is logged (once per kind of error), counted
        and shown on ``/healthz``; detection never stops for it.
        """
        self.watchdog.beat("supervisor")
        if self._state_dir_gone():
            return
        steps = (("learner", self._tick_learner if self.supervisor is not None else None),
                 ("fleet", self._tick_fleet if self.fleet_proc is not None else None),
                 ("server", self._tick_server if self.server_error else None),
                 ("hook", (lambda: self.supervise_hook(self)) if self.supervise_hook else None),
                 ("metrics", self._maybe_record_runtime if self.monitor is not None else None),
                 ("state_dir", self._check_state_dir_back if self.opts.wait_for_state_dir
                  else None),
                 ("volume", self._check_volume if self.opts.use_state
                  and self.opts.restart_on_read_only else None))
        for name, step in steps:
            if step is None:
                continue
            try:
                did_work = step()
            except Exception as exc:  # a supervisor step: contained, logged and counted
                self._step_failed(name, exc)
            else:
                if did_work is not False:  # INVARIANT: only a step that ran clears its error
                    self.step_errors.pop(name, None)

    def _check_state_dir_back(self) -> bool:
        """A detect-only run: end it (``restart_wanted``) once its state directory can be
        written again; checked every :data:`STATE_DIR_CHECK_S`."""
        now = time.monotonic()
        if now - self._state_dir_checked_s < STATE_DIR_CHECK_S:
            return False
        self._state_dir_checked_s = now
        if state_dir_problem(self.opts.wait_for_state_dir) is not None:
            return True
        log.warning("state directory %s can be written again: the runtime starts again with it "
                    "(storing, labelling, learning)", self.opts.wait_for_state_dir)
        self.restart_wanted = True
        self.loop.request_stop()
        return True

    def _check_volume(self) -> bool:
        """A run in full whose card the kernel remounted read-only under it: end it
        (``restart_wanted``; ``edgecl run`` starts again, only detecting, and in full once the
        card can be written). Before, it went on in full with every write failing: storing
        paused only once a frame was stored, ``/healthz`` and ``/metrics`` said nothing of
        detect-only, and it never came back by itself. Checked every :data:`VOLUME_CHECK_S`."""
        now = time.monotonic()
        if now - self._volume_checked_s < VOLUME_CHECK_S:
            return False
        self._volume_checked_s = now
        if not volume_read_only(self.cfg.state_dir):
            return True
        log.error("state directory %s: its volume is now mounted read-only (a card the kernel "
                  "remounted after errors?): the runtime starts again, only detecting until it "
                  "can be written", self.cfg.state_dir)
        self.restart_wanted = True
        self.loop.request_stop()
        return True

    def _state_dir_gone(self) -> bool:
        """Stop the run when its state directory was moved, replaced or deleted under it.

        Before, the learner and the storing went on at the old path: a new, empty state
        directory grew there, a round trained a model from scratch in it and the loop swapped
        to that model. Now the run stops (one line) and the directory where it went keeps all.
        """
        if self._state_identity is None or self.state_dir_error:
            return bool(self.state_dir_error)
        if path_identity(self.cfg.state_dir) == self._state_identity:
            return False
        self.state_dir_error = (f"the state directory {self.cfg.state_dir} was moved, replaced "
                                f"or deleted while edgecl ran: stopping, so that nothing is "
                                f"written into a new, empty one there (start edgecl again with "
                                f"its state directory where it is now)")
        log.error("%s", self.state_dir_error)
        if self.supervisor is not None:
            self.supervisor.stop()  # a running round must not stage into the new folder
        self.loop.request_stop()
        return True

    def _tick_fleet(self) -> bool:
        """Restart the fleet client when its process died (killed, crashed), after a back-off
        that doubles from 30 s to 10 min; /healthz says degraded meanwhile.

        Returns:
            False while it is dead and waiting (the step's error stays shown).
        """
        if self.fleet_proc.is_alive():
            self._fleet_backoff_s = 0.0
            return True
        now = time.monotonic()
        if self._fleet_restart_at is None:
            self._fleet_backoff_s = min(600.0, max(30.0, 2 * self._fleet_backoff_s))
            self._fleet_restart_at = now + self._fleet_backoff_s
            raise EdgeclError(f"the fleet client (pid {self.fleet_proc.pid}) exited with code "
                              f"{self.fleet_proc.exitcode}; restarting it in "
                              f"{self._fleet_backoff_s:.0f} s")
        if now < self._fleet_restart_at:
            return False
        if self.supervisor is not None and self.supervisor.upgraded_on_disk():
            # a new client would import the new edgecl and stage versions for this runtime,
            # which runs the old one: it waits for a restart, as learning rounds do
            self._fleet_restart_at = float("inf")
            raise EdgeclError("the fleet client is not restarted: edgecl was upgraded on disk "
                              "while this runtime runs (start this edgecl command again)")
        self._fleet_restart_at = None
        self.fleet_proc = self.opts.fleet_client.start(self.cfg)
        return False

    def _tick_learner(self) -> None:
        was_busy = self.supervisor.busy
        self.supervisor.tick()
        learner = self.supervisor.health()
        state = learner_state(learner)  # as /metrics and the console show it
        if self.run_record is not None:
            why = learner.get("reason") if state == "backoff" else (
                learner.get(state) if state.startswith("waiting_for_") else None)
            self.run_record.learner(state, why if isinstance(why, str) else None)
        if state == "backoff":
            self.watchdog.fault("learner", learner.get("reason", "backing off"), waiting=True)
        elif state == "waiting_for_room":  # before: 'idle' here while /healthz was degraded
            self.watchdog.fault("learner", f"learning waits for room: {learner[state]}",
                                waiting=True)
        elif self.supervisor.busy and not was_busy:
            self.watchdog.beat("learner", "round started")
        elif not self.supervisor.busy:  # a due round that waits by design says for what
            self.watchdog.idle("learner", f"a due round waits: {learner[state]}"
                               if state.startswith("waiting_for_") else
                               "learning is off (learner.enabled: false): no round runs"
                               if state == "off" else "no round running")

    def _step_failed(self, name: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        previous = self.step_errors.get(name)
        self.step_errors[name] = {"count": (previous or {}).get("count", 0) + 1, "error": message}
        self.step_error_total += 1
        if previous is None or previous["error"] != message:
            log.error("supervisor step '%s' failed (%s); detection goes on", name, message)

    def _maybe_record_runtime(self) -> bool:
        """Record runtime figures every 10 s; returns whether it was due."""
        now = time.monotonic()
        if now - self._last_runtime_record_s < 10.0:
            return False
        self._last_runtime_record_s = now
        self._record_runtime()
        return True

    def _record_runtime(self) -> None:
        stats = self.memory_sink.memory_stats() if self.memory_sink else {}
        self.monitor.record_runtime(fps=self.loop.current_fps(), latency_ms_p50=self.loop.latency_p50(),
                                    memory_bytes=stats.get("bytes", 0),
                                    memory_samples=stats.get("samples", 0),
                                    model_version=self.loop.model_version)

    def run(self, wait_for_learner: bool = False):
        """Run the loop until its end or a signal.

        Args:
            wait_for_learner: after the stream ends, let a running round finish (the demo).

        Returns:
            The loop's :class:`LoopReport`.
        """
        if self.loop is None:
            self.build()
        if self.watcher is not None:
            self.watcher.start()
        self._start_server()
        if (self.opts.use_state and self.cfg.fleet.enabled and self.opts.fleet_client is not None
                and self.fleet_proc is None):
            self.fleet_proc = self.opts.fleet_client.start(self.cfg)
        # INVARIANT: the close runs under the runtime's own handler too: a second signal (timeout
        # and service managers send two) only asks the loop to stop again; raised inside the
        # close it skipped the server's stop and the lock's release (a segfault at exit)
        with stop_on_signals(self._interrupt):
            try:
                log.info("running: source %s, model %s (Ctrl-C or SIGTERM stops cleanly)",
                         getattr(self.loop.source, "uri", "?"), self.loop.model_version)
                report = self.loop.run(supervise=self.supervise)
                if wait_for_learner and self.supervisor is not None and not self.interrupted:
                    self.supervisor.tick()
                    self.supervisor.wait()
            finally:
                self.close()
        return report

    def _interrupt(self, signum: int = signal.SIGINT) -> None:
        """A signal asked the run to stop: end the loop; a running round is abandoned."""
        if not self.interrupted:
            self.stop_signal = signum
        self.interrupted = True
        self.loop.request_stop()

    def close(self) -> None:
        """Stop every part and release the state directory (idempotent)."""
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.fleet_proc is not None:
            self.fleet_proc.terminate()
            self.fleet_proc.join(5)
            if self.fleet_proc.is_alive():
                self.fleet_proc.kill()
            self.fleet_proc = None
        if self.watcher is not None:
            self.watcher.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.loop is not None:
            self.loop.backend.close()
        elif self.memory_sink is not None:
            self.memory_sink.close()
        if self.previous_detector is not None:
            self.previous_detector.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self._detect_only_lock is not None:
            self._detect_only_lock.release(remove=True)
            self._detect_only_lock = None
