"""Family `ui` of world-spec.md section 3: a window with 2..6 labelled widgets on a desktop.

Questions and answers:
    ground_button  Where is the "{label}" button?      -> its box "[x1, y1, x2, y2]" on the 0..1000 grid
    checked        Is the "{label}" checkbox checked?  -> yes / no, balanced 50/50
Labels are unique within a window (the button, field and checkbox lists share no label).
Sample.meta lists every widget: type, label, pixel box (x2, y2 exclusive), label box and state.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import document_render as dr
from .render import format_box, normalized_box
from .sample import Sample, WorldConfig
from .ui_render import Widget, WindowStyle, window_marks

QTYPES = ("ground_button", "checked")
QUESTIONS = {  # the canonical template first, then the paraphrases training may ask instead
    "ground_button": [
        'Where is the "{label}" button?',
        'Find the "{label}" button. Answer with a bounding box.',
        'Give the bounding box of the "{label}" button.',
        'Locate the "{label}" button.',
    ],
    "checked": [
        'Is the "{label}" checkbox checked?',
        'Is "{label}" ticked?',
        'Has the "{label}" box been checked?',
        'Is the "{label}" option selected?',
    ],
}
LABELS = {  # no label in two lists: labels are unique within a window
    "button": "OK, Cancel, Save, Submit, Search, Apply, Close, Next, Back, Delete, Send, Log in, Sign up, "
    "Open, Help, Reset, Continue, Done".split(", "),
    "text_field": "Email, Name, Password, Username, Phone, Address, City, Company, Website".split(", "),
    "checkbox": "Remember me, Subscribe, I agree, Show password, Dark mode, Notifications, Auto save, "
    "Stay signed in, Send a copy".split(", "),
}
TYPES = ("button", "text_field", "checkbox")
TITLES = "Login, Settings, Sign up, Preferences, Account, Search, Checkout, Contact, Options".split(", ")
DESKTOPS = [(58, 110, 165), (80, 80, 90), (190, 200, 210), (150, 170, 140), (30, 40, 60), (200, 190, 220)]
BODIES = [(240, 240, 240), (250, 250, 250), (235, 238, 242)]
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
BARS = [((45, 85, 150), WHITE), ((60, 60, 70), WHITE), ((30, 110, 95), WHITE), ((110, 55, 130), WHITE)]
BARS += [((205, 208, 214), BLACK)]  # a light title bar with dark text
BUTTON_FILLS = [(40, 100, 220), (45, 140, 75), (110, 110, 120), (230, 120, 30), (200, 50, 60)]
SECONDARY = ((214, 214, 220), BLACK)  # a light button with dark text, e.g. the Cancel beside OK
LEGIBLE = 9  # font pixels; below it, drop widgets (never the asked one) before shrinking further
FLOOR = 3


def pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def plan_rows(widgets: list[Widget], group_buttons: bool) -> list[list[Widget]]:
    """A row per field or checkbox; buttons in rows of up to three at the bottom, or one per row in place."""
    if not group_buttons:
        return [[w] for w in widgets]
    buttons = [w for w in widgets if w.type == "button"]
    rows = [[w] for w in widgets if w.type != "button"]
    return rows + [buttons[i : i + 3] for i in range(0, len(buttons), 3)]


def sample_widgets(rng: np.random.Generator, qtype: str) -> tuple[list[Widget], int]:
    """2..6 widgets with at least one of the asked type; returns them and the asked widget's index."""
    types = [TYPES[int(t)] for t in rng.integers(0, len(TYPES), size=int(rng.integers(2, 7)))]
    wanted = "button" if qtype == "ground_button" else "checkbox"
    if wanted not in types:
        types[int(rng.integers(len(types)))] = wanted
    order = {t: iter(rng.permutation(len(LABELS[t]))) for t in TYPES}
    primary = pick(rng, BUTTON_FILLS)
    widgets = []
    for i, t in enumerate(types):
        fill, text_fill = SECONDARY if rng.random() < 0.3 else (primary, WHITE)
        widgets.append(Widget(i, t, LABELS[t][next(order[t])], bool(rng.random() < 0.5), fill, text_fill))
    candidates = [i for i, t in enumerate(types) if t == wanted]
    target = candidates[int(rng.integers(len(candidates)))]
    if qtype == "checked":  # the asked state is drawn on its own: yes and no stay exactly 50/50
        widgets[target].checked = bool(rng.integers(2))
    return widgets, target


