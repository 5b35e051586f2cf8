"""Grounding: ask where something is, read the box, draw it on the image.

Three box conventions are read, each the way its models write it:
- vislang's and LLaVA's: "[x1, y1, x2, y2]" on a 0..1000 grid over the image;
- Qwen2-VL's: <|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>,
  also on the 0..1000 grid (the special tokens may have been stripped: "(x1,y1),(x2,y2)" remains);
- Qwen2.5-VL's: JSON such as [{"bbox_2d": [x1, y1, x2, y2], "label": "car"}], in absolute pixels of
  the image as the model saw it (after smart_resize), so they are scaled back to the original.
"""

from __future__ import annotations

import json
import re

from PIL import Image, ImageDraw

from .eval.normalize import parse_box
from .processing import load_image

GROUND_TEMPLATE = "Find {ref}. Answer with a bounding box."
GROUND_TEMPLATES = {
    "qwen2_vl": "Find {ref} and output its bounding box.",
    "qwen2_5_vl": "Locate {ref} in the image and output its bbox coordinates in JSON format.",
}
_NUM = r"-?\d+(?:\.\d+)?"
_REF_BOX = re.compile(
    r"(?:<\|object_ref_start\|>(?P<label>.*?)<\|object_ref_end\|>)?\s*(?:<\|box_start\|>)?\s*"
    rf"\(\s*(?P<x1>{_NUM})\s*,\s*(?P<y1>{_NUM})\s*\)\s*,\s*\(\s*(?P<x2>{_NUM})\s*,\s*(?P<y2>{_NUM})\s*\)",
    re.S,
)


def parse_qwen2_boxes(text: str) -> list[tuple[str, list[float]]]:
    """Qwen2-VL's (label, [x1, y1, x2, y2]) pairs on the 0..1000 grid, in order."""
    return [
        ((m.group("label") or "").strip(), [float(m.group(k)) for k in ("x1", "y1", "x2", "y2")])
        for m in _REF_BOX.finditer(text)
    ]


def parse_json_boxes(text: str) -> list[tuple[str, list[float]]]:
    """Qwen2.5-VL's JSON boxes ("bbox_2d", optional "label"), fenced or bare, one object or a list."""
    found = []
    for blob in re.findall(r"\[.*\]|\{.*\}", text, re.S):
        try:
            data = json.loads(blob)
        except json.JSONDecodeError:
            continue
        for item in data if isinstance(data, list) else [data]:
            box = item.get("bbox_2d") if isinstance(item, dict) else None
            if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
                found.append((str(item.get("label", "")), [float(v) for v in box]))
        if found:
            return found
    # a list the JSON parser refused (a cut-off answer): each object on its own
    for blob in re.findall(r"\{[^{}]*\}", text):
        try:
            item = json.loads(blob)
        except json.JSONDecodeError:
            continue
        box = item.get("bbox_2d")
        if isinstance(box, list) and len(box) == 4:
            found.append((str(item.get("label", "")), [float(v) for v in box]))
    return found


def model_family(model) -> str:
    return getattr(getattr(model, "cfg", None), "model_type", "")


def answer_boxes(model, answer: str, image) -> list[tuple[str, list[int]]]:
    """Every box in a model's answer about `image`, as (label, pixel box of the original image)."""
    width, height = image.size
    family = model_family(model)
    if family == "qwen2_5_vl":
        seen_h, seen_w = model.image_transform.resized_size(height, width)
        sx, sy = width / seen_w, height / seen_h
        boxes = parse_json_boxes(answer) or [
            (lbl, [v * s / 1000 for v, s in zip(b, (seen_w, seen_h) * 2)])
            for lbl, b in parse_qwen2_boxes(answer)
        ]
        return [
            (lbl, [round(b[0] * sx), round(b[1] * sy), round(b[2] * sx), round(b[3] * sy)])
            for lbl, b in boxes
        ]
    if family == "qwen2_vl":
        found = parse_qwen2_boxes(answer)
        if not found and (box := parse_box(answer)) is not None:
            found = [("", box)]
        return [(lbl, to_pixels(b, width, height)) for lbl, b in found]
    box = parse_box(answer)
    return [] if box is None else [("", to_pixels(box, width, height))]


def to_pixels(box: list[float], width: int, height: int) -> list[int]:
    """A [x1, y1, x2, y2] box on the 0..1000 grid to pixels of a width x height image."""
    x1, y1, x2, y2 = box
    return [
        round(x1 * width / 1000),
        round(y1 * height / 1000),
        round(x2 * width / 1000),
        round(y2 * height / 1000),
    ]


def ground(model, image, ref: str, max_new_tokens: int = 64) -> tuple[str, list[int] | None]:
    """(the model's answer, its first box in pixels or None when it gave no box)."""
    image = load_image(image)
    prompt = GROUND_TEMPLATES.get(model_family(model), GROUND_TEMPLATE).format(ref=ref)
    content = [{"type": "image", "image": image}, {"type": "text", "text": prompt}]
    reply = model.chat([{"role": "user", "content": content}], max_new_tokens=max_new_tokens)
    # Qwen2-VL writes its box between special tokens: read the answer with them kept
    answer = (
        model.tokenizer.decode(reply.token_ids, skip_special_tokens=False) if reply.token_ids else str(reply)
    )
    boxes = answer_boxes(model, answer, image)
    return str(reply), boxes[0][1] if boxes else None


def draw_box(image, box: list[int], label: str = "", color=(255, 0, 160)) -> Image.Image:
    image = load_image(image).copy()
    draw = ImageDraw.Draw(image)
    width = max(2, round(min(image.size) / 100))
    draw.rectangle(box, outline=color, width=width)
    if label:
        draw.text((box[0] + width + 1, max(0, box[1] - 12)), label, fill=color)
    return image
