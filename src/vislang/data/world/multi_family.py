"""Family `multi`: two images of one scene that differ by exactly one change (world-spec.md section 3):
an object added, removed, moved to another region, or recolored. Same background, same noise.

The changed object is named by color and shape, so "the {color} {shape}" must be unique among the
objects of both images; an added object is "a {color} {shape}" ("an" before a vowel) and needs no such care.
"""

from __future__ import annotations

import numpy as np

from . import palette as P
from .paraphrases import ask, with_articles
from .render import jitter_color
from .sample import Sample, WorldConfig
from .scene import MAX_SCENES, Scene, SceneObject, draw_scene, place, random_object, region_of, sample_scene
from .scene_family import family_qtypes
from .scene_questions import choice

QTYPES = ("change",)
CHANGES = ("added", "removed", "moved", "recolored")


def unique_by_look(objects: list[SceneObject], color: str, shape: str) -> bool:
    return sum(o.color == color and o.shape == shape for o in objects) == 1


def add(rng: np.random.Generator, scene: Scene) -> tuple[list[SceneObject], int, str] | None:
    if len(scene.objects) >= P.MAX_OBJECTS:
        return None
    new = place(rng, random_object(rng, scene.width, scene.height), scene.objects, scene.width, scene.height)
    if new is None:
        return None
    return [*scene.objects, new], len(scene.objects), with_articles(f"a {new.color} {new.shape} was added")


def remove(rng: np.random.Generator, scene: Scene) -> tuple[list[SceneObject], int, str] | None:
    objs = scene.objects
    candidates = [i for i, o in enumerate(objs) if unique_by_look(objs, o.color, o.shape)]
    if len(objs) <= P.MIN_OBJECTS or not candidates:
        return None
    i = choice(rng, candidates)
    return objs[:i] + objs[i + 1 :], i, f"the {objs[i].color} {objs[i].shape} was removed"


def move(rng: np.random.Generator, scene: Scene) -> tuple[list[SceneObject], int, str] | None:
    objs, w, h = scene.objects, scene.width, scene.height
    candidates = [i for i, o in enumerate(objs) if unique_by_look(objs, o.color, o.shape)]
    if not candidates:
        return None
    i = choice(rng, candidates)
    old = region_of(objs[i], w, h)
    others = objs[:i] + objs[i + 1 :]

    def elsewhere(cx: float, cy: float, r: float) -> bool:
        return region_of(objs[i].moved(cx, cy), w, h) != old

    moved = place(rng, objs[i], others, w, h, accept=elsewhere)
    if moved is None:
        return None
    after = [*objs[:i], moved, *objs[i + 1 :]]
    return after, i, f"the {moved.color} {moved.shape} moved to the {region_of(moved, w, h)}"


def recolor(rng: np.random.Generator, scene: Scene) -> tuple[list[SceneObject], int, str] | None:
    objs = scene.objects
    options = [
        (i, c)
        for i, o in enumerate(objs)
        if unique_by_look(objs, o.color, o.shape)
        for c in P.COLORS
        if c != o.color and not any(p.color == c and p.shape == o.shape for p in objs)
    ]
    if not options:
        return None
    i, color = choice(rng, options)
    old = objs[i]
    new = SceneObject(old.shape, color, old.size, jitter_color(rng, P.COLORS[color], P.COLOR_JITTER),
                      old.cx, old.cy, old.r, old.rotation)  # fmt: skip
    after = [*objs[:i], new, *objs[i + 1 :]]
    return after, i, f"the {old.shape} changed from {old.color} to {color}"


APPLY = {"added": add, "removed": remove, "moved": move, "recolored": recolor}


def make(rng: np.random.Generator, cfg: WorldConfig, split: str) -> Sample:
    qtype = choice(rng, family_qtypes(cfg, QTYPES, "multi"))
    change = choice(rng, CHANGES)
    for _ in range(MAX_SCENES):  # scenes from the stream until one can take this change
        before = sample_scene(rng, cfg.width, cfg.height)
        outcome = APPLY[change](rng, before)
        if outcome is not None:
            break
    else:
        raise RuntimeError(f"no scene could take the change {change!r}")
    objects, index, answer = outcome
    after = before.with_objects(objects)
    meta = {
        "change": change,
        "index": index,  # in the second image's list when added, else in the first's
        "objects_after": after.records(),
        "background": before.background,
        "noise_sigma": before.noise_sigma,
    }
    return Sample(
        family="multi",
        question=ask(qtype, {}, rng, cfg.paraphrase),
        answer=answer,
        kind="multi",
        qtype=qtype,
        images=[draw_scene(before), draw_scene(after)],
        objects=before.records(),
        meta=meta,
    )
