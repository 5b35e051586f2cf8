"""SigLIP's text tower: token + learned position embeddings, bidirectional pre-LN blocks, a final
LayerNorm, and a linear head on the last position's state.

SigLIP was trained on texts padded to a fixed length with no padding mask, so the last position is
usually a pad token that has read the whole text; pass texts padded the same way (see Siglip.embed).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import SiglipTextConfig
from ..nn import Linear, build_mask, encoder_blocks
from .clip_text import TextEmbeddings


class SiglipTextTransformer(nn.Module):
    def __init__(self, cfg: SiglipTextConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = TextEmbeddings(cfg, "SigLIP")
        self.layers = encoder_blocks(cfg)
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = Linear(cfg.hidden_size, cfg.projection_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(hidden states [B, T, D] after the final norm, head(last position's state) [B, P]).

        attention_mask (1 = token, 0 = padding) hides padding keys; without it every position
        sees every other, as in SigLIP's training."""
        x = self.embeddings(input_ids)
        B, T, _ = x.shape
        mask = None
        if attention_mask is not None:
            mask = build_mask(attention_mask, T, T, x.dtype, causal=False)
        for block in self.layers:
            x = block(x, mask)
        x = self.final_norm(x)
        return x, self.head(x[:, -1])
