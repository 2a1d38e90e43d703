"""THE YOLO label rule of edgecl: one parser, ultralytics' semantics.

Every module that reads or checks YOLO label rows (``cls cx cy w h``, normalised to 0..1)
goes through this one: frame sources, the replay memory, evaluation, training views,
importers. The rule follows ultralytics ``ultralytics.data.utils.verify_image_label``:

- the file is UTF-8, with or without a byte-order mark (``encoding="utf-8-sig"``);
- a row is ``cls cx cy w h`` or a polygon ``cls x1 y1 x2 y2 x3 y3 ...`` (a segment row, at
  least three points), which becomes its enclosing box (``segments2boxes``); in a pose
  dataset (``kpt_shape: [K, D]`` in its ``data.yaml``) a row is ``cls cx cy w h`` and K x D
  keypoint values, of which the box is read;
- the class is an integer ``>= 0`` (and ``< nc`` when the class count is known), written as
  digits; like ultralytics (which reads rows as floats, checks ``cls % 1 == 0`` and casts),
  an integral decimal such as ``2.0`` is read as class 2. Any other spelling (``1e3``,
  ``2.5``, ``0x1``, ``nan``) is refused: ``file:line: class id '1e3' is not an integer``;
- ``cx, cy, w, h`` may overshoot 0..1 by ultralytics' 1 % tolerance (``<= 1.01``,
  ``>= -0.01``); the box is then clipped to the image, as ultralytics' ``Instances.clip``
  does before training. Beyond the tolerance the row is refused;
- identical rows are dropped (``np.unique`` in ultralytics), keeping the first.

Where edgecl differs, on purpose: ultralytics refuses a whole file for one bad row, edgecl
refuses only that row (with ``file:line: why``) and keeps the others, leaving it to the caller
whether a frame with a refused row is used (the importers and frame sources do not use it: an
object whose row is refused would be taught as background); each row is judged on its own, so
a file mixing box and polygon rows is accepted. A box with no area (``w`` or ``h`` 0, or
nothing left inside the image after clipping: an accidental click in a labelling tool) is not
refused but dropped (:attr:`LabelParse.empty`), as ultralytics drops it during augmentation:
it marks no object, and the frame keeps its other boxes. Where the image's size is known, a
box under one pixel wide or high is dropped the same way (:func:`under_pixels`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from edgecl.errors import LabelError, encoding_problem

COORD_TOLERANCE = 0.01
"""How far ``cx, cy, w, h`` may leave 0..1 before a row is refused (ultralytics: 1 %)."""

_UTF8_BOM = "\ufeff"


@dataclass(frozen=True)
class LabelParse:
    """The outcome of parsing one YOLO label file or text.

    Attributes:
        labels: float32 (N, 5) rows ``cls, cx, cy, w, h`` normalised to 0..1 (clipped);
            ``(0, 5)`` for an empty file (a background image).
        refused: one ``file:line: why`` message per refused row.
        duplicates: identical rows dropped.
        clipped: rows whose box was clipped to 0..1 (an overshoot within the tolerance).
        empty: one ``file:line: why`` message per row dropped for having no area (module
            docstring).
    """

    labels: np.ndarray
    refused: list[str] = field(default_factory=list)
    duplicates: int = 0
    clipped: int = 0
    empty: list[str] = field(default_factory=list)


class _Refused(Exception):
    """One row refused; the message says why (without the file:line prefix)."""


class _NoArea(_Refused):
    """One row whose box has no area inside the image: dropped by the file parser, refused in
    checked arrays."""


SAME_BOX_PX = 1.5
"""How far (pixels) a box's side may move and still be the same box: two labellings of one
image (:func:`edgecl.continual.ingest.same_boxes`), two boxes of one class in an operator's
answer (:func:`edgecl.data.answers.boxes_to_labels`)."""


def _empty() -> np.ndarray:
    return np.zeros((0, 5), np.float32)


MAX_CLASSES = 10_000
"""Largest class count a dataset may declare (``nc``) and bound of its class ids: a typo such as
``nc: 1000000000`` or a class id ``1000000`` is refused in one line instead of building a
million placeholder names. Also the most classes a device's class registry holds
(:mod:`edgecl.models.classes`; LVIS has 1,203, and a detection head grows with each)."""
_CLASS_TOKEN = re.compile(r"[+-]?([0-9]+)(\.0*)?")
"""How a class id may be written in a label file: ASCII digits, optionally ``.0`` (``2``,
``2.0``); other scripts' digits (``٣``) are not read as numbers."""


