"""Object hallucination in POPE's protocol (Li et al. 2023) on the visual world.

POPE asks "Is there a {object} in the image?" about objects that are there (answer yes) and as many
that are not (answer no), and measures how often a model says yes to what it does not see. On the
world an object is a color + shape pair, "a red circle". The absent pairs are drawn three ways:

    random       uniformly among the pairs absent from the image
    popular      the absent pairs present in the most images of the evaluated set
    adversarial  absent pairs one attribute away from a present object ("a blue circle" or "a red
                 square" beside a red circle), those co-occurring most with the present pairs first

The world draws colors and shapes independently and uniformly, so "popular" differs from "random"
only by the sampling noise of the image set. "adversarial" is the telling one here: a yes to it is
a binding error, the right color or the right shape seen, attached to the wrong partner.

    from vislang.eval.pope import evaluate_pope
    report = evaluate_pope(model, n_images=100)
    report["settings"]["adversarial"]  # {"n", "accuracy", "precision", "recall", "f1", "yes_ratio", ...}

Scenes come from their own streams (sample_rng of the name "pope"), apart from every family's, and
the "test" split by default. Like POPE, an image is used only when it has at least `per_image`
distinct pairs, so each image carries as many yes questions as no questions in every setting.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image

from vislang.data.world import palette as P
from vislang.data.world.paraphrases import with_articles
from vislang.data.world.sample import SPLITS, WorldConfig, sample_rng
from vislang.data.world.scene import MAX_SCENES, Scene, draw_scene, sample_scene

from .metrics import rate
from .normalize import extract_yes_no
from .world import ask_all

SETTINGS = ("random", "popular", "adversarial")
STREAM = "pope"  # the name in sample_rng's seed material: no family draws from these streams

Pair = tuple[str, str]  # (color, shape)
# every pair in palette order, colors first: the order that breaks ties in the rankings
ALL_PAIRS: tuple[Pair, ...] = tuple((c, s) for c in P.COLORS for s in P.SHAPES)
ORDER = {pair: k for k, pair in enumerate(ALL_PAIRS)}


@dataclass(frozen=True)
class PopeItem:
    image: Image.Image  # one image per scene, shared by all its items
    question: str
    answer: str  # "yes" or "no"
    setting: str
    pair: Pair  # the pair asked about
    image_id: str
    present: tuple[Pair, ...]  # every pair in the image, palette order


def pope_question(pair: Pair) -> str:
    color, shape = pair
    return with_articles(f"Is there a {color} {shape} in the image?")


def present_pairs(scene: Scene) -> tuple[Pair, ...]:
    found = {(o.color, o.shape) for o in scene.objects}
    return tuple(p for p in ALL_PAIRS if p in found)


def image_id(split: str, seed: int, index: int) -> str:
    return f"{STREAM}-{split}-{seed}-{index}"


# ---- scenes and the pairs to ask about --------------------------------------------------------------


def _check(n_images: int, split: str, settings: tuple[str, ...], per_image: int) -> None:
    if split not in SPLITS or split == "train":
        raise ValueError(
            f"split must be 'test' or 'val' (the training streams are what a model saw), got {split!r}"
        )
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings or len(set(settings)) != len(settings):
        raise ValueError(f"settings must be distinct names among {SETTINGS}, got {tuple(settings)}")
    # a scene holds at most MAX_OBJECTS objects, so at most that many distinct present pairs
    if not 1 <= per_image <= P.MAX_OBJECTS:
        raise ValueError(f"per_image must be in [1, {P.MAX_OBJECTS}], got {per_image}")


def pope_scene(rng: np.random.Generator, per_image: int, cfg: WorldConfig) -> Scene:
    """Scenes from the stream until one has at least `per_image` distinct pairs (POPE too keeps
    only images with enough objects to ask about)."""
    for _ in range(MAX_SCENES):
        scene = sample_scene(rng, cfg.width, cfg.height)
        if len(present_pairs(scene)) >= per_image:
            return scene
    raise RuntimeError(f"no scene with {per_image} distinct pairs in {MAX_SCENES} draws")


def pope_scenes(
    n_images: int, seed: int = 0, split: str = "test", per_image: int = 3, cfg: WorldConfig | None = None
) -> list[Scene]:
    """The evaluated scenes: scene i comes from stream i alone, the same whatever n_images is."""
    _check(n_images, split, SETTINGS, per_image)
    cfg = cfg or WorldConfig()
    return [pope_scene(sample_rng(STREAM, split, seed, i), per_image, cfg) for i in range(n_images)]


def draw(rng: np.random.Generator, pool: list[Pair], k: int) -> list[Pair]:
    """k distinct pairs of the pool, uniformly."""
    return [pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False)]


def one_attribute_away(pair: Pair, present: tuple[Pair, ...]) -> bool:
    """Does pair share exactly one of color and shape with some present pair?"""
    return any((pair[0] == c) + (pair[1] == s) == 1 for c, s in present)


def popular_negatives(present: tuple[Pair, ...], frequency: Counter, k: int) -> list[Pair]:
    """The k absent pairs found in the most images of the set; ties in palette order."""
    absent = [p for p in ALL_PAIRS if p not in present]
    return sorted(absent, key=lambda p: (-frequency[p], ORDER[p]))[:k]


def adversarial_negatives(
    present: tuple[Pair, ...], frequency: Counter, together: dict[Pair, Counter], k: int
) -> list[Pair]:
    """The k absent pairs one attribute away from a present one, ranked as POPE ranks its
    adversarial objects: by how many images of the set show them with the present pairs (summed over
    the present pairs), then by frequency, then palette order."""
    near = [p for p in ALL_PAIRS if p not in present and one_attribute_away(p, present)]
    if len(near) < k:  # never at spec sizes: one pair alone has 9 neighbours
        raise RuntimeError(f"only {len(near)} pairs one attribute away from {present}, {k} wanted")
    score = {p: sum(together[q][p] for q in present) for p in near}
    return sorted(near, key=lambda p: (-score[p], -frequency[p], ORDER[p]))[:k]


def pope_items(
    n_images: int,
    seed: int = 0,
    split: str = "test",
    settings: tuple[str, ...] = SETTINGS,
    per_image: int = 3,
    cfg: WorldConfig | None = None,
) -> dict[str, list[PopeItem]]:
    """Per setting, image by image: `per_image` questions about present pairs (the same in every
    setting), then `per_image` about absent pairs drawn the setting's way.

    Each image's stream also draws its positives and random negatives, whichever settings are
    asked, so asking fewer settings changes none of the others' items. Popular and adversarial
    negatives rank pairs over the evaluated set, so they depend on n_images, as POPE's depend on
    its dataset.
    """
    settings = tuple(settings)
    _check(n_images, split, settings, per_image)
    cfg = cfg or WorldConfig()
    images, presents, positives, randoms = [], [], [], []
    for i in range(n_images):
        rng = sample_rng(STREAM, split, seed, i)
        scene = pope_scene(rng, per_image, cfg)
        present = present_pairs(scene)
        images.append(draw_scene(scene))
        presents.append(present)
        positives.append(draw(rng, list(present), per_image))
        randoms.append(draw(rng, [p for p in ALL_PAIRS if p not in present], per_image))

    frequency = Counter(p for present in presents for p in present)  # images showing each pair
    together: dict[Pair, Counter] = {p: Counter() for p in ALL_PAIRS}  # images showing both
    for present in presents:
        for p in present:
            together[p].update(q for q in present if q != p)

    items: dict[str, list[PopeItem]] = {s: [] for s in settings}
    for i, (image, present) in enumerate(zip(images, presents)):
        negatives = {
            "random": randoms[i],
            "popular": popular_negatives(present, frequency, per_image),
            "adversarial": adversarial_negatives(present, frequency, together, per_image),
        }
        for setting in settings:
            for pair, answer in [(p, "yes") for p in positives[i]] + [(p, "no") for p in negatives[setting]]:
                item = PopeItem(
                    image, pope_question(pair), answer, setting, pair, image_id(split, seed, i), present
                )
                items[setting].append(item)
    return items


# ---- metrics --------------------------------------------------------------------------------------


def pope_metrics(predictions: list[str], answers: list[str]) -> dict:
    """POPE's metrics with "yes" as the positive class.

    A reply is read with extract_yes_no. One that says neither yes nor no is "unanswered": wrong for
    accuracy, and, never being a yes, it is no positive prediction, so on a yes question it is a
    false negative (recall drops) and on a no question it touches neither precision nor recall.
    POPE's own script reads any reply without "no" or "not" as yes; here silence earns no credit
    either way, and "unanswered" says how much of it there was. Rates with nothing to measure are
    None; F1 is 2TP / (2TP + FP + FN), 0 rather than undefined when no yes is right.
    """
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    wrong = sorted({a for a in answers if a not in ("yes", "no")})
    if wrong:
        raise ValueError(f"answers must be 'yes' or 'no', got {wrong}")
    said = [extract_yes_no(str(p)) for p in predictions]
    pairs = list(zip(said, answers))
    tp = sum(s == "yes" and a == "yes" for s, a in pairs)
    fp = sum(s == "yes" and a == "no" for s, a in pairs)
    tn = sum(s == "no" and a == "no" for s, a in pairs)
    fn = sum(s != "yes" and a == "yes" for s, a in pairs)
    n = len(pairs)
    return {
        "n": n,
        "accuracy": rate(tp + tn, n),
        "precision": rate(tp, tp + fp),
        "recall": rate(tp, tp + fn),
        "f1": rate(2 * tp, 2 * tp + fp + fn),
        "yes_ratio": rate(said.count("yes"), n),
        "unanswered": said.count(None),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


# ---- evaluation -----------------------------------------------------------------------------------


def evaluate_pope(
    model,
    n_images: int = 100,
    seed: int = 0,
    split: str = "test",
    settings: tuple[str, ...] = SETTINGS,
    per_image: int = 3,
    batch_size: int = 16,
    progress: bool = True,
    max_new_tokens: int = 8,
    misses: int = 12,
    cfg: WorldConfig | None = None,
) -> dict:
    """Ask every item and score each setting with pope_metrics.

    A question that several settings share (the positives, a pair drawn twice) is asked once and its
    reply scored in each. "misses" holds up to `misses` wrong replies, taken from the settings in
    turn, each with its PIL image under "image" (not JSON: the caller converts or drops it).
    """
    t0 = time.perf_counter()
    settings = tuple(settings)
    items = pope_items(n_images, seed, split, settings, per_image, cfg)
    asked: dict[tuple[str, str], int] = {}  # (image_id, question) -> index of its conversation
    conversations = []
    for item in (item for setting in settings for item in items[setting]):
        key = (item.image_id, item.question)
        if key not in asked:
            asked[key] = len(conversations)
            content = [{"type": "image", "image": item.image}, {"type": "text", "text": item.question}]
            conversations.append([{"role": "user", "content": content}])
    replies = ask_all(model, conversations, [max_new_tokens] * len(conversations), batch_size, progress)

    def reply(item: PopeItem) -> str:
        return replies[asked[(item.image_id, item.question)]]

    report_settings = {
        s: pope_metrics([reply(it) for it in items[s]], [it.answer for it in items[s]]) for s in settings
    }
    wrong = [[it for it in items[s] if extract_yes_no(reply(it)) != it.answer] for s in settings]
    picked, seen = [], set()
    for turn in range(max((len(w) for w in wrong), default=0)):
        for w in wrong:  # one per setting in turn, so every setting shows its kind of miss
            key = (w[turn].image_id, w[turn].question) if turn < len(w) else None
            if key is not None and key not in seen and len(picked) < misses:
                seen.add(key)
                picked.append(w[turn])
    return {
        "settings": report_settings,
        "misses": [
            {
                "setting": it.setting,
                "question": it.question,
                "answer": it.answer,
                "prediction": reply(it),
                "image_id": it.image_id,
                "present": [f"{c} {s}" for c, s in it.present],
                "image": it.image,
            }
            for it in picked
        ],
        "config": {
            "n_images": n_images,
            "seed": seed,
            "split": split,
            "settings": list(settings),
            "per_image": per_image,
            "max_new_tokens": max_new_tokens,
            "items": {s: len(items[s]) for s in settings},
            "questions": len(conversations),
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }
