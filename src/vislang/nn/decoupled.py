"""An embedding and an output head split in two tables: the pretrained vocabulary and a few added
tokens kept apart (IDEFICS trains the added ones while the rest stays frozen). Ids past the first
table's size read the second; the head's logits are the two tables' logits side by side."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DecoupledEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, num_additional: int, dim: int):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim).normal_())
        self.additional_embedding = nn.Embedding(num_additional, dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        added = input_ids >= self.num_embeddings
        x = F.embedding(input_ids.masked_fill(added, 0), self.weight)
        extra = self.additional_embedding((input_ids - self.num_embeddings).clamp(min=0))
        return torch.where(added[..., None], extra, x)


class DecoupledLinear(nn.Module):
    def __init__(self, dim: int, out_features: int, out_additional: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, dim).normal_(std=dim**-0.5))
        self.additional_fc = nn.Linear(dim, out_additional, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.linear(x, self.weight), self.additional_fc(x)], dim=-1)
