"""CLIP's text tower: token + learned position embeddings, causal pre-LN blocks, pooled at EOS."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ClipTextConfig
from ..errors import PromptTooLongError
from ..nn import build_mask, encoder_blocks


class TextEmbeddings(nn.Module):
    """Token + learned position embeddings (CLIP's and SigLIP's text towers); `name` is for the error."""

    def __init__(self, cfg, name: str = "CLIP"):
        super().__init__()
        self.name = name
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length, limit = input_ids.shape[1], self.position_embedding.num_embeddings
        if length > limit:
            message = f"text of {length} tokens is longer than {self.name}'s {limit}-token context"
            raise PromptTooLongError(message, context=limit, prompt_tokens=length)
        return self.token_embedding(input_ids) + self.position_embedding.weight[:length]


class ClipTextTransformer(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.layers = encoder_blocks(cfg)
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def eos_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.cfg.eos_token_id == 2:
            # the original CLIP configs say eos=2 but mean the highest id, which is EOS in their vocabulary
            return input_ids.argmax(-1)
        return (input_ids == self.cfg.eos_token_id).int().argmax(-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(hidden states [B, T, D] after the final norm, pooled EOS state [B, D])."""
        x = self.embeddings(input_ids)
        B, T, _ = x.shape
        mask = build_mask(attention_mask, T, T, x.dtype, causal=True, batch=B, device=x.device)
        for block in self.layers:
            x = block(x, mask)
        x = self.final_norm(x)
        return x, x[torch.arange(B, device=x.device), self.eos_positions(input_ids)]
