"""LoRA (Hu et al., 2021): a frozen linear layer W plus a trainable low-rank update (alpha / r) * B @ A.

B starts at zero, so an adapted model computes exactly what the frozen one did until training moves
it; A starts random so that the first gradient step on B is not zero. The adapter subclasses
nn.Linear and keeps the frozen weight under its own name, so the decoder's state-dict keys do not
change and the adapter's own keys read `...q_proj.lora_A`, the pattern trainable_state() picks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import Linear


class LoRALinear(nn.Linear):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)  # nn.Linear.__init__ would allocate a second weight
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as in the paper's code
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(x, self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain nn.Linear computing the same function: W + scale * B @ A, no extra matmuls."""
        out = Linear(self.in_features, self.out_features, bias=self.bias is not None)
        out = out.to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.scale * (self.lora_B @ self.lora_A))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out.requires_grad_(self.weight.requires_grad)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha}"


def add_lora(module: nn.Module, targets: list[str], rank: int, alpha: float) -> list[str]:
    """Wrap, in place, every nn.Linear child named in `targets` (q_proj, v_proj, ...) with an adapter.

    Returns the qualified names of the wrapped layers; naming no layer at all is an error, since a
    typo would otherwise train nothing.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    wrapped = []
    for parent_name, parent in list(module.named_modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear) and not isinstance(child, LoRALinear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{parent_name}.{name}" if parent_name else name)
    if not wrapped:
        raise ValueError(f"no nn.Linear named any of {targets} to put LoRA adapters on")
    return wrapped


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter into its layer (for inference speed); returns how many were merged.

    The adapters' own parameters are gone afterwards, so save trained weights before merging.
    """
    merged = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
                merged += 1
    return merged


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in module.modules())
