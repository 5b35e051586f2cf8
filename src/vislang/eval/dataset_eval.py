"""Evaluate a chat model on a VQA-style dataset file with the field's metrics.

    report = evaluate_dataset(model, "textvqa_val.parquet", limit=500)
    report["overall"]["score"], report["groups"], report["misses"][0]["image"]

Each row is scored by one metric, chosen in this order: the row's "metric" column, the `metric`
argument, else read from the row itself:
    qtype "caption", or an answer of CAPTION_WORDS words or more   -> caption (BLEU-4, CIDEr-D)
    an answer that is a box "[x1, y1, x2, y2]"                     -> iou (Acc@0.5)
    10 human answers (VQAv2, TextVQA, VizWiz, OK-VQA)              -> vqa (VQAv2 accuracy)
    anything else                                                  -> exact (normalized exact match)
anls (DocVQA) is never guessed: ask for it. A row's score is in [0, 1], except a caption's, which is
its CIDEr-D (0 to 10) within the dataset's captions; "overall" therefore leaves captions out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .datasets import VqaRow, load_dataset, open_images
from .metrics import rate
from .normalize import parse_box
from .vqa_metrics import anls, box_iou, caption_metrics, exact_match, vqa_accuracy
from .world import ask_all, progress_disabled, token_budget

METRICS = ("vqa", "exact", "anls", "iou", "caption")
CAPTION_WORDS = 6
IOU_THRESHOLD = 0.5
ROWS_IN_MEMORY = 256  # rows whose images are decoded at once: a large dataset never is, whole

SCORERS: dict[str, Callable[[str, list[str]], float]] = {
    "vqa": vqa_accuracy,
    "exact": exact_match,
    "anls": anls,
}


def _is_box(answer: str) -> bool:
    return answer.strip().startswith("[") and answer.strip().endswith("]") and parse_box(answer) is not None


def infer_metric(row: VqaRow) -> str:
    """The metric a row's own shape calls for; see the module docstring."""
    if (row.qtype or "").lower() == "caption" or any(len(a.split()) >= CAPTION_WORDS for a in row.answers):
        return "caption"
    if all(_is_box(a) for a in row.answers):
        return "iou"
    if len(row.answers) == 10:
        return "vqa"
    return "exact"


def row_metric(row: VqaRow, metric: str | None = None) -> str:
    """The row's "metric" column, else `metric`, else infer_metric(row)."""
    chosen = row.metric or metric or infer_metric(row)
    if chosen not in METRICS:
        source = f"{row.where}: the metric column" if row.metric else "metric"
        raise ValueError(f"{source} is {chosen!r}; use one of {', '.join(METRICS)}")
    return chosen


def messages_for_row(row: VqaRow, instruction: str = "") -> list[dict]:
    """One user turn: the row's images in order, then its question (and the instruction, if any)."""
    text = f"{row.question}\n{instruction}" if instruction else row.question
    content = [{"type": "image", "image": image} for image in open_images(row)]
    return [{"role": "user", "content": [*content, {"type": "text", "text": text}]}]


def ask_rows(
    model,
    rows: list[VqaRow],
    budgets: list[int],
    instruction: str = "",
    batch_size: int = 16,
    progress: bool = True,
) -> list[str]:
    """The model's reply to every row, ROWS_IN_MEMORY rows' images decoded at a time."""
    from tqdm import tqdm

    replies: list[str] = []
    with tqdm(total=len(rows), unit="q", desc="eval", disable=not progress or progress_disabled()) as bar:
        for start in range(0, len(rows), ROWS_IN_MEMORY):
            chunk = rows[start : start + ROWS_IN_MEMORY]
            conversations = [messages_for_row(r, instruction) for r in chunk]
            replies += ask_all(model, conversations, budgets[start : start + len(chunk)], batch_size, False)
            bar.update(len(chunk))
    return replies


