"""``edgecl memory stats | verify | remove | export``: inspect, check, prune and export the
replay memory."""

from __future__ import annotations

import argparse
import errno
import json
import re
import shutil
import sys
from pathlib import Path

from edgecl.arguments import input_path, output_path, print_json_line
from edgecl.commands.common import (STATE_FOLDERS, add_config_args, config_from_args,
                                    inside_state_folders, memory_given, refuse_smaller_memory,
                                    require_state_dir, with_device_memory)
from edgecl.config import Config
from edgecl.errors import ConfigError, ReplayMemoryError, StorageError, is_disk_full
from edgecl.logs import one_line

MAX_SAMPLE_ID = 2**63 - 1
"""The largest id a sample can have (SQLite's INTEGER)."""


def add_parser(sub) -> None:
    """Register the ``memory`` command group.

    Args:
        sub: the top-level sub-parsers object.
    """
    p = sub.add_parser("memory", help="inspect, verify, export or remove samples of the replay memory")
    msub = p.add_subparsers(dest="memory_cmd", metavar="ACTION", required=True)
    stats = msub.add_parser("stats",
                            help="sample counts and sizes per class, task and label origin")
    add_config_args(stats)
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=stats_command)
    verify = msub.add_parser("verify", help="check index and files agree; repair what can be")
    add_config_args(verify)
    verify.add_argument("--no-repair", action="store_true", help="only report")
    verify.add_argument("--quick", action="store_true",
                        help="only check each image's size and JPEG markers, skip decoding "
                             "every image (label files are parsed either way)")
    verify.add_argument("--rebuild-index", action="store_true",
                        help="rebuild a damaged or missing index from the sample files and the "
                             "newest snapshot, or a readable one that does not list samples on "
                             "disk (an older copy restored: its rows are kept); the old index "
                             "is kept aside")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=verify_command)
    remove = msub.add_parser("remove", help="delete samples for good (a wrong label, a frame "
                                            "that must not be kept)")
    add_config_args(remove)
    remove.add_argument("ids", nargs="*", type=_sample_id, metavar="SAMPLE",
                        help="sample ids (as 'memory export' or 'labels answered' show them)")
    remove.add_argument("--imported-from", metavar="PATH", type=input_path,
                        help="every sample imported from an image under PATH (a dataset folder "
                             "or one image: an import to take back)")
    remove.add_argument("--no-object", action="store_true",
                        help="with --imported-from: only those with no box (frames an export "
                             "listed before anybody labelled them)")
    remove.add_argument("--json", action="store_true", help="print one JSON object")
    remove.set_defaults(func=remove_command)
    export = msub.add_parser("export", help="write the memory as a YOLO dataset")
    add_config_args(export)
    export.add_argument("--out", required=True, type=output_path, help="output folder (created; must be empty)")
    export.add_argument("--skip-damaged", action="store_true",
                        help="export the intact samples and name the damaged ones (instead of "
                             "refusing; for a memory that cannot be repaired here, e.g. read-only)")
    export.set_defaults(func=export_command)


def _sample_id(text: str) -> int:
    """A sample id argument (a positive integer in ASCII digits, at most SQLite's largest)."""
    if not re.fullmatch(r"[0-9]{1,19}", text) or not 1 <= int(text) <= MAX_SAMPLE_ID:
        raise argparse.ArgumentTypeError(f"a sample id is a positive integer up to "
                                         f"{MAX_SAMPLE_ID}, got {text[:40]!r}")
    return int(text)


def remove_command(args: argparse.Namespace) -> int:
    """Delete samples from the memory (all or none): the ids given, and with
    ``--imported-from`` those imported from images under a path."""
    if bool(args.ids) == bool(args.imported_from):
        raise ConfigError("memory remove: give sample ids or --imported-from PATH (one of them)")
    if args.no_object and not args.imported_from:
        raise ConfigError("memory remove: --no-object goes with --imported-from PATH")
    memory = _open(args)
    try:
        ids = args.ids or imported_from(memory, args.imported_from, args.no_object)
        if not ids:
            what = "with no box " if args.no_object else ""
            print(f"no sample {what}imported from {args.imported_from} in the memory: nothing "
                  f"removed", file=sys.stderr)
            if args.json:
                print_json_line({"removed": [], "snapshot_copies": 0})
            return 0
        removed = memory.remove(ids)
        copies = sum(memory.snapshot_copies(i) for i in removed)
    finally:
        memory.close()
    if args.json:
        print_json_line({"removed": removed, "snapshot_copies": copies})
        return 0
    # snapshots are made by rounds and by 'memory export' (before: all called rounds')
    from edgecl.continual.memory.store import DEFAULT_KEEP_SNAPSHOTS

    kept = (f"; the memory's snapshots (the views rounds trained on and exports read) keep "
            f"{copies} link(s) to their images until newer snapshots replace them (the "
            f"{DEFAULT_KEEP_SNAPSHOTS} newest are kept)" if copies else "")
    print(f"removed sample(s) {', '.join(map(str, removed))}{kept}")
    return 0


