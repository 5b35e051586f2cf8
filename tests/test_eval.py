"""vislang.eval: answer normalization and extraction, metrics, and world evaluation with fake models."""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass

import pytest

import vislang
from vislang.eval import (
    build_samples,
    evaluate_world,
    extract,
    format_report,
    grounding,
    iou,
    normalize,
    reasoning_attribution,
    score,
    write_report,
)
from vislang.eval.cli import add_eval_parser
from vislang.eval.normalize import CANDIDATES, NUMBER_WORDS, answer_type

# ---- normalization and extraction: golden cases ----------------------------------------------------

NORMALIZE = [
    ("The Answer is: Three!", "answer is 3"),
    ("It's a circle.", "it is circle"),
    ("$17.85.", "17.85"),
    ("[12, 40, 300, 310]", "[12, 40, 300, 310]"),
    ("Box: [ 12 ,40,300 , 310 ].", "box [12, 40, 300, 310]"),
    ("top-left", "top left"),
    ("An apple, a pear and the fig", "apple pear and fig"),
    ("1,000 objects", "1000 objects"),
    ("Isn\u2019t it?", "is not it"),
    ("dont", "do not"),
    ("Twenty", "20"),
    ("T-Shirt", "t shirt"),
]

EXTRACT = [
    ("Yes, there is a red circle.", "exist", "yes"),
    ("No, there isn't.", "exist", "no"),
    ("There is not a red circle.", "exist", None),  # "not" is no "no"
    ("I don't know.", "exist", None),  # nor is "know"
    ("Nope.", "exist", "no"),
    ("There are three objects.", "count_all", "3"),
    ("There are no red objects.", "count_color", "0"),
    ("None.", "count_color", "0"),
    ("I count 4 circles.", "count_shape", "4"),
    ("twelve", "count_all", "12"),
    ("It is at the top left.", "where", "top left"),
    ("It's in the upper-right corner", "where", "top right"),
    ("In the middle of the image.", "where", "center"),
    ("On the left side.", "where", "left"),
    ("The star is at the bottom.", "where", "bottom"),
    ("Low in the image: the bottom right corner.", "where", "bottom right"),  # the longest mention wins
    ("This is an ankle boot.", "fashion", "ankle boot"),
    ("A pair of boots.", "fashion", "ankle boot"),
    ("It looks like a T-shirt.", "fashion", "t-shirt"),
    ("It is a shirt.", "fashion", "shirt"),
    ("Trousers.", "fashion", "trouser"),
    ("The object is blue.", "color", "blue"),
    ("It is a hexagon.", "shape", "hexagon"),
    ("It is large.", "size", "large"),
    ("The star moves upwards.", "direction", "up"),
    ("The box is [12, 40, 300, 310].", "ground", "[12, 40, 300, 310]"),
    ("box: 12, 40, 300, 310", "ground", "[12, 40, 300, 310]"),
    ("(12,40),(300,310)", "ground", "[12, 40, 300, 310]"),
    ("[0.012, 0.04, 0.3, 0.31]", "ground", "[12, 40, 300, 310]"),
    ("The box [x1, y1, x2, y2] is [12, 40, 300, 310]", "ground", "[12, 40, 300, 310]"),
    ("I can't tell.", "ground", None),
    ("This is the digit 7.", "digit", "7"),
    ("Seven.", "digit", "7"),
    ("The total is $84.01.", "total", "84.01"),
]

