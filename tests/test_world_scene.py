"""The `scene` family against world-spec.md: pixels, answers, probes, balance, determinism, wording.

Expectations are re-derived here from the spec (templates, margins, regions, captions), not read
back from the generator's own tables, so a drift in either shows up.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import string
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vislang.data.world import WorldConfig, generate_sample
from vislang.data.world.paraphrases import CANONICAL, HELD_OUT, TRAIN, heldout_question
from vislang.data.world.render import fill_polygon, shape_polygon
from vislang.data.world.scene import Scene, SceneObject, caption, draw_scene, sample_scene

SRC = Path(__file__).resolve().parents[1] / "src"

SPEC_TEMPLATES = {
    "count_all": "How many objects are there?",
    "count_shape": "How many {shape}s are there?",
    "count_color": "How many {color} objects are there?",
    "count_both": "How many {color} {shape}s are there?",
    "color": "What color is {ref}?",
    "shape": "What shape is {ref}?",
    "size": "Is {ref} small or large?",
    "exist": "Is there a {color} {shape}?",
    "where": "Where is {ref}?",
    "ground": "Find {ref}. Answer with a bounding box.",
    "caption": "Describe the image.",
    "more": "Are there more {color1} objects than {color2} objects?",
    "count_not": "How many objects are not {shape}s?",
    "left_of": "Is {ref1} to the left of {ref2}?",
    "above": "Is {ref1} above {ref2}?",
    "same_color": "Do {ref1} and {ref2} have the same color?",
}
REASONING = {"more", "count_not", "left_of", "above", "same_color"}
YES_NO = ("exist", "more", "left_of", "above", "same_color")
SPEC_COLORS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
SPEC_BACKGROUNDS = {
    "white": (255, 255, 255),
    "cream": (245, 240, 225),
    "light gray": (225, 225, 225),
    "light blue": (220, 232, 245),
    "light green": (225, 240, 225),
    "light pink": (245, 228, 232),
}
SPEC_SHAPES = ("circle", "square", "triangle", "star", "hexagon")
REGIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]


def template_regex(template: str) -> re.Pattern:
    """A template as a regex; v2: the article before a field may be "a" or "an" (checked apart)."""
    parts = [
        re.escape(lit).replace(r"\ a\ ", r" an?\ ") + ("(.+?)" if name is not None else "")
        for lit, name, _, _ in string.Formatter().parse(template)
    ]
    return re.compile("".join(parts) + r"\Z")


def articles_right(text: str) -> bool:
    """v2: "an" before a vowel, "a" before anything else."""
    pairs = re.findall(r"\b(an?) (\w)", text, flags=re.IGNORECASE)
    return all((a.lower() == "an") == (c.lower() in "aeiou") for a, c in pairs)


def region(o: dict, w: int, h: int) -> str:
    col = 0 if o["cx"] < w / 3 else 1 if o["cx"] < 2 * w / 3 else 2
    row = 0 if o["cy"] < h / 3 else 1 if o["cy"] < 2 * h / 3 else 2
    return REGIONS[3 * row + col]


def spec_expressions(o: dict, w: int, h: int) -> list[tuple[str, set[str]]]:
    """World-spec v2's referring expressions of an object, each with the attributes it names."""
    where = region(o, w, h)
    place = "in the center" if where == "center" else f"at the {where}"
    return [
        (f"the {o['shape']}", {"shape"}),
        (f"the {o['color']} object", {"color"}),
        (f"the {o['color']} {o['shape']}", {"color", "shape"}),
        (f"the {o['size']} {o['color']} {o['shape']}", {"size", "color", "shape"}),
        (f"the object {place}", {"region"}),
    ]


def matches(ref: str, o: dict, w: int, h: int) -> bool:
    return ref in [text for text, _ in spec_expressions(o, w, h)]


# the attribute a question asks for, never named by its references (v2); pair questions follow their probes
ASKS_FOR = {
    "color": {"color"},
    "shape": {"shape"},
    "size": {"size"},
    "where": {"region"},
    "ground": {"region"},
    "left_of": {"region"},
    "above": {"region"},
    "same_color": {"color"},
}


def gen(n: int, split: str = "train", seed: int = 0, **cfg) -> list:
    return [generate_sample("scene", split, seed, i, WorldConfig(**cfg)) for i in range(n)]


