"""Tiny YOLO-format datasets drawn with OpenCV, for tests that train or score a detector.

Class c is a filled rectangle of colour ``COLOURS[c]`` on a grey background, so a few
optimiser steps already have something learnable.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

COLOURS = ((40, 40, 220), (40, 200, 40), (220, 60, 40))  # BGR per class


def draw_dataset(root: Path, n_images: int, *, size: int = 64, classes=(0, 1), seed: int = 0,
                 prefix: str = "img") -> list[Path]:
    """Write ``n_images`` images under ``root/images`` and YOLO labels under ``root/labels``.

    Args:
        root: dataset folder.
        n_images: number of images.
        size: square image side in pixels.
        classes: class ids to draw (one or two objects per image, cycling through them).
        seed: random seed for positions and sizes.
        prefix: file name prefix.

    Returns:
        The image paths.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_images):
        img = np.full((size, size, 3), 128, np.uint8)
        rows = []
        for k in range(1 + i % 2):
            cls = classes[(i + k) % len(classes)]
            w, h = rng.integers(size // 4, size // 2, size=2)
            x0 = int(rng.integers(0, size - w))
            y0 = int(rng.integers(0, size // 2 - h // 2) if k == 0 else rng.integers(size // 2, size - h))
            cv2.rectangle(img, (x0, y0), (x0 + int(w) - 1, y0 + int(h) - 1), COLOURS[cls], -1)
            cx, cy = (x0 + w / 2) / size, (y0 + h / 2) / size
            rows.append(f"{cls} {cx:.6f} {cy:.6f} {w / size:.6f} {h / size:.6f}")
        path = root / "images" / f"{prefix}{i:03d}.png"
        cv2.imwrite(str(path), img)
        (root / "labels" / f"{prefix}{i:03d}.txt").write_text("\n".join(rows) + "\n")
        paths.append(path)
    return paths


def marked_image(path, value: int, height: int = 48, width: int = 64):
    """A flat BGR image of ``value`` with a corner pattern from ``path``'s text: images made for
    two files never have the same pixels (an import keeps one copy of an image it holds twice).

    Args:
        path: the file the image is for.
        value: the gray level, 0..255.
        height: rows (at least 8).
        width: columns (at least 32).

    Returns:
        uint8 (height, width, 3).
    """
    image = np.full((height, width, 3), value, np.uint8)
    for k, byte in enumerate(zlib.crc32(str(path).encode()).to_bytes(4, "big")):
        image[:8, 8 * k:8 * k + 8] = byte  # one JPEG block per byte: 1 in 2**32 alike
    return image
