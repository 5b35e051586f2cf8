"""Rotary position embeddings (RoPE): 1D with the scaling rules Hugging Face configs name, multimodal
M-RoPE (Qwen2-VL: a (t, h, w) triple per token), and the 2D rotary of Qwen2-VL's vision tower."""

import math

import torch
from torch import nn

ROPE_TYPES = ("default", "linear", "llama3")


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2], scaled as the config asks."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        # positions divided by the factor == frequencies divided by it
        return inv_freq / scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        # between the two wavelength bounds, blend scaled and unscaled smoothly
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, blended, scaled)
    raise ValueError(f"unsupported rope_type {kind!r}; supported: {', '.join(ROPE_TYPES)}")


class RotaryEmbedding(nn.Module):
    """Maps integer positions [B, T] to (cos, sin) tables [B, T, head_dim].

    With `mrope_section` (Qwen2-VL's M-RoPE) positions may also be [3, B, T]: one (t, h, w) triple per
    token. The rotary pairs are cut into three runs of mrope_section[i] pairs, run i turning with axis
    i's position. Text tokens carry t == h == w, so their table equals the 1D one bit for bit, and
    [B, T] positions are read as exactly that.
    """

    def __init__(
        self,
        head_dim: int,
        theta: float = 10000.0,
        scaling: dict | None = None,
        mrope_section: list[int] | None = None,
    ):
        super().__init__()
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        if mrope_section is not None and sum(mrope_section) != head_dim // 2:
            raise ValueError(f"mrope_section {mrope_section} must sum to head_dim / 2 = {head_dim // 2}")
        self.mrope_section = mrope_section
        self.register_buffer("inv_freq", rope_inv_freq(head_dim, theta, scaling), persistent=False)

    def reset_buffers(self, device=None) -> None:
        """Recompute the table, e.g. after the module was built on the meta device."""
        self.inv_freq = rope_inv_freq(self.head_dim, self.theta, self.scaling).to(device)

    @torch.no_grad()
    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # angles in fp32 even under bf16: large positions lose precision otherwise
        freqs = positions[..., None].float() * self.inv_freq.float()  # [B, T, head_dim/2] or [3, B, T, ...]
        if positions.dim() == 3:
            if self.mrope_section is None:
                raise ValueError("(t, h, w) positions need a model with mrope_section")
            runs = freqs.split(self.mrope_section, dim=-1)
            freqs = torch.cat([run[i % 3] for i, run in enumerate(runs)], dim=-1)  # [B, T, head_dim/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rope_for_heads(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RotaryEmbedding's (cos, sin) [B, T, D] in the form `rotate` takes, built once per forward:
    [B, T, 1, D] (broadcast over heads), and sin with its first half negated."""
    half = sin.shape[-1] // 2
    signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    return cos[:, :, None], signed[:, :, None]


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """apply_rope for x [B, T, H, D] with tables from rope_for_heads, in four ops instead of eight.

    rotate_half(x) * sin == roll(x, D/2) * signed_sin exactly (negation is exact), and the sum is
    formed in the same order, so the result equals apply_rope's to the last bit.
    """
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, D]; cos, sin: [B, T, D]."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


def vision_rope(hw_positions: torch.Tensor, head_dim: int, theta: float = 10000.0):
    """Qwen2-VL's 2D rotary for vision patches: (cos, sin) [N, head_dim] in fp32 from (h, w) positions
    [N, 2]. The first quarter of the rotary pairs turns with the row, the second with the column."""
    quarter = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, quarter, 2, dtype=torch.float) / quarter))
    freqs = hw_positions[..., None].float() * inv_freq  # [N, 2, head_dim/4]
    freqs = freqs.flatten(1)  # [N, head_dim/2]: rows' angles then columns'
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()
