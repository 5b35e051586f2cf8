"""Scene-level shifts of the robustness suite: the scene itself is generated differently.

An image shift degrades a finished picture; these redraw the scene: another canvas, more, smaller or
mirrored objects, objects pushed to the border, and backgrounds, outlines and hand-drawn wobble the
spec never uses. SceneShift.make re-runs the scene family's pipeline (scene_family.make) on the clean
sample's own random stream, changed in one place by a Recipe, so

  * severity 0 is generate_sample("scene", ...) bit for bit (a default Recipe is the spec);
  * the draws line up with the clean sample's: the same question type and wanted yes/no answer;
  * every answer comes from the world's own question builders run on the changed scene, so it is
    exact under the shift, and a recorded box is the box of what is drawn (an outline, a wobble).

What the change itself draws at random (a wobble, a texture) comes from the shift's own stream.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from vislang.data.world import Sample, WorldConfig, sample_rng
from vislang.data.world import palette as P
from vislang.data.world.paraphrases import ask
from vislang.data.world.render import (
    COVERED,
    PAD,
    SUPERSAMPLE,
    Coverage,
    background,
    fill_polygon,
    paint,
    shape_polygon,
)
from vislang.data.world.scene import (
    MAX_SCENES,
    MAX_TRIES,
    PlacementError,
    Scene,
    SceneObject,
    fits,
    random_object,
    sample_scene,
)
from vislang.data.world.scene_questions import QTYPES, YES_NO, ask_question, choice

from .shift import Shift

SceneSampler = Callable[[np.random.Generator, int, int], Scene]  # (rng, width, height) -> scene


def spec_backdrop(scene: Scene) -> Image.Image:
    return background(
        scene.width, scene.height, P.BACKGROUNDS[scene.background], scene.noise_sigma, scene.noise_seed
    )


def unchanged(scene: Scene) -> Scene:
    return scene


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One level's change to the scene pipeline; the defaults are the spec's pipeline."""

    width: int = 224
    height: int = 224
    sample: SceneSampler = sample_scene  # the scene, drawn from the sample's stream
    restyle: Callable[[Scene], Scene] = unchanged  # before the question: what is drawn, so the boxes too
    backdrop: Callable[[Scene], Image.Image] = spec_backdrop  # the canvas the objects are painted on
    mirrored: bool = False  # the scene is mirrored left-right (see mirror_scene)

    def __post_init__(self):
        WorldConfig(self.width, self.height)  # the spec's canvas limits


def scene_sample(rng: np.random.Generator, qtype: str, recipe: Recipe) -> Sample:
    """scene_family.make after its question type is drawn, with the recipe's changes."""
    want_yes = bool(rng.random() < 0.5) if qtype in YES_NO else None
    asked = want_yes
    if recipe.mirrored and qtype == "left_of":
        # the mirrored pair answers the opposite, so asking for it picks the clean sample's pair
        asked = not want_yes
    for _ in range(MAX_SCENES):
        scene = recipe.restyle(recipe.sample(rng, recipe.width, recipe.height))
        question = ask_question(qtype, scene, rng, asked)
        if question is not None:
            break
    else:
        raise RuntimeError(f"no scene found for {qtype} (want_yes={asked})")
    text = ask(qtype, question.fields, rng, False)
    image = recipe.backdrop(scene)
    for obj in scene.objects:
        paint(image, obj.coverage, obj.rgb)
    meta = {
        "background": scene.background,
        "noise_sigma": scene.noise_sigma,
        "fields": dict(question.fields),
        "refs": list(question.refs),
        **question.meta,
    }
    return Sample(
        family="scene",
        question=text,
        answer=question.answer,
        kind=question.kind,
        qtype=qtype,
        images=[image],
        objects=scene.records(),
        probes=question.probes,
        meta=meta,
    )


@dataclasses.dataclass(frozen=True)
class SceneShift(Shift):
    recipe: Callable[[object, np.random.Generator], Recipe] | None = None  # (level, shift's rng) -> Recipe

    def __post_init__(self):
        super().__post_init__()
        if self.recipe is None:
            raise ValueError(f"scene shift {self.name!r} needs a recipe")

    def make(self, family: str, split: str, seed: int, index: int, severity: int) -> Sample | None:
        if family != "scene":
            raise ValueError(f"{self.name} redraws scenes: the family must be 'scene', got {family!r}")
        if severity not in self.severities:
            raise ValueError(f"{self.name} has severities 0..{len(self.levels) - 1}, got {severity}")
        rng = sample_rng(family, split, seed, index)
        qtype = choice(rng, QTYPES)  # the first draw of scene_family.make
        if severity and qtype in self.excludes:
            return None
        level = self.levels[severity]
        recipe = self.recipe(level, self.rng(seed, index, severity)) if severity else Recipe()
        sample = dataclasses.replace(scene_sample(rng, qtype, recipe), split=split, seed=seed, index=index)
        if severity:
            sample.meta["shift"] = {"name": self.name, "severity": severity, "level": level}
        return sample


# ---- resolution -----------------------------------------------------------------------------------

BASE_SIDE = 224  # the spec's default canvas; aspect levels keep its area


