"""Image-level shifts: severity 0 is the clean sample, each degradation moves the statistic it should,
the occluder hides no object, grayscale skips every question that needs or names a colour."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from vislang.data.world import Sample, generate_sample
from vislang.eval.perturb import (
    IMAGE_SHIFTS,
    blur,
    contrast,
    jpeg_bytes,
    largest_free,
    noise,
    place_occluder,
    protected_boxes,
)
from vislang.eval.shift import GROUPS

FAMILIES = ("scene", "text", "multi", "video", "document", "ui")
RNG = np.random.default_rng(0)  # for the transforms that draw nothing


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def scene_image(index: int) -> Image.Image:
    return generate_sample("scene", "test", 0, index).images[0]


def test_registry_names_groups_and_levels():
    groups = {name: s.group for name, s in IMAGE_SHIFTS.items()}
    assert groups == {
        "downscale": "resolution",
        "jpeg": "quality",
        "blur": "quality",
        "noise": "quality",
        "brightness": "quality",
        "contrast": "quality",
        "occluder": "quality",
        "grayscale": "domain",
    }
    for shift in IMAGE_SHIFTS.values():
        assert shift.group in GROUPS and shift.note and 3 <= len(shift.levels) <= 5
        assert shift.describe()["name"] == shift.name


@pytest.mark.parametrize("name", list(IMAGE_SHIFTS))
def test_severity_zero_is_the_clean_sample(name):
    for family, index in (("scene", 1), ("multi", 0), ("video", 2)):
        clean = generate_sample(family, "test", 0, index)
        made = IMAGE_SHIFTS[name].make(family, "test", 0, index, 0)
        assert len(made.images) == len(clean.images)
        for a, b in zip(made.images, clean.images):
            assert np.array_equal(pixels(a), pixels(b))
        assert "shift" not in made.meta


@pytest.mark.parametrize("name", list(IMAGE_SHIFTS))
def test_reproducible_and_severities_differ(name):
    shift = IMAGE_SHIFTS[name]
    family, index = ("scene", 3)
    if name == "grayscale":  # an index whose question neither needs nor names a colour
        index = next(i for i in range(50) if shift.make("scene", "test", 0, i, 1) is not None)
    clean = generate_sample(family, "test", 0, index)
    made = [shift.make(family, "test", 0, index, s) for s in shift.severities]
    again = shift.make(family, "test", 0, index, 1)
    assert np.array_equal(pixels(again.images[0]), pixels(made[1].images[0]))
    for s in shift.severities[1:]:
        sample = made[s]
        assert sample.meta["shift"] == sample.meta["shift"] | {
            "name": name,
            "severity": s,
            "level": shift.levels[s],
        }
        assert (sample.question, sample.answer, sample.qtype) == (clean.question, clean.answer, clean.qtype)
        assert sample.objects == clean.objects and sample.probes == clean.probes
        assert sample.images[0].size == clean.images[0].size
        assert not np.array_equal(pixels(sample.images[0]), pixels(made[s - 1].images[0]))


def test_bad_severity_and_levels_are_refused():
    with pytest.raises(ValueError, match="severities"):
        IMAGE_SHIFTS["blur"].make("scene", "test", 0, 0, 4)
    with pytest.raises(ValueError, match="quality"):
        jpeg_bytes(scene_image(0), 0)
    with pytest.raises(ValueError, match="sigma"):
        blur(scene_image(0), -1, RNG, None)
    with pytest.raises(ValueError, match="factor"):
        contrast(scene_image(0), 1.5, RNG, None)


def test_jpeg_shrinks_and_departs_from_clean_as_quality_drops():
    qualities = [q for q in IMAGE_SHIFTS["jpeg"].levels if q is not None]
    assert qualities == sorted(qualities, reverse=True)
    for index in range(3):
        image = scene_image(index)
        sizes = [len(jpeg_bytes(image, q)) for q in qualities]
        errors = []
        for q in qualities:
            decoded = IMAGE_SHIFTS["jpeg"].make("scene", "test", 0, index, qualities.index(q) + 1).images[0]
            # the shift decodes exactly what that encoding gives
            assert np.array_equal(pixels(decoded), pixels(Image.open(io.BytesIO(jpeg_bytes(image, q)))))
            errors.append(np.abs(pixels(decoded) - pixels(image)).mean())
        assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
        assert errors == sorted(errors) and errors[0] > 0


def high_frequency_energy(image: Image.Image) -> float:
    """Mean squared discrete Laplacian of the luma."""
    y = pixels(image.convert("L"))
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float((lap**2).mean())


def test_blur_lowers_high_frequency_energy_monotonically():
    shift = IMAGE_SHIFTS["blur"]
    for index in range(3):
        energies = [
            high_frequency_energy(shift.make("scene", "test", 0, index, s).images[0])
            for s in shift.severities
        ]
        assert all(a > 1.5 * b for a, b in zip(energies, energies[1:])), energies


def test_noise_std_is_the_level():
    flat = Image.new("RGB", (256, 256), (128, 128, 128))
    for std in IMAGE_SHIFTS["noise"].levels[1:]:
        diff = pixels(noise(flat, std, np.random.default_rng(1), None)) - 128
        # at std 50 clipping at 0 and 255 (2.5 std away) takes about 2% off the spread
        assert diff.std() == pytest.approx(std, rel=0.04)
        assert abs(diff.mean()) < 0.5
    # on a sample: measured where the clean pixel is far enough from 0 and 255 for no clipping
    shift = IMAGE_SHIFTS["noise"]
    clean = pixels(scene_image(4))
    for s in (1, 2):
        std = shift.levels[s]
        diff = pixels(shift.make("scene", "test", 0, 4, s).images[0]) - clean
        safe = (clean > 3 * std) & (clean < 255 - 3 * std)
        assert safe.sum() > 1000
        assert diff[safe].std() == pytest.approx(std, rel=0.05)


def test_noise_differs_between_video_frames():
    made = IMAGE_SHIFTS["noise"].make("video", "test", 0, 0, 1)
    clean = generate_sample("video", "test", 0, 0)
    d0 = pixels(made.images[0]) - pixels(clean.images[0])
    d1 = pixels(made.images[1]) - pixels(clean.images[1])
    assert not np.array_equal(d0, d1)


def test_brightness_lowers_the_mean_and_contrast_the_spread():
    for name, statistic in (("brightness", np.mean), ("contrast", np.std)):
        shift = IMAGE_SHIFTS[name]
        for index in range(3):
            values = [
                statistic(pixels(shift.make("scene", "test", 0, index, s).images[0]))
                for s in shift.severities
            ]
            assert all(a > b for a, b in zip(values, values[1:])), (name, values)
            # a factor f scales the mean (brightness) or the spread (contrast) by about f
            assert values[-1] / values[0] == pytest.approx(shift.levels[-1], abs=0.03)


def overlaps(a: list[int], b: list[int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("family", FAMILIES)
def test_occluder_covers_the_fraction_and_no_object(family):
    shift = IMAGE_SHIFTS["occluder"]
    full = 0
    for index in range(4):
        clean = generate_sample(family, "test", 0, index)
        boxes = protected_boxes(clean)
        assert boxes
        for s in shift.severities[1:]:
            made = shift.make(family, "test", 0, index, s)
            box, fraction = made.meta["shift"]["box"], made.meta["shift"]["fraction"]
            area = (box[2] - box[0]) * (box[3] - box[1]) / (clean.width * clean.height)
            assert fraction == pytest.approx(area, abs=1e-4) and fraction <= shift.levels[s] * 1.02
            full += fraction >= shift.levels[s] * 0.98
            assert not any(overlaps(box, b) for b in boxes)
            x1, y1, x2, y2 = box
            for before, after in zip(clean.images, made.images):  # the same spot on every image
                a, b = pixels(after), pixels(before)
                assert (a[y1:y2, x1:x2] == 128).all()
                a[y1:y2, x1:x2] = b[y1:y2, x1:x2]
                assert np.array_equal(a, b)  # nothing else touched
    assert full >= 10  # of 12: the asked size nearly always fits


def test_occluder_boxes_cover_every_frame_and_both_images():
    video = generate_sample("video", "test", 0, 1)
    boxes = protected_boxes(video)
    for frame in video.meta["boxes"]:
        for b in frame:
            assert b in boxes
    pair = generate_sample("multi", "test", 0, 1)
    after = [o["box"] for o in pair.meta["objects_after"]]
    assert all(b in protected_boxes(pair) for b in after)
    ui = generate_sample("ui", "test", 0, 0)
    assert ui.meta["window_box"] not in protected_boxes(ui)  # a container, not content


def blank(boxes: list[list[int]], size: int = 100) -> Sample:
    objects = [{"box": b} for b in boxes]
    return Sample(
        "scene", "q", "a", "perception", "count_all", [Image.new("RGB", (size, size), "white")], objects
    )


def test_occluder_falls_back_to_the_largest_free_spot():
    # everything protected but a 100 x 20 strip (rows 40..59), less the 2-pixel margins: rows 42..57
    sample = blank([[0, 0, 100, 40], [0, 60, 100, 100]])
    assert largest_free(np.pad(np.ones((40, 100), bool), ((0, 60), (0, 0)))) == (0, 40, 100, 60)
    box = place_occluder(sample, 0.20, np.random.default_rng(0))  # 2000 px asked, 1600 free
    assert box == [0, 42, 100, 58]
    box = place_occluder(sample, 0.05, np.random.default_rng(0))  # 500 px fit in the strip
    assert (
        box[1] >= 42
        and box[3] <= 58
        and (box[2] - box[0]) * (box[3] - box[1]) == pytest.approx(500, rel=0.03)
    )
    assert place_occluder(blank([[0, 0, 100, 100]]), 0.1, np.random.default_rng(0)) is None


def test_occluder_place_is_seeded():
    sample = generate_sample("scene", "test", 0, 0)
    places = {tuple(place_occluder(sample, 0.05, np.random.default_rng(seed))) for seed in range(6)}
    assert len(places) > 1
    assert place_occluder(sample, 0.05, np.random.default_rng(3)) == place_occluder(
        sample, 0.05, np.random.default_rng(3)
    )


def test_real_images_protect_what_is_drawn():
    item = generate_sample("fashion", "test", 0, 0)
    (box,) = protected_boxes(item)
    y = pixels(item.images[0].convert("L"))
    assert y[box[1] : box[3], box[0] : box[2]].sum() == y.sum() > 0  # all ink inside


COLOR = re.compile(r"\b(red|green|blue|yellow|purple|orange)\b")


def test_grayscale_is_gray_and_skips_every_colour_question():
    shift = IMAGE_SHIFTS["grayscale"]
    kept = skipped = 0
    for index in range(40):
        clean = generate_sample("scene", "test", 0, index)
        made = shift.make("scene", "test", 0, index, len(shift.levels) - 1)
        texts = [clean.question, clean.answer] + [p["question"] for p in clean.probes]
        needs_colour = clean.qtype in ("color", "count_color", "count_both", "exist", "more", "same_color")
        names_colour = any(COLOR.search(t) for t in texts)
        if made is None:
            skipped += 1
            assert needs_colour or names_colour, clean.question
            continue
        kept += 1
        assert not needs_colour and not names_colour, clean.question
        rgb = pixels(made.images[0])
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
        half = pixels(shift.make("scene", "test", 0, index, 1).images[0])
        spread = lambda a: (a.max(-1) - a.min(-1)).mean()  # noqa: E731
        assert 0 < spread(half) < spread(pixels(clean.images[0]))
    assert kept >= 8 and skipped >= 8
    # the clean sample is never skipped, and a pair's change may be a recolouring: always skipped
    assert shift.make("scene", "test", 0, 0, 0) is not None
    assert shift.make("multi", "test", 0, 0, 1) is None
