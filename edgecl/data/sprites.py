"""Object sprites of the built-in scenario: one drawing per class, plus tree canopies.

Sprites are drawn at 4x resolution with OpenCV and area-downsampled, which gives small objects
soft, realistic edges. All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

SUPERSAMPLE = 4

_CAR_COLOURS = [(235, 235, 235), (30, 30, 30), (170, 170, 175), (40, 40, 190), (150, 80, 30),
                (90, 90, 90), (40, 90, 40), (60, 150, 210)]
_BRIGHT = [(0, 120, 255), (40, 200, 40), (220, 120, 20), (30, 30, 220), (0, 200, 220),
           (200, 60, 160)]


@dataclass(frozen=True)
class ObjectClass:
    """How one scenario class looks and moves.

    Attributes:
        name: class name written to ``tasks.yaml``.
        size_frac: (min, max) length of the longer side as a fraction of the image size.
        aspect: width / length of the canonical (unrotated) sprite.
        speed_frac: (min, max) speed in image sizes per frame (0 = static).
        turn_rad: standard deviation of the heading change per frame, in radians.
        flies: drawn above occluders (not hidden by tree canopies).
        draw: function ``(canvas, rng)`` painting the sprite on a supersampled BGR canvas.
    """

    name: str
    size_frac: tuple[float, float]
    aspect: float
    speed_frac: tuple[float, float]
    turn_rad: float
    flies: bool
    draw: Callable[[np.ndarray, np.random.Generator], None]


def _pick(rng: np.random.Generator, palette: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    jitter = rng.integers(-20, 21, size=3)
    return tuple(int(v) for v in np.clip(np.array(palette[rng.integers(len(palette))]) + jitter, 8, 255))


def shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Scale a BGR colour (kept in 8..255 so it never reads as transparent black).

    Args:
        colour: BGR triple.
        factor: brightness multiplier.

    Returns:
        The shaded BGR triple.
    """
    return tuple(int(min(255, max(8, c * factor))) for c in colour)


