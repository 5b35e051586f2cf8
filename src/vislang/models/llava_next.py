"""LLaVA-NeXT: LLaVA with any-resolution tiles. An image becomes a base view plus a grid of tiles;
tile features are stitched into one map, the padding is cut off, and a learned `image_newline`
vector ends every row."""

from __future__ import annotations

import torch
from torch import nn

from ..config import LlavaConfig
from ..processing.anyres import select_best_resolution
from .llava import Llava


def grid_shape(image_size_hw, pinpoints, tile: int) -> tuple[int, int]:
    """(rows, cols) of tiles for an image of (height, width)."""
    h, w = select_best_resolution(tuple(int(s) for s in image_size_hw), pinpoints)
    return h // tile, w // tile


def unpad(features: torch.Tensor, original_hw) -> torch.Tensor:
    """Cut the rows or columns [D, H, W] that came from padding the image to the grid's aspect ratio."""
    oh, ow = (int(s) for s in original_hw)
    h, w = features.shape[1:]
    if ow / oh > w / h:  # image wider than the grid: padding was added above and below
        new_h = int(round(oh * (w / ow), 7))
        pad = (h - new_h) // 2
        return features[:, pad : h - pad, :]
    new_w = int(round(ow * (h / oh), 7))
    pad = (w - new_w) // 2
    return features[:, :, pad : w - pad]


class LlavaNext(Llava):
    ARCHITECTURE = "LlavaNextForConditionalGeneration"

    def __init__(self, cfg: LlavaConfig):
        if cfg.vision_feature_select_strategy != "default":
            raise ValueError(
                "llava_next needs vision_feature_select_strategy='default': tiles are stitched into a "
                "square grid of patches, which a class token does not fit"
            )
        super().__init__(cfg)
        self.image_newline = nn.Parameter(torch.zeros(cfg.text_config.hidden_size))

    def num_tiles(self, image_size_hw) -> int:
        rows, cols = grid_shape(
            image_size_hw, self.cfg.image_grid_pinpoints, self.cfg.vision_config.image_size
        )
        return rows * cols + 1

    def num_image_tokens(self, image_size_hw) -> int:
        """Feature count for an image of (height, width): the size of its `<image>` expansion."""
        side = self.cfg.vision_config.image_size // self.cfg.vision_config.patch_size
        rows, cols = grid_shape(
            image_size_hw, self.cfg.image_grid_pinpoints, self.cfg.vision_config.image_size
        )
        # unpad an empty [0, H, W] map: the same arithmetic as the features, without the compute
        grid = unpad(torch.empty(0, rows * side, cols * side), image_size_hw)
        return side * side + grid.shape[1] * (grid.shape[2] + 1)

    def image_features(self, pixel_values: torch.Tensor, image_sizes) -> list[torch.Tensor]:
        counts = [self.num_tiles(hw) for hw in image_sizes]
        if pixel_values.dim() == 5:  # [B, max_tiles, 3, H, W], tiles zero-padded per image
            pixel_values = torch.cat([pv[:n] for pv, n in zip(pixel_values, counts)])
        feats = self.vision.select(
            pixel_values, self.cfg.vision_feature_layer, self.cfg.vision_feature_select_strategy
        )
        feats = self.projector(feats)  # [total_tiles, N, D]
        return [self.pack(f, hw) for f, hw in zip(torch.split(feats, counts), image_sizes)]

    def pack(self, tiles: torch.Tensor, image_size_hw) -> torch.Tensor:
        """[1 + rows*cols, N, D] tile features -> [tokens, D]: base view, then the unpadded grid by rows."""
        base, tiles = tiles[0], tiles[1:]
        newline = self.image_newline.to(tiles.dtype)
        if tiles.shape[0] == 0:
            return torch.cat([base, newline[None]])
        side = self.cfg.vision_config.image_size // self.cfg.vision_config.patch_size
        rows, cols = grid_shape(
            image_size_hw, self.cfg.image_grid_pinpoints, self.cfg.vision_config.image_size
        )
        D = tiles.shape[-1]
        grid = tiles.reshape(rows, cols, side, side, D).permute(4, 0, 2, 1, 3)  # [D, rows, side, cols, side]
        grid = unpad(grid.reshape(D, rows * side, cols * side), image_size_hw)  # [D, H, W]
        grid = torch.cat([grid, newline[:, None, None].expand(D, grid.shape[1], 1)], dim=-1)
        return torch.cat([base, grid.flatten(1).T])
