"""CLIP-style image preprocessing: resize, center crop, rescale, normalize.

The numbers must match what a checkpoint saw in training, so every step reproduces transformers'
PIL image processor to the last bit: the same integer truncation when computing the resized size,
the same Pillow resampling, the same crop offsets (and zero padding when the crop is bigger than
the image), rescaling in float64 before casting to float32, and normalizing in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from vislang.processing.image import ImageSource, load_image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Keys of preprocessor_config.json that map one to one onto ImageTransform fields.
_CONFIG_KEYS = (
    "size",
    "crop_size",
    "do_resize",
    "do_center_crop",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "resample",
)


def shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Output (height, width) when the shorter side becomes `shortest_edge`; the longer side is truncated."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)
    return (new_long, shortest_edge) if width <= height else (shortest_edge, new_long)


def shortest_longest_size(height: int, width: int, shortest_edge: int, longest_edge: int) -> tuple[int, int]:
    """Like shortest_edge_size, but shrink further so the longer side stays within `longest_edge`."""
    size, raw_size = shortest_edge, None
    small, large = float(min(height, width)), float(max(height, width))
    if large / small * size > longest_edge:
        raw_size = longest_edge * small / large
        size = int(round(raw_size))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    scale = raw_size if raw_size is not None else size
    if width < height:
        return int(scale * height / width), size
    return size, int(scale * width / height)


def rescale_normalize(x: torch.Tensor, settings) -> torch.Tensor:
    """uint8 [..., C, H, W] -> float32, rescaled and normalized as `settings` (do_rescale,
    rescale_factor, do_normalize, image_mean, image_std) say, in transformers' arithmetic."""
    if settings.do_rescale:
        # float64 first, float32 after: the order that reproduces transformers bit for bit.
        x = (x.to(torch.float64) * settings.rescale_factor).to(torch.float32)
    else:
        x = x.to(torch.float32)
    if settings.do_normalize:
        mean = torch.tensor(settings.image_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(settings.image_std, dtype=torch.float32).view(-1, 1, 1)
        x = (x - mean) / std
    return x


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop an HxWxC array around its centre; where the crop is bigger than the image, pad with zeros.

    The offset is floor((in - out) / 2) on both axes, and the padding puts the extra row or column
    at the end, which is where transformers puts them; any other split shifts the image by a pixel.
    """
    in_h, in_w = pixels.shape[:2]
    top, left = (in_h - height) // 2, (in_w - width) // 2
    if top >= 0 and left >= 0:
        return pixels[top : top + height, left : left + width]
    padded_h, padded_w = max(height, in_h), max(width, in_w)
    pad_top, pad_left = math.ceil((padded_h - in_h) / 2), math.ceil((padded_w - in_w) / 2)
    padded = np.zeros((padded_h, padded_w, *pixels.shape[2:]), dtype=pixels.dtype)
    padded[pad_top : pad_top + in_h, pad_left : pad_left + in_w] = pixels
    top, left = top + pad_top, left + pad_left
    return padded[max(0, top) : min(padded_h, top + height), max(0, left) : min(padded_w, left + width)]


def _size_dict(value: Any, default_to_square: bool) -> dict[str, int]:
    """Read the int, [h, w] or dict forms that preprocessor configs use for sizes."""
    if isinstance(value, Mapping):
        return {str(k): int(v) for k, v in value.items() if v is not None}
    if isinstance(value, int):
        return {"height": value, "width": value} if default_to_square else {"shortest_edge": value}
    if isinstance(value, Sequence) and len(value) == 2:
        return {"height": int(value[0]), "width": int(value[1])}
    raise ValueError(f"cannot read an image size from {value!r}")


@dataclass
class ImageTransform:
    """Preprocess one RGB image into a float32 [3, H, W] tensor, configured like a HF image processor."""

    size: dict[str, int] = field(default_factory=lambda: {"shortest_edge": 224})
    crop_size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    resample: int = int(Image.Resampling.BICUBIC)
    # Config keys this class does not use (processor class, pinpoints, ...), kept so to_dict round-trips.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.size = _size_dict(self.size, default_to_square=False)
        self.crop_size = _size_dict(self.crop_size, default_to_square=True)
        self.image_mean = tuple(float(m) for m in _per_channel(self.image_mean))
        self.image_std = tuple(float(s) for s in _per_channel(self.image_std))
        self.resample = int(self.resample)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> ImageTransform:
        """Build from a preprocessor_config.json dict; keys it does not use go to `extra`."""
        known = {k: config[k] for k in _CONFIG_KEYS if k in config and config[k] is not None}
        extra = {k: v for k, v in config.items() if k not in known}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        config = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            config[f.name] = list(value) if isinstance(value, tuple) else value
        return config

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image of this size is resized to, before cropping."""
        size = self.size
        if "shortest_edge" in size and "longest_edge" in size:
            return shortest_longest_size(height, width, size["shortest_edge"], size["longest_edge"])
        if "shortest_edge" in size:
            return shortest_edge_size(height, width, size["shortest_edge"])
        if "height" in size and "width" in size:
            return size["height"], size["width"]
        raise ValueError(f"size must have 'shortest_edge' or 'height' and 'width', got {size}")

    def resize(self, image: Image.Image) -> Image.Image:
        height, width = self.resized_size(image.height, image.width)
        return image.resize((width, height), resample=self.resample)

    def to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """Rescale and normalize an HxWx3 uint8 array into a float32 [3, H, W] tensor."""
        # np.array copies: arrays viewing PIL images are read-only, torch wants writable memory.
        x = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)
        return rescale_normalize(x, self).contiguous()

    def __call__(self, image: ImageSource) -> torch.Tensor:
        """Preprocess one image (a loaded RGB PIL image; anything else goes through load_image)."""
        if not isinstance(image, Image.Image) or image.mode != "RGB":
            image = load_image(image)
        if self.do_resize:
            image = self.resize(image)
        pixels = np.asarray(image, dtype=np.uint8)
        if self.do_center_crop:
            pixels = center_crop(pixels, self.crop_size["height"], self.crop_size["width"])
        return self.to_tensor(pixels)

    def batch(self, images: Iterable[ImageSource]) -> torch.Tensor:
        """Preprocess several images into [B, 3, H, W]; they must come out the same size (crop on)."""
        tensors = [self(image) for image in images]
        if not tensors:
            raise ValueError("batch() needs at least one image")
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(f"images preprocess to different shapes {sorted(shapes)}; enable center crop")
        return torch.stack(tensors)


def _per_channel(value: float | Sequence[float]) -> Sequence[float]:
    return [value] * 3 if isinstance(value, (int, float)) else value
