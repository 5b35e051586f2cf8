"""Family `document` of world-spec.md section 3: receipts, forms and bar charts on paper.

Questions and answers (lowercase; numbers as digits):
    total      What is the total?             -> as printed, e.g. "17.85" (the exact sum of the prices)
    field      What is the {label}?           -> the form's value, lowercased, e.g. "alice brown", "a-48213"
    tallest    Which bar is the tallest?      -> the bar's label, lowercased (a unique maximum, by a margin)
    bar_value  What is the value of {label}?  -> the bar's integer value, e.g. "42"
Sample.meta holds the whole document: its texts, values and the pixel box of every text and bar.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from . import document_render as dr
from .sample import Sample, WorldConfig

QTYPES_BY_DOC = {"receipt": ("total",), "form": ("field",), "chart": ("tallest", "bar_value")}
QTYPES = ("total", "field", "tallest", "bar_value")
QUESTIONS = {  # the canonical template first, then the paraphrases training may ask instead
    "total": [
        "What is the total?",
        "What is the total amount on the receipt?",
        "How much is the total?",
        "What does the receipt add up to?",
    ],
    "field": [
        "What is the {label}?",
        "What {label} is written on the form?",
        "Read the {label} from the form.",
        "What value is given for {label}?",
    ],
    "tallest": [
        "Which bar is the tallest?",
        "Which bar has the highest value?",
        "Which category has the largest bar?",
        "Which label belongs to the tallest bar?",
    ],
    "bar_value": [
        "What is the value of {label}?",
        "What value does the {label} bar show?",
        "How high is the bar for {label}?",
        "What number is shown for {label}?",
    ],
}

PAPERS = [(255, 255, 255), (250, 249, 245), (247, 244, 236), (244, 244, 240)]
INKS = [(0, 0, 0), (25, 25, 25), (30, 30, 55), (50, 40, 35)]
BAR_COLORS = [(66, 133, 244), (219, 68, 55), (244, 160, 0), (15, 157, 88), (171, 71, 188), (0, 150, 170)]
LEGIBLE = 10  # font pixels; below it, drop rows (items, fields, bars) before shrinking further
FLOOR = 3  # the smallest font tried: tiny canvases still get everything inside them

STORES = (
    "FRESH MART, CORNER SHOP, CITY GROCER, SUNNY CAFE, BOOK NOOK, GREEN MARKET, QUICK STOP, HOME GOODS, "
    "PET PLACE, BAKERY 21, TOOL SHED, DAILY DELI"
).split(", ")
ITEMS = (
    "Milk Bread Eggs Apples Coffee Tea Butter Cheese Rice Pasta Soap Juice Yogurt Bananas Tomatoes Chicken "
    "Cereal Water Cookies Honey Oranges Candles Notebook Pens Flour Sugar Onions Salad"
).split()
FORM_TITLES = "REGISTRATION FORM, ORDER FORM, APPLICATION, CONTACT DETAILS, DELIVERY FORM, MEMBER FORM".split(
    ", "
)
FIRST = "Alice Bruno Chen Dana Emil Fatima Grace Hugo Ines Jonas Kira Liam".split()
LAST = "Brown Garcia Novak Smith Tanaka Weber Rossi Khan Lopez Berg".split()
CITIES = "Paris Lisbon Oslo Denver Osaka Lima Cairo Dublin Austin Perth".split()
COUNTRIES = "France Brazil Canada Kenya Japan Norway Chile India Spain Peru".split()
DOMAINS = "mail.com post.org inbox.net web.io".split()
CHARTS = [  # a title and its categories, in their natural order
    ("Fruit sold", ["Apples", "Pears", "Plums", "Grapes", "Lemons", "Kiwis", "Figs", "Limes"]),
    ("Visitors per day", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
    ("Rainfall", "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()),
    ("Scores", ["A", "B", "C", "D", "E", "F", "G", "H"]),
    ("Sales by region", ["North", "South", "East", "West", "Central", "Coast"]),
    ("Votes", ["Red", "Blue", "Green", "Gold", "Pink", "Gray"]),
]
SCALES = (10, 20, 50, 100)


def pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


FIELDS = {  # label -> a value drawn from fixed lists
    "Name": lambda rng: f"{pick(rng, FIRST)} {pick(rng, LAST)}",
    "Date": lambda rng: f"{rng.integers(2015, 2026)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}",
    "City": lambda rng: pick(rng, CITIES),
    "Country": lambda rng: pick(rng, COUNTRIES),
    "Phone": lambda rng: f"555-{digits(rng, 4)}",
    "Order number": lambda rng: f"{pick(rng, list('ABCDEFGHKLMNPRST'))}-{digits(rng, 5)}",
    "Email": lambda rng: f"{pick(rng, FIRST).lower()}@{pick(rng, DOMAINS)}",
    "Zip code": lambda rng: digits(rng, 5),
    "Quantity": lambda rng: str(rng.integers(1, 50)),
    "Account": lambda rng: f"AC{digits(rng, 6)}",
}


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def margin_and_cap(cfg: WorldConfig, margin_frac: float, cap_frac: float) -> tuple[int, int]:
    """Margin and largest font size, both in proportion to the canvas' short side."""
    short = min(cfg.width, cfg.height)
    return max(2, round(margin_frac * short)), max(FLOOR, round(cap_frac * short))


