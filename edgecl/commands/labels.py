"""``edgecl labels pending | show ID | answer ID --boxes FILE.json | skip ID``: the operator queue.

``accept ID`` answers with the proposed boxes unchanged, ``reject ID`` is ``skip ID``;
``answered`` lists the latest answers, ``correct ID --boxes FILE.json`` replaces an answer's
boxes and ``withdraw ID`` takes an answer back (its sample leaves the memory);
``import`` (labelled folders) lives in :mod:`edgecl.commands.labels_import`. Every id is checked
by :func:`edgecl.data.answers.valid_item_id` before it names a file.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from edgecl.arguments import input_path, positive_int, print_json_line
from edgecl.commands.common import (add_config_args, config_from_args, former_names_note,
                                    memory_given, new_classes_note, refuse_smaller_memory,
                                    require_state_dir, with_device_memory)
from edgecl.commands.labels_import import add_import_parser
from edgecl.errors import LabelError
from edgecl.logs import one_line


def add_parser(sub) -> None:
    """Register the ``labels`` command group."""
    p = sub.add_parser("labels", help="label frames waiting for an operator, import labelled data")
    lsub = p.add_subparsers(dest="labels_cmd", metavar="ACTION", required=True)
    add_import_parser(lsub)
    pen = lsub.add_parser("pending", help="list frames waiting for a person, by priority")
    add_config_args(pen)
    pen.add_argument("--json", action="store_true", help="print one JSON list")
    pen.add_argument("--limit", type=positive_int, metavar="N",
                     help="list the N highest-priority frames only (default: all)")
    pen.set_defaults(func=pending_command)
    show = lsub.add_parser("show", help="print one item and the path of its image")
    add_config_args(show)
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=show_command)
    ans = lsub.add_parser("answer", help="store an item with your final boxes")
    add_config_args(ans)
    ans.add_argument("id")
    ans.add_argument("--boxes", required=True, metavar="FILE.json", type=input_path,
                     help='[{"class": "name", "xyxy": [x1, y1, x2, y2]}] in pixels of the frame '
                          '(or {"boxes": [...]}); [] = nothing to label here; {"skip": true} '
                          '= skip it')
    ans.add_argument("--json", action="store_true", help="print one JSON object")
    ans.set_defaults(func=answer_command)
    done = lsub.add_parser("answered", help="list the latest answers still in memory (to correct "
                                            "or withdraw one)")
    add_config_args(done)
    done.add_argument("--limit", type=positive_int, default=50, metavar="N",
                      help="most answers listed (default 50)")
    done.add_argument("--json", action="store_true", help="print one JSON list")
    done.set_defaults(func=answered_command)
    fix = lsub.add_parser("correct", help="replace an answered item's boxes (a wrong answer)")
    add_config_args(fix)
    fix.add_argument("id")
    fix.add_argument("--boxes", required=True, metavar="FILE.json", type=input_path,
                     help="the final boxes, as for 'answer' ([] = nothing to label here)")
    fix.add_argument("--json", action="store_true", help="print one JSON object")
    fix.set_defaults(func=correct_command)
    back = lsub.add_parser("withdraw", help="take an answer back: its sample leaves the memory")
    add_config_args(back)
    back.add_argument("id")
    back.add_argument("--json", action="store_true", help="print one JSON object")
    back.set_defaults(func=withdraw_command)
    for name, func, help_text in (("skip", skip_command, "drop an item without storing it"),
                                  ("accept", accept_command, "answer with the proposed boxes"),
                                  ("reject", skip_command, "same as skip")):
        q = lsub.add_parser(name, help=help_text)
        add_config_args(q)
        q.add_argument("id")
        q.add_argument("--json", action="store_true", help="print one JSON object")
        q.set_defaults(func=func)


def _queue(args):
    """The state directory's operator queue.

    Raises:
        EdgeclError: the state directory does not exist (a typo must not create one).
    """
    from edgecl.runtime.labels import OperatorQueue

    cfg = config_from_args(args)
    require_state_dir(cfg)
    return cfg, OperatorQueue.from_config(cfg, create=False)  # reading creates nothing


def _names_now(cfg):
    """The class registry's :class:`~edgecl.models.classes.NamesNow`, to show queued proposals
    as the device names them (:func:`~edgecl.runtime.labels.queue.with_current_names`);
    ``None`` where the registry cannot be read (the items show as they were queued)."""
    from edgecl.errors import EdgeclError
    from edgecl.models.classes import ClassRegistry

    try:
        return ClassRegistry(cfg.state_dir).names_now()
    except EdgeclError:
        return None


def _memory_and_classes(cfg, args: argparse.Namespace, may_add_classes: bool = True,
                        reads_only: bool = False):
    """The memory and the class registry (its lost ids given back first; where one cannot
    come back, a command that may add a class is refused, one that only reads or removes is
    warned); ``reads_only``: the device's memory settings are taken without a word."""
    from edgecl.continual.memory import memory_from_config
    from edgecl.models.classes import ClassRegistry, adopt_memory_class_names

    cfg = with_device_memory(cfg, memory_given(args), say=not reads_only)
    refuse_smaller_memory(cfg)
    memory, classes = memory_from_config(cfg), ClassRegistry(cfg.state_dir)
    try:
        adopt_memory_class_names(memory, classes, refuse_lost=may_add_classes)
    except BaseException:
        memory.close()
        raise
    return memory, classes


