"""Scene drawing for the built-in scenario: compositing, ground maps, lighting and sensor effects.

Everything is numpy + OpenCV driven by a ``numpy.random.Generator``, so the same generator
state always produces the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgecl.data.sprites import shade


def place_sprite(bgr: np.ndarray, alpha: np.ndarray, cx: float, cy: float, angle_deg: float
                 ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Rotate a sprite about its centre and position it with sub-pixel accuracy.

    Args:
        bgr: sprite colours (h, w, 3) float32.
        alpha: sprite coverage (h, w) float32.
        cx: x of the sprite centre in frame pixels.
        cy: y of the sprite centre in frame pixels.
        angle_deg: counter-clockwise rotation in degrees.

    Returns:
        ``(bgr, alpha, x0, y0)``: the rotated patch and its integer top-left corner in the frame.
    """
    h, w = alpha.shape
    side = int(np.ceil(np.hypot(h, w))) + 3
    x0, y0 = int(np.floor(cx)) - side // 2, int(np.floor(cy)) - side // 2
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle_deg, 1.0)
    m[0, 2] += (cx - x0) - w / 2.0
    m[1, 2] += (cy - y0) - h / 2.0
    out_bgr = cv2.warpAffine(bgr, m, (side, side), flags=cv2.INTER_LINEAR)
    out_alpha = cv2.warpAffine(alpha, m, (side, side), flags=cv2.INTER_LINEAR)
    return out_bgr, out_alpha, x0, y0


def blend_patch(frame: np.ndarray, patch: np.ndarray | None, alpha: np.ndarray, x0: int, y0: int,
                opacity: float = 1.0) -> tuple[slice, slice, np.ndarray] | None:
    """Alpha-blend a patch into a float frame in place (``patch=None`` darkens: a shadow).

    Args:
        frame: float32 (H, W, 3) frame.
        patch: float32 (h, w, 3) colours, or ``None`` to multiply by ``1 - opacity * alpha``.
        alpha: float32 (h, w) coverage.
        x0: left edge of the patch in frame pixels (may be negative).
        y0: top edge of the patch in frame pixels (may be negative).
        opacity: global opacity multiplier.

    Returns:
        ``(rows, cols, alpha_crop)`` of the part inside the frame, or ``None`` if none is.
    """
    fh, fw = frame.shape[:2]
    ph, pw = alpha.shape
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(fw, x0 + pw), min(fh, y0 + ph)
    if fx0 >= fx1 or fy0 >= fy1:
        return None
    rows, cols = slice(fy0, fy1), slice(fx0, fx1)
    a = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] * opacity
    if patch is None:
        frame[rows, cols] *= (1.0 - a)[..., None]
    else:
        p = patch[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        frame[rows, cols] = frame[rows, cols] * (1.0 - a[..., None]) + p * a[..., None]
    return rows, cols, a


_TERRAINS = (
    ((70, 120, 60), (50, 150, 90)),      # grass (BGR)
    ((110, 110, 110), (80, 85, 90)),     # asphalt
    ((120, 170, 200), (90, 140, 170)),   # sand
    ((120, 90, 40), (90, 110, 60)),      # water / marsh
    ((200, 200, 195), (170, 175, 180)),  # snow / concrete
    ((40, 70, 100), (60, 100, 120)),     # soil
)


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...]) -> np.ndarray:
    total = np.zeros((h, w), np.float32)
    weight = 0.0
    for i, n in enumerate(cells):
        grid = rng.random((n + 1, n + 1)).astype(np.float32)
        amp = 0.55 ** i
        total += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        weight += amp
    return np.clip(total / weight, 0.0, 1.0)


