"""LLaVA-NeXT: LLaVA with any-resolution tiles. An image becomes a base view plus a grid of tiles;
tile features are stitched into one map, the padding is cut off, and a learned `image_newline`
vector ends every row."""

from __future__ import annotations

import torch
from torch import nn

from ..config import LlavaConfig
from ..processing.anyres import anyres_batch, anyres_grid_shape, llava_next_num_image_tokens, unpad_slices
from .llava import Llava


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

    def grid(self, image_size_hw) -> tuple[int, int]:
        """(rows, cols) of tiles for an image of (height, width)."""
        return anyres_grid_shape(
            image_size_hw, self.cfg.image_grid_pinpoints, self.cfg.vision_config.image_size
        )

    def num_image_tokens(self, image_size_hw) -> int:
        """Feature count for an image of (height, width): the size of its `<image>` expansion."""
        v = self.cfg.vision_config
        h, w = (int(s) for s in image_size_hw)
        return llava_next_num_image_tokens(
            h, w, v.image_size, v.patch_size, self.cfg.image_grid_pinpoints, "default"
        )

    def prepare_images(self, images: list) -> tuple[dict, list[int]]:
        pixel_values, image_sizes = anyres_batch(images, self.image_transform, self.cfg.image_grid_pinpoints)
        counts = [self.num_image_tokens(hw) for hw in image_sizes.tolist()]
        return {"pixel_values": pixel_values, "image_sizes": image_sizes}, counts

    def image_features(self, pixel_values: torch.Tensor, image_sizes) -> list[torch.Tensor]:
        counts = [r * c + 1 for r, c in map(self.grid, image_sizes)]
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
        side = self.cfg.vision_config.image_size // self.cfg.vision_config.patch_size
        rows, cols = self.grid(image_size_hw)
        D = tiles.shape[-1]
        grid = tiles.reshape(rows, cols, side, side, D).permute(4, 0, 2, 1, 3)  # [D, rows, side, cols, side]
        grid = grid.reshape(D, rows * side, cols * side)
        keep_rows, keep_cols = unpad_slices(image_size_hw, grid.shape[1:])
        grid = grid[:, keep_rows, keep_cols]
        newline = self.image_newline.to(grid.dtype)[:, None, None].expand(D, grid.shape[1], 1)
        grid = torch.cat([grid, newline], dim=-1)  # a newline vector closes every row
        return torch.cat([base, grid.flatten(1).T])