def fit_window(title, widgets, target, group_buttons, s_cap, w, h, style) -> tuple[list[Widget], bool, int]:
    """(widgets, grouping, font size) of the largest legible window: drop widgets, then ungroup, if need."""
    while True:
        rows = plan_rows(widgets, group_buttons)
        fits = lambda s, rows=rows: window_marks(title, rows, s, w, h, style) is not None  # noqa: E731
        size = dr.largest_fitting(fits, FLOOR, s_cap)
        if size is not None and size >= LEGIBLE:
            return widgets, group_buttons, size
        spare = [wd for wd in widgets if wd.index != target]
        if len(widgets) > 2:
            widgets = [wd for wd in widgets if wd is not spare[-1]]
        elif group_buttons:
            group_buttons = False
        elif size is not None:
            return widgets, group_buttons, size
        else:
            raise ValueError(f"a two-widget window does not fit {w} x {h}")


def widget_meta(wd: Widget, boxes: dict[str, list[int]]) -> dict:
    state = {"button": "enabled", "text_field": "empty"}.get(
        wd.type, "checked" if wd.checked else "unchecked"
    )
    entry = dict(index=wd.index, type=wd.type, label=wd.label, box=boxes[f"w{wd.index}"], state=state)
    entry["label_box"] = boxes[f"w{wd.index}.label"]
    if wd.type == "button":
        entry["fill"] = list(wd.fill)
    return entry


def make(rng: np.random.Generator, cfg: WorldConfig, split: str) -> Sample:
    allowed = [q for q in QTYPES if q in (cfg.qtypes or QTYPES)]
    if not allowed:
        raise ValueError(f"ui asks {', '.join(QTYPES)}; none of {cfg.qtypes}")
    qtype = allowed[int(rng.integers(len(allowed)))]
    widgets, target = sample_widgets(rng, qtype)
    bar, bar_text = pick(rng, BARS)
    style = WindowStyle(
        body=pick(rng, BODIES),
        border=(60, 60, 60),
        bar=bar,
        bar_text=bar_text,
        title_centered=bool(rng.random() < 0.5),
        button_align=pick(rng, ["left", "center", "right"]),
        field_frac=float(rng.uniform(0.6, 1.0)),
        valign=float(rng.uniform(0.0, 1.0)),
    )
    title, desktop, group_buttons = pick(rng, TITLES), pick(rng, DESKTOPS), bool(rng.random() < 0.7)
    short = min(cfg.width, cfg.height)
    margin = round(rng.uniform(0.0, 0.06) * short)
    w, h, s_cap = cfg.width - 2 * margin, cfg.height - 2 * margin, max(FLOOR, round(0.065 * short))
    widgets, group_buttons, size = fit_window(title, widgets, target, group_buttons, s_cap, w, h, style)
    marks = dr.shifted(
        window_marks(title, plan_rows(widgets, group_buttons), size, w, h, style), margin, margin
    )
    image = Image.new("RGB", (cfg.width, cfg.height), desktop)
    dr.draw_marks(image, marks)

    boxes = dr.named_boxes(marks)
    meta = dict(
        title=title, title_box=boxes["title"], window_box=boxes["window"], title_bar_box=boxes["title_bar"]
    )
    meta.update(widgets=[widget_meta(wd, boxes) for wd in widgets], target=target, desktop=list(desktop))
    meta["font_size"] = size
    asked = next(wd for wd in widgets if wd.index == target)
    if qtype == "ground_button":
        answer = format_box(normalized_box(boxes[f"w{target}"], cfg.width, cfg.height))
    else:
        answer = "yes" if asked.checked else "no"
    templates = QUESTIONS[qtype]
    template = templates[int(rng.integers(len(templates)))] if cfg.paraphrase else templates[0]
    return Sample("ui", template.format(label=asked.label), answer, "ui", qtype, [image], meta=meta)