def _reading_memory_and_classes(cfg, args: argparse.Namespace):
    """The memory and class registry for a command that only reads: opened read-only where
    the memory folder may not be written (a state directory pulled from a device, a read-only
    mount), as ``memory stats`` opens it."""
    from edgecl.continual.memory import INDEX_FILE, ReplayMemory
    from edgecl.continual.memory.store import is_writable
    from edgecl.models.classes import ClassRegistry

    root = Path(cfg.state_dir) / "memory"
    if not (root / INDEX_FILE).is_file() or is_writable(root):
        return _memory_and_classes(cfg, args, may_add_classes=False, reads_only=True)
    memory_cfg = with_device_memory(cfg, memory_given(args), say=False).memory
    return (ReplayMemory(root, memory_cfg, verify_on_open=False, read_only=True),
            ClassRegistry(cfg.state_dir))


def _describe(item: dict) -> str:
    reasons = ", ".join(f"{k} {v:.2f}" for k, v in item["reasons"].items()) or "-"
    boxes = ", ".join(f"{p['class']}:{p['score']:.2f}" for p in item["proposed"]) or "no boxes"
    now = item.get("priority_now")
    aged = f" (now {now:.2f}: waiting ages it)" if now is not None and round(now, 2) != round(
        item["priority"], 2) else ""
    return one_line(f"{item['id']}  priority {item['priority']:.2f}{aged} ({reasons})  "
                    f"{item['width']}x{item['height']}  [{boxes}]  frame {item['frame_id']}"
                    + (f" ({item['name']})" if item.get("name") else "") + f" from {item['source']}")


def pending_command(args: argparse.Namespace) -> int:
    """List pending items, highest priority first."""
    from edgecl.runtime.labels.queue import with_current_names

    cfg, queue = _queue(args)
    waiting = queue.pending()
    items = with_current_names(waiting[:args.limit], _names_now(cfg))
    if args.json:
        print_json_line(items)
        return 0
    if not items:
        print("no frames waiting for a person")
    for item in items:
        print(_describe(item))
    if len(waiting) > len(items):
        print(f"... and {len(waiting) - len(items)} more waiting (--limit {args.limit})")
    return 0


def show_command(args: argparse.Namespace) -> int:
    """Print one item and its image path."""
    from edgecl.runtime.labels.queue import with_current_names

    cfg, queue = _queue(args)
    item = with_current_names([queue.item(args.id)], _names_now(cfg))[0]
    image = str(queue.image_path(args.id))
    if args.json:
        print_json_line({**item, "image": image})
        return 0
    print(_describe(item))
    for box in item["proposed"]:
        print(f"  proposed {box['class']} {box['xyxy']} score {box['score']:.2f}")
    print(f"image: {image}")
    return 0


def _read_answer(path: str) -> tuple[list, bool]:
    """The answer in a boxes file, read by the rule ``POST /api/labels/ID`` uses.

    Raises:
        LabelError: one line naming the file: missing, unreadable, not UTF-8 JSON, or not an
            answer (:func:`~edgecl.data.answers.parse_answer`).
    """
    from edgecl.data.answers import MAX_ANSWER_BYTES, decode_answer, parse_answer
    from edgecl.input_files import InputFileError, read_input_bytes

    p = Path(path)
    try:  # before: a named pipe was waited on for ever, /dev/zero read up to the bound
        raw = read_input_bytes(p, MAX_ANSWER_BYTES, "a boxes file")
    except FileNotFoundError:
        raise LabelError(f"boxes file not found: {p}") from None
    except InputFileError as exc:  # as the server answers a body over the bound (413)
        raise LabelError(f"boxes file {p}: {exc.strerror}" + (
            " (1,000 boxes take ~60 KB)" if exc.errno == errno.EFBIG else "")) from None
    except OSError as exc:
        raise LabelError(f"cannot read boxes file {p}: {exc.strerror or exc}") from None
    data = decode_answer(raw, f"boxes file {p}")
    try:
        return parse_answer(data)
    except LabelError as exc:
        raise LabelError(f"boxes file {p}: {exc}") from None


def _print_answer(args, result: dict, state_dir: str = "") -> None:
    if args.json:
        _print_former_names(result, state_dir)
        print_json_line(result)
        return
    if result.get("skipped"):
        aside = result.get("set_aside")
        print(f"skipped {result['id']}" + (f" (malformed: its files were set aside in {aside})"
                                           if aside else ""))
        return
    added = new_classes_note(result, state_dir)
    stored = (f"memory sample {result['sample']}" if result["sample"] is not None
              else "declined by the memory's insertion policy")
    print(f"answered {result['id']} with {result['boxes']} box(es) -> {stored}{added}")
    _print_former_names(result, state_dir)


