"""What a forward pass returns."""

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    logits: torch.Tensor | None = None  # [B, T, V]
    loss: torch.Tensor | None = None
    image_features: list[torch.Tensor] | None = None  # one [N_i, D] per image

    def __getitem__(self, key: str):
        return getattr(self, key)
