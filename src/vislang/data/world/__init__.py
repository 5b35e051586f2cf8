"""The visual world of world-spec.md: families of generated images with exact ground truth.

from vislang.data.world import generate_sample
s = generate_sample("scene", "train", seed=0, index=7)
s.images[0], s.question, s.answer, s.objects, s.probes
"""

from __future__ import annotations

import dataclasses
import importlib

from .sample import SPLITS, Sample, WorldConfig, sample_rng

# family -> "module:function"; each is make(rng, cfg, split) -> Sample (identity fields left default);
# generated families ignore the split (their streams are apart already), real datasets pick theirs
FAMILIES = {
    "scene": "vislang.data.world.scene_family:make",
    "text": "vislang.data.world.text_family:make",
    "multi": "vislang.data.world.multi_family:make",
    "video": "vislang.data.world.video_family:make",
    "document": "vislang.data.world.document_family:make",
    "ui": "vislang.data.world.ui_family:make",
    "fashion": "vislang.data.real:make_fashion",
    "digits": "vislang.data.real:make_digits",
}


def family_maker(family: str):
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    module, name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), name)


def generate_sample(family: str, split: str, seed: int, index: int, cfg: WorldConfig | None = None) -> Sample:
    """Sample `index` of the stream (family, split, seed): the same arguments give the same bytes."""
    rng = sample_rng(family, split, seed, index)
    sample = family_maker(family)(rng, cfg or WorldConfig(), split)
    return dataclasses.replace(sample, family=family, split=split, seed=seed, index=index)


__all__ = ["FAMILIES", "SPLITS", "Sample", "WorldConfig", "family_maker", "generate_sample", "sample_rng"]
