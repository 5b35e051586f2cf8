"""Drawing documents and windows as lists of marks: the ground truth is read off what is drawn.

A layout is a list of Marks placed around the origin at one font size. The family searches the
largest size whose layout fits the canvas, shifts the marks into place and draws them; every named
mark keeps its pixel box [x1, y1, x2, y2] (x2 and y2 exclusive, the convention of Image.getbbox),
so a recorded box is the extent of the very glyphs or rectangle on the image.
Receipts, forms and bar charts are laid out here; ui_render.py lays out windows with the same marks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from .fonts import font

Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]
GRID: RGB = (226, 226, 226)
RULE_GRAY: RGB = (150, 150, 150)


@dataclass(frozen=True)
class Mark:
    kind: str  # "rect", "text", "line" or "ellipse"
    box: Box
    fill: RGB
    name: str = ""  # key of the ground truth ("item3.price", "bar1", ...); "" for decoration
    text: str = ""
    font: ImageFont.FreeTypeFont | None = None
    anchor: str = "ls"
    points: tuple[int, ...] = ()  # text: the anchor point; line: x0, y0, x1, y1, ...
    outline: RGB | None = None
    width: int = 1  # outline or line width
    radius: int = 0


def rect(box: Box, fill: RGB, name: str = "", outline: RGB | None = None, width: int = 1, radius: int = 0):
    return Mark("rect", tuple(int(v) for v in box), fill, name, outline=outline, width=width, radius=radius)


def ellipse(box: Box, fill: RGB) -> Mark:
    return Mark("ellipse", tuple(int(v) for v in box), fill)


def text(
    s: str, xy: tuple[float, float], face: ImageFont.FreeTypeFont, fill: RGB, anchor: str = "ls", name=""
):
    x, y = round(xy[0]), round(xy[1])  # integer anchors: the drawn glyphs and the box agree exactly
    l, t, r, b = face.getbbox(s, anchor=anchor)
    box = (x + math.floor(l), y + math.floor(t), x + math.ceil(r), y + math.ceil(b))
    return Mark("text", box, fill, name, s, face, anchor, (x, y))


def line(points: Sequence[int], fill: RGB, width: int) -> Mark:
    xs, ys, half = points[0::2], points[1::2], math.ceil(width / 2)
    box = (min(xs) - half, min(ys) - half, max(xs) + half + 1, max(ys) + half + 1)
    return Mark("line", box, fill, points=tuple(int(v) for v in points), width=width)


def shifted(marks: list[Mark], dx: int, dy: int) -> list[Mark]:
    def move(m: Mark) -> Mark:
        x1, y1, x2, y2 = m.box
        pts = tuple(v + (dx if i % 2 == 0 else dy) for i, v in enumerate(m.points))
        return dataclasses.replace(m, box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy), points=pts)

    return [move(m) for m in marks]


def extent(marks: list[Mark]) -> Box:
    boxes = [m.box for m in marks]
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def named_boxes(marks: list[Mark]) -> dict[str, list[int]]:
    return {m.name: list(m.box) for m in marks if m.name}


def draw_marks(image: Image.Image, marks: list[Mark]) -> None:
    draw = ImageDraw.Draw(image)
    for m in marks:
        x1, y1, x2, y2 = m.box
        if m.kind == "rect" and m.radius > 0:
            draw.rounded_rectangle((x1, y1, x2 - 1, y2 - 1), m.radius, m.fill, m.outline, m.width)
        elif m.kind == "rect":
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), m.fill, m.outline, m.width)
        elif m.kind == "ellipse":
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), m.fill)
        elif m.kind == "line":
            draw.line(list(m.points), m.fill, m.width, joint="curve")
        else:
            draw.text(m.points, m.text, m.fill, m.font, m.anchor)


def largest_fitting(fits: Callable[[int], bool], floor: int, cap: int) -> int | None:
    """The largest size in [floor, cap] that fits (a binary search: layouts only grow with the size)."""
    if not fits(floor):
        return None
    lo, hi = floor, max(floor, cap)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def block_fits(layout: Callable[[int], list[Mark]], width: int, height: int) -> Callable[[int], bool]:
    def fits(size: int) -> bool:
        x1, y1, x2, y2 = extent(layout(size))
        return x2 - x1 <= width and y2 - y1 <= height

    return fits


def receipt_marks(store: str, items: list[tuple[str, str]], total: str, s: int, ink: RGB, stretch=1.0):
    """A store name, one line per item (name left, price right), rules, and the total line."""
    body, bold, head = font(s, "mono"), font(s, "sans-bold"), font(round(1.25 * s), "sans-bold")
    lh, gap, rule = round(1.45 * s), body.getlength("   "), max(1, round(s / 12))
    natural = max(
        head.getlength(store),
        bold.getlength("TOTAL") + gap + bold.getlength(total),
        *(body.getlength(name) + gap + body.getlength(price) for name, price in items),
    )
    w = math.ceil(natural * stretch)
    marks = [text(store, (w / 2, 0), head, ink, "ms", "store")]
    y = round(0.5 * lh)
    marks.append(rect((0, y, w, y + rule), ink))
    for i, (name, price) in enumerate(items):
        y += lh
        marks += [
            text(name, (0, y), body, ink, "ls", f"item{i}.name"),
            text(price, (w, y), body, ink, "rs", f"item{i}.price"),
        ]
    y += round(0.6 * lh)
    marks.append(rect((0, y, w, y + rule), ink))
    y += lh
    return marks + [
        text("TOTAL", (0, y), bold, ink, "ls", "total_label"),
        text(total, (w, y), bold, ink, "rs", "total"),
    ]


def form_marks(title: str, fields: list[tuple[str, str]], s: int, ink: RGB, underline: bool) -> list[Mark]:
    """A title, then one "Label: value" row per field with the values in a common column."""
    head, label_font, value_font = font(round(1.25 * s), "sans-bold"), font(s, "sans-bold"), font(s, "sans")
    lh = round(1.7 * s)
    col = math.ceil(max(label_font.getlength(f"{label}:") for label, _ in fields)) + round(0.6 * s)
    right = col + math.ceil(max(value_font.getlength(value) for _, value in fields)) + round(0.5 * s)
    marks = [text(title, (0, 0), head, ink, "ls", "title")]
    y = round(0.4 * lh)
    for i, (label, value) in enumerate(fields):
        y += lh
        marks.append(text(f"{label}:", (0, y), label_font, ink, "ls", f"field{i}.label"))
        marks.append(text(value, (col, y), value_font, ink, "ls", f"field{i}.value"))
        if underline:  # the line a value was written on, below the descenders
            u = y + max(2, round(0.3 * s))
            marks.append(rect((col, u, right, u + 1), RULE_GRAY))
    return marks


def chart_marks(
    title: str,
    bars: list[tuple[str, int]],
    scale: int,
    s: int,
    w: int,
    h: int,
    ink: RGB,
    color: RGB,
    show_values: bool,
    bar_frac: float,
) -> list[Mark] | None:
    """A bar chart filling a w x h area: title, y axis with ticks, bars, category and value labels.

    None when it does not fit at font size s (labels wider than their slot, or too flat a plot).
    """
    small, head = font(s, "sans"), font(round(1.2 * s), "sans-bold")
    asc, desc = small.getmetrics()
    axis = max(1, round(s / 14))
    marks, top = [], 0
    if title:
        ha, hd = head.getmetrics()
        marks.append(text(title, (w / 2, ha), head, ink, "ms", "title"))
        top = ha + hd + round(0.3 * s)
    top += asc + desc + round(0.2 * s)  # room for the value label above a full-height bar
    base = h - (asc + desc) - round(0.3 * s) - axis  # bars end at base (exclusive); the axis starts there
    plot_h = base - top
    steps = next((k for k in (5, 2, 1) if plot_h / k >= asc + desc), None)
    if plot_h < max(12, 0.3 * h) or steps is None:
        return None
    ticks = [scale * k // steps for k in range(steps + 1)]
    tick_len = max(2, round(0.3 * s))
    x0 = math.ceil(max(small.getlength(str(t)) for t in ticks)) + tick_len + round(0.3 * s) + axis
    x1 = w - max(1, round(0.3 * s))
    slot = (x1 - x0) / len(bars)
    widest = max(small.getlength(label) for label, _ in bars)
    if show_values:
        widest = max(widest, max(small.getlength(str(v)) for _, v in bars))
    if widest > 0.92 * slot:
        return None
    for t in ticks:  # gridlines first: bars and axes are drawn over them
        y = base - round(t / scale * plot_h)
        if t > 0:
            marks.append(rect((x0, y, x1, y + 1), GRID))
        marks.append(rect((x0 - axis - tick_len, y, x0 - axis, y + axis), ink))
        marks.append(text(str(t), (x0 - axis - tick_len - round(0.2 * s), y), small, ink, "rm", f"tick{t}"))
    bar_w = max(1, round(slot * bar_frac))
    for i, (label, value) in enumerate(bars):
        cx = x0 + slot * (i + 0.5)
        left, height = round(cx - bar_w / 2), round(value / scale * plot_h)
        marks.append(rect((left, base - height, left + bar_w, base), color, f"bar{i}"))
        marks.append(text(label, (cx, base + axis + round(0.3 * s)), small, ink, "ma", f"bar{i}.label"))
        if show_values:
            marks.append(
                text(str(value), (cx, base - height - round(0.15 * s)), small, ink, "md", f"bar{i}.value")
            )
    marks.append(rect((x0 - axis, top - round(0.2 * s), x0, base + axis), ink))  # y axis
    marks.append(rect((x0 - axis, base, x1, base + axis), ink))  # x axis
    x_lo, y_lo, x_hi, y_hi = extent(marks)
    return marks if x_lo >= 0 and y_lo >= 0 and x_hi <= w and y_hi <= h else None
