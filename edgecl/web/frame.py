"""Draw detections on a frame and encode it as the Live page's JPEG (pure functions).

The runtime calls :func:`render_frame` a few times a second from a sink thread (never from the
inference thread): the JPEG it keeps has the boxes drawn but no text, and the labels (class
names and scores) travel beside it as JSON with the same sequence number, so that the browser
draws them as text in any script (OpenCV's font has ASCII only: ``自行车`` came out ``???``).
An API client fetching the JPEG alone gets the labels burnt in (:meth:`LiveFrame.labelled_jpeg`,
drawn on demand, at most once per frame); :func:`render_jpeg` does both steps at once.
"""

from __future__ import annotations

import threading
import unicodedata
from typing import Any

import cv2
import numpy as np

from edgecl.data.images import JPEG_MAX_SIDE
from edgecl.frames import Detections

PALETTE_BGR = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
               (75, 86, 140), (194, 119, 227), (230, 50, 240), (34, 189, 188), (207, 190, 23)]
"""Tableau-10 in BGR, its grey swapped for magenta (grey vanishes on thermal frames); class ``i``
is drawn with ``PALETTE_BGR[i % 10]`` (as on the Label page)."""
FONT = cv2.FONT_HERSHEY_SIMPLEX
RTL_CLASSES = frozenset({"R", "AL"})
"""Bidirectional classes of right-to-left letters (Hebrew, Arabic, ...)."""
NEUTRAL_CLASSES = frozenset({"WS", "ON", "CS", "ES", "ET", "BN"})
"""Bidirectional classes that join a right-to-left run when they stand between two of its letters."""


def visual_order(text: str) -> str:
    """``text`` in the order a left-to-right painter must draw it to be read correctly.

    OpenCV draws characters left to right in memory order, so a Hebrew or Arabic class name
    came out mirrored (``שלום`` read as ``םולש``). Each run of right-to-left letters (with the
    spaces and punctuation between them) is reversed, keeping combining marks on their letter;
    left-to-right text and digits stay as they are.

    Args:
        text: a label in logical (memory) order.

    Returns:
        The label in visual order (``text`` itself when it holds no right-to-left letter).
    """
    if not any(unicodedata.bidirectional(ch) in RTL_CLASSES for ch in text):
        return text
    clusters: list[str] = []
    for ch in text:  # a combining mark stays with the letter before it
        if clusters and unicodedata.bidirectional(ch) == "NSM":
            clusters[-1] += ch
        else:
            clusters.append(ch)
    out: list[str] = []
    run: list[str] = []
    pending: list[str] = []  # neutrals after the run: its part only if a letter follows

    def flush() -> None:
        out.extend(reversed(run))
        out.extend(pending)
        run.clear()
        pending.clear()

    for cluster in clusters:
        kind = unicodedata.bidirectional(cluster[0])
        if kind in RTL_CLASSES:
            run.extend(pending)
            pending.clear()
            run.append(cluster)
        elif run and kind in NEUTRAL_CLASSES:
            pending.append(cluster)
        else:
            flush()
            out.append(cluster)
    flush()
    return "".join(out)


def fitted_label(name: str, score: float, max_px: int, font_scale: float) -> str:
    """The label ``name score`` cut (``name...``) so that it is at most ``max_px`` wide.

    Args:
        name: the class name (any length: operators may type up to 100 characters).
        score: the detection's score (always shown).
        max_px: the widest the label may be, pixels (:func:`render_jpeg` passes the wider of
            the box and half the frame, at most the frame's width).
        font_scale: OpenCV font scale the label is drawn with.

    Returns:
        The text to draw, in visual order (:func:`visual_order`).
    """
    tail = f" {score:.2f}"
    text = visual_order(name) + tail
    if cv2.getTextSize(text, FONT, font_scale, 1)[0][0] <= max_px:
        return text
    keep = len(name)
    while keep > 0:
        keep -= max(1, keep // 8)
        text = visual_order(name[:keep].rstrip() + "...") + tail
        if cv2.getTextSize(text, FONT, font_scale, 1)[0][0] <= max_px:
            return text
    return tail.strip()


def scaled_canvas(image_bgr: np.ndarray, max_width: int = 960) -> tuple[np.ndarray, float]:
    """A copy of the frame scaled down for the Live page.

    Args:
        image_bgr: uint8 (H, W, 3) BGR frame (not modified).
        max_width: wider frames are scaled down to this width (bandwidth, encode time); a
            frame taller than JPEG's limit of 65500 pixels is scaled down to it. Each scaled
            side is at least 1 pixel (a 5000 x 2 frame becomes 960 x 1).

    Returns:
        ``(canvas, scale)``: the copy and the factor from frame pixels to canvas pixels.

    Raises:
        ValueError: ``image_bgr`` is not an (H, W, 3) uint8 array.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected uint8 (H, W, 3) BGR, got {image_bgr.dtype} {image_bgr.shape}")
    height, width = image_bgr.shape[:2]
    scale = min(1.0, max_width / width if width else 1.0,
                JPEG_MAX_SIDE / height if height else 1.0)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA), scale
    return image_bgr.copy(), 1.0


def display_boxes(detections: Detections, names: dict[int, str], scale: float,
                  size: tuple[int, int]) -> list[dict]:
    """The detections as the Live page shows them, in pixels of the scaled canvas.

    Args:
        detections: boxes in pixels of the original frame.
        names: class index -> name (an unknown index is named by its number).
        scale: frame pixels -> canvas pixels (:func:`scaled_canvas`).
        size: the canvas's ``(width, height)``; boxes are clipped to it.

    Returns:
        One dict per detection: ``name`` (as registered, any script), ``score`` (0..1, 4
        decimals), ``class_id``, ``color_index`` (``class_id % 10``: :data:`PALETTE_BGR` here,
        ``EC.PALETTE`` in the browser) and ``xyxy`` (canvas pixels, 1 decimal).
    """
    width, height = size
    out = []
    for box, score, cls in zip(detections.boxes_xyxy, detections.scores, detections.classes):
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        cls = int(cls)
        out.append({"name": str(names.get(cls, str(cls))), "score": round(float(score), 4),
                    "class_id": cls, "color_index": cls % len(PALETTE_BGR),
                    "xyxy": [round(min(max(x1, 0.0), width), 1), round(min(max(y1, 0.0), height), 1),
                             round(min(max(x2, 0.0), width), 1), round(min(max(y2, 0.0), height), 1)]})
    return out


def draw_boxes(canvas: np.ndarray, boxes: list[dict]) -> None:
    """Draw the rectangles of :func:`display_boxes` on ``canvas`` (in place), no text."""
    thickness = max(1, round(canvas.shape[1] / 400))
    for box in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in box["xyxy"])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), PALETTE_BGR[box["color_index"]], thickness)


def draw_labels(canvas: np.ndarray, boxes: list[dict]) -> None:
    """Burn ``name score`` above each box into ``canvas`` (in place) with OpenCV's font.

    The font has ASCII only (other scripts come out as ``?``): the Live page draws the labels
    as HTML text instead; this is for API clients that fetch the JPEG alone. A label wider than
    its box and half the frame is cut with ``...``, the score always shows, a right-to-left
    name is drawn in reading order (:func:`fitted_label`) and the label stays in the frame.

    Args:
        canvas: the scaled frame (:func:`scaled_canvas`).
        boxes: :func:`display_boxes` of the same canvas.
    """
    width, height = canvas.shape[1], canvas.shape[0]
    font_scale = max(0.4, width / 1600)
    for box in boxes:
        x1, y1, x2, _ = (int(round(v)) for v in box["xyxy"])
        room = min(width - 4, max(x2 - x1, width // 2))  # hide little else
        text = fitted_label(box["name"], box["score"], room, font_scale)
        (tw, th), base = cv2.getTextSize(text, FONT, font_scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else min(y1, max(0, height - th - base - 2))
        left = max(0, min(x1, width - tw - 4))  # the whole label stays in the frame
        color = PALETTE_BGR[box["color_index"]]
        cv2.rectangle(canvas, (left, top), (left + tw + 4, top + th + base + 2), color, -1)
        cv2.putText(canvas, text, (left + 2, top + th + 1), FONT, font_scale, (255, 255, 255), 1,
                    cv2.LINE_AA)


def encode_jpeg(canvas: np.ndarray, quality: int = 80) -> bytes:
    """``canvas`` as JPEG bytes.

    Raises:
        ValueError: encoding failed.
    """
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()


class LiveFrame:
    """One Live-page frame: the JPEG (boxes, no text) and its labels, under one sequence number.

    Immutable for its readers (``seq``, ``width``, ``height``, ``jpeg``, ``boxes``), so the
    JSON of :meth:`to_json` and the bytes of ``jpeg`` always describe the same picture.

    Args:
        seq: the sink's sequence number (1, 2, ...).
        canvas: the scaled frame with the boxes drawn (kept to draw :meth:`labelled_jpeg`
            from; :meth:`drop_canvas` frees it).
        jpeg: ``canvas`` encoded.
        boxes: :func:`display_boxes` of ``canvas``.
        quality: JPEG quality of :meth:`labelled_jpeg`.
    """

    def __init__(self, seq: int, canvas: np.ndarray, jpeg: bytes, boxes: list[dict],
                 quality: int = 80):
        self.seq = int(seq)
        self.height, self.width = int(canvas.shape[0]), int(canvas.shape[1])
        self.jpeg = jpeg
        self.boxes = tuple(boxes)
        self.quality = quality
        self._canvas: np.ndarray | None = canvas
        self._labelled: bytes | None = None
        self._lock = threading.Lock()

    def to_json(self) -> dict[str, Any]:
        """The frame's labels, as ``GET /api/live/detections`` answers them.

        Returns:
            ``{"seq", "width", "height", "boxes": [{"name", "score", "class_id",
            "color_index", "xyxy"}]}``, ``xyxy`` in pixels of :attr:`jpeg`
            (:func:`display_boxes`).
        """
        return {"seq": self.seq, "width": self.width, "height": self.height,
                "boxes": [dict(box, xyxy=list(box["xyxy"])) for box in self.boxes]}

    def labelled_jpeg(self) -> bytes:
        """The same frame with names and scores burnt in (:func:`draw_labels`, ASCII only).

        Drawn on the first call only (the caller's thread, never the inference thread), so API
        clients polling the JPEG cost at most one extra encode per frame.

        Returns:
            The JPEG bytes.
        """
        with self._lock:
            if self._labelled is None:
                canvas = self._canvas
                if canvas is None:  # an older frame: its boxes are in its JPEG already
                    canvas = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
                draw_labels(canvas, list(self.boxes))
                self._labelled = encode_jpeg(canvas, self.quality)
                self._canvas = None
            return self._labelled

    def drop_canvas(self) -> None:
        """Free the kept canvas (the sink calls this once a newer frame exists)."""
        self._canvas = None


def render_frame(image_bgr: np.ndarray, detections: Detections, names: dict[int, str],
                 seq: int, max_width: int = 960, quality: int = 80) -> LiveFrame:
    """Scale the frame, draw its boxes (no text) and encode it: one :class:`LiveFrame`.

    Args:
        image_bgr: uint8 (H, W, 3) BGR frame (not modified).
        detections: boxes in pixels of ``image_bgr``.
        names: class index -> name (any printable Unicode; an unknown index is its number).
        seq: the frame's sequence number.
        max_width: see :func:`scaled_canvas`.
        quality: JPEG quality 1..100.

    Returns:
        The frame.

    Raises:
        ValueError: ``image_bgr`` is not an (H, W, 3) uint8 array, or encoding failed.
    """
    canvas, scale = scaled_canvas(image_bgr, max_width)
    boxes = display_boxes(detections, names, scale, (canvas.shape[1], canvas.shape[0]))
    draw_boxes(canvas, boxes)
    return LiveFrame(seq, canvas, encode_jpeg(canvas, quality), boxes, quality)


def render_jpeg(image_bgr: np.ndarray, detections: Detections, names: dict[int, str],
                max_width: int = 960, quality: int = 80) -> bytes:
    """Boxes with class names and scores drawn on a copy of the frame, as JPEG.

    Args:
        image_bgr: uint8 (H, W, 3) BGR frame (not modified).
        detections: boxes in pixels of ``image_bgr``.
        names: class index -> name (an unknown index is drawn as its number; a label wider
            than its box and half the frame is cut with ``...``, the score always shows, and a
            right-to-left name is drawn in reading order: :func:`fitted_label`; OpenCV's font
            has ASCII only, other scripts come out as ``?``: see :func:`render_frame`).
        max_width: see :func:`scaled_canvas`.
        quality: JPEG quality 1..100.

    Returns:
        The JPEG bytes.

    Raises:
        ValueError: ``image_bgr`` is not an (H, W, 3) uint8 array, or encoding failed.
    """
    canvas, scale = scaled_canvas(image_bgr, max_width)
    boxes = display_boxes(detections, names, scale, (canvas.shape[1], canvas.shape[0]))
    draw_boxes(canvas, boxes)
    draw_labels(canvas, boxes)
    return encode_jpeg(canvas, quality)
