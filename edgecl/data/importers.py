"""Read labelled datasets a user brings: ultralytics YOLO, Pascal VOC, COCO JSON.

:func:`iter_labelled` yields one :class:`ImportItem` per usable image (its pixels and its
boxes with CLASS NAMES, in pixels) or one :class:`Skip` (a one-line reason) per broken
file, so the caller decides what ids the names get (the device's class registry, a new
``data.yaml``). Images are read with THE image rule (:mod:`edgecl.data.images`), YOLO
labels with THE label rule (:mod:`edgecl.data.labels`).

Formats:

- ``yolo``: what :func:`edgecl.data.yolo_dataset.find_dataset` finds (a folder, a
  ``data.yaml``, the Roboflow ``train/valid/test`` export); class names from the yaml, else a
  ``classes.txt`` / ``obj.names`` file beside the images (labelImg, CVAT "YOLO 1.1"), else
  ``class_<id>`` (such items carry their ``dataset_ids``, so the caller may name them). An
  image without a label file is skipped (``no label file``); an empty
  label file is a background image.
- ``voc``: ``Annotations/*.xml`` beside ``JPEGImages/`` (the image named by ``<filename>``,
  else the one with the xml's stem). Boxes follow ultralytics' VOC conversion
  (``VOC.yaml``: pixel coordinates are 1-based, so 1 is subtracted).
- ``coco``: one COCO JSON (CVAT and Label Studio exports: ``annotations/instances_*.json``
  or ``result.json``); images resolved beside the json or in an ``images/`` folder next to
  it. Boxes follow ultralytics ``convert_coco``: ``bbox`` is ``[x, y, w, h]`` from the
  top-left corner, ``iscrowd`` annotations are ignore regions. An image listed without
  annotations is a background image.

Ignore regions are not classes: VOC/COCO names such as ``DontCare`` or ``ignore`` (see
:data:`IGNORE_NAMES`) and COCO ``iscrowd`` annotations are dropped and counted in
``ImportItem.ignored``. A box with no area inside the image refuses its image (``bad box``),
as a refused YOLO row refuses its frame.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from edgecl.data.images import IMAGE_SUFFIXES, ImageError, is_image, read_image_and_hash
from edgecl.data.labels import label_path_for, read_yolo_labels
from edgecl.data.yolo_dataset import find_dataset
from edgecl.errors import ConfigError, LabelError

FORMATS = ("auto", "yolo", "voc", "coco")
IGNORE_NAMES = frozenset({"dontcare", "ignore", "ignored", "ignoreregion", "ignoreregions",
                          "ignoredregion", "ignoredregions"})
"""Class names (lower case, letters and digits only) that mark regions to ignore."""

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
        content_hash: hash of the image file's bytes (:func:`edgecl.data.images.content_hash`);
            ``""`` when unknown (the pixels are hashed then).
        dataset_ids: the dataset's own class id of each box when the dataset names no classes
            (a YOLO folder without ``data.yaml`` names: ``names`` are then ``class_<id>``);
            ``None`` when the dataset names its classes.
    """

    image: np.ndarray
    names: list[str]
    xyxy: np.ndarray
    source: Path
    ignored: int = 0
    content_hash: str = ""
    dataset_ids: tuple[int, ...] | None = None

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


@dataclass(frozen=True)
class Skip:
    """A file that could not be imported.

    Attributes:
        source: the file (image or annotation).
        reason: short category used to count skips (``unreadable image``, ``missing image``,
            ``bad annotation``, ``bad box``, ``refused label``, ``no label file``).
        message: one line: path and why.
    """

    source: Path
    reason: str
    message: str


@dataclass
class ImportTally:
    """Counts of an import (what ``--json`` prints).

    Attributes:
        imported: images stored or written.
        skipped: files skipped.
        reasons: skip reason -> count.
        ignored_regions: ignore regions dropped.
        boxes: class name -> boxes imported.
        messages: the first skip messages (at most ``max_messages``).
        max_messages: how many messages to keep.
    """

    imported: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    ignored_regions: int = 0
    boxes: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    max_messages: int = 20

    def skip(self, reason: str, message: str = "") -> None:
        """Count one skipped file.

        Args:
            reason: its category.
            message: the one-line reason (``""``: counted only, nothing to print).
        """
        self.skipped += 1
        self.reasons[reason] += 1
        if message and len(self.messages) < self.max_messages:
            self.messages.append(message)

    def done(self, item: ImportItem) -> None:
        """Count one imported image.

        Args:
            item: the image imported.
        """
        self.imported += 1
        self.ignored_regions += item.ignored
        self.boxes.update(item.names)

    def to_dict(self) -> dict:
        """JSON-ready counts: imported, skipped, reasons, ignored_regions, boxes per class."""
        return {"imported": self.imported, "skipped": self.skipped, "reasons": dict(self.reasons),
                "ignored_regions": self.ignored_regions, "boxes": dict(self.boxes)}


