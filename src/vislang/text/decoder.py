"""The Llama-family decoder (Llama, Mistral, Qwen2, SmolLM2): pre-norm blocks, GQA, RoPE, SwiGLU."""

from __future__ import annotations

import torch
from torch import nn

from ..config import TextConfig
from ..nn import (
    Attention,
    GatedMLP,
    KVCache,
    Linear,
    RMSNorm,
    RotaryEmbedding,
    build_mask,
    positions_from_mask,
)
from ..nn.masks import CAUSAL
from ..nn.rope import rope_for_heads


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            qkv_bias=cfg.qkv_bias,
            o_bias=cfg.o_bias,
        )
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, bias=cfg.mlp_bias)

    def forward(self, x, mask, rope, cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), mask, rope, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """Token embeddings -> decoder layers -> final norm -> lm_head (optionally tied to the embeddings)."""

    def __init__(self, cfg: TextConfig, tie: bool | None = None):
        super().__init__()
        self.cfg = cfg
        # a VLM's own config decides tying, which may differ from its text config's flag
        self.tie = cfg.tie_word_embeddings if tie is None else tie
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, cfg.mrope_section)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()
        # a whole one-token step in one call, set on block weights (generation/native_step.py);
        # it returns None for a call it does not take
        self.fast_decode = None

    def tie_weights(self) -> None:
        if self.tie:
            self.lm_head.weight = self.embed_tokens.weight

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        p = self.embed_tokens.weight
        c = self.cfg
        return KVCache(
            c.num_hidden_layers, batch, c.num_key_value_heads, c.head_dim, max_len, p.dtype, p.device
        )

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
        """Logits [B, T, V] (or final hidden states when logits=False) for the new tokens.

        attention_mask covers the cached tokens and the new ones: [B, past + T], 1 = real token.
        Without position_ids, positions count the real tokens of each row, so left padding is right.
        position_ids may be [3, B, T] (t, h, w) triples for a model with M-RoPE (Qwen2-VL).
        last_only: project only the last position (all generation needs from a prefill).
        """
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # [B, T, D]
        B, T, _ = x.shape
        past = cache.length if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, past + T, dtype=torch.long, device=x.device)
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask)[:, past:]
        if T == 1 and cache is not None and self.fast_decode is not None:
            out = self.fast_decode(x, attention_mask, position_ids, cache, logits)
            if out is not None:
                return out
        if past == 0 and self.cfg.window is None and T > 1 and bool(attention_mask.all()):
            mask = CAUSAL  # no padding, nothing cached: SDPA's own causal kernel
        else:
            mask = build_mask(attention_mask, T, past + T, x.dtype, causal=True, window=self.cfg.window)
        rope = rope_for_heads(*self.rotary(position_ids, x.dtype))
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, rope, cache, i)
        if cache is not None:
            cache.advance(T)
        x = self.norm(x[:, -1:] if last_only else x)
        return self.lm_head(x) if logits else x
