"""Flamingo's perceiver resampler: a fixed number of learned latents read a variable number of image
features by cross-attention, so every image reaches the language model as the same few vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PerceiverAttention(nn.Module):
    """Latents query the image features and themselves: keys and values are [features; latents]."""

    def __init__(self, dim: int, n_heads: int, head_dim: int, qk_norm: bool = False):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        self.context_layer_norm = nn.LayerNorm(dim)
        self.latents_layer_norm = nn.LayerNorm(dim)
        inner = n_heads * head_dim
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(dim, inner, bias=False)
        self.v_proj = nn.Linear(dim, inner, bias=False)
        self.output_proj = nn.Linear(inner, dim, bias=False)
        self.q_layer_norm = nn.LayerNorm(head_dim) if qk_norm else None
        self.k_layer_norm = nn.LayerNorm(head_dim) if qk_norm else None

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """context [B, N, D], latents [B, L, D] -> [B, L, D]."""
        context, latents = self.context_layer_norm(context), self.latents_layer_norm(latents)
        both = torch.cat([context, latents], dim=1)  # [B, N + L, D]
        B, H, Dh = latents.shape[0], self.n_heads, self.head_dim
        q = self.q_proj(latents).view(B, -1, H, Dh).transpose(1, 2)  # [B, H, L, Dh]
        k = self.k_proj(both).view(B, -1, H, Dh).transpose(1, 2)  # [B, H, N + L, Dh]
        v = self.v_proj(both).view(B, -1, H, Dh).transpose(1, 2)
        if self.q_layer_norm is not None:
            q, k = self.q_layer_norm(q), self.k_layer_norm(k)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.output_proj(out.transpose(1, 2).flatten(2))


class PerceiverMLP(nn.Module):
    """Pre-norm two-layer ReLU MLP without biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, hidden, bias=False)
        self.c_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.fc(self.ln(x))))


class PerceiverBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, head_dim: int, mlp_hidden: int, qk_norm: bool):
        super().__init__()
        self.attn = PerceiverAttention(dim, n_heads, head_dim, qk_norm)
        self.mlp = PerceiverMLP(dim, mlp_hidden)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        latents = latents + self.attn(context, latents)
        return latents + self.mlp(latents)


class PerceiverResampler(nn.Module):
    """[B, N, D] image features -> [B, n_latents, D], whatever N is."""

    def __init__(
        self,
        dim: int,
        depth: int,
        n_heads: int,
        head_dim: int,
        n_latents: int,
        mlp_hidden: int | None = None,
        qk_norm: bool = False,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n_latents, dim))
        mlp_hidden = mlp_hidden or 4 * dim
        self.layers = nn.ModuleList(
            PerceiverBlock(dim, n_heads, head_dim, mlp_hidden, qk_norm) for _ in range(depth)
        )
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        latents = self.latents.expand(context.shape[0], -1, -1)
        for block in self.layers:
            latents = block(context, latents)
        return self.layer_norm(latents)
