"""An operator's answer to a queue item, by one rule for every way it arrives (the CLI's boxes
file, the console's request body): the item id, the answer's JSON, its boxes, and the YOLO rows
they become once the frame's size and the class registry are known.

The operator queue (:mod:`edgecl.runtime.labels.queue`) stores answers read by these rules;
the console (:mod:`edgecl.web`) and ``edgecl labels`` check what they receive with them first.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from edgecl.data.class_names import clean_name, known_spelling, refuse_ignore_name
from edgecl.data.labels import SAME_BOX_PX
from edgecl.errors import UTF16_BOMS, LabelError, NotFoundError, json_problem

MAX_ANSWER_BYTES = 1024 * 1024
"""Largest operator's answer read, as a boxes file (``edgecl labels answer --boxes``) or as the
runtime's request body (bytes). The largest answer (1,000 boxes, class names of 100 CJK
characters written as JSON ``\\u`` escapes, coordinates with every digit) is about 700 KB."""

MAX_ITEM_ID_LEN = 64
ITEM_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_BOXES = 1000
MAX_NEW_CLASSES_PER_ANSWER = 10
"""Most class names one answer may add to the registry (classes live as long as the device:
one answer with a thousand names would grow every later model's head to a thousand classes)."""
# a box may overshoot the frame by this many pixels (rounding in a drawing tool); it is clipped
EDGE_TOLERANCE_PX = 1.0
MIN_BOX_PX = 1.0
"""Smallest width and height of an answer's box, pixels: a smaller one teaches nothing, and is
most often a box given in normalised coordinates (``[0.1, 0.1, 0.2, 0.2]``)."""


def valid_item_id(item_id: object) -> str:
    """Check a queue item id before it is used in any path.

    Args:
        item_id: the id as received (CLI argument, URL segment).

    Returns:
        The id, unchanged.

    Raises:
        NotFoundError: not a string of 1..64 letters, digits, ``-`` or ``_`` starting with a
            letter or digit (so ``..``, ``/``, NUL and over-long ids never reach the disk).
    """
    if not isinstance(item_id, str) or not ITEM_ID_RE.fullmatch(item_id):
        raise NotFoundError(f"no label item {shown(item_id)}: an id is 1-{MAX_ITEM_ID_LEN} letters, "
                            f"digits, '-' or '_', starting with a letter or digit (see 'edgecl "
                            f"labels pending')")
    return item_id


ANSWER_KEYS = ("boxes", "skip")
BOX_KEYS = ("class", "xyxy", "score", "class_id")
"""Keys a box of an answer may have; ``score`` and ``class_id`` (what a proposed box carries, so
that proposed boxes can be sent back as they are: before, ``class_id`` was refused) are ignored
(a ``class_id`` that is another class's id is refused: :func:`boxes_to_labels`),
the class is the one ``class`` names. The console's API reads answers with the same
rule (:func:`decode_answer`, :func:`parse_answer`)."""


class _RepeatedKey(ValueError):
    """A key given twice in one JSON object (which one did the sender mean?)."""


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _no_repeats(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _RepeatedKey(f"key {shown(key)} given twice in one object")
    return out


class _Unusable:
    """What stands in a decoded answer for a value JSON cannot carry (``NaN``, ``Infinity``, an
    integer of over 4300 digits), so that the refusal can name where it stood."""

    __slots__ = ("why", "constant")

    def __init__(self, why: str, constant: bool):
        self.why = why
        self.constant = constant  # NaN or Infinity (not a number too long to read)


def _first_unusable(value: object) -> tuple[_Unusable, tuple] | None:
    """The first :class:`_Unusable` in document order with its path of keys and indices
    (``("boxes", 1, "xyxy", 0)``), or None; walked without recursion (nesting is as deep as
    the parser allowed)."""
    stack: list[tuple[object, tuple]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _Unusable):
            return item, path
        if isinstance(item, dict):
            stack.extend((v, (*path, k)) for k, v in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(item))))
    return None


def answer_place(path: tuple) -> str:
    """Where a value stands in an answer, as a person reads it.

    Args:
        path: keys and list indices from the answer's top (``("boxes", 1, "xyxy", 0)``; a
            boxes file's bare list starts with the box's index).

    Returns:
        ``"box 1, xyxy[0]"``, ``"box 0"``, ``"skip"`` (empty for the top itself).
    """
    head, rest = "", tuple(path)
    if len(rest) >= 2 and rest[0] == "boxes" and isinstance(rest[1], int):
        head, rest = f"box {rest[1]}", rest[2:]
    elif rest and isinstance(rest[0], int):
        head, rest = f"box {rest[0]}", rest[1:]
    tail = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                   for i, p in enumerate(rest))
    return ", ".join(part for part in (head, tail) if part)