def _check_class_token(token: str) -> None:
    """Refuse a class id not written as an integer (``1e3``, ``2.5``, ``nan``) or at or above
    :data:`MAX_CLASSES`.

    ultralytics reads a row as floats, so ``2.0`` is class 2 there and here; an exponent or a
    fraction is refused (``1e3`` would silently become class 1000). A large id is named as
    written (read through a float, a 20-digit id came out as another number).
    """
    shown = token if len(token) <= 20 else token[:20] + "..."
    match = _CLASS_TOKEN.fullmatch(token)
    if not match:
        raise _Refused(f"class id '{shown}' is not an integer")
    digits = match.group(1).lstrip("0") or "0"
    if not token.startswith("-") and (len(digits) > len(str(MAX_CLASSES))  # (int() refuses
                                      or int(digits) >= MAX_CLASSES):        # 4,301+ digits)
        raise _Refused(f"class id {shown} is above the limit of {MAX_CLASSES} classes")


def _check_class(cls: float, nc: int | None) -> int:
    if not np.isfinite(cls) or cls < 0 or not float(cls).is_integer():
        raise _Refused(f"class {cls:g} is not an integer >= 0")
    if nc is not None and cls >= nc:
        raise _Refused(f"class {int(cls)} exceeds the class count {nc} (valid: 0..{nc - 1})")
    return int(cls)


def _check_box(cls: float, xywh: np.ndarray, nc: int | None) -> tuple[np.ndarray, bool]:
    """Check one row's class and box with ultralytics' tolerance, then clip the box.

    Returns:
        The float64 (5,) row after clipping and whether clipping changed it.
    """
    if not np.all(np.isfinite(xywh)):
        raise _Refused(f"non-finite coordinate in {xywh.tolist()}")
    cls_id = _check_class(cls, nc)
    if xywh.max() > 1 + COORD_TOLERANCE:
        raise _Refused(f"coordinates {xywh.tolist()} exceed 1 (not normalised, or beyond the "
                       f"{COORD_TOLERANCE:.0%} tolerance)")
    if xywh.min() < -COORD_TOLERANCE or xywh[2:].min() < 0:
        raise _Refused(f"negative coordinate in {xywh.tolist()}")
    cx, cy, w, h = xywh
    corners = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    clipped = np.clip(corners, 0.0, 1.0)
    x1, y1, x2, y2 = clipped
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise _NoArea(f"box {xywh.tolist()} has no area inside the image")
    row = np.array([cls_id, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
    return row, bool(np.any(np.abs(clipped - corners) > 0))


def _parse_row(values: list[float], nc: int | None,
               kpt_values: int = 0) -> tuple[np.ndarray, bool]:
    n = len(values)
    if n == 5 or (kpt_values and n == 5 + kpt_values):  # a pose row: its box, keypoints after
        return _check_box(values[0], np.asarray(values[1:5], np.float64), nc)
    if kpt_values:
        raise _Refused(f"{n} values; the dataset's kpt_shape makes a row 'cls cx cy w h' and "
                       f"{kpt_values} keypoint values ({5 + kpt_values} in all)")
    if n >= 7 and n % 2 == 1:
        xy = np.asarray(values[1:], np.float64).reshape(-1, 2)  # polygon -> enclosing box
        if not np.all(np.isfinite(xy)):
            raise _Refused("non-finite polygon coordinate")
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        xywh = np.concatenate([(lo + hi) / 2, hi - lo])
        try:
            return _check_box(values[0], xywh, nc)
        except _Refused as exc:  # its numbers are the enclosing box's, not the row's: say so
            written = " ".join(f"{v:g}" for v in values[:9]) + (" ..." if n > 9 else "")
            raise type(exc)(f"{exc}: the enclosing box of the row '{written}', read as a "
                            f"polygon of {n // 2} points (a row of {n} values)") from None
    conf = (" (a sixth column: predictions saved with their confidences, ultralytics' "
            "save_conf? drop it)" if n == 6 else "")
    raise _Refused(f"{n} values; expected 5 'cls cx cy w h' or a polygon "
                   f"'cls x1 y1 x2 y2 x3 y3 ...' (odd count, at least 7){conf}")


def parse_yolo_label_text(text: str, where: str, nc: int | None = None,
                          kpt_values: int = 0) -> LabelParse:
    """Parse the text of a YOLO label file (see the module docstring for the rule).

    Args:
        text: file contents; a leading UTF-8 byte-order mark is ignored.
        where: the file name (or another description) used in ``file:line`` messages.
        nc: class count; class ids must be below it (``None``: not checked).
        kpt_values: keypoint values per row of a pose dataset (``kpt_shape`` K x D of its
            ``data.yaml``; 0: none): a row is ``cls cx cy w h`` then K x D values, and only its
            box is read (without it such a row would read as a polygon, its ``w h`` a point).

    Returns:
        The :class:`LabelParse`: accepted rows (float32 (N, 5), clipped to 0..1, duplicates
        and boxes with no area dropped) and one message per refused or dropped row.
    """
    if text.startswith(_UTF8_BOM):
        text = text[1:]
    rows: list[np.ndarray] = []
    refused: list[str] = []
    empty: list[str] = []
    seen: set[tuple[float, ...]] = set()
    duplicates = clipped = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            try:
                values = [float(p) for p in parts]
            except ValueError:
                raise _Refused(f"non-numeric value in '{line.strip()[:80]}'") from None
            _check_class_token(parts[0])
            key = tuple(values)
            if key in seen:
                duplicates += 1
                continue
            row, was_clipped = _parse_row(values, nc, kpt_values)
        except _NoArea as exc:
            empty.append(f"{where}:{lineno}: {exc}")
            continue
        except _Refused as exc:
            refused.append(f"{where}:{lineno}: {exc}")
            continue
        seen.add(key)
        clipped += was_clipped
        rows.append(row)
    labels = np.stack(rows).astype(np.float32) if rows else _empty()
    return LabelParse(labels=labels, refused=refused, duplicates=duplicates, clipped=clipped,
                      empty=empty)


def read_yolo_labels(path: str | Path, nc: int | None = None,
                     kpt_values: int = 0) -> LabelParse:
    """Read and parse a YOLO label file (UTF-8, byte-order mark accepted).

    Args:
        path: the ``.txt`` file.
        nc: class count; class ids must be below it (``None``: not checked).
        kpt_values: keypoint values per row of a pose dataset (see
            :func:`parse_yolo_label_text`).

    Returns:
        The :class:`LabelParse` (see :func:`parse_yolo_label_text`).

    Raises:
        LabelError: the file is missing, cannot be read, or is not UTF-8 text (one line
            naming the file). A caller for whom a missing file means "unlabelled" checks
            ``path.is_file()`` first.
    """
    from edgecl.input_files import MAX_LABEL_BYTES, read_input_bytes

    try:
        data = read_input_bytes(path, MAX_LABEL_BYTES, "a label file")
    except OSError as exc:
        raise LabelError(f"cannot read label file {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelError(f"{path}: {encoding_problem(exc)}") from None
    return parse_yolo_label_text(text, str(path), nc, kpt_values)


def check_label_array(labels: object, where: str, nc: int | None = None) -> np.ndarray:
    """Check label rows held in memory with the same rule, and return them clipped.

    Args:
        labels: (N, 5) rows ``cls, cx, cy, w, h`` (any numeric array-like); ``None`` or an
            empty array means no boxes.
        where: what the labels belong to, for the error message.
        nc: class count; class ids must be below it (``None``: not checked).

    Returns:
        float32 (N, 5) copy, each box clipped to 0..1 (overshoot within the tolerance).

    Raises:
        LabelError: ``where: label row i: why`` for the first bad row, or a wrong shape.
    """
    if labels is None:
        return _empty()
    try:
        arr = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError):
        raise LabelError(f"{where}: labels are not numeric rows") from None
    if arr.size == 0:
        return _empty()
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise LabelError(f"{where}: labels have shape {arr.shape}, expected (N, 5) rows 'cls cx cy w h'")
    out = np.empty_like(arr)
    for i, row in enumerate(arr):
        try:
            out[i], _ = _check_box(row[0], row[1:], nc)
        except _Refused as exc:
            raise LabelError(f"{where}: label row {i}: {exc}") from None
    return out.astype(np.float32)


def under_pixels(labels: np.ndarray, width: int, height: int, min_px: float) -> np.ndarray:
    """Which rows' boxes are under ``min_px`` wide or high in an image of this size (a YOLO
    ``w`` of 0.001 on a 100-pixel frame: a tenth of a pixel, no object to learn).

    Args:
        labels: (N, 5) rows ``cls, cx, cy, w, h`` normalised to 0..1.
        width: the image's width in pixels.
        height: the image's height in pixels.
        min_px: the smallest side kept, in pixels.

    Returns:
        bool (N,).
    """
    rows = np.asarray(labels, np.float64).reshape(-1, 5)
    return (rows[:, 3] * width < min_px) | (rows[:, 4] * height < min_px)


def labels_to_text(labels: np.ndarray) -> str:
    """Format label rows as a YOLO label file (one ``cls cx cy w h`` line per box).

    Args:
        labels: checked (N, 5) rows (see :func:`check_label_array`).

    Returns:
        The file text: ``"%d %.6f %.6f %.6f %.6f"`` lines; empty for a background image.
    """
    return "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n"
                   for r in np.asarray(labels).reshape(-1, 5))


def label_path_for(image: str | Path) -> Path:
    """Map an image path to its YOLO label path (last ``/images/`` -> ``/labels/``, ``.txt``).

    This is the rule ultralytics applies to YOLO datasets (``img2label_paths``).

    Args:
        image: image file path.

    Returns:
        The label file path (which may not exist).
    """
    parts = list(Path(image).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def shared_label_files(images: Iterable[str | Path]) -> dict[Path, list[Path]]:
    """The label files that :func:`label_path_for` gives to more than one image (``y.jpg`` and
    ``y.png`` of one folder both take ``labels/y.txt``, as in ultralytics): whose boxes are
    they? Such images are refused, as two annotations naming one image are.

    Args:
        images: image paths (the same path given twice counts once).

    Returns:
        label file -> its images, in the order given, for each label file of two or more.
    """
    by_label: dict[Path, dict[Path, None]] = {}
    for image in images:
        by_label.setdefault(label_path_for(image), {})[Path(image)] = None
    return {label: list(taken) for label, taken in by_label.items() if len(taken) > 1}


def shared_label_problem(image: Path, label: Path, sharing: list[Path]) -> str:
    """One line for an image refused by :func:`shared_label_files`.

    Args:
        image: the refused image.
        label: the label file it shares.
        sharing: every image that takes ``label``.

    Returns:
        ``"<image>: its label file <label> is also that of <other>: ..."``.
    """
    others = ", ".join(p.name for p in sharing if p != image)
    return (f"{image}: its label file {label} is also that of {others} (same name, another "
            f"suffix): whose boxes are they? Rename one image and give it its own label file")

