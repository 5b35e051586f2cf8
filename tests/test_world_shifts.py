"""Scene-level shifts: severity 0 is the clean sample bit for bit, every shift changes the scene the
way its note says, answers stay exact under it, and the same arguments give the same pixels."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import cache

import numpy as np
import pytest

from vislang.data.world import generate_sample, sample_rng
from vislang.data.world.render import COVERED, PAD, polygon_coverage
from vislang.data.world.scene import Scene, SceneObject, fits, sample_scene
from vislang.data.world.scene_questions import QTYPES
from vislang.eval.world_shifts import SCENE_SHIFTS, Recipe, SceneShift, aspect_canvas, shrunk

SEED = 5
BACKGROUNDS = {  # world-spec section 1
    "white": (255, 255, 255),
    "cream": (245, 240, 225),
    "light gray": (225, 225, 225),
    "light blue": (220, 232, 245),
    "light green": (225, 240, 225),
    "light pink": (245, 228, 232),
}
MIRROR_REGION = {"top left": "top right", "left": "right", "bottom left": "bottom right"}
MIRROR_REGION |= {v: k for k, v in MIRROR_REGION.items()}


@cache
def clean(index: int):
    return generate_sample("scene", "test", SEED, index)


@cache
def shifted(name: str, index: int, severity: int):
    return SCENE_SHIFTS[name].make("scene", "test", SEED, index, severity)


def pixels(sample) -> np.ndarray:
    return np.asarray(sample.images[0], dtype=np.int32)


def same_sample(a, b) -> bool:
    return a.record([]) == b.record([]) and a.images[0].tobytes() == b.images[0].tobytes()


def swap_sides(text: str) -> str:
    return re.sub(r"\b(left|right)\b", lambda m: "right" if m[1] == "left" else "left", text)


def painted_box(sample, obj: dict) -> list[int] | None:
    """The box of the pixels at least half painted in the object's colour, read back from a flat
    background (paint blends bg + (rgb - bg) x coverage), within its bounding circle plus 2 px."""
    bg = np.asarray(BACKGROUNDS[sample.meta["background"]])
    rgb = np.asarray(obj["rgb"])
    c = int(np.argmax(np.abs(rgb - bg)))  # the channel that tells them apart best
    cover = (pixels(sample)[..., c] - bg[c]) / (rgb[c] - bg[c])
    ys, xs = np.mgrid[0 : sample.height, 0 : sample.width] + 0.5
    near = np.hypot(xs - obj["cx"], ys - obj["cy"]) <= obj["r"] + 2
    y, x = np.nonzero(near & (cover >= 128 / 255))
    return [int(x.min()), int(y.min()), int(x.max()) + 1, int(y.max()) + 1] if x.size else None


def flat_indices(count: int) -> list[int]:
    """Indices whose clean background has no pixel noise (their colours can be read back exactly)."""
    found = [i for i in range(60) if clean(i).meta["noise_sigma"] == 0]
    assert len(found) >= count
    return found[:count]


def indices_asking(qtypes: tuple[str, ...], each: int) -> list[int]:
    """The first indices whose question type (the stream's first draw) is one of `qtypes`, `each` of each."""
    found: dict[str, list[int]] = {q: [] for q in qtypes}
    for index in range(1000):
        qtype = QTYPES[int(sample_rng("scene", "test", SEED, index).integers(len(QTYPES)))]
        if qtype in found and len(found[qtype]) < each:
            found[qtype].append(index)
    return sorted(i for q in qtypes for i in found[q])


# ---- every shift ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENE_SHIFTS))
def test_severity_zero_is_the_clean_sample(name):
    for index in range(3):
        assert same_sample(shifted(name, index, 0), clean(index))
        assert "shift" not in shifted(name, index, 0).meta


def test_the_pipeline_replays_the_scene_family_on_every_qtype():
    """A default Recipe is the scene family itself, over enough samples to ask every question type."""
    shift = SCENE_SHIFTS["jitter"]
    qtypes = set()
    for split in ("train", "test"):
        for index in range(40):
            made = shift.make("scene", split, 11, index, 0)
            assert same_sample(made, generate_sample("scene", split, 11, index))
            qtypes.add(made.qtype)
    assert len(qtypes) == 16


def answer_from_objects(sample) -> str | None:
    """The answer re-derived from the sample's object records, for the qtypes it settles alone."""
    objs, fields, refs = sample.objects, sample.meta["fields"], sample.meta["refs"]
    counted = {
        "count_all": lambda o: True,
        "count_shape": lambda o: o["shape"] == fields.get("shape"),
        "count_color": lambda o: o["color"] == fields.get("color"),
        "count_both": lambda o: (o["color"], o["shape"]) == (fields.get("color"), fields.get("shape")),
    }
    if sample.qtype in counted:
        return str(sum(map(counted[sample.qtype], objs)))
    if sample.qtype in ("color", "shape", "size"):
        return objs[refs[0]][sample.qtype]
    if sample.qtype == "where":
        return objs[refs[0]]["region"]
    if sample.qtype == "ground":
        sides = (sample.width, sample.height) * 2
        # pixel / size x 1000, rounded half up, in exact fractions
        return str(
            [
                math.floor(Fraction(1000 * v, side) + Fraction(1, 2))
                for v, side in zip(objs[refs[0]]["box"], sides)
            ]
        )
    return None


@pytest.mark.parametrize("name", list(SCENE_SHIFTS))
def test_shifted_samples_are_labelled_exact_and_reproducible(name):
    shift = SCENE_SHIFTS[name]
    assert shift.note and 1 <= len(shift.levels) - 1 <= 4
    checked = set()
    indices = sorted({*range(3), *indices_asking(("ground", "where", "count_color", "size"), 1)})
    for severity in shift.severities[1:]:
        for index in indices:
            sample = shifted(name, index, severity)
            if sample is None:
                assert clean(index).qtype in shift.excludes
                continue
            assert sample.meta["shift"] == {
                "name": name,
                "severity": severity,
                "level": shift.levels[severity],
            }
            assert (sample.family, sample.split, sample.seed, sample.index) == ("scene", "test", SEED, index)
            assert sample.qtype == clean(index).qtype  # the same stream: the same first draw
            expected = answer_from_objects(sample)
            if expected is not None:
                assert sample.answer == expected, (name, severity, index, sample.question)
                checked.add(sample.qtype)
            again = shift.make("scene", "test", SEED, index, severity)
            assert same_sample(sample, again)
    assert {"ground", "where", "count_color", "size"} <= checked


def test_bad_arguments_fail_clearly():
    shift = SCENE_SHIFTS["border"]
    with pytest.raises(ValueError, match="family must be 'scene'"):
        shift.make("text", "test", 0, 0, 1)
    with pytest.raises(ValueError, match="severities 0..3"):
        shift.make("scene", "test", 0, 0, 4)
    with pytest.raises(ValueError, match="needs a recipe"):
        SceneShift("nothing", "layout", "x", (0, 1))
    with pytest.raises(ValueError, match="64, 1024"):
        Recipe(width=32)


# ---- resolution -----------------------------------------------------------------------------------


def test_aspect_canvases_keep_the_area():
    # 224 x sqrt(2) = 316.8, 224 / sqrt(2) = 158.4; 224 x 2 = 448, 224 / 2 = 112
    assert aspect_canvas("1:1") == (224, 224)
    assert aspect_canvas("2:1") == (317, 158) and aspect_canvas("1:2") == (158, 317)
    assert aspect_canvas("4:1") == (448, 112) and aspect_canvas("1:4") == (112, 448)


@pytest.mark.parametrize("name", ["size", "size_large", "aspect"])
def test_canvas_shifts_draw_natively_at_the_size(name):
    shift = SCENE_SHIFTS[name]
    for severity in shift.severities[1:]:
        level = shift.levels[severity]
        want = aspect_canvas(level) if name == "aspect" else (level, level)
        for index in range(2):
            sample = shifted(name, index, severity)
            assert (sample.width, sample.height) == want
            side = min(want)
            for o in sample.objects:  # object sizes follow the canvas, as the spec says
                lo, hi = {"small": (0.05, 0.075), "large": (0.10, 0.14)}[o["size"]]
                assert lo * side - 0.01 <= o["r"] <= hi * side + 0.01
                assert o["cx"] + o["r"] <= want[0] - 2 and o["cy"] + o["r"] <= want[1] - 2


# ---- layout ---------------------------------------------------------------------------------------


def test_crowding_packs_more_objects_closer():
    shift = SCENE_SHIFTS["crowding"]
    gaps = {6: 0.02, 8: 0.01, 10: 0.005}
    closer_than_spec = captions = 0
    for severity in shift.severities[1:]:
        count = shift.levels[severity]
        for index in sorted({*range(5), *indices_asking(("caption",), 1)}):
            sample = shifted("crowding", index, severity)
            if clean(index).qtype == "caption":
                assert sample is None  # no number word past six
                captions += 1
                continue
            objs = sample.objects
            assert len(objs) == count
            for i, a in enumerate(objs):
                assert a["cx"] - a["r"] >= 2 and a["cx"] + a["r"] <= 222
                for b in objs[i + 1 :]:
                    distance = math.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) - a["r"] - b["r"]
                    assert distance >= gaps[count] * 224
                    closer_than_spec += distance < 0.02 * 224
    assert closer_than_spec > 0 and captions == 3


