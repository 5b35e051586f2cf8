"""How every question type is asked: the canonical template, training paraphrases, held-out ones.

Training (cfg.paraphrase) picks among the canonical template and TRAIN. HELD_OUT is for
evaluation only: no generator draws from it, so an evaluation can ask wordings training never saw
(heldout_question). Templates use str.format fields: shape, color, color1, color2, ref, ref1,
ref2, position.
"""

from __future__ import annotations

import re

import numpy as np

CANONICAL: dict[str, str] = {
    # scene, perception
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
    # scene, reasoning
    "more": "Are there more {color1} objects than {color2} objects?",
    "count_not": "How many objects are not {shape}s?",
    "left_of": "Is {ref1} to the left of {ref2}?",
    "above": "Is {ref1} above {ref2}?",
    "same_color": "Do {ref1} and {ref2} have the same color?",
    # text, multi, video
    "sign": "What does the sign say?",
    "sign_position": "What does the {position} sign say?",
    "change": "What changed between the two images?",
    "direction": "Which direction is {ref} moving?",
    "count_moving": "How many objects are moving?",
}

TRAIN: dict[str, tuple[str, ...]] = {
    "count_all": (
        "How many objects are in the image?",
        "How many shapes can you see?",
        "What is the number of objects in the picture?",
    ),
    "count_shape": (
        "How many {shape}s are in the image?",
        "How many {shape}s can you see?",
        "What is the number of {shape}s in the picture?",
    ),
    "count_color": (
        "How many {color} objects are in the image?",
        "How many {color} shapes can you see?",
        "What is the number of {color} objects in the picture?",
    ),
    "count_both": (
        "How many {color} {shape}s are in the image?",
        "How many {color} {shape}s can you see?",
        "What is the number of {color} {shape}s in the picture?",
    ),
    "color": ("What is the color of {ref}?", "Which color does {ref} have?", "Tell me the color of {ref}."),
    "shape": ("What is the shape of {ref}?", "Which shape is {ref}?", "What kind of shape is {ref}?"),
    "size": (
        "Is {ref} large or small?",
        "What size is {ref}, small or large?",
        "Would you say {ref} is small or large?",
    ),
    "exist": (
        "Is there a {color} {shape} in the image?",
        "Does the image contain a {color} {shape}?",
        "Can you see a {color} {shape}?",
    ),
    "where": ("Where is {ref} located?", "In which part of the image is {ref}?", "Where can {ref} be found?"),
    "ground": (
        "Locate {ref}. Answer with a bounding box.",
        "Give the bounding box of {ref}.",
        "Where exactly is {ref}? Answer with a bounding box.",
    ),
    "caption": ("Describe this picture.", "What is in the image?", "Give a description of the image."),
    "more": (
        "Does the image have more {color1} objects than {color2} objects?",
        "Are the {color1} objects more numerous than the {color2} objects?",
        "Is the number of {color1} objects greater than the number of {color2} objects?",
    ),
    "count_not": (
        "How many objects are something other than {shape}s?",
        "Not counting {shape}s, how many objects are there?",
        "What is the number of objects that are not {shape}s?",
    ),
    "left_of": (
        "Is {ref1} left of {ref2}?",
        "Is {ref1} on the left side of {ref2}?",
        "Does {ref1} appear to the left of {ref2}?",
    ),
    "above": (
        "Is {ref1} higher up than {ref2}?",
        "Is {ref1} located above {ref2}?",
        "Does {ref1} appear above {ref2}?",
    ),
    "same_color": (
        "Are {ref1} and {ref2} the same color?",
        "Is {ref1} the same color as {ref2}?",
        "Do {ref1} and {ref2} share a color?",
    ),
    "sign": ("What word is written on the sign?", "What is written on the sign?", "Read the sign."),
    "sign_position": (
        "What word is written on the {position} sign?",
        "What is written on the {position} sign?",
        "Read the {position} sign.",
    ),
    "change": (
        "What is the difference between the two images?",
        "What changed from the first image to the second?",
        "How does the second image differ from the first?",
    ),
    "direction": (
        "In which direction does {ref} move?",
        "Where is {ref} moving to: left, right, up or down?",
        "Which way is {ref} going?",
    ),
    "count_moving": (
        "How many objects move?",
        "How many objects are in motion?",
        "What is the number of moving objects?",
    ),
}

HELD_OUT: dict[str, tuple[str, ...]] = {
    "count_all": ("Count the objects.",),
    "count_shape": ("Count the {shape}s.",),
    "count_color": ("Count the {color} objects.",),
    "count_both": ("Count the {color} {shape}s.",),
    "color": ("Name the color of {ref}.",),
    "shape": ("Name the shape of {ref}.",),
    "size": ("Tell me whether {ref} is small or large.",),
    "exist": ("Does the picture show any {color} {shape}?",),
    "where": ("Which region of the picture holds {ref}?",),
    "ground": ("Output the bounding box for {ref}.",),
    "caption": ("Tell me what this picture shows.",),
    "more": ("Do {color1} objects outnumber {color2} objects?",),
    "count_not": ("Count the objects that are not {shape}s.",),
    "left_of": ("Is {ref1} further left than {ref2}?",),
    "above": ("Is {ref1} placed higher than {ref2}?",),
    "same_color": ("Does {ref1} match {ref2} in color?",),
    "sign": ("Which word appears on the sign?",),
    "sign_position": ("Which word appears on the {position} sign?",),
    "change": ("Spot the difference between the images.",),
    "direction": ("Tell me the direction {ref} travels in.",),
    "count_moving": ("Count the moving objects.",),
}


def with_articles(text: str) -> str:
    """ "a" becomes "an" before a vowel (world-spec v2): "Is there an orange star?"."""
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def fill(template: str, fields: dict[str, str]) -> str:
    """Format a template; a reference that opens the sentence gets a capital letter."""
    text = with_articles(template.format(**fields))
    return text[:1].upper() + text[1:]


def canonical_question(qtype: str, fields: dict[str, str]) -> str:
    return fill(CANONICAL[qtype], fields)


def training_question(qtype: str, fields: dict[str, str], rng: np.random.Generator) -> str:
    """The canonical template or one of the training paraphrases, uniformly."""
    pool = (CANONICAL[qtype], *TRAIN[qtype])
    return fill(pool[int(rng.integers(len(pool)))], fields)


def heldout_templates(qtype: str) -> tuple[str, ...]:
    return HELD_OUT[qtype]


def heldout_question(qtype: str, fields: dict[str, str], rng: np.random.Generator | None = None) -> str:
    """An evaluation-only wording (the first one, or a random one given an rng)."""
    pool = HELD_OUT[qtype]
    return fill(pool[0 if rng is None else int(rng.integers(len(pool)))], fields)


def ask(qtype: str, fields: dict[str, str], rng: np.random.Generator, paraphrase: bool) -> str:
    """What a generator asks: canonical, or a training paraphrase when cfg.paraphrase is on."""
    return training_question(qtype, fields, rng) if paraphrase else canonical_question(qtype, fields)