def decode_answer(raw: bytes | str, where: str) -> object:
    """Decode an operator's answer as JSON, by the one rule of the CLI's boxes file and the
    console's request body.

    UTF-8 only (a UTF-8 byte-order mark is allowed), strict JSON: ``NaN`` and ``Infinity`` are
    refused (naming the box and coordinate they stand for), and so is a key given twice in one
    object (``{"skip": true, "skip": false}``: the last one silently won in Python's parser).

    Args:
        raw: the bytes (or text) as received.
        where: what it is, for the message (``"boxes file a.json"``, ``"request body"``).

    Returns:
        The decoded value (not yet checked: see :func:`parse_answer`).

    Raises:
        LabelError: one line naming ``where`` and why: not UTF-8 (UTF-16 named), empty, not
            JSON (with line and column), nested too deeply, a key given twice, or ``NaN``,
            ``Infinity`` or a number of over 4300 digits (with its place:
            :func:`answer_place`).
    """
    if isinstance(raw, (bytes, bytearray)):
        if raw.startswith(UTF16_BOMS) or (len(raw) > 1 and b"\x00" in raw[:2]):
            raise LabelError(f"{where} looks like UTF-16 text: send it as UTF-8")
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LabelError(f"{where} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                             f"offset {exc.start})") from None
    text = raw.removeprefix("\ufeff")
    if not text.strip():
        raise LabelError(f"{where} is empty: send a JSON answer, e.g. {{\"boxes\": []}}")
    unusable: list[_Unusable] = []

    def constant(name: str) -> _Unusable:
        unusable.append(_Unusable(f"{name} is not a JSON number", constant=True))
        return unusable[-1]

    def integer(digits: str) -> int | _Unusable:
        try:
            return int(digits)
        except ValueError as exc:  # over 4300 digits: Python refuses to convert it
            unusable.append(_Unusable(str(exc).split(";")[0], constant=False))
            return unusable[-1]

    try:
        data = json.loads(text, object_pairs_hook=_no_repeats, parse_constant=constant,
                          parse_int=integer)
    except json.JSONDecodeError as exc:
        raise LabelError(f"{where} is not JSON: {json_problem(exc)}") from None
    except RecursionError:
        raise LabelError(f"{where} is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # a repeated key
        raise LabelError(f"{where} is not usable JSON: {str(exc).split(';')[0]}") from None
    found = _first_unusable(data) if unusable else None
    if found is not None:
        bad, path = found
        place = answer_place(path) or "the answer"
        if bad.constant:
            place += (": a coordinate must be a finite number" if "xyxy" in path
                      else ": a number must be finite")
        raise LabelError(f"{where} is not usable JSON: {bad.why} ({place})")
    return data


def check_skip(skip: object) -> bool:
    """Check an answer's ``skip`` flag: only a real boolean (JSON ``true``/``false``) counts.

    Args:
        skip: the flag as received.

    Returns:
        ``skip`` unchanged.

    Raises:
        LabelError: anything but ``True``/``False`` (``"yes"``, ``"false"``, ``1``, ``None``):
            a string would otherwise be "truthy" and skip the item.
    """
    if not isinstance(skip, bool):
        raise LabelError(f"'skip' must be true or false (a JSON boolean), got {shown(skip)}")
    return skip


def parse_answer(answer: object, allow_list: bool = True) -> tuple[list, bool]:
    """Read an operator's answer: a list of boxes, or ``{"boxes": [...], "skip": bool}``.

    The one rule for an answer's shape, shared by ``edgecl labels answer`` and
    ``POST /api/labels/ID``; what depends on the item (its frame's size, the class registry)
    is checked by :func:`boxes_to_labels` when the answer is stored.

    Args:
        answer: the decoded JSON (:func:`decode_answer`).
        allow_list: whether a bare list of boxes is an answer (a boxes file: yes; the API's
            body is the object).

    Returns:
        ``(boxes, skip)``: the boxes as :func:`parse_boxes` returns them (``[]`` with ``skip``).

    Raises:
        LabelError: not a list or an object, an unknown key, an object without ``boxes``
            that does not skip (``{"skip": false}`` alone), a ``skip`` that is not a boolean (see :func:`check_skip`),
            ``skip`` true beside boxes (which did the sender mean?), or bad boxes
            (:func:`parse_boxes`).
    """
    if isinstance(answer, list) and allow_list:
        return parse_boxes(answer), False
    shape = ('a list of boxes or {"boxes": [...], "skip": false}' if allow_list
             else 'a JSON object {"boxes": [...], "skip": false}')
    if not isinstance(answer, dict):
        raise LabelError(f"expected {shape}, got {_json_type(answer)}")
    unknown = sorted(str(k) for k in answer if k not in ANSWER_KEYS)
    if unknown:
        raise LabelError(f"expected {shape}, got unknown key(s) "
                         f"{', '.join(shown(k, 22) for k in unknown[:3])}")
    skip = check_skip(answer.get("skip", False))
    if "boxes" not in answer and not skip:  # {"skip": false} alone would wipe every box
        raise LabelError('an answer needs "boxes" ([] for "nothing here") or "skip": true')
    boxes = parse_boxes(answer.get("boxes", []))
    if skip and boxes:
        raise LabelError(f'"skip": true with {len(boxes)} box(es): send the boxes with '
                         f'"skip": false, or skip with no boxes')
    return boxes, skip


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type (``a string``, ``null``, ...)."""
    for kind, name in ((bool, "a boolean"), (str, "a string"), ((int, float), "a number"),
                       (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def parse_boxes(boxes: object) -> list[dict]:
    """Check the boxes of an answer, whatever frame they are for.

    Args:
        boxes: ``[{"class": "name", "xyxy": [x1, y1, x2, y2]}, ...]`` (a ``score`` key, a
            finite number or null, is allowed and dropped; see :data:`BOX_KEYS`).

    Returns:
        ``[{"class": cleaned name, "xyxy": [4 floats]}]``, with the box's ``class_id`` where
        it has one (an integer: :func:`boxes_to_labels` checks it agrees with ``class``).

    Raises:
        LabelError: naming the box: not a list of such objects, more than :data:`MAX_BOXES`,
            a missing or unknown key, a class name the registry would refuse (empty,
            over-long, control or invisible characters: ``edgecl.data.class_names.clean_name``),
            or ``xyxy`` not 4 finite numbers (a boolean is not a number).
    """
    if not isinstance(boxes, list):
        raise LabelError(f'boxes must be a JSON list of {{"class": name, "xyxy": [x1, y1, x2, '
                         f'y2]}}, got {_json_type(boxes)}')
    if len(boxes) > MAX_BOXES:
        raise LabelError(f"{len(boxes)} boxes: at most {MAX_BOXES} per frame")
    out = []
    cleaned: dict[str, str] = {}  # one clean_name per name: 1,000 boxes of one long name took 0.2 s
    for i, box in enumerate(boxes):
        if not isinstance(box, dict) or "class" not in box or "xyxy" not in box:
            raise LabelError(f"box {i}: must be an object with 'class' and 'xyxy', got "
                             f"{shown(box)}")
        unknown = sorted(str(k) for k in box if k not in BOX_KEYS)
        if unknown:
            raise LabelError(f"box {i}: unknown key(s) {', '.join(shown(k, 22) for k in unknown[:3])}"
                             f" (a box has 'class', 'xyxy' and, ignored, 'score' and 'class_id')")
        if box.get("score") is not None and not finite_number(box["score"]):
            raise LabelError(f"box {i}: score must be a finite number or null, got "
                             f"{shown(box['score'])}")
        raw = box["class"]
        name = cleaned.get(raw) if isinstance(raw, str) else None
        if name is None:
            try:
                name = clean_name(raw)
            except LabelError as exc:
                raise LabelError(f"box {i}: {exc}") from None
            if isinstance(raw, str):
                cleaned[raw] = name
        xyxy = box["xyxy"]
        if not isinstance(xyxy, list) or len(xyxy) != 4 or not all(map(finite_number, xyxy)):
            raise LabelError(f"box {i}: xyxy must be 4 finite numbers [x1, y1, x2, y2] in pixels, "
                             f"got {shown(xyxy, 60)}")
        said = box.get("class_id")  # kept for boxes_to_labels' check that it agrees
        if said is not None and (not isinstance(said, int) or isinstance(said, bool)):
            raise LabelError(f"box {i}: class_id must be an integer (the class's id) or left "
                             f"out, got {shown(said)}")  # before: "2" or true, ignored
        out.append({"class": name, "xyxy": [float(v) for v in xyxy],
                    **({"class_id": said} if said is not None else {})})
    return out


def boxes_to_labels(boxes: object, width: int, height: int, class_ids: dict[str, int],
                    ) -> tuple[np.ndarray, list[str]]:
    """Validate an operator's final boxes against the frame and convert them to YOLO rows.

    Args:
        boxes: ``[{"class": "name", "xyxy": [x1, y1, x2, y2]}, ...]`` in pixels of the original
            frame (checked by :func:`parse_boxes`); an empty list means "nothing to label
            here". A box overshooting the frame by at most :data:`EDGE_TOLERANCE_PX` is clipped;
            a box given twice (same class, every side within :data:`SAME_BOX_PX` of one given
            before) is kept once.
        width: frame width in pixels.
        height: frame height in pixels.
        class_ids: known class name -> id.

    Returns:
        ``(labels, new_names)``: float32 (N, 5) ``cls cx cy w h`` normalised, where the row of a
        class not in ``class_ids`` carries the placeholder id ``-1 - k``, ``k`` its name's index
        in ``new_names`` (the caller assigns ids once every box is valid), and the new class
        names in order of first use.

    Raises:
        LabelError: naming the box by its index: what :func:`parse_boxes` refuses, a box
            (partly) outside the frame, an inverted box (``x2 < x1`` or ``y2 < y1``), one of
            zero width or height, a box under :data:`MIN_BOX_PX` wide or high (one in
            normalised coordinates is named so), more than :data:`MAX_NEW_CLASSES_PER_ANSWER` new
            class names, a new class named as an ignore region (``DontCare``:
            :func:`~edgecl.data.class_names.refuse_ignore_name`), or a ``class_id`` that is
            the id of another class than ``class`` names (a proposal whose class a client
            changed by its name or by its id only: which is meant?).
    """
    rows, new_names, seen = [], [], {}
    standing = set(class_ids.values())
    for i, box in enumerate(parse_boxes(boxes)):
        name = box["class"]
        name = known_spelling(name, class_ids) or known_spelling(name, new_names) or name
        x1, y1, x2, y2 = box["xyxy"]
        tol = EDGE_TOLERANCE_PX
        if min(x1, y1) < -tol or max(x1, x2) > width + tol or max(y1, y2) > height + tol:
            inside = max(x1, x2) > 0 and min(x1, x2) < width and max(y1, y2) > 0 \
                and min(y1, y2) < height
            raise LabelError(f"box {i}: {box['xyxy']} lies {'partly' if inside else 'entirely'} "
                             f"outside the {width}x{height} frame (boxes are in pixels of the "
                             f"frame; up to {tol:g} px over an edge is clipped)")
        if x2 < x1 or y2 < y1:
            swapped = " and ".join(f"{b} < {a}" for a, b, bad in (("x1", "x2", x2 < x1),
                                                                  ("y1", "y2", y2 < y1)) if bad)
            raise LabelError(f"box {i}: x2 must exceed x1 and y2 exceed y1, got {box['xyxy']} "
                             f"({swapped}: corners swapped? a box is [left, top, right, bottom])")
        x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            empty = " and ".join(side for side, bad in (("width", x2 <= x1), ("height", y2 <= y1))
                                 if bad)
            raise LabelError(f"box {i}: {box['xyxy']} has zero {empty} (x2 must exceed x1 and "
                             f"y2 exceed y1)")
        if (x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX) and max(width, height) > 2:
            hint = ("it looks like coordinates normalised to 0..1, as in YOLO label files; "
                    if max(box["xyxy"]) <= 1.0 else "")
            raise LabelError(f"box {i}: {box['xyxy']} is {x2 - x1:g} x {y2 - y1:g} px, under one "
                             f"pixel ({hint}boxes are in pixels of the {width}x{height} frame)")
        if name not in class_ids and name not in new_names:
            refuse_ignore_name(name, f"box {i}: ")
            if len(new_names) >= MAX_NEW_CLASSES_PER_ANSWER:
                raise LabelError(f"box {i}: more than {MAX_NEW_CLASSES_PER_ANSWER} new class "
                                 f"names in one answer (a new class is taught a few at a time)")
            new_names.append(name)
        cls = class_ids[name] if name in class_ids else -1 - new_names.index(name)
        said = box.get("class_id")  # a proposal's, sent back: its class edited, not its id?
        if said is not None and said != cls and said in standing:  # (an integer: parse_boxes)
            raise LabelError(f"box {i}: class_id {said} is another class than '{name}'"
                             f"{f' (id {cls})' if cls >= 0 else ' (a new class)'}: send the class "
                             f"you mean ('class' decides; 'class_id' may be left out)")
        # the same box twice (a double submit, a box drawn again a pixel off) would count its
        # object twice in training: kept once
        if any(max(abs(a - b) for a, b in zip((x1, y1, x2, y2), other)) <= SAME_BOX_PX
               for other in seen.get(cls, ())):
            continue
        seen.setdefault(cls, []).append((x1, y1, x2, y2))
        rows.append([cls, (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width,
                     (y2 - y1) / height])
    return np.asarray(rows, np.float32).reshape(-1, 5), new_names


def finite_number(value: object) -> bool:
    """A JSON number (not a bool) that converts to a finite float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
