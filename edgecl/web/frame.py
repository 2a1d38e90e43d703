"""Draw detections on a frame and encode it as the Live page's JPEG (a pure function).

The runtime calls :func:`render_jpeg` a few times a second from a sink thread (never from the
inference thread) and hands the latest bytes to ``ConsoleHooks.latest_jpeg``.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgecl.data.images import JPEG_MAX_SIDE
from edgecl.frames import Detections

PALETTE_BGR = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
               (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
"""Tableau-10 in BGR; class ``i`` is drawn with ``PALETTE_BGR[i % 10]`` (as on the Label page)."""


def render_jpeg(image_bgr: np.ndarray, detections: Detections, names: dict[int, str],
                max_width: int = 960, quality: int = 80) -> bytes:
    """Boxes with class names and scores drawn on a copy of the frame, as JPEG.

    Args:
        image_bgr: uint8 (H, W, 3) BGR frame (not modified).
        detections: boxes in pixels of ``image_bgr``.
        names: class index -> name (an unknown index is drawn as its number).
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
        text = f"{names.get(int(cls), str(int(cls)))} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 4, top + th + base + 2), color, -1)
        cv2.putText(canvas, text, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return encoded.tobytes()
