"""In-context learning suite: the renaming is a bijection into made-up words, applied to questions and
answers alike; examples come from train, before the query, with different answers; a learner that
reads the examples succeeds where they show the answer, and a guesser stays at chance."""

import hashlib

import numpy as np
import pytest

from vislang.data.real import FASHION_LABELS
from vislang.data.world.palette import BACKGROUNDS, COLORS
from vislang.eval.icl import (
    WORDS,
    build_items,
    cell,
    evaluate_icl,
    format_icl,
    icl_answer,
    icl_conversations,
    icl_tasks,
    rename_text,
    renaming,
)
from vislang.eval.normalize import FASHION_ALIASES, NO, WORD_TO_DIGIT, YES

ENGLISH = set(COLORS) | {w for b in BACKGROUNDS for w in b.split()} | set(FASHION_LABELS)
ENGLISH |= {a for aliases in FASHION_ALIASES.values() for a in aliases}
ENGLISH |= set("black white gray grey brown pink cyan magenta violet gold silver beige navy teal".split())
ENGLISH |= set("shoe boot sock hat cap scarf skirt jacket vest sweater shorts glove belt".split())


def image_key(image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def turns(messages: list[dict]) -> list[tuple[object, str | None]]:
    """(image, answer shown after it, None for the query), in order, from either layout."""
    out = []
    for m in messages:
        if m["role"] == "assistant":
            out[-1] = (out[-1][0], m["content"])
            continue
        for part in m["content"]:
            if part["type"] == "image":
                out.append((part["image"], None))
            elif out and "A: " in part["text"] and part["text"].endswith("\n"):  # interleaved "Q: .. A: x"
                out[-1] = (out[-1][0], part["text"].rsplit("A: ", 1)[1].strip())
    return out


def listed_words(messages: list[dict]) -> list[str]:
    text = next(p["text"] for p in messages[0]["content"] if p["type"] == "text")
    return text.split("names: ")[1].split(".")[0].split(", ")


def dominant_color(image) -> str:
    """The palette colour nearest the mean of the saturated pixels (the objects, not the background)."""
    rgb = np.asarray(image.reduce(4), dtype=np.float64).reshape(-1, 3)  # a quarter side: enough pixels
    vivid = rgb[rgb.max(axis=1) - rgb.min(axis=1) > 80].mean(axis=0)
    return min(COLORS, key=lambda c: float(((np.array(COLORS[c]) - vivid) ** 2).sum()))


class ColorLearner:
    """Answers with the word of the example whose image has the query's colour; without one, a
    pseudo-random listed word. It reads only what the prompt shows."""

    def chat(self, messages, max_new_tokens=8):
        *examples, (query, _) = turns(messages)
        want = dominant_color(query)
        for image, answer in examples:
            if dominant_color(image) == want:
                return f"It is {answer}."
        words = listed_words(messages)
        return words[int(image_key(query), 16) % len(words)]


class FixedWord:
    def __init__(self, word: str):
        self.word = word

    def chat(self, messages, max_new_tokens=8):
        return self.word


def test_renaming_is_a_seeded_bijection_into_made_up_words():
    assert len(set(WORDS)) == len(WORDS)
    assert not (set(WORDS) & (ENGLISH | YES | NO | set(WORD_TO_DIGIT)))
    for task in icl_tasks():
        mapping = renaming(task, seed=3)
        assert len(set(mapping.values())) == len(mapping)  # one word per label, one label per word
        assert set(mapping.values()) <= set(WORDS)
        assert renaming(task, seed=3) == mapping
        assert renaming(task, seed=4) != mapping
    assert set(renaming("colors")) == set(COLORS)
    assert set(renaming("garments")) == set(FASHION_LABELS)


def test_rename_text_replaces_whole_labels_only():
    mapping = {"red": "dax", "shirt": "wug", "t-shirt": "fep", "ankle boot": "zorp"}
    assert rename_text("How many red objects are there?", mapping) == "How many dax objects are there?"
    assert rename_text("A Red t-shirt, a shirt, an ankle boot.", mapping) == "A dax fep, a wug, an zorp."
    assert rename_text("reddish shirts", mapping) == "reddish shirts"


@pytest.mark.parametrize("task", ["colors", "garments"])
@pytest.mark.parametrize("layout", ["turns", "interleaved"])
def test_examples_come_first_with_invented_answers_and_other_images(task, layout):
    mapping = renaming(task)
    items = build_items(task, 4, 12, seed=0, layout=layout)
    for item in items:
        shown = turns(item.messages)
        assert len(shown) == 5 and shown[-1][1] is None  # four solved examples, then the query
        assert [answer for _, answer in shown[:-1]] == item.shown
        assert set(item.shown) <= set(mapping.values()) and item.answer in mapping.values()
        assert len(set(item.shown)) == 4  # different answers while labels last
        assert item.query_id.split("-")[1] == "test"
        assert all(i.split("-")[1] == "train" for i in item.example_ids)
        assert image_key(shown[-1][0]) not in {image_key(image) for image, _ in shown[:-1]}
        text = " ".join(
            p["text"] if isinstance(p, dict) else p
            for m in item.messages
            for p in (m["content"] if isinstance(m["content"], list) else [m["content"]])
            if isinstance(p, str) or p["type"] == "text"
        ).lower()
        assert not any(f" {label} " in f" {text} " for label in mapping)  # no real label anywhere


def test_answers_follow_the_renaming_of_the_true_label():
    from vislang.data.world import generate_sample

    mapping, inverse = renaming("garments"), {w: label for label, w in renaming("garments").items()}
    item = build_items("garments", 2, 1)[0]
    query = generate_sample("fashion", "test", 0, int(item.query_id.rsplit("-", 1)[1]))
    assert item.answer == mapping[query.answer]
    for example_id, word in zip(item.example_ids, item.shown, strict=True):
        example = generate_sample("fashion", "train", 0, int(example_id.rsplit("-", 1)[1]))
        assert inverse[word] == example.answer


def test_reproducible_and_more_shots_only_add():
    a, b = build_items("colors", 4, 6, seed=1), build_items("colors", 4, 6, seed=1)
    assert [i.example_ids for i in a] == [i.example_ids for i in b]
    assert [image_key(turns(i.messages)[-1][0]) for i in a] == [
        image_key(turns(i.messages)[-1][0]) for i in b
    ]
    two = build_items("colors", 2, 6, seed=1)
    assert [i.example_ids for i in two] == [i.example_ids[:2] for i in a]
    assert [i.example_ids for i in build_items("colors", 4, 6, seed=2)] != [i.example_ids for i in a]
    zero = icl_conversations("colors", 0, 6, seed=1)
    assert all(len(messages) == 1 for messages, _ in zero)
    assert [answer for _, answer in zero] == [i.answer for i in a]


def test_a_learner_that_reads_the_examples_succeeds_where_they_show_the_answer():
    result = evaluate_icl(ColorLearner(), tasks="colors", shots=(0, 4, 8), n=48, progress=False)
    cells = result["tasks"]["colors"]
    assert result["chance"]["colors"] == pytest.approx(1 / 6)
    lo, hi = cells[0]["ci"]
    assert cells[0]["covered"] == 0 and lo <= 1 / 6 <= hi  # a guess among six words
    assert cells[4]["accuracy_covered"] == 1.0 and 0.5 < cells[4]["covered"] < 0.85  # 4 of 6 colours shown
    assert cells[8]["covered"] == 1.0 and cells[8]["accuracy"] == 1.0
    lo, hi = cells[4]["ci"]
    assert lo <= cells[4]["accuracy"] <= hi
    inter = evaluate_icl(
        ColorLearner(), tasks="colors", shots=(8,), n=12, progress=False, layout="interleaved"
    )
    assert inter["tasks"]["colors"][8]["accuracy"] == 1.0


def test_a_fixed_word_scores_its_share_of_the_answers():
    answers = [answer for _, answer in icl_conversations("garments", 1, 30)]
    word = max(sorted(set(answers)), key=answers.count)
    result = evaluate_icl(FixedWord(word), tasks=["garments"], shots=(1,), n=30, progress=False)
    cell_ = result["tasks"]["garments"][1]
    assert cell_["accuracy"] == answers.count(word) / 30
    assert cell_["in_vocab"] == 1.0
    real = evaluate_icl(FixedWord("red"), tasks="colors", shots=(0,), n=6, progress=False)
    assert real["tasks"]["colors"][0]["accuracy"] == 0.0  # the real word is no answer


def test_scoring_golden_case():
    words = ["dax", "wug", "fep"]
    replies = ["Dax.", "It is a wug", "red", "fep or wug", "daxes", "wug"]
    answers = ["dax", "wug", "fep", "fep", "dax", "fep"]
    got = [icl_answer(r, words) for r in replies]
    assert got == ["dax", "wug", None, "fep", "dax", "wug"]
    shown = [["dax"], ["dax"], [], ["fep", "wug"], ["wug"], ["fep"]]
    rows = [
        {"answer": a, "reply": r, "correct": g == a, "in_vocab": g is not None, "covered": a in s}
        for r, g, a, s in zip(replies, got, answers, shown, strict=True)
    ]
    c = cell(rows)
    assert c["n"] == 6 and c["accuracy"] == pytest.approx(4 / 6)
    assert c["in_vocab"] == pytest.approx(5 / 6)
    assert c["covered"] == pytest.approx(3 / 6) and c["accuracy_covered"] == pytest.approx(2 / 3)
    assert c["misses"] == [{"answer": "fep", "reply": "red"}, {"answer": "fep", "reply": "wug"}]


def test_format_and_limits():
    result = evaluate_icl(FixedWord("dax"), tasks="colors", shots=(0, 2), n=4, progress=False)
    table = format_icl(result)
    assert "colors" in table and "k=2" in table and "16.7%" in table

    class FewImages(FixedWord):
        max_images = 2

    with pytest.raises(ValueError, match="3 images"):
        evaluate_icl(FewImages("dax"), tasks="colors", shots=(2,), n=2, progress=False)
    with pytest.raises(ValueError, match="unknown icl task"):
        icl_conversations("shapes", 1, 1)
    with pytest.raises(ValueError, match="k must be"):
        icl_conversations("colors", 49, 1)
    with pytest.raises(ValueError, match="layout"):
        icl_conversations("colors", 1, 1, layout="grid")


def test_a_real_chat_model_reads_both_layouts_through_the_engine(tmp_path):
    import vislang
    from qwen_tiny import qwen_folder
    from vislang.eval.runner import EngineRunner

    qwen_folder(tmp_path)
    with EngineRunner(vislang.load(tmp_path), max_batch=4) as runner:
        for layout in ("turns", "interleaved"):
            result = evaluate_icl(runner, tasks="colors", shots=(0, 4), n=2, progress=False, layout=layout)
            assert [result["tasks"]["colors"][k]["n"] for k in (0, 4)] == [2, 2]


def test_cli_runs_the_suite_and_writes_json(tmp_path, monkeypatch, capsys):
    import json

    from vislang.cli import main
    from vislang.eval import cli

    monkeypatch.setattr(cli, "load_models", lambda args: {"learner": ColorLearner()})
    out = tmp_path / "icl.json"
    argv = ["eval", "icl", "--tasks", "colors", "--shots", "0,8", "--n", "12", "--json", str(out)]
    assert main(argv) == 0
    assert "learner" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["tasks"]["colors"]["8"]["accuracy"] == 1.0  # JSON keys: k as text
