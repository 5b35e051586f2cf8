"""A whole decode step in one native call, for a Llama-family decoder on block weights.

At batch 1 the step is ~200 small operations, and each costs microseconds of PyTorch dispatch
from Python: milliseconds per token, more than reading the q4 weights takes. `attach_native_step`
hands the one-token case of `Decoder.forward` to kernels/decode.cpp, which runs every layer in
one OpenMP region on the caller's KV cache tensors. Everything else (prompts, other decoders,
caches without per-row decode positions, sliding windows) stays on the PyTorch path.
"""

from __future__ import annotations

import torch
from torch import nn

from ..kernels import native
from ..nn.norms import RMSNorm
from ..text.decoder import DecoderLayer
from .blocks import BlockLinear
from .quantize import prefilling

F32 = 2  # kernels/qdot.h: a plain fp32 matrix
MAX_ROWS = 64  # sequences one native step takes (kernels/decode.cpp)


def _mat(layer: nn.Module) -> tuple:
    bias = layer.bias.detach() if layer.bias is not None else torch.empty(0)
    if isinstance(layer, BlockLinear):
        layer.interleave()
        return (layer.kind, True, layer.qs, layer.d, layer.m, bias)
    return (F32, False, layer.weight.detach(), torch.empty(0), torch.empty(0), bias)


def _fits(layer) -> bool:
    """A block layer, or a plain fp32 one the step reads as it is."""
    if isinstance(layer, BlockLinear):
        return True
    w = getattr(layer, "weight", None)
    return (
        isinstance(layer, nn.Linear)
        and w is not None
        and w.dtype == torch.float32
        and w.is_contiguous()
        and layer.in_features % 16 == 0
    )


def attach_native_step(decoder: nn.Module) -> bool:
    """Give `decoder` a native one-token step if it fits; returns whether it did."""
    built = _build(decoder)
    if built is None:
        return False
    decoder.fast_decode = NativeStep(decoder, *built)
    return True


def _build(decoder: nn.Module):
    """(native model, whether it holds the head), or None where the decoder does not fit."""
    ext = native()
    cfg = getattr(decoder, "cfg", None)
    if ext is None or cfg is None or not hasattr(decoder, "layers") or getattr(cfg, "window", None):
        return None
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return None
    norms, mats = [], []
    for layer in decoder.layers:  # a Llama-family layer (an OPT or cross-attention one does not fit)
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        parts = [
            getattr(attn, "qkv_proj", None),
            getattr(attn, "o_proj", None),
            getattr(mlp, "gate_up_proj", None),
            getattr(mlp, "down_proj", None),
        ]
        norms_here = [
            getattr(layer, "input_layernorm", None),
            getattr(layer, "post_attention_layernorm", None),
        ]
        if not isinstance(layer, DecoderLayer) or not all(isinstance(n, RMSNorm) for n in norms_here):
            return None
        if not all(p is not None and _fits(p) for p in parts):
            return None
        norms += [n.weight.detach() for n in norms_here]
        mats += [_mat(p) for p in parts]
    norms.append(decoder.norm.weight.detach())
    head = decoder.lm_head if _fits(decoder.lm_head) else None
    if head is not None:
        mats.append(_mat(head))
    model = ext.DecodeModel(
        norms, mats, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, float(cfg.rms_norm_eps)
    )
    return model, head is not None


class NativeStep:
    def __init__(self, decoder: nn.Module, model, has_head: bool):
        self.decoder, self.model, self.has_head = decoder, model, has_head

    def __deepcopy__(self, memo):
        """A copied decoder gets its own native model, built from its own tensors on first use."""
        return _LazyStep(memo[id(self.decoder)])

    def __call__(self, x, attention_mask, position_ids, cache, logits: bool):
        """Logits [B, 1, V] (hidden [B, 1, D] when not logits) for one new token per row, or None
        when this call is not one the native step takes."""
        if (
            prefilling()
            or not hasattr(cache, "decode_positions")
            or torch.is_grad_enabled()
            and x.requires_grad
        ):
            return None
        if x.dtype != torch.float32 or cache.keys[0].dtype != torch.float32 or x.shape[0] > MAX_ROWS:
            return None  # the native step keeps fp32 activations and caches, and up to 64 rows
        B = x.shape[0]
        cos, sin = self.decoder.rotary(position_ids, torch.float32)  # [B, 1, head_dim]
        keys, values = cache.keys, cache.values
        native_logits = logits and self.has_head
        out = self.model.step(
            x[:, 0],
            keys,
            values,
            cache.decode_positions(B),
            attention_mask,
            cos[:, 0],
            sin[:, 0],
            native_logits,
        )
        cache.advance(1)
        if logits and not native_logits:
            out = self.decoder.lm_head(out)
        return out[:, None]


class _LazyStep:
    def __init__(self, decoder: nn.Module):
        self.decoder = decoder

    def __call__(self, *args):
        built = _build(self.decoder)
        self.decoder.fast_decode = None if built is None else NativeStep(self.decoder, *built)
        return None if built is None else self.decoder.fast_decode(*args)

    def __deepcopy__(self, memo):
        return _LazyStep(memo[id(self.decoder)])