@pytest.fixture(scope="module")
def pool():
    return gen(1200, seed=11)


@pytest.fixture(scope="module")
def yes_no_pool():
    return gen(2000, seed=12, qtypes=YES_NO)


def test_same_seed_same_bytes_and_records():
    for i in range(5):
        a, b = generate_sample("scene", "train", 3, i), generate_sample("scene", "train", 3, i)
        assert a.images[0].tobytes() == b.images[0].tobytes()
        assert json.dumps(a.record(["x.png"])) == json.dumps(b.record(["x.png"]))


def fingerprint(n: int) -> str:
    h = hashlib.sha256()
    for family in ("scene", "text", "multi", "video"):
        for i in range(n):
            s = generate_sample(family, "train", 7, i, WorldConfig(paraphrase=True))
            for im in s.images:
                h.update(im.tobytes())
            h.update(json.dumps(s.record([]), sort_keys=True).encode())
    return h.hexdigest()


def test_same_seed_same_bytes_across_processes():
    code = "from test_world_scene import fingerprint; print(fingerprint(4))"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), str(Path(__file__).parent)]),
        "PYTHONHASHSEED": "123",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == fingerprint(4)


def test_train_and_eval_streams_differ():
    for i in range(10):
        train, test = generate_sample("scene", "train", 0, i), generate_sample("scene", "test", 0, i)
        assert train.images[0].tobytes() != test.images[0].tobytes()
    assert (
        generate_sample("scene", "train", 0, 0).images[0].tobytes()
        != generate_sample("scene", "train", 1, 0).images[0].tobytes()
    )


def test_boxes_match_the_pixels():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        scene = sample_scene(rng, 224, 224)
        pixels = np.asarray(draw_scene(scene), dtype=np.int32)
        bg = np.asarray(SPEC_BACKGROUNDS[scene.background])
        for rec in scene.records():
            cx, cy, r = rec["cx"], rec["cy"], rec["r"]
            x0, y0 = max(0, math.floor(cx - r - 3)), max(0, math.floor(cy - r - 3))
            crop = pixels[y0 : math.ceil(cy + r + 3), x0 : math.ceil(cx + r + 3)]
            ys, xs = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
            window = (xs + x0 + 0.5 - cx) ** 2 + (ys + y0 + 0.5 - cy) ** 2 <= (r + 2) ** 2
            rgb = np.asarray(rec["rgb"])
            d_obj, d_bg = ((crop - rgb) ** 2).sum(-1), ((crop - bg) ** 2).sum(-1)
            closer = window & (d_obj < d_bg)
            solid = window & (d_obj * 16 < ((rgb - bg) ** 2).sum())  # unmistakably the object
            x1, y1, x2, y2 = rec["box"]
            sy, sx = np.nonzero(solid)
            assert (
                (sx + x0 >= x1).all()
                and (sx + x0 < x2).all()
                and (sy + y0 >= y1).all()
                and (sy + y0 < y2).all()
            )
            cy_, cx_ = np.nonzero(closer)
            tight = [cx_.min() + x0, cy_.min() + y0, cx_.max() + x0 + 1, cy_.max() + y0 + 1]
            assert iou(tight, rec["box"]) >= 0.9, (rec, tight)
            checked += 1
    assert checked > 800


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_objects_follow_the_scene_rules(pool):
    counts = Counter()
    for s in pool:
        w, h = s.width, s.height
        objs = s.objects
        counts[len(objs)] += 1
        for o in objs:
            lo, hi = {"small": (0.05, 0.075), "large": (0.10, 0.14)}[o["size"]]
            assert lo * min(w, h) - 0.01 <= o["r"] <= hi * min(w, h) + 0.01
            assert o["shape"] in SPEC_SHAPES and o["color"] in SPEC_COLORS
            assert all(abs(c - b) <= 15 for c, b in zip(o["rgb"], SPEC_COLORS[o["color"]]))
            assert -20 <= o["rotation"] <= 20 and (o["shape"] != "circle" or o["rotation"] == 0)
            assert o["cx"] - o["r"] >= 2 and o["cx"] + o["r"] <= w - 2
            assert o["cy"] - o["r"] >= 2 and o["cy"] + o["r"] <= h - 2
            assert o["region"] == region(o, w, h)
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                assert math.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) >= a["r"] + b["r"] + 0.02 * min(w, h)
    assert set(counts) == {1, 2, 3, 4, 5, 6} and min(counts.values()) > len(pool) / 6 * 0.7
    noisy = sum(s.meta["noise_sigma"] > 0 for s in pool) / len(pool)
    assert 0.25 < noisy < 0.35
    assert all(4 <= s.meta["noise_sigma"] <= 8 for s in pool if s.meta["noise_sigma"] > 0)


