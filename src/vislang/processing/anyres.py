"""LLaVA-NeXT "any resolution" preprocessing and its image token count.

An image is fitted into the best of a few grid resolutions ("pinpoints"), padded to it, and cut
into tiles the vision tower can take; a downsized copy of the whole image goes first. The model
later drops the padding again from the tile features, so the token count depends on the original
size: the preprocessing and the count below have to agree exactly with the model and with
transformers' LlavaNextImageProcessor / LlavaNextProcessor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from vislang.processing.image import ImageSource, load_image
from vislang.processing.transforms import ImageTransform

Pinpoints = Sequence[Sequence[int]]


def select_best_resolution(image_size: Sequence[int], pinpoints: Pinpoints) -> tuple[int, int]:
    """Pick the (height, width) pinpoint that keeps the most pixels of the image, then wastes the fewest.

    Ties on both go to the earliest pinpoint in the list, as in transformers.
    """
    height, width = int(image_size[0]), int(image_size[1])
    best, best_effective, best_wasted = None, 0, float("inf")
    for pin_h, pin_w in pinpoints:
        scale = min(pin_w / width, pin_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = pin_w * pin_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (int(pin_h), int(pin_w)), effective, wasted
    if best is None:
        raise ValueError(f"no usable resolution among pinpoints {list(pinpoints)}")
    return best


def fit_size(image_size: Sequence[int], target: Sequence[int]) -> tuple[int, int]:
    """(height, width) of the image scaled to fit inside `target`, keeping its aspect ratio (rounded up)."""
    height, width = image_size
    target_h, target_w = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


def anyres_grid_shape(image_size: Sequence[int], pinpoints: Pinpoints, tile_size: int) -> tuple[int, int]:
    """(rows, cols) of tiles an image of (height, width) `image_size` is cut into."""
    best_h, best_w = select_best_resolution(image_size, pinpoints)
    return best_h // tile_size, best_w // tile_size


def tile_size(transform: ImageTransform) -> int:
    """Side of the square tiles: the crop height, as transformers takes it."""
    if transform.crop_size.get("height"):
        return transform.crop_size["height"]
    return transform.size.get("height") or transform.size["shortest_edge"]


def base_size(transform: ImageTransform) -> tuple[int, int]:
    """(height, width) the whole-image overview is resized to before the usual transform."""
    if transform.size.get("height") and transform.size.get("width"):
        return transform.size["height"], transform.size["width"]
    return transform.size["shortest_edge"], transform.size["shortest_edge"]


def anyres_preprocess(
    image: ImageSource, transform: ImageTransform, pinpoints: Pinpoints
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Return the overview plus tiles as [num_tiles, 3, H, W] and the original (height, width)."""
    if not isinstance(image, Image.Image) or image.mode != "RGB":
        image = load_image(image)
    height, width = image.height, image.width
    best_h, best_w = select_best_resolution((height, width), pinpoints)
    new_h, new_w = fit_size((height, width), (best_h, best_w))
    resized = np.asarray(image.resize((new_w, new_h), resample=transform.resample))
    # Centre on a black canvas; an odd leftover row or column goes to the bottom or right.
    canvas = np.zeros((best_h, best_w, 3), dtype=np.uint8)
    top, left = (best_h - new_h) // 2, (best_w - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    side = tile_size(transform)
    tiles = [
        Image.fromarray(np.ascontiguousarray(canvas[y : y + side, x : x + side]))
        for y in range(0, best_h, side)
        for x in range(0, best_w, side)
    ]
    overview_h, overview_w = base_size(transform)
    overview = image.resize((overview_w, overview_h), resample=transform.resample)
    pixel_values = torch.stack([transform(piece) for piece in [overview, *tiles]])
    return pixel_values, (height, width)


def anyres_batch(
    images: Sequence[ImageSource], transform: ImageTransform, pinpoints: Pinpoints
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocess a batch into pixel_values [B, max_tiles, 3, H, W] and image_sizes [B, 2] (long).

    Images with fewer tiles are padded with all-zero tiles, as transformers does.
    """
    if not images:
        raise ValueError("anyres_batch needs at least one image")
    processed = [anyres_preprocess(image, transform, pinpoints) for image in images]
    max_tiles = max(pixels.shape[0] for pixels, _ in processed)
    first = processed[0][0]
    pixel_values = first.new_zeros((len(processed), max_tiles, *first.shape[1:]))
    for i, (pixels, _) in enumerate(processed):
        pixel_values[i, : pixels.shape[0]] = pixels
    image_sizes = torch.tensor([size for _, size in processed], dtype=torch.long)
    return pixel_values, image_sizes


def unpad_slices(original_size: Sequence[int], feature_size: Sequence[int]) -> tuple[slice, slice]:
    """Rows and columns of a tile-grid feature map that hold the image rather than padding.

    The padding is recomputed from the aspect ratios alone, rounding the scaled side to 7 decimals
    before truncating (what transformers does, so that e.g. 2.9999999 counts as 3).
    """
    orig_h, orig_w = int(original_size[0]), int(original_size[1])
    cur_h, cur_w = int(feature_size[0]), int(feature_size[1])
    if orig_w / orig_h > cur_w / cur_h:
        new_h = int(round(orig_h * (cur_w / orig_w), 7))
        pad = (cur_h - new_h) // 2
        return slice(pad, cur_h - pad), slice(0, cur_w)
    new_w = int(round(orig_w * (cur_h / orig_h), 7))
    pad = (cur_w - new_w) // 2
    return slice(0, cur_h), slice(pad, cur_w - pad)


def llava_next_num_image_tokens(
    orig_h: int,
    orig_w: int,
    image_size: int | Sequence[int],
    patch_size: int,
    pinpoints: Pinpoints,
    vision_feature_select_strategy: str,
    num_additional_image_tokens: int = 1,
) -> int:
    """Number of image features LLaVA-NeXT produces for an image of (orig_h, orig_w).

    That is the overview's patches, plus the unpadded tile-grid patches, plus one newline per
    unpadded row. `num_additional_image_tokens` counts the tokens the vision tower adds besides
    patches (1 for CLIP's CLS); the "default" strategy drops one of them, "full" keeps them.
    Only combinations where the tiles reshape into a grid run in the model: CLIP with "default",
    or a tower without CLS (num_additional_image_tokens=0) with "full".
    """
    if vision_feature_select_strategy not in ("default", "full"):
        raise ValueError(f"unknown vision_feature_select_strategy {vision_feature_select_strategy!r}")
    tile_h, tile_w = (image_size, image_size) if isinstance(image_size, int) else image_size
    best_h, best_w = select_best_resolution((orig_h, orig_w), pinpoints)
    patches_h, patches_w = tile_h // patch_size, tile_w // patch_size
    grid_h = patches_h * (best_h // tile_h)
    grid_w = patches_w * (best_w // tile_w)
    rows, cols = unpad_slices((orig_h, orig_w), (grid_h, grid_w))
    kept_h, kept_w = rows.stop - rows.start, cols.stop - cols.start
    base = patches_h * patches_w + num_additional_image_tokens
    if vision_feature_select_strategy == "default":
        base -= 1
    return kept_h * kept_w + kept_h + base
