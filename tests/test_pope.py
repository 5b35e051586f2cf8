"""POPE on the visual world: golden metrics, how the questions are drawn, and evaluation with fake models."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from PIL import Image

from vislang.data.world import palette as P
from vislang.data.world.scene import draw_scene
from vislang.eval.pope import SETTINGS, evaluate_pope, pope_items, pope_metrics, pope_question, pope_scenes

N_IMAGES, K = 30, 3


@pytest.fixture(scope="module")
def items():
    return pope_items(N_IMAGES, seed=0, per_image=K)


def by_image(setting_items):
    groups = {}
    for it in setting_items:
        groups.setdefault(it.image_id, []).append(it)
    return groups


def distance(a, b) -> int:
    return (a[0] != b[0]) + (a[1] != b[1])


# ---- metrics: golden values -----------------------------------------------------------------------


def test_metrics_golden():
    answers = ["yes", "yes", "yes", "yes", "no", "no", "no", "no"]
    predictions = ["Yes.", "Yes, there is one.", "No", "I cannot tell", "no", "Yes", "Nope.", "maybe"]
    # read as:    yes    yes                    no    (none)           no    yes    no        (none)
    # TP = 2 (0, 1), FN = 2 (2 said no, 3 said nothing), FP = 1 (5), TN = 2 (4, 6); 7 is only wrong
    m = pope_metrics(predictions, answers)
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(4 / 8)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))  # = 4/7
    assert m["yes_ratio"] == pytest.approx(3 / 8)
    assert m["unanswered"] == 2
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 2)


def test_metrics_never_yes_and_empty():
    m = pope_metrics(["no", "No.", "none of that"], ["yes", "no", "no"])
    assert m["precision"] is None  # no yes said: nothing to measure
    assert m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["accuracy"] == pytest.approx(1 / 3)  # "none of that" is no "no"
    assert m["unanswered"] == 1
    empty = pope_metrics([], [])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["yes_ratio"] is None


def test_metrics_bad_input():
    with pytest.raises(ValueError, match="predictions for"):
        pope_metrics(["yes"], ["yes", "no"])
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        pope_metrics(["yes"], ["maybe"])


# ---- items ----------------------------------------------------------------------------------------


def test_questions_are_worded_with_articles():
    assert pope_question(("red", "circle")) == "Is there a red circle in the image?"
    assert pope_question(("orange", "star")) == "Is there an orange star in the image?"


def test_items_match_the_scenes(items):
    scenes = pope_scenes(N_IMAGES, seed=0, per_image=K)
    truth = {f"pope-test-0-{i}": {(o.color, o.shape) for o in s.objects} for i, s in enumerate(scenes)}
    for setting in SETTINGS:
        for it in items[setting]:
            present = truth[it.image_id]
            assert set(it.present) == present
            assert (it.pair in present) == (it.answer == "yes")
            assert it.question == pope_question(it.pair) and it.setting == setting
    first = items["random"][0]
    assert first.image.tobytes() == draw_scene(scenes[0]).tobytes()


def test_balanced_per_image_and_setting(items):
    for setting in SETTINGS:
        groups = by_image(items[setting])
        assert len(groups) == N_IMAGES
        for group in groups.values():
            yes = [it.pair for it in group if it.answer == "yes"]
            no = [it.pair for it in group if it.answer == "no"]
            assert len(yes) == len(set(yes)) == K and len(no) == len(set(no)) == K
            assert len({id(it.image) for it in group}) == 1  # one image per scene


def test_positives_shared_across_settings(items):
    positives = {s: [(it.image_id, it.pair) for it in items[s] if it.answer == "yes"] for s in SETTINGS}
    assert positives["random"] == positives["popular"] == positives["adversarial"]


def test_random_negatives_spread(items):
    negatives = [it.pair for it in items["random"] if it.answer == "no"]
    assert len(set(negatives)) > 15  # 90 draws over the 24+ absent pairs of each image


def frequency_and_together(items):
    presents = [group[0].present for group in by_image(items["random"]).values()]
    frequency = Counter(p for present in presents for p in present)
    together = Counter((p, q) for present in presents for p in present for q in present if p != q)
    return frequency, together


def test_popular_negatives_are_the_most_frequent_absent(items):
    frequency, _ = frequency_and_together(items)
    everything = [(c, s) for c in P.COLORS for s in P.SHAPES]
    assert len(set(frequency.values())) > 1  # the ranking has something to rank
    for group in by_image(items["popular"]).values():
        chosen = {it.pair for it in group if it.answer == "no"}
        rest = [p for p in everything if p not in chosen and p not in group[0].present]
        assert min(frequency[p] for p in chosen) >= max(frequency[p] for p in rest)


def test_adversarial_negatives_one_attribute_away(items):
    _, together = frequency_and_together(items)
    everything = [(c, s) for c in P.COLORS for s in P.SHAPES]
    for group in by_image(items["adversarial"]).values():
        present = group[0].present
        chosen = {it.pair for it in group if it.answer == "no"}
        assert all(any(distance(p, q) == 1 for q in present) for p in chosen)
        near = [p for p in everything if p not in present and any(distance(p, q) == 1 for q in present)]
        score = {p: sum(together[(q, p)] for q in present) for p in near}
        assert min(score[p] for p in chosen) >= max(score[p] for p in near if p not in chosen)


def test_reproducible_with_the_seed(items):
    again = pope_items(N_IMAGES, seed=0, per_image=K)
    assert again == items  # images compared pixel by pixel
    other = pope_items(N_IMAGES, seed=1, per_image=K)
    assert [it.present for it in other["random"]] != [it.present for it in items["random"]]
    alone = pope_items(N_IMAGES, seed=0, settings=("random",), per_image=K)
    assert list(alone) == ["random"] and alone["random"] == items["random"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        pope_items(2, split="train")
    with pytest.raises(ValueError, match="settings"):
        pope_items(2, settings=("random", "nonsense"))
    with pytest.raises(ValueError, match="per_image"):
        pope_items(2, per_image=P.MAX_OBJECTS + 1)
    with pytest.raises(ValueError, match="n_images"):
        pope_items(0)


# ---- evaluation with fake models ------------------------------------------------------------------


class AlwaysYes:
    def __init__(self):
        self.calls = 0

    def chat(self, messages, max_new_tokens=8):
        self.calls += 1
        return "Yes, there is."


class Oracle:
    """Answers from the objects of the scene behind each image, found by its pixels; batched."""

    def __init__(self, items):
        self.present = {it.image.tobytes(): set(it.present) for s in items for it in items[s]}
        self.batches = []

    def answer(self, messages) -> str:
        content = messages[0]["content"]
        image = next(part["image"] for part in content if part["type"] == "image")
        text = next(part["text"] for part in content if part["type"] == "text")
        color, shape = re.fullmatch(r"Is there an? (\w+) (\w+) in the image\?", text).groups()
        return "Yes." if (color, shape) in self.present[image.tobytes()] else "No, there is not."

    def chat_batch(self, batch, max_new_tokens=8):
        self.batches.append(len(batch))
        return [self.answer(m) for m in batch]


def test_always_yes():
    model = AlwaysYes()
    report = evaluate_pope(model, n_images=6, progress=False)
    for m in report["settings"].values():
        assert m["yes_ratio"] == 1.0 and m["recall"] == 1.0 and m["precision"] == 0.5
        assert m["accuracy"] == 0.5 and m["f1"] == pytest.approx(2 / 3) and m["n"] == 6 * 2 * 3
    # positives are asked once for all three settings: at most 6 x (3 + 3 x 3) questions
    assert model.calls == report["config"]["questions"] <= 6 * 12
    assert 0 < len(report["misses"]) <= 12
    assert all(m["answer"] == "no" and isinstance(m["image"], Image.Image) for m in report["misses"])
    assert {m["setting"] for m in report["misses"]} == set(SETTINGS)


def test_oracle_is_always_right():
    items = pope_items(8, seed=3, per_image=2)
    model = Oracle(items)
    report = evaluate_pope(model, n_images=8, seed=3, per_image=2, batch_size=5, progress=False)
    for m in report["settings"].values():
        assert m["accuracy"] == 1.0 and m["precision"] == 1.0 and m["recall"] == 1.0
        assert m["yes_ratio"] == 0.5 and m["unanswered"] == 0
    assert report["misses"] == []
    assert max(model.batches) == 5 and sum(model.batches) == report["config"]["questions"]


def test_unparseable_replies_are_unanswered():
    class Mumbles:
        def chat(self, messages, max_new_tokens=8):
            return "I am not sure."

    report = evaluate_pope(Mumbles(), n_images=3, settings=("adversarial",), progress=False)
    m = report["settings"]["adversarial"]
    assert m["unanswered"] == m["n"] == 18 and m["accuracy"] == 0.0
    assert m["yes_ratio"] == 0.0 and m["recall"] == 0.0 and m["precision"] is None