def aspect_canvas(ratio: str) -> tuple[int, int]:
    """'W:H' -> (width, height) with the area of the default canvas: '2:1' -> (317, 158)."""
    w, h = (float(v) for v in ratio.split(":"))
    return round(BASE_SIDE * math.sqrt(w / h)), round(BASE_SIDE * math.sqrt(h / w))


# ---- layout ---------------------------------------------------------------------------------------


def place_apart(
    rng: np.random.Generator, obj: SceneObject, others: list[SceneObject], width: int, height: int, gap: float
) -> SceneObject | None:
    """scene.place with another gap (pixels) between bounding circles than the spec's."""
    m = P.EDGE_MARGIN
    for _ in range(MAX_TRIES):
        cx = round(float(rng.uniform(obj.r + m, width - m - obj.r)), 2)
        cy = round(float(rng.uniform(obj.r + m, height - m - obj.r)), 2)
        on_canvas = fits(cx, cy, obj.r, [], width, height)  # no others: the canvas and its margin only
        if on_canvas and all(math.hypot(cx - o.cx, cy - o.cy) >= obj.r + o.r + gap for o in others):
            return obj.moved(cx, cy)
    return None


def crowded(count: int, gap: float) -> SceneSampler:
    """`count` objects whose bounding circles keep only `gap` x min(W, H) apart; the background is
    drawn as sample_scene draws it."""

    def sample(rng: np.random.Generator, width: int, height: int) -> Scene:
        name = list(P.BACKGROUNDS)[int(rng.integers(len(P.BACKGROUNDS)))]
        sigma = round(float(rng.uniform(*P.NOISE_SIGMA)), 2) if rng.random() < P.NOISE_PROBABILITY else 0.0
        noise_seed = int(rng.integers(2**31))
        for _ in range(MAX_SCENES):
            objects: list[SceneObject] = []
            while len(objects) < count:
                obj = random_object(rng, width, height)
                placed = place_apart(rng, obj, objects, width, height, gap * min(width, height))
                if placed is None:
                    break
                objects.append(placed)
            else:
                return Scene(width, height, name, sigma, noise_seed, objects)
        raise PlacementError(f"could not place {count} objects {gap} apart on {width} x {height}")

    return sample


def near_border(band: float) -> SceneSampler:
    """Every object's bounding circle within `band` x min(W, H) of its nearest canvas edge (a band on
    the circle, not the centre, so large objects fit it as well as small ones)."""

    def sample(rng: np.random.Generator, width: int, height: int) -> Scene:
        reach = band * min(width, height)

        def accept(cx: float, cy: float, r: float) -> bool:
            return min(cx, cy, width - cx, height - cy) - r <= reach

        return sample_scene(rng, width, height, accept=accept)

    return sample


def shrunk(scale: float) -> Callable[[Scene], Scene]:
    """Every object small: a large radius is mapped linearly onto the spec's small range, then every
    radius is scaled. Centres stay, so the placement still holds; "small" stays true (r <= 0.075 side)."""
    (small_lo, small_hi), (large_lo, large_hi) = P.SIZES["small"], P.SIZES["large"]

    def restyle(scene: Scene) -> Scene:
        side = min(scene.width, scene.height)
        objects = []
        for obj in scene.objects:
            fraction = obj.r / side
            if obj.size == "large":
                fraction = small_lo + (fraction - large_lo) * (small_hi - small_lo) / (large_hi - large_lo)
            objects.append(dataclasses.replace(obj, size="small", r=round(fraction * scale * side, 2)))
        return scene.with_objects(objects)

    return restyle


def mirror_scene(scene: Scene) -> Scene:
    """Every object reflected in the vertical midline: cx -> W - cx and the rotation negated. Each
    shape's vertex angles are symmetric about the vertical (a -> 180 - a), so this draws the reflection."""
    return scene.with_objects(
        [
            dataclasses.replace(o, cx=round(scene.width - o.cx, 2), rotation=0.0 - o.rotation)
            for o in scene.objects
        ]
    )


def mirrored_backdrop(scene: Scene) -> Image.Image:
    """The background noise reflected too, so the whole image is the clean one reflected."""
    return spec_backdrop(scene).transpose(Image.Transpose.FLIP_LEFT_RIGHT)


# ---- drawing: outlines and wobble -----------------------------------------------------------------

CIRCLE_VERTICES = 128  # a circle as a polygon: 31 px of radius is off by under 0.01 px
WOBBLE_FREQUENCIES = (2, 3, 5, 7)  # cycles around the outline: a slow, hand-drawn waver


def ring(obj: SceneObject) -> np.ndarray:
    """The object's outline as polygon vertices [n, 2]."""
    if obj.shape == "circle":
        theta = np.linspace(0.0, 2 * math.pi, CIRCLE_VERTICES, endpoint=False)
        return np.stack([obj.cx + obj.r * np.cos(theta), obj.cy + obj.r * np.sin(theta)], axis=1)
    return np.asarray(shape_polygon(obj.shape, obj.cx, obj.cy, obj.r, obj.rotation))


