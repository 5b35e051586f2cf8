"""Meta's OPT decoder: learned positions, LayerNorm blocks, a ReLU MLP, biases everywhere.

The language model of the released BLIP-2 checkpoints. It keeps text.Decoder's interface
(embed_tokens, layers, lm_head, new_cache, forward), so the VLMs, `generate` and the engine drive
it the same way. Positions count the real tokens of each row (left padding is right) and index a
table offset by 2, a leftover of fairseq's padding positions that the checkpoints keep.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config_blip2 import OPTConfig
from ..nn import MLP, Attention, KVCache, Linear, build_mask, positions_from_mask
from ..nn.masks import CAUSAL

POSITION_OFFSET = 2


class OPTLayer(nn.Module):
    def __init__(self, cfg: OPTConfig):
        super().__init__()
        D, bias, affine = cfg.hidden_size, cfg.enable_bias, cfg.layer_norm_elementwise_affine
        self.pre_norm = cfg.do_layer_norm_before  # OPT-350m normalizes after each block instead
        self.self_attn_layer_norm = nn.LayerNorm(D, elementwise_affine=affine)
        self.self_attn = Attention(D, cfg.num_attention_heads, qkv_bias=bias, o_bias=bias)
        self.final_layer_norm = nn.LayerNorm(D, elementwise_affine=affine)
        self.mlp = MLP(D, cfg.ffn_dim, cfg.activation_function, bias=bias)

    def forward(self, x, mask, cache=None, layer=0):
        attn_norm, mlp_norm = self.self_attn_layer_norm, self.final_layer_norm
        if self.pre_norm:
            x = x + self.self_attn(attn_norm(x), mask, None, cache, layer)
            return x + self.mlp(mlp_norm(x))
        x = attn_norm(x + self.self_attn(x, mask, None, cache, layer))
        return mlp_norm(x + self.mlp(x))


class OPTDecoder(nn.Module):
    """Token + position embeddings -> (project_in) -> layers -> final norm -> (project_out) -> lm_head."""

    def __init__(self, cfg: OPTConfig, tie: bool | None = None):
        super().__init__()
        self.cfg = cfg
        self.tie = cfg.tie_word_embeddings if tie is None else tie
        D, E = cfg.hidden_size, cfg.word_embed_proj_dim
        self.embed_tokens = nn.Embedding(cfg.vocab_size, E)
        self.embed_positions = nn.Embedding(cfg.max_position_embeddings + POSITION_OFFSET, D)
        # narrower word embeddings than blocks (OPT-350m): linear maps in and out
        self.project_in = Linear(E, D, bias=False) if E != D else None
        self.project_out = Linear(D, E, bias=False) if E != D else None
        self.layers = nn.ModuleList(OPTLayer(cfg) for _ in range(cfg.num_hidden_layers))
        final = cfg.do_layer_norm_before and not cfg._remove_final_layer_norm
        self.norm = nn.LayerNorm(D, elementwise_affine=cfg.layer_norm_elementwise_affine) if final else None
        self.lm_head = Linear(E, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.tie:
            self.lm_head.weight = self.embed_tokens.weight

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p, c = self.embed_tokens.weight, self.cfg
        H, Dh = c.num_attention_heads, c.head_dim
        return KVCache(c.num_hidden_layers, batch, H, Dh, max_len, p.dtype, p.device)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        logits: bool = True,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits [B, T, V] (or the head's input when logits=False); arguments as text.Decoder's."""
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # [B, T, E]
        B, T, _ = x.shape
        past = cache.length if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, past + T, dtype=torch.long, device=x.device)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)[:, past:]
        if self.project_in is not None:
            x = self.project_in(x)
        x = x + self.embed_positions(position_ids + POSITION_OFFSET).to(x.dtype)
        if past == 0 and T > 1 and bool(attention_mask.all()):
            mask = CAUSAL
        else:
            mask = build_mask(attention_mask, T, past + T, x.dtype, causal=True)
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cache, i)
        if cache is not None:
            cache.advance(T)
        x = x[:, -1:] if last_only else x
        if self.norm is not None:
            x = self.norm(x)
        if self.project_out is not None:
            x = self.project_out(x)
        return self.lm_head(x) if logits else x
