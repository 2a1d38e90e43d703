"""``edgecl run``: stream in, detections out, hot-swapping promoted model versions."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from edgecl.arguments import output_path, positive_int, print_json_line
from edgecl.commands.common import add_config_args, config_from_args, refuse_option_and_override
from edgecl.errors import ConfigError, StorageError

log = logging.getLogger(__name__)

STATE_SECTIONS = frozenset({"server", "labels", "learner", "memory", "replay", "gate", "ider",
                            "export", "fleet"})
"""Config sections that act only on a run with a state directory."""


def add_parser(sub) -> None:
    """Register ``edgecl run``."""
    p = sub.add_parser("run", help="run detection on a stream (and learn, when configured)")
    add_config_args(p)
    p.add_argument("--source", help="frame source URI (file://, dir://, v4l2://, csi://, rtsp://, "
                                    "synthetic://, tasks://); default: source.uri (a run without a "
                                    "state directory: the built-in synthetic scenario)")
    p.add_argument("--model", help="model file (.onnx, .engine, .xml, .pt, .yaml); default: the "
                                   "registry's current version, else model.path")
    p.add_argument("--frames", type=positive_int, help="stop after N frames (>= 1)")
    p.add_argument("--out", type=output_path, help="append detections as JSON lines to this file (after a restart "
                                 "frame_id goes on after its last line; run_id names the run)")
    p.add_argument("--save-video", type=output_path, help="write an annotated video to this file")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--quiet", action="store_true", help="no periodic progress lines")
    p.set_defaults(func=run_command)


def _source_uri(args: argparse.Namespace, cfg, use_state: bool) -> str:
    """The source a run reads: ``--source``, else ``source.uri``, else (with no state directory)
    the built-in scenario.

    Raises:
        ConfigError: ``--source`` is empty (an unset shell variable), or a run with a state
            directory names no source: it would store the built-in scenario's labelled frames
            in the device's memory.
    """
    from edgecl.config import BUILT_IN_SOURCE_URI

    example = "e.g. v4l2:///dev/video0, rtsp://HOST/stream or dir:///path/to/frames"
    if args.source is not None:
        if not args.source.strip():
            raise ConfigError(f"--source is empty (an unset variable?): name a frame source, "
                              f"{example}")
        return args.source
    if cfg.source.uri.strip():
        return cfg.source.uri
    if use_state:
        raise ConfigError(f"no frame source: a run with a state directory stores what it reads, "
                          f"so name one with --source URI or source.uri in the config, {example}; "
                          f"--source '{BUILT_IN_SOURCE_URI}' streams the built-in scenario")
    return BUILT_IN_SOURCE_URI


def _refuse_state_dir_with_streamed_folder(state_dir, uri: str) -> None:
    """Refuse a ``dir://`` folder that holds the state directory or lies inside it: the
    device's queue folder (``labels/``) then sat in the dataset's own ``labels/``, and its
    memory's images beside the dataset's (``labels import --state-dir`` refuses the same).

    Raises:
        ConfigError: naming both folders.
    """
    from edgecl.errors import SourceError
    from edgecl.runtime.sources.base import split_uri

    try:
        scheme, path, _ = split_uri(uri, ["dir"])
    except SourceError:
        return  # not a folder stream (a bad URI is refused where the source opens)
    folder = Path(os.path.realpath(Path(path).expanduser()))  # a link loop: refused later
    state = Path(os.path.realpath(Path(state_dir).expanduser()))
    if folder.is_file():
        folder = folder.parent  # a data.yaml: its folder
    if state == folder or folder in state.parents:
        raise ConfigError(f"--state-dir {state_dir} is inside {folder}, the folder {uri} "
                          f"streams: the device's files would mix with the dataset's (its "
                          f"labels/ queue in the dataset's labels/); keep the state directory "
                          f"elsewhere")
    if state in folder.parents:
        raise ConfigError(f"{uri} streams a folder inside the state directory {state_dir}: "
                          f"stream a folder of your own")


def _detect_only(cfg, opts, exc: StorageError):
    """Run detect-only after a start its state directory refused
    (:func:`~edgecl.runtime.app.detect_only_options`), or raise ``exc`` where that cannot be.

    Returns:
        ``(runtime, report)`` of the detect-only run.
    """
    from edgecl.runtime.app import STATE_DIR_CHECK_S, Runtime, detect_only_options

    fallback = detect_only_options(cfg, opts, exc)
    if fallback is None:
        raise exc
    log.error("%s: detecting only, with %s: nothing is stored, labelled or learnt%s, until %s "
              "can be written again (checked every %g s; the runtime then starts again by "
              "itself)", exc, fallback.model,
              " (the console serves the Live page, /healthz and /metrics; its other pages say "
              "why they are empty)"
              if cfg.server.enabled else "", cfg.state_dir, STATE_DIR_CHECK_S)
    runtime = Runtime(cfg, fallback)
    return runtime, runtime.run()


def _start_again() -> int:
    """Start this command again in this process (same pid for a service manager), now that
    its state directory can be written; returns 1 only where that fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError as exc:
        print(f"error: cannot start again ({exc.strerror or exc}); start the runtime again "
              f"yourself", file=sys.stderr)
    return 1


