"""Multi-head attention with grouped-query heads on scaled_dot_product_attention."""

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import KVCache
from .linear import Linear
from .rope import apply_rope


def concat_linear(parts: list[nn.Linear]) -> nn.Linear:
    """One nn.Linear computing the given layers' outputs side by side (same input)."""
    w = torch.cat([p.weight.detach() for p in parts])
    fused = Linear(w.shape[1], w.shape[0], bias=any(p.bias is not None for p in parts))
    fused = fused.to(device=w.device, dtype=w.dtype).requires_grad_(False)
    with torch.no_grad():
        fused.weight.copy_(w)
        if fused.bias is not None:
            fused.bias.copy_(
                torch.cat([p.bias if p.bias is not None else w.new_zeros(p.out_features) for p in parts])
            )
    return fused


class Attention(nn.Module):
    """q/k/v/o projections; n_kv_heads < n_heads shares each k/v head across a group of queries."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        o_bias: bool = False,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.head_dim = head_dim or dim // n_heads
        self.q_proj = Linear(dim, n_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = Linear(dim, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = Linear(dim, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = Linear(n_heads * self.head_dim, dim, bias=o_bias)
        self.qkv_proj: nn.Linear | None = None  # set by fuse()

    def fuse(self) -> None:
        """One matmul for q, k and v instead of three (inference: the state-dict keys change)."""
        if self.qkv_proj is not None:
            return
        parts = [self.q_proj, self.k_proj, self.v_proj]
        self.qkv_proj = concat_linear(parts)
        self.qkv_splits = [p.out_features for p in parts]
        del self.q_proj, self.k_proj, self.v_proj

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).split(self.qkv_splits, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(layer, k, v)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=self.n_kv_heads != self.n_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))
