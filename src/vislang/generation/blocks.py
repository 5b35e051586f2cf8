"""Block-quantized linear layers: llama.cpp's Q4_1 / Q4_0 / Q8_0 blocks, run as they are.

A row of a weight matrix is cut into blocks of 32 values, each stored with an fp16 scale:
- q4: 4-bit q in 0..15, value = d * q + m (m an fp16 minimum per block; GGUF's Q4_1, and Q4_0
  with m = -8d, exactly). 20 bytes per 32 values: 0.63 bytes a weight.
- q8: 8-bit q, value = d * q (GGUF's Q8_0). 34 bytes per 32 values.
A GGUF file's blocks are used as stored (only the nibbles are reordered, see kernels/qdot.h); any
other checkpoint is quantized here the way llama.cpp does it (`quantize_q4`, `quantize_q8`).

Decoding (a few rows) runs the native integer kernels on activations quantized to 8 bits per
block, as llama.cpp does; a prompt (more than PREFILL_ROWS rows, or under `prefill()`) expands the
matrix to fp32 for the call and runs the fp32 matmul, so prompts keep fp32 activations. Without
the native kernels, every call expands the matrix in PyTorch (correct, slower).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from ..kernels import native
from ..nn.linear import fast_linear
from .quantize import PREFILL_ROWS, prefilling

Q4, Q8 = 0, 1
KINDS = {"q4": Q4, "q8": Q8}
BLOCK = 32
GROUP_BYTES = {Q4: 32, Q8: 64}  # bytes of 64 values
_SCRATCH = threading.local()  # per thread: the prompt path's fp32 buffer (see BlockLinear._expanded)


def quantize_q4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(qs, d, m) of an [N, K] matrix: per block of 32, d = (max - min) / 15 and m = min in fp16."""
    n, k = w.shape
    blocks = w.detach().float().reshape(n, k // BLOCK, BLOCK)
    low, high = blocks.amin(-1), blocks.amax(-1)
    d, m = ((high - low) / 15).half(), low.half()
    df, mf = d.float()[..., None], m.float()[..., None]
    q = torch.where(df > 0, (blocks - mf) / torch.where(df > 0, df, 1), 0).round().clamp(0, 15)
    return pack_nibbles(q.to(torch.uint8).reshape(n, k)), d, m


def quantize_q8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(qs, d, empty) of an [N, K] matrix: per block of 32, d = max |w| / 127 in fp16."""
    n, k = w.shape
    blocks = w.detach().float().reshape(n, k // BLOCK, BLOCK)
    d = (blocks.abs().amax(-1) / 127).half()
    df = d.float()[..., None]
    q = torch.where(df > 0, blocks / torch.where(df > 0, df, 1), 0).round().clamp(-127, 127)
    return q.to(torch.int8).reshape(n, k).view(torch.uint8), d, torch.empty(0, dtype=torch.half)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """[N, K] values 0..15 -> [N, K/2] bytes: per 64 values, byte i = value i | value 32 + i << 4."""
    n, k = q.shape
    pairs = q.reshape(n, k // 64, 2, 32)
    return (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(n, k // 2)


def unpack_nibbles(qs: torch.Tensor) -> torch.Tensor:
    n, half = qs.shape
    groups = qs.reshape(n, half // 32, 1, 32)
    return torch.cat([groups & 15, groups >> 4], dim=2).reshape(n, 2 * half)


def interleave(qs: torch.Tensor, group_bytes: int, back: bool = False) -> torch.Tensor:
    """Rows four at a time, group by group (what kernels/decode.cpp reads as one stream); rows past
    the last full four stay plain after them. back: the inverse."""
    n, row = qs.shape
    quads, groups = n // 4, row // group_bytes
    head = qs[: 4 * quads].reshape(quads, *((groups, 4) if back else (4, groups)), group_bytes)
    head = head.transpose(1, 2).reshape(4 * quads, row)
    return torch.cat([head, qs[4 * quads :]])


def dequantize(
    kind: int, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor, interleaved=False, use_native=True
) -> torch.Tensor:
    """The fp32 [N, K] matrix (native kernel when built, else PyTorch ops)."""
    ext = native() if use_native else None
    if ext is not None:
        return ext.dequantize(kind, interleaved, qs, d, m)
    if interleaved:
        qs = interleave(qs, GROUP_BYTES[kind], back=True)
    n = d.shape[0]
    if kind == Q4:
        q = unpack_nibbles(qs).float().reshape(n, -1, BLOCK)
        return (q * d.float()[..., None] + m.float()[..., None]).reshape(n, -1)
    q = qs.view(torch.int8).float().reshape(n, -1, BLOCK)
    return (q * d.float()[..., None]).reshape(n, -1)


def from_gguf(kind_name: str, raw: np.ndarray) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kind, qs, d, m) from a GGUF tensor's raw rows [N, bytes] of Q4_0, Q4_1 or Q8_0 blocks.

    ggml's 4-bit block: fp16 d, (Q4_1: fp16 m), 16 bytes whose low nibbles are values 0..15 and
    high nibbles 16..31. The numbers stay as stored; only the nibbles move to this file's order.
    """
    n = raw.shape[0]
    size = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}[kind_name]
    blocks = np.ascontiguousarray(raw).reshape(n, -1, size)
    d = torch.from_numpy(blocks[:, :, 0:2].copy().view(np.float16)[..., 0])
    if kind_name == "Q8_0":
        qs = torch.from_numpy(blocks[:, :, 2:].copy()).reshape(n, -1)
        return Q8, qs, d, torch.empty(0, dtype=torch.half)
    start = 4 if kind_name == "Q4_1" else 2
    packed = torch.from_numpy(blocks[:, :, start:].copy())  # [N, nb, 16]
    values = torch.cat([packed & 15, packed >> 4], dim=2).reshape(n, -1)
    if kind_name == "Q4_1":
        m = torch.from_numpy(blocks[:, :, 2:4].copy().view(np.float16)[..., 0])
    else:  # Q4_0: value = d * (q - 8); -8d is exact in fp16
        m = -8 * d
    return Q4, pack_nibbles(values), d, m


