"""Family `text`: a scene plus 1..2 signs, each a white rectangle with a 2 px black border holding one
uppercase word (world-spec.md section 3). Questions: "What does the sign say?" with one sign,
"What does the {position} sign say?" with two; the answer is the word, lowercase.

The signs are placed first and the objects around them, so a scene keeps its uniform object count.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import ImageDraw

from . import palette as P
from .fonts import font
from .paraphrases import ask
from .sample import Sample, WorldConfig
from .scene import MAX_SCENES, MAX_TRIES, PlacementError, draw_scene, sample_scene
from .scene_family import family_qtypes
from .scene_questions import choice

WORDS: tuple[str, ...] = tuple(
    """
    animal answer apple around baby back ball bank basket beach bear bed begin best bird black blue boat
    body book bottle bread bridge bright bring brother brown build butter button cake camera candle card
    carry castle cat chair change cheese child circle city clean clock close cloud coat coffee cold
    color corner country cover cow cup dance dark day dinner doctor dog door dream drink drive duck
    early earth east easy eat egg end evening face family farm fast father field fire fish floor flower
    fly food foot forest friend front fruit game garden gate girl glass gold good grass great green
    ground grow hand happy hat head heart hill home horse hot house island jacket jump kitchen king lake
    lamp large laugh leaf learn letter light lion little love lunch machine market milk money moon
    morning mother mountain mouse music name night north ocean office orange paper park party pencil
    people pepper picture place plant play pocket rabbit rain river road rock room round salt school sea
    seed shoe shop silver sister sleep small smile snow song south space spring square star station
    stone store street summer sun table teacher tiger train travel tree water west window winter yellow
    """.split()
)
QTYPES = ("sign", "sign_position")
TEXT_HEIGHT = (0.08, 0.12)  # font size as a fraction of H
BORDER = 2
PADDING = 0.3  # of the font size, between the word and the border

OBJECT_ATTEMPTS = 5  # object sets tried around one choice of signs

Rect = list[int]  # [x1, y1, x2, y2], x2 and y2 exclusive


def sign_size(word: str, size: int) -> tuple[int, int]:
    l, t, r, b = font(size, "sans-bold").getbbox(word.upper(), anchor="mm")
    pad = max(2, round(PADDING * size))
    return (r - l) + 2 * (pad + BORDER), (b - t) + 2 * (pad + BORDER)


def random_sign(rng: np.random.Generator, width: int, height: int) -> tuple[str, int, int, int]:
    """A word, its font size and the sign's size; the font shrinks when a long word would not fit."""
    word = choice(rng, WORDS)
    size = max(6, round(float(rng.uniform(*TEXT_HEIGHT)) * height))
    w, h = sign_size(word, size)
    while w > width - 2 * P.EDGE_MARGIN and size > 6:
        size -= 1
        w, h = sign_size(word, size)
    return word, size, w, h


def gap_between(a: Rect, b: Rect) -> float:
    dx = max(a[0] - b[2], b[0] - a[2], 0)
    dy = max(a[1] - b[3], b[1] - a[3], 0)
    return math.hypot(dx, dy)


def place_signs(rng: np.random.Generator, count: int, width: int, height: int) -> list[dict]:
    gap, m = P.GAP * min(width, height), P.EDGE_MARGIN
    for _ in range(MAX_SCENES):
        signs: list[dict] = []
        for _ in range(count):
            word, size, w, h = random_sign(rng, width, height)
            for _ in range(MAX_TRIES):
                x = int(rng.integers(m, max(m, width - m - w) + 1))
                y = int(rng.integers(m, max(m, height - m - h) + 1))
                rect = [x, y, x + w, y + h]
                if all(gap_between(rect, s["box"]) >= gap for s in signs):
                    signs.append({"word": word, "font_size": size, "box": rect})
                    break
            else:
                break
        else:
            return signs
    raise PlacementError(f"could not place {count} signs on {width} x {height}")


def clear_of(signs: list[dict], gap: float):
    """accept(cx, cy, r) for scene placement: the bounding circle keeps `gap` from every sign."""

    def accept(cx: float, cy: float, r: float) -> bool:
        for s in signs:
            x1, y1, x2, y2 = s["box"]
            if math.hypot(max(x1 - cx, 0, cx - x2), max(y1 - cy, 0, cy - y2)) < r + gap:
                return False
        return True

    return accept


def positions(a: Rect, b: Rect, width: int, height: int) -> tuple[str, str]:
    """Names for two signs along the axis that separates them more (relative to the canvas)."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2 / width
    dy = (a[1] + a[3] - b[1] - b[3]) / 2 / height
    if abs(dx) >= abs(dy):
        return ("left", "right") if dx < 0 else ("right", "left")
    return ("top", "bottom") if dy < 0 else ("bottom", "top")


def draw_signs(image, signs: list[dict]) -> None:
    draw = ImageDraw.Draw(image)
    for s in signs:
        x1, y1, x2, y2 = s["box"]
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=(255, 255, 255), outline=(0, 0, 0), width=BORDER)
        center = ((x1 + x2) // 2, (y1 + y2) // 2)
        draw.text(
            center, s["word"].upper(), fill=(0, 0, 0), font=font(s["font_size"], "sans-bold"), anchor="mm"
        )


def make(rng: np.random.Generator, cfg: WorldConfig, split: str) -> Sample:
    qtype = choice(rng, family_qtypes(cfg, QTYPES, "text"))
    count = int(rng.integers(P.MIN_OBJECTS, P.MAX_OBJECTS + 1))
    gap = P.GAP * min(cfg.width, cfg.height)
    for _ in range(MAX_SCENES):  # new signs when the objects cannot fit around these
        signs = place_signs(rng, 1 if qtype == "sign" else 2, cfg.width, cfg.height)
        try:
            scene = sample_scene(rng, cfg.width, cfg.height, count, clear_of(signs, gap), OBJECT_ATTEMPTS)
            break
        except PlacementError:
            continue
    else:
        raise PlacementError(f"no room for {count} objects and signs on {cfg.width} x {cfg.height}")
    fields: dict[str, str] = {}
    asked = 0
    if qtype == "sign_position":
        names = positions(signs[0]["box"], signs[1]["box"], cfg.width, cfg.height)
        for s, name in zip(signs, names):
            s["position"] = name
        asked = int(rng.integers(2))
        fields["position"] = names[asked]
    image = draw_scene(scene)
    draw_signs(image, signs)
    return Sample(
        family="text",
        question=ask(qtype, fields, rng, cfg.paraphrase),
        answer=signs[asked]["word"],
        kind="text",
        qtype=qtype,
        images=[image],
        objects=scene.records(),
        meta={"signs": signs, "asked": asked, "fields": fields, "background": scene.background},
    )
