"""Drawing for the built-in scenario: object sprites, ground maps, lighting and sensor effects.

Everything here is pure numpy + OpenCV drawing driven by a ``numpy.random.Generator``, so the
same generator state always produces the same pixels. Sprites are drawn at 4x resolution and
area-downsampled, which gives small objects soft, realistic edges.
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


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(8, c * factor))) for c in colour)


def _draw_car(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    body = _pick(rng, _CAR_COLOURS)
    cv2.rectangle(c, (0, h // 10), (w - 1, h - 1 - h // 10), body, -1, cv2.LINE_AA)
    cv2.rectangle(c, (int(w * 0.62), h // 5), (int(w * 0.78), h - h // 5), (70, 50, 40), -1)
    cv2.rectangle(c, (int(w * 0.12), h // 4), (int(w * 0.22), h - h // 4), (80, 60, 50), -1)
    cv2.rectangle(c, (int(w * 0.3), h // 4), (int(w * 0.58), h - h // 4), _shade(body, 0.85), -1)


def _draw_truck(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    cab = _pick(rng, _BRIGHT + _CAR_COLOURS)
    box = _pick(rng, [(225, 225, 225), (160, 160, 160), (60, 110, 160), (50, 50, 120)])
    cv2.rectangle(c, (0, 0), (int(w * 0.72), h - 1), box, -1)
    for x in range(int(w * 0.05), int(w * 0.7), max(2, w // 12)):
        cv2.line(c, (x, 0), (x, h - 1), _shade(box, 0.8), max(1, w // 60))
    cv2.rectangle(c, (int(w * 0.76), h // 8), (w - 1, h - 1 - h // 8), cab, -1)
    cv2.rectangle(c, (int(w * 0.9), h // 5), (int(w * 0.96), h - h // 5), (60, 40, 30), -1)


def _draw_person(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    shirt = _pick(rng, _BRIGHT + _CAR_COLOURS)
    cv2.ellipse(c, (w // 2, h // 2), (int(w * 0.28), int(h * 0.48)), 0, 0, 360, shirt, -1, cv2.LINE_AA)
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
    cv2.rectangle(c, (int(w * 0.25), int(h * 0.35)), (int(w * 0.45), int(h * 0.65)), _shade(hull, 0.7), -1)


def _draw_drone(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    arm = _pick(rng, [(40, 40, 40), (200, 200, 200), (30, 30, 160)])
    t = max(2, w // 14)
    cv2.line(c, (w // 6, h // 6), (w - w // 6, h - h // 6), arm, t, cv2.LINE_AA)
    cv2.line(c, (w // 6, h - h // 6), (w - w // 6, h // 6), arm, t, cv2.LINE_AA)
    for cx, cy in ((w // 6, h // 6), (w - w // 6, h // 6), (w // 6, h - h // 6), (w - w // 6, h - h // 6)):
        cv2.circle(c, (cx, cy), w // 6, (150, 150, 150), max(1, t // 2), cv2.LINE_AA)
    cv2.rectangle(c, (int(w * 0.4), int(h * 0.4)), (int(w * 0.6), int(h * 0.6)), _shade(arm, 1.3), -1)


def _draw_bus(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    body = _pick(rng, [(0, 200, 240), (30, 30, 200), (230, 230, 230), (40, 140, 40)])
    cv2.rectangle(c, (0, 0), (w - 1, h - 1), body, -1)
    cv2.rectangle(c, (w // 20, h // 7), (w - w // 20, h - h // 7), _shade(body, 0.9), -1)
    for x0 in (int(w * 0.25), int(w * 0.55)):
        cv2.rectangle(c, (x0, int(h * 0.3)), (x0 + w // 8, int(h * 0.7)), (150, 150, 150), -1)
    cv2.rectangle(c, (int(w * 0.94), h // 7), (w - 1, h - h // 7), (60, 40, 30), -1)


def _draw_tent(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    cloth = _pick(rng, _BRIGHT)
    cv2.rectangle(c, (0, 0), (w - 1, h // 2), cloth, -1)
    cv2.rectangle(c, (0, h // 2), (w - 1, h - 1), _shade(cloth, 0.6), -1)
    cv2.line(c, (0, h // 2), (w - 1, h // 2), _shade(cloth, 0.4), max(1, h // 16), cv2.LINE_AA)
    cv2.line(c, (0, 0), (w // 6, h // 2), (240, 240, 240), max(1, h // 20), cv2.LINE_AA)


def _draw_barrel(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    body = _pick(rng, [(160, 80, 20), (30, 30, 200), (0, 200, 230), (40, 130, 40)])
    r = min(h, w) // 2 - 1
    cv2.circle(c, (w // 2, h // 2), r, body, -1, cv2.LINE_AA)
    cv2.circle(c, (w // 2, h // 2), int(r * 0.7), _shade(body, 0.6), max(1, r // 6), cv2.LINE_AA)
    cv2.circle(c, (int(w * 0.62), int(h * 0.4)), max(1, r // 5), (200, 200, 200), -1, cv2.LINE_AA)


def _draw_dog(c: np.ndarray, rng: np.random.Generator) -> None:
    h, w = c.shape[:2]
    fur = _pick(rng, [(40, 70, 120), (20, 20, 20), (200, 210, 220), (60, 110, 170)])
    cv2.ellipse(c, (int(w * 0.45), h // 2), (int(w * 0.32), int(h * 0.4)), 0, 0, 360, fur, -1, cv2.LINE_AA)
    cv2.circle(c, (int(w * 0.84), h // 2), int(h * 0.38), _shade(fur, 0.8), -1, cv2.LINE_AA)
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
        cv2.line(c, (x, 0), (x, h - 1), _shade(body, 0.7), max(1, w // 100))
    cv2.rectangle(c, (0, 0), (w - 1, h - 1), _shade(body, 0.5), max(1, h // 12))


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("car", (0.09, 0.16), 0.5, (0.008, 0.025), 0.02, False, _draw_car),
    ObjectClass("truck", (0.15, 0.25), 0.4, (0.006, 0.018), 0.01, False, _draw_truck),
    ObjectClass("person", (0.05, 0.075), 0.6, (0.002, 0.006), 0.15, False, _draw_person),
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
    mask_big = np.zeros(big.shape[:2], np.uint8)
    mask_big[big.max(axis=2) > 0] = 255
    bgr = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(mask_big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    # Colour where alpha is partial is premultiplied by the black canvas: undo it.
    bgr = np.where(alpha[..., None] > 1e-3, bgr / np.maximum(alpha[..., None], 1e-3), 0.0)
    return np.clip(bgr, 0, 255), alpha


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
        cv2.line(img, (x, y + bh // 2), (x + bw, y + bh // 2), _shade(roof, 0.7), max(1, bh // 20))


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
        cv2.circle(big, (cx, cy), r, _shade(green, float(rng.uniform(0.7, 1.2))), -1, cv2.LINE_AA)
    mask = (big.max(axis=2) > 0).astype(np.uint8) * 255
    size = s // SUPERSAMPLE
    bgr = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    bgr = np.where(alpha[..., None] > 1e-3, bgr / np.maximum(alpha[..., None], 1e-3), 0.0)
    return bgr, alpha


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
