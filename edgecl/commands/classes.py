"""``edgecl classes list | rename | merge``: the device's class registry (``STATE/classes.json``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from edgecl.arguments import print_json_line
from edgecl.commands.common import (add_config_args, config_from_args, pad_to_columns,
                                    require_state_dir, with_device_memory)
from edgecl.errors import EdgeclError

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """Register the ``classes`` command group.

    Args:
        sub: the top-level sub-parsers object.
    """
    p = sub.add_parser("classes", help="list, rename or merge the device's classes (ids never "
                                       "change)")
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
    mrg = csub.add_parser("merge", help="merge a class into another (a misspelt name): its "
                                        "samples are relabelled, its name means the other")
    add_config_args(mrg)
    mrg.add_argument("old", help="the class to retire (e.g. a misspelling)")
    mrg.add_argument("into", metavar="target", help="the class it is (the one kept)")
    mrg.add_argument("--json", action="store_true", help="print one JSON object")
    mrg.set_defaults(func=merge_command)


def _registry(args):
    """The device's class registry; a damaged one is restored from its backup, else rebuilt
    from the replay memory's class names, first (as a run's start does), the damaged file kept
    beside it (before, these commands only said to restore it from a backup)."""
    from edgecl.models.classes import ClassRegistry, ClassRegistryError

    cfg = config_from_args(args)
    require_state_dir(cfg)
    classes = ClassRegistry(cfg.state_dir)
    try:
        empty = not classes.names()
    except ClassRegistryError:
        rebuild_classes_from_memory(cfg, classes)
        return classes
    if empty and _memory_names_classes(cfg):  # classes.json and its backup deleted: before,
        # 'classes list' said "no classes yet" while the memory held Car and Person samples
        rebuild_classes_from_memory(cfg, classes)
    return classes


def _memory_names_classes(cfg) -> bool:
    """Whether the replay memory records class names (read without opening it for writing)."""
    from edgecl.continual.memory import INDEX_FILE, ReplayMemory

    root = Path(cfg.state_dir) / "memory"
    if not (root / INDEX_FILE).is_file():
        return False
    try:
        with ReplayMemory(root, cfg.memory, verify_on_open=False, read_only=True) as memory:
            return bool(memory.class_names())
    except (EdgeclError, OSError):
        return False


def rebuild_classes_from_memory(cfg, classes) -> None:
    """Restore a damaged class registry from its backup, else rebuild it from the replay
    memory's names (:func:`~edgecl.models.classes.adopt_memory_class_names`).

    Raises:
        ClassRegistryError: no memory to rebuild it from, or it names no class.
    """
    from edgecl.continual.memory import INDEX_FILE, memory_from_config
    from edgecl.models.classes import adopt_memory_class_names

    if not (Path(cfg.state_dir) / "memory" / INDEX_FILE).is_file():
        if classes.restore_backup() is None:
            classes.names()  # nothing to rebuild from: the registry's own error
        return
    with memory_from_config(cfg) as memory:
        adopt_memory_class_names(memory, classes)


def sample_counts(cfg) -> dict[str, int] | None:
    """Samples per class id in the replay memory, read without repairing anything.

    Args:
        cfg: the deployment configuration.

    Returns:
        class id (str) -> samples holding it; empty when there is no memory yet; None when
        the memory cannot be read here (unreadable, damaged index): unknown, not zero.
    """
    from edgecl.continual.memory import INDEX_FILE, ReplayMemory
    from edgecl.continual.memory.faults import rebuild_hint
    from edgecl.continual.memory.store import is_writable
    from edgecl.errors import EdgeclError

    root = Path(cfg.state_dir) / "memory"
    if not (root / INDEX_FILE).is_file():
        held = root / "images"
        if held.is_dir() and any(held.iterdir()):  # samples on disk, their index lost
            log.warning("sample counts unavailable: the replay memory %s has sample files but "
                        "no index (%s)", root, rebuild_hint(root))
            return None
        return {}
    try:
        memory = ReplayMemory(root, with_device_memory(cfg, say=False).memory,
                              verify_on_open=False, read_only=not is_writable(root))
    except EdgeclError as exc:
        log.warning("sample counts unavailable: %s", exc)
        return None
    try:
        return dict(memory.stats()["per_class"])
    finally:
        memory.close()


def list_command(args: argparse.Namespace) -> int:
    """Print the class registry with sample counts."""
    registry = _registry(args)
    counts = sample_counts(config_from_args(args))
    rows = registry.list(counts)
    listed = {row["id"] for row in rows}
    unknown = sorted(int(k) for k, n in (counts or {}).items() if n and int(k) not in listed)
    if unknown:  # said, not repaired: a listing changes nothing
        log.warning("the replay memory holds samples of class id(s) %s that %s lacks (a copy "
                    "restored from before they were taught?); the next import, answer or start "
                    "of the runtime gives them back where it can", ", ".join(map(str, unknown)),
                    registry.path)
    if args.json:
        print_json_line(rows)
        return 0
    if not rows:
        print("no classes yet (a pretrained model, a label import or an operator answer adds them)")
    for row in rows:
        samples = "-" if row["samples"] is None else row["samples"]
        merged = f"  (merged into {row['merged_into']})" if row.get("merged_into") else ""
        # images holding the class, as 'memory stats' counts them (before: '1 samples')
        print(f"{row['id']:>4}  {pad_to_columns(row['name'], 24)} {samples:>7} image(s)  first "
              f"seen {row['first_seen']}{merged}")
    return 0


def rename_command(args: argparse.Namespace) -> int:
    """Rename one class."""
    from edgecl.data.class_names import same_name_key

    registry = _registry(args)
    before = registry.names()
    class_id = registry.rename(args.old, args.new)
    names = registry.names()
    print(f"class {class_id}: {before[class_id]} -> {names[class_id]}")
    key = same_name_key(names[class_id])
    for other, former in sorted(registry.former_names().items()):
        if other != class_id and any(same_name_key(n) == key for n in former):
            # before: accepted without a word, the name then meaning two ids over time
            print(f"note: {names[class_id]!r} was class {other}'s name before a rename (now "
                  f"{names.get(other, f'class_{other}')!r}); labels and models that name "
                  f"{names[class_id]!r} now mean class {class_id}")
    _rename_in_monitor(args, names)
    return 0


def merge_command(args: argparse.Namespace) -> int:
    """Merge a class into another and relabel the samples that hold it."""
    from edgecl.commands.common import memory_given, refuse_smaller_memory
    from edgecl.continual.memory import INDEX_FILE, memory_from_config
    from edgecl.continual.merges import relabel_class

    registry = _registry(args)
    cfg = config_from_args(args)
    has_memory = (Path(cfg.state_dir) / "memory" / INDEX_FILE).is_file()
    if has_memory:  # before the merge is written (before: refused after it, half merged)
        cfg = with_device_memory(cfg, memory_given(args))
        refuse_smaller_memory(cfg)
    old_id, into_id = registry.merge(args.old, args.into)
    names = registry.names()
    relabelled: list[int] = []
    if has_memory:
        with memory_from_config(cfg) as memory:
            relabelled = relabel_class(memory, old_id, into_id, names)
    result = {"merged": names[old_id], "into": names[into_id], "id": old_id, "into_id": into_id,
              "relabelled": len(relabelled)}
    if args.json:
        print_json_line(result)
        return 0
    # names hold no control character (clean_name): quoted as they are (repr doubled a backslash)
    old, into = f"'{names[old_id]}'", f"'{names[into_id]}'"
    print(f"class {old_id} {old} merged into class {into_id} {into}: "
          f"{len(relabelled)} sample(s) relabelled (the next round learns them); a label naming "
          f"{old} now means {into}, and id {old_id} stays reserved (models "
          f"that have it keep its slot until a round unlearns it)")
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