def _draw_car(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    body = _pick(rng, _CAR_COLOURS)
    cv2.rectangle(c, (0, h // 10), (w - 1, h - 1 - h // 10), body, -1, cv2.LINE_AA)
    cv2.rectangle(c, (int(w * 0.62), h // 5), (int(w * 0.78), h - h // 5), (70, 50, 40), -1)
    cv2.rectangle(c, (int(w * 0.12), h // 4), (int(w * 0.22), h - h // 4), (80, 60, 50), -1)
    cv2.rectangle(c, (int(w * 0.3), h // 4), (int(w * 0.58), h - h // 4), shade(body, 0.85), -1)


def _draw_truck(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    cab = _pick(rng, _BRIGHT + _CAR_COLOURS)
    box = _pick(rng, [(225, 225, 225), (160, 160, 160), (60, 110, 160), (50, 50, 120)])
    cv2.rectangle(c, (0, 0), (int(w * 0.72), h - 1), box, -1)
    for x in range(int(w * 0.05), int(w * 0.7), max(2, w // 12)):
        cv2.line(c, (x, 0), (x, h - 1), shade(box, 0.8), max(1, w // 60))
    cv2.rectangle(c, (int(w * 0.76), h // 8), (w - 1, h - 1 - h // 8), cab, -1)
    cv2.rectangle(c, (int(w * 0.9), h // 5), (int(w * 0.96), h - h // 5), (60, 40, 30), -1)


def _draw_person(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    shirt = _pick(rng, _BRIGHT + _CAR_COLOURS)
    cv2.ellipse(c, (w // 2, h // 2), (int(w * 0.4), int(h * 0.48)), 0, 0, 360, shirt, -1, cv2.LINE_AA)
    hair = _pick(rng, [(20, 30, 40), (40, 70, 110), (60, 120, 170), (30, 30, 30)])
    cv2.circle(c, (w // 2, h // 2), int(min(w, h) * 0.3), hair, -1, cv2.LINE_AA)


def _draw_bicycle(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    frame = _pick(rng, [(30, 30, 30), (40, 40, 180), (160, 90, 30), (200, 200, 200)])
    t = max(1, h // 6)
    cv2.line(c, (w // 10, h // 2), (w - w // 10, h // 2), frame, t, cv2.LINE_AA)
    cv2.ellipse(c, (w // 6, h // 2), (w // 7, max(1, h // 6)), 0, 0, 360, (20, 20, 20), t, cv2.LINE_AA)
    cv2.ellipse(c, (w - w // 6, h // 2), (w // 7, max(1, h // 6)), 0, 0, 360, (20, 20, 20), t,
                cv2.LINE_AA)
    cv2.line(c, (int(w * 0.78), h // 8), (int(w * 0.78), h - h // 8), frame, t, cv2.LINE_AA)
    cv2.circle(c, (int(w * 0.42), h // 2), max(2, h // 5), _pick(rng, _BRIGHT), -1, cv2.LINE_AA)


def _draw_boat(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    hull = _pick(rng, [(240, 240, 240), (30, 90, 200), (140, 60, 20), (40, 40, 40)])
    pts = np.array([[0, h // 6], [int(w * 0.7), 0], [w - 1, h // 2], [int(w * 0.7), h - 1],
                    [0, h - 1 - h // 6]], np.int32)
    cv2.fillPoly(c, [pts], hull, cv2.LINE_AA)
    inner = (pts - [w // 2, h // 2]) * 0.65 + [w // 2 - w // 20, h // 2]
    cv2.fillPoly(c, [inner.astype(np.int32)], (110, 160, 200), cv2.LINE_AA)
    cv2.rectangle(c, (int(w * 0.25), int(h * 0.35)), (int(w * 0.45), int(h * 0.65)), shade(hull, 0.7), -1)


def _draw_drone(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    arm = _pick(rng, [(40, 40, 40), (200, 200, 200), (30, 30, 160)])
    t = max(2, w // 14)
    cv2.line(c, (w // 6, h // 6), (w - w // 6, h - h // 6), arm, t, cv2.LINE_AA)
    cv2.line(c, (w // 6, h - h // 6), (w - w // 6, h // 6), arm, t, cv2.LINE_AA)
    for cx, cy in ((w // 6, h // 6), (w - w // 6, h // 6), (w // 6, h - h // 6), (w - w // 6, h - h // 6)):
        cv2.circle(c, (cx, cy), w // 6, (150, 150, 150), max(1, t // 2), cv2.LINE_AA)
    cv2.rectangle(c, (int(w * 0.4), int(h * 0.4)), (int(w * 0.6), int(h * 0.6)), shade(arm, 1.3), -1)


def _draw_bus(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    body = _pick(rng, [(0, 200, 240), (30, 30, 200), (230, 230, 230), (40, 140, 40)])
    cv2.rectangle(c, (0, 0), (w - 1, h - 1), body, -1)
    cv2.rectangle(c, (w // 20, h // 7), (w - w // 20, h - h // 7), shade(body, 0.9), -1)
    for x0 in (int(w * 0.25), int(w * 0.55)):
        cv2.rectangle(c, (x0, int(h * 0.3)), (x0 + w // 8, int(h * 0.7)), (150, 150, 150), -1)
    cv2.rectangle(c, (int(w * 0.94), h // 7), (w - 1, h - h // 7), (60, 40, 30), -1)


def _draw_tent(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    cloth = _pick(rng, _BRIGHT)
    cv2.rectangle(c, (0, 0), (w - 1, h // 2), cloth, -1)
    cv2.rectangle(c, (0, h // 2), (w - 1, h - 1), shade(cloth, 0.6), -1)
    cv2.line(c, (0, h // 2), (w - 1, h // 2), shade(cloth, 0.4), max(1, h // 16), cv2.LINE_AA)
    cv2.line(c, (0, 0), (w // 6, h // 2), (240, 240, 240), max(1, h // 20), cv2.LINE_AA)


def _draw_barrel(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    body = _pick(rng, [(160, 80, 20), (30, 30, 200), (0, 200, 230), (40, 130, 40)])
    r = min(h, w) // 2 - 1
    cv2.circle(c, (w // 2, h // 2), r, body, -1, cv2.LINE_AA)
    cv2.circle(c, (w // 2, h // 2), int(r * 0.7), shade(body, 0.6), max(1, r // 6), cv2.LINE_AA)
    cv2.circle(c, (int(w * 0.62), int(h * 0.4)), max(1, r // 5), (200, 200, 200), -1, cv2.LINE_AA)


def _draw_dog(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    fur = _pick(rng, [(40, 70, 120), (20, 20, 20), (200, 210, 220), (60, 110, 170)])
    cv2.ellipse(c, (int(w * 0.45), h // 2), (int(w * 0.32), int(h * 0.4)), 0, 0, 360, fur, -1, cv2.LINE_AA)
    cv2.circle(c, (int(w * 0.84), h // 2), int(h * 0.38), shade(fur, 0.8), -1, cv2.LINE_AA)
    cv2.line(c, (int(w * 0.15), h // 2), (0, h // 4), fur, max(1, h // 8), cv2.LINE_AA)


def _draw_cone(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    cv2.rectangle(c, (0, 0), (w - 1, h - 1), (20, 70, 200), -1)
    r = min(h, w) // 2
    cv2.circle(c, (w // 2, h // 2), int(r * 0.8), (0, 110, 255), -1, cv2.LINE_AA)
    cv2.circle(c, (w // 2, h // 2), int(r * 0.5), (245, 245, 245), max(1, r // 5), cv2.LINE_AA)
    cv2.circle(c, (w // 2, h // 2), max(1, r // 6), (0, 90, 230), -1, cv2.LINE_AA)


def _draw_container(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    body = _pick(rng, [(30, 50, 150), (140, 90, 30), (50, 110, 50), (120, 120, 120)])
    cv2.rectangle(c, (0, 0), (w - 1, h - 1), body, -1)
    for x in range(0, w, max(2, w // 20)):
        cv2.line(c, (x, 0), (x, h - 1), shade(body, 0.7), max(1, w // 100))
    cv2.rectangle(c, (0, 0), (w - 1, h - 1), shade(body, 0.5), max(1, h // 12))


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("car", (0.09, 0.16), 0.5, (0.008, 0.025), 0.02, False, _draw_car),
    ObjectClass("truck", (0.15, 0.25), 0.4, (0.006, 0.018), 0.01, False, _draw_truck),
    ObjectClass("person", (0.06, 0.085), 0.7, (0.002, 0.006), 0.15, False, _draw_person),
    ObjectClass("bicycle", (0.07, 0.11), 0.35, (0.004, 0.012), 0.06, False, _draw_bicycle),
    ObjectClass("boat", (0.1, 0.22), 0.4, (0.003, 0.01), 0.03, False, _draw_boat),
    ObjectClass("drone", (0.07, 0.13), 1.0, (0.006, 0.025), 0.2, True, _draw_drone),
    ObjectClass("bus", (0.18, 0.25), 0.3, (0.005, 0.014), 0.01, False, _draw_bus),
    ObjectClass("tent", (0.1, 0.18), 0.8, (0.0, 0.0), 0.0, False, _draw_tent),
    ObjectClass("barrel", (0.05, 0.09), 1.0, (0.0, 0.0), 0.0, False, _draw_barrel),
    ObjectClass("dog", (0.06, 0.1), 0.4, (0.003, 0.014), 0.25, False, _draw_dog),
    ObjectClass("cone", (0.05, 0.07), 1.0, (0.0, 0.0), 0.0, False, _draw_cone),
    ObjectClass("container", (0.16, 0.25), 0.4, (0.0, 0.0), 0.0, False, _draw_container),
)


def render_sprite(kind: ObjectClass, length_px: float, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Draw one object in its canonical orientation (heading along +x).

    Args:
        kind: the class to draw.
        length_px: length of the longer side in output pixels.
        rng: random generator (colours, details).

    Returns:
        ``(bgr, alpha)``: float32 arrays (h, w, 3) in 0..255 and (h, w) in 0..1.
    """
    w = max(3, int(round(length_px)))
    h = max(3, int(round(length_px * kind.aspect)))
    big = np.zeros((h * SUPERSAMPLE, w * SUPERSAMPLE, 3), np.uint8)
    kind.draw(big, rng)
    return _downsample(big, w, h)


def _downsample(big: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    # INVARIANT: drawn pixels are never pure black (colours are kept >= 8), so black = empty.
    mask_big = (big.max(axis=2) > 0).astype(np.uint8) * 255
    bgr = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(mask_big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    # Colour where alpha is partial is premultiplied by the black canvas: undo it.
    bgr = np.where(alpha[..., None] > 1e-3, bgr / np.maximum(alpha[..., None], 1e-3), 0.0)
    return np.clip(bgr, 0, 255).astype(np.float32), alpha


def canopy_sprite(rng: np.random.Generator, size_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw a tree canopy (an occluder drawn over ground objects, never labelled).

    Args:
        rng: random generator.
        size_px: approximate diameter in pixels.

    Returns:
        ``(bgr, alpha)`` float32 sprite.
    """
    s = max(4, int(size_px)) * SUPERSAMPLE
    big = np.zeros((s, s, 3), np.uint8)
    green = (int(rng.integers(20, 60)), int(rng.integers(80, 150)), int(rng.integers(20, 70)))
    for _ in range(6):
        r = int(s * rng.uniform(0.15, 0.3))
        cx, cy = (int(v) for v in rng.uniform(r, s - r, size=2))
        cv2.circle(big, (cx, cy), r, shade(green, float(rng.uniform(0.7, 1.2))), -1, cv2.LINE_AA)
    return _downsample(big, s // SUPERSAMPLE, s // SUPERSAMPLE)