def score_rows(rows: list[VqaRow], metrics: list[str], predictions: list[str]) -> tuple[list[dict], dict]:
    """One scored dict per row, and the corpus caption metrics (empty without captions): caption
    rows are scored together, each with its CIDEr-D within the corpus."""
    scored = []
    for row, metric, prediction in zip(rows, metrics, predictions, strict=True):
        entry = {"id": row.id, "qtype": row.qtype, "metric": metric, "question": row.question}
        entry |= {"answers": row.answers, "prediction": prediction, "score": None}
        if metric == "iou":
            entry["iou"] = max(box_iou(prediction, a) for a in row.answers)
            entry["score"] = float(entry["iou"] >= IOU_THRESHOLD)
        elif metric in SCORERS:
            entry["score"] = SCORERS[metric](prediction, row.answers)
        scored.append(entry)
    captions = [k for k, m in enumerate(metrics) if m == "caption"]
    if not captions:
        return scored, {}
    found = caption_metrics([predictions[k] for k in captions], [rows[k].answers for k in captions])
    for k, cider, bleu in zip(captions, found["cider_rows"], found["bleu4_rows"]):
        scored[k] |= {"score": cider, "cider": cider, "bleu4": bleu}
    return scored, {k: found[k] for k in ("cider", "bleu4", "bleu")}


def _mean(values: list[float]) -> float | None:
    return rate(sum(values), len(values))


def summarize_metrics(scored: list[dict]) -> dict:
    """Per metric: n and the mean row score; captions their corpus BLEU-4 and CIDEr-D; boxes their
    Acc@0.5 and mean IoU."""
    out = {}
    for metric in dict.fromkeys(r["metric"] for r in scored):
        mine = [r for r in scored if r["metric"] == metric]
        out[metric] = {"n": len(mine), "score": _mean([r["score"] for r in mine])}
        if metric == "iou":
            out[metric] |= {
                f"acc@{IOU_THRESHOLD:g}": out[metric]["score"],
                "mean_iou": _mean([r["iou"] for r in mine]),
            }
    return out


def summarize_groups(scored: list[dict]) -> dict:
    """Mean row score per question type (per metric where rows have none); a qtype scored by more
    than one metric is split as "qtype/metric", since its scores do not share a scale."""
    metrics_of: dict[str, set[str]] = {}
    for r in scored:
        metrics_of.setdefault(r["qtype"] or r["metric"], set()).add(r["metric"])
    groups: dict[str, dict] = {}
    for r in scored:
        name = r["qtype"] or r["metric"]
        key = name if len(metrics_of[name]) == 1 else f"{name}/{r['metric']}"
        groups.setdefault(key, {"metric": r["metric"], "scores": []})["scores"].append(r["score"])
    return {
        k: {"metric": g["metric"], "n": len(g["scores"]), "score": _mean(g["scores"])}
        for k, g in groups.items()
    }


def evaluate_dataset(
    model,
    path: str | Path,
    metric: str | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    limit: int | None = None,
    progress: bool = True,
    instruction: str = "",
    misses: int = 8,
) -> dict:
    """Ask `model` every question of the dataset at `path` and score the replies.

    instruction: text added after each question, e.g. "Answer the question using a single word or
    phrase." (LLaVA's short-answer prompt). The report: "rows" (prediction and score of each),
    "metrics" (per metric), "groups" (per question type), "overall" (the mean over rows scored in
    [0, 1]), "misses" (the first `misses` rows scoring under 1 (a caption: CIDEr-D under 1), each with
    its first image as a PIL image under "image": not JSON, drop it before writing), "config" and
    "seconds".
    """
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric is {metric!r}; use one of {', '.join(METRICS)}")
    t0 = time.perf_counter()
    rows = load_dataset(path, limit)
    metrics = [row_metric(r, metric) for r in rows]
    # a caption needs room: the world's caption budget, whatever the row's qtype is called
    budgets = [
        token_budget("caption" if m == "caption" else r.qtype or "", max_new_tokens)
        for r, m in zip(rows, metrics)
    ]
    predictions = ask_rows(model, rows, budgets, instruction, batch_size, progress)
    scored, corpus = score_rows(rows, metrics, predictions)
    unit = [r["score"] for r in scored if r["metric"] != "caption"]
    report = {
        "overall": {"n": len(unit), "score": _mean(unit)},
        "metrics": summarize_metrics(scored),
        "groups": summarize_groups(scored),
        "rows": scored,
        "misses": [],
        "config": {
            "path": str(path),
            "rows": len(rows),
            "metric": metric,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "limit": limit,
            "instruction": instruction,
        },
    }
    for row, entry in zip(rows, scored):
        if len(report["misses"]) >= misses:
            break
        if entry["score"] < 1.0:
            report["misses"].append(entry | {"image": open_images(row)[0]})
    if corpus:
        report["metrics"]["caption"] |= corpus
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report
