"""Qwen2-VL's native-resolution vision transformer, and Qwen2.5-VL's windowed variant.

An image is cut into 14 x 14 patches at whatever size it comes (after `smart_resize`), each patch
stacked with itself in time (temporal_patch 2; a video stacks two consecutive frames), so a patch is
one vector of 3 x 2 x 14 x 14 values. Patches arrive grouped by 2 x 2 merge block (the processor's
order), carry 2D rotary positions (row, column), and attend only within their own frame: several
images or frames are packed into one sequence with block-diagonal attention.

Qwen2.5-VL: RMSNorm, a SwiGLU MLP with bias, and window attention. Patches are reordered window by
window (windows of window_size pixels, partial at the right and bottom edges) and every layer not in
fullatt_block_indexes attends within its window only; the output is put back in the original order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QwenVisionConfig
from ..nn import MLP, GatedMLP, Linear, RMSNorm, fast_linear
from ..nn.rope import rotate, vision_rope


def segment_attention(q, k, v, lengths: list[int]) -> torch.Tensor:
    """Attention within consecutive segments of a packed sequence: q, k, v [N, H, D] -> [N, H, D].

    Segments of equal length run as one batched SDPA call (frames of a video, the full windows of an
    image), so a sequence of many segments costs a few calls, and no N x N mask is ever built.
    """
    out = torch.empty_like(q)
    starts = torch.tensor([0, *lengths]).cumsum(0)[:-1].tolist()
    by_length: dict[int, list[int]] = {}
    for start, n in zip(starts, lengths):
        by_length.setdefault(n, []).append(start)
    for n, group in by_length.items():
        if n == 0:
            continue
        if len(group) == 1 or (len(group) * n == len(q) and group == starts):
            pick = slice(group[0], group[0] + n * len(group))  # one contiguous run: a view, no gather
        else:
            pick = (torch.tensor(group)[:, None] + torch.arange(n)).flatten()
        S = len(group)
        qs, ks, vs = (x[pick].view(S, n, *x.shape[1:]).transpose(1, 2) for x in (q, k, v))  # [S, H, n, D]
        o = F.scaled_dot_product_attention(qs, ks, vs)
        out[pick] = o.transpose(1, 2).reshape(-1, *q.shape[1:])
    return out


class VisionAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.qkv = Linear(dim, 3 * dim, bias=True)
        self.proj = Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor, rope, lengths: list[int]) -> torch.Tensor:
        N = x.shape[0]
        q, k, v = self.qkv(x).view(N, 3, self.n_heads, self.head_dim).unbind(1)  # [N, H, D] each
        # rotary in fp32, as the reference does, whatever the weights' dtype
        q, k = rotate(q.float(), *rope).to(v.dtype), rotate(k.float(), *rope).to(v.dtype)
        return self.proj(segment_attention(q, k, v, lengths).reshape(N, -1))


class VisionBlock(nn.Module):
    def __init__(self, cfg: QwenVisionConfig):
        super().__init__()
        dim = cfg.width
        if cfg.v25:
            self.norm1, self.norm2 = RMSNorm(dim, 1e-6), RMSNorm(dim, 1e-6)
            self.mlp = GatedMLP(dim, cfg.mlp_size, cfg.hidden_act, bias=True)
        else:
            self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            self.mlp = MLP(dim, cfg.mlp_size, cfg.hidden_act)
        self.attn = VisionAttention(dim, cfg.num_heads)

    def forward(self, x, rope, lengths):
        x = x + self.attn(self.norm1(x), rope, lengths)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Conv3d with kernel == stride over one patch is a matmul: one linear over the flat patch. The
    weight keeps the Conv3d shape [D, C, temporal, p, p] so checkpoints load as they are."""

    def __init__(self, cfg: QwenVisionConfig):
        super().__init__()
        p, t = cfg.patch_size, cfg.temporal_patch_size
        self.proj = nn.Module()
        self.proj.weight = nn.Parameter(torch.empty(cfg.width, cfg.in_channels, t, p, p))
        nn.init.kaiming_uniform_(self.proj.weight, a=math.sqrt(5))  # Conv3d's own initialisation

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        w = self.proj.weight
        return fast_linear(patches.to(w.dtype), w.reshape(w.shape[0], -1))


def patch_positions(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """(row, column) of every patch [N, 2], in the processor's order: frame by frame, merge block by
    merge block (row-major), row-major inside a block."""
    out = []
    for t, h, w in grid_thw.tolist():
        rows = torch.arange(h)[:, None].expand(h, w)
        cols = torch.arange(w)[None, :].expand(h, w)
        hw = torch.stack([rows, cols], dim=-1)  # [h, w, 2]
        hw = hw.reshape(h // merge, merge, w // merge, merge, 2).transpose(1, 2).reshape(-1, 2)
        out.append(hw.repeat(t, 1))
    return torch.cat(out)


def frame_lengths(grid_thw: torch.Tensor) -> list[int]:
    """Patches per frame: the segments of full attention."""
    return [h * w for t, h, w in grid_thw.tolist() for _ in range(t)]


def window_order(grid_thw: torch.Tensor, merge: int, window: int) -> tuple[torch.Tensor, list[int]]:
    """Qwen2.5-VL's windows: the merge blocks reordered window by window, and each window's length
    in patches. `window` is the window's side in merge blocks; edge windows are cut short."""
    order, lengths, base = [], [], 0
    for t, h, w in grid_thw.tolist():
        gh, gw = h // merge, w // merge
        blocks = torch.arange(t * gh * gw).view(t, gh, gw)
        for frame in blocks:
            for top in range(0, gh, window):
                for left in range(0, gw, window):
                    win = frame[top : top + window, left : left + window].flatten()
                    order.append(win + base)
                    lengths.append(len(win) * merge * merge)
        base += t * gh * gw
    return torch.cat(order), lengths


class QwenVisionTransformer(nn.Module):
    """Patches [N, C * temporal * p * p] and their grids [n, 3] -> patch states [N, width], in the
    input order (the patch merger then turns every 2 x 2 block into one token)."""

    def __init__(self, cfg: QwenVisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        cfg, m = self.cfg, self.cfg.spatial_merge_size
        grid_thw = torch.as_tensor(grid_thw).reshape(-1, 3).cpu()
        x = self.patch_embed(pixel_values)  # [N, width]
        expected = int(grid_thw.prod(-1).sum())
        if x.shape[0] != expected:
            raise ValueError(f"{x.shape[0]} patches given but the grids {grid_thw.tolist()} hold {expected}")
        cos, sin = vision_rope(patch_positions(grid_thw, m), cfg.width // cfg.num_heads, cfg.rope_theta)
        full = frame_lengths(grid_thw)
        windows, order = full, None
        if cfg.v25 and cfg.window_size:
            blocks, windows = window_order(grid_thw, m, cfg.window_size // m // cfg.patch_size)
            order = (blocks[:, None] * m * m + torch.arange(m * m)).flatten().to(x.device)
            x, cos, sin = x[order], cos[order], sin[order]
        half = cos.shape[-1] // 2
        signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        rope = (cos[:, None].to(x.device), signed[:, None].to(x.device))  # [N, 1, head_dim]
        for i, block in enumerate(self.blocks):
            lengths = full if (order is None or i in cfg.fullatt_block_indexes) else windows
            x = block(x, rope, lengths)
        if order is not None:
            x = x[torch.argsort(order)]
        return x