SCORE = [
    ("Yes, it is.", "yes", "exist", True),
    ("No.", "yes", "more", False),
    ("Not really.", "no", "exist", False),
    ("I know it is.", "no", "same_color", False),
    ("There are no stars; none at all.", "0", "count_shape", True),
    ("There are three objects.", "3", "count_all", True),
    ("3 objects", "4", "count_all", False),
    ("The answer is 2.", "2", "count_not", True),
    ("It is at the top left.", "top left", "where", True),
    ("It is at the top left.", "top", "where", False),
    ("It is at the top.", "top left", "where", False),
    ("It's an ankle boot.", "ankle boot", "fashion", True),
    ("It is a boot", "ankle boot", "fashion", True),
    ("It is a T-shirt.", "shirt", "fashion", False),
    ("It is a shirt.", "t-shirt", "fashion", False),
    ("It is blue, not red.", "blue", "color", True),
    ("The box is [12, 40, 300, 310].", "[12, 40, 300, 310]", "ground", True),
    ("[20, 50, 310, 320]", "[12, 40, 300, 310]", "ground", True),
    ("[400, 400, 600, 600]", "[12, 40, 300, 310]", "ground", False),
    ("The square.", "[12, 40, 300, 310]", "ground", False),
    ('The sign says "FRONT".', "front", "sign", True),
    ("The sign says FRONTIER.", "front", "sign", False),
    ("The red triangle moved to the top.", "the red triangle moved to the top", "change", True),
    ("The red triangle moved to the top left.", "the red triangle moved to the top", "change", False),
    ("The total is 84.01 dollars", "84.01", "total", True),
    ("The total is 84.10", "84.01", "total", False),
    ("The tallest bar is A.", "a", "tallest", True),
    ("Bar B.", "a", "tallest", False),
    ("Phone: 555-8175", "555-8175", "field", True),
    ("The digit is 7.", "7", "digit", True),
    ("17", "7", "digit", False),
    ("Yes, definitely.", "yes", "some_new_qtype", True),  # unknown qtypes: typed by the answer
    ("It is 5.", "5", "some_new_qtype", True),
    (
        "Sure! Three objects: a small blue square at the top left, a large red circle in the center, "
        "and a small yellow star at the bottom right.",
        "Three objects: a small blue square at the top left, a large red circle in the center, "
        "and a small yellow star at the bottom right.",
        "caption",
        True,
    ),
    (
        "Two objects: a small blue square at the top left and a large red circle at the bottom.",
        "Two objects: a small blue square at the top left and a large red circle at the bottom left.",
        "caption",
        False,
    ),
]


@pytest.mark.parametrize("text, expected", NORMALIZE)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("prediction, qtype, expected", EXTRACT)
def test_extract(prediction, qtype, expected):
    assert extract(prediction, qtype) == expected


@pytest.mark.parametrize("prediction, answer, qtype, expected", SCORE)
def test_score(prediction, answer, qtype, expected):
    assert score(prediction, answer, qtype) is expected


def test_extract_with_own_candidates():
    assert extract("It is crimson, almost red.", "anything", ["red", "green"]) == "red"
    assert extract("The tall one is bar Pears.", "tallest", {"apples": [], "pears": ["pear"]}) == "pears"


# ---- metrics ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 1 / 3),
        ([0, 0, 10, 10], [2, 2, 4, 4], 0.04),
        ([0, 0, 10, 10], [10, 10, 20, 20], 0.0),
        ([5, 5, 5, 5], [5, 5, 5, 5], 0.0),
    ],
)
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


def test_grounding_and_attribution_by_hand():
    g = grounding([1.0, 0.5, 0.49, 0.0])
    assert g["n"] == 4 and g["acc@0.5"] == 0.5 and g["mean_iou"] == pytest.approx(0.4975)
    right, wrong = {"correct": True}, {"correct": False}
    rows = [
        {"correct": True, "probes": [right, right]},
        {"correct": False, "probes": [right, right]},  # reasoning error
        {"correct": False, "probes": [right, wrong]},  # perception error
        {"correct": False, "probes": [wrong, wrong]},  # perception error
    ]
    r = reasoning_attribution(rows)
    assert (r["accuracy"], r["reasoning_errors"], r["perception_errors"]) == (0.25, 1, 2)
    assert r["reasoning_error_rate"] == 0.25 and r["perception_error_rate"] == 0.5
    assert r["probe_accuracy"] == 5 / 8
    assert reasoning_attribution([])["accuracy"] is None


