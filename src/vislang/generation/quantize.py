"""Reduced-precision weights for CPU decoding, where every token reads every weight.

int8 weight-only: each output row of a linear layer is scaled to [-127, 127] and stored as int8
with its fp32 scale; the matmul runs on int8 weights and bf16 activations (PyTorch's
`_weight_int8pack_mm`), and the result returns to the residual stream's dtype. A quarter of fp32's
bytes per token. bf16: every LM weight stored in bf16, half the bytes, activations cast around it.
The vision tower and projector stay fp32: they run once per image, not once per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FORMATS = ("fp32", "bf16", "int8")


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        )
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scale).to(x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Bf16Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        return y if self.bias is None else y + self.bias


def quantize_decoder(decoder: nn.Module, fmt: str, fuse: bool = False) -> nn.Module:
    """Prepare a decoder LM for inference, in place: LoRA adapters folded in, q/k/v and gate/up
    fused into one matmul each (`fuse`), and every linear layer (lm_head included, untied from the
    embeddings, which stay fp32: a lookup reads one row) stored in `fmt`.

    Fusing concatenates output rows, so each row keeps its own int8 scale: the same numbers as
    quantizing the layers apart, in fewer, larger matmuls.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "fp32" and not fuse:
        return decoder
    from ..train.lora import merge_lora

    merge_lora(decoder)  # adapters fold into the weights before fusing or rounding
    if fuse:
        for module in decoder.modules():
            if hasattr(module, "fuse"):
                module.fuse()
    if fmt == "fp32":
        return decoder
    make = Int8Linear if fmt == "int8" else Bf16Linear
    for parent in list(decoder.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, make(child))
    if hasattr(decoder, "tie"):
        decoder.tie = False  # lm_head now has its own copy
    return decoder


def weight_bytes_per_token(decoder: nn.Module) -> int:
    """Bytes one batch-1 decode step must read: every weight once, but of an untied embedding
    table only the row it looks up (a tied table is read whole, by lm_head)."""
    tensors = {id(t): t for t in list(decoder.parameters()) + list(decoder.buffers())}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    emb = decoder.embed_tokens.weight
    if getattr(decoder.lm_head, "weight", None) is not emb:
        total -= (emb.shape[0] - 1) * emb.shape[1] * emb.element_size()
    return total
