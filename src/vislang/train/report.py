"""What a run leaves to look at: log.csv (one row a step) and loss.png, drawn with PIL alone."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLUMNS = ("step", "stage", "loss", "lr", "samples_per_s", "elapsed_s")
PLOT_SIZE = (800, 480)
MARGIN = (70, 40, 20, 50)  # left, top, right, bottom: room for tick labels and titles
SMOOTH = 20  # steps in the running mean drawn over the raw losses
COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75))


def write_log(rows: list[dict], path: Path, append: bool = False, columns=COLUMNS) -> None:
    """The rows as CSV. Without append the file is rewritten: a resumed run drops the rows logged after
    its checkpoint, which it is about to train again."""
    new = not append or not path.exists()
    with open(path, "a" if append else "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """About `count` round values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    span = max(high - low, 1e-12)
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def plot_loss(rows: list[dict], path: Path, size: tuple[int, int] = PLOT_SIZE) -> None:
    """Loss against step, one coloured line per stage, with axes, ticks, labels and a legend."""
    width, height = size
    left, top, right, bottom = MARGIN
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((width // 2 - 40, 12), "training loss", fill="black", font=font)
    x0, y0, x1, y1 = left, top, width - right, height - bottom  # the plot area
    draw.rectangle((x0, y0, x1, y1), outline="black")
    draw.text(((x0 + x1) // 2 - 10, height - 20), "step", fill="black", font=font)
    draw.text((6, y0 - 20), "loss", fill="black", font=font)

    points = [(float(r["step"]), float(r["loss"])) for r in rows if math.isfinite(float(r["loss"]))]
    if points:
        steps, losses = [p[0] for p in points], [p[1] for p in points]
        s_lo, s_hi = min(steps), max(max(steps), min(steps) + 1)
        l_lo, l_hi = min(losses), max(losses)
        pad = max((l_hi - l_lo) * 0.05, 1e-3)
        l_lo, l_hi = l_lo - pad, l_hi + pad

        def xy(step: float, loss: float) -> tuple[float, float]:
            x = x0 + (step - s_lo) / (s_hi - s_lo) * (x1 - x0)
            return x, y1 - (loss - l_lo) / (l_hi - l_lo) * (y1 - y0)

        for value in nice_ticks(l_lo, l_hi):
            y = xy(s_lo, value)[1]
            draw.line((x0, y, x1, y), fill=(225, 225, 225))
            draw.text((6, y - 6), f"{value:.3g}", fill="black", font=font)
        for value in nice_ticks(s_lo, s_hi):
            x = xy(value, l_lo)[0]
            draw.line((x, y1, x, y1 + 4), fill="black")
            draw.text((x - 8, y1 + 8), f"{value:g}", fill="black", font=font)

        stages = list(dict.fromkeys(r["stage"] for r in rows))
        for k, stage in enumerate(stages):
            color = COLORS[k % len(COLORS)]
            mine = [(float(r["step"]), float(r["loss"])) for r in rows if r["stage"] == stage]
            line = [xy(*p) for p in mine]
            if len(line) == 1:
                draw.ellipse((line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2), fill=color)
            elif len(line) <= SMOOTH:
                draw.line(line, fill=color, width=2)
            else:  # noisy per-step losses in a pale tint, their running mean on top
                pale = tuple(c + (255 - c) * 2 // 3 for c in color)
                draw.line(line, fill=pale, width=1)
                losses = [loss for _, loss in mine]
                means = [
                    sum(losses[max(0, i - SMOOTH + 1) : i + 1]) / min(i + 1, SMOOTH) for i in range(len(mine))
                ]
                draw.line([xy(step, m) for (step, _), m in zip(mine, means)], fill=color, width=2)
            # legend, top right inside the plot area
            ly = y0 + 8 + 16 * k
            draw.line((x1 - 120, ly + 6, x1 - 100, ly + 6), fill=color, width=3)
            draw.text((x1 - 94, ly), str(stage), fill="black", font=font)
    tmp = path.with_name(path.name + ".tmp.png")
    image.save(tmp)
    os.replace(tmp, path)
