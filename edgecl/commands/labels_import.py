"""``edgecl labels import --state-dir DIR PATH``: add a labelled dataset to a device's memory.

Works whether the device's runtime runs or not (the memory and the class registry take
their own locks; each sample is stored atomically). Running it again on the same folder
imports nothing twice: images already in memory are skipped and counted under
``"already in memory"`` (see :mod:`edgecl.continual.ingest`). A folder without class names
takes the device registry's names for its ids, else keeps ``class_<id>`` and says so
(``unnamed_classes``). A device with no class yet takes the dataset's classes with their ids.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from edgecl.arguments import input_path, print_json_line
from edgecl.commands.common import (add_config_args, config_from_args, dropped_regions_note,
                                    former_names_note, memory_given, new_classes_note,
                                    refuse_smaller_memory, refuse_unreachable_state_dir,
                                    skipped_annotations_note, with_device_memory)
from edgecl.logs import one_line


def add_import_parser(lsub) -> None:
    """Register ``labels import`` under the ``labels`` group.

    Args:
        lsub: the ``labels`` group's sub-parsers object.
    """
    imp = lsub.add_parser("import", help="add a labelled folder (YOLO, VOC, COCO) to the replay memory")
    add_config_args(imp)
    imp.add_argument("path", type=input_path, help="dataset folder, data.yaml or COCO json")
    imp.add_argument("--format", default="auto", choices=("auto", "yolo", "voc", "coco"),
                     help="dataset format (default: auto-detect)")
    imp.add_argument("--relabel", action="store_true",
                     help="replace the stored labels of images already in memory with this "
                          "import's where they differ (a corrected export imported again; an "
                          "operator's answer is kept)")
    imp.add_argument("--skip-background", action="store_true",
                     help="leave out images with no box (a COCO export listing frames nobody "
                          "labelled yet); by default they are learnt as showing no object")
    imp.add_argument("--json", action="store_true",
                     help='print {"imported", "skipped", "reasons", "classes_added", '
                          '"unnamed_classes", ...} as the last line')
    imp.set_defaults(func=import_command)


def model_path_classes(cfg, offered: list[str] | None = None) -> dict[int, str]:
    """The class names of ``model.path``'s checkpoint, which an empty device's class registry
    takes before an import numbers classes, as ``edgecl run`` and ``edgecl models add`` do: an
    import run before the first start numbered them from the dataset, and every round then
    refused the checkpoint ("class id 0 is 'car', but this device's class registry has 'person'
    there"). Read before the import opens anything, so that a refusal leaves a new state
    directory as it was.

    Args:
        cfg: the configuration (``model.path``).
        offered: the class names the import declares (empty: not known before its boxes).

    Returns:
        class id -> name of a trained ``.pt`` checkpoint or of an exported engine (``.onnx``,
        OpenVINO ``.xml``, TensorRT ``.engine``: the device serves those names all the same);
        empty where ``model.path`` is unset or an untrained start (a model yaml).

    Raises:
        ModelLoadError: the file is missing (a typo: the import numbered the classes its own
            way, and the device then refused the model it was meant to serve) or cannot be read.
        LabelError: it names its classes by number only ('0', 'class_0') while the import may
            bring other names, which would become new, untrained classes beside them (nothing
            is imported).
    """
    from edgecl.continual.round import base_checkpoint, not_a_file_problem
    from edgecl.errors import LabelError, ModelLoadError
    from edgecl.models.checkpoint import load_checkpoint
    from edgecl.models.classes import named_by_number

    path = Path(cfg.model.path) if cfg.model.path else None
    if path is None or path.suffix.lower() in (".yaml", ".yml"):
        return {}
    if not path.exists():
        raise ModelLoadError(f"model.path {path}: no such file; an import gives a new device's "
                             f"classes the ids of the model it will serve: correct model.path, "
                             f"or import without it")
    if not path.is_file() and not path.is_dir():
        raise ModelLoadError(not_a_file_problem(path))
    if path.suffix.lower() == ".pt":
        pt = base_checkpoint(cfg)
        if pt is None:
            return {}
        model, meta = load_checkpoint(pt)
        names = {int(k): str(v) for k, v in dict(meta.get("names") or getattr(model, "names", None)
                                                  or {}).items()}
    else:
        pt = path
        names = _engine_names(path)
        if not names:  # a bare engine: the ids of its outputs are nobody's names
            raise LabelError(f"model.path {path} records no class names, so an import cannot "
                             f"give its classes the ids this model detects them by; add the model "
                             f"with its names first ('edgecl models add --promote' of the "
                             f"checkpoint or ONNX it was built from), or import without model.path")
    if named_by_number(names) and (not offered or set(offered) - set(names.values())):
        state = shlex.quote(str(cfg.state_dir))
        shown = ", ".join(map(repr, list(names.values())[:3])) + (", ..." if len(names) > 3 else "")
        raise LabelError(
            f"model.path {pt} names its classes by number only ({shown}): the labels' names "
            f"would become new, "
            f"untrained classes beside them; name them first ('edgecl models add --promote "
            f"{shlex.quote(str(pt))} --state-dir {state}', then 'edgecl classes rename "
            f"--state-dir {state} {shlex.quote(names[min(names)])} NAME' for each), then import")
    return names


def _engine_names(path: Path) -> dict[int, str]:
    """Class id -> name of an exported engine, as ``edgecl run`` reads them (a TensorRT
    engine's from edgecl's header, so that no GPU is needed to read them).

    Raises:
        ModelLoadError: the file cannot be read as a model.
    """
    from edgecl.models.backends import load_backend

    if path.suffix.lower() == ".engine":
        from edgecl.models.engine_file import header_names, read_engine_header

        return header_names(read_engine_header(path), str(path))
    backend = load_backend(path)
    try:
        return {int(k): str(v) for k, v in backend.meta.names.items()}
    finally:
        backend.close()


def _progress_bar(items):
    """A progress bar on stderr while an import runs (shown only on a terminal: a log or a
    pipe gets the summary alone): a large folder took minutes without a word."""
    from tqdm import tqdm

    listed = getattr(items, "image_paths", None)
    return tqdm(total=len(listed) if listed is not None else None, unit="image",
                desc="importing", file=sys.stderr, disable=None, leave=False, mininterval=1.0)


def is_new_device(cfg, classes) -> bool:
    """True when the state directory holds neither a class registry nor a replay memory (an
    import is its first write).

    Args:
        cfg: the configuration (``state_dir``).
        classes: the device's :class:`~edgecl.models.classes.ClassRegistry`.
    """
    from edgecl.continual.memory.store import INDEX_FILE

    return not classes.path.exists() and not (Path(cfg.state_dir) / "memory" / INDEX_FILE).exists()


def _refuse_state_dir_among_images(state_dir, path: str, fmt: str, items) -> None:
    """Refuse a state directory that a folder of the source's images holds: the memory's
    images would be read as the dataset's by its next import (every box twice).

    Raises:
        ConfigError: naming both folders.
    """
    from edgecl.data.importers import detect_format, folder_reading, image_anchors, source_root
    from edgecl.errors import ConfigError

    target, root = Path(state_dir).expanduser().resolve(), source_root(Path(path))
    fmt = detect_format(path) if fmt == "auto" else fmt
    anchors = image_anchors(root, items)
    for image in items.image_paths:
        holder = folder_reading(target, image, fmt, root, anchors)
        if holder is not None:
            raise ConfigError(f"--state-dir {state_dir} is inside {holder}, which holds the "
                              f"dataset's images: the device's memory would be read as images "
                              f"of the dataset by its next import; keep the state directory "
                              f"elsewhere")


def _refuse_source_inside_state_dir(state_dir, path: str) -> None:
    """Refuse a source that is the state directory or lies in one of its own folders (``STATE``,
    ``STATE/memory``, ...): before, the memory was imported into itself, 43 samples became 86,
    held-out images copied into training.

    Raises:
        ConfigError: naming both.
    """
    from edgecl.commands.common import inside_state_folders
    from edgecl.errors import ConfigError

    if inside_state_folders(state_dir, path):
        raise ConfigError(f"{path} is inside the state directory {state_dir}: the device's own "
                          f"memory would be imported into itself; give a dataset folder outside "
                          f"it ('edgecl memory export --out DIR' writes one)")


def import_command(args: argparse.Namespace) -> int:
    """Run ``edgecl labels import``.

    Args:
        args: parsed arguments.

    Returns:
        Exit status 0; 2 when images were found and every one was skipped
        (:func:`nothing_imported`).
    """
    from edgecl.continual.ingest import ingest
    from edgecl.continual.memory import memory_from_config
    from edgecl.continual.round import base_checkpoint
    from edgecl.data.importers import (both_formats_note, detect_format, iter_labelled,
                                       source_class_order, unnamed_class_order,
                                       without_background)
    from edgecl.models.classes import ClassRegistry, adopt_memory_class_names
    from edgecl.runtime.lock import importing

    cfg = with_device_memory(config_from_args(args), memory_given(args))
    refuse_unreachable_state_dir(cfg.state_dir)
    refuse_smaller_memory(cfg)
    _refuse_source_inside_state_dir(cfg.state_dir, args.path)
    items = iter_labelled(args.path, args.format)
    fmt = detect_format(args.path) if args.format == "auto" else args.format  # read once
    both = both_formats_note(args.path, args.format)
    if both:
        print(both, file=sys.stderr)
    if args.skip_background:
        items = without_background(items)
    _refuse_state_dir_among_images(cfg.state_dir, args.path, fmt, items)
    classes = ClassRegistry(cfg.state_dir)
    offered, model_names = None, None
    if is_new_device(cfg, classes):  # refuse before anything is made in the state directory
        offered = source_class_order(args.path, args.format, placeholders=False, ignored=True)
        model_names = model_path_classes(cfg, offered)
    # a runtime on this state directory starts no learning round until the import is done
    with importing(cfg.state_dir), memory_from_config(cfg) as memory:
        adopt_memory_class_names(memory, classes)
        seeded, declared, sparse, unnamed_ids = [], [], "", None
        if not classes.names():
            if offered is None:
                offered = source_class_order(args.path, args.format, placeholders=False,
                                             ignored=True)
            if model_names is None:
                model_names = model_path_classes(cfg, offered)
            checkpoint = base_checkpoint(cfg)  # a trained one: rounds learn on top of it
            seeded = classes.seed(model_names, checkpoint) if model_names else []
            declared = [] if classes.names() else offered
            if not classes.names() and not offered:
                declared, sparse = unnamed_class_order(args.path, args.format, items)
                unnamed_ids = "renumbered" if sparse else "kept" if declared else None
        with _progress_bar(items) as bar:
            report = ingest(items, memory, classes, relabel=args.relabel, declared=declared,
                            progress=bar.update)
        dropped = _drop_queued_copies(cfg, memory) if report.tally.imported else []
    result = report.to_dict()
    if seeded:
        print(f"class registry: {len(seeded)} class(es) from model.path {cfg.model.path} "
              f"({', '.join(seeded[:5])}{', ...' if len(seeded) > 5 else ''})", file=sys.stderr)
    result["queue_items_dropped"] = len(dropped)
    if unnamed_ids:  # a dataset naming no class, on a device with none: its ids kept or not
        result["unnamed_ids"] = unnamed_ids
    result["former_names"] = _former_names_used(classes, args.path, args.format, result)
    nothing = nothing_imported(args.path, result)
    unmeasured = _unmeasured_note(report)
    background = _background_note(result, args.path, fmt, cfg.state_dir)
    if args.json:
        for message in report.tally.shown_messages():  # stdout's last line is the JSON
            print(one_line(f"skipped: {message}"), file=sys.stderr)
        if nothing:  # as every command's --json failure (before: the summary alone)
            result["error"] = nothing.removeprefix("error: ")
        for note in (nothing, other_labels_note(result),
                     former_names_note(result, cfg.state_dir), unmeasured, sparse, background):
            if note:
                print(note, file=sys.stderr)
        print_json_line(result)
        return 2 if nothing else 0
    for message in report.tally.shown_messages():
        print(one_line(f"skipped: {message}"))
    reasons = ", ".join(f"{k} {v}" for k, v in result["reasons"].items()) or "none"
    mapped = ", ".join(f"{src} -> {dst}" for src, dst in result["named_from_registry"].items())
    named = f"; unnamed class ids named as the device's classes: {mapped}" if mapped else ""
    matched = ", ".join(f"{src} -> {dst}" for src, dst in result["classes_matched"].items())
    named += f"; names matched to the device's classes: {matched}" if matched else ""
    unnamed = (f"; unnamed classes kept as {', '.join(result['unnamed_classes'])} (the dataset names "
               f"no classes: add a data.yaml with names, or 'edgecl classes rename')"
               if result["unnamed_classes"] else "")
    relabelled = (f"; {result['relabelled']} image(s) already in memory got this import's labels "
                  f"(--relabel)" if result["relabelled"] else "")
    relabelled += (f"; {result['pseudo_replaced']} pseudo-labelled sample(s) of the same images "
                   f"replaced by these labels" if result["pseudo_replaced"] else "")
    queued = (f"; {len(dropped)} frame(s) waiting in the operator queue are now in memory and "
              f"were taken off it" if dropped else "")
    orphans = skipped_annotations_note(result)
    evicted = (f"; {result['evicted']} stored sample(s) evicted to keep the memory's bounds (its "
               f"capacity, each task's share of the held-out slots, its byte budget: "
               f"'edgecl memory stats' shows what it holds)" if result["evicted"] else "")
    blocks = (f"; the names are numbered frames of {result['frame_sequences']} sequence(s): "
              f"held out in blocks of {result['frames_per_block']} consecutive frames, not "
              f"frame by frame"
              if result.get("frame_sequences") and result["imported"]
              and result["frames_per_block"] > 1 else "")
    held = (f"; held out for evaluation: {result['held_out']} ({_held_out_detail(report)})"
            if result["held_out"] else
            f"; held out for evaluation: none yet (about 1 image in {report.holdout_every} is; a "
            f"later import goes on from here)"
            if report.holdout_every and result["imported"] else "")
    shows_none = (f" ({result['background']} showing no object, learnt as background)"
                  if result["background"] else "")
    print(one_line(f"imported {result['imported']} sample(s){shows_none} from {args.path}{held}; "
                   f"skipped {result['skipped']} ({reasons}){orphans}; {dropped_regions_note(result)}"
                   f"{new_classes_note(result, cfg.state_dir) or '; new classes: none'}"
                   f"{named}{unnamed}{relabelled}{queued}{evicted}{blocks}"))
    for note in (other_labels_note(result), former_names_note(result, cfg.state_dir), unmeasured,
                 sparse, background):
        if note:
            print(note, file=sys.stderr)
    if nothing:
        print(nothing, file=sys.stderr)
        return 2
    return 0


def _background_note(result: dict, path: str, fmt: str, state_dir) -> str:
    """A note when a COCO import (``fmt``: the format read) stored images its file lists with
    no annotation: CVAT and Label Studio list every frame of a task, labelled or not, and such
    a frame is learnt as showing no object (before: stored as background without a word)."""
    n = result.get("background", 0)
    if not n or fmt != "coco":
        return ""
    return (f"note: {n} of the imported images have no annotation in the COCO file and are "
            f"learnt as showing no object; if nobody labelled them yet, take them out: edgecl "
            f"memory remove --imported-from {shlex.quote(str(path))} --no-object --state-dir "
            f"{shlex.quote(str(state_dir))} (a later import: --skip-background)")


def _held_out_detail(report) -> str:
    """What the images an import held out show: ``images showing Car 6, Person 2; 1 showing
    no object`` (a class it stored none of held out is left out: ``--json`` lists zeros)."""
    shown = ", ".join(f"{name} {n}" for name, n in sorted(report.held_out.items())
                      if name and n)
    empty = (f"{report.held_out_empty} showing no object" if report.held_out_empty else "")
    return "; ".join(part for part in (f"images showing {shown}" if shown else "", empty) if part)


def _unmeasured_note(report) -> str:
    """A warning naming the classes the memory holds enough images of, after this import, to
    hold one out, and holds none out of, with why (all in one run of consecutive frames, in
    runs other classes need for training, or imported a few frames at a time) and what
    brings one."""
    names = report.unmeasured()
    if not names:
        return ""
    parts = []
    for name in names[:5]:
        here, total = report.stored_per_class[name], sum(report.in_memory(name))
        if total > here:
            why = (f"{total} in the memory, imported a few at a time, and no run of them drawn "
                   f"for evaluation yet")
        elif report.units_per_class.get(name, 0) <= 1:
            why = f"{total}, all one run of consecutive frames, kept for training"
        else:
            why = f"{total}, in runs of frames that other classes need for training"
        parts.append(f"{name} ({why})")
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    them = "it" if len(names) == 1 else "them"
    return (f"warning: no image of {'; '.join(parts)}{more} is held out for evaluation, so "
            f"learning rounds cannot yet measure how well the device detects {them}: import "
            f"images of {them} from another flight or recording, or answer frames showing "
            f"{them} on the device")


def _drop_queued_copies(cfg, memory) -> list[tuple[str, int]]:
    """Take off the operator queue the frames the import just stored (a person would label
    them for nothing); a queue that cannot be read is left as it is, with a warning."""
    from edgecl.errors import EdgeclError
    from edgecl.runtime.labels import OperatorQueue

    if not (Path(cfg.state_dir) / "labels" / "pending").is_dir():
        return []
    try:
        return OperatorQueue.from_config(cfg).drop_stored(memory)
    except (EdgeclError, OSError) as exc:
        print(f"warning: the operator queue was not checked for frames now in memory: {exc}",
              file=sys.stderr)
        return []


def _former_names_used(classes, path: str, fmt: str, result: dict) -> dict[str, str]:
    """The names this import uses that a class of the device had before a ``classes rename``
    (name -> the class's name now): the rename freed them, so they are new classes here."""
    from edgecl.data.class_names import former_names_in
    from edgecl.data.importers import source_class_order

    former = classes.former_names()
    if not former:
        return {}
    used = [*source_class_order(path, fmt, placeholders=False), *result.get("boxes", {}),
            *result.get("classes_matched", {})]  # boxes: the device's names; these: the dataset's
    return former_names_in(used, classes.names(), former)


def other_labels_note(result: dict) -> str:
    """A note for images the memory holds with labels other than this import's: the stored
    ones were kept, and ``--relabel`` replaces them (before, a corrected export imported again
    said only "already in memory", and the old boxes stayed with nothing to show it).

    Args:
        result: the import's ``--json`` summary.

    Returns:
        One line, or ``""``.
    """
    from edgecl.continual.ingest import ANSWERED_ON_DEVICE, HELD_WITH_OTHER_LABELS

    held = result["reasons"].get(HELD_WITH_OTHER_LABELS, 0)
    answered = result["reasons"].get(ANSWERED_ON_DEVICE, 0)
    notes = []
    renamed = result.get("former_names") or {}
    if held and renamed:  # a rename since the last import: --relabel would undo it
        shown = ", ".join(f"'{old}' (now '{new}')" for old, new in renamed.items())
        notes.append(f"{held} image(s) already in memory carry other labels in this import; "
                     f"their stored labels were kept. This import names {shown} as before a "
                     f"classes rename, and a renamed class's old name is a new class: "
                     f"--relabel would move those boxes to it; rename the class in the dataset "
                     f"too, or leave the stored labels")
    elif held:
        notes.append(f"{held} image(s) already in memory carry other labels in this import; "
                     f"their stored labels were kept: run it again with --relabel to replace "
                     f"them with these")
    if answered:
        notes.append(f"{answered} image(s) an operator answered on the device carry other labels "
                     f"in this import; the answers were kept ('edgecl labels correct' changes "
                     f"one)")
    return "note: " + "; ".join(notes) if notes else ""


def nothing_imported(path: str, result: dict) -> str:
    """The error of an import that stored nothing though it found images, with what to give
    instead (empty when something was stored, when images were already in memory: the same
    import run again, or when a full memory's policy declined them). The command then exits 2, as ``dataset import`` does (before: 0, and a
    provisioning script could not tell).

    Args:
        path: the path the import was given.
        result: the import's ``--json`` summary (``imported``, ``skipped``, ``reasons``).

    Returns:
        One line, or ``""``.
    """
    from edgecl.continual.ingest import (ALREADY_IN_MEMORY, ANSWERED_ON_DEVICE,
                                         DECLINED_BY_POLICY, HELD_WITH_OTHER_LABELS,
                                         TWICE_IN_IMPORT)

    reasons = result["reasons"]
    held = (ALREADY_IN_MEMORY, HELD_WITH_OTHER_LABELS, ANSWERED_ON_DEVICE, TWICE_IN_IMPORT)
    # not a fault: images stored before (the same import run again), or every image a full
    # memory's sampling declined
    if (result["imported"] or not reasons or any(r in reasons for r in held)
            or set(reasons) == {DECLINED_BY_POLICY}):
        return ""
    from edgecl.data.importers import no_labels_hint

    shown = ", ".join(f"{k} {v}" for k, v in reasons.items())
    return (f"error: nothing imported from {path}: every image was skipped ({shown})"
            f"{no_labels_hint(path, reasons)}")
