"""Scenes of world-spec.md section 1: sampling, placement, regions, relations, references, captions.

Positions, radii and rotations are rounded when sampled, so the recorded numbers are exactly the
ones every answer is computed from.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from . import palette as P
from .render import Box, Coverage, background, jitter_color, paint, shape_coverage

MAX_TRIES = 100  # placements per object before the scene is resampled
MAX_SCENES = 1000  # a guard against a canvas where nothing fits; never reached at spec sizes


@dataclass
class SceneObject:
    shape: str
    color: str
    size: str  # "small" or "large"
    rgb: tuple[int, int, int]  # the jittered color actually drawn
    cx: float
    cy: float
    r: float  # bounding-circle radius, pixels
    rotation: float  # degrees, clockwise on screen
    _coverage: Coverage | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def coverage(self) -> Coverage:
        if self._coverage is None:  # drawn once, then shared by the box and the painting
            self._coverage = shape_coverage(self.shape, self.cx, self.cy, self.r, self.rotation)
        return self._coverage

    @property
    def box(self) -> Box:
        return self.coverage.box

    def moved(self, cx: float, cy: float) -> SceneObject:
        return dataclasses.replace(self, cx=cx, cy=cy)

    def drawn_as(self, coverage: Coverage) -> SceneObject:
        """A copy painted and boxed through `coverage` (another drawing of the same object, such as
        an outline), so its record follows what is drawn. A replace() or moved() copy drops it."""
        copy = dataclasses.replace(self)
        copy._coverage = coverage
        return copy

    def record(self, width: int, height: int) -> dict:
        """The section-5 fields."""
        return {
            "shape": self.shape,
            "color": self.color,
            "size": self.size,
            "rgb": list(self.rgb),
            "cx": self.cx,
            "cy": self.cy,
            "r": self.r,
            "rotation": self.rotation,
            "box": list(self.box),
            "region": region_of(self, width, height),
        }


@dataclass
class Scene:
    width: int
    height: int
    background: str
    noise_sigma: float  # 0: a flat background
    noise_seed: int  # the noise has its own stream, so redrawing a changed scene keeps it
    objects: list[SceneObject]

    def records(self) -> list[dict]:
        return [o.record(self.width, self.height) for o in self.objects]

    def with_objects(self, objects: list[SceneObject]) -> Scene:
        return dataclasses.replace(self, objects=list(objects))


def draw_scene(scene: Scene) -> Image.Image:
    image = background(
        scene.width, scene.height, P.BACKGROUNDS[scene.background], scene.noise_sigma, scene.noise_seed
    )
    for obj in scene.objects:
        paint(image, obj.coverage, obj.rgb)
    return image


# ---- sampling -------------------------------------------------------------------------------------


def random_object(rng: np.random.Generator, width: int, height: int) -> SceneObject:
    """An object's look, at position (0, 0): place() picks where it goes."""
    shape = P.SHAPES[int(rng.integers(len(P.SHAPES)))]
    color = list(P.COLORS)[int(rng.integers(len(P.COLORS)))]
    size = list(P.SIZES)[int(rng.integers(len(P.SIZES)))]
    lo, hi = P.SIZES[size]
    r = round(float(rng.uniform(lo, hi)) * min(width, height), 2)
    rotation = round(float(rng.uniform(-P.MAX_ROTATION, P.MAX_ROTATION)), 1)
    rgb = jitter_color(rng, P.COLORS[color], P.COLOR_JITTER)
    return SceneObject(shape, color, size, rgb, 0.0, 0.0, r, 0.0 if shape == "circle" else rotation)


def fits(
    cx: float,
    cy: float,
    r: float,
    others: list[SceneObject],
    width: int,
    height: int,
    gap: float | None = None,
) -> bool:
    """Inside the canvas with the edge margin, and clear of every other bounding circle by the gap
    (a fraction of min(W, H); None: the spec's P.GAP)."""
    m = P.EDGE_MARGIN
    if not (cx - r >= m and cy - r >= m and cx + r <= width - m and cy + r <= height - m):
        return False
    gap = (P.GAP if gap is None else gap) * min(width, height)
    return all(math.hypot(cx - o.cx, cy - o.cy) >= r + o.r + gap for o in others)


def place(
    rng: np.random.Generator,
    obj: SceneObject,
    others: list[SceneObject],
    width: int,
    height: int,
    accept=None,
    gap: float | None = None,
) -> SceneObject | None:
    """obj at a uniform center that fits (and that `accept(cx, cy, r)` likes), or None after MAX_TRIES."""
    m = P.EDGE_MARGIN
    for _ in range(MAX_TRIES):
        cx = round(float(rng.uniform(obj.r + m, width - m - obj.r)), 2)
        cy = round(float(rng.uniform(obj.r + m, height - m - obj.r)), 2)
        if fits(cx, cy, obj.r, others, width, height, gap) and (accept is None or accept(cx, cy, obj.r)):
            return obj.moved(cx, cy)
    return None


class PlacementError(RuntimeError):
    """Nothing fitted in the attempts allowed."""


