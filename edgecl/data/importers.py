"""Read labelled datasets a user brings: ultralytics YOLO, Pascal VOC, COCO JSON.

:func:`iter_labelled` yields one :class:`ImportItem` per usable image (its pixels and its
boxes with CLASS NAMES, in pixels) or one :class:`Skip` (a one-line reason) per broken
file, so the caller decides what ids the names get (the device's class registry, a new
``data.yaml``). Images are read with THE image rule (:mod:`edgecl.data.images`), YOLO
labels with THE label rule (:mod:`edgecl.data.labels`).

Formats:

- ``yolo``: what :func:`edgecl.data.yolo_dataset.find_dataset` finds (a folder, a
  ``data.yaml``, the Roboflow ``train/valid/test`` export); class names from the yaml, else a
  ``classes.txt`` / ``obj.names`` file beside the images or their label files (labelImg, CVAT
  "YOLO 1.1"), else
  ``class_<id>`` (such items carry their ``dataset_ids``, so the caller may name them). An
  image without a label file is skipped (``no label file``); a file in the image folders that
  is neither an image ultralytics reads nor a dataset companion (``cam_0001.gif``, see
  :attr:`edgecl.data.yolo_dataset.YoloDataset.ignored_files`) is skipped (``not an image``),
  each once even when two splits name the same folder; an empty
  label file is a background image; a row whose class id the names lack (``names: {0: car,
  5: dog}`` and class ``1``) refuses its file (``refused label``). Two images that take one
  label file (``y.jpg`` and ``y.png``) are both skipped (``shared label file``), and a label
  file in ``labels/`` that no image takes is counted (``label without image``).
- ``voc``: ``Annotations/**/*.xml`` beside ``JPEGImages/``, or labelImg's flat folder of images
  with their ``.xml`` beside them (the image named by
  ``<filename>``, else one with its stem (a name written without its suffix or with another
  one), else the one with the xml's stem, also in the xml's sub-folder as CVAT
  writes them; a ``<filename>`` outside the dataset, absolute or with ``..``, is looked up by
  its base name only, as COCO's). Boxes follow ultralytics' VOC conversion (``VOC.yaml``:
  pixel coordinates are 1-based, so 1 is subtracted), except in a file that writes its corners
  with a decimal point (``197.00``: CVAT's export, through datumaro, whose corners are 0-based
  and read back as written), where nothing is subtracted; ``<difficult>1</difficult>`` objects are
  left out, counted apart from ignore regions as ``difficult_dropped``); a non-finite
  coordinate (``nan``, ``inf``, ``1e400``) refuses its image (``bad annotation``), as does an
  xml the parser cannot read (an encoding it does not know) or whose root is not ``<annotation>``; an image that two xmls name is
  skipped for both (``duplicate image``: one ``<filename>`` is wrong).
- ``coco``: COCO JSONs (CVAT: ``annotations/instances_<subset>.json``, every subset read, images
  in ``images/`` or ``images/<subset>/``; Label Studio: ``result.json``; Roboflow:
  ``train/_annotations.coco.json`` ... with the images beside); images resolved beside the json
  or in an ``images/`` folder next to it. A json without an ``images`` list (Label Studio's
  ``notes.json``) is not a COCO file; one named as a COCO file (in ``annotations/``,
  ``instances_*``, ``annotations.json``, ``result.json``, ``*coco*``) that is empty or broken is
  skipped and named (``bad annotation file``), and is the error when a folder has no other.
  Boxes follow ultralytics ``convert_coco``: ``bbox`` is ``[x, y, w, h]`` from the top-left
  corner, ``iscrowd`` annotations are ignore regions (except CVAT's masks, which it writes with
  ``iscrowd`` 1: objects, see :func:`_cvat_mask`). An image listed without annotations is
  a background image. Ids are integers (or strings; a string of digits is that integer); an
  annotation of a wrong type, with no usable ``image_id`` or with an ``image_id`` no image has
  is skipped and said, and counted apart from files (``annotations_skipped``), images sharing
  an id are all skipped (``duplicate image id``: whose boxes are they?), entries of ``images``
  with the same ``file_name`` are that file once with the boxes of them all (``convert_coco`` appends them to one label file; entries
  that declare different sizes for it, or different names found as one file, are skipped:
  ``duplicate image``), and a malformed ``categories`` (no id, no name) or a section that is
  not a list is a one-line error.

Declared image sizes (VOC ``<size><width>``/``<height>``, COCO image ``width``/``height``):
ultralytics' ``convert_coco`` and ``VOC.yaml`` normalise boxes by the DECLARED size, so when
it is valid (positive whole numbers) and differs from the decoded image's size, the boxes are
scaled from the declared size to the decoded one (an image downscaled after it was annotated
comes out exact). A declared size that is the decoded one with width and height swapped (not
square) means the annotation was made on the sensor's unrotated image while the decoder
applied the EXIF orientation: that image is skipped (``size mismatch``, naming the file and
both sizes). A missing or invalid declared size (absent, 0, negative, not a number) is not
used: the boxes are taken in the decoded image's pixels.

Ignore regions are not classes: VOC/COCO names such as ``DontCare`` or ``ignore`` (see
:data:`edgecl.data.class_names.IGNORE_NAMES`) and COCO ``iscrowd`` annotations are dropped and
counted in ``ImportItem.ignored``; an image whose only annotations are ignore regions (or VOC
difficult objects) is skipped (:data:`ONLY_IGNORED`): stored as showing no object, it would
teach them as background. A box written with no width or no height (VOC ``xmin == xmax``, a COCO
``w`` of 0, a YOLO ``w`` of 0: an accidental click in a labelling tool), or written under one
pixel wide or high on the image it was drawn on (the operator answer's bound,
:data:`edgecl.data.answers.MIN_BOX_PX`), marks no object: it is dropped and counted in
``ImportItem.empty``, and the image keeps its other boxes (ultralytics drops such a box too;
a ``dir://`` stream drops it the same way). An image whose every box is dropped so is skipped
(``bad box``; ``normalised box`` for VOC or COCO boxes all within 0..1, normalised coordinates
where pixels belong), not stored as showing no object. An inverted box (``xmax < xmin``), one with no
area or under a pixel inside the image only once clipped to it or scaled from the size its
annotation declares, or one with a corner farther outside the image than the image's own size
(``1e300``: no tool writes it) refuses its image (``bad box``), as a refused YOLO row refuses
its frame: it stands for an object whose pixels are unknown. An image with a side under 10
pixels is skipped (``image too small``): ultralytics trains no such image. A file in a YOLO
image folder that is no regular file (a FIFO, a device, a link to nothing) is
skipped as ``not an image``, so that ``imported + skipped`` counts every file the dataset
gives.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import json
import math
import os
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote

import numpy as np

from edgecl.config import DataFileLoader
from edgecl.data.answers import MIN_BOX_PX
from edgecl.data.class_names import is_ignore_name, loose_class_name, name_clash, placeholder_id
from edgecl.data.images import (IMAGE_SUFFIXES, ImageError, is_image, read_image_and_hash,
                                small_side_problem)
from edgecl.data.labels import (label_path_for, labels_to_text, read_yolo_labels,
                                shared_label_files, shared_label_problem, under_pixels)
from edgecl.data.yolo_dataset import class_name_text, find_dataset, path_exists, path_is_file
from edgecl.errors import (ConfigError, LabelError, encoding_problem, json_problem, link_problem,
                           missing_path)
from edgecl.input_files import (MAX_JSON_BYTES, MAX_LABEL_BYTES, missing_file_why,
                                read_data_file, read_input_bytes, read_input_text,
                                regular_file_problem)

FORMATS = ("auto", "yolo", "voc", "coco")

_NAMES_FILES = ("classes.txt", "obj.names", "labels.txt")


@dataclass(frozen=True)
class ImportItem:
    """One labelled image read from a dataset.

    Attributes:
        image: BGR uint8 (H, W, 3).
        names: class name of each box.
        xyxy: float32 (N, 4) boxes ``x1, y1, x2, y2`` in pixels of ``image`` (inside it).
        source: the image file.
        ignored: ignore regions dropped from this image.
        difficult: VOC ``<difficult>1`` objects left out of this image (as ultralytics'
            ``VOC.yaml`` conversion does).
        content_hash: hash of the image file's bytes (:func:`edgecl.data.images.content_hash`);
            ``""`` when unknown (the pixels are hashed then).
        dataset_ids: the dataset's own class id of each box when the dataset names no classes
            (a YOLO folder without ``data.yaml`` names: ``names`` are then ``class_<id>``);
            ``None`` when the dataset names its classes.
        empty: boxes dropped from this image for having no area (module docstring).
        rescaled: ``""``, or how its boxes were scaled from the size its annotation declares
            to the decoded one (``"a.xml: annotated for a 640x480 image, a.jpg decodes as
            320x240"``: right for an image downscaled after labelling, a sign of a wrong
            ``<size>`` otherwise).
    """

    image: np.ndarray
    names: list[str]
    xyxy: np.ndarray
    source: Path
    ignored: int = 0
    difficult: int = 0
    content_hash: str = ""
    dataset_ids: tuple[int, ...] | None = None
    empty: int = 0
    rescaled: str = ""

    def distinct(self) -> "ImportItem":
        """This item with each box given twice (same class, same corners) kept once, as the
        replay memory stores it (:func:`edgecl.continual.memory.records.check_labels`); a
        dataset written by ``dataset import`` keeps them as written, as ``convert_coco`` does.

        Returns:
            ``self`` when no box repeats, else a copy without the repeats.
        """
        if len(self.names) < 2:
            return self
        codes = {name: k for k, name in enumerate(dict.fromkeys(self.names))}
        rows = np.column_stack([np.array([codes[n] for n in self.names], np.float64),
                                np.asarray(self.xyxy, np.float64).reshape(len(self.names), 4)])
        _, first = np.unique(rows, axis=0, return_index=True)
        if len(first) == len(self.names):
            return self
        keep = np.sort(first)
        ids = None if self.dataset_ids is None else tuple(self.dataset_ids[i] for i in keep)
        return dataclasses.replace(self, names=[self.names[i] for i in keep],
                                   xyxy=np.asarray(self.xyxy)[keep], dataset_ids=ids)

    def yolo_labels(self, class_ids: dict[str, int]) -> np.ndarray:
        """The boxes as YOLO rows with the given class ids.

        Args:
            class_ids: class name -> id (every name of :attr:`names` must be there).

        Returns:
            float32 (N, 5) ``cls, cx, cy, w, h`` normalised to 0..1.
        """
        h, w = self.image.shape[:2]
        if not self.names:
            return np.zeros((0, 5), np.float32)
        b = self.xyxy.astype(np.float64)
        cls = np.array([class_ids[n] for n in self.names], np.float64)
        rows = np.stack([cls, (b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                         (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], axis=1)
        return rows.astype(np.float32)


class LabelledItems:
    """What a dataset reader yields (:class:`ImportItem` and :class:`Skip`, read lazily), with
    the dataset's image files, known before the first item is read.

    Args:
        items: the items.
        image_paths: a callable giving the image files the items will name (each as the item's
            ``source``), in the dataset's order: called once, when :attr:`image_paths` is first
            read (a ``dataset import`` never pays for it).
        root: a YOLO dataset's root folder (its data.yaml's ``path:``), or None.
        image_classes: a callable giving, per image file, the class names its labels name,
            read from the label files alone (no image decoded): what the held-out draw plans
            with; None: unknown.
    """

    def __init__(self, items, image_paths: Callable[[], list[Path]], root: Path | None = None,
                 image_classes: Callable[[], dict[Path, frozenset[str]]] | None = None):
        self._items = iter(items)
        self._image_paths = image_paths
        self._listed: list[Path] | None = None
        self._image_classes = image_classes
        self.root = root

    def image_classes(self) -> dict[Path, frozenset[str]]:
        """Per image file (as :attr:`image_paths` names it), the class names its labels name,
        ignore classes left out; a file whose labels cannot be read is absent. Read from the
        label files only, each call anew; empty when the reader cannot tell."""
        return dict(self._image_classes()) if self._image_classes is not None else {}

    @property
    def image_paths(self) -> list[Path]:
        """The image files of the dataset, in its order."""
        if self._listed is None:
            self._listed = list(self._image_paths())
        return self._listed

    def __iter__(self) -> "LabelledItems":
        return self

    def __next__(self) -> "ImportItem | Skip":
        return next(self._items)


@dataclass(frozen=True)
class Skip:
    """A file that could not be imported.

    Attributes:
        source: the file (image or annotation).
        reason: short category used to count skips (``unreadable image``, ``image too small``,
            ``missing image``, ``bad annotation``, ``bad box``, ``normalised box``,
            ``refused label``,
            ``no label file``,
            ``not an image``, ``duplicate image id``, ``duplicate image``, ``size mismatch``,
            ``bad annotation file``, ``shared label file``, ``label without image``,
            :data:`ONLY_IGNORED`, :data:`NO_OBJECT`).
        message: one line: path and why.
        counts_file: False for an annotation that belongs to no image of its file (a COCO
            annotation whose ``image_id`` no image has): said, but not counted as a file.
    """

    source: Path
    reason: str
    message: str
    counts_file: bool = True


@dataclass
class ImportTally:
    """Counts of an import (what ``--json`` prints).

    Attributes:
        imported: images stored or written.
        skipped: files skipped (``imported + skipped`` is every image and file the dataset
            gives).
        reasons: skip reason -> count of files.
        annotations_skipped: annotations that belong to no image (not counted as files).
        ignored_regions: ignore regions dropped.
        difficult_dropped: VOC ``<difficult>1`` objects left out.
        empty_boxes: boxes dropped for having no area (module docstring).
        rescaled: images whose boxes were scaled from their declared size
            (:attr:`ImportItem.rescaled`).
        rescaled_example: the first such image's ``rescaled`` line.
        background: images imported with no box (stored as showing no object).
        boxes: class name -> boxes imported.
        messages: the first skip messages (at most ``max_messages``).
        max_messages: how many messages to keep.
        messages_left_out: skip messages past ``max_messages``, not kept.
    """

    imported: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    annotations_skipped: int = 0
    ignored_regions: int = 0
    difficult_dropped: int = 0
    empty_boxes: int = 0
    rescaled: int = 0
    rescaled_example: str = ""
    background: int = 0
    boxes: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    max_messages: int = 20
    messages_left_out: int = 0

    def shown_messages(self) -> list[str]:
        """The skip messages a command prints (each after ``skipped:``), and when some were
        left out a last one that says how many (before: the list stopped at 20 without a
        word)."""
        if not self.messages_left_out:
            return list(self.messages)
        return [*self.messages, f"... and {self.messages_left_out} more, not listed (counted by "
                                f"reason in the summary)"]

    def skip(self, reason: str, message: str = "", counts_file: bool = True) -> None:
        """Count one skipped file (or one annotation of no image).

        Args:
            reason: its category.
            message: the one-line reason (``""``: counted only, nothing to print).
            counts_file: False for an annotation that belongs to no image (see :class:`Skip`).
        """
        if counts_file:
            self.skipped += 1
            self.reasons[reason] += 1
        else:
            self.annotations_skipped += 1
        if message and len(self.messages) < self.max_messages:
            self.messages.append(message)
        elif message:
            self.messages_left_out += 1

    def done(self, item: ImportItem) -> None:
        """Count one imported image.

        Args:
            item: the image imported.
        """
        self.imported += 1
        self.ignored_regions += item.ignored
        self.difficult_dropped += item.difficult
        self.empty_boxes += item.empty
        if item.rescaled:
            self.rescaled += 1
            self.rescaled_example = self.rescaled_example or item.rescaled
        self.background += not item.names
        self.boxes.update(item.names)

    def to_dict(self) -> dict:
        """JSON-ready counts: imported, background (of them, images with no box), skipped,
        reasons, annotations_skipped, ignored_regions, difficult_dropped, empty_boxes,
        rescaled_from_declared_size (with ``rescaled_example`` when some were), boxes per
        class."""
        out = {"imported": self.imported, "background": self.background,
               "skipped": self.skipped, "reasons": dict(self.reasons),
               "annotations_skipped": self.annotations_skipped,
               "ignored_regions": self.ignored_regions,
               "difficult_dropped": self.difficult_dropped, "empty_boxes": self.empty_boxes,
               "rescaled_from_declared_size": self.rescaled, "boxes": dict(self.boxes)}
        if self.rescaled_example:
            out["rescaled_example"] = self.rescaled_example
        return out


def same_class_as(name: str, known: Iterable[str]) -> str | None:
    """The one known class name that ``name`` is, spelt otherwise: the same
    :func:`loose_class_name` (``Car`` is ``car``; ``OtherVehicle`` is ``other_vehicle``).

    Args:
        name: a class name not among ``known`` as written.
        known: the class names known so far.

    Returns:
        That name; ``None`` when none or several match (then ``name`` is a class of its own).
    """
    loose = loose_class_name(name)
    same = [k for k in known if loose and loose_class_name(k) == loose]
    return same[0] if len(same) == 1 else None


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".7z", ".rar")
"""How labelling tools deliver an export (CVAT, Label Studio and Roboflow: a ``.zip``)."""


def refuse_archive(path: Path) -> None:
    """Refuse an export still packed in its archive, naming what to do (before: "is a file;
    expected a dataset folder or a data.yaml", or, with ``--format coco``, a UTF-8 decoding
    error of the zip's bytes).

    Args:
        path: the path given (existing).

    Raises:
        ConfigError: a file named as an archive, or a zip archive by its content.
    """
    import zipfile

    if not path.is_file():
        return
    named = next((s for s in ARCHIVE_SUFFIXES if path.name.lower().endswith(s)), None)
    if named is None and not zipfile.is_zipfile(path):
        return
    kind = named or ".zip"
    how = {".zip": f"unzip '{path}' -d FOLDER", ".7z": f"7z x '{path}' -oFOLDER",
           ".rar": f"unrar x '{path}' FOLDER/"}.get(kind, f"mkdir FOLDER && tar -xf '{path}' -C FOLDER")
    raise ConfigError(f"{path} is an archive ({named or 'zip'}): unpack it first (e.g. {how}) "
                      f"and give the folder")


def voc_annotations(folder: Path) -> Path | None:
    """A Pascal VOC folder's annotation folder: ``Annotations/``, or one named so in another case
    (``annotations/``, as Kaggle's copies of VOC sets have it) that holds ``.xml`` files (CVAT's
    COCO export keeps its json in an ``annotations/``); None when there is none.

    Args:
        folder: the dataset folder.
    """
    if (folder / "Annotations").is_dir():
        return folder / "Annotations"
    try:
        named = sorted(p for p in folder.iterdir() if p.name.lower() == "annotations" and p.is_dir())
    except OSError:
        return None
    for candidate in named:
        if any(p.suffix.lower() == ".xml" for p in candidate.iterdir()):
            return candidate
    return None


def source_root(src: Path) -> Path:
    """The resolved folder of a source given as a folder or a file (a ``data.yaml``, a COCO
    json; one in CVAT's ``annotations/`` stands for the folder above)."""
    src = Path(src).expanduser()
    root = src.resolve() if src.is_dir() else src.resolve().parent
    return root.parent if root.name.lower() == "annotations" else root


def image_anchors(root: Path, items: LabelledItems) -> set[Path]:
    """The folders a YOLO dataset's images are read below: the source's (``root``, resolved),
    and its data.yaml's ``path:`` where that names a folder elsewhere (not one above the
    source: ``path: /`` is no reason to refuse every output folder)."""
    elsewhere = items.root.resolve() if items.root is not None else None
    return {root} | ({elsewhere} if elsewhere is not None and elsewhere != root
                     and elsewhere not in root.parents else set())


def folder_reading(target: Path, image: Path, fmt: str, root: Path,
                   anchors: set[Path]) -> Path | None:
    """The folder of the source's images that holds ``target`` (or is it), so that a later
    import of the source would read what is written there as images of the dataset; ``None``
    where none does.

    A YOLO folder is read with every image below it (so are the folders above an image's, up
    to the source: ``images/flight01/a.jpg`` is read from ``images/``); VOC and COCO read the
    images their annotations name, so only an image's own folder counts (not the source's top).

    Args:
        target: the resolved folder to write (an import's output, a state directory).
        image: one image of the source.
        fmt: the source's format (``yolo``, ``voc``, ``coco``).
        root: the resolved source folder.
        anchors: :func:`image_anchors`.
    """
    folder = Path(image).resolve().parent
    scanned = ([folder, *(p for p in folder.parents if any(a in p.parents for a in anchors))]
               if fmt == "yolo" else [folder] if folder != root else [])
    return next((f for f in scanned if target == f or f in target.parents), None)


def detect_format(path: str | Path) -> str:
    """Guess a dataset's format.

    Args:
        path: a folder, a ``.yaml`` or a ``.json``.

    Returns:
        ``coco`` (a ``.json``, or a folder with a COCO json on top or in ``annotations/``),
        ``voc`` (a folder with ``Annotations/``, see :func:`voc_annotations`, that folder
        itself, labelImg's flat layout, see :func:`_flat_voc`, or an ``.xml`` file), else
        ``yolo``.

    Raises:
        ConfigError: the path does not exist, is an archive (:func:`refuse_archive`), or is a
            file of none of these kinds (an image: before, "expected a dataset folder or a
            data.yaml", which left out the COCO json and the VOC xml).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(missing_path(path))
    refuse_archive(path)
    if path.is_file():
        fmt = {".json": "coco", ".xml": "voc", ".yaml": "yolo", ".yml": "yolo"}.get(
            path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{path} is a file, not a dataset: give a dataset folder (YOLO, "
                              f"Pascal VOC or COCO), a data.yaml, a COCO .json or a Pascal "
                              f"VOC .xml")
        return fmt
    if voc_annotations(path) is not None:
        return "voc"
    if find_coco_json(path) is not None or broken_coco_jsons(path):
        return "coco"
    return "voc" if _flat_voc(path) or _voc_annotations_given(path) else "yolo"


def both_formats_note(path: str | Path, fmt: str) -> str:
    """A note when ``--format auto`` read a folder as YOLO that also holds labelImg's Pascal
    VOC ``.xml`` files beside its images (labelImg saves either, and a folder labelled in both
    modes holds both; before, the ``.xml`` boxes were passed over without a word).

    Args:
        path: the dataset path given.
        fmt: the format given (only ``auto`` is noted).

    Returns:
        ``"note: ..."``, or ``""``.
    """
    folder = Path(path).expanduser()
    if fmt != "auto" or not folder.is_dir() or detect_format(folder) != "yolo":
        return ""
    try:
        xmls = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
    except OSError:
        return ""
    if not xmls or isinstance(_parse_voc(xmls[0]), Skip):
        return ""
    return (f"note: {folder} holds YOLO label files and {len(xmls)} Pascal VOC .xml file(s) "
            f"beside its images: read as YOLO (the .txt files); give --format voc to read the "
            f".xml files instead")


def _voc_annotations_given(folder: Path) -> bool:
    """Whether the folder given is a VOC dataset's ``Annotations/`` itself (read as its
    dataset, :func:`iter_voc`): named so, in any case, holding ``.xml`` files."""
    if folder.name.lower() != "annotations":
        return False
    try:
        return any(p.suffix.lower() == ".xml" for p in folder.iterdir())
    except OSError:
        return False


def _flat_voc(folder: Path) -> bool:
    """Whether a folder is labelImg's flat Pascal VOC layout: each image's ``.xml`` beside it,
    no ``Annotations/`` (its default save folder is the image folder), and no YOLO label file
    (``.txt`` other than a class names file) nor ``.yaml`` beside them; its first ``.xml`` is
    a VOC ``<annotation>``."""
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        return False
    xmls = [p for p in entries if p.suffix.lower() == ".xml"]
    yolo = [p for p in entries if p.suffix.lower() in (".yaml", ".yml")
            or (p.suffix.lower() == ".txt" and p.name not in _NAMES_FILES)]
    if not xmls or yolo or not any(is_image(p) for p in entries):
        return False
    return not isinstance(_parse_voc(xmls[0]), Skip)


COCO_SPLIT_FOLDERS = ("train", "valid", "val", "test")
"""Sub-folders of a Roboflow "COCO" export, each holding ``_annotations.coco.json`` and its images."""
SAME_IMAGE_TWICE = "same image earlier in this import"
"""Skip reason of an image whose pixels an earlier image of the same import has (a train image
copied into valid under another name)."""


def _is_coco_json(path: Path) -> bool:
    """Whether a ``.json`` file is a COCO file: an object with an ``images`` list (the start
    is read first; a file that does not mention ``"images"`` in it is parsed only when longer).
    Label Studio's ``notes.json`` (categories only) is not one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
            longer = bool(fh.read(1))
    except OSError:
        return False
    if b'"images"' in head:
        return True
    if not longer:
        return False
    try:
        data = json.loads(read_input_text(path, MAX_JSON_BYTES, "a COCO file", "utf-8-sig"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and isinstance(data.get("images"), list)


def _not_coco_reason(path: Path) -> str:
    """Why a ``.json`` is not a COCO file, in a few words (empty, not JSON, no ``images``
    list)."""
    try:
        if path.stat().st_size == 0:
            return "it is empty"
        data = json.loads(read_input_text(path, MAX_JSON_BYTES, "a COCO file", "utf-8-sig"))
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    except (ValueError, RecursionError):
        return "not JSON, or cut short"
    return "no 'images' list in it" if isinstance(data, dict) else "not a JSON object"


def find_coco_jsons(folder: Path) -> list[Path]:
    """Every COCO json of a folder: on top, in ``annotations/`` (CVAT, one per subset:
    ``instances_train.json``, ``instances_val.json``) and in the split folders of a Roboflow
    export (``train/_annotations.coco.json``, ...).

    Args:
        folder: the dataset folder.

    Returns:
        The COCO files (see :func:`_is_coco_json`) in that order, names sorted in each folder.
    """
    return [p for p in _coco_place_jsons(folder) if _is_coco_json(p)]


def _coco_place_jsons(folder: Path) -> list[Path]:
    """The ``.json`` files where a folder's COCO files go (see :func:`find_coco_jsons`), in
    that order, names sorted in each place."""
    places = [folder, folder / "annotations", *(folder / s for s in COCO_SPLIT_FOLDERS)]
    return [p for place in places for p in sorted(place.glob("*.json"))
            if p.is_file() and not _hidden(p, place)]


def _hidden(path: Path, under: Path) -> bool:
    """Whether a file below ``under`` is hidden, or inside a hidden folder or macOS's
    ``__MACOSX``: a zip made on a Mac holds ``._NAME`` resource forks beside each file,
    left out as a YOLO folder's scan leaves them (before, each ``._x.xml`` was a 'bad
    annotation')."""
    parts = path.relative_to(under).parts
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _coco_named(path: Path) -> bool:
    """Whether a json's place or name says it was meant as a COCO file (in ``annotations/``,
    ``instances_*.json``, ``annotations.json``, ``result.json`` of Label Studio, a name with
    ``coco`` in it): such a file that is not one is named, not passed over."""
    name = path.name.lower()
    return (path.parent.name == "annotations" or name.startswith("instances")
            or "coco" in name or name in ("annotations.json", "result.json"))


def broken_coco_jsons(folder: Path) -> list[Path]:
    """The jsons of a folder's COCO places (see :func:`find_coco_jsons`) that are named as COCO
    files (:func:`_coco_named`) and are not one: empty, truncated, not JSON, no ``images``
    list."""
    return [p for p in _coco_place_jsons(folder) if _coco_named(p) and not _is_coco_json(p)]


def find_coco_json(folder: Path) -> Path | None:
    """The first COCO json of a folder (see :func:`find_coco_jsons`), or ``None``."""
    found = find_coco_jsons(folder)
    return found[0] if found else None


def _read(path: Path) -> tuple[np.ndarray, str] | Skip:
    """The image and the hash of its file's bytes, or a :class:`Skip` (``unreadable image``,
    or ``image too small`` for a side under ultralytics' 10 pixels)."""
    try:
        image, digest = read_image_and_hash(path)
    except ImageError as exc:
        return Skip(path, "unreadable image", str(exc))
    too_small = small_side_problem(image)
    if too_small:
        return Skip(path, "image too small", f"{path}: {too_small}")
    return image, digest


def _clip_boxes(xyxy: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Pixel boxes ``(N, 4)`` clipped to an image of ``shape`` (clipped in float64, then
    float32: no overflow for a coordinate beyond float32's range)."""
    h, w = shape[:2]
    out = np.asarray(xyxy, np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out.astype(np.float32)


def _degenerate(xyxy: np.ndarray, width: int, height: int) -> tuple[int, str] | None:
    """The first clipped box ``(N, 4)`` that teaches nothing, with why: no area inside the
    image, or under :data:`edgecl.data.answers.MIN_BOX_PX` wide or high (as an operator's
    answer)."""
    sides = np.stack([xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], axis=1)
    for i, (w, h) in enumerate(sides):
        if w <= 0 or h <= 0:
            return i, f"has no area inside the {width}x{height} image"
        if min(w, h) < MIN_BOX_PX:
            return i, (f"is {w:.3g} x {h:.3g} px inside the {width}x{height} image, under one "
                       f"pixel")
    return None


def _zero_extent(xyxy: np.ndarray) -> np.ndarray:
    """Which boxes ``(N, 4)``, as the annotation writes them, have no width or no height
    (``xmin == xmax``: a click, not a drag, in a labelling tool); bool (N,)."""
    return (xyxy[:, 2] == xyxy[:, 0]) | (xyxy[:, 3] == xyxy[:, 1])


def _far_outside(xyxy: np.ndarray, width: int, height: int) -> int | None:
    """The first pixel box ``(N, 4)`` with a corner more than the image's own size outside a
    ``width`` x ``height`` image (``[10, 10, 1e308, 1e308]``: no drawing tool writes it), or
    ``None``; a box over an edge by less is clipped."""
    xs, ys = xyxy[:, [0, 2]], xyxy[:, [1, 3]]
    bad = np.nonzero(((xs < -width) | (xs > 2 * width)).any(axis=1)
                     | ((ys < -height) | (ys > 2 * height)).any(axis=1))[0]
    return int(bad[0]) if bad.size else None


def _short(value: object, limit: int = 80) -> str:
    """A value read from a file for a one-line message: printable text as is, anything else
    (a newline or NUL inside, a list, empty or blank text, ...) as its ``repr``; cut to
    ``limit`` characters."""
    text = value if isinstance(value, str) and value.isprintable() and value.strip() else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _names_file(folder: Path, labels_folder: Path | None = None) -> dict[int, str] | None:
    """The class names of the first names file (``classes.txt``, ...) in ``folder``, its
    parent or ``labels_folder`` (labelImg writes its ``classes.txt`` beside the label files
    when they are saved apart from the images); ``None`` where none is.

    Raises:
        ConfigError: the file cannot be read or names a class twice.
    """
    for candidate in (folder, folder.parent, *([labels_folder] if labels_folder else [])):
        for name in _NAMES_FILES:
            p = candidate / name
            special = regular_file_problem(p, folder_ok=True)
            if special:  # before: passed over, the classes named class_0...
                raise ConfigError(f"class names file {p} is {special}")
            if p.is_file():
                try:
                    text = read_data_file(p, "a class names file")
                except OSError as exc:
                    raise ConfigError(f"cannot read class names file {p}: {exc.strerror or exc}") from None
                except UnicodeDecodeError as exc:
                    raise ConfigError(f"{p}: {encoding_problem(exc)}") from None
                names = dict(enumerate(x.strip() for x in text.splitlines() if x.strip()))
                clash = name_clash(names)
                if clash:
                    raise ConfigError(f"{p}: {clash}")
                return names
    for candidate in (folder, folder.parent):
        names = _label_studio_notes(candidate / "notes.json")
        if names is not None:
            return names
    return None


def _label_studio_notes(path: Path) -> dict[int, str] | None:
    """The class names of Label Studio's YOLO export note (``notes.json``: ``{"categories":
    [{"id": 0, "name": "car"}, ...]}``), read where the export has no ``classes.txt`` (before,
    its classes were named class_0, class_1, ...); ``None`` where there is no such file or it
    lists no categories.

    Raises:
        ConfigError: the file lists categories that are no ``{"id": int >= 0, "name": text}``
            objects, or names a class twice.
    """
    if not path.is_file() or regular_file_problem(path):
        return None
    try:
        data = json.loads(read_data_file(path, "Label Studio's notes.json"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None  # not the note this reads: the folder's other files decide
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list) or not categories:
        return None
    names = {}
    for entry in categories:
        cid = entry.get("id") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(cid, bool) or not isinstance(cid, int) or cid < 0 or \
                not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{path}: its categories are not all {{\"id\": 0, \"name\": "
                              f"\"car\"}} objects ({_short(entry)}); give the export a "
                              f"classes.txt, one class name per line")
        names[cid] = name.strip()
    clash = name_clash(names)
    if clash:
        raise ConfigError(f"{path}: {clash}")
    return dict(sorted(names.items()))


def iter_yolo(path: str | Path) -> LabelledItems:
    """Images of an ultralytics YOLO dataset with their boxes (see the module docstring).

    Args:
        path: a folder, ``data.yaml`` or Roboflow export.

    Returns:
        An iterator of :class:`ImportItem` or :class:`Skip`: first a ``not an image`` skip per
        file of another kind in the image folders, then the images in split then name order.

    Raises:
        ConfigError: an unreadable ``data.yaml`` or class names file (``classes.txt``, ...),
            or a dataset with no images.
    """
    dataset = _tasks_dataset(path) or find_dataset(path)
    images = dataset.images()
    if not images:
        other = ", ".join(f"{suffix or '(no suffix)'}: {n}" for suffix, n in dataset.ignored.most_common())
        link = dataset.dangling_link()
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {dataset.yaml_path or dataset.root}"
                          + (f": {link}" if link else
                             f" (files of other kinds: {other})" if other else ""))
    names = dataset_class_names(dataset, images)
    not_images = (Skip(p, "not an image", f"{p}: not an image ultralytics reads "
                                          f"({p.suffix.lower() or 'no suffix'})")
                  if path_is_file(p) else
                  Skip(p, "not an image", link_problem(p) or f"{p}: {missing_file_why(p)}")
                  for p in dataset.ignored_files)
    return LabelledItems(itertools.chain(not_images, _yolo_items(
        images, names, unnamed=not names or _placeholder_names(names),
        kpt_values=dataset.kpt_values),
        _labels_without_image(images)), lambda: images, root=dataset.root,
        image_classes=lambda: _yolo_image_classes(images, names, dataset.kpt_values))


def _yolo_image_classes(images: list[Path], names: dict[int, str] | None,
                        kpt_values: int = 0) -> dict[Path, frozenset[str]]:
    """Per image of a YOLO dataset, the class names its label file names (``class_<id>``
    without names; ignore classes left out); an image whose label file is missing or refused
    is absent (its item is a skip)."""
    nc = max(names) + 1 if names else None
    shown = {}
    for image_path in images:
        try:
            parsed = read_yolo_labels(label_path_for(image_path), nc, kpt_values)
        except (LabelError, OSError):
            continue
        if parsed.refused:
            continue
        rows = parsed.labels
        found = {names.get(int(c), f"class_{int(c)}") if names else f"class_{int(c)}"
                 for c in rows[:, 0]}
        shown[image_path] = frozenset(n for n in found if not is_ignore_name(n))
    return shown


def dataset_class_names(dataset, images: list[Path]) -> dict[int, str] | None:
    """A YOLO dataset's class names, the one rule for imports and ``dir://`` streams: its
    yaml's, else a names file (``classes.txt``, ``obj.names``, ``labels.txt``) beside the first
    image or its label file, or in the dataset's folder, else the names of the class-incremental ``tasks.yaml`` at
    the top of a plain folder.

    Args:
        dataset: the :class:`~edgecl.data.yolo_dataset.YoloDataset`.
        images: its images (the first one's folder may hold a names file).

    Returns:
        Class id -> name, or ``None`` when nothing names the classes.

    Raises:
        ConfigError: an unreadable class names file.
    """
    return dataset.names \
        or (_names_file(images[0].parent, label_path_for(images[0]).parent) if images else None) \
        or _names_file(dataset.root) \
        or (_folder_tasks_names(dataset.root) if dataset.layout == "folder" else None)


def _tasks_yaml_names(yaml_path: Path, strict: bool) -> dict[int, str] | None:
    """The class names of a class-incremental ``tasks.yaml`` (``scenario make``,
    ``dataset split-tasks``; :func:`edgecl.data.tasks.load_tasks`), or ``None`` when the file is
    none (no ``tasks`` list, or an ultralytics ``data.yaml``).

    Raises:
        ConfigError: ``strict`` and the file is a ``tasks.yaml`` that does not load.
    """
    from edgecl.data.tasks import load_tasks

    if not _is_tasks_yaml(yaml_path):
        return None
    try:
        return load_tasks(yaml_path).names
    except ConfigError:
        if strict:
            raise
        return None


def _is_tasks_yaml(yaml_path: Path) -> bool:
    """Whether a yaml file is a class-incremental ``tasks.yaml`` (a ``tasks`` list, and no
    ``train`` entry as an ultralytics ``data.yaml`` has); an unreadable file is none."""
    import yaml

    try:
        data = yaml.load(read_data_file(yaml_path), Loader=DataFileLoader)
    except (OSError, ValueError, RecursionError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "tasks" in data and "train" not in data


def _tasks_dataset(path: str | Path):
    """A class-incremental ``tasks.yaml`` given as the dataset: the images its tasks list (every
    split, each image once) with its class names; ``None`` for any other path (before, such a
    file was refused as "not an ultralytics data.yaml").

    Raises:
        ConfigError: the file is a ``tasks.yaml`` that does not load.
    """
    from edgecl.data.tasks import load_tasks
    from edgecl.data.yolo_dataset import YoloDataset

    p = Path(path).expanduser()
    if p.suffix.lower() not in (".yaml", ".yml") or not p.is_file() or not _is_tasks_yaml(p):
        return None
    taskset = load_tasks(p)
    splits = {f"{task.name}/{split}": list(task.split(split))
              for task in taskset.tasks for split in ("train", "val", "test")}
    return YoloDataset(root=taskset.path.parent, layout="tasks.yaml", splits=splits,
                       names=dict(taskset.names), yaml_path=taskset.path)


def _folder_tasks_names(folder: Path) -> dict[int, str] | None:
    """The names of the class-incremental ``tasks.yaml`` files at the top of a folder (the
    built-in scenario names its classes there only), when they agree."""
    found = [n for p in sorted(folder.glob("*.y*ml")) if p.suffix in (".yaml", ".yml")
             for n in [_tasks_yaml_names(p, strict=False)] if n]
    return found[0] if found and all(n == found[0] for n in found) else None


def yolo_class_names(path: str | Path) -> dict[int, str]:
    """The class id -> name of a YOLO dataset, by the rule :func:`iter_yolo` reads it with
    (``{}`` when nothing names the classes).

    Raises:
        ConfigError: an unreadable ``data.yaml`` or class names file.
    """
    dataset = _tasks_dataset(path) or find_dataset(path)
    return dataset_class_names(dataset, dataset.images()) or {}


def coco_class_names(path: str | Path) -> list[str]:
    """The category names of a COCO json, or of every COCO json of a folder, in category id
    order file after file, each name once; a category that only groups others (see
    :func:`_grouping_categories`) is no class.

    Raises:
        ConfigError: a json that is not a COCO file or has malformed categories (in a folder:
            when no json of it is one; the import skips each such file and names it).
    """
    path = Path(path).expanduser().resolve()
    names: list[str] = []
    faults: list[ConfigError] = []
    for json_path in [path] if path.is_file() else find_coco_jsons(path):
        try:
            data = load_coco(json_path)
        except ConfigError as exc:
            if path.is_file():
                raise
            faults.append(exc)
            continue
        categories = coco_categories(json_path, data)
        order = sorted(categories, key=lambda k: (isinstance(k, str), k))  # ids 7 before 10
        groups = _grouping_categories(data, categories)
        names += [categories[k] for k in order if k not in groups]
    if faults and not names:
        raise faults[0]
    return list(dict.fromkeys(names))


def source_class_order(path: str | Path, fmt: str, placeholders: bool = True,
                       ignored: bool = False) -> list[str]:
    """The class names a dataset declares before any box is read, in the order that gives
    them ids 0..n-1 (the ids ``edgecl dataset import`` writes): a YOLO dataset's ids in order, a
    COCO file's categories in id order; an ignore class (``DontCare``) or a gap in the source's
    ids (``{0: car, 5: dog}``) leaves no hole. Empty for VOC (names come with the boxes).

    Args:
        path: the dataset.
        fmt: its format (``yolo``, ``voc`` or ``coco``; ``auto`` is detected).
        placeholders: keep the ``class_<id>`` names of a YOLO folder that names no class
            (False: none is declared then).
        ignored: a YOLO dataset whose ids have no gap keeps them as they are, an ignore class
            in place (a checkpoint trained on a KITTI-style data.yaml has a ``DontCare``
            output): what a device whose registry was empty takes from a ``labels import``.

    Raises:
        ConfigError: an unreadable ``data.yaml``, class names file or COCO json.
    """
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "yolo":
        names = yolo_class_names(path)
        if names and not placeholders and _placeholder_names(names):
            return []
        if ignored and sorted(names) == list(range(len(names))):
            return [names[k] for k in sorted(names)]
        ordered = [n for _, n in sorted(names.items())]
    elif fmt == "coco":
        ordered = coco_class_names(path)
    else:
        return []
    return [n for n in ordered if not is_ignore_name(n)]


UNNAMED_GAPS_KEPT = 8
"""Most ids without a box that :func:`unnamed_class_order` keeps as empty classes beyond the
number of ids the labels use: a stray id (``900`` in one label file) must not grow the head by
hundreds of classes no one named."""


def unnamed_class_order(path: str | Path, fmt: str, items: "LabelledItems") -> tuple[list[str], str]:
    """The ``class_<id>`` names, ids 0 to the highest the labels use, of a YOLO dataset that
    names no class (no ``data.yaml`` names, no ``classes.txt``; a yaml with ``nc`` only counts
    up to ``nc``): what a device with no class yet takes, so that each id keeps its number as
    the dataset's other names do (before, ids went in the order the classes first appeared:
    the dataset's class 3 became the device's class 0, still named ``class_3``).

    Args:
        path: the dataset.
        fmt: its format (``auto`` is detected).
        items: its :func:`iter_labelled` items (their label files are read for the ids).

    Returns:
        ``(names in id order, note)``; no names for a dataset that names its classes or
        another format, and none, with a one-line note saying why, when keeping the ids would
        make more than :data:`UNNAMED_GAPS_KEPT` classes beyond those the labels use (the ids
        then go in the order the classes appear).
    """
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt != "yolo":
        return [], ""
    names = yolo_class_names(path)
    if names and not _placeholder_names(names):
        return [], ""
    used = {placeholder_id(name) for shown in items.image_classes().values() for name in shown}
    used.discard(None)
    top = max([*names, *used], default=-1)
    empty = top + 1 - len(used)
    if names or empty <= max(UNNAMED_GAPS_KEPT, len(used)):
        return [f"class_{k}" for k in range(top + 1)], ""
    return [], (f"note: the labels use {len(used)} class id(s) up to {top}: keeping those ids "
                f"would make {empty} classes with no box, so the device numbers the classes in "
                f"the order they appear (their names keep the dataset's ids); a data.yaml with "
                f"names keeps the ids")


def _grouping_categories(data: dict, categories: dict) -> set:
    """Category ids that only group others: named as another category's ``supercategory``
    and used by no annotation (Roboflow's category 0, named after the project)."""
    parents = {c.get("supercategory") for c in data.get("categories") or []
               if isinstance(c, dict) and isinstance(c.get("supercategory"), str)}
    used = {_coco_id(a.get("category_id")) for a in data.get("annotations") or []
            if isinstance(a, dict)}
    return {k for k, name in categories.items() if name in parents and k not in used}


def _placeholder_names(names: dict[int, str]) -> bool:
    """True for the ``class_<id>`` names a yaml with only ``nc`` gets: no real names."""
    return all(n == f"class_{i}" for i, n in names.items())


def _yolo_items(images: list[Path], names: dict[int, str] | None, unnamed: bool = False,
                kpt_values: int = 0) -> Iterator[ImportItem | Skip]:
    nc = max(names) + 1 if names else None
    shared = shared_label_files(images)
    for image_path in images:
        label_path = label_path_for(image_path)
        if not path_is_file(image_path):  # an image list's entry naming no file
            yield Skip(image_path, "missing image", f"{image_path}: no such image (listed in the "
                                                    f"dataset's image list)")
            continue
        special = regular_file_problem(label_path, folder_ok=True)
        if special:  # a pipe, a device, a socket
            yield Skip(label_path, "refused label",
                       f"cannot read label file {label_path}: {special}")
            continue
        if os.path.islink(label_path) and not path_exists(label_path):  # leads nowhere
            yield Skip(label_path, "refused label", f"cannot read label file {label_path}: "
                                                    f"{missing_file_why(label_path)}")
            continue
        if not path_is_file(label_path):
            found = ": a folder, not a file" if path_exists(label_path, folder=True) else ""
            yield Skip(image_path, "no label file",
                       f"{image_path}: no label file (looked for {label_path}{found})")
            continue
        if label_path in shared:  # before: both images got the boxes of one of them
            yield Skip(image_path, "shared label file",
                       shared_label_problem(image_path, label_path, shared[label_path]))
            continue
        try:
            parsed = read_yolo_labels(label_path, nc, kpt_values)
        except LabelError as exc:
            yield Skip(label_path, "refused label", str(exc))
            continue
        if parsed.refused:
            yield Skip(label_path, "refused label", parsed.refused[0])
            continue
        unnamed_id = next((int(c) for c in parsed.labels[:, 0] if names and int(c) not in names), None)
        if unnamed_id is not None:  # names with gaps ({0: car, 5: dog}): class 1 has no name
            ids = ", ".join(str(i) for i in list(names)[:10]) + (", ..." if len(names) > 10 else "")
            yield Skip(label_path, "refused label",
                       f"{label_path}: class {unnamed_id} has no name (the dataset names ids {ids})")
            continue
        read = _read(image_path)
        if isinstance(read, Skip):
            yield read
            continue
        image, digest = read
        h, w = image.shape[:2]
        rows = parsed.labels.astype(np.float64)
        xyxy = np.stack([(rows[:, 1] - rows[:, 3] / 2) * w, (rows[:, 2] - rows[:, 4] / 2) * h,
                         (rows[:, 1] + rows[:, 3] / 2) * w, (rows[:, 2] + rows[:, 4] / 2) * h], axis=1)
        box_names = [names[int(c)] if names else f"class_{int(c)}" for c in rows[:, 0]]
        keep = [i for i, n in enumerate(box_names) if not is_ignore_name(n)]
        if box_names and not keep and not len(parsed.empty):
            yield only_ignored_skip(label_path, str(label_path), len(box_names), 0)
            continue
        small = under_pixels(rows, w, h, MIN_BOX_PX)  # as dir:// streams it: dropped, counted
        kept = [i for i in keep if not small[i]]
        if not kept and (keep or len(parsed.empty)):  # before: stored as showing no object
            example = (parsed.empty[0] if parsed.empty else
                       f"row {labels_to_text(rows[keep[0]]).strip()}")
            yield Skip(label_path, "bad box",
                       f"every box of {label_path} has no width or height or is under a pixel "
                       f"in the {w}x{h} image ({example}); the image is not stored as one "
                       f"showing no object")
            continue
        yield ImportItem(image, [box_names[i] for i in kept], _clip_boxes(xyxy[kept], image.shape),
                         image_path, ignored=len(box_names) - len(keep), content_hash=digest,
                         dataset_ids=tuple(int(rows[i, 0]) for i in kept) if unnamed else None,
                         empty=len(parsed.empty) + len(keep) - len(kept))


def _labels_without_image(images: list[Path]) -> Iterator[Skip]:
    """A ``label without image`` skip for each label file in the dataset's ``labels/`` folders
    that no image takes and that has no image of its name on disk (an image renamed or deleted
    after labelling, a suffix typo): said, so that nothing is lost unsaid. Label files beside
    their images (labelImg's layout, where other text files live too), and those of a file on
    disk that is no image the dataset lists (an image a list leaves out; a ``.gif``, said as
    ``not an image``) are not counted."""
    label_dirs: dict[Path, Path] = {}
    for image in images:
        folder = label_path_for(image).parent
        if folder != image.parent:
            label_dirs.setdefault(folder, image.parent)
    taken = {label_path_for(image) for image in images}
    for folder, image_dir in label_dirs.items():
        try:
            labels = sorted(p for p in folder.glob("*.txt") if p not in taken and p.is_file())
            # each folder listed once (a look-up per label file was quadratic: 10 s at 10,000)
            on_disk = _file_stems(image_dir) if labels else set()
        except OSError:
            continue
        for label in labels:
            if label.name in _NAMES_FILES or label.stem in on_disk or not _reads_as_labels(label):
                continue  # a names file; an image a list leaves out, a file of another kind;
                # a text file of another kind (README.txt)
            yield Skip(label, "label without image",
                       f"{label}: a label file no image takes (no image named {label.stem} in "
                       f"{image_dir})")


def _file_stems(folder: Path) -> set[str]:
    """The stems of a folder's files (not of its sub-folders: a folder named ``x.jpg`` is no
    image ``x``; a link to nothing, a pipe or a device is: it was skipped as such, and its label
    file is no orphan), read in one listing.

    Raises:
        OSError: the folder cannot be listed.
    """
    with os.scandir(folder) as entries:  # a pipe or a device named x.jpg is skipped as such
        return {Path(e.name).stem for e in entries if not e.is_dir()}


def _reads_as_labels(path: Path) -> bool:
    """Whether a text file looks like YOLO label rows (empty, or a first row of numbers), not
    some other text (a README beside the labels)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        [float(value) for value in first.split()]
    except ValueError:
        return False
    return True


def _inside_name(file_name: str) -> Path:
    """An annotation's image name as a path inside the dataset (``\\`` read as ``/``); a name
    that climbs out with ``..`` or is absolute keeps its base name only, so an annotation file
    can never point the import at files outside the dataset (VOC and COCO alike)."""
    rel = Path(file_name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        rel = Path(rel.name)
    return rel


def _spelt_otherwise(file_name: str) -> list[str]:
    """Other spellings of an annotation's image name that may be the file's: URL-decoded
    (``%20``: Label Studio's upload names) and in either Unicode normal form (macOS writes
    the ``Ü`` of ``Überflug`` decomposed, a JSON written elsewhere composed); the name itself
    not included."""
    out = []
    for text in dict.fromkeys((file_name, unquote(file_name) if "%" in file_name else file_name)):
        out += [text, unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text)]
    return [text for text in dict.fromkeys(out) if text != file_name]


def _voc_image(xml_path: Path, root: Path, filename: str | None,
               sub: Path = Path()) -> Path | None:
    """The image of an annotation: ``<filename>`` in ``JPEGImages/`` (or ``images/``, or beside
    the xml), also under the xml's own sub-folder (``Annotations/sub/k.xml`` ->
    ``JPEGImages/sub/``), else an image with the ``<filename>``'s stem there (a name written
    without its suffix, ``frame_7``, or with another one, ``frame_7.jpg`` for
    ``frame_7.png``), else one with the xml's stem."""
    folders = [root / "JPEGImages", root / "images", xml_path.parent]
    folders = list(dict.fromkeys([*(f / sub for f in folders[:2]), *folders]))
    stems = [xml_path.stem]
    if filename:
        for spelt in (filename, *_spelt_otherwise(filename)):
            rel = _inside_name(spelt)
            for name in dict.fromkeys((rel, Path(rel.name))):
                for folder in folders:
                    if name.name and path_is_file(folder / name):
                        return folder / name
        rel = _inside_name(filename)
        stems.insert(0, Path(rel.name).stem if is_image(rel.name) else rel.name)
    for stem in dict.fromkeys(s for s in stems if s):
        for folder in folders:
            for p in sorted(folder.glob(glob.escape(stem) + ".*")):
                if is_image(p):
                    return p
    return None


def _voc_flag(text: str | None) -> bool:
    """A VOC flag such as ``<difficult>1</difficult>`` (``1``, ``1.0`` or ``true``) is set."""
    value = (text or "").strip().lower()
    if value in ("true", "yes"):
        return True
    try:
        return float(value) == 1.0
    except ValueError:
        return False


def _sub_pixel_coordinates(tree: ET.ElementTree) -> bool:
    """Whether an annotation file writes its box corners with a decimal point (``197.00``, as
    CVAT's "Pascal VOC" export does, through datumaro): such a tool keeps 0-based, sub-pixel
    corners, and reads them back as they are. The original VOC and the tools that follow it
    (labelImg, the VOC devkit) write whole, 1-based pixel numbers (``198``)."""
    boxes = (obj.find("bndbox") for obj in tree.getroot().iter("object"))  # not a <part>'s
    return any("." in (corner.text or "") for box in boxes if box is not None
               for corner in box if corner.tag in ("xmin", "ymin", "xmax", "ymax"))


def _voc_boxes(xml_path: Path,
               tree: ET.ElementTree) -> tuple[list[str], list[list[float]], int, int, list[str]]:
    """The names, 0-based pixel boxes, ignore regions dropped, difficult objects left out and
    written form of an xml's objects.

    Raises:
        LabelError: an object without a name or a usable ``<bndbox>``.
    """
    names, boxes, ignored, difficult, written = [], [], 0, 0, []
    origin = 0 if _sub_pixel_coordinates(tree) else 1
    for k, obj in enumerate(tree.getroot().iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise LabelError(f"{xml_path}: object {k} has no <name>")
        if is_ignore_name(name):
            ignored += 1
            continue
        if _voc_flag(obj.findtext("difficult")):
            difficult += 1  # left out, as ultralytics' VOC.yaml does
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise LabelError(f"{xml_path}: object {k} ({_short(name)}) has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(bnd.findtext(t) or "") for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise LabelError(f"{xml_path}: object {k} ({_short(name)}) has a non-numeric <bndbox>") from None
        if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
            raise LabelError(f"{xml_path}: object {k} ({_short(name)}) has a non-finite <bndbox> value "
                             f"({xmin}, {ymin}, {xmax}, {ymax})")
        names.append(name)
        boxes.append([xmin - origin, ymin - origin, xmax - origin, ymax - origin])
        written.append(f"object {k} <bndbox> xmin {xmin:g} ymin {ymin:g} xmax {xmax:g} ymax {ymax:g}")
    return names, boxes, ignored, difficult, written


def iter_voc(path: str | Path) -> LabelledItems:
    """Images of a Pascal VOC folder (``Annotations/`` + ``JPEGImages/``) with their boxes.

    Args:
        path: the VOC folder (or its ``Annotations`` folder).

    Returns:
        An iterator of :class:`ImportItem` or :class:`Skip`, in annotation-file name order.

    Raises:
        ConfigError: a file (an ``.xml`` or another) instead of a folder, or no
            ``Annotations/*.xml``.
    """
    root = Path(path).expanduser().resolve()
    if root.is_file():
        folder = root.parent.parent if root.parent.name == "Annotations" else root.parent
        example = f" (e.g. {folder})" if root.suffix.lower() == ".xml" else ""
        raise ConfigError(f"{root} is a file, not a Pascal VOC dataset: give the folder holding "
                          f"Annotations/ and JPEGImages/{example}")
    ann = voc_annotations(root) or root
    if ann.name.lower() == "annotations" and ann == root:
        root = root.parent
    # a pipe, device or dangling link named .xml is listed too: read, it is skipped saying
    # what it is (left out, its image read "no annotation file names it")
    xmls = sorted(p for p in ann.rglob("*") if p.suffix.lower() == ".xml" and not p.is_dir()
                  and not _hidden(p, ann))
    if not xmls:
        raise ConfigError(f"no Pascal VOC annotations (*.xml) in {ann}")
    read = [(xml_path, _voc_entry(root, ann, xml_path)) for xml_path in xmls]
    return LabelledItems(_voc_items(root, ann, xmls, read),
                         lambda: [entry[0] for _, entry in read if not isinstance(entry, Skip)],
                         image_classes=lambda: {entry[0]: frozenset(entry[1]) for _, entry in read
                                                if not isinstance(entry, Skip)})


def _parse_voc(xml_path: Path) -> ET.ElementTree | Skip:
    """An annotation file's XML tree, its tags without namespace (an exporter that declares
    ``xmlns="..."`` on ``<annotation>`` puts every element in it: its objects were found in
    none, and every image was imported as background), or a :class:`Skip` naming why it is not
    one: unreadable, not XML, an encoding the parser does not know or support (``Shift_JIS``, a
    made-up name), or a root element other than ``<annotation>``."""
    try:
        tree = ET.ElementTree(ET.fromstring(read_input_bytes(xml_path, MAX_LABEL_BYTES,
                                                             "an annotation file")))
    except ET.ParseError as exc:
        return Skip(xml_path, "bad annotation", f"{xml_path}: not valid XML ({exc})")
    except OSError as exc:
        why = missing_file_why(xml_path)
        return Skip(xml_path, "bad annotation", f"cannot read {xml_path}: "
                                                f"{why if why != 'not found' else exc.strerror or exc}")
    except (LookupError, ValueError) as exc:  # an unknown or a multi-byte encoding
        return Skip(xml_path, "bad annotation", f"{xml_path}: cannot be read as XML ({exc})")
    for element in tree.iter():  # a default namespace (xmlns="...") prefixes every tag
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = element.tag.rpartition("}")[2]
    tag = str(tree.getroot().tag)
    if tag.lower() != "annotation":
        return Skip(xml_path, "bad annotation", f"{xml_path}: not a Pascal VOC annotation (its "
                                                f"root element is <{_short(tag)}>, not <annotation>)")
    return tree


def _voc_items(root: Path, ann: Path, xmls: list[Path],
               read: list[tuple]) -> Iterator[ImportItem | Skip]:
    """The items of a VOC folder's annotation files, in their order; every file is read first
    (``read``: each xml with its :func:`_voc_entry`), so that an image two files name is known
    before either is imported: both are skipped (``duplicate image``: whose boxes are they?
    one file's ``<filename>`` is wrong)."""
    naming: dict[Path, list[Path]] = defaultdict(list)
    for xml_path, entry in read:
        if not isinstance(entry, Skip):
            naming[entry[0]].append(xml_path)
    for xml_path, entry in read:
        if isinstance(entry, Skip):
            yield entry
            continue
        image_path, names, boxes, ignored, difficult, written, declared = entry
        if len(naming[image_path]) > 1:
            others = ", ".join(str(p) for p in naming[image_path] if p != xml_path)
            yield Skip(xml_path, "duplicate image",
                       f"{xml_path}: its image {image_path} is also annotated by {others}; whose "
                       f"boxes are they? (one annotation file per image: check their <filename>)")
            continue
        yield _labelled_item(xml_path, str(xml_path), image_path, boxes, names, ignored, declared,
                             written, difficult)
    # an image no annotation file names (nor one skipped above, by its stem) is counted too
    named = {entry[0].resolve() for _, entry in read if not isinstance(entry, Skip)}
    stems = {xml_path.stem for xml_path in xmls}
    flat = ann == root  # labelImg's layout: the images beside their xml files, not below
    for folder in dict.fromkeys((root / "JPEGImages", root / "images", *([root] if flat else []))):
        images = (sorted(p for p in (folder.iterdir() if folder == root else folder.rglob("*"))
                         if is_image(p) and not _hidden(p, folder)) if folder.is_dir() else [])
        for image in images:
            if image.resolve() not in named and image.stem not in stems:
                yield Skip(image, "no annotation file",
                           f"{image}: no annotation file in {ann} names it")


def _voc_entry(root: Path, ann: Path, xml_path: Path) -> tuple | Skip:
    """One annotation file read: ``(image path, names, boxes, ignored, difficult, written,
    declared size)`` (see :func:`_voc_boxes`), or a :class:`Skip`."""
    tree = _parse_voc(xml_path)
    if isinstance(tree, Skip):
        return tree
    try:
        names, boxes, ignored, difficult, written = _voc_boxes(xml_path, tree)
    except LabelError as exc:
        return Skip(xml_path, "bad annotation", str(exc))
    filename = (tree.getroot().findtext("filename") or "").strip() or None
    image_path = _voc_image(xml_path, root, filename, xml_path.parent.relative_to(ann))
    if image_path is None:
        outside = " (a name outside the dataset is looked up by its base name only)" if (
            filename and _inside_name(filename) != Path(filename.replace("\\", "/"))) else ""
        wanted = _short(filename or xml_path.stem + ".*", 200)
        looked = (root / "JPEGImages" if (root / "JPEGImages").is_dir() else
                  root / "images" if (root / "images").is_dir() else xml_path.parent)
        return Skip(xml_path, "missing image",
                    f"{xml_path}: image {wanted} not found in {looked}{outside}")
    size = tree.getroot().find("size")
    declared = None if size is None else _declared_size(size.findtext("width"), size.findtext("height"))
    return image_path, names, boxes, ignored, difficult, written, declared


def _declared_size(width: object, height: object) -> tuple[int, int] | None:
    """An annotation's declared image size as ``(width, height)``: each a positive whole number
    (an int, an integral float, or such a number as text); ``None`` when either is missing or
    invalid (0, negative, fractional, not a number)."""
    sides = []
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        try:
            number = float(value.strip()) if isinstance(value, str) else float(value)
        except (ValueError, OverflowError):
            return None
        if not math.isfinite(number) or not number.is_integer() or number <= 0:
            return None
        sides.append(int(number))
    return sides[0], sides[1]


def _labelled_item(source: Path, where: str, image_path: Path, boxes: list, names: list[str],
                   ignored: int, declared: tuple[int, int] | None = None,
                   written: list[str] | None = None, difficult: int = 0) -> ImportItem | Skip:
    """Read an annotated image, scale its pixel boxes from the declared size to the decoded
    one and clip them (VOC and COCO alike; module docstring).

    Args:
        source: the annotation file.
        where: how messages name the annotation.
        image_path: the image.
        boxes: ``[x1, y1, x2, y2]`` in pixels of the declared size (of the image when none).
        names: class name of each box.
        ignored: ignore regions dropped.
        declared: the annotation's valid image size ``(width, height)``, or ``None``.
        written: how the file writes each box (``annotation 7 bbox [3, 4, 0, 5] (x, y, w, h)``), for
            messages; ``None``: the pixel box is shown.
        difficult: VOC ``<difficult>1`` objects left out.

    Returns:
        The item, or a :class:`Skip` naming ``where`` when the image does not read, its
        declared size is the decoded one rotated (``size mismatch``), or a box has no area
        inside it (``bad box``); boxes written with no width or height are dropped and
        counted (module docstring).
    """
    if not boxes and (ignored or difficult):  # before: stored as showing no object
        return only_ignored_skip(source, where, ignored, difficult)
    read = _read(image_path)
    if isinstance(read, Skip):
        return read
    image, digest = read
    height, width = image.shape[:2]
    xyxy = np.array(boxes, np.float64).reshape(-1, 4)
    scaled = ""
    if declared is not None and declared != (width, height):
        if declared == (height, width):
            return Skip(source, "size mismatch",
                        f"{where}: annotated as {declared[0]}x{declared[1]} but {image_path} decodes "
                        f"as {width}x{height}, rotated (EXIF orientation?)")
        scaled = (f" (annotated for a {declared[0]}x{declared[1]} image, scaled to the "
                  f"{width}x{height} that {image_path.name} decodes as)")
    far = _far_outside(xyxy, *(declared or (width, height)))
    if far is not None:
        shown = written[far] if written else f"box {boxes[far]}"
        size = (f"{declared[0]}x{declared[1]} image the annotation declares ({image_path.name} "
                f"decodes as {width}x{height})" if scaled else f"{width}x{height} image")
        return Skip(source, "bad box", f"{where}: {shown} ({_short(names[far])}) lies far outside "
                                       f"the {size}")
    # written with no width or height, or under a pixel on the image it was drawn on (the
    # declared size, when the annotation gives one): a click, as a YOLO row's
    sides = np.minimum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])
    empty = _zero_extent(xyxy) | ((sides >= 0) & (sides < MIN_BOX_PX))
    if len(xyxy) and empty.all():  # before: stored as an image showing no object
        return _no_box_left(source, where, xyxy, boxes, names, written,
                            *(declared or (width, height)))
    normalised = _normalised(xyxy[empty], *(declared or (width, height)))
    if normalised is not None:  # beside pixel boxes: dropped as a click, taught as background
        i = int(np.flatnonzero(empty)[normalised])
        shown = written[i] if written else f"box {boxes[i]}"
        return Skip(source, "normalised box",
                    f"{where}: {shown} ({_short(names[i])}) lies within 0..1: normalised "
                    f"coordinates beside pixel ones; export every box in pixels")
    if scaled:
        xyxy = xyxy * np.array([width / declared[0], height / declared[1]] * 2)
    clipped = _clip_boxes(xyxy, image.shape)
    keep = np.flatnonzero(~empty)  # dropped, counted; the image keeps its other boxes
    bad = _degenerate(clipped[keep], width, height)
    if bad is not None:
        i = int(keep[bad[0]])
        shown = written[i] if written else f"box {boxes[i]}"
        why = bad[1]
        if xyxy[i, 2] < xyxy[i, 0] or xyxy[i, 3] < xyxy[i, 1]:  # before: "no area inside the
            # image", which sent the user looking at the image's size
            why = ("has its corners swapped (a right or lower corner before a left or upper "
                   "one; xmin < xmax and ymin < ymax, or a positive width and height, make a box)")
        return Skip(source, "bad box", f"{where}: {shown} ({_short(names[i])}) {why}{scaled}")
    rescaled = (f"{where}: annotated for a {declared[0]}x{declared[1]} image, {image_path.name} "
                f"decodes as {width}x{height}" if scaled else "")
    return ImportItem(image, [names[i] for i in keep], clipped[keep], image_path, ignored=ignored,
                      difficult=difficult, content_hash=digest, empty=int(empty.sum()),
                      rescaled=rescaled)


ONLY_IGNORED = "only ignored objects"
"""Skip reason of an image whose every annotation is an ignore region or a VOC difficult
object: stored as showing no object, it would teach those objects as background."""


def only_ignored_skip(source: Path, where: str, ignored: int, difficult: int) -> Skip:
    """The :data:`ONLY_IGNORED` skip of an image annotated with ``ignored`` ignore regions and
    ``difficult`` difficult objects and nothing else."""
    what = [f"{n} {kind}" for n, kind in ((ignored, "ignore region(s)"),
                                          (difficult, "difficult object(s)")) if n]
    return Skip(source, ONLY_IGNORED,
                f"{where}: its only annotations are {' and '.join(what)}, which are not learnt; "
                f"the image is not stored as one showing no object")


def _normalised(xyxy: np.ndarray, width: int, height: int) -> int | None:
    """The first pixel box ``(N, 4)`` that reads as normalised coordinates: every corner
    within 0..1, some width and height, on an image larger than 2 px a side (no drawing tool
    makes such a box by hand); None when there is none."""
    if max(width, height) <= 2 or not len(xyxy):
        return None
    inside = (np.abs(xyxy) <= 1.0).all(axis=1) & ~_zero_extent(xyxy)
    found = np.flatnonzero(inside)
    return int(found[0]) if found.size else None


def _no_box_left(source: Path, where: str, xyxy: np.ndarray, boxes: list, names: list[str],
                 written: list[str] | None, width: int, height: int) -> Skip:
    """The skip of an annotation whose every box ``(N, 4)`` (pixels, as written) has no width
    or height, or is under a pixel: coordinates within 0..1 are normalised ones where pixels
    belong (``normalised box``), anything else a ``bad box``. Either way the image is not
    stored as one showing no object, which would teach its objects as background."""
    shown = written[0] if written else f"box {boxes[0]}"
    if _normalised(xyxy, width, height) is not None and bool((np.abs(xyxy) <= 1.0).all()):
        return Skip(source, "normalised box",
                    f"{where}: every box lies within 0..1 (e.g. {shown}, {_short(names[0])}): "
                    f"normalised coordinates, where this format's boxes are pixels of the "
                    f"{width}x{height} image; export pixel coordinates")
    return Skip(source, "bad box", f"{where}: every box has no width or height or is under a "
                                   f"pixel (e.g. {shown}, {_short(names[0])}); the image is not "
                                   f"stored as one showing no object")


def _coco_image(json_path: Path, file_name: str) -> Path | None:
    """The image a COCO ``file_name`` names, looked up beside the JSON (or in ``images/``, or
    one folder up, or in ``images/<subset>/`` for ``instances_<subset>.json``); a name that
    climbs out with ``..`` or is absolute matches by its base name only (see
    :func:`_inside_name`); else the name spelt otherwise (:func:`_spelt_otherwise`)."""
    found = _coco_image_as_written(json_path, file_name)
    for spelt in _spelt_otherwise(file_name) if found is None else ():
        found = _coco_image_as_written(json_path, spelt)
        if found is not None:
            break
    return found


def _coco_image_as_written(json_path: Path, file_name: str) -> Path | None:
    """:func:`_coco_image` for one spelling of the name."""
    rel = _inside_name(file_name)
    base = json_path.parent
    roots = [base, base / "images", base.parent, base.parent / "images"]
    subset = json_path.stem.removeprefix("instances_")
    if subset != json_path.stem and subset:  # CVAT / Datumaro: images/<subset>/<file_name>
        roots += [base / "images" / subset, base.parent / "images" / subset]
    for r in roots:
        if path_is_file(r / rel):
            return r / rel
    for r in roots:
        if rel.name and path_is_file(r / rel.name):
            return r / rel.name
    for r in roots:  # 'DJI_0001.jpg' for DJI_0001.JPG: a camera's capitals, a tool's lower case
        for name in dict.fromkeys((rel, Path(rel.name))):
            found = _suffix_case_twin(r / name)
            if found is not None:
                return found
    return None


def _suffix_case_twin(path: Path) -> Path | None:
    """The image file named as ``path`` but for the case of its suffix (``a.JPG`` for
    ``a.jpg``), or ``None``; the first in name order where several are."""
    if not path.name or not path.suffix or not path.parent.is_dir():
        return None
    for candidate in sorted(path.parent.glob(glob.escape(path.stem) + ".*")):
        if (candidate.stem == path.stem and candidate.suffix.lower() == path.suffix.lower()
                and path_is_file(candidate)):
            return candidate
    return None


def _subset_hint(json_path: Path) -> str:
    subset = json_path.stem.removeprefix("instances_")
    return f" or images/{subset}/" if subset != json_path.stem and subset else ""


def load_coco(json_path: Path) -> dict:
    """Read a COCO json.

    Args:
        json_path: the file.

    Returns:
        The parsed object: a dict with an ``images`` list, ``annotations`` and ``categories``
        lists when present, each category a ``{"id", "name"}`` object (see
        :func:`coco_categories`).

    Raises:
        ConfigError: unreadable, not JSON (nesting too deep included), no ``images`` list, an
            ``annotations`` or ``categories`` that is not a list, or a malformed category.
    """
    try:
        text = read_input_text(json_path, MAX_JSON_BYTES, "a COCO file", "utf-8-sig")
        if not text.strip():
            raise ConfigError(f"{json_path}: not a COCO file (it is empty)")
        data = json.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read COCO file {json_path}: {encoding_problem(exc)}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read COCO file {json_path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{json_path}: not JSON ({json_problem(exc)})") from None
    except RecursionError:
        raise ConfigError(f"{json_path}: not a COCO file (JSON nested too deep)") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ConfigError(f"{json_path}: not a COCO file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        got = (f", got {type(data.get('images')).__name__}"
               if isinstance(data, dict) and "images" in data else "")
        native = (isinstance(data, list) and bool(data) and isinstance(data[0], dict)
                  and "annotations" in data[0] and "data" in data[0])
        hint = ("; this is Label Studio's own JSON export: export the project as COCO or YOLO "
                "instead" if native else "")
        raise ConfigError(f"{json_path}: not a COCO file (no 'images' list{got}){hint}")
    for key in ("annotations", "categories"):
        if key in data and not isinstance(data[key], list):
            raise ConfigError(f"{json_path}: '{key}' must be a list, got {type(data[key]).__name__}")
    coco_categories(json_path, data)
    return data


def _coco_id(value: object) -> int | str | None:
    """A COCO id (image, category) as a key: an int or a string, an integral float or a string
    of ASCII digits as its int (a tool that writes ``"id": "1"`` for a category and
    ``"category_id": 1`` for its boxes means one id); ``None`` for anything else (a list, an
    object, a boolean, null)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    if isinstance(value, (int, str)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def coco_categories(json_path: Path, data: dict) -> dict[int | str, str]:
    """The category id -> name mapping of a COCO json's ``categories``.

    Args:
        json_path: the file (named in errors).
        data: its parsed object.

    Returns:
        Category id -> class name (stripped; a number is read as its text).

    Raises:
        ConfigError: a category that is not an object, has no int or string ``id``, has no
            name (missing, null, empty), or reuses the id of a category of another name; or
            two categories that are one class (one name, or names that differ only in case or
            separators: ``Car`` and ``car``), as a ``data.yaml``'s names are refused
            (:func:`edgecl.data.class_names.name_clash`; before, a dataset written from them
            split one class over two ids, and an import reported two classes added for one).
    """
    categories: dict[int | str, str] = {}
    for k, cat in enumerate(data.get("categories") or []):
        where = f"{json_path}: categories[{k}]"
        if not isinstance(cat, dict):
            raise ConfigError(f"{where} is not an object {{\"id\", \"name\"}}")
        cid = _coco_id(cat.get("id"))
        if cid is None:
            raise ConfigError(f"{where} has no valid id (an integer): {_short(cat.get('id'))}")
        name = class_name_text(cat.get("name"))
        if name is None:
            raise ConfigError(f"{where} (id {_short(cid)}) needs a name, got {_short(cat.get('name'))}")
        if categories.get(cid, name) != name:
            raise ConfigError(f"{where}: category id {_short(cid)} is used for both "
                              f"'{_short(categories[cid])}' and '{_short(name)}'")
        categories[cid] = name
    groups = _grouping_categories(data, categories)
    clash = name_clash({k: n for k, n in categories.items() if k not in groups})
    if clash:
        raise ConfigError(f"{json_path}: {clash}")
    return categories


def iter_coco(path: str | Path) -> LabelledItems:
    """Images of COCO JSONs (CVAT, Label Studio, Roboflow exports) with their boxes.

    Args:
        path: the json, or a folder holding one or more (see :func:`find_coco_jsons`: every
            one is read, e.g. CVAT's ``instances_train.json`` and ``instances_val.json``).

    Returns:
        An iterator of :class:`ImportItem` or :class:`Skip`, file after file, in each json's
        image order.

    Raises:
        ConfigError: no json, not JSON, or no ``images`` list.
    """
    path = Path(path).expanduser().resolve()
    json_paths = [path] if path.is_file() else find_coco_jsons(path)
    broken = [] if path.is_file() else broken_coco_jsons(path)
    if not json_paths and broken:
        load_coco(broken[0])  # raises: says what is wrong with it
    if not json_paths:
        raise ConfigError(f"no COCO json in {path} (looked on top, in {path / 'annotations'} "
                          f"and in {', '.join(COCO_SPLIT_FOLDERS)}/)")
    loaded, skips = [], []
    for p in json_paths:  # every file checked before any is read
        try:
            loaded.append((p, load_coco(p)))
        except ConfigError as exc:
            if path.is_file():
                raise
            skips.append(Skip(p, "bad annotation file", str(exc)))
    for p in broken:
        try:
            load_coco(p)
        except ConfigError as exc:
            skips.append(Skip(p, "bad annotation file", str(exc)))
    if not loaded:
        raise ConfigError(skips[0].message)
    def image_paths() -> list[Path]:
        found = (_coco_image(p, entry["file_name"]) for p, data in loaded
                 for entry in data["images"]
                 if isinstance(entry, dict) and isinstance(entry.get("file_name"), str)
                 and entry["file_name"])
        return list(dict.fromkeys(path for path in found if path is not None))

    return LabelledItems(itertools.chain(skips, (item for p, data in loaded
                                                 for item in _coco_items(p, data))), image_paths,
                         image_classes=lambda: _coco_image_classes(loaded))


def _coco_image_classes(loaded: list[tuple[Path, dict]]) -> dict[Path, frozenset[str]]:
    """Per image file of parsed COCO jsons, the category names its annotations name (a file
    listed twice gets both entries' names; a json whose categories are refused, or an
    annotation naming no known category, adds nothing)."""
    shown: dict[Path, set[str]] = defaultdict(set)
    for json_path, data in loaded:
        try:
            categories = coco_categories(json_path, data)
        except ConfigError:
            continue
        per_image: dict = defaultdict(set)
        for ann in data.get("annotations") or []:
            if isinstance(ann, dict) and _coco_id(ann.get("category_id")) in categories:
                per_image[_coco_id(ann.get("image_id"))].add(
                    categories[_coco_id(ann.get("category_id"))])
        for info in data["images"]:
            if not isinstance(info, dict) or not isinstance(info.get("file_name"), str):
                continue
            image_path = _coco_image(json_path, info["file_name"]) if info["file_name"] else None
            if image_path is not None:
                shown[image_path] |= {n for n in per_image.get(_coco_id(info.get("id")), ())
                                      if not is_ignore_name(n)}
    return {path: frozenset(names) for path, names in shown.items()}


def _coco_bbox(bbox: object) -> list[float] | None:
    """A COCO ``bbox`` as four finite floats, or ``None`` (not a list of 4 numbers, a boolean,
    NaN, infinity, or an integer beyond the float range)."""
    if not isinstance(bbox, list) or len(bbox) != 4:
        return None
    out = [_finite_float(v) for v in bbox]
    return None if None in out else out


def _finite_float(value: object) -> float | None:
    """A JSON number as a finite float, or ``None`` (a boolean, text, NaN, infinity, or an
    integer beyond the float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _coco_polygon_bbox(segmentation: object) -> list[float] | None:
    """The ``[x, y, w, h]`` enclosing a COCO polygon segmentation (a list of polygons, each a
    flat list ``[x1, y1, x2, y2, x3, y3, ...]`` of at least 3 points, as COCO's own ``bbox``
    encloses them), or ``None``: absent, an RLE mask (a dict), or not finite numbers."""
    if not isinstance(segmentation, list) or not segmentation:
        return None
    xs, ys = [], []
    for polygon in segmentation:
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            return None
        values = [_finite_float(v) for v in polygon]
        if None in values:
            return None
        xs += values[0::2]
        ys += values[1::2]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _coco_items(json_path: Path, data: dict) -> Iterator[ImportItem | Skip]:
    """The items of one parsed COCO json (see :func:`iter_coco` and the module docstring)."""
    categories = coco_categories(json_path, data)
    per_image: dict[int | str, list[tuple[int, dict]]] = defaultdict(list)
    for j, ann in enumerate(data.get("annotations") or []):
        image_id = _coco_id(ann.get("image_id")) if isinstance(ann, dict) else None
        if image_id is None:  # belongs to no image: counted, so that nothing is lost unsaid
            what = f"image_id {_short(ann.get('image_id'))}" if isinstance(ann, dict) else "object"
            yield Skip(json_path, "bad annotation", f"{json_path}: annotations[{j}] has no valid "
                                                    f"{what}", counts_file=False)
            continue
        per_image[image_id].append((j, ann))
    entries = list(enumerate(data["images"]))
    id_count = Counter(_coco_id(info.get("id")) for _, info in entries if isinstance(info, dict))
    orphans = [(j, ann, image_id) for image_id, anns in per_image.items() if image_id not in id_count
               for j, ann in anns]  # ultralytics' convert_coco: a KeyError
    for j, ann, image_id in sorted(orphans, key=lambda orphan: orphan[0]):
        yield Skip(json_path, "bad annotation",
                   f"{json_path}: annotations[{j}] (id {_short(ann.get('id'))}) belongs to "
                   f"image_id {_short(image_id)}, which no image of the file has",
                   counts_file=False)
    located = []
    for k, info in entries:
        where = f"{json_path}: images[{k}]"
        if not isinstance(info, dict) or not isinstance(info.get("file_name"), str) or not info["file_name"]:
            yield Skip(json_path, "bad annotation", f"{where} has no file_name")
            continue
        where = f"{where} ({_short(info['file_name'], 200)})"
        image_id = _coco_id(info.get("id"))
        if image_id is None:
            yield Skip(json_path, "bad annotation", f"{where} has no valid id: {_short(info.get('id'))}")
            continue
        if id_count[image_id] > 1:  # whose boxes are they? neither image may get the other's
            yield Skip(json_path, "duplicate image id",
                       f"{where}: image id {image_id!r} is used by {id_count[image_id]} images")
            continue
        image_path = _coco_image(json_path, info["file_name"])
        if image_path is None:
            yield Skip(json_path, "missing image", f"{where}: image not found "
                                                   f"beside {json_path.name} or in images/"
                                                   f"{_subset_hint(json_path)}")
            continue
        located.append((k, where, info, image_path, per_image.get(image_id, [])))
    yield from _coco_files(json_path, categories, located)


def _coco_files(json_path: Path, categories: dict, located: list) -> Iterator[ImportItem | Skip]:
    """One item per image FILE: the entries of ``images`` that name the same file (``a.jpg``
    listed twice with its own ids) give it the boxes of them all, as ultralytics'
    ``convert_coco`` appends every entry's rows to the file's one label file (an annotation
    listed under both entries counts once; the size one of them declares is used). Entries
    that declare different sizes for it, or that write different names found as this one file
    (``x.jpg`` and ``images/x.jpg``, or two upload folders' ``xyz.jpg`` looked up by base name),
    are all skipped (``duplicate image``: whose pixels were annotated?).

    Args:
        json_path: the COCO file.
        categories: its category id -> name.
        located: ``(index, where, image entry, image path, [(index, annotation), ...])`` of
            every usable image entry, in file order.

    Returns:
        The items and skips, in the order of each file's first entry.
    """
    by_file: dict[Path, list] = defaultdict(list)
    for entry in located:
        by_file[entry[3]].append(entry)
    for image_path, group in by_file.items():
        _, where, info = group[0][:3]
        sizes = {_declared_size(e[2].get("width"), e[2].get("height")) for e in group} - {None}
        if len(group) > 1:
            indices = ", ".join(f"images[{e[0]}]" for e in group)
            names = list(dict.fromkeys(e[2]["file_name"].replace("\\", "/") for e in group))
            why = ""
            if len(sizes) > 1:
                shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes, reverse=True))
                why = f"with different sizes ({shown})"
            elif len(names) > 1:
                why = (f"under other names ({', '.join(_short(n, 80) for n in names)}) found as one "
                       f"file {image_path}")
            if why:
                for entry in group:
                    yield Skip(json_path, "duplicate image",
                               f"{entry[1]}: the file is listed {len(group)} times ({indices}) {why}")
                continue
            where = f"{json_path}: {indices} ({_short(info['file_name'], 200)}, one file)"
        yield _coco_item(json_path, where, image_path, categories, _merged_annotations(group),
                         sizes.pop() if sizes else None)


def _merged_annotations(group: list) -> list[tuple[int, dict]]:
    """The annotations of the entries that name one file: each entry's own, less those an
    earlier entry of the file already gave (an annotation repeated under two entries is one
    object; one repeated within an entry stays as it is written)."""
    given: Counter = Counter()
    merged = []
    for entry in group:
        here: Counter = Counter()
        for j, ann in entry[4]:
            key = _annotation_key(ann)
            here[key] += 1
            if here[key] > given[key]:
                merged.append((j, ann))
        given |= here
    return merged


def _annotation_key(ann: dict) -> str:
    """What makes two annotations of one image file the same: category, crowd flag and bbox
    (an annotation listed under two entries of the same file is one object)."""
    return repr((_coco_id(ann.get("category_id")), _flag(ann.get("iscrowd")), ann.get("bbox")))


def _cvat_mask(ann: dict) -> bool:
    """Whether a COCO annotation is a mask shape of CVAT's export: CVAT (through Datumaro)
    writes every mask as an RLE with ``iscrowd`` 1 beside its ``bbox``, and gives each
    annotation its ``attributes`` (``occluded`` among them), which MS-COCO's crowd regions have
    not. There ``iscrowd`` marks the mask's encoding, not a crowd: it is an object (before, an
    export of masks was stored as background images, every object in them taught as
    background). A shape the user marked with CVAT's own ``is_crowd`` attribute stays a crowd."""
    attributes = ann.get("attributes")
    if not isinstance(attributes, dict) or "occluded" not in attributes:
        return False
    return not _flag(attributes.get("is_crowd"))


def _flag(value: object) -> bool:
    """A COCO flag (``iscrowd``, CVAT's ``is_crowd``) as written: a number or boolean, or text
    from exporters that write numbers as strings, read as the number it writes (``"0"`` is
    not set, ``"1.0"`` is, as ``1.0`` is) or a word (``true``, ``yes``, ``on``). Before,
    ``iscrowd: "0"`` read as a crowd, and its object was dropped as an ignore region."""
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return float(text) != 0
        except ValueError:
            return text in ("true", "t", "yes", "y", "on")
    return bool(value)


def _coco_item(json_path: Path, where: str, image_path: Path, categories: dict,
               anns: list[tuple[int, dict]], declared: tuple[int, int] | None) -> ImportItem | Skip:
    """The item of one image file from its annotations ``(index, annotation)``, or a skip."""
    names, boxes, written, ignored = [], [], [], 0
    for _, ann in anns:
        category_id = _coco_id(ann.get("category_id"))
        name = categories.get(category_id) if category_id is not None else None
        if name is None:
            return Skip(json_path, "bad annotation",
                        f"{where}: annotation {_short(ann.get('id'))} has unknown category_id "
                        f"{_short(ann.get('category_id'))}")
        if (_flag(ann.get("iscrowd")) and not _cvat_mask(ann)) or is_ignore_name(name):
            ignored += 1
            continue
        bbox = _coco_bbox(ann.get("bbox"))
        shown = f"bbox {_short(ann.get('bbox'))} (x, y, w, h)"
        absent = ann.get("bbox") in (None, []) or (bbox is not None and not (bbox[2] > 0 and bbox[3] > 0))
        polygon = _coco_polygon_bbox(ann.get("segmentation")) if absent else None
        if polygon is not None and polygon[2] > 0 and polygon[3] > 0:
            # a polygon-only annotation (some exporters leave bbox out, or write it as zeros):
            # its enclosing box
            bbox = polygon
            shown = f"segmentation {_short(ann.get('segmentation'))} (its enclosing box)"
        elif absent and ann.get("segmentation"):
            bbox = None  # a zero bbox beside a mask or polygon it cannot be read from: said, not dropped
        if bbox is None:
            segmentation = ann.get("segmentation")
            why = ("" if not absent or not segmentation else
                   ", and its segmentation is an RLE mask, no polygon" if isinstance(segmentation, dict)
                   else ", and its segmentation is no polygon list [[x1, y1, x2, y2, x3, y3, ...], "
                        "...] of finite numbers")
            return Skip(json_path, "bad annotation",
                        f"{where}: annotation {_short(ann.get('id'))} has no valid bbox [x, y, w, h] "
                        f"(four finite numbers): {_short(ann.get('bbox'))}{why}")
        x, y, w, h = bbox
        degrees = _cvat_rotation(ann) if polygon is None else 0.0
        if degrees:  # CVAT's rotated rectangle: before, learnt upright, off the object
            x, y, w, h = rotated_box_bounds(x, y, w, h, degrees)
            shown += f" rotated {degrees:g} degrees (its enclosing upright box)"
        names.append(name)
        boxes.append([x, y, x + w, y + h])
        written.append(f"annotation {_short(ann.get('id'))} {shown}")
    return _labelled_item(json_path, where, image_path, boxes, names, ignored, declared, written)


def _cvat_rotation(ann: dict) -> float:
    """The rotation in degrees CVAT's COCO export writes for a rotated rectangle
    (``"attributes": {"rotation": 30.0}``; a number or numeric text), 0.0 when none or not a
    finite number."""
    attributes = ann.get("attributes")
    value = attributes.get("rotation") if isinstance(attributes, dict) else None
    try:
        degrees = float(value) if isinstance(value, (int, float, str)) else 0.0
    except ValueError:
        return 0.0
    return degrees % 360.0 if math.isfinite(degrees) else 0.0


def rotated_box_bounds(x: float, y: float, w: float, h: float,
                       degrees: float) -> tuple[float, float, float, float]:
    """The upright box enclosing a ``w`` x ``h`` rectangle at ``(x, y)`` (its unrotated top-left
    corner, pixels) turned by ``degrees`` about its centre, as CVAT stores rotated
    rectangles; the direction of the turn does not change the enclosing box.

    Returns:
        ``(x, y, w, h)`` of the enclosing box, pixels.
    """
    theta = math.radians(degrees)
    cos, sin = abs(math.cos(theta)), abs(math.sin(theta))
    width, height = w * cos + h * sin, w * sin + h * cos
    cx, cy = x + w / 2, y + h / 2
    return cx - width / 2, cy - height / 2, width, height


_READERS = {"yolo": iter_yolo, "voc": iter_voc, "coco": iter_coco}
FORMAT_NAMES = {"yolo": "an ultralytics YOLO dataset", "voc": "a Pascal VOC dataset",
                "coco": "a COCO dataset"}
"""Each dataset format in words (what :func:`detect_format` names)."""


def format_hint(path: str | Path, fmt: str) -> str:
    """What to give instead when a dataset was read as ``fmt`` but looks like another format.

    Args:
        path: the dataset path given.
        fmt: the format it was read as.

    Returns:
        ``"; <path> looks like <format>: give --format <format> (or leave --format out)"``
        when the path shows signs of another format (a COCO json, ``Annotations/`` or an
        ``.xml``, a ``.yaml`` or a ``labels/`` folder); else ``""``.
    """
    path = Path(path).expanduser()
    try:
        detected = detect_format(path)
    except ConfigError:
        return ""
    if detected == "yolo":  # detect_format's default: only say so on a sign of YOLO labels
        is_yaml = path.suffix.lower() in (".yaml", ".yml")
        if not (path.is_file() and is_yaml) and not (path.is_dir() and (
                (path / "labels").is_dir() or any(path.glob("*.yaml")) or any(path.glob("*/labels")))):
            return ""
    if detected == fmt:
        return ""
    return (f"; {path} looks like {FORMAT_NAMES[detected]}: give --format {detected} "
            f"(or leave --format out)")


NO_OBJECT = "no object"
"""Skip reason of an image with no box when an import leaves such images out
(:func:`without_background`)."""


def without_background(items: LabelledItems) -> LabelledItems:
    """``items`` with each image that shows no object skipped (:data:`NO_OBJECT`, counted,
    not listed): for an export that lists frames nobody labelled yet (CVAT's and Label
    Studio's COCO exports list every frame of a task), which would be learnt as background.

    Args:
        items: what :func:`iter_labelled` returned.

    Returns:
        The same images and skips, in the same order; its :attr:`LabelledItems.image_paths`
        leaves out the images whose labels name no class, when the reader can tell.
    """
    def kept() -> Iterator[ImportItem | Skip]:
        for item in items:
            if isinstance(item, ImportItem) and not item.names:
                yield Skip(item.source, NO_OBJECT, "")
            else:
                yield item

    def image_paths() -> list[Path]:
        shown = items.image_classes()
        return [p for p in items.image_paths if not shown or shown.get(p, True)]

    return LabelledItems(kept(), image_paths, items.root, items.image_classes)


def iter_labelled(path: str | Path, fmt: str = "auto") -> LabelledItems:
    """Images and boxes of a labelled dataset in any supported format.

    Args:
        path: the dataset (folder, ``data.yaml`` or COCO json).
        fmt: ``auto`` (see :func:`detect_format`), ``yolo``, ``voc`` or ``coco``.

    Returns:
        An iterator: one :class:`ImportItem` per usable image, one :class:`Skip` per broken file.

    Raises:
        ConfigError: unknown format, missing path, or nothing of that format there.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format '{fmt}'; choose from {', '.join(FORMATS)}")
    if not Path(path).expanduser().exists():
        raise ConfigError(missing_path(path))
    refuse_archive(Path(path).expanduser())
    if fmt == "auto":
        return _READERS[detect_format(path)](path)
    try:
        return _READERS[fmt](path)
    except ConfigError as exc:
        hint = format_hint(path, fmt)
        if hint:
            raise ConfigError(f"{exc}{hint}") from None
        raise


def no_labels_hint(path: str | Path, reasons: dict[str, int]) -> str:
    """What to give instead when an import found images but (mostly) no labels for them.

    Args:
        path: the path the import was given.
        reasons: skip reason -> count.

    Returns:
        ``"; <hint>"`` when ``no label file`` is at least half of the skips, else ``""``.
    """
    if reasons.get("no label file", 0) * 2 < sum(reasons.values()) or not reasons:
        return ""
    hint = format_hint(path, "yolo")  # a COCO or VOC folder read with --format yolo
    if hint:
        return hint
    folder = Path(path)
    parent = folder.parent if folder.is_dir() else folder.parent.parent
    if (parent / "Annotations").is_dir():
        return (f"; {path} looks like the image folder of a Pascal VOC dataset: give the folder "
                f"holding Annotations/ and JPEGImages/ ({parent})")
    if folder.is_dir() and any(p.is_dir() and (p / "Annotations").is_dir() for p in folder.iterdir()):
        return (f"; {path} holds Pascal VOC dataset folder(s) one level down: give one of "
                f"them")
    jsons = [j for j in (_coco_place_jsons(folder) if folder.is_dir() else [])
             if j.name.lower() != "notes.json"]  # Label Studio's YOLO export has one
    if jsons:  # a COCO export cut short (empty, truncated) or not COCO at all
        return (f"; {jsons[0]} is there but is not a COCO file ({_not_coco_reason(jsons[0])}): "
                "export the COCO annotations again, or give the dataset itself")
    return ("; an image folder holds no labels: give the dataset itself (YOLO: the folder with "
            "images/ and labels/, or its data.yaml; Pascal VOC: the folder with Annotations/ and "
            "JPEGImages/; COCO: its .json file)")
