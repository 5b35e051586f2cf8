"""The robustness report page: built from a synthetic result with two models and three shifts, it
names every model and shift, prints the table numbers, embeds one plot per shift, references nothing
outside itself, escapes what models wrote, and loads clean in Debian's headless Chromium."""

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from vislang.eval.html_report import MAX_MISSES, render_html, screenshot, to_json_safe, write_html

MODELS = ["default", "llava @ http://host/v1"]  # a model name is user text: it may hold a URL
EVIL = '<script>alert("x")</script> see http://evil.example'


def row(severity, level, accuracy, n=100, half=0.04, split=True):
    r = {"severity": severity, "level": level, "n": n, "accuracy": accuracy}
    r["ci"] = None if accuracy is None else [accuracy - half, accuracy + half]
    if split and accuracy is not None:
        r["perception"] = {"n": 60, "accuracy": accuracy + 0.05, "ci": [accuracy, accuracy + 0.1]}
        r["reasoning"] = {
            "n": 40,
            "accuracy": accuracy - 0.05,
            "ci": [accuracy - 0.1, accuracy],
            "perception_error_rate": 0.3,
            "reasoning_error_rate": 0.125,
        }
    return r


def shift(name, group, param, levels, default, llava, excludes=(), n=100):
    """Rows of `default` carry their drop as the suite writes it; `llava`'s leave it to the page."""
    rows = [row(s, lv, a, n) for s, (lv, a) in enumerate(zip(levels, default))]
    for r in rows:
        r["drop"] = None if r["accuracy"] is None else round(default[0] - r["accuracy"], 6)
    return {
        "name": name,
        "group": group,
        "param": param,
        "levels": levels,
        "note": f"{name} applied to the image",
        "excludes": list(excludes),
        "results": {
            MODELS[0]: rows,
            MODELS[1]: [row(s, lv, a, n, split=False) for s, (lv, a) in enumerate(zip(levels, llava))],
        },
    }