def test_border_keeps_objects_near_the_edges():
    shift = SCENE_SHIFTS["border"]
    for severity in shift.severities[1:]:
        band = shift.levels[severity] * 224
        for index in range(5):
            for o in shifted("border", index, severity).objects:
                assert min(o["cx"], o["cy"], 224 - o["cx"], 224 - o["cy"]) - o["r"] <= band
                assert min(o["cx"], o["cy"], 224 - o["cx"], 224 - o["cy"]) - o["r"] >= 2


def test_small_maps_radii_onto_the_small_range():
    def obj(size: str, r: float) -> SceneObject:
        return SceneObject("circle", "red", size, (220, 40, 40), 112.0, 112.0, r, 0.0)

    # on 224: large 0.10 -> small 0.05 (22.4 -> 11.2), large 0.14 -> 0.075 (31.36 -> 16.8),
    # large 0.12 -> 0.0625 (26.88 -> 14.0); a small radius stays; then every radius x scale
    scene = Scene(224, 224, "white", 0.0, 0, [obj("large", 22.4), obj("large", 31.36), obj("large", 26.88)])
    scene = scene.with_objects([*scene.objects, obj("small", 13.0)])
    assert [o.r for o in shrunk(1.0)(scene).objects] == [11.2, 16.8, 14.0, 13.0]
    assert [o.r for o in shrunk(0.5)(scene).objects] == [5.6, 8.4, 7.0, 6.5]
    assert {o.size for o in shrunk(0.75)(scene).objects} == {"small"}


def test_small_objects_are_small_and_say_so():
    shift = SCENE_SHIFTS["small"]
    for severity in shift.severities[1:]:
        scale = shift.levels[severity]
        for index in range(5):
            sample = shifted("small", index, severity)
            assert all(o["size"] == "small" for o in sample.objects)
            assert all(
                0.05 * 224 * scale - 0.01 <= o["r"] <= 0.075 * 224 * scale + 0.01 for o in sample.objects
            )
            if sample.qtype == "size":
                assert sample.answer == "small"
            assert not any("large" in v for v in sample.meta["fields"].values())  # no reference says large


def test_mirror_flips_the_image_and_the_sides_of_the_answers():
    seen = {"where": 0, "left_of": 0, "ground": 0}
    where_changed = 0
    for index in sorted({*range(16), *indices_asking(tuple(seen), 4)}):
        c, m = clean(index), shifted("mirror", index, 1)
        # the image is the clean one reflected, up to rounding of the reflected centres
        diff = np.abs(pixels(m) - pixels(c)[:, ::-1])
        assert diff.max() <= 1 and (diff > 0).mean() < 0.001
        assert m.qtype == c.qtype
        seen[c.qtype] = seen.get(c.qtype, 0) + 1
        assert m.meta["fields"] == {k: swap_sides(v) for k, v in c.meta["fields"].items()}
        assert m.meta["refs"] == c.meta["refs"]
        for a, b in zip(m.objects, c.objects):
            assert a["cx"] == round(224 - b["cx"], 2) and a["rotation"] == -b["rotation"]
            assert a["region"] == MIRROR_REGION.get(b["region"], b["region"])
            assert a["box"] == [224 - b["box"][2], b["box"][1], 224 - b["box"][0], b["box"][3]]
        if c.qtype == "where":
            assert m.answer == MIRROR_REGION.get(c.answer, c.answer)
            where_changed += m.answer != c.answer
        elif c.qtype == "left_of":
            assert m.answer == {"yes": "no", "no": "yes"}[c.answer]
            assert [p["answer"] for p in m.probes] == [
                MIRROR_REGION.get(p["answer"], p["answer"]) for p in c.probes
            ]

        elif c.qtype == "ground":
            x1, y1, x2, y2 = c.meta["box"]
            assert m.meta["box"] == [224 - x2, y1, 224 - x1, y2]
        elif c.qtype != "caption":
            assert m.answer == c.answer
    assert min(seen["where"], seen["left_of"], seen["ground"]) >= 4 and where_changed > 0


