"""BLIP-2's Querying Transformer (Q-Former): a fixed set of learned queries reads the image.

A BERT-style post-norm encoder runs over [queries; instruction tokens]. Every layer lets queries and
text attend to each other; every cross_attention_frequency-th layer the queries (not the text) also
cross-attend to the frozen vision tower's states; queries and text then go through feed-forward
blocks of their own. The queries' final states, a fixed count per image whatever its size, are what
the language projection turns into image tokens. BLIP-2 runs it on the queries alone; InstructBLIP
adds the instruction's tokens, so what the queries extract depends on what was asked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config_blip2 import QFormerConfig
from ..nn import MLP, Linear, build_mask


class ResidualAttention(nn.Module):
    """LayerNorm(x + out(attention(x -> context))): BERT's attention sub-block, for self- or
    cross-attention (context of another width)."""

    def __init__(self, dim: int, n_heads: int, context_dim: int, eps: float):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = Linear(dim, dim)
        self.k_proj = Linear(context_dim, dim)
        self.v_proj = Linear(context_dim, dim)
        self.o_proj = Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, T, D], context [B, S, Dc], mask additive [B, 1, T or 1, S] or None -> [B, T, D]."""
        B, T, D = x.shape
        H = self.n_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, t.shape[1], H, D // H).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(context)), heads(self.v_proj(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.norm(x + self.o_proj(out.transpose(1, 2).reshape(B, T, D)))


class ResidualMLP(nn.Module):
    """LayerNorm(x + mlp(x)): BERT's feed-forward sub-block."""

    def __init__(self, dim: int, hidden: int, act: str, eps: float):
        super().__init__()
        self.mlp = MLP(dim, hidden, act)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.mlp(x))


class QFormerLayer(nn.Module):
    def __init__(self, cfg: QFormerConfig, cross: bool):
        super().__init__()
        D, H, eps = cfg.hidden_size, cfg.num_attention_heads, cfg.layer_norm_eps
        self.self_attn = ResidualAttention(D, H, D, eps)
        self.cross_attn = ResidualAttention(D, H, cfg.encoder_hidden_size, eps) if cross else None
        self.query_ffn = ResidualMLP(D, cfg.intermediate_size, cfg.hidden_act, eps)
        # the text's own feed-forward block; BLIP-2's checkpoints have it only with text input
        self.text_ffn = (
            ResidualMLP(D, cfg.intermediate_size, cfg.hidden_act, eps) if cfg.use_qformer_text_input else None
        )

    def forward(
        self, x: torch.Tensor, n_queries: int, mask: torch.Tensor | None, image: torch.Tensor
    ) -> torch.Tensor:
        x = self.self_attn(x, x, mask)
        queries, text = x[:, :n_queries], x[:, n_queries:]
        if self.cross_attn is not None:
            queries = self.cross_attn(queries, image, None)  # every image state is real
        queries = self.query_ffn(queries)
        if text.shape[1] == 0:
            return queries
        return torch.cat([queries, self.text_ffn(text)], dim=1)


class QFormer(nn.Module):
    """image states [B, S, Dv] (+ instruction ids [B, L]) -> query states [B, num_queries, D]."""

    def __init__(self, cfg: QFormerConfig, num_queries: int, image_positions: int = 0):
        """image_positions: learned position embeddings added to that many image states before any
        layer reads them, for a tower whose states carry no position of their own (a CNN grid);
        BLIP-2's ViT has its own, so its checkpoints have none."""
        super().__init__()
        self.cfg = cfg
        D = cfg.hidden_size
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, D))
        self.image_positions = None
        if image_positions:
            self.image_positions = nn.Parameter(0.02 * torch.randn(image_positions, cfg.encoder_hidden_size))
        if cfg.use_qformer_text_input:
            self.word_embeddings = nn.Embedding(cfg.vocab_size, D)
            self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, D)
        self.embed_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        every = cfg.cross_attention_frequency
        self.layers = nn.ModuleList(QFormerLayer(cfg, i % every == 0) for i in range(cfg.num_hidden_layers))

    @property
    def num_queries(self) -> int:
        return self.query_tokens.shape[1]

    def forward(
        self,
        image: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """attention_mask [B, L] marks the instruction's real tokens (right or left padding alike);
        the queries are always attended to. Text positions count from 0 after the queries."""
        B, Q = image.shape[0], self.num_queries
        if self.image_positions is not None:
            image = image + self.image_positions
        x = self.query_tokens.expand(B, -1, -1).to(image.dtype)
        mask = None
        if input_ids is not None and input_ids.shape[1] > 0:
            if not self.cfg.use_qformer_text_input:
                raise ValueError("this Q-Former takes no text input (use_qformer_text_input is false)")
            L, most = input_ids.shape[1], self.cfg.max_position_embeddings
            if most < L:
                raise ValueError(f"an instruction of {L} Q-Former tokens exceeds its {most} positions")
            text = self.word_embeddings(input_ids) + self.position_embeddings.weight[:L]
            x = torch.cat([x, text.to(x.dtype)], dim=1)
            if attention_mask is not None and not bool(attention_mask.all()):
                keys = torch.cat([attention_mask.new_ones(B, Q), attention_mask], dim=1)
                mask = build_mask(keys, Q + L, Q + L, x.dtype, causal=False)
        x = self.embed_norm(x)
        for layer in self.layers:
            x = layer(x, Q, mask, image)
        return x[:, :Q]
