"""``edgecl monitor report | summary``: what was learnt, what was forgotten, how fast it runs."""

from __future__ import annotations

import argparse
import logging

from edgecl.arguments import output_path, print_json_line
from edgecl.commands.common import add_config_args, config_from_args, require_state_dir

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Register the ``monitor`` command group.

    Args:
        sub: the top-level ``add_subparsers`` object.
    """
    p = sub.add_parser("monitor", help="forgetting monitor: report with plots, summary")
    msub = p.add_subparsers(dest="monitor_cmd", metavar="ACTION", required=True)
    rep = msub.add_parser("report", help="write report.md with accuracy matrix, per-class AP "
                                         "over rounds, per-class heatmap and calibration")
    add_config_args(rep)
    rep.add_argument("--out", type=output_path, help="output folder (default STATE/metrics/report)")
    rep.set_defaults(func=report_command)
    summ = msub.add_parser("summary", help="print ACC, BWT, forgetting (per task and per class), "
                                           "D-ECE, FPS, memory")
    add_config_args(summ)
    summ.add_argument("--json", action="store_true", help="print one JSON object")
    summ.set_defaults(func=summary_command)


def report_command(args: argparse.Namespace) -> int:
    """Write the monitor report and print its path.

    Args:
        args: parsed arguments (``state_dir``/``config``, ``out``).

    Returns:
        0.

    Raises:
        MonitorError: when the state directory has no metrics database, or a damaged one (the
            message says how to rebuild it).
    """
    from edgecl.bench.report import write_monitor_report

    cfg = config_from_args(args)
    require_state_dir(cfg)
    state_dir = cfg.state_dir
    monitor = _open_monitor(state_dir)  # warns about rounds the database lacks
    _say_if_serving_elsewhere(state_dir, monitor, monitor.summary().get("model_version"))
    print(write_monitor_report(state_dir, args.out, cfg.labels))
    return 0


def summary_command(args: argparse.Namespace) -> int:
    """Print the monitor summary as text or as one JSON object.

    Args:
        args: parsed arguments (``state_dir``/``config``, ``json``).

    Returns:
        0.

    Raises:
        MonitorError: when the state directory has no metrics database, or a damaged one (the
            message says how to rebuild it).
    """
    from edgecl.runtime.monitor import serving_now

    cfg = config_from_args(args)
    require_state_dir(cfg)
    monitor = _open_monitor(cfg.state_dir)
    summary = monitor.summary()
    _say_if_serving_elsewhere(cfg.state_dir, monitor, summary.get("model_version"))
    summary["serving_version"] = serving_now(cfg.state_dir, summary.get("serving_version"))
    if summary.get("kind") == "classes" or summary.get("class_ap50_95"):
        from edgecl.bench.report import unevaluated_classes

        # before: a class taught with no held-out sample yet was absent without a word
        summary["not_evaluated"] = unevaluated_classes(cfg.state_dir,
                                                       list(summary.get("class_ap50_95") or {}))
    if args.json:
        print_json_line(summary)
        return 0
    fleet = ("fleet_round",) if summary.get("fleet_round") is not None else ()
    for key in ("model_version", "round", *fleet, "kind", "acc", "bwt", "mean_forgetting", "dece",
                "inference_fps", "latency_ms_p50", "memory_samples", "memory_bytes", "n_promoted",
                "n_rejected", "n_rolled_back"):
        # the model's rate (frames it can take), not what the camera delivers
        note = (" (frames a second the model can take; the camera may deliver fewer)"
                if key == "inference_fps" and summary.get(key) is not None else "")
        shown = summary.get(key)
        # rates and milliseconds to one decimal (before: 27.2700 fps, 103.3900 ms)
        text = (f"{shown:.1f}" if key in ("inference_fps", "latency_ms_p50")
                and isinstance(shown, (int, float)) else _text(shown))
        print(f"{key:<16} {text}{note}")
    serving = summary.get("serving_version")
    if serving and serving != summary.get("model_version"):  # promoted by hand: no round
        print(f"{'serving_version':<16} {serving} (the figures here are of "
              f"{_text(summary.get('model_version'))}, the newest version a learning round "
              f"measured)")
    if summary.get("runtime_ts_s") is not None:  # fps, latency and memory are as of this sample
        from edgecl.boot import iso_time

        # UTC, as status, models list and the report write times (before: local, '+0000')
        sampled = iso_time(summary["runtime_ts_s"])
        print(f"{'runtime_sampled':<16} {sampled} (inference_fps, latency and memory as of then)")
    calibration = summary.get("calibration") or {}
    if calibration:
        print(f"{'dece_calibrated':<16} {_text(calibration.get('dece_after'))} "
              f"(before {_text(calibration.get('dece_before'))})")
    for task, value in summary["forgetting"].items():
        print(f"forgetting[{task}] {_text(value)}")
    for name, value in summary.get("class_ap50_95", {}).items():
        print(f"class_ap50_95[{name}] {_text(value)}")
    for name, value in summary.get("class_forgetting", {}).items():
        print(f"class_forgetting[{name}] {_text(value)}")
    if summary.get("not_evaluated"):
        print(f"{'not_evaluated':<16} {', '.join(summary['not_evaluated'])} (no promoted "
              f"version measured these classes: a round measures a class once the replay memory "
              f"holds a held-out image of it; one rolled back since does not count)")
    return 0


def _open_monitor(state_dir):
    """Open the metrics database to read only; one warning when model versions hold rounds
    that it lacks (an emptied database would else read as nothing learnt, every value ``-``).

    Args:
        state_dir: the state directory.

    Returns:
        The :class:`~edgecl.runtime.monitor.Monitor`.

    Raises:
        MonitorError: the database is missing or damaged.
    """
    from edgecl.runtime.monitor import REBUILD_ADVICE, Monitor

    monitor = Monitor(state_dir, create=False, private_copy=True)
    missing = monitor.unrecorded_versions()
    if missing:
        shown = ", ".join(missing if len(missing) <= 4 else [*missing[:3], "...", missing[-1]])
        log.warning("metrics database %s lacks the rounds of %d model version%s (%s): %s",
                    monitor.db_path, len(missing), "" if len(missing) == 1 else "s", shown,
                    REBUILD_ADVICE)
    return monitor


def _say_if_serving_elsewhere(state_dir, monitor, named: str | None) -> None:
    """Warn when ``named``, the version the metrics database's summary names as serving, is
    not the registry's current one while the database holds that one's round (it missed a
    rollback or a promotion). The ``current`` link is read as it is: opening the registry
    would repair the state directory."""
    from pathlib import Path

    from edgecl.models.registry import current_version

    current = current_version(Path(state_dir) / "models")
    if current is None:
        return
    if not named or named == current or current not in monitor.recorded_versions():
        return  # in line; or a version added by hand, or one whose round the database lacks
    log.warning("metrics database %s names %s as the model serving, the model registry %s "
                "(a rollback or promotion it could not record: a full disk or a stop); the "
                "figures follow the database until the next 'edgecl learn' or 'edgecl run' "
                "brings it in line", monitor.db_path, named, current)


def _text(value) -> str:
    """A summary value for humans (``-`` when missing)."""
    if value is None:
        return "-"
    if isinstance(value, float):  # + 0.0: a tiny negative forgetting reads 0.0000, not -0.0000
        return f"{round(value, 4) + 0.0:.4f}"
    return str(value)
