"""Drawing styles the world spec never uses, for the scene shifts of the robustness suite: shapes as
outlines or with hand-drawn wobbly edges, and textured backgrounds.

A style redraws each object through render.polygon_coverage, as the spec draws its shapes, and hands
the coverage to SceneObject.drawn_as, so an object's recorded box is the box of what is drawn.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from vislang.data.world.render import polygon_coverage, shape_polygon
from vislang.data.world.scene import Scene, SceneObject

# ---- drawing: outlines and wobble -----------------------------------------------------------------

CIRCLE_VERTICES = 128  # a circle as a polygon: 31 px of radius is off by under 0.01 px
WOBBLE_FREQUENCIES = (2, 3, 5, 7)  # cycles around the outline: a slow, hand-drawn waver


def ring(obj: SceneObject) -> np.ndarray:
    """The object's outline as polygon vertices [n, 2]."""
    if obj.shape == "circle":
        theta = np.linspace(0.0, 2 * math.pi, CIRCLE_VERTICES, endpoint=False)
        return np.stack([obj.cx + obj.r * np.cos(theta), obj.cy + obj.r * np.sin(theta)], axis=1)
    return np.asarray(shape_polygon(obj.shape, obj.cx, obj.cy, obj.r, obj.rotation))


def inset_depth(points: np.ndarray, cx: float, cy: float) -> float:
    """Distance from the centre to the nearest edge line: scaling the polygon about the centre by
    1 - d / depth moves every edge d pixels inwards, for these shapes whose edges are all that far."""
    a, b = points - [cx, cy], np.roll(points, -1, axis=0) - [cx, cy]
    cross = np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
    return float((cross / np.hypot(*(b - a).T)).min())


def outlined(width: float) -> Callable[[Scene], Scene]:
    """Shapes drawn as outlines `width` x min(W, H) wide, at most half the inset depth, so every
    shape keeps a hole of the background inside."""

    def restyle(scene: Scene) -> Scene:
        objects = []
        for obj in scene.objects:
            outer = ring(obj)
            depth = inset_depth(outer, obj.cx, obj.cy)
            keep = 1.0 - min(width * min(scene.width, scene.height), depth / 2) / depth
            hole = [obj.cx, obj.cy] + keep * (outer - [obj.cx, obj.cy])
            objects.append(obj.drawn_as(polygon_coverage(outer, hole)))
        return scene.with_objects(objects)

    return restyle


def densify(points: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """The polygon with vertices every `step` pixels or closer, and each vertex's position along the
    perimeter as a fraction in [0, 1)."""
    ends = np.roll(points, -1, axis=0)
    counts = np.maximum(1, np.ceil(np.hypot(*(ends - points).T) / step)).astype(int)
    dense = np.concatenate(
        [p + (q - p) * (np.arange(k) / k)[:, None] for p, q, k in zip(points, ends, counts)]
    )
    steps = np.hypot(*(np.roll(dense, -1, axis=0) - dense).T)
    return dense, np.concatenate([[0.0], np.cumsum(steps)[:-1]]) / steps.sum()


def wobbled(amplitude: float, rng: np.random.Generator) -> Callable[[Scene], Scene]:
    """Hand-drawn edges: every outline point moves along its ray from the centre by a smooth random
    waver of up to `amplitude` x its distance, then the shape is scaled by 1 / (1 + amplitude), so it
    stays inside its bounding circle and the placement holds. The box is the drawn shape's, exactly."""

    def restyle(scene: Scene) -> Scene:
        objects = []
        for obj in scene.objects:
            dense, t = densify(ring(obj), step=max(obj.r / 16, 0.5))
            phases = rng.uniform(0, 2 * math.pi, len(WOBBLE_FREQUENCIES))
            weights = rng.uniform(0.5, 1.0, len(WOBBLE_FREQUENCIES))
            waver = np.sin(2 * math.pi * np.outer(t, WOBBLE_FREQUENCIES) + phases) @ weights / weights.sum()
            factor = (1 + amplitude * waver) / (1 + amplitude)  # [n], at most 1
            outline = [obj.cx, obj.cy] + factor[:, None] * (dense - [obj.cx, obj.cy])
            objects.append(obj.drawn_as(polygon_coverage(outline)))
        return scene.with_objects(objects)

    return restyle


# ---- backgrounds the spec never uses ------------------------------------------------------------
# All neutral or nearly so: no object color is, so no background can be mistaken for an object's
# color, and the palette has no black object to vanish on the dark one.

LIGHT, SHADE = np.array([236.0, 236.0, 236.0]), np.array([190.0, 190.0, 194.0])
DARK = (28, 28, 32)
PHOTO_BASE = np.array([172.0, 166.0, 156.0])  # a warm mid grey, like an indoor photo's wall


def stripes(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Straight stripes at a random angle, period 6..12% of the shorter side."""
    period = rng.uniform(0.06, 0.12) * min(width, height)
    angle = rng.uniform(0, math.pi)
    y, x = np.mgrid[0:height, 0:width] + 0.5
    light = ((x * math.cos(angle) + y * math.sin(angle)) / period) % 1 < 0.5
    return np.where(light[..., None], LIGHT, SHADE)


def checker(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A checkerboard of cells 5..10% of the shorter side, at a random offset."""
    cell = rng.uniform(0.05, 0.10) * min(width, height)
    ox, oy = rng.uniform(0, cell, 2)
    y, x = np.mgrid[0:height, 0:width] + 0.5
    light = (np.floor((x + ox) / cell) + np.floor((y + oy) / cell)) % 2 == 0
    return np.where(light[..., None], LIGHT, SHADE)


def smooth_noise(width: int, height: int, rng: np.random.Generator, octaves: int = 5) -> np.ndarray:
    """Multi-scale noise [H, W]: coarse random grids enlarged bicubically, each finer one half as
    strong (the 1/f look of natural images), scaled to unit standard deviation."""
    total = np.zeros((height, width), dtype=np.float32)
    for k in range(octaves):
        cells = 2 ** (k + 1)
        grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        big = Image.fromarray(grid, "F").resize((width, height), Image.Resampling.BICUBIC)
        total += np.asarray(big) / 2**k
    return total / max(float(total.std()), 1e-6)


def photo(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Photographic-like clutter: smooth multi-scale brightness with a faint tint wandering over it."""
    brightness = 28.0 * smooth_noise(width, height, rng)
    tint = np.stack([6.0 * smooth_noise(width, height, rng) for _ in range(3)], axis=-1)
    return PHOTO_BASE + brightness[..., None] + tint


def dark(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    return np.broadcast_to(np.asarray(DARK, dtype=np.float64), (height, width, 3))


TEXTURES = {"stripes": stripes, "checker": checker, "photo": photo, "dark": dark}


def textured_backdrop(rng: np.random.Generator) -> Callable[[Scene], Image.Image]:
    """The texture the scene's background names, with the scene's own pixel noise on top."""

    def backdrop(scene: Scene) -> Image.Image:
        pixels = TEXTURES[scene.background](scene.width, scene.height, rng).astype(np.float32)
        if scene.noise_sigma > 0:  # the same noise render.background adds
            noise = np.random.default_rng(scene.noise_seed).standard_normal(pixels.shape, dtype=np.float32)
            pixels = pixels + np.float32(scene.noise_sigma) * noise
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")

    return backdrop


def renamed_background(name: str) -> Callable[[Scene], Scene]:
    return lambda scene: dataclasses.replace(scene, background=name)