# ---- domain ---------------------------------------------------------------------------------------


def test_backgrounds_change_only_the_background():
    shift = SCENE_SHIFTS["background"]
    for severity in shift.severities[1:]:
        name = shift.levels[severity]
        for index in range(3):
            c, s = clean(index), shifted("background", index, severity)
            assert s.meta["background"] == name and s.meta["background"] not in BACKGROUNDS
            assert (s.objects, s.question, s.answer) == (c.objects, c.question, c.answer)
            px = pixels(s)
            ys, xs = np.mgrid[0:224, 0:224] + 0.5
            free = np.ones((224, 224), dtype=bool)
            for o in s.objects:
                # the object's colour is drawn unchanged where it covers the pixel fully
                assert list(px[int(o["cy"]), int(o["cx"])]) == o["rgb"]
                free &= np.hypot(xs - o["cx"], ys - o["cy"]) > o["r"] + 3
            back = px[free]
            if name == "dark":
                assert back.mean() < 50
            else:
                assert back.std(axis=0).min() > 10  # a texture, not a flat colour
            saturation = back.max(axis=1) - back.min(axis=1)
            assert np.median(saturation) < 40  # no background reads as an object's colour


def test_outlines_leave_the_inside_background_and_keep_the_box():
    shift = SCENE_SHIFTS["outline"]
    for severity in shift.severities[1:]:
        for index in flat_indices(4):
            c, s = clean(index), shifted("outline", index, severity)
            bg = np.asarray(BACKGROUNDS[s.meta["background"]])
            for o, f in zip(s.objects, c.objects):
                centre = pixels(s)[int(o["cy"]), int(o["cx"])]
                assert np.abs(centre - bg).max() <= 6, (severity, index, o)
                assert list(pixels(c)[int(o["cy"]), int(o["cx"])]) == o["rgb"]  # filled, when clean
                box = painted_box(s, o)
                assert max(abs(a - b) for a, b in zip(box, o["box"])) <= 1
                assert max(abs(a - b) for a, b in zip(o["box"], f["box"])) <= 1