def is_ignore_name(name: str) -> bool:
    """Whether a class name marks an ignore region (``DontCare``, ``ignore``, ...).

    Args:
        name: the class name.

    Returns:
        True for the names of :data:`IGNORE_NAMES`, in any case and spelling of separators.
    """
    return re.sub(r"[^a-z0-9]", "", name.lower()) in IGNORE_NAMES


def detect_format(path: str | Path) -> str:
    """Guess a dataset's format.

    Args:
        path: a folder, a ``.yaml`` or a ``.json``.

    Returns:
        ``coco`` (a ``.json``, or a folder with a COCO json on top or in ``annotations/``),
        ``voc`` (a folder with ``Annotations/``), else ``yolo``.

    Raises:
        ConfigError: the path does not exist.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"no such file or directory: {path}")
    if path.is_file():
        return "coco" if path.suffix.lower() == ".json" else "yolo"
    if (path / "Annotations").is_dir():
        return "voc"
    if find_coco_json(path) is not None:
        return "coco"
    return "yolo"


def find_coco_json(folder: Path) -> Path | None:
    """The COCO json of a folder (on top, or in ``annotations/``), or ``None``.

    Args:
        folder: the dataset folder.

    Returns:
        The first ``*.json`` whose start mentions ``images``, ``annotations`` or ``categories``.
    """
    candidates = sorted(folder.glob("*.json")) + sorted((folder / "annotations").glob("*.json"))
    for p in candidates:
        try:
            with open(p, "rb") as fh:
                head = fh.read(65536)
        except OSError:
            continue
        if b'"images"' in head or b'"annotations"' in head or b'"categories"' in head:
            return p
    return None


def _read(path: Path) -> tuple[np.ndarray, str] | Skip:
    """The image and the hash of its file's bytes, or a :class:`Skip`."""
    try:
        return read_image_and_hash(path)
    except ImageError as exc:
        return Skip(path, "unreadable image", str(exc))


