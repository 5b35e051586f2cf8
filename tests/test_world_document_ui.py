"""The `document` and `ui` families of world-spec.md section 3: answers agree with the meta and the pixels."""

import re
from fractions import Fraction

import numpy as np
import pytest

from vislang.data.world import WorldConfig, generate_sample

QTYPES = {"document": {"total", "field", "tallest", "bar_value"}, "ui": {"ground_button", "checked"}}
CANONICAL = [
    r"What is the total\?",
    r"What is the [a-z ]+\?",
    r"Which bar is the tallest\?",
    r"What is the value of \w+\?",
    r'Where is the "[\w ]+" button\?',
    r'Is the "[\w ]+" checkbox checked\?',
]


def samples(family: str, n: int, cfg: WorldConfig | None = None, seed: int = 0):
    return [generate_sample(family, "train", seed, i, cfg) for i in range(n)]


def boxes_in(meta):
    """Every recorded box in a meta, at any depth (keys "box", "*_box")."""
    if isinstance(meta, dict):
        for key, value in meta.items():
            if key.endswith("box") and value is not None:
                yield value
            else:
                yield from boxes_in(value)
    elif isinstance(meta, list):
        for value in meta:
            yield from boxes_in(value)


def cents(price: str) -> int:
    assert re.fullmatch(r"\d+\.\d\d", price), price
    whole, frac = price.split(".")
    return 100 * int(whole) + int(frac)


@pytest.mark.parametrize("family", ["document", "ui"])
def test_same_seed_same_bytes(family):
    first, again = samples(family, 10), samples(family, 10)
    for a, b in zip(first, again):
        assert a.images[0].tobytes() == b.images[0].tobytes()
        assert (a.question, a.answer, a.meta) == (b.question, b.answer, b.meta)
    assert len({s.images[0].tobytes() for s in first}) == len(first)  # and other indices differ


def test_receipt_total_is_the_sum_of_items():
    for s in samples("document", 40, WorldConfig(qtypes=("total",))):
        items = s.meta["items"]
        assert 3 <= len(items) <= 8
        assert cents(s.answer) == sum(cents(item["price"]) for item in items)
        assert s.answer == s.meta["total"] and s.question == "What is the total?"


def test_form_answer_is_the_asked_value_lowercased():
    for s in samples("document", 40, WorldConfig(qtypes=("field",))):
        field = s.meta["fields"][s.meta["target"]]
        assert s.question == f"What is the {field['label'].lower()}?"
        assert s.answer == field["value"].lower()
        assert len({f["label"] for f in s.meta["fields"]}) == len(s.meta["fields"]) >= 3


def test_bar_answers_match_meta_and_the_maximum_is_unique():
    for s in samples("document", 60, WorldConfig(qtypes=("tallest", "bar_value"))):
        values = [bar["value"] for bar in s.meta["bars"]]
        assert 3 <= len(values) <= 6 and sorted(values)[-1] > sorted(values)[-2]
        if s.qtype == "tallest":
            assert s.answer == s.meta["bars"][int(np.argmax(values))]["label"].lower()
        else:
            bar = s.meta["bars"][s.meta["target"]]
            assert s.question == f"What is the value of {bar['label']}?" and s.answer == str(bar["value"])


