"""Drawing a window: title bar, then rows of widgets (text fields, checkboxes, rows of buttons).

The same marks as documents (document_render.py): the window is laid out at one font size inside a
w x h area, or not at all when it does not fit, and the family searches the largest size that fits.
Buttons are flat rounded rectangles with no outline, so a button's box is exactly its fill-colored pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .document_render import RGB, Mark, ellipse, extent, line, rect, text
from .fonts import font

FIELD_FILL: RGB = (255, 255, 255)
FIELD_BORDER: RGB = (150, 150, 150)
CHECK_BORDER: RGB = (90, 90, 90)
CHECK_MARK: RGB = (20, 20, 20)
CONTROLS: list[RGB] = [(235, 95, 85), (240, 190, 60), (90, 190, 80)]  # close, minimize, maximize dots
CHECK_POINTS = (0.22, 0.52, 0.42, 0.74, 0.80, 0.26)  # the tick's polyline, as fractions of the box side


@dataclass
class Widget:
    index: int  # position in the window's widget list: the mark names "w{index}" and "w{index}.label"
    type: str  # "button", "text_field" or "checkbox"
    label: str
    checked: bool = False
    fill: RGB = (0, 0, 0)  # button color
    text_fill: RGB = (255, 255, 255)  # button label color


@dataclass
class WindowStyle:
    body: RGB
    border: RGB
    bar: RGB
    bar_text: RGB
    title_centered: bool
    button_align: str  # "left", "center" or "right"
    field_frac: float  # a text box's share of the room right of the labels
    valign: float  # where the rows sit in the spare height: 0 top .. 1 bottom


def checkbox_marks(x: int, cy: int, side: int, checked: bool, name: str) -> list[Mark]:
    y = cy - side // 2
    marks = [rect((x, y, x + side, y + side), FIELD_FILL, name, CHECK_BORDER, max(1, round(side / 12)))]
    if checked:
        points = [round(v * side) + (x if i % 2 == 0 else y) for i, v in enumerate(CHECK_POINTS)]
        marks.append(line(points, CHECK_MARK, max(1, round(side / 7))))
    return marks


def window_marks(title: str, rows: list[list[Widget]], s: int, w: int, h: int, style: WindowStyle):
    """The window filling a w x h area at font size s, or None when it does not fit."""
    bold, plain = font(s, "sans-bold"), font(s, "sans")
    bar_h, pad, row_h, gap_min = round(2.0 * s), max(2, round(0.8 * s)), round(1.9 * s), round(0.5 * s)
    left, right = pad, w - pad
    marks = [
        rect((0, 0, w, h), style.body, "window", style.border),
        rect((0, 0, w, bar_h), style.bar, "title_bar"),
    ]
    r = max(1, round(0.17 * bar_h))
    for k, color in enumerate(CONTROLS):  # window controls at the right of the title bar
        cx = w - pad - r - k * 3 * r
        marks.append(ellipse((cx - r, bar_h // 2 - r, cx + r, bar_h // 2 + r), color))
    title_room = w - 2 * pad - 9 * r
    if bold.getlength(title) > title_room:
        return None
    title_at = ((w - 9 * r) / 2, bar_h / 2) if style.title_centered else (pad, bar_h / 2)
    marks.append(text(title, title_at, bold, style.bar_text, "mm" if style.title_centered else "lm", "title"))

    room = h - bar_h - 2 * pad
    need = len(rows) * row_h + (len(rows) - 1) * gap_min
    if need > room:
        return None
    gap = gap_min + min((room - need) // max(1, len(rows) - 1), round(0.9 * s))  # spread, up to a limit
    used = len(rows) * row_h + (len(rows) - 1) * gap
    y0 = bar_h + pad + round(style.valign * (room - used))
    labels = [wd.label for row in rows for wd in row if wd.type == "text_field"]
    column = math.ceil(max(plain.getlength(label) for label in labels)) + round(0.6 * s) if labels else 0
    for i, row in enumerate(rows):
        cy = y0 + i * (row_h + gap) + row_h // 2
        first = row[0]
        if first.type == "text_field":
            box_w = round(style.field_frac * (right - left - column))
            if box_w < 3 * s:
                return None
            box_h = round(1.5 * s)
            box = (left + column, cy - box_h // 2, left + column + box_w, cy - box_h // 2 + box_h)
            marks.append(text(first.label, (left, cy), plain, (0, 0, 0), "lm", f"w{first.index}.label"))
            marks.append(rect(box, FIELD_FILL, f"w{first.index}", FIELD_BORDER))
        elif first.type == "checkbox":
            side = max(5, round(1.1 * s))
            marks += checkbox_marks(left, cy, side, first.checked, f"w{first.index}")
            label = text(
                first.label,
                (left + side + round(0.5 * s), cy),
                plain,
                (0, 0, 0),
                "lm",
                f"w{first.index}.label",
            )
            if label.box[2] > right:
                return None
            marks.append(label)
        else:
            buttons = button_row(row, s, left, right, cy, style.button_align)
            if buttons is None:
                return None
            marks += buttons
    x1, y1, x2, y2 = extent(marks)
    return marks if x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h else None


def button_row(row: list[Widget], s: int, left: int, right: int, cy: int, align: str) -> list[Mark] | None:
    """Buttons side by side, aligned in the row; None when they are wider than it."""
    face = font(s, "sans-bold")
    widths = [math.ceil(face.getlength(b.label)) + 2 * round(0.9 * s) for b in row]
    gap, button_h = round(0.6 * s), round(1.6 * s)
    total = sum(widths) + gap * (len(row) - 1)
    if total > right - left:
        return None
    x = {"left": left, "center": left + (right - left - total) // 2, "right": right - total}[align]
    marks = []
    for b, bw in zip(row, widths):
        box = (x, cy - button_h // 2, x + bw, cy - button_h // 2 + button_h)
        marks.append(rect(box, b.fill, f"w{b.index}", radius=max(1, round(0.3 * button_h))))
        marks.append(text(b.label, ((box[0] + box[2]) / 2, cy), face, b.text_fill, "mm", f"w{b.index}.label"))
        x += bw + gap
    return marks
