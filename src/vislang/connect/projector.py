"""Projectors from vision features to the language model's embedding space (LLaVA)."""

import torch
from torch import nn

from ..nn import Linear, get_activation


class LinearProjector(nn.Module):
    """LLaVA 1.0: one linear map."""

    def __init__(self, vision_dim: int, text_dim: int, bias: bool = True):
        super().__init__()
        self.linear_1 = Linear(vision_dim, text_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_1(x)


class MLPProjector(nn.Module):
    """LLaVA 1.5 (mlp2x_gelu): linear -> activation -> linear."""

    def __init__(self, vision_dim: int, text_dim: int, act: str = "gelu", bias: bool = True):
        super().__init__()
        self.linear_1 = Linear(vision_dim, text_dim, bias=bias)
        self.act = get_activation(act)
        self.linear_2 = Linear(text_dim, text_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))