def test_perception_answers(pool):
    for s in pool:
        objs, w, h = s.objects, s.width, s.height
        fields = template_regex(SPEC_TEMPLATES[s.qtype]).match(s.question)
        assert fields and articles_right(s.question), (s.qtype, s.question)
        f = s.meta["fields"]
        if s.qtype == "count_all":
            assert s.answer == str(len(objs))
        elif s.qtype in ("count_shape", "count_color", "count_both"):
            n = sum(
                o["shape"] == f.get("shape", o["shape"]) and o["color"] == f.get("color", o["color"])
                for o in objs
            )
            assert s.answer == str(n)
        elif s.qtype == "exist":
            assert s.answer == (
                "yes" if any(o["color"] == f["color"] and o["shape"] == f["shape"] for o in objs) else "no"
            )
        elif s.qtype in ("color", "shape", "size", "where", "ground"):
            (i,) = s.meta["refs"]
            o = objs[i]
            want = {"color": o["color"], "shape": o["shape"], "size": o["size"], "where": region(o, w, h)}
            box = [math.floor(v / side * 1000 + 0.5) for v, side in zip(o["box"], (w, h, w, h))]
            want["ground"] = "[{}, {}, {}, {}]".format(*box)
            assert s.answer == want[s.qtype]
        elif s.qtype == "caption":
            assert s.answer == spec_caption(objs, w, h)
        if s.kind == "perception":
            assert s.probes == []


def spec_caption(objs: list[dict], w: int, h: int) -> str:
    words = ["one", "two", "three", "four", "five", "six"]
    parts = []
    for o in sorted(objs, key=lambda o: (o["cy"], o["cx"])):
        where = region(o, w, h)
        parts.append(
            f"a {o['size']} {o['color']} {o['shape']} "
            + ("in the center" if where == "center" else f"at the {where}")
        )
    body = " and ".join(parts) if len(parts) <= 2 else ", ".join(parts[:-1]) + ", and " + parts[-1]
    return f"{words[len(objs) - 1].capitalize()} object{'s' if len(objs) > 1 else ''}: {body}."


def test_caption_matches_the_spec_examples():
    def obj(shape, color, size, cx, cy, r):
        return SceneObject(shape, color, size, SPEC_COLORS[color], cx, cy, r, 0.0)

    one = Scene(224, 224, "white", 0.0, 0, [obj("circle", "red", "large", 112, 112, 25)])
    assert caption(one) == "One object: a large red circle in the center."
    three = Scene(224, 224, "white", 0.0, 0, [
        obj("star", "yellow", "small", 190, 190, 12), obj("circle", "red", "large", 112, 112, 25),
        obj("square", "blue", "small", 30, 30, 12)])  # fmt: skip
    assert caption(three) == (
        "Three objects: a small blue square at the top left, a large red circle in the center, "
        "and a small yellow star at the bottom right."
    )


