"""``edgecl classes list | rename``: the device's class registry (``STATE/classes.json``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edgecl.arguments import print_json_line
from edgecl.commands.common import (add_config_args, config_from_args, require_state_dir,
                                    with_device_memory)

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Register the ``classes`` command group.

    Args:
        sub: the top-level sub-parsers object.
    """
    p = sub.add_parser("classes", help="list or rename the device's classes (ids never change)")
    csub = p.add_subparsers(dest="classes_cmd", metavar="ACTION", required=True)
    lst = csub.add_parser("list", help="every class: id, name, samples in memory, first seen")
    add_config_args(lst)
    lst.add_argument("--json", action="store_true", help="print one JSON list")
    lst.set_defaults(func=list_command)
    ren = csub.add_parser("rename", help="rename a class (its id stays)")
    add_config_args(ren)
    ren.add_argument("old", help="current class name")
    ren.add_argument("new", help="new class name")
    ren.set_defaults(func=rename_command)


def _registry(args):
    from edgecl.models.classes import ClassRegistry

    cfg = config_from_args(args)
    require_state_dir(cfg)
    return ClassRegistry(cfg.state_dir)


def sample_counts(cfg) -> dict[str, int] | None:
    """Samples per class id in the replay memory, read without repairing anything.

    Args:
        cfg: the deployment configuration.

    Returns:
        class id (str) -> samples holding it; empty when there is no memory yet; None when
        the memory cannot be read here (unreadable, damaged index): unknown, not zero.
    """
    from edgecl.continual.memory import INDEX_FILE, ReplayMemory
    from edgecl.continual.memory.store import is_writable
    from edgecl.errors import EdgeclError

    root = Path(cfg.state_dir) / "memory"
    if not (root / INDEX_FILE).is_file():
        return {}
    try:
        memory = ReplayMemory(root, with_device_memory(cfg).memory, verify_on_open=False,
                              read_only=not is_writable(root))
    except EdgeclError as exc:
        log.warning("sample counts unavailable: %s", exc)
        return None
    try:
        return dict(memory.stats()["per_class"])
    finally:
        memory.close()


def list_command(args: argparse.Namespace) -> int:
    """Print the class registry with sample counts."""
    rows = _registry(args).list(sample_counts(config_from_args(args)))
    if args.json:
        print_json_line(rows)
        return 0
    if not rows:
        print("no classes yet (a pretrained model, a label import or an operator answer adds them)")
    for row in rows:
        samples = "-" if row["samples"] is None else row["samples"]
        print(f"{row['id']:>4}  {row['name']:<24} {samples:>7} samples  first seen {row['first_seen']}")
    return 0


def rename_command(args: argparse.Namespace) -> int:
    """Rename one class."""
    registry = _registry(args)
    before = registry.names()
    class_id = registry.rename(args.old, args.new)
    print(f"class {class_id}: {before[class_id]} -> {registry.names()[class_id]}")
    _rename_in_monitor(args, registry.names())
    return 0


def _rename_in_monitor(args: argparse.Namespace, names: dict[int, str]) -> None:
    """The forgetting monitor (its summary, report and ``/metrics``) shows the new name at once,
    not only after the next round recorded it. A fault is a warning: the registry holds the
    name, and the next round writes it there again."""
    from edgecl.errors import EdgeclError
    from edgecl.runtime.monitor import DB_RELPATH, Monitor

    state_dir = config_from_args(args).state_dir
    if not (Path(state_dir) / DB_RELPATH).is_file():
        return
    try:
        Monitor(state_dir, create=False).set_class_names(names)
    except (EdgeclError, OSError) as exc:
        print(f"warning: the metrics database keeps the old name until the next round: {exc}",
              file=sys.stderr)
