"""Which files under a folder are images, and a cheap fingerprint that says when one changed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import VislangError

# the raster formats vislang's image loader opens (processing.image.OPEN_FORMATS), by file name
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")


@dataclass(frozen=True)
class Fingerprint:
    """Size and modification time: reading every byte to hash it would cost as much as decoding."""

    size: int
    mtime_ns: int


def fingerprint(path: str | Path) -> Fingerprint:
    stat = os.stat(path)
    return Fingerprint(stat.st_size, stat.st_mtime_ns)


def find_images(root: str | Path) -> list[Path]:
    """Every image file under `root` (recursively, symlinked folders not followed), absolute and sorted."""
    root = Path(root)
    if not root.is_dir():
        raise VislangError(f"{root} is not a folder of images")
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .thumbnails, ...
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                found.append(Path(folder, name).resolve())
    return sorted(found)
