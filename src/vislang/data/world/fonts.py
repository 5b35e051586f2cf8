"""Fonts from Debian's fonts-dejavu-core, found where the package installs them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/local/share/fonts/truetype/dejavu")
FILES = {"sans": "DejaVuSans.ttf", "sans-bold": "DejaVuSans-Bold.ttf", "mono": "DejaVuSansMono.ttf"}


def font_path(style: str = "sans-bold") -> Path:
    name = FILES[style]
    for folder in FONT_DIRS:
        path = Path(folder) / name
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{name} not found in {', '.join(FONT_DIRS)}: install it with `apt-get install fonts-dejavu-core`"
    )


@lru_cache(maxsize=256)
def font(size: int, style: str = "sans-bold") -> ImageFont.FreeTypeFont:
    """A DejaVu font at `size` pixels (cached: loading a TrueType file costs more than drawing with it)."""
    return ImageFont.truetype(str(font_path(style)), size)
