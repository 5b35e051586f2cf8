"""Qwen2-VL's patch merger: every 2 x 2 block of neighbouring patches becomes one language-model token."""

import torch
from torch import nn

from ..nn import Linear, RMSNorm


class PatchMerger(nn.Module):
    """norm each patch, concatenate the merge x merge block, MLP (linear, GELU, linear) to the LM width.

    Patches must arrive block by block (the order Qwen2-VL's processor emits). `rms`: Qwen2.5-VL's
    RMSNorm instead of LayerNorm. Submodule names follow the checkpoints (ln_q, mlp.0, mlp.2).
    """

    def __init__(self, vision_dim: int, text_dim: int, merge: int = 2, rms: bool = False):
        super().__init__()
        self.hidden = vision_dim * merge * merge
        self.ln_q = RMSNorm(vision_dim, 1e-6) if rms else nn.LayerNorm(vision_dim, eps=1e-6)
        self.mlp = nn.Sequential(Linear(self.hidden, self.hidden), nn.GELU(), Linear(self.hidden, text_dim))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """[N, vision_dim] -> [N / merge^2, text_dim]"""
        return self.mlp(self.ln_q(patches).reshape(-1, self.hidden))
