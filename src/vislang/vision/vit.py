"""A CLIP-style vision transformer: patch embedding, class token, learned positions, pre-LN blocks."""

from __future__ import annotations

import torch
from torch import nn

from ..config import VisionConfig
from ..nn import EncoderBlock


class PatchEmbedding(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size, bias=False
        )
        self.position_embedding = nn.Embedding(cfg.num_patches + 1, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # [B, D, h, w]
        x = x.flatten(2).transpose(1, 2)  # [B, h*w, D]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        if x.shape[1] != self.position_embedding.num_embeddings:
            raise ValueError(
                f"image gives {x.shape[1] - 1} patches but the model was trained with "
                f"{self.position_embedding.num_embeddings - 1}: resize images to the model's image_size"
            )
        return x + self.position_embedding.weight


class VisionTransformer(nn.Module):
    """hidden_states(pixels) lists the states the way Hugging Face counts them: index 0 is the
    embedding output after pre-norm, index i the output of block i; negative indices count back."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = PatchEmbedding(cfg)
        self.pre_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(
            EncoderBlock(
                cfg.hidden_size,
                cfg.num_attention_heads,
                cfg.intermediate_size,
                cfg.hidden_act,
                cfg.layer_norm_eps,
            )
            for _ in range(cfg.num_hidden_layers)
        )
        self.post_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

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

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last hidden state [B, 1 + N, D], pooled class token after post-norm [B, D])."""
        x = self.hidden_states(pixel_values)[-1]
        return x, self.post_norm(x[:, 0])
