"""Shared building blocks: attention, masks, RoPE, norms, MLPs, KV cache."""

from .activations import get_activation
from .attention import Attention
from .block import EncoderBlock
from .kv_cache import KVCache
from .masks import build_mask, positions_from_mask
from .mlp import MLP, GatedMLP
from .norms import LayerNorm, RMSNorm
from .rope import RotaryEmbedding, apply_rope

__all__ = [
    "Attention",
    "EncoderBlock",
    "GatedMLP",
    "KVCache",
    "LayerNorm",
    "MLP",
    "RMSNorm",
    "RotaryEmbedding",
    "apply_rope",
    "build_mask",
    "get_activation",
    "positions_from_mask",
]
