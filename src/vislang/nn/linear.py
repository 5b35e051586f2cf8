"""nn.Linear whose inference matmul runs on oneDNN, where PyTorch's default fp32 path is slow.

PyTorch sends fp32 CPU matmuls to MKL. On the AMD EPYC this was measured on, MKL's kernels read
SmolLM2's weights at 17 GB/s in a batch-1 decode step and did not use the second core; oneDNN's
kernel (the one PyTorch's compiler emits for frozen CPU graphs) reached 31-45 GB/s on the same
weights, and was about twice as fast at every row count from 1 to 1024. The results agree to
rounding (a different summation order), not bit for bit.

Only calls that need no gradient take this path: oneDNN's op has no backward, so training runs
F.linear as before. `ONEDNN = False` turns the path off for the whole process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _onednn_available()


def fast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, on oneDNN when the call is CPU fp32, needs no gradient and is not under autocast
    (which the oneDNN op would ignore, leaving fp32 where autocast promised bf16)."""
    if (
        ONEDNN
        and not torch.is_autocast_enabled("cpu")
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and weight.is_contiguous()
        and x.numel() > 0
        and not (torch.is_grad_enabled() and _needs_grad(x, weight, bias))
    ):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def _needs_grad(*tensors) -> bool:
    return any(t is not None and t.requires_grad for t in tensors)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) with `fast_linear` as its matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_linear(x, self.weight, self.bias)


class PackedLinear(nn.Module):
    """An inference-only linear layer whose weight is stored in oneDNN's blocked layout.

    oneDNN reads a weight it has laid out itself faster than a plain row-major one: SmolLM2's 30
    layers took 11 ms instead of 14 ms per batch-1 decode step, 12.5 instead of 18 at batch 8, and
    less at every prefill length measured (bf16 weights: 5.6 instead of 8.7 ms). The layout is
    opaque, so the layer can be neither trained, saved nor deep-copied: `vislang.load(fuse=True)`
    makes these, for serving and decoding. Inputs are cast to the weight's dtype (fp32 or bf16).
    batch_hint: the batch the layout is tuned for (any batch runs; 4 to 128 measured alike).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, batch_hint: int = 8):
        super().__init__()
        if not ONEDNN:
            raise RuntimeError("PackedLinear needs PyTorch built with oneDNN")
        self.out_features, self.in_features = weight.shape
        self.dtype = weight.dtype
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), batch_hint)
        self.register_buffer("weight", packed, persistent=False)
        bias = None if bias is None else bias.detach().to(weight.dtype).clone()
        self.register_buffer("bias", bias, persistent=False)

    @classmethod
    def of(cls, linear: nn.Linear) -> PackedLinear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"{self.in_features}, {self.out_features}, bias={bias}, {self.dtype} in oneDNN's layout"
