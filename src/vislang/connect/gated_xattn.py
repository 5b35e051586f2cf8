"""Flamingo's gated cross-attention dense block, inserted before a language-model layer.

x += tanh(alpha_attn) * cross_attention(x, image states); x += tanh(alpha_dense) * mlp(x).
With both alphas at zero the block is the identity, which is how a frozen language model gains
vision without forgetting text. Tokens that see no image get no cross-attention term at all;
the dense term applies to every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import GatedMLP, RMSNorm


class CrossAttention(nn.Module):
    """Text queries, image keys and values; no rotary positions (images have no place in the text)."""

    def __init__(self, dim: int, n_heads: int, media_dim: int, qk_norm: bool = False, eps: float = 1e-6):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(media_dim, dim, bias=False)
        self.v_proj = nn.Linear(media_dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.q_layer_norm = RMSNorm(self.head_dim, eps) if qk_norm else None
        self.k_layer_norm = RMSNorm(self.head_dim, eps) if qk_norm else None

    def forward(self, x: torch.Tensor, media: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], media [B, M, Dm], mask additive [B, 1, T, M] -> [B, T, D]."""
        B, T, _ = x.shape
        H, Dh = self.n_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, Dh).transpose(1, 2)
        k = self.k_proj(media).view(B, -1, H, Dh).transpose(1, 2)
        v = self.v_proj(media).view(B, -1, H, Dh).transpose(1, 2)
        if self.q_layer_norm is not None:
            q, k = self.q_layer_norm(q), self.k_layer_norm(k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class GatedCrossAttentionBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        n_heads: int,
        media_dim: int,
        mlp_hidden: int,
        act: str = "silu",
        eps: float = 1e-6,
        alpha_type: str = "float",
        qk_norm: bool = False,
    ):
        super().__init__()
        if alpha_type not in ("float", "vector"):
            raise ValueError(f"alpha_type must be 'float' or 'vector', got {alpha_type!r}")
        shape = (1,) if alpha_type == "float" else (1, 1, dim)
        self.input_layernorm = RMSNorm(dim, eps)
        self.cross_attn = CrossAttention(dim, n_heads, media_dim, qk_norm, eps)
        self.post_attention_layernorm = RMSNorm(dim, eps)
        self.mlp = GatedMLP(dim, mlp_hidden, act)
        self.alpha_cross_attn = nn.Parameter(torch.zeros(shape))  # zeros: the block starts as identity
        self.alpha_dense = nn.Parameter(torch.zeros(shape))

    def forward(
        self,
        x: torch.Tensor,
        media: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        gate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, T, D]; media [B, M, Dm] or None (no image anywhere: no cross-attention term);
        mask additive [B, 1, T, M]; gate [B, T], False for tokens that see no image."""
        if media is not None:
            h = self.cross_attn(self.input_layernorm(x), media, mask)
            if gate is not None:
                h = h * gate[..., None].to(h.dtype)
            x = x + torch.tanh(self.alpha_cross_attn) * h
        return x + torch.tanh(self.alpha_dense) * self.mlp(self.post_attention_layernorm(x))
