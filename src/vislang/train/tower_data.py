"""The tower's data: sample i of the stream as the tower's inputs and labels, packed the Qwen way.

Sample i is a pure function of (seed, i): the family from the mixture's own draw, the canvas size and
the video frames kept from ours, the content from the world's generator. Pixels are made here rather
than by QwenImageTransform.images (the same values, bit for bit, 40 times faster on a busy CPU).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..data.stream import MixtureDataset
from ..data.world import WorldConfig, generate_sample
from ..processing.qwen2vl import QwenImageTransform
from ..processing.transforms import rescale_normalize
from .dense_targets import TowerItem, tower_items

if TYPE_CHECKING:
    from .tower import TowerConfig

TOWER_SALT = zlib.crc32(b"vislang-tower")  # canvas size and video frames of a sample, apart from its content


@dataclass
class TowerBatch:
    pixel_values: torch.Tensor  # [N, C * temporal * p * p]
    grid_thw: torch.Tensor  # [n, 3]
    patch: dict[str, torch.Tensor]  # [N] int64 class targets; "box" [N, 4] float32
    image: dict[str, torch.Tensor]  # [n, counters] int64

    @property
    def lengths(self) -> list[int]:
        return self.grid_thw.prod(-1).tolist()

    def to(self, device: torch.device) -> TowerBatch:
        patch = {k: v.to(device) for k, v in self.patch.items()}
        image = {k: v.to(device) for k, v in self.image.items()}
        return TowerBatch(self.pixel_values.to(device), self.grid_thw, patch, image)


class FastPatches:
    """The transform's pixel_values bit for bit, for a fraction of its cost: patches are cut from the uint8
    pixels, then each byte becomes its rescaled, normalized value through a 3 x 256 table. In numpy: on a
    busy CPU, torch's threaded small ops wait on each other (50 ms an image against 1 ms here)."""

    def __init__(self, transform: QwenImageTransform):
        self.transform = transform
        levels = torch.arange(256, dtype=torch.uint8).view(1, 256, 1).expand(3, 256, 1)  # [C, H=256, W=1]
        self.table = rescale_normalize(levels, transform).numpy().reshape(3, 256)  # the very same arithmetic

    def __call__(self, frames: list[Image.Image]) -> tuple[np.ndarray, tuple[int, int, int]]:
        """[N, C * tp * p * p] float32 in `patchify`'s order, and the grid (t, h, w)."""
        t = self.transform
        p, tp, m = t.patch_size, t.temporal_patch_size, t.merge_size
        h, w = t.resized_size(frames[0].height, frames[0].width)
        frames = [f if f.size == (w, h) else f.resize((w, h), resample=t.resample) for f in frames]
        pixels = np.stack([np.asarray(f.convert("RGB")) for f in frames])  # [T, H, W, C] uint8
        if pad := -len(pixels) % tp:  # a still image is its frame repeated
            pixels = np.concatenate([pixels, np.repeat(pixels[-1:], pad, axis=0)])
        gt, gh, gw, c = len(pixels) // tp, h // p, w // p, pixels.shape[-1]
        blocks = pixels.reshape(gt, tp, gh // m, m, p, gw // m, m, p, c)
        # -> (t, block row, block col, row in block, col in block, channel, frame, pixel row, pixel col)
        rows = blocks.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7).reshape(gt * gh * gw, c, tp * p * p)
        out = np.empty(rows.shape, np.float32)
        for k in range(c):
            out[:, k] = self.table[k][rows[:, k]]
        return out.reshape(len(out), -1), (gt, gh, gw)


def collate(items: list[TowerItem], patches: FastPatches) -> TowerBatch:
    """Images and videos of any sizes packed the Qwen way: their patches concatenated, one grid row each."""
    pixels = []
    for item in items:
        pv, grid = patches(item.frames)
        if grid != item.grid:
            raise ValueError(f"the patches make a grid of {grid} but the labels cover {item.grid}")
        pixels.append(pv)
    return TowerBatch(
        torch.from_numpy(np.concatenate(pixels)),
        torch.tensor([item.grid for item in items], dtype=torch.long),
        {k: torch.from_numpy(np.concatenate([it.patch[k] for it in items])) for k in items[0].patch},
        {k: torch.from_numpy(np.stack([it.image[k] for it in items])) for k in items[0].image},
    )


class TowerData:
    """Step s of a split is samples s * batch_size ... (s + 1) * batch_size - 1, each a pure function of
    (seed, index): the family from the mixture's draw, the canvas size and video frames from our own."""

    def __init__(self, cfg: TowerConfig, split: str = "train", n: int | None = None):
        self.cfg, self.split = cfg, split
        n = n or cfg.steps * cfg.batch_size
        self.mixture = MixtureDataset(cfg.families, n, split, cfg.seed)
        v = cfg.vision
        self.transform = QwenImageTransform(
            min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, patch_size=v.patch_size,
            temporal_patch_size=v.temporal_patch_size, merge_size=v.spatial_merge_size,
        )  # fmt: skip
        self.patches = FastPatches(self.transform)

    def items(self, i: int) -> list[TowerItem]:
        cfg, v = self.cfg, self.cfg.vision
        draw = np.random.default_rng(np.random.SeedSequence([TOWER_SALT, cfg.seed, i]))
        width, height = cfg.sizes[int(draw.integers(len(cfg.sizes)))]
        family = self.mixture.family_of(i)
        sample = generate_sample(family, self.split, cfg.seed, i, WorldConfig(width, height))
        pairs = None
        if family == "video":
            whole = sample.meta["frames"] // v.temporal_patch_size
            pairs = sorted(int(k) for k in draw.choice(whole, min(cfg.video_pairs, whole), replace=False))
        resized = self.transform.resized_size(height, width)
        return tower_items(sample, resized, pairs, v.patch_size, v.spatial_merge_size, v.temporal_patch_size)

    def batch(self, step: int) -> TowerBatch:
        size = self.cfg.batch_size
        return collate(
            [it for i in range(step * size, (step + 1) * size) for it in self.items(i)], self.patches
        )
