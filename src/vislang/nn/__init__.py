"""Shared building blocks: attention, masks, RoPE, norms, MLPs, KV cache."""

from .activations import get_activation
from .attention import Attention
from .block import EncoderBlock, encoder_blocks
from .kv_cache import KVCache
from .linear import Linear, fast_linear
from .masks import build_mask, positions_from_mask
from .mlp import MLP, GatedMLP
from .norms import LayerNorm, RMSNorm
from .rope import RotaryEmbedding, apply_rope

__all__ = [
    "Attention",
    "EncoderBlock",
    "encoder_blocks",
    "GatedMLP",
    "KVCache",
    "LayerNorm",
    "Linear",
    "MLP",
    "RMSNorm",
    "RotaryEmbedding",
    "apply_rope",
    "build_mask",
    "get_activation",
    "fast_linear",
    "positions_from_mask",
]