# ---- fake models over the world -------------------------------------------------------------------


@dataclass
class Reply:
    text: str

    def __str__(self) -> str:
        return self.text


def image_key(images) -> str:
    return hashlib.sha1(b"".join(im.tobytes() for im in images)).hexdigest()


def sentence(qtype: str, answer: str) -> str:
    """The answer in a full sentence, as a chatty model would give it."""
    kind = answer_type(qtype, answer)
    if kind == "yesno":
        return "Yes, it is." if answer == "yes" else "No, it is not."
    if kind == "number":
        k = float(answer)
        return f"The answer is {NUMBER_WORDS[int(k)] if k.is_integer() and k <= 20 else answer}."
    if kind == "box":
        return f"The box is {answer}."
    if qtype == "where":
        return f"It is at the {answer}."
    if qtype == "fashion":
        return f"This is a {answer}."
    if qtype in CANDIDATES:
        return f"I think it is {answer}."
    if qtype in ("sign", "sign_position"):
        return f'The sign says "{answer.upper()}".'
    return f"Sure. {answer[:1].upper()}{answer[1:]}."


def wrong(qtype: str, answer: str) -> str:
    kind = answer_type(qtype, answer)
    if kind == "yesno":
        return "no" if answer == "yes" else "yes"
    if kind == "number":
        return str(float(answer) + 1)
    if kind == "box":
        far = [0, 0, 10, 10]
        return "[990, 990, 1000, 1000]" if iou(far, json.loads(answer)) > 0 else str(far)
    if qtype in CANDIDATES:
        options = list(CANDIDATES[qtype])
        return options[(options.index(answer) + 1) % len(options)]
    return "nothing at all"


class WorldFake:
    """Reads the ground truth of each conversation's images; `right(role)` says whether to answer
    right, role being "perception"/"reasoning" (a sample's own question, by kind) or "probe"."""

    def __init__(self, samples, right=lambda role: True):
        self.table = {image_key(s.images): s for s in samples}
        self.right = right
        self.calls = 0
        self.budgets = {}  # qtype -> the max_new_tokens values it was asked with
        self.kinds = set()  # (family, the media part types it was shown)

    def answer(self, messages, max_new_tokens: int) -> str:
        parts = messages[0]["content"]
        question = parts[-1]["text"]
        images = [
            im for p in parts if p["type"] != "text" for im in ([p["image"]] if "image" in p else p["video"])
        ]
        sample = self.table[image_key(images)]
        self.kinds.add((sample.family, tuple(p["type"] for p in parts[:-1])))
        probe = next((p for p in sample.probes if p["question"] == question), None)
        qtype, answer = (probe["qtype"], probe["answer"]) if probe else (sample.qtype, sample.answer)
        role = "probe" if probe else sample.kind
        self.budgets.setdefault(qtype, set()).add(max_new_tokens)
        return sentence(qtype, answer if self.right(role) else wrong(qtype, answer))

    def chat(self, messages, max_new_tokens=24):
        self.calls += 1
        return Reply(self.answer(messages, max_new_tokens))


class BatchedWorldFake(WorldFake):
    def __init__(self, samples, right=lambda role: True):
        super().__init__(samples, right)
        self.batch_sizes = []

    def chat_batch(self, conversations, max_new_tokens=24):
        self.batch_sizes.append(len(conversations))
        return [Reply(self.answer(m, max_new_tokens)) for m in conversations]


FAMILIES = ("scene", "fashion", "digits")
N = 40


@pytest.fixture(scope="module")
def samples():
    return build_samples(FAMILIES, N, seed=0, split="test")


def run(model, **kw):
    return evaluate_world(model, families=FAMILIES, n=N, seed=0, progress=False, **kw)


