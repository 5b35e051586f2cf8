"""Placing image features at the image-placeholder positions of a token sequence."""

from __future__ import annotations

import torch

from ..errors import ImageTokenMismatchError


def splice_image_features(
    embeds: torch.Tensor,
    input_ids: torch.Tensor,
    image_token_id: int | tuple[int, ...],
    image_features: list[torch.Tensor] | None,
    prompt: bool = True,
) -> torch.Tensor:
    """embeds [B, T, D] with the rows at image tokens replaced by the features, in order.

    image_token_id may be several ids (Qwen2-VL's image and video placeholders): the features then
    follow the placeholders' order of appearance, whichever kind each is.
    While decoding (prompt=False) a sampled image-token id is an ordinary token, as in transformers.
    """
    if not prompt and image_features is None:
        return embeds
    ids = (image_token_id,) if isinstance(image_token_id, int) else tuple(image_token_id)
    slots = torch.isin(input_ids, torch.tensor(ids, device=input_ids.device))
    n_slots = int(slots.sum())
    n_feats = sum(f.shape[0] for f in image_features) if image_features else 0
    if n_slots != n_feats:
        raise ImageTokenMismatchError(
            f"the prompt has {n_slots} image tokens but the images give {n_feats} features; "
            "expand each <image> placeholder to exactly its image's feature count"
        )
    if n_feats == 0:
        return embeds
    feats = torch.cat(image_features).to(embeds.dtype)
    return embeds.masked_scatter(slots[..., None], feats)


def answer_loss(lm_head, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over the positions whose label is not -100.

    Only those positions go through the vocabulary projection: with answer-only labels that is a few
    tokens a sample, where the projection of every position would cost more than the rest of a step.
    """
    keep = labels[:, 1:] != -100  # [B, T-1]
    logits = lm_head(hidden[:, :-1][keep])  # [N, V]
    return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][keep])


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position's logits against the next label; -100 marks positions that do
    not count (prompt, image, padding)."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
    )