@pytest.mark.parametrize("size", [(224, 224), (64, 64), (400, 180)])
def test_tallest_bar_is_tallest_in_pixels(size):
    for s in samples("document", 30, WorldConfig(*size, qtypes=("tallest",))):
        pixels, color = np.asarray(s.images[0]), np.array(s.meta["bar_color"])
        heights = []
        for bar in s.meta["bars"]:
            x1, y1, x2, y2 = bar["box"]
            column = np.all(pixels[:, (x1 + x2) // 2] == color, axis=-1)
            heights.append(int(column.sum()))
            assert heights[-1] == y2 - y1 and column[y1:y2].all()
        tallest = int(np.argmax(heights))
        assert sorted(heights)[-1] > sorted(heights)[-2]
        assert s.answer == s.meta["bars"][tallest]["label"].lower()


@pytest.mark.parametrize("size", [(224, 224), (320, 200), (1024, 768)])
def test_button_answer_is_the_button_box(size):
    width, height = size
    for s in samples("ui", 30, WorldConfig(*size, qtypes=("ground_button",))):
        button = next(w for w in s.meta["widgets"] if w["index"] == s.meta["target"])
        assert button["type"] == "button" and s.question == f'Where is the "{button["label"]}" button?'
        assert re.fullmatch(r"\[\d+, \d+, \d+, \d+\]", s.answer)
        grid = [int(v) for v in s.answer[1:-1].split(", ")]
        x1, y1, x2, y2 = button["box"]
        expected = [
            int(Fraction(1000 * v, side) + Fraction(1, 2)) for v, side in zip(button["box"], size * 2)
        ]
        assert grid == expected
        # the box is exactly the button's fill: its bounding box with a 1 px ring around it
        pixels = np.asarray(s.images[0])[max(0, y1 - 1) : y2 + 1, max(0, x1 - 1) : x2 + 1]
        ys, xs = np.nonzero(np.all(pixels == np.array(button["fill"]), axis=-1))
        ox, oy = max(0, x1 - 1), max(0, y1 - 1)
        assert [ox + xs.min(), oy + ys.min(), ox + xs.max() + 1, oy + ys.max() + 1] == button["box"]


@pytest.mark.parametrize("size", [(224, 224), (64, 64)])
def test_checkbox_state_is_visible(size):
    seen = set()
    for s in samples("ui", 40, WorldConfig(*size, qtypes=("checked",))):
        pixels = np.asarray(s.images[0])
        for w in s.meta["widgets"]:
            if w["type"] != "checkbox":
                continue
            x1, y1, x2, y2 = w["box"]
            inset = max(1, -(-(x2 - x1) // 10))  # past the border
            inside = pixels[y1 + inset : y2 - inset, x1 + inset : x2 - inset]
            dark = int((inside.max(axis=-1) < 100).sum())
            assert (dark > 0) == (w["state"] == "checked"), (s.id, w)
            seen.add(w["state"])
        asked = next(w for w in s.meta["widgets"] if w["index"] == s.meta["target"])
        assert s.answer == ("yes" if asked["state"] == "checked" else "no")
    assert seen == {"checked", "unchecked"}


def test_checked_answers_are_balanced():
    answers = [s.answer for s in samples("ui", 1000, WorldConfig(96, 96, qtypes=("checked",)))]
    assert set(answers) == {"yes", "no"}
    assert 0.45 <= answers.count("yes") / len(answers) <= 0.55


@pytest.mark.parametrize("family", ["document", "ui"])
def test_every_qtype_appears(family):
    assert {s.qtype for s in samples(family, 200)} == QTYPES[family]


@pytest.mark.parametrize("family", ["document", "ui"])
@pytest.mark.parametrize("size", [(224, 224), (64, 64), (1024, 768), (64, 1024), (1024, 64)])
def test_everything_drawn_inside_the_canvas(family, size):
    width, height = size
    for s in samples(family, 30 if size == (224, 224) else 12, WorldConfig(*size)):
        assert s.images[0].size == size and s.kind == family and s.answer
        for x1, y1, x2, y2 in boxes_in(s.meta):
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (s.id, (x1, y1, x2, y2))
        if size == (224, 224):
            assert s.meta["font_size"] >= 9  # legible at the default size


@pytest.mark.parametrize("family", ["document", "ui"])
def test_paraphrases_and_canonical_questions(family):
    canonical = [s.question for s in samples(family, 60)]
    assert all(any(re.fullmatch(p, q) for p in CANONICAL) for q in canonical)
    paraphrased = [s.question for s in samples(family, 60, WorldConfig(paraphrase=True))]
    assert sum(not any(re.fullmatch(p, q) for p in CANONICAL) for q in paraphrased) >= 20


def test_qtypes_restrict_and_unknown_qtypes_fail():
    assert {s.qtype for s in samples("document", 20, WorldConfig(qtypes=("field", "checked")))} == {"field"}
    with pytest.raises(ValueError):
        generate_sample("ui", "train", 0, 0, WorldConfig(qtypes=("total",)))