def _clip_boxes(xyxy: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    out = xyxy.astype(np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


def _degenerate(xyxy: np.ndarray) -> int | None:
    bad = np.nonzero((xyxy[:, 2] - xyxy[:, 0] <= 0) | (xyxy[:, 3] - xyxy[:, 1] <= 0))[0]
    return int(bad[0]) if bad.size else None


def _names_file(folder: Path) -> dict[int, str] | None:
    for candidate in (folder, folder.parent):
        for name in _NAMES_FILES:
            p = candidate / name
            if p.is_file():
                lines = [x.strip() for x in p.read_text(encoding="utf-8-sig").splitlines() if x.strip()]
                return dict(enumerate(lines))
    return None


def iter_yolo(path: str | Path) -> Iterator[ImportItem | Skip]:
    """Images of an ultralytics YOLO dataset with their boxes (see the module docstring).

    Args:
        path: a folder, ``data.yaml`` or Roboflow export.

    Returns:
        An iterator of :class:`ImportItem` or :class:`Skip`, in split then name order.

    Raises:
        ConfigError: an unreadable ``data.yaml`` or a dataset with no images.
    """
    dataset = find_dataset(path)
    images = dataset.images()
    if not images:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {dataset.yaml_path or dataset.root}")
    names = dataset.names or _names_file(images[0].parent) or _names_file(dataset.root)
    return _yolo_items(images, names, unnamed=not names or _placeholder_names(names))


def _placeholder_names(names: dict[int, str]) -> bool:
    """True for the ``class_<id>`` names a yaml with only ``nc`` gets: no real names."""
    return all(n == f"class_{i}" for i, n in names.items())


def _yolo_items(images: list[Path], names: dict[int, str] | None,
                unnamed: bool = False) -> Iterator[ImportItem | Skip]:
    nc = len(names) if names else None
    for image_path in images:
        label_path = label_path_for(image_path)
        if not label_path.is_file():
            yield Skip(image_path, "no label file", f"{image_path}: no label file (looked for {label_path})")
            continue
        try:
            parsed = read_yolo_labels(label_path, nc)
        except LabelError as exc:
            yield Skip(label_path, "refused label", str(exc))
            continue
        if parsed.refused:
            yield Skip(label_path, "refused label", parsed.refused[0])
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
        yield ImportItem(image, [box_names[i] for i in keep], _clip_boxes(xyxy[keep], image.shape),
                         image_path, ignored=len(box_names) - len(keep), content_hash=digest,
                         dataset_ids=tuple(int(rows[i, 0]) for i in keep) if unnamed else None)


def _voc_image(xml_path: Path, root: Path, filename: str | None) -> Path | None:
    folders = [root / "JPEGImages", root / "images", xml_path.parent]
    if filename:
        for folder in folders:
            if (folder / filename).is_file():
                return folder / filename
    for folder in folders:
        for p in sorted(folder.glob(xml_path.stem + ".*")):
            if is_image(p):
                return p
    return None


def _voc_boxes(xml_path: Path, tree: ET.ElementTree) -> tuple[list[str], list[list[float]], int]:
    names, boxes, ignored = [], [], 0
    for k, obj in enumerate(tree.getroot().iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise LabelError(f"{xml_path}: object {k} has no <name>")
        if is_ignore_name(name):
            ignored += 1
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise LabelError(f"{xml_path}: object {k} ({name}) has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(bnd.findtext(t) or "") for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise LabelError(f"{xml_path}: object {k} ({name}) has a non-numeric <bndbox>") from None
        names.append(name)
        boxes.append([xmin - 1, ymin - 1, xmax - 1, ymax - 1])  # VOC is 1-based (ultralytics VOC.yaml)
    return names, boxes, ignored


def iter_voc(path: str | Path) -> Iterator[ImportItem | Skip]:
    """Images of a Pascal VOC folder (``Annotations/`` + ``JPEGImages/``) with their boxes.

    Args:
        path: the VOC folder (or its ``Annotations`` folder).

    Returns:
        An iterator of :class:`ImportItem` or :class:`Skip`, in annotation-file name order.

    Raises:
        ConfigError: no ``Annotations/*.xml``.
    """
    root = Path(path).expanduser().resolve()
    ann = root / "Annotations" if (root / "Annotations").is_dir() else root
    if ann.name == "Annotations" and ann == root:
        root = root.parent
    xmls = sorted(p for p in ann.glob("*") if p.suffix.lower() == ".xml" and p.is_file())
    if not xmls:
        raise ConfigError(f"no Pascal VOC annotations (*.xml) in {ann}")
    return _voc_items(root, xmls)


def _voc_items(root: Path, xmls: list[Path]) -> Iterator[ImportItem | Skip]:
    for xml_path in xmls:
        try:
            tree = ET.parse(xml_path)
            names, boxes, ignored = _voc_boxes(xml_path, tree)
        except ET.ParseError as exc:
            yield Skip(xml_path, "bad annotation", f"{xml_path}: not valid XML ({exc})")
            continue
        except LabelError as exc:
            yield Skip(xml_path, "bad annotation", str(exc))
            continue
        filename = (tree.getroot().findtext("filename") or "").strip() or None
        image_path = _voc_image(xml_path, root, filename)
        if image_path is None:
            yield Skip(xml_path, "missing image",
                       f"{xml_path}: image {filename or xml_path.stem + '.*'} not found in {root / 'JPEGImages'}")
            continue
        yield _labelled_item(xml_path, str(xml_path), image_path, boxes, names, ignored)


def _labelled_item(source: Path, where: str, image_path: Path, boxes: list, names: list[str],
                   ignored: int) -> ImportItem | Skip:
    """Read an annotated image and clip its pixel boxes (VOC and COCO alike).

    Returns:
        The item, or a :class:`Skip` naming ``where`` when the image does not read or a box
        has no area inside it.
    """
    read = _read(image_path)
    if isinstance(read, Skip):
        return read
    image, digest = read
    xyxy = _clip_boxes(np.array(boxes, np.float32), image.shape)
    bad = _degenerate(xyxy)
    if bad is not None:
        return Skip(source, "bad box", f"{where}: box {boxes[bad]} ({names[bad]}) has no area "
                                       f"inside the {image.shape[1]}x{image.shape[0]} image")
    return ImportItem(image, names, xyxy, image_path, ignored=ignored, content_hash=digest)


def _coco_image(json_path: Path, file_name: str) -> Path | None:
    """The image a COCO ``file_name`` names, looked up beside the JSON (or in ``images/``, or
    one folder up); a name that climbs out with ``..`` or is absolute matches by its base name
    only, so an annotation file can never point the import at files outside the dataset."""
    rel = Path(file_name.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        rel = Path(rel.name)
    base = json_path.parent
    roots = [base, base / "images", base.parent, base.parent / "images"]
    for r in roots:
        if not rel.is_absolute() and (r / rel).is_file():
            return r / rel
    for r in roots:
        if (r / rel.name).is_file():
            return r / rel.name
    return None


def load_coco(json_path: Path) -> dict:
    """Read a COCO json.

    Args:
        json_path: the file.

    Returns:
        The parsed object (a dict with an ``images`` list).

    Raises:
        ConfigError: unreadable, not JSON, or no ``images`` list.
    """
    try:
        data = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read COCO file {json_path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{json_path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConfigError(f"{json_path}: not a COCO file (no 'images' list)")
    return data


def iter_coco(path: str | Path) -> Iterator[ImportItem | Skip]:
    """Images of a COCO JSON (CVAT, Label Studio exports) with their boxes.

    Args:
        path: the json, or a folder holding it (on top or in ``annotations/``).

    Returns:
        An iterator of :class:`ImportItem` or :class:`Skip`, in the json's image order.

    Raises:
        ConfigError: no json, not JSON, or no ``images`` list.
    """
    path = Path(path).expanduser().resolve()
    json_path = path if path.is_file() else find_coco_json(path)
    if json_path is None:
        raise ConfigError(f"no COCO json in {path} (looked on top and in {path / 'annotations'})")
    return _coco_items(json_path, load_coco(json_path))


def _coco_items(json_path: Path, data: dict) -> Iterator[ImportItem | Skip]:
    categories = {}
    for cat in data.get("categories") or []:
        if isinstance(cat, dict) and "id" in cat:
            categories[cat["id"]] = str(cat.get("name", cat["id"])).strip()
    per_image: dict[object, list[dict]] = defaultdict(list)
    for ann in data.get("annotations") or []:
        if isinstance(ann, dict):
            per_image[ann.get("image_id")].append(ann)
    for k, info in enumerate(data["images"]):
        where = f"{json_path}: images[{k}]"
        if not isinstance(info, dict) or not info.get("file_name"):
            yield Skip(json_path, "bad annotation", f"{where} has no file_name")
            continue
        image_path = _coco_image(json_path, str(info["file_name"]))
        if image_path is None:
            yield Skip(json_path, "missing image", f"{where}: image {info['file_name']} not found "
                                                   f"beside {json_path.name} or in images/")
            continue
        names, boxes, ignored, problem = [], [], 0, None
        for ann in per_image.get(info.get("id"), []):
            name = categories.get(ann.get("category_id"))
            if name is None:
                problem = f"annotation {ann.get('id')} has unknown category_id {ann.get('category_id')}"
                break
            if ann.get("iscrowd") or is_ignore_name(name):
                ignored += 1
                continue
            bbox = ann.get("bbox")
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)):
                problem = f"annotation {ann.get('id')} has no valid bbox [x, y, w, h]: {bbox!r}"
                break
            x, y, w, h = (float(v) for v in bbox)
            names.append(name)
            boxes.append([x, y, x + w, y + h])
        if problem:
            yield Skip(json_path, "bad annotation", f"{where} ({info['file_name']}): {problem}")
            continue
        yield _labelled_item(json_path, f"{where} ({info['file_name']})", image_path, boxes, names,
                             ignored)


_READERS = {"yolo": iter_yolo, "voc": iter_voc, "coco": iter_coco}


def iter_labelled(path: str | Path, fmt: str = "auto") -> Iterator[ImportItem | Skip]:
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
        raise ConfigError(f"no such file or directory: {path}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    return _READERS[fmt](path)