def test_oracle_scores_everything(samples):
    model = BatchedWorldFake(samples)
    report = run(model, batch_size=16)
    assert report["overall"]["accuracy"] == 1.0 and report["overall"]["n"] == 3 * N
    for family in FAMILIES:
        assert report["families"][family]["n"] == N
        assert all(q["accuracy"] == 1.0 for q in report["families"][family]["qtypes"].values())
    assert report["perception"]["accuracy"] == 1.0 and report["perception"]["n"] > 0
    r = report["reasoning"]
    assert r["n"] > 0 and r["accuracy"] == 1.0 and r["probe_accuracy"] == 1.0
    assert r["perception_errors"] == r["reasoning_errors"] == 0
    assert report["grounding"]["n"] > 0 and report["grounding"]["acc@0.5"] == 1.0
    assert report["grounding"]["mean_iou"] == 1.0
    assert report["fashion"]["accuracy"] == 1.0 and report["digits"]["accuracy"] == 1.0
    # every question and every probe of a reasoning sample was asked, in batches of at most 16
    assert sum(model.batch_sizes) == report["config"]["questions"] == 3 * N + 2 * r["n"]
    assert max(model.batch_sizes) == 16 and model.calls == 0
    # long answers get a larger token budget than the default 24
    assert model.budgets["caption"] == {128} and model.budgets["ground"] == {48}
    assert model.budgets["count_all"] == model.budgets["digit"] == {24}


def test_oracle_with_heldout_paraphrases(samples):
    model = WorldFake(samples)  # no chat_batch: one chat call per question
    report = run(model, paraphrase="heldout")
    assert report["overall"]["accuracy"] == 1.0 and model.calls == report["config"]["questions"]
    assert report["config"]["paraphrased"] == 3 * N  # every question re-asked in a held-out wording
    asked = {e["question"] for e in report["examples"]}
    assert not asked & {s.question for s in samples}


def test_oracle_and_antioracle_on_every_family():
    families = ("scene", "text", "multi", "video", "document", "ui", "fashion", "digits")
    samples = build_samples(families, 12, seed=1)
    kw = {"families": families, "n": 12, "seed": 1, "progress": False}
    assert evaluate_world(WorldFake(samples), **kw)["overall"]["accuracy"] == 1.0
    report = evaluate_world(WorldFake(samples, right=lambda role: False), **kw)
    assert report["overall"]["correct"] == 0, [e for e in report["examples"] if e["correct"]]


def test_video_goes_in_as_video_to_models_that_read_it():
    samples = build_samples(("video", "multi"), 6, seed=2)
    kw = {"families": ("video", "multi"), "n": 6, "seed": 2, "progress": False}
    frames = WorldFake(samples)
    assert evaluate_world(frames, **kw)["overall"]["accuracy"] == 1.0
    shown = [kinds for family, kinds in frames.kinds if family == "video"]
    assert shown and all(len(k) >= 4 and set(k) == {"image"} for k in shown)  # frames as images
    reader = WorldFake(samples)
    reader.video_token_id = 7  # as a Qwen2-VL has
    assert evaluate_world(reader, **kw)["overall"]["accuracy"] == 1.0
    assert {kinds for family, kinds in reader.kinds if family == "video"} == {("video",)}
    assert {kinds for family, kinds in reader.kinds if family == "multi"} == {("image", "image")}


def test_perception_wrong_reasoning_right(samples):
    report = run(BatchedWorldFake(samples, right=lambda role: role == "reasoning"))
    r = report["reasoning"]
    assert r["accuracy"] == 1.0 and r["probe_accuracy"] == 0.0
    assert r["perception_error_rate"] == r["reasoning_error_rate"] == 0.0
    assert report["perception"]["accuracy"] == 0.0
    assert report["grounding"]["acc@0.5"] == 0.0 and report["grounding"]["mean_iou"] == 0.0
    assert report["fashion"]["accuracy"] == report["digits"]["accuracy"] == 0.0