def sample_objects(
    rng: np.random.Generator,
    count: int,
    width: int,
    height: int,
    accept=None,
    attempts: int = MAX_SCENES,
    gap: float | None = None,
) -> list[SceneObject]:
    """`count` placed objects `gap` apart (see fits); the whole set is redrawn when one fails MAX_TRIES
    times."""
    for _ in range(attempts):
        objects: list[SceneObject] = []
        for _ in range(count):
            placed = place(rng, random_object(rng, width, height), objects, width, height, accept, gap)
            if placed is None:
                break
            objects.append(placed)
        else:
            return objects
    raise PlacementError(f"could not place {count} objects on {width} x {height}")


def sample_scene(
    rng: np.random.Generator,
    width: int = 224,
    height: int = 224,
    count: int | None = None,
    accept=None,
    attempts: int = MAX_SCENES,
    gap: float | None = None,
) -> Scene:
    """A random scene; `accept(cx, cy, r)` can keep objects away from things drawn over it (signs),
    and `gap` sets the space between objects (see fits)."""
    name = list(P.BACKGROUNDS)[int(rng.integers(len(P.BACKGROUNDS)))]
    sigma = round(float(rng.uniform(*P.NOISE_SIGMA)), 2) if rng.random() < P.NOISE_PROBABILITY else 0.0
    noise_seed = int(rng.integers(2**31))
    if count is None:
        count = int(rng.integers(P.MIN_OBJECTS, P.MAX_OBJECTS + 1))
    objects = sample_objects(rng, count, width, height, accept, attempts, gap)
    return Scene(width, height, name, sigma, noise_seed, objects)


# ---- what the questions are about ---------------------------------------------------------------


def column_of(obj: SceneObject, width: int) -> int:
    return 0 if obj.cx < width / 3 else 1 if obj.cx < 2 * width / 3 else 2


def row_of(obj: SceneObject, height: int) -> int:
    return 0 if obj.cy < height / 3 else 1 if obj.cy < 2 * height / 3 else 2


def region_of(obj: SceneObject, width: int, height: int) -> str:
    return P.REGIONS[3 * row_of(obj, height) + column_of(obj, width)]


def left_of(a: SceneObject, b: SceneObject, width: int) -> bool:
    return a.cx < b.cx - P.RELATION_MARGIN * width


def above(a: SceneObject, b: SceneObject, height: int) -> bool:
    return a.cy < b.cy - P.RELATION_MARGIN * height


# What each kind of referring expression names: a question never refers by the attribute it asks for
# (world-spec v2), so "What color is the red circle?" cannot answer itself.
REF_ATTRIBUTES = ("shape", "color", "size", "region")


def descriptions(obj: SceneObject, width: int, height: int) -> list[tuple[str, frozenset[str]]]:
    """Every candidate referring expression of an object and the attributes it names."""
    region = region_phrase(region_of(obj, width, height))
    return [
        (f"the {obj.shape}", frozenset({"shape"})),
        (f"the {obj.color} object", frozenset({"color"})),
        (f"the {obj.color} {obj.shape}", frozenset({"color", "shape"})),
        (f"the {obj.size} {obj.color} {obj.shape}", frozenset({"size", "color", "shape"})),
        (f"the object {region}", frozenset({"region"})),
    ]


def unique_descriptions(
    obj: SceneObject, objects: list[SceneObject], width: int, height: int, avoid: frozenset[str] = frozenset()
) -> list[str]:
    """The expressions that fit this object alone and name none of `avoid`, shortest (in words) first."""
    others = [descriptions(o, width, height) for o in objects if o is not obj]
    found = []
    for k, (text, named) in enumerate(descriptions(obj, width, height)):
        if named & avoid or any(d[k][0] == text for d in others):
            continue
        found.append(text)
    return sorted(found, key=lambda t: len(t.split()))


def referring_expression(
    obj: SceneObject,
    objects: list[SceneObject],
    width: int,
    height: int,
    rng: np.random.Generator | None = None,
    avoid: frozenset[str] = frozenset(),
) -> str | None:
    """The shortest unique expression that names none of `avoid`; equally short ones are drawn at
    random (the first without an rng). None when the object has none."""
    found = unique_descriptions(obj, objects, width, height, avoid)
    if not found:
        return None
    shortest = [t for t in found if len(t.split()) == len(found[0].split())]
    return shortest[0] if rng is None else shortest[int(rng.integers(len(shortest)))]


def referable(
    objects: list[SceneObject], width: int, height: int, avoid: frozenset[str] = frozenset()
) -> list[int]:
    return [i for i, o in enumerate(objects) if unique_descriptions(o, objects, width, height, avoid)]


def region_phrase(region: str) -> str:
    return "in the center" if region == "center" else f"at the {region}"


def join_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b, and c'."""
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def caption(scene: Scene) -> str:
    ordered = sorted(scene.objects, key=lambda o: (o.cy, o.cx))
    parts = [
        f"a {o.size} {o.color} {o.shape} {region_phrase(region_of(o, scene.width, scene.height))}"
        for o in ordered
    ]
    n = len(ordered)
    head = P.NUMBER_WORDS[n].capitalize() + (" object" if n == 1 else " objects")
    return f"{head}: {join_list(parts)}."