def polygon_coverage(outer: np.ndarray, hole: np.ndarray | None = None) -> Coverage:
    """A polygon (less a hole) drawn as render.shape_coverage draws shapes: even-odd filled at
    SUPERSAMPLE x, Lanczos down; its box is the pixels at least half covered."""
    x0, y0 = math.floor(outer[:, 0].min()) - PAD, math.floor(outer[:, 1].min()) - PAD
    w, h = math.ceil(outer[:, 0].max()) + PAD - x0, math.ceil(outer[:, 1].max()) + PAD - y0
    s = SUPERSAMPLE

    def inside(points: np.ndarray) -> np.ndarray:
        return fill_polygon((s * (points - [x0, y0])).tolist(), w * s, h * s)

    filled = inside(outer) if hole is None else inside(outer) & ~inside(hole)
    big = Image.fromarray(filled.view(np.uint8) * np.uint8(255), "L")
    mask = big.resize((w, h), Image.Resampling.LANCZOS)
    ys, xs = np.nonzero(np.asarray(mask) >= COVERED)
    if xs.size == 0:
        raise ValueError("the drawn polygon covers no pixel by half; draw it wider")
    box = [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]
    return Coverage(mask, x0, y0, box)


def drawn_as(obj: SceneObject, coverage: Coverage) -> SceneObject:
    """A copy of obj drawn through `coverage`: its painting, its box and its record all follow it."""
    copy = dataclasses.replace(obj)
    copy._coverage = coverage  # the cache SceneObject paints and boxes from
    return copy


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
            objects.append(drawn_as(obj, polygon_coverage(outer, hole)))
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
            objects.append(drawn_as(obj, polygon_coverage(outline)))
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


# ---- the shifts -----------------------------------------------------------------------------------

CROWDING_GAP = {6: 0.02, 8: 0.01, 10: 0.005}  # objects -> gap as a fraction of min(W, H)

SCENE_SHIFTS: dict[str, SceneShift] = {
    s.name: s
    for s in (
        SceneShift(
            "size", "resolution", "canvas side (pixels)", (224, 128, 96, 64),
            recipe=lambda side, rng: Recipe(side, side),
            note="the scene generated natively on a smaller square canvas (objects scale with it)",
        ),
        SceneShift(
            "size_large", "resolution", "canvas side (pixels)", (224, 448, 768, 1024),
            recipe=lambda side, rng: Recipe(side, side),
            note="the scene generated natively on a larger square canvas (objects scale with it)",
        ),
        SceneShift(
            "aspect", "resolution", "width:height (area about 224 x 224)",
            ("1:1", "2:1", "1:2", "4:1", "1:4"),
            recipe=lambda ratio, rng: Recipe(*aspect_canvas(ratio)),
            note="the scene generated natively on a wide or tall canvas of the same area",
        ),
        SceneShift(
            "crowding", "layout", "objects (0: the spec's 1..6)", (0, 6, 8, 10),
            excludes=frozenset({"caption"}),
            recipe=lambda count, rng: Recipe(sample=crowded(count, CROWDING_GAP[count])),
            note="6, 8 or 10 objects (the spec allows 1..6) with gaps of 0.02, 0.01, 0.005 x min(W, H); "
            "no captions (no number words past six)",
        ),
        SceneShift(
            "border", "layout", "most space between an object and its nearest edge (x min(W, H))",
            (None, 0.15, 0.08, 0.03),
            recipe=lambda band, rng: Recipe(sample=near_border(band)),
            note="every object's bounding circle within the band along the canvas edges",
        ),
        SceneShift(
            "small", "layout", "radius scale on the spec's small range (None: spec sizes)",
            (None, 1.0, 0.75, 0.5),
            recipe=lambda scale, rng: Recipe(restyle=shrunk(scale)),
            note="every object small, then smaller; size questions are still asked and all answer small",
        ),
        SceneShift(
            "mirror", "layout", "reflection", ("none", "left-right"),
            recipe=lambda level, rng: Recipe(restyle=mirror_scene, backdrop=mirrored_backdrop, mirrored=True),
            note="the scene mirrored left-right and asked the same questions: sides, left_of and boxes flip",
        ),
        SceneShift(
            "background", "domain", "background", ("spec", *TEXTURES),
            recipe=lambda name, rng: Recipe(
                restyle=renamed_background(name), backdrop=textured_backdrop(rng)
            ),
            note="grey stripes, a grey checkerboard, photo-like multi-scale clutter, or near black",
        ),
        SceneShift(
            "outline", "domain", "outline width (x min(W, H); None: filled)", (None, 0.02, 0.01, 0.005),
            recipe=lambda width, rng: Recipe(restyle=outlined(width)),
            note="shapes drawn as outlines of the width (at most half the way in), the inside background",
        ),
        SceneShift(
            "jitter", "domain", "edge wobble (x distance from the centre)", (0.0, 0.04, 0.08, 0.12),
            recipe=lambda amplitude, rng: Recipe(restyle=wobbled(amplitude, rng)),
            note="hand-drawn wobbly edges; boxes are the drawn shapes' exact boxes",
        ),
    )
}  # fmt: skip
