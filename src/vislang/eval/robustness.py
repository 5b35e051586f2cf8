"""The robustness suite: the world's questions (exact answers) under controlled shifts of resolution,
image quality, layout and domain, each at severities 0 (clean) .. k, on one or several models.

    from vislang.eval.robustness import evaluate_robustness, shifts_named
    result = evaluate_robustness({"default": model}, shifts_named("jpeg,blur,mirror"), n=500)

For every shift and severity: accuracy with a bootstrap 95% interval, per question type, the
perception/reasoning split, and the drop from clean on the very same samples (a paired bootstrap,
since severity s of sample i is sample i shifted). The result is the dict html_report renders.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from vislang.data.world import Sample, generate_sample

from .metrics import rate
from .shift import Shift
from .world import score_samples

BOOTSTRAP_ROUNDS = 1000
THUMBNAIL = 192  # pixels, the longer side of a gallery image


def all_shifts() -> dict[str, Shift]:
    from .perturb import IMAGE_SHIFTS
    from .world_shifts import SCENE_SHIFTS

    return {**IMAGE_SHIFTS, **SCENE_SHIFTS}


def shifts_named(names: str | Sequence[str] | None = None) -> list[Shift]:
    """Shifts by name ("jpeg,blur" or a list); None or "all": every shift, in group order."""
    known = all_shifts()
    if names is None or names == "all":
        order = ("resolution", "quality", "layout", "domain")
        return sorted(known.values(), key=lambda s: order.index(s.group))
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown shifts {unknown}; shifts: {', '.join(known)}")
    return [known[n] for n in names]


# ---- statistics -------------------------------------------------------------------------------------


def bootstrap_ci(correct: Sequence[bool], seed: int = 0, rounds: int = BOOTSTRAP_ROUNDS) -> list | None:
    """Percentile bootstrap 95% interval of the mean of `correct`; None with nothing to resample."""
    values = np.asarray(correct, dtype=np.float64)
    if values.size == 0:
        return None
    picks = np.random.default_rng(seed).integers(0, values.size, (rounds, values.size))
    means = values[picks].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def paired_drop_ci(clean: Sequence[bool], shifted: Sequence[bool], seed: int = 0) -> list | None:
    """95% interval of mean(clean) - mean(shifted), resampling samples (both columns together)."""
    a, b = np.asarray(clean, dtype=np.float64), np.asarray(shifted, dtype=np.float64)
    if a.size == 0:
        return None
    picks = np.random.default_rng(seed).integers(0, a.size, (BOOTSTRAP_ROUNDS, a.size))
    drops = a[picks].mean(axis=1) - b[picks].mean(axis=1)
    return [float(np.quantile(drops, 0.025)), float(np.quantile(drops, 0.975))]


def with_ci(rows: list[dict], seed: int) -> dict:
    correct = [bool(r["correct"]) for r in rows]
    return {"n": len(rows), "accuracy": rate(sum(correct), len(rows)), "ci": bootstrap_ci(correct, seed)}


def severity_row(rows: list[dict], clean_rows: list[dict], severity: int, level, seed: int) -> dict:
    """One point of a shift's curve; rows[i] and clean_rows[i] are the same sample, shifted and clean."""
    row = {"severity": severity, "level": level, **with_ci(rows, seed)}
    clean = [bool(r["correct"]) for r in clean_rows]
    shifted = [bool(r["correct"]) for r in rows]
    row["drop"] = None if not rows else (sum(clean) - sum(shifted)) / len(rows)
    row["drop_ci"] = paired_drop_ci(clean, shifted, seed) if severity else [0.0, 0.0]
    row["perception"] = with_ci([r for r in rows if r["kind"] == "perception"], seed)
    reasoning = [r for r in rows if r["kind"] == "reasoning"]
    misses = [r for r in reasoning if not r["correct"]]
    # a reasoning miss whose probes were all right is a reasoning error, else a perception error
    reasoning_errors = sum(all(p["correct"] for p in r["probes"]) for r in misses)
    row["reasoning"] = with_ci(reasoning, seed) | {
        "perception_error_rate": rate(len(misses) - reasoning_errors, len(reasoning)),
        "reasoning_error_rate": rate(reasoning_errors, len(reasoning)),
    }
    qtypes: dict[str, list[dict]] = {}
    for r in rows:
        qtypes.setdefault(r["qtype"], []).append(r)
    row["qtypes"] = {q: with_ci(v, seed) for q, v in sorted(qtypes.items())}
    return row


# ---- running ------------------------------------------------------------------------------------------


def shifted_sets(
    shift: Shift, families: Sequence[str], n: int, seed: int, split: str, severities: int
) -> tuple[list[tuple[str, int]], list[list[Sample]]]:
    """The sample keys every severity can ask (a shift may exclude some questions), and per severity
    1..severities the shifted samples, in key order."""
    keys, sets = [], [[] for _ in range(severities)]
    for family in families:
        for index in range(n):
            made = [shift.make(family, split, seed, index, s) for s in range(1, severities + 1)]
            if any(m is None for m in made):
                continue
            keys.append((family, index))
            for s, sample in enumerate(made):
                sets[s].append(sample)
    return keys, sets


def thumbnail(sample: Sample):
    image = sample.images[0].convert("RGB")
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return image


def applicable(shift: Shift, families: Sequence[str]) -> list[str]:
    """The families a shift can change: scene-level shifts redraw scenes only."""
    from .world_shifts import SceneShift

    return [f for f in families if f == "scene"] if isinstance(shift, SceneShift) else list(families)


