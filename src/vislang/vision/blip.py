"""BLIP's vision transformer (EVA-CLIP's ViT-g in the released BLIP-2 and InstructBLIP models).

Like CLIP's ViT but: the patch conv has a bias, there is no LayerNorm before the blocks, the
positions are one learned [1, 1 + N, D] tensor, and each block's attention reads q, k and v from a
single packed `qkv` matrix (rows: all of q, then k, then v). The post-LayerNorm covers every state,
and those normed states are what the Q-Former cross-attends to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config_blip2 import BlipVisionConfig
from ..nn import MLP, Linear


class PackedAttention(nn.Module):
    """Bidirectional multi-head self-attention with q, k and v in one projection."""

    def __init__(self, dim: int, n_heads: int, qkv_bias: bool):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.o_proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # 3 x [B, H, T, D / H]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, D))


class BlipBlock(nn.Module):
    def __init__(self, cfg: BlipVisionConfig):
        super().__init__()
        D, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.norm1 = nn.LayerNorm(D, eps=eps)
        self.attn = PackedAttention(D, cfg.num_attention_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(D, eps=eps)
        self.mlp = MLP(D, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BlipEmbeddings(nn.Module):
    def __init__(self, cfg: BlipVisionConfig):
        super().__init__()
        D = cfg.hidden_size
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, D))
        self.patch_embedding = nn.Conv2d(3, D, cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, D))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # [B, D, h, w]
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, D]
        if x.shape[1] + 1 != self.position_embedding.shape[1]:
            raise ValueError(
                f"image gives {x.shape[1]} patches but the model was trained with "
                f"{self.position_embedding.shape[1] - 1}: resize images to the model's image_size"
            )
        x = torch.cat([self.class_embedding.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return x + self.position_embedding.to(x.dtype)


class BlipVisionTransformer(nn.Module):
    def __init__(self, cfg: BlipVisionConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = BlipEmbeddings(cfg)
        self.layers = nn.ModuleList(BlipBlock(cfg) for _ in range(cfg.num_hidden_layers))
        self.post_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> every state after the post-norm, class token first: [B, 1 + N, D]."""
        x = self.embeddings(pixel_values)
        for block in self.layers:
            x = block(x)
        return self.post_norm(x)
