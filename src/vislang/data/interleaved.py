"""Interleaved conversations: several image-question-answer turns in one context, the way Flamingo
reads documents. Earlier turns come with their answers; only the last one is asked. Each turn's
text sees the image of its own turn, so the last answer must come from the last image, not from an
earlier one the context also holds."""

from __future__ import annotations

import numpy as np

INTERLEAVED = "interleaved"  # the recipes' pseudo-family of these conversations
TURNS = (2, 4)  # turns a conversation, the asked one included


def turn_count(rng: np.random.Generator) -> int:
    return int(rng.integers(TURNS[0], TURNS[1] + 1))


def interleave(turns: list[tuple[list[dict], str]]) -> tuple[list[dict], str]:
    """(user messages, answer) pairs, in order -> one conversation and the answer of its last turn."""
    if not turns:
        raise ValueError("an interleaved conversation needs at least one turn")
    messages = []
    for user, answer in turns[:-1]:
        messages += [*user, {"role": "assistant", "content": answer}]
    user, answer = turns[-1]
    return [*messages, *user], answer
