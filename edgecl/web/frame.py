"""Draw detections on a frame and encode it as the Live page's JPEG (a pure function).

The runtime calls :func:`render_jpeg` a few times a second from a sink thread (never from the
inference thread) and hands the latest bytes to ``ConsoleHooks.latest_jpeg``.
"""

from __future__ import annotations

import unicodedata

import cv2
import numpy as np

from edgecl.data.images import JPEG_MAX_SIDE
from edgecl.frames import Detections

PALETTE_BGR = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
               (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
"""Tableau-10 in BGR; class ``i`` is drawn with ``PALETTE_BGR[i % 10]`` (as on the Label page)."""
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


def render_jpeg(image_bgr: np.ndarray, detections: Detections, names: dict[int, str],
                max_width: int = 960, quality: int = 80) -> bytes:
    """Boxes with class names and scores drawn on a copy of the frame, as JPEG.

    Args:
        image_bgr: uint8 (H, W, 3) BGR frame (not modified).
        detections: boxes in pixels of ``image_bgr``.
        names: class index -> name (an unknown index is drawn as its number; a label wider
            than its box and half the frame is cut with ``...``, the score always shows, and a
            right-to-left name is drawn in reading order: :func:`fitted_label`).
        max_width: wider frames are scaled down to this width first (bandwidth, encode time);
            a frame taller than JPEG's limit of 65500 pixels is scaled down to it. Each scaled
            side is at least 1 pixel (a 5000 x 2 frame becomes 960 x 1).
        quality: JPEG quality 1..100.

    Returns:
        The JPEG bytes.

    Raises:
        ValueError: ``image_bgr`` is not an (H, W, 3) uint8 array, or encoding failed.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected uint8 (H, W, 3) BGR, got {image_bgr.dtype} {image_bgr.shape}")
    height, width = image_bgr.shape[:2]
    scale = min(1.0, max_width / width if width else 1.0,
                JPEG_MAX_SIDE / height if height else 1.0)
    if scale < 1.0:
        canvas = cv2.resize(image_bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                            interpolation=cv2.INTER_AREA)
    else:
        canvas = image_bgr.copy()
    thickness = max(1, round(canvas.shape[1] / 400))
    font_scale = max(0.4, canvas.shape[1] / 1600)
    for box, score, cls in zip(detections.boxes_xyxy, detections.scores, detections.classes):
        x1, y1, x2, y2 = (int(round(float(v) * scale)) for v in box)
        color = PALETTE_BGR[int(cls) % len(PALETTE_BGR)]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        room = min(canvas.shape[1] - 4, max(x2 - x1, canvas.shape[1] // 2))  # hide little else
        text = fitted_label(names.get(int(cls), str(int(cls))), float(score), room, font_scale)
        (tw, th), base = cv2.getTextSize(text, FONT, font_scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        left = max(0, min(x1, canvas.shape[1] - tw - 4))  # the whole label stays in the frame
        cv2.rectangle(canvas, (left, top), (left + tw + 4, top + th + base + 2), color, -1)
        cv2.putText(canvas, text, (left + 2, top + th + 1), FONT, font_scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()
