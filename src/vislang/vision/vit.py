"""A CLIP- or SigLIP-style vision transformer: patch embedding, learned positions, pre-LN blocks.

CLIP prepends a class token, normalizes before the blocks and pools at the class token; SigLIP has
no class token and pools every patch state with a learned probe (AttentionPoolingHead). The config
says which (VisionConfig.class_token, .patch_bias, .pre_norm, .pooling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VisionConfig
from ..nn import MLP, Linear, encoder_blocks, fast_linear


class PatchEmbedding(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.extra_tokens = int(cfg.class_token)
        self.class_embedding = nn.Parameter(torch.zeros(cfg.hidden_size)) if cfg.class_token else None
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size, bias=cfg.patch_bias
        )
        self.position_embedding = nn.Embedding(cfg.num_patches + self.extra_tokens, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # [B, D, h, w]
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, D]
        if self.class_embedding is not None:
            cls = self.class_embedding.expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1)
        if x.shape[1] != self.position_embedding.num_embeddings:
            raise ValueError(
                f"image gives {x.shape[1] - self.extra_tokens} patches but the model was trained with "
                f"{self.position_embedding.num_embeddings - self.extra_tokens}: "
                "resize images to the model's image_size"
            )
        return x + self.position_embedding.weight


class ProbeAttention(nn.Module):
    """Multi-head attention from a few queries onto a sequence, with q/k/v in one packed matrix
    (torch.nn.MultiheadAttention's layout, which SigLIP checkpoints store)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))  # q, k, v stacked on rows
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.o_proj = Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, queries: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """queries [B, Q, D] attend over x [B, N, D]; returns [B, Q, D]."""
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        B, Q, D = queries.shape
        H = self.n_heads

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, H, T, D / H]
            return t.view(B, t.shape[1], H, D // H).transpose(1, 2)

        q = heads(fast_linear(queries, wq, bq))
        k, v = heads(fast_linear(x, wk, bk)), heads(fast_linear(x, wv, bv))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, Q, D / H]
        return self.o_proj(out.transpose(1, 2).reshape(B, Q, D))


class AttentionPoolingHead(nn.Module):
    """SigLIP's pooling: one learned probe attends over all patch states, then a residual MLP."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, cfg.hidden_size) * cfg.hidden_size**-0.5)
        self.attn = ProbeAttention(cfg.hidden_size, cfg.num_attention_heads)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, D] -> pooled [B, D]."""
        pooled = self.attn(self.probe.expand(x.shape[0], -1, -1), x)  # [B, 1, D]
        pooled = pooled + self.mlp(self.norm(pooled))
        return pooled[:, 0]


class VisionTransformer(nn.Module):
    """hidden_states(pixels) lists the states the way Hugging Face counts them: index 0 is the
    embedding output (after pre-norm where there is one), index i the output of block i; negative
    indices count back."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = PatchEmbedding(cfg)
        self.pre_norm = (
            nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.pre_norm else nn.Identity()
        )
        self.layers = encoder_blocks(cfg)
        self.post_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = AttentionPoolingHead(cfg) if cfg.pooling == "head" else None

    def hidden_states(self, pixel_values: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """States 0..upto (all of them by default); later blocks are not run at all."""
        n = len(self.layers)
        upto = n if upto is None else upto
        x = self.pre_norm(self.embeddings(pixel_values))
        states = [x]
        for block in self.layers[:upto]:
            x = block(x)
            states.append(x)
        return states

    def select(self, pixel_values: torch.Tensor, layer: int | list[int], strategy: str) -> torch.Tensor:
        """LLaVA's feature selection: one layer or several concatenated on channels;
        'default' drops the class token, 'full' keeps it. Returns [B, N, D * n_layers]."""
        if strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy must be 'default' or 'full', got {strategy!r}")
        layers = [layer] if isinstance(layer, int) else list(layer)
        count = len(self.layers) + 1
        for i in layers:
            if not -count <= i < count:
                raise ValueError(f"vision feature layer {i} out of range for {count} hidden states")
        wanted = [i % count for i in layers]
        states = self.hidden_states(pixel_values, upto=max(wanted))
        x = torch.cat([states[i] for i in wanted], dim=-1)
        return x[:, 1:] if strategy == "default" else x

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(last hidden state [B, T, D], pooled [B, D]), as Hugging Face returns them.

        "cls" (CLIP): the state before post-norm [B, 1 + N, D], and the class token after it.
        "head" / "none" (SigLIP): every state after post-norm [B, N, D], and the probe's pooling
        of them (None without a head)."""
        x = self.hidden_states(pixel_values)[-1]
        if self.cfg.pooling == "cls":
            return x, self.post_norm(x[:, 0])
        x = self.post_norm(x)
        return x, self.head(x) if self.head is not None else None
