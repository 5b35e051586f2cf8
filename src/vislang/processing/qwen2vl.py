"""Qwen2-VL image and video preprocessing: resize to a multiple of 28, rescale, normalize, cut into patches.

Images are not cropped or padded: each is resized so both sides are multiples of patch_size *
merge_size and its area falls within [min_pixels, max_pixels] (`smart_resize`), then cut into
patch_size x patch_size patches, which the vision tower embeds temporal_patch_size frames at a
time. Everything reproduces transformers' Qwen2VLImageProcessorPil to the last bit: the same
resized size, Pillow resampling, rescaling in float64 before casting to float32, normalizing in
float32, and the same order of the flattened patches. A still image is one frame repeated
temporal_patch_size times, so it patches exactly like a video of that frame repeated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from vislang.errors import ImageError
from vislang.processing.image import ImageSource, load_image
from vislang.processing.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, rescale_normalize
from vislang.processing.video import Video, VideoError

MAX_ASPECT_RATIO = 200
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 28 * 28 * 1280
# transformers' Qwen2VLVideoProcessor defaults, used only where a video config names no size.
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28

# Keys of preprocessor_config.json that map one to one onto QwenImageTransform fields.
_CONFIG_KEYS = (
    "patch_size",
    "temporal_patch_size",
    "merge_size",
    "do_resize",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "do_convert_rgb",
    "image_mean",
    "image_std",
    "resample",
)
_PIXEL_KEYS = ("size", "min_pixels", "max_pixels")


class AspectRatioError(ImageError):
    """An image (or video frame) so elongated that Qwen2-VL refuses it."""


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
) -> tuple[int, int]:
    """The (height, width) Qwen2-VL resizes an image to: multiples of `factor`, area within the bounds.

    Each side is rounded to the nearest multiple (Python's round: halves go to the even multiple).
    If the area is then over `max_pixels`, both sides shrink by the same scale and round down; if
    under `min_pixels`, both grow and round up. The float operations come in transformers' order,
    so the result agrees with it for every input.
    """
    if height <= 0 or width <= 0:
        raise ImageError(f"image size must be positive, got {height}x{width}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise AspectRatioError(
            f"image is {height}x{width}, an aspect ratio of {ratio:g}; Qwen2-VL takes at most "
            f"{MAX_ASPECT_RATIO}:1"
        )
    new_h, new_w = round(height / factor) * factor, round(width / factor) * factor
    if new_h * new_w > max_pixels:
        shrink = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / shrink / factor) * factor)
        new_w = max(factor, math.floor(width / shrink / factor) * factor)
    elif new_h * new_w < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * grow / factor) * factor
        new_w = math.ceil(width * grow / factor) * factor
    return new_h, new_w


def num_tokens(grid_thw: Sequence[int] | torch.Tensor, merge_size: int = 2) -> int | list[int]:
    """Placeholder tokens an image or video expands to: t * h * w / merge_size**2.

    One (t, h, w) row gives an int; an [n, 3] grid gives a list, one count per image or video.
    """
    grid = torch.as_tensor(grid_thw, dtype=torch.long)
    counts = grid.prod(dim=-1) // merge_size**2
    return counts.tolist() if grid.dim() > 1 else int(counts)


def patchify(
    frames: torch.Tensor, patch_size: int = 14, temporal_patch_size: int = 2, merge_size: int = 2
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Cut [T, C, H, W] frames into the [t*h*w, C*tp*p*p] rows Qwen2-VL's vision tower takes, and (t, h, w).

    T is padded to a multiple of temporal_patch_size by repeating the last frame (so one image
    becomes temporal_patch_size copies of itself). Rows run over merge_size x merge_size blocks of
    patches (the tokens the merger fuses into one), blocks in row-major order, one time step after
    another; each row holds a patch's channels, then its frames, then its pixels.
    """
    count, channels, height, width = frames.shape
    if height % (patch_size * merge_size) or width % (patch_size * merge_size):
        raise ImageError(
            f"frames of {height}x{width} cannot be cut into {patch_size}-pixel patches merged "
            f"{merge_size}x{merge_size}; both sides must be multiples of {patch_size * merge_size}"
        )
    if pad := -count % temporal_patch_size:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    grid_t, grid_h, grid_w = (count + pad) // temporal_patch_size, height // patch_size, width // patch_size
    blocks = frames.reshape(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # -> (t, block row, block column, row in block, column in block, channel, frame, pixel row, pixel column)
    rows = blocks.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    patch_dim = channels * temporal_patch_size * patch_size * patch_size
    return rows.reshape(grid_t * grid_h * grid_w, patch_dim), (grid_t, grid_h, grid_w)


@dataclass
class QwenImageTransform:
    """Qwen2-VL (and Qwen2.5-VL) preprocessing, configured like its HF image processor.

    A checkpoint's video_preprocessor_config.json, where there is one, configures videos
    (`from_dict(..., video=True)`); transformers falls back on preprocessor_config.json, so a
    transform built from that serves both. `do_convert_rgb` is kept for the config's sake: the
    model takes 3 channels, so images always become RGB.
    """

    min_pixels: int = IMAGE_MIN_PIXELS
    max_pixels: int = IMAGE_MAX_PIXELS
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    do_convert_rgb: bool = True
    resample: int = int(Image.Resampling.BICUBIC)
    # Config keys this class does not use (processor class, fps of a video config, ...), kept for to_dict.
    extra: dict[str, Any] = field(default_factory=dict)
    # Which of size / min_pixels / max_pixels the source config spelled the pixel bounds with.
    pixel_keys: tuple[str, ...] = field(default=("size",), repr=False, compare=False)

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(m) for m in _per_channel(self.image_mean))
        self.image_std = tuple(float(s) for s in _per_channel(self.image_std))
        self.resample = int(self.resample)
        self.min_pixels, self.max_pixels = int(self.min_pixels), int(self.max_pixels)

    @property
    def factor(self) -> int:
        """Both sides of a resized image are multiples of this many pixels."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, video: bool = False) -> QwenImageTransform:
        """Build from a preprocessor_config.json (or, `video=True`, a video_preprocessor_config.json) dict.

        The pixel bounds come from min_pixels / max_pixels (Qwen's own configs) or transformers 5's
        size = {"shortest_edge": min, "longest_edge": max}; the top-level keys win, as in transformers.
        Bounds a config leaves out default to the image processor's, or with `video` the video one's.
        """
        known = {k: config[k] for k in _CONFIG_KEYS if config.get(k) is not None}
        extra = {k: v for k, v in config.items() if k not in known and k not in _PIXEL_KEYS}
        low, high = (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS) if video else (IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS)
        size = config.get("size") or {}
        low = size.get("shortest_edge", size.get("min_pixels", low))
        high = size.get("longest_edge", size.get("max_pixels", high))
        if config.get("min_pixels") is not None:
            low = config["min_pixels"]
        if config.get("max_pixels") is not None:
            high = config["max_pixels"]
        pixel_keys = tuple(k for k in _PIXEL_KEYS if config.get(k) is not None) or ("size",)
        return cls(min_pixels=low, max_pixels=high, **known, extra=extra, pixel_keys=pixel_keys)

    def to_dict(self) -> dict[str, Any]:
        """The config as preprocessor_config.json holds it; transformers' Qwen2VLImageProcessor reads it."""
        config = dict(self.extra)
        for f in fields(self):
            if f.name in ("extra", "pixel_keys", "min_pixels", "max_pixels"):
                continue
            value = getattr(self, f.name)
            config[f.name] = list(value) if isinstance(value, tuple) else value
        if "size" in self.pixel_keys:
            config["size"] = {"longest_edge": self.max_pixels, "shortest_edge": self.min_pixels}
        if "min_pixels" in self.pixel_keys:
            config["min_pixels"] = self.min_pixels
        if "max_pixels" in self.pixel_keys:
            config["max_pixels"] = self.max_pixels
        return config

    def resized_size(
        self, height: int, width: int, min_pixels: int | None = None, max_pixels: int | None = None
    ) -> tuple[int, int]:
        """The (height, width) an image of this size becomes, with the config's bounds or the ones given."""
        low = self.min_pixels if min_pixels is None else min_pixels
        high = self.max_pixels if max_pixels is None else max_pixels
        return smart_resize(height, width, self.factor, low, high)

    def num_tokens(self, grid_thw: Sequence[int] | torch.Tensor) -> int | list[int]:
        """Placeholder tokens for one (t, h, w) grid (an int) or an [n, 3] grid (a list)."""
        return num_tokens(grid_thw, self.merge_size)

    def images(
        self,
        images: Sequence[ImageSource] | ImageSource,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Preprocess images into pixel_values [N patches, C*tp*p*p] float32 and image_grid_thw [n, 3] long.

        `min_pixels` / `max_pixels` replace the config's bounds for this call: fewer pixels, fewer
        tokens, faster answers about less detail.
        """
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise ImageError("images() needs at least one image")
        rows, grids = [], []
        for source in images:
            image = _rgb(source)
            if self.do_resize:
                height, width = self.resized_size(image.height, image.width, min_pixels, max_pixels)
                image = image.resize((width, height), resample=self.resample)
            patches, grid = self._patchify([image])
            rows.append(patches)
            grids.append(grid)
        return {"pixel_values": torch.cat(rows), "image_grid_thw": torch.tensor(grids, dtype=torch.long)}

    def videos(
        self,
        videos: Sequence[Video | Sequence[ImageSource]],
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        fps: float | Sequence[float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Preprocess videos into pixel_values_videos [N, C*tp*p*p] float32 and video_grid_thw [n, 3] long.

        A video is a Video (see vislang.processing.video.load_video) or a list of frames. All
        frames of a video are resized to the size smart_resize picks for its first frame; a frame
        count that is not a multiple of temporal_patch_size is padded with copies of the last frame.
        Where the rate of the sampled frames is known (`fps`, one for all or one a video, else each
        Video's own), the result also has second_per_grid_ts [n] float32: the seconds one temporal
        patch spans, which Qwen2.5-VL's temporal position ids need.
        Frames go through the image arithmetic (Pillow resize, float64 rescale, float32 normalize),
        so a still image patches the same either way. transformers' Qwen2VLVideoProcessor works on
        torch tensors instead: torchvision resizes (as in qwen-vl-utils) and the rescale is folded
        into the normalization, so its values differ from these by rounding; its patch order is this one.
        """
        if isinstance(videos, Video):
            videos = [videos]
        if not videos:
            raise VideoError("videos() needs at least one video")
        rates = _rates(videos, fps)
        rows, grids = [], []
        for i, video in enumerate(videos):
            frames = [_rgb(f) for f in (video.frames if isinstance(video, Video) else video)]
            if not frames:
                raise VideoError(f"video {i} has no frames")
            if self.do_resize:
                height, width = self.resized_size(frames[0].height, frames[0].width, min_pixels, max_pixels)
                frames = [f.resize((width, height), resample=self.resample) for f in frames]
            sizes = {f.size for f in frames}
            if len(sizes) > 1:
                raise VideoError(f"frames of video {i} differ in size {sorted(sizes)}; enable do_resize")
            patches, grid = self._patchify(frames)
            rows.append(patches)
            grids.append(grid)
        out = {
            "pixel_values_videos": torch.cat(rows),
            "video_grid_thw": torch.tensor(grids, dtype=torch.long),
        }
        if rates is not None:
            out["second_per_grid_ts"] = torch.tensor(
                [self.temporal_patch_size / r for r in rates], dtype=torch.float32
            )
        return out

    def _patchify(self, frames: list[Image.Image]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        pixels = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
        return patchify(self._to_float(pixels), self.patch_size, self.temporal_patch_size, self.merge_size)

    def _to_float(self, pixels: np.ndarray) -> torch.Tensor:
        """Rescale and normalize [T, H, W, C] uint8 into [T, C, H, W] float32, in transformers' arithmetic."""
        return rescale_normalize(torch.from_numpy(pixels).permute(0, 3, 1, 2), self)


def _rgb(source: ImageSource) -> Image.Image:
    # An RGB PIL image is used as it is; anything else goes through the safe loader, which flattens to RGB.
    if isinstance(source, Image.Image) and source.mode == "RGB":
        return source
    return load_image(source)


def _rates(videos: Sequence[Any], fps: float | Sequence[float] | None) -> list[float] | None:
    """The sampled-frame rate of each video, or None when one of them has no known rate."""
    if fps is None:
        if all(isinstance(v, Video) for v in videos):
            return [v.fps for v in videos]
        return None
    rates = [float(fps)] * len(videos) if isinstance(fps, (int, float)) else [float(r) for r in fps]
    if len(rates) != len(videos):
        raise VideoError(f"got {len(rates)} fps values for {len(videos)} videos")
    if any(r <= 0 for r in rates):
        raise VideoError(f"fps must be positive, got {rates}")
    return rates


def _per_channel(value: float | Sequence[float]) -> Sequence[float]:
    return [value] * 3 if isinstance(value, (int, float)) else value
