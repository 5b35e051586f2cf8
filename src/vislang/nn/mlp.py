"""Feed-forward blocks: the gated SwiGLU of Llama-style decoders and the plain two-layer MLP of ViTs."""

import torch
from torch import nn

from .activations import get_activation
from .linear import Linear


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)); with act=silu this is SwiGLU."""

    def __init__(self, dim: int, hidden: int, act: str = "silu", bias: bool = False):
        super().__init__()
        self.gate_proj = Linear(dim, hidden, bias=bias)
        self.up_proj = Linear(dim, hidden, bias=bias)
        self.down_proj = Linear(hidden, dim, bias=bias)
        self.act = get_activation(act)
        self.gate_up_proj: nn.Linear | None = None  # set by fuse()

    def fuse(self) -> None:
        """One matmul for gate and up instead of two (inference: the state-dict keys change)."""
        from .attention import concat_linear

        if self.gate_up_proj is not None:
            return
        self.gate_up_proj = concat_linear([self.gate_proj, self.up_proj])
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(self.act(gate) * up)
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class MLP(nn.Module):
    """fc2(act(fc1(x))): CLIP's MLP and, with act=gelu, the GELU MLP."""

    def __init__(
        self, dim: int, hidden: int, act: str = "gelu", bias: bool = True, out_dim: int | None = None
    ):
        super().__init__()
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.fc2 = Linear(hidden, out_dim or dim, bias=bias)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