def test_jitter_boxes_are_the_drawn_shapes_and_wobble_grows():
    shift = SCENE_SHIFTS["jitter"]
    changed = []
    for severity in shift.severities[1:]:
        amplitude = shift.levels[severity]
        moved = 0
        for index in flat_indices(4):
            c, s = clean(index), shifted("jitter", index, severity)
            moved += int((np.abs(pixels(s) - pixels(c)).max(axis=-1) > 32).sum())
            for o, f in zip(s.objects, c.objects):
                box = painted_box(s, o)
                assert max(abs(a - b) for a, b in zip(box, o["box"])) <= 1
                # inside the clean box, each side in by at most the wobble's reach
                reach = 2 * amplitude / (1 + amplitude) * o["r"] + 1
                assert f["box"][0] - 1 <= o["box"][0] <= f["box"][0] + reach
                assert f["box"][1] - 1 <= o["box"][1] <= f["box"][1] + reach
                assert f["box"][2] - reach <= o["box"][2] <= f["box"][2] + 1
                assert f["box"][3] - reach <= o["box"][3] <= f["box"][3] + 1
        changed.append(moved)
    assert changed == sorted(changed) and changed[0] > 0


# ---- the generator pieces the shifts draw with ---------------------------------------------------


def test_fits_keeps_the_gap_it_is_given_and_the_spec_gap_by_default():
    other = SceneObject("circle", "red", "small", (230, 30, 30), 50.0, 50.0, 10.0, 0.0)
    # canvas 200 x 100: the gap is a fraction of 100; touching circles are 20 apart
    for gap, pixels_apart in ((None, 2.0), (0.02, 2.0), (0.1, 10.0), (0.0, 0.0)):
        assert fits(70.0 + pixels_apart, 50.0, 10.0, [other], 200, 100, gap)
        assert not fits(69.9 + pixels_apart, 50.0, 10.0, [other], 200, 100, gap)
    assert not fits(11.9, 50.0, 10.0, [], 200, 100, 0.0)  # the edge margin holds whatever the gap


def test_sample_scene_gap_none_is_the_spec_and_a_wider_gap_holds():
    def drawn(**kwargs):
        rng = sample_rng("scene", "test", SEED, 3)
        return sample_scene(rng, 224, 224, count=4, **kwargs).records(), rng.random()

    assert drawn() == drawn(gap=None) == drawn(gap=0.02)  # same scene, same draws after it
    wide, _ = drawn(gap=0.1)
    for i, a in enumerate(wide):
        for b in wide[i + 1 :]:
            assert math.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) - a["r"] - b["r"] >= 0.1 * 224


def test_polygon_coverage_frames_fills_and_boxes_a_square_with_a_hole():
    square = [(10, 10), (20, 10), (20, 20), (10, 20)]
    hole = [(13, 13), (17, 13), (17, 17), (13, 17)]
    for coverage in (polygon_coverage(square), polygon_coverage(np.asarray(square, float), hole)):
        assert (coverage.x0, coverage.y0) == (10 - PAD, 10 - PAD)
        assert coverage.mask.size == (10 + 2 * PAD, 10 + 2 * PAD)
        assert coverage.box == [10, 10, 20, 20]
    mask, origin = np.asarray(coverage.mask), 10 - PAD
    ring, centre = mask[11 - origin, 15 - origin], mask[15 - origin, 15 - origin]  # pixels (15, 11), (15, 15)
    assert ring >= COVERED and centre == 0
    with pytest.raises(ValueError, match="no pixel"):
        polygon_coverage([(10.0, 10.0), (10.3, 10.0), (10.0, 10.3)])


def test_drawn_as_records_the_drawing_and_a_moved_copy_redraws_the_shape():
    obj = SceneObject("square", "blue", "small", (30, 30, 230), 15.0, 15.0, 9.0, 0.0)
    square = polygon_coverage([(10, 10), (20, 10), (20, 20), (10, 20)])
    drawn = obj.drawn_as(square)
    assert drawn.coverage is square and drawn.record(100, 100)["box"] == [10, 10, 20, 20]
    assert obj.box != [10, 10, 20, 20]  # the original keeps its own drawing
    assert drawn.moved(15.0, 15.0).box == obj.box
