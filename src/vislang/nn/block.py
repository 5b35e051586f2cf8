"""The pre-LayerNorm transformer block of CLIP-style encoders (vision and text towers)."""

from torch import nn

from .attention import Attention
from .mlp import MLP


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, hidden: int, act: str, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, n_heads, qkv_bias=True, o_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, hidden, act)

    def forward(self, x, mask=None):
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


def encoder_blocks(cfg) -> nn.ModuleList:
    """cfg.num_hidden_layers blocks as a CLIP-style config describes them (hidden_size,
    num_attention_heads, intermediate_size, hidden_act, layer_norm_eps)."""
    c = cfg
    shape = (c.hidden_size, c.num_attention_heads, c.intermediate_size, c.hidden_act, c.layer_norm_eps)
    return nn.ModuleList(EncoderBlock(*shape) for _ in range(c.num_hidden_layers))