def test_perception_right_reasoning_wrong_gives_reasoning_errors(samples):
    report = run(BatchedWorldFake(samples, right=lambda role: role != "reasoning"))
    r = report["reasoning"]
    assert r["accuracy"] == 0.0 and r["probe_accuracy"] == 1.0
    assert r["reasoning_error_rate"] == 1.0 and r["perception_error_rate"] == 0.0
    assert r["reasoning_errors"] == r["n"] > 0
    assert report["perception"]["accuracy"] == 1.0


def test_wrong_probes_give_perception_errors(samples):
    report = run(BatchedWorldFake(samples, right=lambda role: role == "perception"))
    r = report["reasoning"]
    assert r["accuracy"] == 0.0 and r["probe_accuracy"] == 0.0
    assert r["perception_error_rate"] == 1.0 and r["reasoning_error_rate"] == 0.0
    assert r["perception_errors"] == r["n"] > 0
    assert report["perception"]["accuracy"] == 1.0


def test_report_keys_table_and_json(samples, tmp_path):
    report = run(BatchedWorldFake(samples, right=lambda role: role != "probe"))
    keys = {"config", "overall", "families", "perception", "reasoning", "grounding", "fashion", "digits"}
    assert keys | {"examples", "seconds"} <= set(report)
    assert set(report["config"]) >= {"families", "n", "seed", "split", "paraphrase", "questions"}
    assert report["config"]["split"] == "test"
    scene_qtypes = set(report["families"]["scene"]["qtypes"])
    assert {"count_all", "ground"} <= scene_qtypes and scene_qtypes & {"more", "count_not", "above"}
    assert report["families"]["digits"]["qtypes"]["digit"]["n"] == N
    assert 0 < len(report["examples"]) <= 9
    assert set(report["examples"][0]) == {"family", "qtype", "question", "answer", "prediction", "correct"}
    table = format_report(report)
    for needle in ("count_all", "perception (scene)", "reasoning", "grounding Acc@0.5", "fashion", "100.0%"):
        assert needle in table
    path = write_report(report, tmp_path / "out" / "report.json")
    assert json.loads(path.read_text())["overall"] == report["overall"]


def test_training_split_is_refused():
    with pytest.raises(ValueError, match="test"):
        evaluate_world(WorldFake([]), families=("scene",), n=2, split="train", progress=False)
    with pytest.raises(ValueError, match="paraphrase"):
        evaluate_world(WorldFake([]), families=("scene",), n=2, paraphrase="fancy", progress=False)


def test_cli(monkeypatch, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="vislang")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", "world", "--families", "digits,scene", "--n", "6"])
    # no --model and no --endpoint: the default model (the loaded path below is None)
    assert (args.model, args.families, args.n, args.seed, args.paraphrase, args.batch_size, args.out) == (
        None,
        ("digits", "scene"),
        6,
        0,
        "canonical",
        16,
        None,
    )
    loaded = []
    fake = WorldFake(build_samples(("digits", "scene"), 6))
    monkeypatch.setattr(vislang, "load", lambda path, **kw: loaded.append((path, kw)) or fake)
    out = tmp_path / "r.json"
    args = parser.parse_args(["eval", "world", "--families", "digits,scene", "--n", "6", "--out", str(out)])
    assert args.func(args) == 0 and loaded == [(None, {"weights": "fp32", "fuse": True})]
    assert "digits" in capsys.readouterr().out and json.loads(out.read_text())["overall"]["accuracy"] == 1.0
    # several models: one file holding every model's report
    argv = ["eval", "world", "--model", "a", "--model", "b", "--families", "digits", "--n", "3"]
    args = parser.parse_args([*argv, "--out", str(out)])
    assert args.func(args) == 0 and [p for p, _ in loaded[1:]] == ["a", "b"]
    both = json.loads(out.read_text())["models"]
    assert list(both) == ["a", "b"] and all(r["overall"]["accuracy"] == 1.0 for r in both.values())
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "world", "--families", "scene,nope"])
