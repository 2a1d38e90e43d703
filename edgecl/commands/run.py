"""``edgecl run``: stream in, detections out, hot-swapping promoted model versions."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from pathlib import Path

from edgecl.commands.common import add_config_args, config_from_args, print_json_line
from edgecl.config import Config
from edgecl.errors import ModelLoadError

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Register ``edgecl run``."""
    p = sub.add_parser("run", help="run detection on a stream (and learn, when configured)")
    add_config_args(p)
    p.add_argument("--source", help="frame source URI (file://, dir://, v4l2://, csi://, rtsp://, "
                                    "synthetic://); default: source.uri")
    p.add_argument("--model", help="model file (.onnx, .engine, .pt, .yaml); default: the "
                                   "registry's current version, else model.path")
    p.add_argument("--frames", type=int, help="stop after N frames")
    p.add_argument("--out", help="write detections as JSON lines to this file")
    p.add_argument("--save-video", help="write an annotated video to this file")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--quiet", action="store_true", help="no periodic progress lines")
    p.set_defaults(func=run_command)


def inference_options(cfg: Config):
    """Build backend options from the config's model section."""
    from edgecl.models.base import InferenceOptions

    m = cfg.model
    return InferenceOptions(conf=m.conf, iou=m.iou, max_det=m.max_det, threads=m.threads,
                            providers=m.providers, imgsz=m.imgsz)


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
        return Path(cfg.model.path), f"file:{Path(cfg.model.path).name}"
    raise ModelLoadError("no model: pass --model PATH, set model.path, or add and promote one "
                         "with 'edgecl models add PATH' and 'edgecl models promote VERSION'")


@contextlib.contextmanager
def stop_on_signals(stop):
    """Route SIGINT and SIGTERM to ``stop()`` for the duration of the block."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        log.info("received %s; shutting down cleanly", signal.Signals(signum).name)
        stop()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def build_sinks(opts, names: dict) -> list:
    """Create the output sinks a run asks for (JSON lines, video, progress lines).

    Args:
        opts: object with ``out``, ``save_video`` and ``quiet`` attributes.
        names: class index -> name.

    Returns:
        The sinks.
    """
    from edgecl.runtime.sinks import JsonlSink, ProgressSink, VideoSink

    sinks = []
    if opts.out:
        sinks.append(JsonlSink(opts.out, names))
    if opts.save_video:
        sinks.append(VideoSink(opts.save_video, names=names))
    if not opts.quiet:
        sinks.append(ProgressSink(names=names))
    return sinks


def run_command(args: argparse.Namespace) -> int:
    """Run the device runtime as the command line asks; returns the exit code."""
    from edgecl.runtime.app import RunOptions, Runtime

    cfg = config_from_args(args)
    opts = RunOptions(source_uri=args.source or cfg.source.uri, model=args.model,
                      max_frames=args.frames, out=args.out, save_video=args.save_video,
                      quiet=args.quiet, use_state=bool(args.state_dir or args.config))
    report = Runtime(cfg, opts).run()
    if args.json:
        print_json_line(report.to_json())
    else:
        print(f"frames={report.frames} fps={report.fps} latency_ms_p50={report.latency_ms_p50} "
              f"p95={report.latency_ms_p95} dropped={report.dropped} skipped={report.skipped} "
              f"swaps={report.swaps} model={report.model_version}")
    return 0
