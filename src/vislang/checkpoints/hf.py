"""The Hugging Face checkpoint format: config.json plus model.safetensors, or shards with an index."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from .keymaps import IGNORED, hf_to_vislang, vislang_to_hf

log = logging.getLogger(__name__)

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_config(path: str | Path) -> dict:
    file = Path(path) / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{path} has no config.json: not a Hugging Face checkpoint folder")
    return json.loads(file.read_text())


def weight_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if (path / INDEX).is_file():
        index = json.loads((path / INDEX).read_text())
        return [path / name for name in sorted(set(index["weight_map"].values()))]
    if (path / SINGLE).is_file():
        return [path / SINGLE]
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise CheckpointError(
        f"{path} has no {SINGLE} or {INDEX} (found: {found}); vislang reads safetensors only, "
        "which cannot run code when loaded: convert .bin weights with safetensors first"
    )


def read_state_dict(path: str | Path, model_type: str, dtype: torch.dtype | None = None) -> dict:
    """All tensors of a checkpoint, renamed to vislang's module names."""
    state, unknown = {}, []
    for file in weight_files(path):
        with safe_open(file, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if IGNORED.search(key):
                    continue
                name = hf_to_vislang(model_type, key)
                if name is None:
                    unknown.append(key)
                    continue
                t = f.get_tensor(key)
                state[name] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    if unknown:
        raise CheckpointError(f"{len(unknown)} weights of {path} fit no {model_type} part: {unknown[:5]}")
    return state


def load_weights(model: torch.nn.Module, state: dict, tied: bool, source: str) -> None:
    """Copy `state` into `model` strictly: a missing or unexpected tensor is an error."""
    expected = dict(model.state_dict())
    if tied:  # the head shares the embedding matrix; a checkpoint may or may not store it
        heads = [k for k in expected if k.endswith("lm_head.weight")]
        for k in heads:
            expected.pop(k)
            state.pop(k, None)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"weights of {source} do not match the config: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    for k, t in state.items():
        if tuple(t.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(t.shape)}, config says {tuple(expected[k].shape)}"
            )
    model.load_state_dict(state, strict=False, assign=True)


def write_checkpoint(
    model: torch.nn.Module,
    hf_config: dict,
    model_type: str,
    path: str | Path,
    tied: bool,
    max_shard_bytes: int = 5 * 2**30,
) -> None:
    """config.json plus safetensors, split into shards with an index past max_shard_bytes."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    tensors = {}
    for name, t in model.state_dict().items():
        if tied and name.endswith("lm_head.weight"):
            continue
        tensors[vislang_to_hf(model_type, name)] = t.detach().contiguous().clone()
    shards, current, size = [], {}, 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = tensors[key]
        size += nbytes
    shards.append(current)
    for stale in [*path.glob("model*.safetensors"), path / INDEX]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], str(path / SINGLE), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