def run_command(args: argparse.Namespace) -> int:
    """Run the device runtime as the command line asks; returns the exit code."""
    from edgecl.runtime.app import RunOptions, Runtime

    from edgecl.config import config_hash

    refuse_option_and_override(args, "source.uri", "--source")
    cfg = config_from_args(args)
    use_state = bool(args.state_dir or args.config)
    fleet_client = None
    if use_state and cfg.fleet.enabled:
        from edgecl.fleet.client import FleetClientStarter

        fleet_client = FleetClientStarter()
    opts = RunOptions(source_uri=_source_uri(args, cfg, use_state), model=args.model,
                      max_frames=args.frames, out=args.out, save_video=args.save_video,
                      quiet=args.quiet, use_state=use_state, fleet_client=fleet_client,
                      restart_on_read_only=True)
    if use_state:
        _refuse_state_dir_with_streamed_folder(cfg.state_dir, opts.source_uri)
    # (fps=0 is no pacing; a bad value is refused after)
    paced = re.match(r"dir://[^?]*\?(.*&)?fps=([0-9]*\.?[0-9]+)(&|$)", opts.source_uri)
    if not cfg.runtime.realtime and paced and float(paced.group(2)) > 0:
        log.warning("%s: its fps paces the folder only with runtime.realtime=true; this run "
                    "reads it as fast as it decodes", opts.source_uri)
    unused = list(dict.fromkeys(o.split("=", 1)[0] for o in getattr(args, "overrides", None) or []
                                if o.split(".", 1)[0] in STATE_SECTIONS))  # each key once
    if unused and not opts.use_state:
        log.warning("%s: ignored, this run keeps no state (no memory, labels, learner or "
                    "console); give --state-dir DIR or --config FILE", ", ".join(unused))
    runtime = Runtime(cfg, opts)
    # the hash of the configuration the runtime (and so each version's manifest) holds: a
    # --model checkpoint sets its model.path (before, the line named another hash)
    log.info("config: %s%s (hash %s)", args.config or "built-in defaults",
             f" + {len(args.overrides)} override(s)" if getattr(args, "overrides", None) else "",
             config_hash(runtime.cfg))
    try:
        report = runtime.run()
    except StorageError as exc:  # a read-only or full card: detect all the same
        runtime, report = _detect_only(cfg, opts, exc)
    if runtime.restart_wanted:  # the card can be written again, or went read-only under it
        return _start_again()
    unreadable = ""
    if report.frames == 0 and report.skipped and not report.source_error:
        # every file of a folder failed: a failure for a supervisor, said last (before: exit 0)
        unreadable = (f"no frame of {opts.source_uri} could be read: {report.skipped} file(s) "
                      f"skipped (why is in the warnings above)")
    if args.json:
        out = report.to_json()
        if unreadable:
            out["source_error"] = unreadable
        if runtime.memory_sink is not None:  # what the labelling pipeline stored, queued, refused
            out["labels"] = runtime.memory_sink.stats()["counts"]
        if runtime.server_error:
            out["server_error"] = runtime.server_error
        if runtime.state_dir_error:
            out["state_dir_error"] = runtime.state_dir_error
        print_json_line(out)
    else:
        print(f"frames={report.frames} fps={report.fps} latency_ms_p50={report.latency_ms_p50} "
              f"p95={report.latency_ms_p95} dropped={report.dropped} skipped={report.skipped} "
              f"swaps={report.swaps} model={report.model_version}")
    if runtime.opts.wait_for_state_dir and not runtime.interrupted:  # a supervisor must see it
        print(f"error: the run only detected: its state directory "
              f"{runtime.opts.wait_for_state_dir} could not be written", file=sys.stderr)
        return 1
    if runtime.state_dir_error:  # a supervisor (systemd) must see a failure
        print(f"error: {runtime.state_dir_error}", file=sys.stderr)
        return 1
    if report.source_error:  # a camera that gave up: a supervisor (systemd) must see a failure
        print(f"error: the source stopped: {report.source_error}", file=sys.stderr)
        return 1
    if unreadable:
        print(f"error: {unreadable}", file=sys.stderr)
        return 1
    return 0
