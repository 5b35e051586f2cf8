"""A controlled shift of the world's images or scenes, at severities 0 (the clean sample) to n.

Every shift answers make(family, split, seed, index, severity) with a Sample whose answer is exact
under the shift, or None when the shift makes the sample's question unanswerable (a grayscale image
and a colour question). Severity 0 is always the clean sample, bit for bit.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from vislang.data.world import Sample

GROUPS = ("resolution", "quality", "layout", "domain")


@dataclass(frozen=True)
class Shift:
    name: str
    group: str  # one of GROUPS
    param: str  # what a level is, e.g. "JPEG quality"
    levels: tuple  # one per severity; levels[0] is the clean setting
    excludes: frozenset[str] = field(default_factory=frozenset)  # qtypes the shift makes unanswerable
    note: str = ""  # one line for the report: what is done to the image or the scene

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(f"shift group must be one of {GROUPS}, got {self.group!r}")
        if len(self.levels) < 2:
            raise ValueError("a shift needs the clean level and at least one severity")

    @property
    def severities(self) -> range:
        return range(len(self.levels))

    def rng(self, seed: int, index: int, severity: int) -> np.random.Generator:
        """Its own stream per (shift, sample, severity): adding a shift never changes another's draws."""
        return np.random.default_rng([zlib.crc32(self.name.encode()), seed, index, severity])

    def make(self, family: str, split: str, seed: int, index: int, severity: int) -> Sample | None:
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "name": self.name,
            "group": self.group,
            "param": self.param,
            "levels": list(self.levels),
            "excludes": sorted(self.excludes),
            "note": self.note,
        }
