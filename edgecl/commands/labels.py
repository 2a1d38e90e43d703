"""``edgecl labels pending | accept ID | reject ID``: the operator label queue."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgecl.commands.common import add_config_args, config_from_args, print_json_line
from edgecl.errors import EdgeclError


def add_parser(sub) -> None:
    """Register the ``labels`` command group."""
    p = sub.add_parser("labels", help="review frames waiting for an operator's labels")
    lsub = p.add_subparsers(dest="labels_cmd", metavar="ACTION", required=True)
    pen = lsub.add_parser("pending", help="list frames waiting for review")
    add_config_args(pen)
    pen.add_argument("--json", action="store_true")
    pen.set_defaults(func=pending_command)
    for name, func, help_text in (("accept", accept_command, "store the proposed labels"),
                                  ("reject", reject_command, "drop the frame")):
        q = lsub.add_parser(name, help=help_text)
        add_config_args(q)
        q.add_argument("id")
        q.set_defaults(func=func)


def _queue(args):
    from edgecl.runtime.labels import OperatorQueue

    cfg = config_from_args(args)
    return cfg, OperatorQueue(Path(cfg.state_dir) / "labels", cfg.labels.max_pending)


def pending_command(args: argparse.Namespace) -> int:
    """List pending items."""
    _, queue = _queue(args)
    items = queue.list()
    if args.json:
        print_json_line(items)
        return 0
    if not items:
        print("no frames waiting for review")
    for item in items:
        scores = ", ".join(f"{d['cls']}:{d['score']:.2f}" for d in item["detections"])
        print(f"{item['id']}  frame {item['frame_id']} from {item['source']}  [{scores}]")
    return 0


def accept_command(args: argparse.Namespace) -> int:
    """Accept an item into the replay memory."""
    from edgecl.continual.memory import memory_from_config

    cfg, queue = _queue(args)
    memory = memory_from_config(cfg)
    try:
        sample_id = queue.accept(args.id, memory)
    except KeyError:
        raise EdgeclError(f"no pending label '{args.id}' (see 'edgecl labels pending')") from None
    print(f"accepted {args.id} -> memory sample {sample_id}")
    return 0


def reject_command(args: argparse.Namespace) -> int:
    """Reject an item."""
    _, queue = _queue(args)
    try:
        queue.reject(args.id)
    except KeyError:
        raise EdgeclError(f"no pending label '{args.id}' (see 'edgecl labels pending')") from None
    print(f"rejected {args.id}")
    return 0
