"""``edgecl dataset import | split-tasks``: bring your own data (YOLO, VOC, COCO) and split it."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys

from edgecl.arguments import input_path, output_path, print_json_line
from edgecl.commands.common import dropped_regions_note, skipped_annotations_note
from edgecl.errors import StorageError, is_disk_full
from edgecl.logs import one_line


def add_parser(sub) -> None:
    """Register the ``dataset`` command group.

    Args:
        sub: the top-level sub-parsers object.
    """
    p = sub.add_parser("dataset", help="import a labelled dataset (YOLO, VOC, COCO) and split it into tasks")
    dsub = p.add_subparsers(dest="dataset_cmd", metavar="ACTION", required=True)
    imp = dsub.add_parser("import", help="write an ultralytics YOLO dataset from a YOLO, VOC or COCO one")
    imp.add_argument("src", type=input_path, help="dataset folder, data.yaml or COCO json")
    imp.add_argument("--out", required=True, type=output_path, help="output folder (new or empty)")
    imp.add_argument("--format", default="auto", choices=("auto", "yolo", "voc", "coco"),
                     help="source format (default: auto-detect)")
    imp.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    imp.set_defaults(func=import_command)
    split = dsub.add_parser("split-tasks", help="write a class-incremental tasks.yaml over a YOLO dataset")
    split.add_argument("dataset", type=input_path, help="YOLO dataset folder or data.yaml (with class names)")
    split.add_argument("--tasks", required=True,
                       help='classes of each task, tasks separated by ";" '
                            '(e.g. "car,other_vehicle;bicycle;person")')
    split.add_argument("--group-by", metavar="REGEX",
                       help="images whose names give the same first group land in the same split "
                            r"(e.g. '^(\d+_\d+)_' for day and altitude)")
    split.add_argument("--ratios", default="0.7,0.1,0.2",
                       help="train,val,test weights, normalised to sum 1 (default 0.7,0.1,0.2)")
    split.add_argument("--seed", type=int, default=0,
                       help="which of the splits about as balanced as the best one found to take "
                            "(default 0; the output says how many there were)")
    split.add_argument("--out", required=True, type=output_path, metavar="FILE.yaml", help="the tasks.yaml to write")
    split.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    split.set_defaults(func=split_command)


@contextlib.contextmanager
def _writing(out: str):
    """Name the output in a write failure that names no file, or that names a file of the
    half-built output (a full disk: ``ENOSPC``; nothing of it is kept)."""
    try:
        yield
    except OSError as exc:
        if exc.filename and not is_disk_full(exc):
            raise
        raise StorageError(f"cannot write {out}: {exc.strerror or exc}; nothing was "
                           f"written") from None


def import_command(args: argparse.Namespace) -> int:
    """Run ``edgecl dataset import``.

    Args:
        args: parsed arguments.

    Returns:
        Exit status 0.
    """
    from edgecl.data.convert import write_yolo_dataset
    from edgecl.data.importers import both_formats_note

    both = both_formats_note(args.src, args.format)
    if both:
        print(both, file=sys.stderr)
    with _writing(args.out):
        result = write_yolo_dataset(args.src, args.out, args.format)
    if args.json:
        for message in result["messages"]:  # as labels import: stdout's last line is the JSON
            print(one_line(f"skipped: {message}"), file=sys.stderr)
        if len(result["merged_splits"]) > 1:
            print(merged_splits_note(result["merged_splits"]), file=sys.stderr)
        print_json_line({k: v for k, v in result.items() if k != "messages"})
        return 0
    for message in result["messages"]:
        print(one_line(f"skipped: {message}"))
    reasons = ", ".join(f"{k} {v}" for k, v in result["reasons"].items()) or "none"
    boxes = ", ".join(f"{k} {v}" for k, v in result["boxes"].items())
    shows_none = (f", {result['background']} of them showing no object (empty label files)"
                  if result.get("background") else "")
    print(one_line(f"imported {result['imported']} image(s){shows_none} from {args.src} "
                   f"({result['format']}) -> {result['data_yaml']}"))
    orphans = skipped_annotations_note(result)
    print(f"skipped {result['skipped']} ({reasons}){orphans}; {dropped_regions_note(result)}")
    print(f"boxes: {boxes}")
    if result["classes_matched"]:
        matched = ", ".join(f"{k} -> {v}" for k, v in result["classes_matched"].items())
        print(f"names matched to a class differing only in case or separators: {matched}")
    if len(result["merged_splits"]) > 1:
        print(merged_splits_note(result["merged_splits"]), file=sys.stderr)
    return 0


def merged_splits_note(splits: list[str]) -> str:
    """The line that says an export's splits became one dataset.

    Args:
        splits: the export's split folders (``train``, ``valid`` ...).
    """
    return (f"note: the export's splits ({', '.join(splits)}) are one dataset now (its data.yaml "
            f"trains and validates on all of it); 'edgecl dataset split-tasks' makes the "
            f"train/val/test splits (--group-by keeps frames of one flight together)")


def split_command(args: argparse.Namespace) -> int:
    """Run ``edgecl dataset split-tasks``.

    Args:
        args: parsed arguments.

    Returns:
        Exit status 0.
    """
    from edgecl.data.splits import split_tasks

    with _writing(args.out):
        result = split_tasks(args.dataset, args.tasks, args.out, group_by=args.group_by,
                             ratios=args.ratios, seed=args.seed)
    if args.json:
        _split_warnings(args, result)  # a log keeps them; the JSON holds them too
        print_json_line(result)
        return 0
    for task in result["tasks"]:
        print(f"{task['name']} ({', '.join(task['classes'])}): train {task['train']} / val {task['val']} "
              f"/ test {task['test']}")
    print(f"{result['groups']} group(s); {result['unassigned']} image(s) hold no task's class; "
          f"{result['bad_labels']} left out (missing, refused or shared label files, or a name "
          f"a list cannot hold) -> {result['tasks_yaml']}")
    choices = result["balanced_splits"]
    print(f"--seed {args.seed} took split {result['split_rank']} of the {choices} about equally "
          f"balanced one(s), 1 being the most balanced" + ("; every seed gives it" if choices == 1 else ""))
    _split_warnings(args, result)
    return 0


def _split_warnings(args: argparse.Namespace, result: dict) -> None:
    """Warn on stderr of a split frame by frame over what look like video frames, and of names
    that ``--group-by`` did not match."""
    seq = result["sequence_names"]
    if seq:
        one = seq["sequences"] == 1  # or a camera's numbered photos: said as a condition
        print(f"warning: the image names look like frames of "
              f"{'one recording' if one else str(seq['sequences']) + ' sequences'} "
              f"({seq['frames']} frames, e.g. {seq['example']}): "
              f"{'if they are, ' if one else ''}split frame by frame, a test "
              f"frame has near twins in train and test scores read too high; "
              f"--group-by {shlex.quote(seq['group_by'])} "
              + ("splits it in blocks of 10 consecutive frames (a test split of other "
                 "recordings is better still)" if one else "keeps each sequence in one split"),
              file=sys.stderr)
    shown = 10
    for item in result["left_out"][:shown]:  # before: a count alone, and exit 0
        print(f"warning: {item['image']} left out: {item['why']}", file=sys.stderr)
    if result["bad_labels"] > shown and result["left_out"]:
        print(f"warning: ... {result['bad_labels'] - shown} more left out ('--json' lists "
              f"{len(result['left_out'])} with why)", file=sys.stderr)
    from edgecl.data.splits import parse_ratios

    if parse_ratios(args.ratios)[1] > 0:
        for task in result["tasks"]:
            if not task["val"]:  # before: 'val 0' in the table, and no word
                print(f"warning: task {task['name']} gets no val images: its images fall in too "
                      f"few groups for the val share of --ratios {args.ratios}", file=sys.stderr)
    if args.group_by and result["ungrouped"]:
        print(f"warning: {result['ungrouped']} image name(s) did not match --group-by "
              f"'{args.group_by}'; each of them is its own group (split frame by frame)",
              file=sys.stderr)
