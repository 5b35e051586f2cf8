"""The `text`, `multi` and `video` families against world-spec.md section 3, checked on the pixels."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from vislang.data.world import WorldConfig, generate_sample
from vislang.data.world.text_family import WORDS

REGIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
SPEC_COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SPEC_SHAPES = ("circle", "square", "triangle", "star", "hexagon")


def region(o: dict, w: int, h: int) -> str:
    col = 0 if o["cx"] < w / 3 else 1 if o["cx"] < 2 * w / 3 else 2
    row = 0 if o["cy"] < h / 3 else 1 if o["cy"] < 2 * h / 3 else 2
    return REGIONS[3 * row + col]


def gen(family: str, n: int, seed: int = 0, **cfg) -> list:
    return [generate_sample(family, "train", seed, i, WorldConfig(**cfg)) for i in range(n)]


def apart(objs: list[dict], w: int, h: int) -> bool:
    return all(
        math.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) >= a["r"] + b["r"] + 0.02 * min(w, h)
        for i, a in enumerate(objs)
        for b in objs[i + 1 :]
    )


# ---- text ---------------------------------------------------------------------------------------


def test_word_list():
    assert len(WORDS) == 200 and len(set(WORDS)) == 200
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 8 for w in WORDS)


@pytest.fixture(scope="module")
def text_samples():
    return gen("text", 150, seed=1)


def test_text_questions_and_answers(text_samples):
    kinds = set()
    for s in text_samples:
        signs, asked = s.meta["signs"], s.meta["asked"]
        kinds.add(len(signs))
        assert s.answer == signs[asked]["word"] and s.answer in WORDS
        if len(signs) == 1:
            assert s.qtype == "sign" and s.question == "What does the sign say?"
            continue
        m = re.fullmatch(r"What does the (left|right|top|bottom) sign say\?", s.question)
        assert s.qtype == "sign_position" and m
        a, b = signs[asked]["box"], signs[1 - asked]["box"]
        ca, cb = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2), ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
        want = {"left": ca[0] < cb[0], "right": ca[0] > cb[0], "top": ca[1] < cb[1], "bottom": ca[1] > cb[1]}
        assert want[m.group(1)]
    assert kinds == {1, 2}


def test_signs_on_the_pixels(text_samples):
    for s in text_samples:
        pixels = np.asarray(s.images[0]).astype(int)
        w, h = s.width, s.height
        for sign in s.meta["signs"]:
            x1, y1, x2, y2 = sign["box"]
            assert 2 <= x1 < x2 <= w - 2 and 2 <= y1 < y2 <= h - 2
            assert 0.08 * h - 1 <= sign["font_size"] <= 0.12 * h + 1
            patch = pixels[y1:y2, x1:x2]
            for edge in (patch[:2], patch[-2:], patch[:, :2], patch[:, -2:]):  # the 2 px black border
                assert (edge == 0).all()
            inside = patch[2:-2, 2:-2]
            ink = (inside.max(-1) < 100).mean()
            assert 0.03 < ink < 0.6 and (inside.min(-1) > 240).mean() > 0.35  # black word on white
            for o in s.objects:  # no object under a sign
                dx = max(x1 - o["cx"], 0, o["cx"] - x2)
                dy = max(y1 - o["cy"], 0, o["cy"] - y2)
                assert math.hypot(dx, dy) >= o["r"]
        assert apart(s.objects, w, h) and 1 <= len(s.objects) <= 6


# ---- multi --------------------------------------------------------------------------------------


def look(o: dict) -> tuple:
    return (o["shape"], o["color"], o["size"], tuple(o["rgb"]), o["cx"], o["cy"], o["r"], o["rotation"])


def recompute_change(before: list[dict], after: list[dict], w: int, h: int) -> str:
    """The answer, from the two object lists alone."""
    if len(after) == len(before) + 1:
        assert [look(o) for o in after[:-1]] == [look(o) for o in before]
        color = after[-1]["color"]
        return f"{'an' if color[0] in 'aeiou' else 'a'} {color} {after[-1]['shape']} was added"  # v2 article
    if len(after) == len(before) - 1:
        (gone,) = [o for o in before if look(o) not in {look(p) for p in after}]
        assert sum(o["color"] == gone["color"] and o["shape"] == gone["shape"] for o in before) == 1
        return f"the {gone['color']} {gone['shape']} was removed"
    (i,) = [k for k, (a, b) in enumerate(zip(before, after)) if look(a) != look(b)]
    a, b = before[i], after[i]
    if a["color"] != b["color"]:
        assert (a["cx"], a["cy"], a["shape"], a["size"]) == (b["cx"], b["cy"], b["shape"], b["size"])
        for o, c in ((a, before), (b, after)):
            assert sum(p["color"] == o["color"] and p["shape"] == o["shape"] for p in c) == 1
        return f"the {a['shape']} changed from {a['color']} to {b['color']}"
    assert (a["shape"], a["size"], a["r"]) == (b["shape"], b["size"], b["r"])
    assert region(a, w, h) != region(b, w, h)
    assert sum(p["color"] == a["color"] and p["shape"] == a["shape"] for p in before) == 1
    return f"the {a['color']} {a['shape']} moved to the {region(b, w, h)}"


def test_multi_has_exactly_one_change():
    changes = set()
    for s in gen("multi", 120, seed=2):
        before, after = s.objects, s.meta["objects_after"]
        assert len(s.images) == 2 and s.question == "What changed between the two images?"
        assert s.answer == recompute_change(before, after, s.width, s.height)
        assert 1 <= len(after) <= 6 and apart(after, s.width, s.height)
        changes.add(s.meta["change"])
        # the pixels differ only around the changed object
        diff = (np.asarray(s.images[0]) != np.asarray(s.images[1])).any(-1)
        changed = [
            o
            for o in (*before, *after)
            if look(o) not in {look(p) for p in before} & {look(p) for p in after}
        ]
        allowed = np.zeros_like(diff)
        for o in changed:
            allowed[
                max(0, math.floor(o["cy"] - o["r"] - 3)) : math.ceil(o["cy"] + o["r"] + 3),
                max(0, math.floor(o["cx"] - o["r"] - 3)) : math.ceil(o["cx"] + o["r"] + 3),
            ] = True
        assert diff.any() and not (diff & ~allowed).any()
    assert changes == {"added", "removed", "moved", "recolored"}


# ---- video --------------------------------------------------------------------------------------


def motion(positions: list[list[list[float]]], i: int) -> tuple[float, float]:
    (x0, y0), (x1, y1) = positions[0][i], positions[-1][i]
    return x1 - x0, y1 - y0


def direction_of(dx: float, dy: float) -> str:
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


@pytest.fixture(scope="module")
def videos():
    return gen("video", 60, seed=3)


def test_video_answers_follow_the_positions(videos):
    qtypes = set()
    for s in videos:
        qtypes.add(s.qtype)
        pos, n, w, h = s.meta["positions"], len(s.objects), s.width, s.height
        assert 4 <= len(s.images) <= 16
        assert len(pos) == len(s.images) and s.meta["frames"] == len(s.images)
        moving = [i for i in range(n) if motion(pos, i) != (0, 0)]
        assert 1 <= len(moving) <= 3 and moving == s.meta["movers"]
        for i in moving:
            dx, dy = motion(pos, i)
            assert dx == 0 or dy == 0  # straight along one axis
            assert abs(dx) >= 0.15 * w - 0.02 or abs(dy) >= 0.15 * h - 0.02
            steps = np.diff(np.asarray([p[i] for p in pos]), axis=0)
            assert np.abs(steps - steps[0]).max() <= 0.011  # constant velocity, up to the rounding
        for frame in pos:
            objs = [{**o, "cx": x, "cy": y} for o, (x, y) in zip(s.objects, frame)]
            assert apart(objs, w, h)
            assert all(o["cx"] - o["r"] >= 2 and o["cx"] + o["r"] <= w - 2 for o in objs)
            assert all(o["cy"] - o["r"] >= 2 and o["cy"] + o["r"] <= h - 2 for o in objs)
        if s.qtype == "count_moving":
            assert s.question == "How many objects are moving?" and s.answer == str(len(moving))
        else:
            ref = re.fullmatch(r"Which direction is (the .+) moving\?", s.question).group(1)
            i = s.meta["asked"]
            # "the {color} object" names a colour alone; movers are never referred to by region
            words = [v for v in ref.split()[1:] if v != "object"]
            assert "at" not in words and "in" not in words, ref
            fits = [
                k
                for k, o in enumerate(s.objects)
                if all(v in (o["size"], o["color"], o["shape"]) for v in words)
            ]
            assert fits == [i] and s.answer == direction_of(*motion(pos, i))
    assert qtypes == {"direction", "count_moving"}


def centroid(image, rgb) -> tuple[float, float] | None:
    ys, xs = np.nonzero((np.asarray(image) == rgb).all(-1))
    return (xs.mean(), ys.mean()) if len(xs) else None


def test_video_motion_on_the_pixels(videos):
    checked = 0
    for s in videos[:20]:
        rgbs = [tuple(o["rgb"]) for o in s.objects]
        for i, o in enumerate(s.objects):
            if rgbs.count(tuple(o["rgb"])) > 1:
                continue  # two objects share an exact color: pixels cannot tell them apart
            start, end = centroid(s.images[0], o["rgb"]), centroid(s.images[-1], o["rgb"])
            dx, dy = end[0] - start[0], end[1] - start[1]
            if i in s.meta["movers"]:
                assert direction_of(dx, dy) == s.meta["directions"][s.meta["movers"].index(i)]
                assert max(abs(dx), abs(dy)) >= 0.15 * min(s.width, s.height) - 1
                checked += 1
            else:
                assert abs(dx) < 0.5 and abs(dy) < 0.5
    assert checked >= 15


def test_families_are_deterministic_and_reject_unknown_qtypes():
    for family in ("text", "multi", "video"):
        a, b = generate_sample(family, "test", 4, 2), generate_sample(family, "test", 4, 2)
        assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
        assert a.record([]) == b.record([])
        c = generate_sample(family, "train", 4, 2)
        assert [im.tobytes() for im in a.images] != [im.tobytes() for im in c.images]
        with pytest.raises(ValueError):
            generate_sample(family, "train", 0, 0, WorldConfig(qtypes=("count_all",)))


def test_family_paraphrases():
    for family, canonical in (
        ("text", "What does"),
        ("multi", "What changed"),
        ("video", "How many objects"),
    ):
        questions = {s.question for s in gen(family, 40, seed=5, paraphrase=True)}
        assert len(questions) > 3 and any(not q.startswith(canonical) for q in questions)
