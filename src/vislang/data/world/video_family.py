"""Family `video`: 4..16 frames of one scene in which 1..3 objects move at constant velocity, straight
left, right, up or down, by at least 0.15 of the canvas side along their axis (W for left/right, H for
up/down) over the clip; the others stand still (world-spec.md section 3). In every frame the objects
keep the placement rule: inside the canvas, bounding circles apart by the gap.
"""

from __future__ import annotations

import numpy as np

from .paraphrases import ask
from .sample import Sample, WorldConfig
from .scene import (
    MAX_SCENES,
    MAX_TRIES,
    Scene,
    SceneObject,
    draw_scene,
    fits,
    referable,
    referring_expression,
    sample_scene,
)
from .scene_family import family_qtypes
from .scene_questions import choice

QTYPES = ("direction", "count_moving")
FRAMES = (4, 16)
MOVERS = (1, 3)
TRAVEL = (0.15, 0.35)  # distance over the whole clip, a fraction of the side along the motion
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
Move = tuple[str, float]  # direction, distance over the clip in pixels
STILL_REFS = frozenset({"region"})  # a mover's region changes over the clip: refer by what it looks like


def tracks(scene: Scene, movers: list[int], moves: list[Move], frames: int) -> list[list[SceneObject]]:
    """The objects of every frame: movers advance evenly from their place in the scene."""
    out = []
    for t in range(frames):
        objects = list(scene.objects)
        for i, (direction, distance) in zip(movers, moves):
            dx, dy = DIRECTIONS[direction]
            step = distance * t / (frames - 1)
            o = scene.objects[i]
            objects[i] = o.moved(round(o.cx + dx * step, 2), round(o.cy + dy * step, 2))
        out.append(objects)
    return out


def valid(frames: list[list[SceneObject]], movers: list[int], width: int, height: int) -> bool:
    """Every mover, in every frame, fits among the others (still objects fit already)."""
    for objects in frames:
        for i in movers:
            o = objects[i]
            if not fits(o.cx, o.cy, o.r, objects[:i] + objects[i + 1 :], width, height):
                return False
    return True


def plan_motion(
    rng: np.random.Generator, scene: Scene, count: int, frames: int
) -> tuple[list[int], list[Move], list[list[SceneObject]]] | None:
    w, h = scene.width, scene.height
    for _ in range(MAX_TRIES):
        movers = sorted(int(i) for i in rng.permutation(len(scene.objects))[:count])
        moves = []
        for _ in movers:
            direction = choice(rng, list(DIRECTIONS))
            side = w if direction in ("left", "right") else h
            moves.append((direction, round(float(rng.uniform(*TRAVEL)) * side, 2)))
        objects = tracks(scene, movers, moves, frames)
        if valid(objects, movers, w, h):
            return movers, moves, objects
    return None


def make(rng: np.random.Generator, cfg: WorldConfig, split: str) -> Sample:
    qtype = choice(rng, family_qtypes(cfg, QTYPES, "video"))
    frames = int(rng.integers(FRAMES[0], FRAMES[1] + 1))
    count = int(rng.integers(MOVERS[0], MOVERS[1] + 1))
    for _ in range(MAX_SCENES):  # scenes from the stream until one has room for the motion
        scene = sample_scene(rng, cfg.width, cfg.height)
        if len(scene.objects) < count:
            continue
        plan = plan_motion(rng, scene, count, frames)
        if plan is None:
            continue
        movers, moves, objects = plan
        askable = [i for i in movers if i in referable(scene.objects, scene.width, scene.height, STILL_REFS)]
        if qtype == "count_moving" or askable:
            break
    else:
        raise RuntimeError(f"no scene could hold {count} movers")
    fields: dict[str, str] = {}
    if qtype == "direction":
        i = choice(rng, askable)
        fields["ref"] = referring_expression(
            scene.objects[i], scene.objects, scene.width, scene.height, rng, STILL_REFS
        )
        answer, asked = moves[movers.index(i)][0], i
    else:
        answer, asked = str(count), None
    images = [draw_scene(scene.with_objects(o)) for o in objects]
    meta = {
        "frames": frames,
        "movers": movers,
        "directions": [d for d, _ in moves],
        "distances": [d for _, d in moves],
        "asked": asked,
        "fields": fields,
        "positions": [[[o.cx, o.cy] for o in frame] for frame in objects],
        "boxes": [[list(o.box) for o in frame] for frame in objects],
        "background": scene.background,
    }
    return Sample(
        family="video",
        question=ask(qtype, fields, rng, cfg.paraphrase),
        answer=answer,
        kind="video",
        qtype=qtype,
        images=images,
        objects=scene.records(),
        meta=meta,
    )