def _print_former_names(result: dict, state_dir: str) -> None:
    """Say on stderr which new classes of an answer a ``classes rename`` freed the name of."""
    note = former_names_note(result, state_dir)
    if note:
        print(note, file=sys.stderr)


def answer_command(args: argparse.Namespace) -> int:
    """Answer an item with the boxes of a JSON file."""
    cfg, queue = _queue(args)
    boxes, skip = _read_answer(args.boxes)
    if skip:
        _print_answer(args, queue.skip(args.id))
        return 0
    queue.item(args.id)
    memory, classes = _memory_and_classes(cfg, args)
    try:
        result = queue.answer(args.id, boxes, memory, classes)
    except LabelError as exc:  # the boxes do not fit this item's frame or the class registry
        raise LabelError(f"boxes file {args.boxes}: {exc}") from None
    finally:
        memory.close()
    _print_answer(args, result, cfg.state_dir)
    return 0


def accept_command(args: argparse.Namespace) -> int:
    """Answer an item with its proposed boxes."""
    cfg, queue = _queue(args)
    queue.item(args.id)
    memory, classes = _memory_and_classes(cfg, args)
    try:
        result = queue.accept(args.id, memory, classes)
    finally:
        memory.close()
    _print_answer(args, result, cfg.state_dir)
    return 0


def skip_command(args: argparse.Namespace) -> int:
    """Drop an item (after finishing an answer a stop cut short: such an item is answered
    already, and the refusal says how to take the answer back)."""
    from edgecl.continual.memory import INDEX_FILE

    cfg, queue = _queue(args)
    if (Path(cfg.state_dir) / "memory" / INDEX_FILE).is_file():
        memory, _ = _reading_memory_and_classes(cfg, args)
        try:
            if not memory.read_only:
                queue.recover(memory)
        finally:
            memory.close()
    _print_answer(args, queue.skip(args.id))
    return 0


def answered_command(args: argparse.Namespace) -> int:
    """List the latest answers still in memory, newest first."""
    from edgecl.errors import ConfigError

    if args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    from edgecl.continual.memory import INDEX_FILE

    from edgecl.continual.memory.store import refuse_lost_index

    cfg, queue = _queue(args)
    answers = []
    root = Path(cfg.state_dir) / "memory"
    if root.is_dir():  # samples without their index: the index was lost, not "no answer yet"
        refuse_lost_index(root)
    if (root / INDEX_FILE).is_file():  # no memory: nothing answered
        memory, classes = _reading_memory_and_classes(cfg, args)
        try:
            answers = queue.answers(memory, classes, limit=args.limit)
        finally:
            memory.close()
    if args.json:
        print_json_line(answers)
        return 0
    if not answers:
        print("no answer in memory yet")
    for a in answers:
        boxes = ", ".join(f"{b['class']} {[round(v) for v in b['xyxy']]}" for b in a["boxes"])
        fixed = f", corrected {a['corrected']}x" if a["corrected"] else ""
        frame = f"  {a['name']}" if a.get("name") else (
            f"  frame {a['frame_id']}" if a.get("frame_id") is not None else "")
        print(one_line(f"{a['id']}{frame}  sample {a['sample']}"
                       f"{' (held out)' if a['held_out'] else ''}{fixed}  [{boxes or 'nothing to label'}]"))
    return 0


def correct_command(args: argparse.Namespace) -> int:
    """Replace an answered item's boxes with those of a JSON file."""
    cfg, queue = _queue(args)
    boxes, skip = _read_answer(args.boxes)
    if skip:
        raise LabelError(f"boxes file {args.boxes}: a correction gives boxes ([] = nothing to "
                         f"label); to take the answer back: edgecl labels withdraw {args.id}")
    memory, classes = _memory_and_classes(cfg, args)
    try:
        result = queue.correct(args.id, boxes, memory, classes)
    except LabelError as exc:
        raise LabelError(f"boxes file {args.boxes}: {exc}") from None
    finally:
        memory.close()
    if args.json:
        _print_former_names(result, cfg.state_dir)
        print_json_line(result)
        return 0
    if result.get("unchanged"):
        print(f"{result['id']}: unchanged, memory sample {result['sample']} already holds these "
              f"{result['boxes']} box(es)")
        return 0
    print(f"corrected {result['id']}: {result['boxes']} box(es), memory sample "
          f"{result['replaced']} -> {result['sample']} (learnt by the next round)"
          + new_classes_note(result, cfg.state_dir))
    _print_former_names(result, cfg.state_dir)
    return 0


def withdraw_command(args: argparse.Namespace) -> int:
    """Take an answer back: remove its sample from the memory."""
    cfg, queue = _queue(args)
    memory, _classes = _memory_and_classes(cfg, args, may_add_classes=False)
    try:
        result = queue.withdraw(args.id, memory)
    finally:
        memory.close()
    if args.json:
        print_json_line(result)
        return 0
    copies = result["snapshot_copies"]
    kept = (f"; {copies} training snapshot(s) of past rounds keep a link to the image until "
            f"they are pruned" if copies else "")
    print(f"withdrew {result['id']}: memory sample {result['sample']} removed{kept}")
    return 0
