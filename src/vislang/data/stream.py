"""Torch datasets that generate the world on the fly: no files, any length, the same items every time.

Item i is a pure function of the constructor's arguments and i, so the datasets hold no state
worth sharing: DataLoader workers (num_workers > 0, fork or spawn) each rebuild the same items.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
from torch.utils.data import Dataset

from .world import FAMILIES, SPLITS, Sample, WorldConfig, generate_sample

# mixes the mixture's family choice apart from every sample's own stream
MIXTURE_SALT = zlib.crc32(b"vislang-mixture")


def _check_index(i: int, n: int) -> int:
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {i} out of range for a dataset of {n}")
    return i


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class WorldDataset(Dataset):
    """n samples of one family: item i = generate_sample(family, split, seed, i, cfg), then `transform`."""

    def __init__(
        self,
        family: str,
        n: int,
        split: str = "train",
        seed: int = 0,
        cfg: WorldConfig | None = None,
        transform: Callable[[Sample], object] | None = None,
    ):
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
        _check_split(split)
        self.family, self.n, self.split, self.seed = family, n, split, seed
        self.cfg, self.transform = cfg or WorldConfig(), transform

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        sample = generate_sample(self.family, self.split, self.seed, _check_index(i, self.n), self.cfg)
        return self.transform(sample) if self.transform else sample


class MixtureDataset(Dataset):
    """n samples drawn from several families in proportion to `weights`.

    The family of item i is a weighted draw from a generator seeded with (seed, i), so it needs no
    state and no scan of the items before it. The sample is then item i of that family's own
    stream, generate_sample(family, split, seed, i): two items never share a sample, and a mixture
    of one family is exactly WorldDataset of that family.
    """

    def __init__(
        self,
        weights: dict[str, float],
        n: int,
        split: str = "train",
        seed: int = 0,
        cfg: WorldConfig | None = None,
        transform: Callable[[Sample], object] | None = None,
    ):
        unknown = [f for f in weights if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; families: {', '.join(FAMILIES)}")
        if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
        _check_split(split)
        self.families = list(weights)
        total = sum(weights.values())
        self.probs = np.array([weights[f] / total for f in self.families])
        self.n, self.split, self.seed = n, split, seed
        self.cfg, self.transform = cfg or WorldConfig(), transform

    def __len__(self) -> int:
        return self.n

    def family_of(self, i: int) -> str:
        rng = np.random.default_rng(
            np.random.SeedSequence([MIXTURE_SALT, self.seed, _check_index(i, self.n)])
        )
        return self.families[int(rng.choice(len(self.families), p=self.probs))]

    def __getitem__(self, i: int):
        i = _check_index(i, self.n)
        sample = generate_sample(self.family_of(i), self.split, self.seed, i, self.cfg)
        return self.transform(sample) if self.transform else sample
