"""One generated sample: images, a question, its exact answer, and the ground truth behind it."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")


@dataclass
class WorldConfig:
    """Settings every family honours."""

    width: int = 224
    height: int = 224
    paraphrase: bool = False  # training switch: ask a random paraphrase, not the canonical template
    qtypes: tuple[str, ...] | None = None  # restrict to these question types (None: the family's own mix)

    def __post_init__(self):
        for side in (self.width, self.height):
            if not 64 <= side <= 1024:
                raise ValueError(f"canvas sides must be in [64, 1024], got {self.width} x {self.height}")


@dataclass
class Sample:
    family: str
    question: str
    answer: str
    kind: str  # "perception" or "reasoning" (scene); the family's name for others
    qtype: str
    images: list[Image.Image]
    objects: list[dict] = field(default_factory=list)  # world-spec section 5, for the (first) image
    probes: list[dict] = field(default_factory=list)  # [{"question", "answer", "qtype"}]
    meta: dict = field(default_factory=dict)  # family-specific ground truth (boxes, frames, changes, ...)
    split: str = "train"
    seed: int = 0
    index: int = 0

    @property
    def id(self) -> str:
        return f"{self.family}-{self.split}-{self.seed}-{self.index}"

    @property
    def width(self) -> int:
        return self.images[0].width

    @property
    def height(self) -> int:
        return self.images[0].height

    def record(self, image_paths: list[str]) -> dict:
        """The JSONL record of world-spec section 5."""
        return {
            "id": self.id,
            "family": self.family,
            "split": self.split,
            "seed": self.seed,
            "index": self.index,
            "images": list(image_paths),
            "width": self.width,
            "height": self.height,
            "objects": self.objects,
            "question": self.question,
            "answer": self.answer,
            "kind": self.kind,
            "qtype": self.qtype,
            "probes": self.probes,
            **({"meta": self.meta} if self.meta else {}),
        }


def sample_rng(family: str, split: str, seed: int, index: int) -> np.random.Generator:
    """The random stream of one sample.

    The split is part of the seed material, so a train sample and an evaluation sample never share
    a stream whatever seeds and indices the two sides pick: they cannot overlap by construction.
    crc32 rather than hash(): the same in every process.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be >= 0")
    material = [zlib.crc32(family.encode()), SPLITS.index(split), seed, index]
    return np.random.default_rng(np.random.SeedSequence(material))
