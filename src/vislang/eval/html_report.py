"""The robustness result as one self-contained HTML page, and as JSON.

render_html(result) -> str and write_html(result, path) make a page with no external references:
CSS is inline, plots are PNG data URLs drawn by matplotlib (Agg), images are PNG data URLs, so the
file can be mailed, archived or opened offline. Every text a model or a user wrote (answers, model
names, questions) is escaped. Sections whose data is absent are left out.
to_json_safe(result) encodes PIL images as data URLs so the same result can be dumped with json.
screenshot(html_path, png_path) opens the page in headless Chromium and checks that it loaded clean.
"""

from __future__ import annotations

import base64
import io
import math
from html import escape
from pathlib import Path

from PIL import Image

from .shift import GROUPS

# tab10: model i draws in COLORS[i]; the HTML legend and the plots read the same list
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
MAX_MISSES = 24  # per model: enough to see a pattern, few enough to keep the page light
THUMB = 192  # longest side of a gallery thumbnail, in pixels
CHROMIUM = "/usr/bin/chromium"  # Debian's build; playwright never downloads a browser here

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232b;margin:0;
background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 8px;border-bottom:2px solid #dde1e6;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.muted,.ci{color:#6a7480} .ci{font-size:11px;display:block}
.howto{background:#eef3f8;padding:8px 12px;border-radius:6px}
dl.config{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0}
dl.config dt{color:#6a7480} dl.config dd{margin:0}
table{border-collapse:collapse;background:#fff;margin:6px 0 14px;box-shadow:0 1px 2px #0001}
th,td{padding:5px 10px;border-bottom:1px solid #e6e9ed;text-align:right;vertical-align:top}
th{background:#f0f2f5;font-weight:600;font-size:12px} td.l,th.l{text-align:left}
tr.group td{background:#fafbfc;font-weight:600;text-align:left;color:#44505c;text-transform:capitalize}
th.model{border-left:2px solid #c9cfd6} td.first{border-left:2px solid #c9cfd6}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:6px 0 10px}
.swatch{display:inline-block;width:22px;height:0;border-top:3px solid;vertical-align:middle;margin-right:6px}
.swatch.dashed{border-top-style:dashed} .swatch.dotted{border-top-style:dotted}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:12px}
figure{margin:0;background:#fff;padding:8px;border-radius:6px;box-shadow:0 1px 2px #0001}
figure img{width:100%;height:auto;display:block} figcaption{font-size:12px;margin-top:4px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:10px}
.miss{background:#fff;border-radius:6px;padding:8px;box-shadow:0 1px 2px #0001;font-size:12px;
overflow-wrap:anywhere}
.miss img{width:100%;height:auto;display:block;border-radius:4px;margin-bottom:6px;image-rendering:pixelated}
.miss .gold{color:#1a7f37} .miss .pred{color:#c4302b}
.tag{background:#eef0f3;border-radius:4px;padding:1px 6px}
"""


# ---- values -----------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    """0.62 -> "62.0"; None (nothing measured) -> "-"."""
    return "-" if value is None else f"{100 * value:.1f}"


def _ci(ci) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f'<span class="ci">{_pct(ci[0])}&ndash;{_pct(ci[1])}</span>'


def _num(value: float | None, ci=None, cls: str = "", style: str = "") -> str:
    """A table cell: the value in percent, its 95% interval in small type below."""
    attrs = (f' class="{cls}"' if cls else "") + (f' style="{style}"' if style else "")
    return f"<td{attrs}>{_pct(value)}{_ci(ci)}</td>"


def _table(head: str, rows: list[str]) -> str:
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _level(value) -> str:
    if value is None:
        return "clean"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def image_data_url(image: Image.Image, max_side: int | None = None) -> str:
    """A PIL image as a PNG data URL, shrunk (never enlarged) to max_side when given."""
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_json_safe(value):
    """A copy of `value` that json.dumps accepts: PIL images become PNG data URLs, tuples lists,
    numpy scalars and arrays Python numbers and lists, NaN and infinities None. Anything else is an
    error, not a silent string."""
    if isinstance(value, Image.Image):
        return image_data_url(value)
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN or infinity
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return to_json_safe(value.tolist())
    raise TypeError(f"cannot encode {type(value).__name__} as JSON: {value!r:.80}")


# ---- reading the result -----------------------------------------------------------------------------


def _rows(shift: dict, model: str) -> list[dict]:
    return sorted(shift.get("results", {}).get(model) or [], key=lambda r: r["severity"])


def _clean_and_worst(shift: dict, model: str) -> tuple[dict | None, dict | None]:
    """Severity 0 and the highest severity measured (the worst setting, whatever it scored)."""
    rows = _rows(shift, model)
    clean = next((r for r in rows if r["severity"] == 0), None)
    worst = rows[-1] if rows and rows[-1]["severity"] > 0 else None
    return clean, worst


def _drop(clean: dict | None, worst: dict | None) -> float | None:
    """Clean minus worst accuracy: positive when the shift hurts."""
    if worst is not None and worst.get("drop") is not None:
        return worst["drop"]
    if clean and worst and clean.get("accuracy") is not None and worst.get("accuracy") is not None:
        return clean["accuracy"] - worst["accuracy"]
    return None


def _by_group(shifts: list[dict]) -> list[tuple[str, list[dict]]]:
    order = list(GROUPS) + sorted({s.get("group", "other") for s in shifts} - set(GROUPS))
    grouped = [(g, [s for s in shifts if s.get("group", "other") == g]) for g in order]
    return [(g, members) for g, members in grouped if members]


def _levels(shift: dict) -> list:
    if shift.get("levels"):
        return list(shift["levels"])
    rows = next(iter(shift.get("results", {}).values()), [])
    return [r.get("level") for r in sorted(rows, key=lambda r: r["severity"])]


# ---- sections ---------------------------------------------------------------------------------------


def _header(result: dict) -> str:
    cfg = result.get("config", {})
    models = result.get("models", [])
    items = [("models", ", ".join(models))]
    for key in ("families", "n", "seed", "split", "severities"):
        if key in cfg:
            value = cfg[key]
            items.append(
                (key, ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
            )
    if result.get("shifts"):
        items.append(("shifts", ", ".join(s["name"] for s in result["shifts"])))
    if cfg.get("seconds") is not None:
        items.append(("wall time", _duration(cfg["seconds"])))
    shown = {"families", "n", "seed", "split", "severities", "seconds"}
    items += [(k, str(v)) for k, v in cfg.items() if k not in shown and isinstance(v, (str, int, float))]
    dl = "".join(f"<dt>{escape(k.replace('_', ' '))}</dt><dd>{escape(v)}</dd>" for k, v in items)
    howto = (
        "Accuracies are in percent, with the 95% confidence interval below each number. A shift's "
        "severity 0 is the clean sample; the drop is clean minus worst severity, in points (larger is "
        "worse). Perception errors are reasoning questions missed because a fact they rest on was "
        "misread; reasoning errors were missed with every such fact read right."
    )
    return f'<h1>Robustness report</h1><dl class="config">{dl}</dl><p class="howto">{howto}</p>'


def _summary(result: dict) -> str:
    models, shifts = result.get("models", []), result.get("shifts") or []
    if not shifts or not models:
        return ""
    head = "".join(f'<th class="model" colspan="3">{escape(m)}</th>' for m in models)
    sub = "".join('<th class="first">clean</th><th>worst</th><th>drop</th>' for _ in models)
    body = []
    for group, members in _by_group(shifts):
        body.append(f'<tr class="group"><td colspan="{2 + 3 * len(models)}">{escape(group)}</td></tr>')
        for shift in members:
            levels = _levels(shift)
            worst_level = _level(levels[-1]) if levels else "-"
            cells = [f'<td class="l">{escape(shift["name"])}</td>']
            cells.append(f'<td class="l">{escape(str(shift.get("param", "")))}: {escape(worst_level)}</td>')
            for m in models:
                clean, worst = _clean_and_worst(shift, m)
                drop = _drop(clean, worst)
                clean, worst = clean or {}, worst or {}
                tint = "" if drop is None else f"background:rgba(214,39,40,{min(max(drop, 0), 0.5):.2f})"
                cells.append(_num(clean.get("accuracy"), clean.get("ci"), cls="first"))
                cells.append(_num(worst.get("accuracy"), worst.get("ci")))
                cells.append(_num(drop, worst.get("drop_ci"), style=tint))
            body.append("<tr>" + "".join(cells) + "</tr>")
    first = '<th class="l" rowspan="2">shift</th><th class="l" rowspan="2">worst level</th>'
    return "<h2>Summary: clean vs worst severity</h2>" + _table(f"<tr>{first}{head}</tr><tr>{sub}</tr>", body)


def _plot(shift: dict, models: list[str]) -> str:
    """Accuracy against severity for one shift: a PNG data URL. A bare Figure draws with Agg and
    leaves pyplot's global state (and the caller's backend) alone."""
    from matplotlib.figure import Figure

    levels = _levels(shift)
    fig = Figure(figsize=(3.4, 2.3), dpi=150)
    ax = fig.subplots()
    for i, m in enumerate(models):
        rows = _rows(shift, m)
        if not rows:
            continue
        color = COLORS[i % len(COLORS)]
        x = [r["severity"] for r in rows]
        ax.plot(x, [_nan(r) for r in rows], "-o", color=color, lw=1.8, ms=3.5)
        band = [(r["severity"], *r["ci"]) for r in rows if r.get("ci") and None not in r["ci"]]
        if band:
            bx, lo, hi = zip(*band)
            ax.fill_between(bx, lo, hi, color=color, alpha=0.15, lw=0)
        for part, style in (("perception", "--"), ("reasoning", ":")):
            py = [_nan(r.get(part)) for r in rows]
            if not all(math.isnan(v) for v in py):
                ax.plot(x, py, style, color=color, lw=1.2)
    ax.set_xticks(range(len(levels)), [_level(v) for v in levels], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0], ["0", ".25", ".5", ".75", "1"], fontsize=7)
    ax.set_xlabel(str(shift.get("param", "severity")), fontsize=7)
    ax.grid(alpha=0.3, lw=0.5)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout(pad=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _nan(row: dict | None) -> float:
    """A row's accuracy for plotting: NaN (a gap in the line) where nothing was measured."""
    value = (row or {}).get("accuracy")
    return math.nan if value is None else value


def _curves(result: dict) -> str:
    models, shifts = result.get("models", []), result.get("shifts") or []
    if not shifts or not models:
        return ""
    legend = "".join(
        f'<span><span class="swatch" style="border-color:{COLORS[i % len(COLORS)]}"></span>{escape(m)}</span>'
        for i, m in enumerate(models)
    )
    legend += '<span><span class="swatch dashed" style="border-color:#555"></span>perception</span>'
    legend += '<span><span class="swatch dotted" style="border-color:#555"></span>reasoning</span>'
    figures = []
    for _, members in _by_group(shifts):
        for shift in members:
            note = f'<br><span class="muted">{escape(shift["note"])}</span>' if shift.get("note") else ""
            name, group = escape(shift["name"]), escape(str(shift.get("group", "")))
            figures.append(
                f'<figure><img class="plot" alt="{name}" src="{_plot(shift, models)}">'
                f'<figcaption><b>{name}</b> <span class="muted">({group})</span>{note}</figcaption></figure>'
            )
    return (
        "<h2>Accuracy vs severity</h2>"
        '<p class="muted">Solid: all questions, with the 95% interval shaded.</p>'
        f'<div class="legend">{legend}</div><div class="plots">{"".join(figures)}</div>'
    )


def _split_row(label: str, row: dict) -> str:
    p, r = row.get("perception") or {}, row.get("reasoning") or {}
    cells = [
        f'<td class="l">{label}</td><td>{row.get("n", "-")}</td>',
        _num(row.get("accuracy"), row.get("ci")),
        _num(p.get("accuracy"), p.get("ci")),
        _num(r.get("accuracy"), r.get("ci")),
        _num(r.get("perception_error_rate")),
        _num(r.get("reasoning_error_rate")),
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _split(result: dict) -> str:
    models, shifts = result.get("models", []), result.get("shifts") or []
    has_split = any(
        r.get("perception") or r.get("reasoning") for s in shifts for m in models for r in _rows(s, m)
    )
    if not has_split:
        return ""
    head = (
        '<tr><th class="l">condition</th><th>n</th><th>accuracy</th><th>perception</th><th>reasoning</th>'
        "<th>perception errors</th><th>reasoning errors</th></tr>"
    )
    parts = ["<h2>Perception and reasoning</h2>"]
    for m in models:
        worst_rows, cleans = [], []
        for shift in shifts:
            clean, worst = _clean_and_worst(shift, m)
            if clean:
                cleans.append(clean)
            if worst:
                label = f"{escape(shift['name'])} at {escape(_level(worst.get('level')))}"
                worst_rows.append(_split_row(label, worst))
        # shifts that exclude question types see fewer clean samples: the largest clean set is the baseline
        if not any(r.get("perception") or r.get("reasoning") for r in cleans):
            continue  # this model's rows carry no split (a model asked without the probe questions)
        clean_row = [_split_row("clean", max(cleans, key=lambda r: r.get("n", 0)))]
        parts.append(f"<h3>{escape(m)}</h3>" + _table(head, clean_row + worst_rows))
    return "".join(parts)


def _pope(result: dict) -> str:
    pope = result.get("pope")
    if not pope:
        return ""
    cols = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    head = "".join(f"<th>{c.replace('_', '-')}</th>" for c in cols)
    body = []
    for m, report in pope.items():
        for setting, s in (report.get("settings") or {}).items():
            names = f'<td class="l">{escape(m)}</td><td class="l">{escape(setting)}</td>'
            cells = "".join(_num(s.get(c)) for c in cols)
            body.append(
                f"<tr>{names}<td>{s.get('n', '-')}</td>{cells}<td>{s.get('unanswered', '-')}</td></tr>"
            )
    head = f'<tr><th class="l">model</th><th class="l">setting</th><th>n</th>{head}<th>unanswered</th></tr>'
    intro = (
        '<h2>POPE: object hallucination</h2><p class="muted">Yes/no questions about objects present and '
        "absent; a yes-ratio far from 50 means the model leans to one answer.</p>"
    )
    return intro + _table(head, body)


def _score(entry: dict | None) -> str:
    if not entry:
        return "-"
    value = entry.get("score", entry.get("accuracy"))
    n = f'<span class="ci">n={entry["n"]}</span>' if entry.get("n") is not None else ""
    return f"{_pct(value)}{n}"


def _dataset(result: dict) -> str:
    data = result.get("dataset")
    if not data:
        return ""
    models = list(data)
    metrics = list(dict.fromkeys(k for d in data.values() for k in (d.get("metrics") or {})))
    head = "".join(f'<th class="model">{escape(m)}</th>' for m in models)
    rows = [
        f'<tr><td class="l">{escape(k)}</td>'
        + "".join(f'<td class="first">{_score((data[m].get("metrics") or {}).get(k))}</td>' for m in models)
        + "</tr>"
        for k in metrics
    ]
    if any(d.get("overall") for d in data.values()):
        cells = "".join(f'<td class="first"><b>{_score(data[m].get("overall"))}</b></td>' for m in models)
        rows.append(f'<tr><td class="l"><b>overall</b></td>{cells}</tr>')
    head = f'<tr><th class="l">metric</th>{head}</tr>'
    return '<h2>Dataset</h2><p class="muted">Scores &times;100.</p>' + _table(head, rows)


def _thumb(image) -> str:
    if isinstance(image, Image.Image):
        return f'<img alt="" src="{image_data_url(image, THUMB)}">'
    if isinstance(image, str) and image.startswith("data:image/"):  # never a path or URL: stay self-contained
        return f'<img alt="" src="{escape(image)}">'
    return ""


def _misses(result: dict) -> str:
    misses = result.get("misses")
    if not misses or not any(misses.values()):
        return ""
    parts = [f'<h2>Misses</h2><p class="muted">Up to {MAX_MISSES} wrong answers per model.</p>']
    for m, items in misses.items():
        cards = []
        for miss in items[:MAX_MISSES]:
            where = escape(miss.get("shift") or "clean")
            if miss.get("severity"):
                where += f" &middot; severity {miss['severity']} ({escape(_level(miss.get('level')))})"
            if miss.get("qtype"):
                where += f" &middot; {escape(str(miss['qtype']))}"
            if miss.get("clean_correct"):  # the shift, not the question, is what broke the answer
                where += " &middot; right when clean"
            cards.append(
                f'<div class="miss">{_thumb(miss.get("image"))}<span class="tag">{where}</span>'
                f"<p>{escape(str(miss.get('question', '')))}</p>"
                f'<div class="gold">gold: {escape(str(miss.get("answer", "")))}</div>'
                f'<div class="pred">model: {escape(str(miss.get("prediction", "")))}</div></div>'
            )
        parts.append(f'<h3>{escape(m)}</h3><div class="gallery">{"".join(cards)}</div>')
    return "".join(parts)


# ---- the page ---------------------------------------------------------------------------------------


def render_html(result: dict) -> str:
    """The whole report page as a string; see the module docstring."""
    if not isinstance(result, dict):
        raise TypeError(f"result must be a dict, got {type(result).__name__}")
    sections = (_header, _summary, _curves, _split, _pope, _dataset, _misses)
    body = "".join(section(result) for section in sections)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Robustness report</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def write_html(result: dict, path: str | Path) -> Path:
    """Write render_html(result) to path; parent folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path


def screenshot(
    html_path: str | Path, png_path: str | Path, width: int = 1200, browser: str = CHROMIUM
) -> dict:
    """Open the page in headless Chromium, save a full-page PNG, and say how it loaded:
    {"png": Path, "images": count, "broken_images": count with no pixels, "console_errors": [...]}."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise RuntimeError("screenshot needs playwright: pip install 'vislang[test]'") from e
    if not Path(browser).exists():
        raise RuntimeError(f"{browser} is missing: apt-get install chromium")
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=browser, args=["--no-sandbox", "--disable-gpu"])
        page = chrome.new_page(viewport={"width": width, "height": 900})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(Path(html_path).resolve().as_uri(), wait_until="load")
        widths = page.evaluate("Array.from(document.images, img => img.complete ? img.naturalWidth : 0)")
        page.screenshot(path=str(png_path), full_page=True)
        chrome.close()
    return {
        "png": png_path,
        "images": len(widths),
        "broken_images": sum(w == 0 for w in widths),
        "console_errors": errors,
    }
