"""``edgecl dataset import``: write any supported dataset as an ultralytics YOLO dataset.

Output layout (what ultralytics trains on, and what ``dir://`` and ``split-tasks`` read)::

    OUT/images/<name>.<ext>     the original image files, byte for byte (<name>: see
                                :func:`output_stem`; ``_1``, ``_2`` ... when taken)
    OUT/images/<name>.png       an image whose suffix ultralytics' loader does not read
                                (``.gif``, ...: not in ``IMG_FORMATS``), or with more than 8
                                bits per sample (a thermal camera's 16-bit PNG or TIFF, whose
                                high byte alone ultralytics would read), re-encoded losslessly
                                from the decoded pixels (8 bits, stretched as edgecl reads it)
    OUT/labels/<name>.txt       YOLO rows (THE label rule's text format)
    OUT/data.yaml               train: images, val: images, names: {id: name} (root: its folder)

Class ids: a YOLO source keeps its ids and names (a folder naming no class: ``class_<id>``,
with a name for every id up to the largest, boxes or not), except that an ignore class or a gap
in its ids leaves no hole (``[car, DontCare, person]`` -> ``{0: car, 1: person}``,
``{0: car, 2: truck}`` -> ``{0: car, 1: truck}``; :func:`~edgecl.data.importers.source_class_order`:
ultralytics refuses a gap, and a class no box can have would be a dead output); VOC and COCO names get ids in the order
of the COCO categories (ignore names left out), then of first appearance. A name met in the
boxes that differs from a known one only in case or separators (VOC ``Car`` beside ``car``,
``traffic_light`` beside ``Traffic Light``) is that class, as ``edgecl labels import`` maps it
(listed in ``classes_matched``). Ignore regions are dropped and counted (see
:mod:`edgecl.data.importers`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from pathlib import Path

import yaml

from edgecl.atomic import atomic_dir, atomic_write_bytes, atomic_write_text
from edgecl.data.class_names import clean_name
from edgecl.data.images import IMAGE_SUFFIXES, deeper_than_8_bits, is_image, pixels_hash
from edgecl.data.importers import (SAME_IMAGE_TWICE, ImportItem, ImportTally, Skip, detect_format,
                                   folder_reading, image_anchors, iter_labelled,
                                   source_root, no_labels_hint,
                                   same_class_as)
from edgecl.data.labels import labels_to_text
from edgecl.errors import ConfigError, LabelError, link_problem, missing_path

log = logging.getLogger(__name__)


def _seed_names(src: Path, fmt: str) -> dict[str, int]:
    """Class name -> id known before reading the boxes (YOLO names, COCO categories), numbered
    0..n-1 in the source's order (:func:`~edgecl.data.importers.source_class_order`; a hole in
    a data.yaml's ids is refused by ultralytics)."""
    from edgecl.data.importers import source_class_order

    return {n: i for i, n in enumerate(source_class_order(src, fmt))}


def _learnable_name(name: str) -> bool:
    """Whether the class registry would take ``name`` (:func:`clean_name`): a dataset's
    declared name it refuses is no class of the output, and the images that use it are
    skipped (before, one such name refused the whole dataset, where ``labels import`` skipped
    its images)."""
    try:
        clean_name(name)
    except LabelError:
        return False
    return True


def _class_of(name: str, ids: dict[str, int], matched: dict[str, str]) -> str:
    """The class a box name is: itself when known, else the one known name that differs from it
    only in case or separators (recorded in ``matched``), else itself as a new class.

    Args:
        name: the box's class name.
        ids: the known class names -> id; a new name is added with the next id.
        matched: box name -> known name, for the names matched so far.

    Returns:
        The known (or new) name whose id the box gets.
    """
    if name in ids:
        return name
    if name in matched:
        return matched[name]
    same = same_class_as(name, ids)
    if same is not None:
        matched[name] = same
        return same
    ids[name] = max(ids.values(), default=-1) + 1
    return name


LAYOUT_FOLDERS = frozenset({"images", "jpegimages", "train", "valid", "val", "test",
                            "obj_train_data", "obj_valid_data", "obj_test_data", "default", "data"})
"""Folder names that only lay a dataset out (ultralytics, VOC, Roboflow, CVAT's subsets), left
out of an output file's name; every other folder below the source names the image's flight,
camera or day, and is kept in it."""


CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Characters an output name never holds (``_`` instead): control characters and the line and
paragraph separators (``str.splitlines`` breaks a list file's line at them)."""


def output_stem(image: Path, root: Path) -> str:
    """The name (without suffix) an imported image gets in the flat output: the folders between
    the source's root and the image, less :data:`LAYOUT_FOLDERS`, joined by ``_`` before its
    own name (``images/flight01/frame_000000.jpg`` -> ``flight01_frame_000000``). Before, only
    the file's own name was kept: frames of twelve flights all named ``frame_NNNNNN`` became
    ``frame_000000``, ``frame_000000_1`` ..., and no ``--group-by`` could keep a flight in one
    split.

    Names over :data:`MAX_STEM_BYTES` are cut, with a digest of the whole name between the
    folders and the image's own name; control characters and line separators become ``_``, as
    do white space at either end and a leading ``#`` (a list file would read another name).

    Args:
        image: the image file.
        root: the source dataset's folder (an image outside it keeps its own name).
    """
    try:
        folders = image.parent.relative_to(root).parts
    except ValueError:
        folders = ()
    # a line break or other control character in a name breaks every list file naming it
    kept = [CONTROL_CHARS.sub("_", f) for f in folders if f.lower() not in LAYOUT_FOLDERS]
    own_name = CONTROL_CHARS.sub("_", image.stem)
    stem = "_".join([*kept, own_name])
    if _bytes(stem) > MAX_STEM_BYTES:
        # a file name holds at most 255 bytes (its atomic write adds a temp suffix): the
        # folders and the name are cut, and a digest of the whole keeps two cut names apart
        digest = hashlib.sha1(stem.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        own = _cut(own_name, MAX_STEM_BYTES // 2)
        prefix = _cut("_".join(kept), MAX_STEM_BYTES - _bytes(own) - len(digest) - 2)
        stem = "_".join(part for part in (prefix, digest, own) if part)
    # a list file strips its lines and takes "#" for a comment: the name's ends are kept clear
    return re.sub(r"^[\s#]|\s$", "_", stem)


MAX_STEM_BYTES = 180
"""Longest output file name, without suffix, in UTF-8 bytes: room for the suffix, a ``_N``
that keeps names apart, and the temp suffix of an atomic write, within the 255 bytes of a name
(folders of 200 characters, or 100 accented ones, made every write of an import fail)."""


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _cut(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, at a character boundary."""
    while text and _bytes(text) > max_bytes:
        text = text[:max(0, min(len(text) - 1, max_bytes))]
    return text


def _unique_name(stem: str, suffix: str, used: set[str]) -> str:
    """A file name whose STEM no earlier image has (in any case): ultralytics pairs
    ``images/x.jpg`` and ``images/x.png`` with the same ``labels/x.txt``."""
    name_stem, k = stem, 1
    while name_stem.lower() in used:
        name_stem, k = f"{stem}_{k}", k + 1
    used.add(name_stem.lower())
    return f"{name_stem}{suffix}"


READ_FORMATS = frozenset(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
"""Pillow format names (lower case) ultralytics trains on: its ``IMG_FORMATS``, which
``verify_image_label`` checks the content's format against, not only the suffix."""


def _content_format(data: bytes) -> str:
    """The image format Pillow finds in a file's bytes, lower case (``"gif"``), as ultralytics'
    ``verify_image_label`` checks it; ``""`` when Pillow cannot tell."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return (image.format or "").lower()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return ""


def _image_file(item: ImportItem) -> tuple[str, bytes]:
    """The suffix and bytes an imported image is written with: the original file when
    ultralytics reads both its suffix and its content (a PNG named ``.jpg`` is read; a GIF
    named ``.jpg`` is not) as edgecl does (8 bits per sample), else a lossless PNG of the
    decoded pixels (the pixels the boxes were read on).

    Args:
        item: the imported image.

    Returns:
        ``(suffix, bytes)``: ``.png`` and the PNG, or the file's own suffix and bytes.

    Raises:
        ConfigError: the pixels cannot be encoded as PNG.
    """
    import cv2

    if is_image(item.source):
        data = item.source.read_bytes()
        if _content_format(data) in READ_FORMATS and not deeper_than_8_bits(data):
            return item.source.suffix, data
    ok, data = cv2.imencode(".png", item.image)
    if not ok:
        raise ConfigError(f"{item.source}: cannot re-encode as PNG ({item.image.shape[1]}x"
                          f"{item.image.shape[0]} pixels)")
    return ".png", data.tobytes()


def _check_out(out: Path) -> None:
    why = link_problem(out)  # a loop, or a link to nothing
    if why:
        raise ConfigError(f"--out {why}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is a file, not a folder; name a new folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"output folder {out} exists and is not empty; name a new folder")


def write_yolo_dataset(src: str | Path, out: str | Path, fmt: str = "auto") -> dict:
    """Convert a YOLO / VOC / COCO dataset into an ultralytics YOLO dataset (module docstring).

    Args:
        src: the source dataset (folder, ``data.yaml`` or COCO json).
        out: the output folder (new or empty).
        fmt: ``auto``, ``yolo``, ``voc`` or ``coco``.

    Returns:
        ``{"imported", "skipped", "reasons", "ignored_regions", "difficult_dropped",
        "empty_boxes", "boxes", "names", "classes_matched", "format", "data_yaml",
        "messages"}`` (``boxes``: per class name, as the class registry stores it;
        ``classes_matched``: source name -> the class it was matched to; ``messages``: the
        first skip reasons; ``merged_splits``: the export's split folders, such as ``train``
        and ``valid``, whose images now form one dataset). An image whose pixels an earlier one
        of the source has (a train image copied into valid) is skipped, named: split into
        tasks, the copies would land on both sides of a split.

    Raises:
        ConfigError: unknown format, missing source, non-empty output, an output inside the
            source, or nothing imported.
        OSError: the disk refused a write.
        In every case ``out`` is left as it was (absent or empty): the dataset is written in
        a hidden folder beside it and renamed onto it at the end.
    """
    src = Path(src).expanduser()
    out = Path(out).expanduser()
    if not src.exists():
        raise ConfigError(missing_path(src))
    _check_out(out)
    root = source_root(src)
    resolved_out = out.resolve()
    fmt = detect_format(src) if fmt == "auto" else fmt
    items = iter_labelled(src, fmt)
    ids = _seed_names(src.resolve(), fmt)
    # a name the registry refuses is no class (its images are skipped below, as 'labels import'
    # does) and leaves no hole, as DontCare; names are written as the registry stores them
    # (stripped, NFC: before, a decomposed accent was written as read, and --tasks missed it)
    learnable = list(dict.fromkeys(clean_name(name) for name in ids if _learnable_name(name)))
    if learnable != list(ids):
        ids = {name: i for i, name in enumerate(learnable)}
    anchors = image_anchors(root, items)
    tally = ImportTally()
    used: set[str] = set()
    matched: dict[str, str] = {}
    first_of: dict[str, Path] = {}  # pixels hash -> the first image with those pixels
    splits: set[str] = set()
    with atomic_dir(out) as tmp:  # all or nothing: a failure half-way leaves no partial dataset
        for item in items:
            if isinstance(item, Skip):
                tally.skip(item.reason, item.message, item.counts_file)
                log.debug("skipped %s", item.message)  # the command lists the first ones once
                continue
            try:  # the class registry's rule: a name a device could not learn is no class
                item = dataclasses.replace(item, names=[clean_name(name) for name in item.names])
            except LabelError as exc:
                tally.skip("bad class name", f"{item.source}: {exc}")
                continue
            holder = folder_reading(resolved_out, item.source, fmt, root, anchors)
            if holder is not None:
                raise ConfigError(f"--out {out} is inside {holder}, which holds the dataset's "
                                  f"images: they would be read twice by the next import; name a "
                                  f"folder elsewhere")
            digest = pixels_hash(item.image)
            if digest in first_of:  # a split would put the copies on both sides of it
                tally.skip(SAME_IMAGE_TWICE, f"{item.source}: {SAME_IMAGE_TWICE} "
                                             f"({first_of[digest]}); the first copy is kept")
                continue
            first_of[digest] = item.source
            splits.update(_split_folder(item.source, root))
            if item.dataset_ids is not None:  # a YOLO folder naming no class keeps its ids
                for name, dataset_id in zip(item.names, item.dataset_ids):  # (each bounded by
                    ids.setdefault(name, dataset_id)                        # the label rule)
            canonical = {name: _class_of(name, ids, matched) for name in item.names}
            box_ids = {name: ids[canonical[name]] for name in item.names}
            suffix, data = _image_file(item)
            name = _unique_name(output_stem(item.source, root), suffix, used)
            atomic_write_bytes(tmp / "images" / name, data)
            atomic_write_text(tmp / "labels" / f"{Path(name).stem}.txt",
                              labels_to_text(item.yolo_labels(box_ids)))
            # counted per class as data.yaml names it (before: CAR, Car and car apart)
            tally.done(dataclasses.replace(item, names=[canonical[n] for n in item.names]))
        if tally.imported == 0:
            raise ConfigError(f"nothing imported from {src} ({fmt}): {tally.skipped} file(s) skipped"
                              + (f", e.g. {tally.messages[0]}" if tally.messages else "")
                              + no_labels_hint(src, dict(tally.reasons)))
        for k in set(range(max(ids.values(), default=-1) + 1)) - set(ids.values()):
            ids[f"class_{k}"] = k  # an id no box uses: ultralytics refuses a hole in the names
        names = {i: n for n, i in sorted(ids.items(), key=lambda kv: kv[1])}
        data = {"train": "images", "val": "images", "names": names}  # no 'path': the yaml's folder
        atomic_write_text(tmp / "data.yaml", yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return {**tally.to_dict(), "names": names, "classes_matched": matched, "format": fmt,
            "data_yaml": str(out / "data.yaml"), "merged_splits": sorted(splits),
            "messages": tally.shown_messages()}


SPLIT_FOLDER_NAMES = frozenset({"train", "training", "valid", "val", "validation", "test",
                                "testing"})
"""Folder names of an export's splits (Roboflow, CVAT, Label Studio)."""


def _split_folder(source: Path, root: Path) -> list[str]:
    """The export's split an image came from (``train``, ``valid``, ``test`` ... as the first
    folder of its path under ``root``), or none."""
    try:
        parts = Path(source).resolve().relative_to(root).parts
    except ValueError:
        return []
    return [parts[0]] if len(parts) > 1 and parts[0].lower() in SPLIT_FOLDER_NAMES else []

