"""``edgecl fleet server | join | simulate``: learn together with other devices over Flower."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgecl.arguments import output_path, print_json_line, train_image_size
from edgecl.commands.common import (
    add_config_args,
    config_from_args,
    require_state_dir,
    require_writable_state_dir,
)
from edgecl.errors import ConfigError, EdgeclError


def add_parser(sub) -> None:
    """Register ``edgecl fleet``."""
    parser = sub.add_parser("fleet", help="fleet learning over Flower (server, join, simulate)")
    fsub = parser.add_subparsers(dest="fleet_command", metavar="COMMAND", required=True)
    server = fsub.add_parser("server", help="run the fleet server (fleet.* keys of --config)")
    add_config_args(server)
    server.set_defaults(func=server_command)
    join = fsub.add_parser("join", help="join a fleet in the foreground (the runtime does this "
                                        "itself with fleet.enabled: true)")
    add_config_args(join)
    join.set_defaults(func=join_command)
    sim = fsub.add_parser("simulate", help="a server and N devices as local processes on loopback")
    sim.add_argument("--devices", type=int, default=3, help="number of devices (default 3)")
    sim.add_argument("--data", default="scenario",
                     help="a tasks.yaml (or its folder), or 'scenario' (one generated task per device)")
    sim.add_argument("--rounds", type=int, default=3, help="fleet rounds (default 3)")
    sim.add_argument("--out", required=True, type=output_path, help="output folder (states, logs, summary.json)")
    sim.add_argument("--imgsz", type=train_image_size, default=64,
                     help="image and model size (default 64)")
    sim.add_argument("--images-per-task", type=int, default=40,
                     help="scenario images per task, all splits (default 40)")
    sim.add_argument("--steps", type=int, default=30, help="training steps per device and round (default 30)")
    sim.add_argument("--first-steps", type=int, default=0,
                     help="training steps of the first round, from a fresh model (default: --steps)")
    sim.add_argument("--budget-s", type=float, default=600.0,
                     help="time budget per device and round, seconds (default 600)")
    sim.add_argument("--batch", type=int, default=8, help="training batch (default 8)")
    sim.add_argument("--seed", type=int, default=0, help="scenario and model seed (default 0)")
    sim.add_argument("--port", type=int, default=0,
                     help="the server's TCP port on 127.0.0.1 (default: a free one, said at start)")
    sim.add_argument("--json", action="store_true",
                     help="print the result as the last stdout line (devices, rounds, per-class AP "
                          "of the joint model and of each device, bytes per round; OUT/summary.json "
                          "has the target and every round too)")
    add_config_args(sim, state_dir=False)
    sim.set_defaults(func=simulate_command)


def server_command(args: argparse.Namespace) -> int:
    """Run the fleet server until ``fleet.rounds`` are done; print one line per round.

    Returns:
        0 when the rounds are done; 128 + the signal's number when Ctrl-C or SIGTERM stopped
        the server first (one line says where the fleet stands).
    """
    from edgecl.fleet.server import ServerStopped, quiet_flower_logs, run_server

    quiet_flower_logs()
    cfg = config_from_args(args)
    device = device_entries(cfg.state_dir)
    if device:  # before: a fleet began inside a device's folder without a word
        print(f"warning: {cfg.state_dir} holds a device's state ({', '.join(device)}): the fleet "
              f"server keeps its global model in {Path(cfg.state_dir) / 'fleet'} beside it; give "
              f"the server a folder of its own (--state-dir) unless that is meant",
              file=sys.stderr, flush=True)
    try:
        records = run_server(cfg, on_round=_print_record)
    except ServerStopped as exc:
        print(exc, file=sys.stderr, flush=True)
        return 128 + (exc.signum or 2)
    print(f"fleet server: {len(records)} round(s) run; global model in {cfg.state_dir}/fleet")
    return 0


def _print_record(rec: dict) -> None:
    print(round_summary(rec), flush=True)


def round_summary(rec: dict) -> str:
    """One line of a fleet round's record (``rounds.jsonl``): its size, classes, and each
    device's update and what it made of the new model; a device that adopted the model without
    having been sampled for the round's training is listed as ``not sampled`` (before, it was
    left out, and read as a device that never got the model).

    Args:
        rec: the round's record as the server writes it.

    Returns:
        ``round N: 36.9 MB, 4 classes; robotA: kept (the new model: promoted), ...``.
    """
    adoption = rec.get("adoption") if isinstance(rec.get("adoption"), dict) else {}
    updates = rec.get("devices") if isinstance(rec.get("devices"), dict) else {}

    def adopted(device: str) -> str:  # before: a device that left during adoption read "kept"
        entry = adoption.get(device)
        status = entry.get("status") if isinstance(entry, dict) else None
        return f" (the new model: {status})" if isinstance(status, str) and status else ""

    def update(device: str) -> str:
        entry = updates.get(device)
        return str(entry.get("update", "?")) if isinstance(entry, dict) else "not sampled"

    devices = ", ".join(f"{d}: {update(d)}{adopted(d)}"
                        for d in sorted(set(updates) | set(adoption), key=str))
    # a round that saved no global model records no class list: "0 classes" read as a fleet
    # that had lost its classes
    names = rec.get("names")
    model = (f"{len(names)} classes" if isinstance(names, list)
             else str(rec.get("global") or "no new global model"))
    size = rec.get("bytes") if isinstance(rec.get("bytes"), (int, float)) else 0
    dominant = rec.get("dominant") if isinstance(rec.get("dominant"), dict) else {}
    share = dominant.get("share")
    heavy = (f"; {dominant.get('device')} holds {100 * share:.0f} % of the average's weight"
             if isinstance(share, (int, float)) else "")
    return (f"round {rec.get('round', '?')}: {size / 1e6:.1f} MB, {model}; "
            f"{devices or 'no update'}{heavy}")


def join_command(args: argparse.Namespace) -> int:
    """Serve the fleet server's rounds from this device until interrupted."""
    from edgecl.fleet.client import client_main
    from edgecl.models.classes import ClassRegistry

    cfg = config_from_args(args)
    require_state_dir(cfg)  # a mistyped --state-dir would join the fleet with nothing
    if not device_entries(cfg.state_dir) and (Path(cfg.state_dir) / "fleet" / "global.json").exists():
        raise EdgeclError(f"{cfg.state_dir} holds a fleet server's state (fleet/global.json) and "
                          f"no device's (no memory/, models/ or classes.json): give the device's "
                          f"state directory (--state-dir)")
    require_writable_state_dir(cfg, "a fleet device")  # else it skipped every round, one by one
    ClassRegistry(cfg.state_dir).names()  # a corrupt registry: one line now, not every round
    client_main(cfg)
    return 0