def imported_from(memory, path: str, no_object: bool = False) -> list[int]:
    """Ids of the samples imported (``labels import``) from an image at or under ``path``.

    Args:
        memory: the open replay memory.
        path: a dataset folder, an image or a COCO json, as given to ``labels import``
            (resolved; a COCO json names the images it lists, wherever they lie: CVAT's
            ``annotations/instances_default.json`` lists ``../images/...``).
        no_object: only samples with no box.

    Returns:
        Sample ids, ascending.

    Raises:
        ConfigError: ``path`` is a json that is no COCO file.
    """
    from edgecl.errors import link_problem
    from edgecl.frames import LabelOrigin

    broken = link_problem(Path(path).expanduser())
    if broken:  # before: an internal error (RuntimeError: Symlink loop from ...), exit 1
        raise ConfigError(f"--imported-from {broken}")
    root = Path(path).expanduser().resolve()
    listed = None
    if root.is_file() and root.suffix.lower() == ".json":  # before: nothing lies under a file
        from edgecl.data.importers import iter_labelled

        listed = {Path(p).resolve() for p in iter_labelled(root, "coco").image_paths}
    chosen = []
    for record in memory.records():
        source = Path(record.source)
        under = source in listed if listed is not None else (source == root
                                                             or root in source.parents)
        if record.origin is LabelOrigin.IMPORT and under and not (no_object and record.classes):
            chosen.append(record.id)
    return sorted(chosen)


def _open(args: argparse.Namespace, verify: bool = True, device_cfg: Config | None = None):
    """The state directory's memory; read-only (nothing written beside it) where the folder or
    its index may not be written: a state directory pulled from a device, a read-only mount.
    ``device_cfg``: the command's configuration with the device's memory settings already
    applied (:func:`with_device_memory`), for a command that needed them before opening."""
    from edgecl.continual.memory import INDEX_FILE, ReplayMemory
    from edgecl.continual.memory.faults import disk_nearly_full
    from edgecl.continual.memory.store import is_writable, refuse_lost_index

    cfg = config_from_args(args)
    require_state_dir(cfg)
    root = Path(cfg.state_dir) / "memory"
    if not (root / INDEX_FILE).is_file():
        refuse_lost_index(root)
        raise ReplayMemoryError(f"no replay memory at {root} (nothing stored yet?)")
    full = device_cfg or with_device_memory(cfg, memory_given(args), say=verify)
    writable = is_writable(root)
    if verify and writable:  # an open that repairs evicts over the bounds it is given (before:
        # 'memory remove 3 memory.capacity=10' evicted 33 of 43 samples for good)
        refuse_smaller_memory(full)
    try:
        return ReplayMemory(root, full.memory, verify_on_open=verify, read_only=not writable)
    except StorageError as exc:
        if verify or not writable or not disk_nearly_full(root):
            raise
        # a command that only reads: a private copy, as for a read-only folder (before, stats
        # and export refused a full card, where they are what a user looks at first)
        print(f"warning: {exc}; reading a private copy of the index instead", file=sys.stderr)
        return ReplayMemory(root, full.memory, verify_on_open=False, read_only=True)


def _registry_names(args: argparse.Namespace) -> dict[int, str]:
    """The device's class names (``STATE/classes.json``): newer than the memory's own copy,
    which follows them only when a sample is stored; empty without a registry (or with a
    corrupt one: the memory's commands must work without it)."""
    return _registry_classes(args)[0]


def _registry_classes(args: argparse.Namespace) -> tuple[dict[int, str], dict[int, int]]:
    """The device's class names (see :func:`_registry_names`) and the ids merged into another
    class (no class of their own any more), each with the id it was merged into."""
    from edgecl.models.classes import ClassRegistry, ClassRegistryError

    try:
        registry = ClassRegistry(config_from_args(args).state_dir)
        return registry.names(), registry.merged()
    except ClassRegistryError as exc:
        print(f"warning: {exc}; showing the memory's own class names", file=sys.stderr)
        return {}, {}