class BlockLinear(nn.Module):
    """An inference-only linear layer on q4 / q8 blocks (see the module docstring)."""

    def __init__(self, kind: int, qs, d, m, bias: torch.Tensor | None = None):
        super().__init__()
        self.kind = kind
        self.out_features, self.in_features = d.shape[0], d.shape[1] * BLOCK
        if self.in_features % 64 or self.in_features > 32768:
            raise ValueError(
                f"block formats need in_features a multiple of 64, at most 32768: {self.in_features}"
            )
        self.register_buffer("qs", qs.contiguous())
        self.register_buffer("d", d.contiguous())
        self.register_buffer("m", m.contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.interleaved = False  # see interleave(): set by the native decode step

    @classmethod
    def quantize(cls, linear: nn.Linear, fmt: str) -> BlockLinear:
        make = quantize_q4 if fmt == "q4" else quantize_q8
        return cls(KINDS[fmt], *make(linear.weight), bias=linear.bias)

    @classmethod
    def concat(cls, parts: list[BlockLinear]) -> BlockLinear:
        """One layer computing the parts' outputs side by side (blocks are per row: exact)."""
        kinds = {p.kind for p in parts}
        if any(p.interleaved for p in parts):
            raise ValueError("fuse layers before the native step interleaves their rows")
        if len(kinds) != 1:
            raise ValueError("fusing layers of different block formats")
        bias = None
        if any(p.bias is not None for p in parts):
            bias = torch.cat([p.bias if p.bias is not None else torch.zeros(p.out_features) for p in parts])
        cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
        return cls(parts[0].kind, cat("qs"), cat("d"), cat("m") if parts[0].kind == Q4 else parts[0].m, bias)

    def interleave(self) -> None:
        """Store rows four at a time (once): the native kernels then read them as one stream,
        which the hardware prefetcher follows where four separate rows were slower."""
        if not self.interleaved:
            self.qs = interleave(self.qs, GROUP_BYTES[self.kind])
            self.interleaved = True

    def _expanded(self, ext) -> torch.Tensor:
        """The fp32 matrix for one prompt matmul, in this thread's reused buffer (a fresh tensor per
        layer made the kernel fault in new pages each time: 1.7x slower prompts)."""
        if ext is None:
            return self.weight_fp32()
        size = self.out_features * self.in_features
        buffer = getattr(_SCRATCH, "buffer", None)
        if buffer is None or buffer.numel() < size:
            buffer = _SCRATCH.buffer = torch.empty(size)
        out = buffer[:size].view(self.out_features, self.in_features)
        return ext.dequantize(self.kind, self.interleaved, self.qs, self.d, self.m, out)

    def weight_fp32(self) -> torch.Tensor:
        return dequantize(self.kind, self.qs, self.d, self.m, self.interleaved)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        ext = native()
        if ext is not None and flat.shape[0] <= PREFILL_ROWS:
            # a decode step: 8-bit activations, integer kernels; a prompt's few rows (the head's
            # last position): fp32 activations, each row expanded where it is read
            run = ext.qmatmul_fp32 if prefilling() else ext.qmatmul
            y = run(self.kind, self.interleaved, self.qs, self.d, self.m, flat)
            if self.bias is not None:
                y = y + self.bias
        else:
            y = fast_linear(flat, self._expanded(ext), self.bias)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        name = {Q4: "q4", Q8: "q8"}[self.kind]
        return (
            f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, {name} blocks of {BLOCK}"
        )
