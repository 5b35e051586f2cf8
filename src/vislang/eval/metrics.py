"""Metrics over scored rows: accuracy per question type, box IoU, and reasoning-error attribution.

A row is a dict with at least "correct" (bool); grounding rows carry "iou", reasoning rows carry
"probes", a list of rows for the perception questions their answer follows from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes; 0 for empty or disjoint boxes."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, ix) * max(0.0, iy)
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def rate(part: int, whole: int) -> float | None:
    """part / whole, None when there is nothing to measure (JSON null, not a misleading 0)."""
    return part / whole if whole else None


def accuracy(rows: Iterable[dict]) -> dict:
    rows = list(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    return {"n": len(rows), "correct": correct, "accuracy": rate(correct, len(rows))}


def accuracy_by(rows: Iterable[dict], key: str = "qtype") -> dict[str, dict]:
    """accuracy() per value of row[key], keys in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    return {k: accuracy(v) for k, v in groups.items()}


def grounding(ious: Iterable[float], threshold: float = 0.5) -> dict:
    """Acc@threshold (the share of boxes with IoU >= threshold) and mean IoU; a missing box counts 0."""
    ious = [float(v) for v in ious]
    hits = sum(v >= threshold for v in ious)
    return {
        "n": len(ious),
        f"acc@{threshold:g}": rate(hits, len(ious)),
        "mean_iou": rate(sum(ious), len(ious)),
    }


def reasoning_attribution(rows: Iterable[dict]) -> dict:
    """Split reasoning misses by cause (world-spec section 2).

    A miss whose probes were all answered right is a reasoning error: the model saw what it needed
    and still concluded wrongly. A miss with any probe wrong is a perception error. Rates are over
    all reasoning rows, so accuracy + perception_error_rate + reasoning_error_rate = 1.
    """
    rows = list(rows)
    misses = [r for r in rows if not r["correct"]]
    reasoning_errors = sum(all(p["correct"] for p in r.get("probes", [])) for r in misses)
    perception_errors = len(misses) - reasoning_errors
    probes = [p for r in rows for p in r.get("probes", [])]
    return {
        **accuracy(rows),
        "perception_errors": perception_errors,
        "reasoning_errors": reasoning_errors,
        "perception_error_rate": rate(perception_errors, len(rows)),
        "reasoning_error_rate": rate(reasoning_errors, len(rows)),
        "probe_accuracy": accuracy(probes)["accuracy"],
    }