def _draw_ground_features(img: np.ndarray, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    scale = min(h, w)
    for _ in range(rng.integers(0, 3)):
        p0 = (int(rng.integers(0, w)), 0) if rng.random() < 0.5 else (0, int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), h - 1) if p0[1] == 0 else (w - 1, int(rng.integers(0, h)))
        grey = int(rng.integers(60, 120))
        cv2.line(img, p0, p1, (grey, grey, grey + 5), int(scale * rng.uniform(0.06, 0.12)), cv2.LINE_AA)
        cv2.line(img, p0, p1, (210, 210, 210), max(1, scale // 200), cv2.LINE_AA)
    for _ in range(rng.integers(0, 4)):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        bw, bh = (int(scale * v) for v in rng.uniform(0.08, 0.22, size=2))
        roof = tuple(int(v) for v in rng.integers(50, 200, size=3))
        cv2.rectangle(img, (x, y), (x + bw, y + bh), roof, -1)
        cv2.line(img, (x, y + bh // 2), (x + bw, y + bh // 2), shade(roof, 0.7), max(1, bh // 20))


def draw_distractors(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Paint unlabelled clutter (rocks, debris, bushes, puddles, markings) onto a ground map.

    Args:
        img: uint8 BGR map, modified in place.
        rng: random generator.
        count: number of distractors.
    """
    h, w = img.shape[:2]
    unit = min(h, w) / 2.5
    for _ in range(count):
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        size = unit * float(rng.uniform(0.03, 0.12))
        colour = tuple(int(v) for v in rng.integers(20, 236, size=3))
        kind = rng.integers(5)
        if kind == 0:  # rock: irregular polygon
            ang = np.sort(rng.uniform(0, 2 * np.pi, size=7))
            rad = size * rng.uniform(0.4, 1.0, size=7)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1).astype(np.int32)
            grey = int(rng.integers(80, 200))
            cv2.fillPoly(img, [pts], (grey, grey, grey), cv2.LINE_AA)
        elif kind == 1:  # debris: small coloured rectangle
            box = ((cx, cy), (size, size * rng.uniform(0.3, 1.0)), float(rng.uniform(0, 180)))
            cv2.fillPoly(img, [cv2.boxPoints(box).astype(np.int32)], colour, cv2.LINE_AA)
        elif kind == 2:  # bush
            cv2.circle(img, (int(cx), int(cy)), int(size / 2) + 1, (30, int(rng.integers(70, 130)), 30),
                       -1, cv2.LINE_AA)
        elif kind == 3:  # puddle / oil stain
            axes = (int(size) + 1, int(size * rng.uniform(0.3, 0.8)) + 1)
            cv2.ellipse(img, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360,
                        (int(rng.integers(40, 90)),) * 3, -1, cv2.LINE_AA)
        else:  # marking / fence line
            dx, dy = size * np.cos(rng.uniform(0, np.pi)), size * np.sin(rng.uniform(0, np.pi))
            cv2.line(img, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), colour,
                     max(1, int(size / 8)), cv2.LINE_AA)


def make_ground_map(rng: np.random.Generator, h: int, w: int, distractors: int) -> np.ndarray:
    """Procedurally texture a ground map larger than one frame (the camera pans over it).

    Args:
        rng: random generator.
        h: map height in pixels.
        w: map width in pixels.
        distractors: number of unlabelled clutter shapes painted on it.

    Returns:
        uint8 BGR map (h, w, 3).
    """
    a, b = (np.array(t, np.float32) for t in _TERRAINS[rng.integers(len(_TERRAINS))])
    c, d = (np.array(t, np.float32) for t in _TERRAINS[rng.integers(len(_TERRAINS))])
    t = _value_noise(rng, h, w, (3, 7, 15, 31))[..., None]
    region = (_value_noise(rng, h, w, (2, 4))[..., None] > rng.uniform(0.45, 0.7)).astype(np.float32)
    region = cv2.GaussianBlur(region, (0, 0), 3)[..., None]
    base = (a * (1 - t) + b * t) * (1 - region) + (c * (1 - t) + d * t) * region
    grain = rng.normal(0.0, 6.0, size=(h, w, 1)).astype(np.float32)
    img = np.clip(base + grain, 0, 255).astype(np.uint8)
    _draw_ground_features(img, rng)
    draw_distractors(img, rng, distractors)
    return img


@dataclass(frozen=True)
class Look:
    """Per-sequence photometric conditions.

    Attributes:
        gain: contrast multiplier.
        bias: brightness offset in grey levels.
        cast: per-channel BGR colour gains.
        haze: blend factor towards a grey haze (0 = clear).
        noise_sigma: standard deviation of the Gaussian sensor noise in grey levels.
        blur_prob: probability that a frame is blurred (motion or defocus).
        sun_dir: shadow offset direction (unit vector, x and y).
    """

    gain: float
    bias: float
    cast: tuple[float, float, float]
    haze: float
    noise_sigma: float
    blur_prob: float
    sun_dir: tuple[float, float]


def random_look(rng: np.random.Generator) -> Look:
    """Draw random lighting and sensor conditions for one sequence.

    Args:
        rng: random generator.

    Returns:
        The :class:`Look`.
    """
    ang = float(rng.uniform(0, 2 * np.pi))
    return Look(gain=float(rng.uniform(0.6, 1.3)), bias=float(rng.uniform(-35, 30)),
                cast=tuple(float(v) for v in rng.uniform(0.82, 1.18, size=3)),
                haze=float(rng.choice([0.0, rng.uniform(0.05, 0.3)])),
                noise_sigma=float(rng.uniform(1.0, 9.0)), blur_prob=float(rng.uniform(0.0, 0.5)),
                sun_dir=(float(np.cos(ang)), float(np.sin(ang))))


def finish_frame(frame: np.ndarray, look: Look, motion_xy: tuple[float, float],
                 rng: np.random.Generator) -> np.ndarray:
    """Apply lighting, haze, blur and sensor noise; convert to uint8.

    Args:
        frame: float32 (H, W, 3) rendered scene.
        look: the sequence's conditions.
        motion_xy: camera motion this frame in pixels (direction of motion blur).
        rng: random generator.

    Returns:
        uint8 BGR image.
    """
    img = frame * (look.gain * np.array(look.cast, np.float32)) + look.bias
    if look.haze > 0:
        img = img * (1 - look.haze) + 170.0 * look.haze
    if rng.random() < look.blur_prob:
        speed = float(np.hypot(*motion_xy))
        if speed > 1.0 and rng.random() < 0.6:
            k = int(min(7, max(3, round(speed)))) | 1
            kernel = np.zeros((k, k), np.float32)
            dx, dy = motion_xy[0] / speed, motion_xy[1] / speed
            c = k // 2
            cv2.line(kernel, (int(round(c - dx * c)), int(round(c - dy * c))),
                     (int(round(c + dx * c)), int(round(c + dy * c))), 1.0, 1)
            img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
        else:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.2)))
    img = img + rng.normal(0.0, look.noise_sigma, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
