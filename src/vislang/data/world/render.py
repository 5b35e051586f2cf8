"""Shape geometry and anti-aliased drawing: each shape is drawn at 4x and downsampled with Lanczos.

An object is drawn as a coverage mask over its own small bounding square, never over the whole
canvas: the mask both paints the object and gives its recorded box, so the box is exactly the
pixels (a cheaper equivalent of drawing the whole scene at 4x, as the objects never overlap).
Coordinates are continuous: pixel (i, j) covers [i, i + 1) x [j, j + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

SUPERSAMPLE = 4
PAD = 2  # pixels of empty mask around the bounding circle, room for the Lanczos kernel
COVERED = 128  # a pixel belongs to the shape's box when at least half covered
STAR_INNER = 0.45

Box = list[int]  # [x1, y1, x2, y2] pixels, x2 and y2 exclusive (one past the last pixel)
Points = list[tuple[float, float]] | np.ndarray  # polygon vertices, canvas pixels


def shape_polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """Vertices of a polygon inscribed in the circle (cx, cy, r), rotated clockwise on screen by degrees.

    Angles run clockwise from 3 o'clock because image y points down: -90 degrees is straight up.
    """
    if shape == "square":
        angles, radii = np.array([45.0, 135.0, 225.0, 315.0]), [r] * 4
    elif shape == "triangle":
        angles, radii = np.array([-90.0, 30.0, 150.0]), [r] * 3  # apex up
    elif shape == "star":
        angles = -90.0 + np.arange(10) * 36.0  # a point up, then alternating outer and inner
        radii = [r if k % 2 == 0 else STAR_INNER * r for k in range(10)]
    elif shape == "hexagon":
        angles, radii = np.arange(6) * 60.0, [r] * 6  # a vertex at 3 o'clock
    else:
        raise ValueError(f"unknown shape {shape!r}")
    theta = np.radians(angles + rotation)
    xs = cx + np.asarray(radii) * np.cos(theta)
    ys = cy + np.asarray(radii) * np.sin(theta)
    return list(zip(xs.tolist(), ys.tolist()))


@dataclass
class Coverage:
    """An object's anti-aliased mask (mode "L", 255 = fully covered) placed at (x0, y0) on the canvas."""

    mask: Image.Image
    x0: int
    y0: int
    box: Box


def fill_polygon(points: list[tuple[float, float]], width: int, height: int) -> np.ndarray:
    """Even-odd fill sampled at pixel centers: exact, where PIL's polygon fill is a pixel too wide."""
    p = np.asarray(points, dtype=np.float64)
    x0, y0 = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    yc = np.arange(height) + 0.5
    crosses = (yc[:, None] >= np.minimum(y0, y1)) & (yc[:, None] < np.maximum(y0, y1))
    with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges never cross a row
        xcross = x0 + (yc[:, None] - y0) * (x1 - x0) / (y1 - y0)
    xcross = np.sort(np.where(crosses, xcross, np.inf), axis=1)
    xc = np.arange(width) + 0.5
    inside = np.zeros((height, width), dtype=bool)
    for k in range(0, int(crosses.sum(axis=1).max()), 2):  # each row: spans between crossing pairs
        inside |= (xc >= xcross[:, k : k + 1]) & (xc < xcross[:, k + 1 : k + 2])
    return inside


def padded_frame(x_lo: float, y_lo: float, x_hi: float, y_hi: float) -> tuple[int, int, int, int]:
    """The whole-pixel frame (x0, y0, w, h) around these bounds, PAD pixels wider on every side."""
    x0, y0 = math.floor(x_lo) - PAD, math.floor(y_lo) - PAD
    return x0, y0, math.ceil(x_hi) + PAD - x0, math.ceil(y_hi) + PAD - y0


def fill_frame(points: Points, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """A polygon (canvas pixels) filled at SUPERSAMPLE x over the frame: bool [h * s, w * s]."""
    s = SUPERSAMPLE
    local = s * (np.asarray(points, dtype=np.float64) - [x0, y0])
    return fill_polygon(local.tolist(), w * s, h * s)


def mask_coverage(inside: np.ndarray, x0: int, y0: int) -> Coverage:
    """A shape filled at SUPERSAMPLE x over a frame at (x0, y0), drawn down to pixels with Lanczos;
    its box is the pixels at least half covered."""
    h, w = inside.shape[0] // SUPERSAMPLE, inside.shape[1] // SUPERSAMPLE
    big = Image.fromarray(inside.view(np.uint8) * np.uint8(255), "L")
    mask = big.resize((w, h), Image.Resampling.LANCZOS)
    ys, xs = np.nonzero(np.asarray(mask) >= COVERED)
    if xs.size == 0:
        raise ValueError("the shape covers no pixel by half; draw it larger")
    box = [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]
    return Coverage(mask, x0, y0, box)


def polygon_coverage(points: Points, hole: Points | None = None) -> Coverage:
    """Any polygon [(x, y), ...] (less a `hole` polygon inside it) drawn as the shapes are drawn."""
    p = np.asarray(points, dtype=np.float64)
    frame = padded_frame(*p.min(axis=0), *p.max(axis=0))
    inside = fill_frame(p, *frame)
    if hole is not None:
        inside &= ~fill_frame(hole, *frame)
    return mask_coverage(inside, *frame[:2])


def shape_coverage(shape: str, cx: float, cy: float, r: float, rotation: float) -> Coverage:
    x0, y0, w, h = padded_frame(cx - r, cy - r, cx + r, cy + r)
    s = SUPERSAMPLE
    if shape == "circle":
        dy = (np.arange(h * s) + 0.5 - s * (cy - y0)) ** 2
        dx = (np.arange(w * s) + 0.5 - s * (cx - x0)) ** 2
        inside = dy[:, None] + dx[None, :] <= (s * r) ** 2
    else:
        inside = fill_frame(shape_polygon(shape, cx, cy, r, rotation), x0, y0, w, h)
    return mask_coverage(inside, x0, y0)


def jitter_color(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    shifted = np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return tuple(int(c) for c in shifted)


def background(width: int, height: int, rgb: tuple[int, int, int], sigma: float, seed: int) -> Image.Image:
    """A flat canvas, with per-pixel gaussian noise when sigma > 0 (its own seed: redraws match)."""
    if sigma <= 0:
        return Image.new("RGB", (width, height), rgb)
    noise = np.random.default_rng(seed).standard_normal((height, width, 3), dtype=np.float32)
    pixels = np.rint(np.asarray(rgb, dtype=np.float32) + np.float32(sigma) * noise)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def paint(image: Image.Image, coverage: Coverage, rgb: tuple[int, int, int]) -> None:
    """Blend a flat color into the image through the object's coverage mask, in place."""
    w, h = coverage.mask.size
    image.paste(rgb, (coverage.x0, coverage.y0, coverage.x0 + w, coverage.y0 + h), coverage.mask)


def normalized_box(box: Box, width: int, height: int) -> Box:
    """Pixels to the 0..1000 grounding convention (pixel / size x 1000, rounded half up).

    Integer arithmetic: an exact half must not fall below .5 through float rounding.
    """
    sides = (width, height, width, height)
    return [(2000 * int(v) + side) // (2 * side) for v, side in zip(box, sides)]


def format_box(box: Box) -> str:
    return "[" + ", ".join(str(int(v)) for v in box) + "]"
