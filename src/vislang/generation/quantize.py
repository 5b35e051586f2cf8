"""Reduced-precision weights for CPU decoding, where every token reads every weight.

int8 weight-only: each output row of a linear layer is scaled to [-127, 127] and stored as int8
with its bf16 scale; the matmul runs on int8 weights and bf16 activations (PyTorch's
`_weight_int8pack_mm`), and the result returns to the residual stream's dtype. A quarter of fp32's
bytes per token. bf16: every LM weight stored in bf16, half the bytes, activations cast around it.
The vision tower and projector stay fp32: they run once per image, not once per token.

What stays fp32, because measurement said so (the default model's world eval, 160 questions
answered in batches of 16: 26 answers change with everything in int8, 19 with only lm_head kept
fp32, 4 with lm_head and prefill kept fp32):
- lm_head (formats "bf16" and "int8"; "int8-full" rounds it too, the fastest and least exact).
  Answers are often decided by a few tenths of a logit between two tokens ("0" or "1"), and the
  head is where rounding moves logits most directly. A tied head costs no memory: it is the
  embedding table, which stays fp32 anyway.
- prefill (`prefill_fp32`): it is compute-bound, so fewer weight bytes buy
nothing there, while rounding the prompt's activations (image tokens above all) to bf16 changes the
first answer token, which for a short answer is the answer. Every call under `prefill()` (what
generate and the engine wrap their prefills in, however short: the tail after a cached prefix is a
few tokens) and every call with more than PREFILL_ROWS rows uses the fp32 weights; decoding a batch of
up to PREFILL_ROWS sequences uses the reduced weights. The cost
is memory: the fp32 weights are kept beside the reduced ones.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.linear import ONEDNN, Linear, PackedLinear, fast_linear

FORMATS = ("fp32", "bf16", "int8", "int8-full", "q4", "q8")
PREFILL_ROWS = 16
_PREFILLING = threading.local()  # per thread: the engine's model thread, a caller's generate


def prefilling() -> bool:
    """Whether this thread is inside `prefill()`."""
    return getattr(_PREFILLING, "on", False)


@contextmanager
def prefill():
    """Calls inside run the fp32 weights of reduced layers that keep them (a prompt, not a decode step)."""
    before = getattr(_PREFILLING, "on", False)
    _PREFILLING.on = True
    try:
        yield
    finally:
        _PREFILLING.on = before


class ReducedLinear(nn.Module):
    """A linear layer whose decode-time weights are stored in fewer bytes (see subclasses)."""

    def __init__(self, linear: nn.Linear, prefill_fp32: bool):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        # a plain attribute: outside the state dict and outside the bytes a decode step reads
        self.fp32_weight = linear.weight.detach() if prefill_fp32 else None

    def reduced(self, flat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if self.fp32_weight is not None and (flat.shape[0] > PREFILL_ROWS or prefilling()):
            y = fast_linear(flat, self.fp32_weight.to(x.dtype))
        else:
            y = self.reduced(flat).to(x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Int8Linear(ReducedLinear):
    def __init__(self, linear: nn.Linear, prefill_fp32: bool = False):
        super().__init__(linear, prefill_fp32)
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))

    def reduced(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight, self.scale)


class Bf16Linear(ReducedLinear):
    """packed: the bf16 weight in oneDNN's own layout (a PackedLinear), read faster; it is then not
    part of the state dict."""

    def __init__(self, linear: nn.Linear, prefill_fp32: bool = False, packed: bool = False):
        super().__init__(linear, prefill_fp32)
        weight = linear.weight.detach().to(torch.bfloat16)
        self.packed = PackedLinear(weight) if packed and ONEDNN else None
        if self.packed is None:
            self.register_buffer("weight", weight)

    def reduced(self, flat: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return self.packed(flat)
        return F.linear(flat.to(torch.bfloat16), self.weight)


def quantize_decoder(
    decoder: nn.Module, fmt: str, fuse: bool = False, prefill_fp32: bool = True
) -> nn.Module:
    """Prepare a decoder LM for inference, in place: LoRA adapters folded in, q/k/v and gate/up
    fused into one matmul each (`fuse`), and every linear layer stored in `fmt` (lm_head only for
    "int8-full", untied then from the embeddings, which stay fp32: a lookup reads one row).
    With `fuse`, fp32 layers also take oneDNN's own weight layout (PackedLinear), except a head
    tied to the embeddings, which would need a second copy and is read at full speed as it is.

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
    head = getattr(decoder, "lm_head", None)
    if fmt in ("q4", "q8"):
        return _to_blocks(decoder, fmt)
    if fmt == "fp32":
        if fuse and decoder.embed_tokens.weight.dtype == torch.float32:
            from .native_step import attach_native_step

            # the native step reads the plain rows (2.3x faster per token than PyTorch op by op on
            # oneDNN's layout, benchmarks/decode_step.py); without it, oneDNN's layout
            if not attach_native_step(decoder) and ONEDNN:
                _replace_linears(decoder, lambda child: child is not head, PackedLinear.of)
        return decoder
    if fmt == "bf16":
        make = partial(Bf16Linear, prefill_fp32=prefill_fp32, packed=fuse)
    else:
        make = partial(Int8Linear, prefill_fp32=prefill_fp32)
    _replace_linears(decoder, lambda child: child is not head or fmt == "int8-full", make)
    if fmt == "int8-full" and hasattr(decoder, "tie"):
        decoder.tie = False  # lm_head now has its own copy
    return decoder


def _to_blocks(decoder: nn.Module, fmt: str) -> nn.Module:
    """Every linear layer in llama.cpp-style blocks (generation/blocks.py), the head in q8 (as
    llama.cpp's own Q4 files store it: the head decides between close tokens); layers already in
    blocks (read from a GGUF file) stay as they are. A fused decoder also gets the native step."""
    from .blocks import BlockLinear
    from .native_step import attach_native_step

    head = getattr(decoder, "lm_head", None)
    _replace_linears(
        decoder, lambda c: c is not head and c.in_features % 64 == 0, lambda c: BlockLinear.quantize(c, fmt)
    )
    if isinstance(head, (nn.Linear, Linear)) and head.in_features % 64 == 0:
        decoder.lm_head = BlockLinear.quantize(head, "q8")
        if hasattr(decoder, "tie"):
            decoder.tie = False  # the head has its own blocks; the embeddings stay fp32 for lookups
    attach_native_step(decoder)
    return decoder


def _replace_linears(module: nn.Module, chosen, make) -> None:
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (nn.Linear, Linear) and chosen(child):
                setattr(parent, name, make(child))


def weight_bytes_per_token(decoder: nn.Module) -> int:
    """Bytes one batch-1 decode step must read: every weight once, but of an untied embedding
    table only the row it looks up (a tied table is read whole, by lm_head)."""
    tensors = {id(t): t for t in list(decoder.parameters()) + list(decoder.buffers())}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    emb = decoder.embed_tokens.weight
    if getattr(decoder.lm_head, "weight", None) is not emb:
        total -= (emb.shape[0] - 1) * emb.shape[1] * emb.element_size()
    return total