def device_entries(state_dir) -> list[str]:
    """What of a device's own state a folder holds (``memory/``, ``models/``,
    ``classes.json``): a fleet server's folder holds none of it."""
    state = Path(state_dir)
    return [name + ("/" if name != "classes.json" else "") for name in
            ("memory", "models", "classes.json") if (state / name).exists()]


def simulate_command(args: argparse.Namespace) -> int:
    """Run ``edgecl fleet simulate``; exit 0 when it ran (the target is reported, not enforced)."""
    from edgecl.config import load_config
    from edgecl.fleet.simulate import JOINT_FLOOR, SimSize, check_user_overrides, simulate

    check_user_overrides(args.overrides)
    base = (args.config, tuple(args.overrides))
    load_config(*base)  # a bad file or value: one line now, not from every device's process
    size = SimSize(imgsz=args.imgsz, images_per_task=args.images_per_task, steps=args.steps,
                   first_steps=args.first_steps, budget_s=args.budget_s, batch=args.batch, seed=args.seed)
    def to_stderr(line: str) -> None:  # with --json the last stdout line is the JSON
        print(line, file=sys.stderr, flush=True)

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: a TCP port is 1..65535 (0: a free one)")
    if args.port:
        from edgecl.fleet.server import check_port_free

        check_port_free(f"127.0.0.1:{args.port}")  # taken: one line now, not a server's crash
    summary = simulate(args.data, args.devices, args.rounds, args.out, size=size, base=base,
                       progress=to_stderr if args.json else print, port=args.port)
    if args.json:
        print_json_line({k: summary[k] for k in ("devices", "rounds", "joint_per_class_ap",
                                                 "per_device", "bytes_per_round")})
    else:
        t = summary["target"]
        verdict = {True: "met", False: "not met", None: "not measurable"}[t["met"]]
        lowest = "n/a" if t["min_ratio"] is None else f"{t['min_ratio']:.2f}"
        joint = summary["joint_per_class_ap"]
        unmeasured = [n for n in t["unmeasurable"] if joint.get(n) is None]
        low = [n for n in t["unmeasurable"] if joint.get(n) is not None]
        left_out = "; ".join(part for part in (
            f"joint AP not measured: {', '.join(unmeasured)}" if unmeasured else "",
            f"joint AP below {JOINT_FLOOR}: {', '.join(low)}" if low else "") if part)
        print(f"target (every device, every class >= {t['ratio']} x joint): {verdict} "
              f"(lowest ratio {lowest}; classes left out: {left_out or 'none'})")
    return 0
