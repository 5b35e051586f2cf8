"""Expand each image placeholder in a prompt into as many copies as the image has features.

The model swaps placeholder embeddings for image features one for one, so the counts must match
exactly; a mismatch is refused here, where the message can still say what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from vislang.errors import ImageTokenMismatchError


def _check_counts(found: int, counts: Sequence[int], what: str) -> None:
    if found != len(counts):
        raise ImageTokenMismatchError(
            f"the prompt has {found} {what} placeholder(s) but {len(counts)} image(s) were given; "
            "put exactly one placeholder where each image goes"
        )
    negative = [c for c in counts if c < 0]
    if negative:
        raise ValueError(f"image feature counts must be >= 0, got {list(counts)}")


def expand_image_tokens(text: str, image_token: str, counts: Sequence[int]) -> str:
    """Replace the i-th `image_token` in `text` with `counts[i]` copies of it."""
    if not image_token:
        raise ValueError("image_token must be a non-empty string")
    return expand_media_tokens(text, [image_token] * len(counts), counts, known=[image_token])


def expand_image_token_ids(ids: Sequence[int], image_token_id: int, counts: Sequence[int]) -> list[int]:
    """The same on token ids, for tokenizers that keep the placeholder as one added token."""
    found = sum(1 for i in ids if i == image_token_id)
    _check_counts(found, counts, f"image token id {image_token_id}")
    out: list[int] = []
    images = iter(counts)
    for token_id in ids:
        if token_id == image_token_id:
            out.extend([image_token_id] * next(images))
        else:
            out.append(token_id)
    return out


def expand_media_tokens(
    text: str, placeholders: Sequence[str], counts: Sequence[int], known: Sequence[str] = ()
) -> str:
    """Replace the i-th media placeholder in `text` with counts[i] copies of it. `placeholders` names
    the one each medium expects, in order (e.g. an image pad then a video pad); `known` lists every
    placeholder the model has, so one written in the text without a medium is caught too."""
    if len(placeholders) != len(counts):
        raise ValueError(f"{len(placeholders)} placeholders but {len(counts)} counts")
    tokens = sorted(set(placeholders) | set(known), key=len, reverse=True)
    pattern = "|".join(re.escape(p) for p in tokens)
    found = re.findall(pattern, text) if tokens else []
    _check_counts(len(found), counts, " or ".join(repr(t) for t in tokens) or "media")
    if found != list(placeholders):
        raise ImageTokenMismatchError(
            f"the prompt's media placeholders come in the order {found}, "
            f"the media in the order {list(placeholders)}"
        )
    pieces = re.split(pattern, text) if tokens else [text]
    out = [pieces[0]]
    for token, count, piece in zip(placeholders, counts, pieces[1:]):
        out.append(token * count)
        out.append(piece)
    return "".join(out)
