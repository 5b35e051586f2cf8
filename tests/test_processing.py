"""Image preprocessing parity with transformers: CLIP transform, LLaVA-NeXT anyres, image token counts."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import models, pre_tokenizers
from transformers import CLIPImageProcessorPil, LlavaNextProcessor, PreTrainedTokenizerFast
from transformers.image_processing_utils import select_best_resolution as hf_select_best_resolution
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.llava_next.modeling_llava_next import (
    LlavaNextModel,
    get_anyres_image_grid_shape,
    unpad_image,
)

from vislang.processing import (
    OPENAI_CLIP_MEAN,
    ImageTransform,
    anyres_batch,
    anyres_grid_shape,
    anyres_preprocess,
    llava_next_num_image_tokens,
    select_best_resolution,
    unpad_slices,
)

LLAVA_16_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SMALL_PINPOINTS = [[28, 56], [56, 28], [56, 56]]


def _image(height: int, width: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    channels = 4 if mode == "RGBA" else 3
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels)


# (height, width): tall, wide, square, tiny, odd sizes
SHAPES = [(301, 77), (50, 300), (224, 224), (7, 9), (333, 500), (1, 1), (97, 101)]

CLIP_CONFIGS = [
    {},
    {"size": {"shortest_edge": 40}, "crop_size": {"height": 30, "width": 50}},
    {"size": {"shortest_edge": 31}, "crop_size": {"height": 17, "width": 23}},
    # crop bigger than the resized image: zero padding, asymmetric for odd differences
    {"size": {"height": 33, "width": 61}, "crop_size": {"height": 40, "width": 21}},
    {"size": {"shortest_edge": 30, "longest_edge": 50}, "crop_size": {"height": 29, "width": 31}},
    {"size": {"height": 45, "width": 27}, "do_center_crop": False},
    {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 127.5},
    {"do_normalize": False, "resample": 2},
]


@pytest.mark.parametrize("config", CLIP_CONFIGS, ids=lambda c: ",".join(c) or "default")
def test_image_transform_matches_clip_image_processor(config: dict):
    reference = CLIPImageProcessorPil(**config)
    transform = ImageTransform.from_dict(json.loads(reference.to_json_string()))
    images = [_image(h, w, seed=i) for i, (h, w) in enumerate(SHAPES)] + [_image(40, 60, mode="RGBA")]
    for image in images:
        expected = reference(image, return_tensors="pt").pixel_values[0]
        actual = transform(image)
        assert actual.dtype == torch.float32
        assert actual.shape == expected.shape, image.size
        assert (actual - expected).abs().max().item() <= 1e-6, image.size


def test_image_transform_config_round_trip_and_batch(tmp_path: Path):
    config = json.loads(CLIPImageProcessorPil(crop_size={"height": 20, "width": 30}).to_json_string())
    transform = ImageTransform.from_dict(config)
    assert transform.to_dict() == config
    assert ImageTransform().image_mean == OPENAI_CLIP_MEAN and ImageTransform().size == {"shortest_edge": 224}
    legacy = ImageTransform.from_dict({"size": 64, "crop_size": 48})  # int sizes of older configs
    assert legacy.size == {"shortest_edge": 64} and legacy.crop_size == {"height": 48, "width": 48}
    path = tmp_path / "cat.png"
    _image(50, 70).save(path)
    batch = transform.batch([_image(30, 90), path])
    assert batch.shape == (2, 3, 20, 30)
    torch.testing.assert_close(batch[1], transform(_image(50, 70)), rtol=0, atol=0)


@pytest.mark.parametrize(
    "config",
    [
        {
            "size": {"shortest_edge": 28},
            "crop_size": {"height": 28, "width": 28},
            "image_grid_pinpoints": SMALL_PINPOINTS,
        },
        {
            "size": {"shortest_edge": 24},
            "crop_size": {"height": 20, "width": 20},
            "image_grid_pinpoints": [[40, 60]],
        },
        {},
    ],
    ids=["small", "tile-not-dividing", "default"],
)
def test_anyres_matches_llava_next_image_processor(config: dict):
    reference = LlavaNextImageProcessorPil(**config)
    hf_config = json.loads(reference.to_json_string())
    transform = ImageTransform.from_dict(hf_config)
    pinpoints = hf_config["image_grid_pinpoints"]
    images = [_image(300, 60, 1), _image(40, 260, 2), _image(96, 96, 3), _image(5, 3, 4), _image(61, 47, 5)]
    expected = reference(images, return_tensors="pt")
    pixel_values, image_sizes = anyres_batch(images, transform, pinpoints)
    assert pixel_values.shape == expected.pixel_values.shape
    assert (pixel_values - expected.pixel_values).abs().max().item() <= 1e-6
    assert image_sizes.dtype == torch.long
    assert torch.equal(image_sizes, expected.image_sizes.long())
    single, size = anyres_preprocess(images[0], transform, pinpoints)
    assert size == (300, 60)
    assert torch.equal(single, pixel_values[0, : single.shape[0]])
    assert pixel_values[0, single.shape[0] :].abs().sum() == 0  # padded tiles are zeros


def test_select_best_resolution_golden_values():
    assert select_best_resolution((480, 640), LLAVA_16_PINPOINTS) == (672, 672)
    assert select_best_resolution((100, 1000), LLAVA_16_PINPOINTS) == (336, 1008)
    assert select_best_resolution((1000, 100), LLAVA_16_PINPOINTS) == (1008, 336)
    assert select_best_resolution((336, 336), LLAVA_16_PINPOINTS) == (336, 672)
    # Equal effective and wasted resolution: the first pinpoint listed wins.
    assert select_best_resolution((100, 100), [[200, 100], [100, 200]]) == (200, 100)
    assert select_best_resolution((100, 100), [[100, 200], [200, 100]]) == (100, 200)
    # Equal effective (capped at the original): the least wasted wins.
    assert select_best_resolution((100, 100), [[400, 400], [200, 200]]) == (200, 200)
    assert anyres_grid_shape((480, 640), LLAVA_16_PINPOINTS, 336) == (2, 2)
    assert anyres_grid_shape((100, 1000), LLAVA_16_PINPOINTS, 336) == (1, 3)


def test_select_best_resolution_and_grid_match_transformers():
    rng = random.Random(0)
    for _ in range(500):
        size = (rng.randint(1, 2000), rng.randint(1, 2000))
        assert select_best_resolution(size, LLAVA_16_PINPOINTS) == hf_select_best_resolution(
            size, LLAVA_16_PINPOINTS
        )
        assert anyres_grid_shape(size, LLAVA_16_PINPOINTS, 336) == get_anyres_image_grid_shape(
            list(size), LLAVA_16_PINPOINTS, 336
        )


def test_unpad_slices_match_transformers_unpad_image():
    rng = random.Random(1)
    for _ in range(300):
        original = (rng.randint(1, 1500), rng.randint(1, 1500))
        grid = (24 * rng.randint(1, 3), 24 * rng.randint(1, 3))
        rows, cols = unpad_slices(original, grid)
        features = torch.arange(grid[0] * grid[1]).view(1, *grid)
        assert torch.equal(features[:, rows, cols], unpad_image(features, list(original)))


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    backend = BackendTokenizer(models.WordLevel({"<unk>": 0, "<image>": 1, "hi": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def _processor_counts(image_processor, sizes, patch_size, strategy, additional) -> list[int]:
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=_tiny_tokenizer(),
        patch_size=patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=additional,
    )
    images = [Image.new("RGB", (w, h)) for h, w in sizes]
    input_ids = processor(images=images, text=["<image> hi"] * len(sizes))["input_ids"]
    return [sum(1 for i in row if i == processor.image_token_id) for row in input_ids]


@pytest.mark.parametrize("strategy", ["default", "full"])
@pytest.mark.parametrize("additional", [0, 1])
def test_num_image_tokens_matches_llava_next_processor(strategy: str, additional: int):
    pinpoints = [*SMALL_PINPOINTS, [84, 28], [28, 84]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints
    )
    sizes = [(h, w) for h in (1, 5, 28, 30, 57, 100, 333) for w in (1, 7, 28, 41, 99, 250, 640)]
    expected = _processor_counts(image_processor, sizes, 7, strategy, additional)
    actual = [llava_next_num_image_tokens(h, w, 28, 7, pinpoints, strategy, additional) for h, w in sizes]
    assert actual == expected


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_num_image_tokens_matches_llava_next_processor_at_real_size(strategy: str):
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=LLAVA_16_PINPOINTS,
    )
    sizes = [(336, 336), (480, 640), (640, 480), (300, 1200), (1000, 37), (768, 1024)]
    expected = _processor_counts(image_processor, sizes, 14, strategy, 1)
    actual = [llava_next_num_image_tokens(h, w, 336, 14, LLAVA_16_PINPOINTS, strategy) for h, w in sizes]
    assert actual == expected
    # By hand: best 672x672 -> 48x48 grid; 640 wide -> 48 cols, 480 tall -> 36 rows kept;
    # 36 * 48 + 36 newlines + 24 * 24 overview = 2340.
    assert llava_next_num_image_tokens(480, 640, 336, 14, LLAVA_16_PINPOINTS, "default") == 2340


def test_num_image_tokens_equals_the_features_the_model_packs():
    """Count what transformers' LlavaNextModel.pack_image_features really emits for CLS-dropped features."""
    image_size, patch_size, dim = 28, 7, 2
    fake_model = SimpleNamespace(
        config=SimpleNamespace(
            vision_config=SimpleNamespace(image_size=image_size, patch_size=patch_size),
            image_grid_pinpoints=SMALL_PINPOINTS,
        )
    )
    side = image_size // patch_size
    for height, width in [(10, 100), (100, 10), (50, 50), (3, 7), (57, 29)]:
        rows, cols = anyres_grid_shape((height, width), SMALL_PINPOINTS, image_size)
        features = [torch.zeros(1 + rows * cols, side * side, dim)]  # "default": CLS already dropped
        _, lengths = LlavaNextModel.pack_image_features(
            fake_model, features, torch.tensor([[height, width]]), "default", image_newline=torch.zeros(dim)
        )
        expected = llava_next_num_image_tokens(
            height, width, image_size, patch_size, SMALL_PINPOINTS, "default"
        )
        assert lengths.tolist() == [expected]