def evaluate_robustness(
    models: dict[str, object],
    shifts: list[Shift],
    families: Sequence[str] = ("scene",),
    n: int = 500,
    seed: int = 0,
    split: str = "test",
    severities: int = 3,
    batch_size: int = 16,
    max_new_tokens: int = 24,
    misses: int = 24,
    pope_images: int = 0,
    progress: bool = True,
) -> dict:
    """Every model on the clean samples once, then on each shift at severities 1..`severities` (each
    shift's first levels); see the module docstring. pope_images > 0 adds the hallucination probe."""
    if severities < 1:
        raise ValueError("severities must be at least 1")
    t0 = time.perf_counter()
    families = list(families)
    clean_samples = {(f, i): generate_sample(f, split, seed, i) for f in families for i in range(n)}
    clean = {}
    for name, model in models.items():
        samples = list(clean_samples.values())
        desc = f"{name[:20]} clean"
        rows, _ = score_samples(model, samples, "canonical", max_new_tokens, batch_size, progress, desc)
        clean[name] = dict(zip(clean_samples, rows))
    del clean_samples

    result = {"models": list(models), "shifts": [], "misses": {name: [] for name in models}}
    gallery: dict[str, list[list[dict]]] = {name: [] for name in models}  # per model, per shift, misses
    seconds = {}
    for shift in shifts:
        t_shift = time.perf_counter()
        k = min(severities, len(shift.levels) - 1)
        keys, sets = shifted_sets(shift, applicable(shift, families), n, seed, split, k)
        entry = shift.describe() | {"levels": list(shift.levels[: k + 1]), "n": len(keys), "results": {}}
        for name, model in models.items():
            clean_rows = [clean[name][key] for key in keys]
            curve = [severity_row(clean_rows, clean_rows, 0, shift.levels[0], seed)]
            worst_misses = []
            for s, samples in enumerate(sets, start=1):
                desc = f"{name[:20]} {shift.name} {s}/{k}"
                rows, _ = score_samples(
                    model, samples, "canonical", max_new_tokens, batch_size, progress, desc
                )
                curve.append(severity_row(rows, clean_rows, s, shift.levels[s], seed))
                if s == k:  # the gallery shows the worst severity's misses
                    worst_misses = [
                        {
                            "shift": shift.name,
                            "severity": s,
                            "level": shift.levels[s],
                            "question": r["question"],
                            "answer": r["answer"],
                            "prediction": r["prediction"],
                            "clean_correct": bool(c["correct"]),
                            "image": thumbnail(sample),
                        }
                        for r, c, sample in zip(rows, clean_rows, samples)
                        if not r["correct"]
                    ][:misses]
            entry["results"][name] = curve
            gallery[name].append(worst_misses)
        result["shifts"].append(entry)
        seconds[shift.name] = round(time.perf_counter() - t_shift, 1)
        del sets

    # the gallery takes misses from every shift in turn, so one bad shift does not fill it
    for name, per_shift in gallery.items():
        picked, depth = [], 0
        while len(picked) < misses and any(depth < len(m) for m in per_shift):
            picked += [m[depth] for m in per_shift if depth < len(m)]
            depth += 1
        result["misses"][name] = picked[:misses]

    if pope_images > 0:
        from .pope import evaluate_pope

        result["pope"] = {
            name: evaluate_pope(
                model, n_images=pope_images, seed=seed, batch_size=batch_size, progress=progress
            )
            for name, model in models.items()
        }
    result["config"] = {
        "families": families,
        "n": n,
        "seed": seed,
        "split": split,
        "severities": severities,
        "shifts": [s.name for s in shifts],
        "bootstrap_rounds": BOOTSTRAP_ROUNDS,
        "max_new_tokens": max_new_tokens,
        "pope_images": pope_images,
        "seconds_per_shift": seconds,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return result


def summary_table(result: dict) -> list[dict]:
    """Per shift and model: clean accuracy, the most severe level's accuracy and the drop."""
    table = []
    for entry in result["shifts"]:
        for name, curve in entry["results"].items():
            worst = curve[-1]  # the most severe level, as the report's table reads it
            table.append(
                {
                    "shift": entry["name"],
                    "group": entry["group"],
                    "model": name,
                    "n": entry["n"],
                    "clean": curve[0]["accuracy"],
                    "worst": worst["accuracy"],
                    "worst_level": worst["level"],
                    "drop": worst["drop"],
                    "drop_ci": worst["drop_ci"],
                }
            )
    return table


def format_summary(result: dict) -> str:
    """The terminal table: clean vs worst severity per shift."""

    def pct(v):
        return "    -" if v is None else f"{100 * v:5.1f}"

    lines = [
        f"{'shift':<12} {'group':<10} {'model':<16} {'n':>5} {'clean':>6} {'worst':>6}  {'drop':>6}  level"
    ]
    for row in summary_table(result):
        ci = row["drop_ci"]
        interval = "" if ci is None else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        lines.append(
            f"{row['shift']:<12} {row['group']:<10} {row['model'][:16]:<16} {row['n']:>5} "
            f"{pct(row['clean']):>6} {pct(row['worst']):>6}  {pct(row['drop']):>6}{interval}  "
            f"{row['worst_level']}"
        )
    for name, pope in result.get("pope", {}).items():
        for setting, m in pope["settings"].items():
            lines.append(
                f"POPE {setting:<12} {name[:16]:<16} acc {pct(m['accuracy'])}  F1 {pct(m['f1'])}  "
                f"yes {pct(m['yes_ratio'])}"
            )
    return "\n".join(lines)
