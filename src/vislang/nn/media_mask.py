"""Flamingo media-location masks: which images each text token may cross-attend to.

A token sees only the image that most recently came before it (the image token itself included);
text before any image sees none, and so does text after an end-of-document token, until the next
image. The mask is [B, T, N]: row b, token t, image n (the n-th image of row b, in order).
"""

from __future__ import annotations

import torch


def media_locations(
    input_ids: torch.Tensor, image_token_id: int, num_images: int, eod_token_id: int | None = None
) -> torch.Tensor:
    """Boolean [B, T, num_images] from the image placeholder tokens of input_ids [B, T].

    An image past the num_images given for the row (the processor keeps at most that many) is seen
    by no token.
    """
    is_image = input_ids == image_token_id
    latest = is_image.long().cumsum(-1) - 1  # [B, T]: index of the last image so far, -1 before any
    if eod_token_id is not None:
        # an end-of-document token cuts off the image before it from the tokens after it (not itself)
        eod = (input_ids == eod_token_id).long()
        eods_before = eod.cumsum(-1) - eod  # end tokens strictly before t
        image_pos = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        last_image_pos = torch.where(is_image, image_pos, -1).cummax(-1).values
        eods_at_image = torch.gather(eods_before, 1, last_image_pos.clamp(min=0))
        latest = torch.where(eods_before > eods_at_image, -1, latest)
    images = torch.arange(num_images, device=input_ids.device)
    return latest[..., None] == images  # -1 (no image) matches no column


def cross_attention_mask(
    image_attention_mask: torch.Tensor, tokens_per_image: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T, N] (1 = may attend) -> (additive mask [B, 1, T, N * tokens_per_image], gate [B, T]).

    gate is False for tokens that see no image: their cross-attention output must be dropped, since a
    fully blocked row of the additive mask attends uniformly to everything.
    """
    allowed = image_attention_mask.bool()
    gate = allowed.any(-1)
    allowed = allowed.repeat_interleave(tokens_per_image, dim=-1)[:, None]  # [B, 1, T, N * S]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min), gate