def _merged_note(class_id: int, merged: dict[int, int], names: dict[int, str]) -> str:
    """A data.yaml comment for a class merged into another (its id keeps its place, as the
    models' outputs do; no label uses it): `` # merged into Person, no labels``."""
    if class_id not in merged:
        return ""
    into = merged[class_id]
    return f"  # merged into {_yaml_text(names.get(into, str(into)))}, no labels"


def stats_command(args: argparse.Namespace) -> int:
    """Print the memory's counts (``--json``: one JSON object as the last line). Reads only:
    nothing is repaired or evicted (that is ``memory verify``'s, and the runtime's at start)."""
    from edgecl.continual.memory.store import recorded_memory_config

    with _open(args, verify=False) as memory:
        stats = memory.stats()
        stats["settings_recorded"] = recorded_memory_config(memory.root) is not None
        # what the next open with these settings evicts (a smaller capacity or max_bytes, a
        # larger holdout_fraction given), and which bound
        stats["over_capacity"] = memory.over_capacity()
        stats["over_bounds"] = memory.bound_problems()
    stats["over_budget_bytes"] = max(0, stats["bytes"] - stats["sample_budget_bytes"])
    names, merged = _registry_classes(args)
    if names:
        stats["names"] = {str(k): v for k, v in names.items()}
        # a class with no image left (its only answer withdrawn) is listed with 0, as
        # 'classes list' shows it
        for cid in sorted(set(names) - set(merged)):
            stats["per_class"].setdefault(str(cid), 0)
            stats["per_class_held_out"].setdefault(str(cid), 0)
        stats["per_class"] = dict(sorted(stats["per_class"].items(), key=lambda kv: int(kv[0])))
        stats["per_class_held_out"] = dict(sorted(stats["per_class_held_out"].items(),
                                                  key=lambda kv: int(kv[0])))
    if args.json:
        print_json_line(stats)
        return 0
    names = stats["names"] or {}
    mib = 1024 * 1024
    print(f"samples {stats['samples']}/{stats['capacity']} ({stats['held_out']} held out), "
          f"{stats['bytes'] / mib:.1f} MiB of the {stats['sample_budget_bytes'] / mib:.1f} MiB "
          f"the samples may take (memory.max_bytes {stats['max_bytes'] / mib:.1f} MiB less "
          f"room for the index), policy {stats['policy']}, seen {stats['seen']}")
    if not stats["settings_recorded"] and not memory_given(args):
        print("  the capacity and size bounds shown are this command's defaults, as no "
              "device has run on this memory yet ('edgecl run' records its own; an older "
              "release or a rebuilt index records none): give --config DEVICE.yaml to see "
              "the device's")
    if stats["over_bounds"]:  # smaller bounds given to this tool
        print(f"  over these settings' bounds: {'; '.join(stats['over_bounds'])}. The "
              f"runtime (or memory verify) evicts samples to fit when it opens the memory "
              f"with these settings, pseudo-labelled ones first, operator answers last")
    for cls, n in stats["per_class"].items():
        print(f"  class {cls} {names.get(cls, '')}: {n} image(s), "
              f"{stats['per_class_held_out'].get(cls, 0)} of them held out for evaluation")
    for task in sorted({*stats["per_task"], *stats["per_task_held_out"]}):
        print(f"  task {task}: {stats['per_task'].get(task, 0)} training, "
              f"{stats['per_task_held_out'].get(task, 0)} held out")
    print("  labels from: " + ", ".join(f"{origin} {n}"
                                        for origin, n in stats["per_origin"].items()))
    return 0


