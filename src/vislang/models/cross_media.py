"""What a model whose text reads images by cross-attention (IDEFICS, vislang's Flamingo) shares.

Media are never in the token stream: one placeholder token marks each, and every text token reads
the states of the media its mask allows. A model mixing this in provides `image_token_id` (the
placeholder) and `_media_locations(input_ids, n)` ([B, T, n] booleans), and its forward takes
`image_features` (one [L, D] state per medium, in placeholder order) or `media` [B, N * L, D] with
`image_attention_mask`. The two hooks at the end are what the continuous-batching engine asks of
such a model.
"""

from __future__ import annotations

import torch


def pad_media(states: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """[sum N, ...] with per-row counts -> [B, max N, ...]; zeros fill short rows (no mask sees them)."""
    out = states.new_zeros(len(counts), max(1, max(counts)), *states.shape[1:])
    for b, rows in enumerate(states.split(counts)):
        out[b, : len(rows)] = rows
    return out


class CrossMediaMixin:
    def _media_locations(self, input_ids: torch.Tensor, num_media: int) -> torch.Tensor:
        raise NotImplementedError

    def stack_media(self, input_ids: torch.Tensor, features: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Per-medium states in placeholder order -> [B, N * L, D] (short rows padded), N."""
        counts = (input_ids == self.image_token_id).sum(1).tolist()
        if sum(counts) != len(features):
            raise ValueError(f"{sum(counts)} media placeholders but {len(features)} media given")
        states = pad_media(torch.stack(features), counts)  # [B, N, L, D]
        return states.flatten(1, 2), states.shape[1]

    def decode_media(self, ids: list[int], image_features: list[torch.Tensor]) -> torch.Tensor | None:
        """What a request's generated tokens read: the media its prompt's last token sees,
        [k, L, D], or None (no image, so no cross-attention term)."""
        if not image_features:
            return None
        device = image_features[0].device
        row = self._media_locations(torch.tensor([ids], device=device), len(image_features))[0, -1]
        seen = [f for f, sees in zip(image_features, row.tolist()) if sees]
        return torch.stack(seen) if seen else None

    def decode_step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache,
        media: list[torch.Tensor | None],
    ) -> torch.Tensor:
        """Logits [B, V] of one new token per row (input_ids [B, 1]), row b reading media[b] (from
        decode_media). Rows' media axes are padded to the longest."""
        K = max((m.shape[0] for m in media if m is not None), default=0)
        kw = {}
        if K:
            first = next(m for m in media if m is not None)
            states = first.new_zeros(len(media), K, *first.shape[1:])  # [B, K, L, D]
            sees = torch.zeros(len(media), 1, K, dtype=torch.bool, device=states.device)
            for b, m in enumerate(media):
                if m is not None:
                    states[b, : len(m)], sees[b, :, : len(m)] = m, True
            kw = {"media": states.flatten(1, 2), "image_attention_mask": sees}
        out = self(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, **kw
        )
        return out.logits[:, -1]
