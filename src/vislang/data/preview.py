"""A contact sheet of samples: each image with its question and answer under it, to check a family by eye.

Several images (a `multi` pair) sit side by side in their cell, a video shows four frames in a
2 x 2 tile, and a grounding answer ("[x1, y1, x2, y2]", 0..1000) is drawn as a box on the image.
"""

from __future__ import annotations

import math
import re

from PIL import Image, ImageDraw

from .world.fonts import font
from .world.sample import Sample

BOX_ANSWER = re.compile(r"^\[(\d+), (\d+), (\d+), (\d+)\]$")
GAP = 4  # pixels around and between cells, so dark images do not run together
TEXT_LINES = 6  # per cell: up to 3 lines of question, the rest answer
BACKGROUND = (250, 250, 250)
CELL_BACKGROUND = (200, 200, 200)
QUESTION_COLOR = (40, 40, 40)
ANSWER_COLOR = (0, 90, 200)
BOX_COLOR = (255, 0, 200)  # magenta: no world colour is close to it


def font_size(cell: int) -> int:
    return max(10, cell // 18)


def text_height(cell: int) -> int:
    """The height of the text band under each image."""
    return TEXT_LINES * round(font_size(cell) * 1.25) + 8


def grid_size(n: int, columns: int = 4, cell: int = 224) -> tuple[int, int]:
    """(width, height) of the grid of n samples."""
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    return GAP + columns * (cell + GAP), GAP + rows * (cell + text_height(cell) + GAP)


def _fit(image: Image.Image, width: int, height: int) -> tuple[Image.Image, int, int]:
    """The image scaled to fit width x height, keeping its aspect, and its offset when centred."""
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    fitted = image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    return fitted, (width - size[0]) // 2, (height - size[1]) // 2


def _tiles(sample: Sample, cell: int) -> list[tuple[Image.Image, int, int, int, int]]:
    """(image, x, y, w, h) rectangles of the images shown in a cell."""
    images = sample.images
    if sample.family == "video" and len(images) > 1:
        picks = sorted({round(k * (len(images) - 1) / 3) for k in range(4)})  # first, last, two between
        half = (cell - GAP) // 2
        return [
            (images[j], (k % 2) * (half + GAP), (k // 2) * (half + GAP), half, half)
            for k, j in enumerate(picks)
        ]
    pitch = (cell + GAP) // len(images)  # side by side, a gap between
    return [
        (image, k * pitch, 0, pitch - GAP if len(images) > 1 else cell, cell)
        for k, image in enumerate(images)
    ]


def _draw_images(sample: Sample, cell: int) -> Image.Image:
    canvas = Image.new("RGB", (cell, cell), CELL_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    box = BOX_ANSWER.match(sample.answer.strip())
    for image, x, y, w, h in _tiles(sample, cell):
        fitted, dx, dy = _fit(image, w, h)
        canvas.paste(fitted, (x + dx, y + dy))
        if box and len(sample.images) == 1:
            x1, y1, x2, y2 = (int(v) / 1000 for v in box.groups())
            fw, fh = fitted.size
            corners = [x + dx + x1 * fw, y + dy + y1 * fh, x + dx + x2 * fw, y + dy + y2 * fh]
            draw.rectangle(corners, outline=BOX_COLOR, width=max(2, cell // 112))
    return canvas


def _wrap(text: str, width: int, style: str, size: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels, the last line cut with an ellipsis when too long."""
    face = font(size, style)
    lines: list[str] = []
    for word in text.split():
        if lines and face.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += " …"
    for k, line in enumerate(lines):  # a single word wider than the cell
        while face.getlength(line) > width and len(line) > 2:
            line = line[:-2] + "…"
        lines[k] = line
    return lines


def preview_grid(samples: list[Sample], columns: int = 4, cell: int = 224) -> Image.Image:
    """A grid of the samples, `columns` wide, each a cell x cell image over its question and answer."""
    if not samples:
        raise ValueError("preview_grid needs at least one sample")
    columns = max(1, min(columns, len(samples)))
    size, band = font_size(cell), text_height(cell)
    line, margin = round(size * 1.25), 4
    grid = Image.new("RGB", grid_size(len(samples), columns, cell), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for k, sample in enumerate(samples):
        x, y = GAP + (k % columns) * (cell + GAP), GAP + (k // columns) * (cell + band + GAP)
        grid.paste(_draw_images(sample, cell), (x, y))
        question = _wrap(sample.question, cell - 2 * margin, "sans", size, max_lines=3)
        answer = _wrap(sample.answer, cell - 2 * margin, "sans-bold", size, TEXT_LINES - len(question))
        ty = y + cell + margin
        lines = [(q, "sans", QUESTION_COLOR) for q in question] + [
            (a, "sans-bold", ANSWER_COLOR) for a in answer
        ]
        for text, style, color in lines:
            draw.text((x + margin, ty), text, fill=color, font=font(size, style))
            ty += line
    return grid
