"""IDEFICS image preprocessing: a bicubic resize straight to a square (no crop), rescale, normalize,
bit for bit what transformers' IdeficsImageProcessorPil does."""

from __future__ import annotations

from .transforms import ImageTransform

IDEFICS_MEAN = (0.48145466, 0.4578275, 0.40821073)
IDEFICS_STD = (0.26862954, 0.26130258, 0.27577711)


def idefics_image_transform(settings: dict, image_size: int = 224) -> ImageTransform:
    """An ImageTransform from an IDEFICS preprocessor_config.json (which may name only image_size)."""
    settings = dict(settings)
    side = settings.pop("image_size", None) or image_size
    size = settings.get("size") or {"height": side, "width": side}
    return ImageTransform.from_dict(
        {
            "image_mean": IDEFICS_MEAN,
            "image_std": IDEFICS_STD,
            **settings,
            "size": size,
            "do_center_crop": False,
            "image_size": size["height"],  # kept for transformers, which reads it
        }
    )