def fit_rows(layout, n_max: int, n_min: int, width: int, height: int, cap: int) -> tuple[int, int]:
    """(rows, font size): the most rows, up to n_max, that still fit at a legible size."""
    for n in range(n_max, n_min - 1, -1):
        size = dr.largest_fitting(dr.block_fits(lambda s, n=n: layout(n, s), width, height), FLOOR, cap)
        if size is not None and (size >= LEGIBLE or n == n_min):
            return n, size
    raise ValueError(f"a {n_min}-row document does not fit a {width} x {height} area")


def place(rng: np.random.Generator, marks: list[dr.Mark], cfg: WorldConfig, margin: int) -> list[dr.Mark]:
    """Shift a laid-out block to a random spot inside the margins."""
    x1, y1, x2, y2 = dr.extent(marks)
    dx = margin + int(rng.integers(0, max(0, cfg.width - 2 * margin - (x2 - x1)) + 1))
    dy = margin + int(rng.integers(0, max(0, cfg.height - 2 * margin - (y2 - y1)) + 1))
    return dr.shifted(marks, dx - x1, dy - y1)


def receipt(rng: np.random.Generator, cfg: WorldConfig, qtype: str, ink) -> tuple:
    names = [ITEMS[i] for i in rng.permutation(len(ITEMS))[: int(rng.integers(3, 9))]]
    cents = [int(c) for c in rng.integers(49, 2500, size=len(names))]
    store, stretch = pick(rng, STORES), float(rng.uniform(1.0, 1.5))
    margin, cap = margin_and_cap(cfg, 0.05, 0.085)
    area_w, area_h = cfg.width - 2 * margin, cfg.height - 2 * margin

    def layout(n: int, s: int, stretch: float = 1.0) -> list[dr.Mark]:
        items = [(name, money(c)) for name, c in zip(names[:n], cents[:n])]
        return dr.receipt_marks(store, items, money(sum(cents[:n])), s, ink, stretch)

    n, size = fit_rows(layout, len(names), 3, area_w, area_h, cap)
    x1, _, x2, _ = dr.extent(layout(n, size))
    marks = place(rng, layout(n, size, min(stretch, area_w / (x2 - x1))), cfg, margin)
    boxes, total = dr.named_boxes(marks), money(sum(cents[:n]))
    items = [
        dict(
            name=names[i],
            price=money(cents[i]),
            name_box=boxes[f"item{i}.name"],
            price_box=boxes[f"item{i}.price"],
        )
        for i in range(n)
    ]
    meta = dict(doc="receipt", store=store, store_box=boxes["store"], items=items, total=total)
    meta.update(total_box=boxes["total"], total_label_box=boxes["total_label"], font_size=size)
    return marks, meta, {}, total


def form(rng: np.random.Generator, cfg: WorldConfig, qtype: str, ink) -> tuple:
    labels = list(FIELDS)
    labels = [labels[i] for i in rng.permutation(len(labels))[: int(rng.integers(3, 7))]]
    values = [FIELDS[label](rng) for label in labels]
    title, underline = pick(rng, FORM_TITLES), bool(rng.random() < 0.5)
    margin, cap = margin_and_cap(cfg, 0.05, 0.08)

    def layout(n: int, s: int) -> list[dr.Mark]:
        return dr.form_marks(title, list(zip(labels[:n], values[:n])), s, ink, underline)

    n, size = fit_rows(layout, len(labels), 3, cfg.width - 2 * margin, cfg.height - 2 * margin, cap)
    marks = place(rng, layout(n, size), cfg, margin)
    boxes, target = dr.named_boxes(marks), int(rng.integers(n))
    fields = [
        dict(
            label=labels[i],
            value=values[i],
            label_box=boxes[f"field{i}.label"],
            value_box=boxes[f"field{i}.value"],
        )
        for i in range(n)
    ]
    meta = dict(
        doc="form", title=title, title_box=boxes["title"], fields=fields, target=target, font_size=size
    )
    return marks, meta, {"label": labels[target].lower()}, values[target].lower()