def verify_command(args: argparse.Namespace) -> int:
    """Check (and repair) the memory; exit 1 only when damage could not be repaired."""
    if args.rebuild_index:
        return _rebuild_command(args)
    device_cfg = None
    if not args.no_repair:  # a repair evicts over the bounds it is given: never below the device's
        cfg = config_from_args(args)
        require_state_dir(cfg)
        device_cfg = with_device_memory(cfg, memory_given(args))
        refuse_smaller_memory(device_cfg)
    with _open(args, verify=False, device_cfg=device_cfg) as memory:
        if memory.read_only and not args.no_repair:
            raise StorageError(f"the replay memory {memory.root} cannot be written here, so it "
                               f"cannot be repaired: 'edgecl memory verify --no-repair' checks "
                               f"it without changing anything")
        report = memory.verify(repair=not args.no_repair, deep=not args.quick)
        classes_lines = _check_classes(args, memory)
    said = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON line only
    if report.repaired:
        for line in report.details:
            print(one_line(f"dropped: {line}"), file=said)
        deleted = ([f"{p} (a file of no sample the index lists)" for p in report.orphan_files]
                   + [f"{p} (a write cut short)" for p in report.temp_files])
        for line in deleted[:MAX_NAMED_DELETIONS]:  # before: a count alone
            print(one_line(f"deleted: {line}"), file=said)
        if len(deleted) > MAX_NAMED_DELETIONS:
            print(f"deleted: {len(deleted) - MAX_NAMED_DELETIONS} more such file(s) (--json "
                  f"lists every one)", file=said)
    for line in report.unrepaired:
        print(one_line(f"not repaired: {line}"), file=said)
    unrepaired = [line for line in classes_lines if line.startswith("not repaired")]
    for line in classes_lines:
        print(line, file=said)
    if args.json:
        print_json_line({**report.to_json(), "ok": report.ok and not unrepaired,
                         "class_problems": [line.removeprefix("not repaired: ")
                                            for line in unrepaired],
                         "class_repairs": [line for line in classes_lines
                                           if not line.startswith("not repaired")]})
    else:
        print(report.summary())
        if unrepaired:
            print(f"NOT ok: {len(unrepaired)} class registry problem(s) not repaired (above)")
    return 0 if report.ok and not unrepaired else 1


MAX_NAMED_DELETIONS = 20
"""How many files a repairing ``memory verify`` deleted it names one by one."""


def _check_classes(args: argparse.Namespace, memory) -> list[str]:
    """The class registry against the memory: repairing, a damaged registry is rebuilt from the
    memory's class names (as a run's start does) and the samples that still hold a class merged
    into another (a merge a stop or a full disk cut short) are relabelled; checking only, both
    are named. Lines starting ``not repaired`` are problems left."""
    from edgecl.continual.merges import finish_merges, unfinished_merges
    from edgecl.errors import EdgeclError
    from edgecl.models.classes import ClassRegistry, adopt_memory_class_names

    classes = ClassRegistry(config_from_args(args).state_dir)
    try:
        if not args.no_repair:
            adopt_memory_class_names(memory, classes)
        merged, names = classes.merged(), classes.names()
    except EdgeclError as exc:
        return [f"not repaired: {exc}"]
    left = unfinished_merges(memory, merged)
    if args.no_repair:
        return [f"not repaired: {n} sample(s) still hold class {names.get(c, c)!r}, merged into "
                f"{names.get(merged[c], merged[c])!r} (a merge cut short; 'edgecl memory verify' "
                f"or the next round relabels them)" for c, n in sorted(left.items())]
    done = finish_merges(memory, merged, names) if left else {}
    return [f"relabelled: {n} sample(s) of class {names.get(c, c)!r} as "
            f"{names.get(merged[c], merged[c])!r} (a merge cut short)" for c, n in done.items()]


def _rebuild_command(args: argparse.Namespace) -> int:
    """Rebuild a damaged or missing index (one summary line, or one JSON line)."""
    from edgecl.continual.memory.rebuild import rebuild_index
    from edgecl.continual.memory.store import is_writable
    from edgecl.runtime.labels import answered_provenance
    from edgecl.runtime.lock import holder_pid, import_running

    if args.no_repair:
        raise ReplayMemoryError("--rebuild-index writes a new index: it cannot be combined "
                                "with --no-repair")
    state_dir = Path(config_from_args(args).state_dir)
    root = state_dir / "memory"
    if not root.is_dir():
        raise ReplayMemoryError(f"no replay memory at {root} (nothing stored yet?)")
    if not is_writable(root):
        raise StorageError(f"the replay memory {root} cannot be written here, so its index "
                           f"cannot be rebuilt")
    holder = holder_pid(state_dir)
    if holder is not None or import_running(state_dir):  # it would swap their index away
        who = f"the runtime (pid {holder})" if holder is not None else "an import"
        raise ReplayMemoryError(f"{who} is using {state_dir}: stop it before rebuilding the "
                                f"memory's index")
    report = rebuild_index(root, state_dir, adopt_unlisted=True,
                           provenance=answered_provenance(config_from_args(args)))
    if args.json:
        print_json_line(report.to_json())
    else:
        print(report.summary())
    return 0


