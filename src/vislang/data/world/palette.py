"""The constants of world-spec.md section 1: backgrounds, colors, shapes, sizes, regions, number words."""

from __future__ import annotations

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "cream": (245, 240, 225),
    "light gray": (225, 225, 225),
    "light blue": (220, 232, 245),
    "light green": (225, 240, 225),
    "light pink": (245, 228, 232),
}
NOISE_PROBABILITY = 0.3
NOISE_SIGMA = (4.0, 8.0)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 195, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
COLOR_JITTER = 15  # each channel moves uniformly by -15..+15, then is clamped to 0..255

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon")

# bounding-circle radius as a fraction of min(W, H)
SIZES: dict[str, tuple[float, float]] = {"small": (0.05, 0.075), "large": (0.10, 0.14)}

MAX_ROTATION = 20.0  # degrees either way; circles are never rotated
MIN_OBJECTS, MAX_OBJECTS = 1, 6
GAP = 0.02  # bounding circles keep at least this fraction of min(W, H) apart
EDGE_MARGIN = 2  # pixels between a shape and the canvas edge

# 3 x 3 grid by object center, row-major from the top left
REGIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)

RELATION_MARGIN = 0.05  # of W for left/right, of H for above/below

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")
