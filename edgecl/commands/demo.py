"""``edgecl demo``: the built-in class-incremental demo, end to end on this machine."""

from __future__ import annotations

import argparse

from edgecl.arguments import print_json_line, train_image_size
from edgecl.commands.common import add_config_args, check_state_dir_option


def add_parser(sub) -> None:
    """Register ``edgecl demo``."""
    p = sub.add_parser("demo", help="learn the built-in scenario task by task on this device")
    add_config_args(p, state_dir=False)
    p.add_argument("--state-dir", default="state/demo",
                   help="state directory for the demo (wiped first if a previous demo made it; "
                        "default: %(default)s)")
    p.add_argument("--tasks", type=int, default=5,
                   help="scenario tasks, 2 classes each (default: %(default)s)")
    p.add_argument("--images-per-task", type=int, default=60,
                   help="images per task, all splits (default: %(default)s)")
    p.add_argument("--imgsz", type=train_image_size, default=160,
                   help="image size of scenario and model in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="scenario seed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(func=demo_command)


DEMO_OPTION_KEYS = {"state_dir": "--state-dir", "model.imgsz": "--imgsz",
                    "learner.imgsz": "--imgsz"}
"""Settings the demo takes from its own options (key -> option)."""


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when at least one round promoted a model."""
    import dataclasses

    from edgecl.bench.demo import DEMO_OVERRIDES, demo_config, run_demo
    from edgecl.config import load_config

    from edgecl.errors import ConfigError

    for text in args.overrides:  # the demo's own options set these: an override would be lost
        option = DEMO_OPTION_KEYS.get(text.split("=", 1)[0])
        if option:
            raise ConfigError(f"{text}: the demo sets this from {option}; use that option instead")
    state_dir = check_state_dir_option(args.state_dir)
    cfg = load_config(args.config, [*DEMO_OVERRIDES, *args.overrides])
    cfg = demo_config(dataclasses.replace(cfg, state_dir=state_dir), args.imgsz)
    summary = run_demo(cfg, tasks=args.tasks, images_per_task=args.images_per_task,
                       imgsz=args.imgsz, seed=args.seed)
    if args.json:
        print_json_line(summary)
    return 0 if summary["promoted"] > 0 else 1