def test_reasoning_answers_follow_from_their_probes(pool, yes_no_pool):
    seen = Counter()
    for s in [*pool, *yes_no_pool]:
        if s.kind != "reasoning":
            continue
        seen[s.qtype] += 1
        objs, f = s.objects, s.meta["fields"]
        a = [p["answer"] for p in s.probes]
        for p in s.probes:  # each probe is a canonical perception question, answered right
            assert template_regex(SPEC_TEMPLATES[p["qtype"]]).match(p["question"]), p
        if s.qtype == "more":
            assert [p["qtype"] for p in s.probes] == ["count_color", "count_color"]
            assert a == [str(sum(o["color"] == f[c] for o in objs)) for c in ("color1", "color2")]
            want = "yes" if int(a[0]) > int(a[1]) else "no"
        elif s.qtype == "count_not":
            assert [p["qtype"] for p in s.probes] == ["count_all", "count_shape"]
            assert a == [str(len(objs)), str(sum(o["shape"] == f["shape"] for o in objs))]
            want = str(int(a[0]) - int(a[1]))
            assert 0 <= int(want) <= 5
        elif s.qtype in ("left_of", "above"):
            assert [p["qtype"] for p in s.probes] == ["where", "where"]
            i, j = s.meta["refs"]
            assert a == [region(objs[i], s.width, s.height), region(objs[j], s.width, s.height)]
            axis = (
                (lambda r: REGIONS.index(r) % 3)
                if s.qtype == "left_of"
                else (lambda r: REGIONS.index(r) // 3)
            )
            want = "yes" if axis(a[0]) < axis(a[1]) else "no"
        else:
            assert [p["qtype"] for p in s.probes] == ["color", "color"]
            i, j = s.meta["refs"]
            assert a == [objs[i]["color"], objs[j]["color"]]
            want = "yes" if a[0] == a[1] else "no"
        assert s.answer == want, (s.question, s.probes, s.answer)
    assert set(seen) == REASONING and min(seen.values()) > 30


def test_relations_keep_the_margins(yes_no_pool):
    asked = 0
    for s in yes_no_pool:
        if s.qtype not in ("left_of", "above"):
            continue
        i, j = s.meta["refs"]
        a, b = s.objects[i], s.objects[j]
        key, side = ("cx", s.width) if s.qtype == "left_of" else ("cy", s.height)
        assert abs(a[key] - b[key]) > 0.05 * side
        assert s.answer == ("yes" if a[key] < b[key] - 0.05 * side else "no")
        asked += 1
    assert asked > 500


def test_yes_no_answers_are_balanced(yes_no_pool):
    answers = [s.answer for s in yes_no_pool]
    assert set(answers) == {"yes", "no"}
    assert 0.45 <= answers.count("yes") / len(answers) <= 0.55
    for qtype in YES_NO:
        mine = [s.answer for s in yes_no_pool if s.qtype == qtype]
        assert 0.40 <= mine.count("yes") / len(mine) <= 0.60, qtype


def test_counts_cover_zero_to_six(pool):
    answers = {int(s.answer) for s in pool if s.qtype.startswith("count")}
    assert answers >= set(range(7))
    assert {int(s.answer) for s in pool if s.qtype == "count_all"} == set(range(1, 7))


def test_referring_expressions_are_unique_shortest_and_never_name_the_answer(pool, yes_no_pool):
    checked, kinds = 0, Counter()
    for s in [*pool, *yes_no_pool]:
        w, h = s.width, s.height
        refs = [s.meta["fields"][k] for k in ("ref", "ref1", "ref2") if k in s.meta["fields"]]
        avoid = ASKS_FOR.get(s.qtype, set())
        for ref, i in zip(refs, s.meta["refs"]):
            assert [k for k, o in enumerate(s.objects) if matches(ref, o, w, h)] == [i], ref
            named = dict(spec_expressions(s.objects[i], w, h))[ref]
            assert not named & avoid, (s.qtype, ref)
            unique_allowed = [
                t
                for t, n in spec_expressions(s.objects[i], w, h)
                if not n & avoid and sum(t == e for p in s.objects for e, _ in spec_expressions(p, w, h)) == 1
            ]
            assert len(ref.split()) == min(len(t.split()) for t in unique_allowed), (ref, unique_allowed)
            kinds[min(named)] += 1
            checked += 1
    assert checked > 1000
    assert set(kinds) == {"shape", "color", "region"}  # refer by shape, colour alone and region all occur


def test_eval_set_asks_every_qtype_with_the_canonical_templates():
    samples = gen(300, split="test", seed=0)
    assert {s.qtype for s in samples} == set(SPEC_TEMPLATES)
    for s in samples:
        assert template_regex(SPEC_TEMPLATES[s.qtype]).match(s.question), s.question
        assert s.kind == ("reasoning" if s.qtype in REASONING else "perception")


def test_paraphrases():
    for qtype, template in SPEC_TEMPLATES.items():
        assert CANONICAL[qtype] == template
    for qtype in CANONICAL:
        train, held = set(TRAIN[qtype]), set(HELD_OUT[qtype])
        assert len(train) >= 3 and CANONICAL[qtype] not in train and held
        assert not held & (train | {CANONICAL[qtype]}), qtype
    assert heldout_question("count_color", {"color": "red"}) == "Count the red objects."
    asked = gen(300, seed=5, paraphrase=True)
    heldout = [template_regex(t) for ts in HELD_OUT.values() for t in ts]
    assert len({s.question for s in asked if s.qtype == "count_all"}) >= 3
    assert not any(p.match(s.question) for s in asked for p in heldout)
    for s in asked:  # the same ground truth whatever the wording
        assert any(template_regex(t).match(s.question) for t in (CANONICAL[s.qtype], *TRAIN[s.qtype]))


def test_shape_geometry():
    tri = shape_polygon("triangle", 50, 50, 20, 0)
    assert min(tri, key=lambda p: p[1]) == pytest.approx((50, 30))  # apex up
    star = shape_polygon("star", 50, 50, 20, 0)
    assert star[0] == pytest.approx((50, 30)) and math.dist(star[1], (50, 50)) == pytest.approx(9.0)
    assert shape_polygon("hexagon", 50, 50, 20, 0)[0] == pytest.approx((70, 50))  # 3 o'clock
    assert all(math.dist(p, (50, 50)) == pytest.approx(20) for p in shape_polygon("square", 50, 50, 20, 0))
    rotated = shape_polygon("triangle", 50, 50, 20, 20)
    assert math.degrees(math.atan2(rotated[0][1] - 50, rotated[0][0] - 50)) == pytest.approx(-70)
    hexagon = fill_polygon([(4 * x, 4 * y) for x, y in shape_polygon("hexagon", 50, 50, 20, 0)], 400, 400)
    assert hexagon.sum() / 16 == pytest.approx(3 * math.sqrt(3) / 2 * 400, rel=0.01)


def test_other_canvas_sizes():
    for w, h in ((64, 64), (320, 160), (160, 480)):
        for s in [generate_sample("scene", "train", 2, i, WorldConfig(width=w, height=h)) for i in range(30)]:
            assert s.images[0].size == (w, h)
            for o in s.objects:
                x1, y1, x2, y2 = o["box"]
                assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and o["region"] == region(o, w, h)


def test_records_are_json_and_unknown_qtypes_fail():
    s = generate_sample("scene", "val", 0, 0)
    record = json.loads(json.dumps(s.record(["a.png"])))
    assert set(record["objects"][0]) == {
        "shape",
        "color",
        "size",
        "rgb",
        "cx",
        "cy",
        "r",
        "rotation",
        "box",
        "region",
    }
    with pytest.raises(ValueError):
        generate_sample("scene", "train", 0, 0, WorldConfig(qtypes=("sign",)))


def test_palette_and_background_pixels(pool):
    from vislang.data.world import palette

    assert palette.COLORS == SPEC_COLORS and palette.BACKGROUNDS == SPEC_BACKGROUNDS
    assert palette.SHAPES == SPEC_SHAPES and tuple(REGIONS) == palette.REGIONS
    assert {s.meta["background"] for s in pool} == set(SPEC_BACKGROUNDS)
    for s in pool[:200]:
        pixels = np.asarray(s.images[0]).astype(float)
        ys, xs = np.mgrid[0 : s.height, 0 : s.width] + 0.5
        free = np.ones((s.height, s.width), dtype=bool)
        for o in s.objects:
            free &= (xs - o["cx"]) ** 2 + (ys - o["cy"]) ** 2 > (o["r"] + 3) ** 2
        background, want = pixels[free], SPEC_BACKGROUNDS[s.meta["background"]]
        sigma = s.meta["noise_sigma"]
        if sigma == 0:
            assert (background == want).all()
        else:  # clipping at 255 pulls white down and narrows its spread a little
            assert np.abs(background.mean(0) - want).max() < 0.5 * sigma
            low, high = (0.5, 0.7) if want == (255, 255, 255) else (0.8, 1.1)  # white clips half its noise
            assert low * sigma < background.std(0).max() < high * sigma