def bar_values(rng: np.random.Generator, n: int, scale: int) -> list[int]:
    """n values in scale's range whose maximum beats the runner-up by 8% of the scale: visibly unique."""
    while True:
        values = [int(v) for v in rng.integers(max(1, scale // 20), scale + 1, size=n)]
        top, second = sorted(values)[-2:][::-1]
        if top - second >= max(1, round(0.08 * scale)):
            return values


def chart(rng: np.random.Generator, cfg: WorldConfig, qtype: str, ink) -> tuple:
    title, categories = pick(rng, CHARTS)
    n_max = min(int(rng.integers(3, 7)), len(categories))
    labels = [categories[i] for i in sorted(rng.permutation(len(categories))[:n_max])]
    title = title if rng.random() < 0.7 else ""
    scale, color = SCALES[int(rng.integers(len(SCALES)))], pick(rng, BAR_COLORS)
    show_values, bar_frac = qtype == "bar_value" or bool(rng.random() < 0.5), float(rng.uniform(0.45, 0.75))
    margin, cap = margin_and_cap(cfg, 0.04, 0.06)
    w, h = cfg.width - 2 * margin, cfg.height - 2 * margin

    def layout(names: list[str], values: list[int], s: int) -> list[dr.Mark] | None:
        return dr.chart_marks(
            title, list(zip(names, values)), scale, s, w, h, ink, color, show_values, bar_frac
        )

    def fitting(names: list[str]) -> int | None:  # the widest value label is the scale itself
        return dr.largest_fitting(lambda s: layout(names, [scale] * len(names), s) is not None, FLOOR, cap)

    n, size = n_max, fitting(labels)
    while n > 3 and (size is None or size < LEGIBLE):
        n -= 1
        size = fitting(labels[:n])
    labels = labels[:n]
    if size is None:  # too narrow for words: letters fit any canvas
        labels, size = ["A", "B", "C"], fitting(["A", "B", "C"])
    values = bar_values(rng, len(labels), scale)
    marks = dr.shifted(layout(labels, values, size), margin, margin)
    boxes, target = dr.named_boxes(marks), int(rng.integers(len(labels)))
    bars = [
        dict(label=label, value=v, box=boxes[f"bar{i}"], label_box=boxes[f"bar{i}.label"])
        | dict(value_box=boxes.get(f"bar{i}.value"))  # None when the values are not printed
        for i, (label, v) in enumerate(zip(labels, values))
    ]
    ticks = [{"value": int(k[4:]), "box": b} for k, b in boxes.items() if k.startswith("tick")]
    meta = dict(doc="chart", title=title, title_box=boxes.get("title"), scale=scale, bar_color=list(color))
    meta.update(bars=bars, ticks=ticks, target=target, font_size=size)
    if qtype == "tallest":
        return marks, meta, {}, labels[int(np.argmax(values))].lower()
    return marks, meta, {"label": labels[target]}, str(values[target])


BUILDERS = {"receipt": receipt, "form": form, "chart": chart}


def ask(rng: np.random.Generator, cfg: WorldConfig, qtype: str, slots: dict) -> str:
    templates = QUESTIONS[qtype]
    template = templates[int(rng.integers(len(templates)))] if cfg.paraphrase else templates[0]
    return template.format(**slots)


def make(rng: np.random.Generator, cfg: WorldConfig, split: str) -> Sample:
    allowed = set(cfg.qtypes or QTYPES)
    docs = [d for d, qs in QTYPES_BY_DOC.items() if allowed.intersection(qs)]
    if not docs:
        raise ValueError(f"document asks {', '.join(QTYPES)}; none of {sorted(allowed)}")
    doc = docs[int(rng.integers(len(docs)))]
    qtypes = [q for q in QTYPES_BY_DOC[doc] if q in allowed]
    qtype = qtypes[int(rng.integers(len(qtypes)))]
    paper, ink = pick(rng, PAPERS), pick(rng, INKS)
    marks, meta, slots, answer = BUILDERS[doc](rng, cfg, qtype, ink)
    image = Image.new("RGB", (cfg.width, cfg.height), paper)
    dr.draw_marks(image, marks)
    meta.update(paper=list(paper), ink=list(ink))
    question = ask(rng, cfg, qtype, slots)
    return Sample("document", question, answer, "document", qtype, [image], meta=meta)
