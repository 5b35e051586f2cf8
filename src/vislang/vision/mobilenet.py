"""MobileNetV2 (Sandler et al., 2018): a 3.5M-parameter ImageNet CNN used as a small vision tower.

stem (3x3 conv, stride 2) -> 17 inverted residual blocks -> 1x1 conv to 1280 channels, giving a
[B, 1280, H/32, W/32] grid (7x7 at 224 px) that a projector turns into image tokens. The ImageNet
classifier stays on for sanity checks. BatchNorm runs on its stored statistics (call .eval()).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..nn import Linear

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclass
class MobileNetV2Config:
    stem_channels: int = 32
    feature_channels: int = 1280
    num_classes: int = 1000
    dropout: float = 0.2
    settings: tuple[tuple[int, int, int, int], ...] = INVERTED_RESIDUAL_SETTINGS


class ConvBN(nn.Module):
    """conv (no bias: BatchNorm has one) -> BatchNorm -> ReLU6 unless act=False."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t=1) -> 3x3 depthwise -> 1x1 linear projection; a skip when shapes allow.

    The projection has no activation: a ReLU on the narrow bottleneck would destroy information.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        self.expand = ConvBN(c_in, hidden) if expansion != 1 else None
        self.depthwise = ConvBN(hidden, hidden, kernel=3, stride=stride, groups=hidden)
        self.project = ConvBN(hidden, c_out, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.depthwise(h))
        return x + h if self.residual else h


class MobileNetV2(nn.Module):
    def __init__(self, cfg: MobileNetV2Config | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MobileNetV2Config()
        self.stem = ConvBN(3, cfg.stem_channels, kernel=3, stride=2)
        blocks, c_in = [], cfg.stem_channels
        for t, c, n, s in cfg.settings:
            for i in range(n):
                blocks.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(c_in, cfg.feature_channels)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc = Linear(cfg.feature_channels, cfg.num_classes)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] (ImageNet-normalized) -> grid [B, 1280, ceil(H/32), ceil(W/32)]."""
        x = self.stem(pixels)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000]: global average pool of the grid -> dropout -> linear."""
        pooled = self.features(pixels).mean(dim=(2, 3))  # [B, 1280]
        return self.fc(self.dropout(pooled))


def imagenet_preprocess(image: Image.Image | np.ndarray, resize: int = 256, crop: int = 224) -> torch.Tensor:
    """[3, crop, crop] float tensor: shorter side to `resize` (bilinear), center crop, ImageNet mean/std.

    Sizes follow torchvision's Resize(256) / CenterCrop(224), the eval transform the weights expect.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    w, h = image.size
    # the longer side is truncated, not rounded, as torchvision does
    size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    image = image.resize(size, Image.BILINEAR)
    w, h = image.size
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, H, W]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std
