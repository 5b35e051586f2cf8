"""Grounding: ask where something is, read the box, draw it on the image."""

from __future__ import annotations

from PIL import Image, ImageDraw

from .eval.normalize import parse_box
from .processing import load_image

GROUND_TEMPLATE = "Find {ref}. Answer with a bounding box."


def to_pixels(box: list[int], width: int, height: int) -> list[int]:
    """A [x1, y1, x2, y2] box on the 0..1000 grid to pixels of a width x height image."""
    x1, y1, x2, y2 = box
    return [
        round(x1 * width / 1000),
        round(y1 * height / 1000),
        round(x2 * width / 1000),
        round(y2 * height / 1000),
    ]


def ground(model, image, ref: str, max_new_tokens: int = 32) -> tuple[str, list[int] | None]:
    """(the model's answer, its box in pixels or None when it gave no box)."""
    image = load_image(image)
    content = [{"type": "image", "image": image}, {"type": "text", "text": GROUND_TEMPLATE.format(ref=ref)}]
    answer = str(model.chat([{"role": "user", "content": content}], max_new_tokens=max_new_tokens))
    box = parse_box(answer)
    return answer, None if box is None else to_pixels(box, image.width, image.height)


def draw_box(image, box: list[int], label: str = "", color=(255, 0, 160)) -> Image.Image:
    image = load_image(image).copy()
    draw = ImageDraw.Draw(image)
    width = max(2, round(min(image.size) / 100))
    draw.rectangle(box, outline=color, width=width)
    if label:
        draw.text((box[0] + width + 1, max(0, box[1] - 12)), label, fill=color)
    return image
