"""Multi-head attention with grouped-query heads on scaled_dot_product_attention."""

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import KVCache
from .linear import Linear
from .masks import CAUSAL
from .rope import rotate


def concat_linear(parts: list[nn.Linear]) -> nn.Linear:
    """One nn.Linear computing the given layers' outputs side by side (same input). Layers of a
    type with its own `concat` (block-quantized ones) are joined by it."""
    if hasattr(type(parts[0]), "concat"):
        return type(parts[0]).concat(parts)
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
        self.qkv_proj = concat_linear([self.q_proj, self.k_proj, self.v_proj])
        del self.q_proj, self.k_proj, self.v_proj

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """x [B, T, dim]; rope: tables from rope_for_heads; mask: additive [B, 1, T, keys], or CAUSAL."""
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        if self.qkv_proj is not None:
            qkv = self.qkv_proj(x).view(B, T, H + 2 * Hkv, D)
            qk, v = qkv[:, :, : H + Hkv], qkv[:, :, H + Hkv :]
            if rope is not None:
                qk = rotate(qk, *rope)  # q and k in one pass
            q, k = qk[:, :, :H], qk[:, :, H:]
        else:
            q, k = self.q_proj(x).view(B, T, H, D), self.k_proj(x).view(B, T, Hkv, D)
            v = self.v_proj(x).view(B, T, Hkv, D)
            if rope is not None:
                q, k = rotate(q, *rope), rotate(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        if cache is not None:
            k, v = cache.update(layer, k, v)
        gqa = self.n_kv_heads != self.n_heads
        if mask is CAUSAL:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))