def scene(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def synthetic_result(pope=True, dataset=True, misses=True) -> dict:
    result = {
        "models": list(MODELS),
        "config": {
            "families": ["scene"],
            "n": 100,
            "seed": 0,
            "split": "test",
            "severities": 3,
            "seconds": 812.5,
        },
        "shifts": [
            shift(
                "jpeg",
                "quality",
                "JPEG quality",
                [None, 50, 25, 10],
                [0.62, 0.6, 0.5, 0.41],
                [0.7, 0.7, 0.66, 0.5],
            ),
            shift(
                "downscale", "resolution", "side (px)", [None, 112, 56], [0.62, 0.33, 0.2], [0.7, 0.555, None]
            ),
            shift(
                "grayscale",
                "domain",
                "saturation",
                [None, 0.5, 0.0],
                [0.58, 0.57, 0.56],
                [0.71, 0.69, 0.68],
                ["color"],
                n=80,
            ),
        ],
    }
    result["shifts"][0]["results"][MODELS[0]][-1]["drop_ci"] = [0.15, 0.27]  # a paired interval
    if pope:
        setting = {
            "n": 300,
            "accuracy": 0.812,
            "precision": 0.9,
            "recall": 0.7,
            "f1": 0.7875,
            "yes_ratio": 0.389,
            "unanswered": 2,
        }
        result["pope"] = {
            m: {"settings": {"random": setting, "adversarial": setting | {"f1": 0.654}}} for m in MODELS
        }
    if dataset:
        result["dataset"] = {
            MODELS[0]: {"overall": {"n": 50, "score": 0.444}, "metrics": {"vqa": {"n": 30, "score": 0.333}}},
            MODELS[1]: {
                "overall": {"n": 50, "score": 0.5},
                "metrics": {"vqa": {"n": 30, "score": 0.6}, "cider": {"n": 20, "score": 1.234}},
            },
        }
    if misses:
        result["misses"] = {
            MODELS[0]: [
                {
                    "shift": "jpeg",
                    "severity": 3,
                    "level": 10,
                    "question": "What color is the circle?",
                    "answer": "red",
                    "prediction": EVIL,
                    "image": scene(0),
                },
                {
                    "shift": "downscale",
                    "severity": 2,
                    "level": 56,
                    "question": "How many?",
                    "answer": "3",
                    "prediction": "4",
                    "image": scene(1),
                    "clean_correct": True,
                },
            ],
            MODELS[1]: [
                {
                    "shift": "grayscale",
                    "severity": 1,
                    "level": 0.5,
                    "question": "Is there a square?",
                    "answer": "yes",
                    "prediction": "no",
                    "image": to_json_safe(scene(2)),
                }  # already a data URL
            ]
            + [
                {
                    "shift": None,
                    "severity": 0,
                    "level": None,
                    "question": f"q{i}",
                    "answer": "a",
                    "prediction": "b",
                    "image": scene(10 + i),
                }
                for i in range(MAX_MISSES + 6)
            ],
        }
    return result


class Tags(HTMLParser):
    """Every tag with its attributes, and the page's visible text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(synthetic_result())


def test_names_every_model_and_shift(page):
    text = " ".join(parse(page).text)
    for name in [*MODELS, "jpeg", "downscale", "grayscale", "quality", "resolution", "domain"]:
        assert name in text
    assert "13 min 32 s" in text  # 812.5 s of wall time


def test_summary_numbers_are_formatted(page):
    summary = page.split("<h2>Summary")[1].split("<h2>")[0]
    # jpeg, default: clean 62.0 [58.0, 66.0], worst (quality 10) 41.0 [37.0, 45.0], drop 21.0 [15.0, 27.0]
    # points; llava: the drop is left to the page, clean 70.0 minus worst 50.0
    jpeg = summary.split(">jpeg<")[1].split("</tr>")[0]
    assert "JPEG quality: 10" in jpeg
    cells = re.findall(r"<td[^>]*>(.*?)</td>", jpeg)
    assert [re.sub(r"<[^>]+>", " ", c).split() for c in cells[1:7]] == [
        ["62.0", "58.0&ndash;66.0"],
        ["41.0", "37.0&ndash;45.0"],
        ["21.0", "15.0&ndash;27.0"],
        ["70.0", "66.0&ndash;74.0"],
        ["50.0", "46.0&ndash;54.0"],
        ["20.0"],
    ]
    # downscale, llava: the worst severity measured nothing: "-" for accuracy and drop
    downscale = summary.split(">downscale<")[1].split("</tr>")[0]
    assert re.sub(r"<[^>]+>", " ", downscale).split()[-2:] == ["-", "-"]
    # groups in the order of the shift module: resolution, quality, domain
    assert summary.index("resolution") < summary.index("quality") < summary.index("domain")


def test_split_pope_and_dataset_numbers(page):
    split = page.split("<h2>Perception and reasoning")[1].split("<h2>")[0]
    assert (
        "jpeg at 10" in split and "67.0" in split and "57.0" in split and "30.0" in split and "12.5" in split
    )
    # the clean baseline is the largest clean set: jpeg's 0.62, not grayscale's 0.58 (it excludes colour)
    clean = split.split(">clean<")[1].split("</tr>")[0]
    assert re.findall(r"<td>([^<]*)", clean)[:2] == ["100", "62.0"]
    pope = page.split("<h2>POPE")[1].split("<h2>")[0]
    for number in ("81.2", "90.0", "70.0", "78.8", "38.9", "65.4"):
        assert number in pope
    dataset = page.split("<h2>Dataset")[1].split("<h2>")[0]
    for number in ("33.3", "60.0", "123.4", "44.4", "50.0"):
        assert number in dataset


def test_one_embedded_plot_per_shift_and_capped_gallery(page):
    tags = parse(page).tags
    imgs = [a for t, a in tags if t == "img"]
    plots = [a for a in imgs if a.get("class") == "plot"]
    assert len(plots) == 3
    assert all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    gallery = len(imgs) - len(plots)
    assert gallery == 2 + MAX_MISSES  # default's 2 misses, llava's capped at MAX_MISSES
    assert page.count("right when clean") == 1  # the one miss whose clean twin was answered right
    assert "downscale &middot; severity 2 (56)" in page


def test_self_contained_and_escaped(page):
    tags = parse(page).tags
    for tag, attrs in tags:
        assert tag not in ("script", "link", "iframe", "object", "embed")
        for key, value in attrs.items():
            assert not re.match(r"\s*(https?:|//|javascript:)", value or ""), (tag, key, value)
    assert "url(" not in page and "@import" not in page
    # "http" only inside the (escaped) text models and users wrote
    escaped = ("llava @ http://host/v1", "see http://evil.example")
    stripped = page
    for text in escaped:
        stripped = stripped.replace(text, "")
    assert "http" not in stripped
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_renders_without_optional_sections():
    page = render_html(synthetic_result(pope=False, dataset=False, misses=False))
    assert "<h2>Summary" in page and "<h2>Accuracy vs severity" in page
    for absent in ("POPE", "<h2>Dataset", "<h2>Misses"):
        assert absent not in page
    only_pope = render_html({"models": ["m"], "pope": synthetic_result()["pope"] | {}})
    assert "<h2>POPE" in only_pope and "<h2>Summary" not in only_pope and "<img" not in only_pope


def test_to_json_safe():
    result = synthetic_result()
    result["config"]["levels"] = (np.float32(0.5), np.int64(3))
    result["config"]["ratio"] = float("nan")
    result["config"]["limit"] = float("inf")
    safe = to_json_safe(result)
    back = json.loads(json.dumps(safe, allow_nan=False))
    image = back["misses"][MODELS[0]][0]["image"]
    assert image.startswith("data:image/png;base64,")
    assert back["config"]["levels"] == [0.5, 3] and back["config"]["ratio"] is None is back["config"]["limit"]
    assert back["shifts"][0]["results"]["default"][3]["accuracy"] == 0.41
    assert isinstance(result["misses"][MODELS[0]][0]["image"], Image.Image)  # the input is untouched
    with pytest.raises(TypeError, match="object"):
        to_json_safe({"x": object()})


def test_page_loads_clean_in_chromium(tmp_path):
    html = write_html(synthetic_result(), tmp_path / "report" / "report.html")
    check = screenshot(html, tmp_path / "report.png")
    assert check["console_errors"] == []
    assert check["images"] == 3 + 2 + MAX_MISSES and check["broken_images"] == 0
    shot = Image.open(check["png"])
    assert shot.width == 1200 and shot.height > 2000  # the full page, not the first screen


def test_screenshot_reports_broken_pages(tmp_path):
    """The check can fail: a broken image and a script error are both reported."""
    bad = tmp_path / "bad.html"
    bad.write_text('<img src="data:image/png;base64,AAAA"><script>console.error("boom")</script>')
    check = screenshot(bad, tmp_path / "bad.png")
    assert check["broken_images"] == 1 and check["images"] == 1
    assert any("boom" in e for e in check["console_errors"])
