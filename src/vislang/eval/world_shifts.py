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
from vislang.data.world.render import background, paint
from vislang.data.world.scene import MAX_SCENES, Scene, sample_scene
from vislang.data.world.scene_family import scene_sample as family_sample
from vislang.data.world.scene_questions import QTYPES, YES_NO, ask_question, choice

from .scene_styles import TEXTURES, outlined, renamed_background, textured_backdrop, wobbled
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
    return family_sample(scene, question, qtype, text, image)


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


def crowded(count: int, gap: float) -> SceneSampler:
    """`count` objects whose bounding circles keep only `gap` x min(W, H) apart."""
    return lambda rng, width, height: sample_scene(rng, width, height, count=count, gap=gap)


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