def _yaml_text(text: str) -> str:
    """A YAML double-quoted scalar for ``text``: JSON's quoting, with characters outside ASCII
    written as themselves (JSON's ``\\ud83d\\ude97`` pairs for an emoji read back in YAML as two
    lone surrogates, which no file system or class registry accepts)."""
    return json.dumps(text, ensure_ascii=False)


def export_command(args: argparse.Namespace) -> int:
    """Write ``images/``, ``labels/``, ``train.txt``, ``val.txt`` and ``data.yaml``."""
    from edgecl import atomic

    out = Path(args.out)
    state = config_from_args(args).state_dir
    if inside_state_folders(state, out):
        # before: accepted, and every later 'memory verify' reported it as unrepaired damage
        raise ReplayMemoryError(f"--out {out} is the state directory {state} or lies in one "
                                f"of edgecl's folders in it ({', '.join(STATE_FOLDERS)}): export "
                                f"to a folder of its own (one beside them in the state "
                                f"directory will do)")
    if out.exists() and any(out.iterdir()):
        raise ReplayMemoryError(f"export folder {out} is not empty")
    if out.is_symlink() and not out.exists():  # before: 'Not a directory: loop1'
        raise ReplayMemoryError(f"--out {out} is a symbolic link that loops or points nowhere: "
                                f"name a folder")
    lists: dict[bool, list[str]] = {False: [], True: []}
    # all or nothing: a failure leaves no partial export; made first, so that an --out that
    # cannot be made takes no snapshot (before: a refused export made one, pruning an older)
    with atomic.atomic_dir(out) as tmp:
        with _open(args, verify=False) as memory:  # an export changes nothing in the memory
            report = memory.verify(repair=False)
            damaged = set(report.missing_rows + report.corrupt_rows)
            if damaged and not args.skip_damaged:
                fix = ("export with --skip-damaged to leave them out" if memory.read_only else
                       "'edgecl memory verify' drops them, then export again (or export with "
                       "--skip-damaged)")
                raise ReplayMemoryError(
                    f"the replay memory {memory.root} has {len(damaged)} damaged sample(s) "
                    f"({report.details[0]}{', ...' if len(damaged) > 1 else ''}); nothing was "
                    f"exported: {fix}")
            for line in report.details if damaged else ():
                print(one_line(f"skipped: {line}"), file=sys.stderr)
            if memory.read_only or damaged:  # read the samples in place (no snapshot of damage)
                rows = [r for r in memory.records() if r.id not in damaged]
                samples = memory.get([r.id for r in rows])
                source = "read-only memory" if memory.read_only else "memory"
            else:
                snap = memory.snapshot()
                rows, samples = snap.rows, snap.get(snap.ids())
                source = f"snapshot {snap.snapshot_id}"
            names, merged = _registry_classes(args)
            names = names or memory.class_names()
        for sub in ("images", "labels"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        for src in samples:
            for path, sub in ((src.image_path, "images"), (src.label_path, "labels")):
                try:
                    shutil.copyfile(path, tmp / sub / path.name)
                except OSError as exc:
                    if not is_disk_full(exc) and exc.errno not in (errno.EROFS, errno.EFBIG):
                        raise
                    # the copy names its source (a file of the device's own memory), where
                    # it is the export's disk that is full
                    raise OSError(exc.errno, exc.strerror, str(out)) from None
            # relative to the lists (ultralytics reads './' so): the export may be moved
            lists[src.held_out].append(f"./images/{src.image_path.name}")
        atomic.atomic_write_text(tmp / "train.txt", "".join(p + "\n" for p in lists[False]))
        atomic.atomic_write_text(tmp / "val.txt", "".join(p + "\n" for p in lists[True]))
        classes = sorted({c for r in rows for c in r.classes})
        nc = max([*classes, *(names or {}).keys(), -1]) + 1
        all_names = {i: (names or {}).get(i, str(i)) for i in range(nc)}
        val = "val.txt" if lists[True] else "train.txt"
        atomic.atomic_write_text(tmp / "data.yaml", (
            f"train: train.txt\nval: {val}\n"
            f"nc: {nc}\nnames:\n" + "".join(f"  {i}: {_yaml_text(n)}{_merged_note(i, merged, names)}\n"
                                            for i, n in all_names.items())))
    print(one_line(f"exported {len(lists[False])} training and {len(lists[True])} held-out "
                   f"samples ({source}) to {out}"
                   + (f"; {len(damaged)} damaged sample(s) left out" if damaged else "")))
    return 0
