"""Evaluate a chat model on the visual world (world-spec.md): accuracy per family and question type,
perception vs reasoning with error attribution, grounding Acc@0.5, Fashion-MNIST and MNIST.

    from vislang.eval import evaluate_world, format_report
    report = evaluate_world(model, families=("scene", "fashion", "digits"), n=500)
    table = format_report(report)  # a terminal table

Samples come from the evaluation streams only (split "test" by default, never "train"), so nothing
a model trained on the world has seen is ever scored. A model is anything with
chat(messages, max_new_tokens=...) -> reply (str(reply) is the text); chat_batch is used when offered.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from vislang.data.world import Sample, WorldConfig, generate_sample
from vislang.data.world.paraphrases import HELD_OUT, heldout_question
from vislang.data.world.scene_questions import QTYPES as SCENE_QTYPES

from .metrics import accuracy, accuracy_by, grounding, iou, reasoning_attribution
from .normalize import answer_type, parse_box, score

PARAPHRASES = ("canonical", "heldout")
ENGINE_QUEUE = 512  # conversations queued at once on a scheduler (prepared pixels wait in memory)
LONG_ANSWERS = {"caption": 128, "change": 32, "ground": 48, "ground_button": 48}  # least max_new_tokens
# real-image families have no held-out wording in paraphrases.py; these are never used in training
HELD_OUT_REAL = {
    "fashion": "Which kind of garment does this picture show?",
    "digit": "Which number from 0 to 9 is written here?",
}


def build_samples(
    families: tuple[str, ...], n: int, seed: int = 0, split: str = "test", cfg: WorldConfig | None = None
) -> list[Sample]:
    """n samples of each family from the (family, split, seed) streams: the same arguments, the same set."""
    if split == "train":
        raise ValueError("evaluate on split 'test' (or 'val'): the training streams are what a model saw")
    return [generate_sample(family, split, seed, i, cfg) for family in families for i in range(n)]


def eval_question(sample: Sample, paraphrase: str = "canonical") -> str:
    """The question to ask: the sample's own, or a held-out paraphrase training never used."""
    if paraphrase not in PARAPHRASES:
        raise ValueError(f"paraphrase must be one of {PARAPHRASES}, got {paraphrase!r}")
    if paraphrase == "canonical":
        return sample.question
    if sample.qtype in HELD_OUT_REAL:
        return HELD_OUT_REAL[sample.qtype]
    fields = sample.meta.get("fields", {})
    if sample.qtype not in HELD_OUT or not isinstance(fields, dict):
        return sample.question  # no held-out wording for this type (documents, ui): ask as generated
    try:
        rng = np.random.default_rng([sample.seed, sample.index])
        return heldout_question(sample.qtype, fields, rng)
    except KeyError:  # a template field the sample does not record
        return sample.question


def messages_for(sample: Sample, question: str, video: bool = False) -> list[dict]:
    """One user turn: every image of the sample in order (video frames, image pairs), then the text;
    with `video`, a video sample's frames go in as one video part (models with temporal patches)."""
    if video and sample.family == "video":
        content = [{"type": "video", "video": list(sample.images)}]
    else:
        content = [{"type": "image", "image": image} for image in sample.images]
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


def progress_disabled() -> bool:
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()


def token_budget(qtype: str, max_new_tokens: int) -> int:
    """max_new_tokens, raised for answers that cannot fit it: a 6-object caption, a box in a sentence."""
    return max(max_new_tokens, LONG_ANSWERS.get(qtype, 0))


def ask_all(
    model,
    conversations: list[list[dict]],
    budgets: list[int],
    batch_size: int,
    progress: bool = True,
    desc: str = "eval",
) -> list[str]:
    """The model's reply text to every conversation (each with its max_new_tokens budget), batched
    through chat_batch when there is one; a batch holds one budget, so long answers do not slow the rest."""
    from tqdm import tqdm

    batched = callable(getattr(model, "chat_batch", None))
    replies: list[str | None] = [None] * len(conversations)
    batch_size = max(1, batch_size)
    disable = not progress or progress_disabled()
    if callable(getattr(model, "chat_budgets", None)):
        # a scheduler that takes a budget per conversation (the engine): everything goes in together,
        # the longest answers first, so they decode beside the short ones instead of alone at the end
        order = sorted(range(len(conversations)), key=lambda k: -budgets[k])
        with tqdm(total=len(conversations), unit="q", desc=desc, disable=disable) as bar:
            for start in range(0, len(order), ENGINE_QUEUE):
                chunk = order[start : start + ENGINE_QUEUE]
                out = model.chat_budgets([conversations[k] for k in chunk], [budgets[k] for k in chunk])
                for k, reply in zip(chunk, out, strict=True):
                    replies[k] = str(reply)
                bar.update(len(chunk))
        return replies
    with tqdm(total=len(conversations), unit="q", desc=desc, disable=disable) as bar:
        for budget in dict.fromkeys(budgets):
            todo = [k for k, b in enumerate(budgets) if b == budget]
            for start in range(0, len(todo), batch_size):
                chunk = todo[start : start + batch_size]
                messages = [conversations[k] for k in chunk]
                if batched:
                    out = model.chat_batch(messages, max_new_tokens=budget)
                else:
                    out = [model.chat(m, max_new_tokens=budget) for m in messages]
                for k, reply in zip(chunk, out, strict=True):
                    replies[k] = str(reply)
                bar.update(len(chunk))
    return replies


def score_row(qtype: str, answer: str, prediction: str) -> dict:
    row = {"answer": answer, "prediction": prediction, "correct": score(prediction, answer, qtype)}
    if answer_type(qtype, answer) == "box":
        pred, truth = parse_box(prediction), parse_box(answer)
        row["iou"] = iou(pred, truth) if pred and truth else 0.0
    return row


def score_samples(
    model,
    samples: list[Sample],
    paraphrase: str = "canonical",
    max_new_tokens: int = 24,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "eval",
) -> tuple[list[dict], int]:
    """Ask every sample's question (and, for reasoning, its probes, always canonical so they measure
    perception itself); the scored rows, one per sample, and the number of questions asked."""
    questions = [eval_question(s, paraphrase) for s in samples]
    conversations, budgets, owners = [], [], []  # owners[k]: (sample index, probe index or None)
    video = getattr(model, "video_token_id", None) is not None  # the model reads video as video
    for i, (sample, question) in enumerate(zip(samples, questions)):
        conversations.append(messages_for(sample, question, video))
        budgets.append(token_budget(sample.qtype, max_new_tokens))
        owners.append((i, None))
        for j, probe in enumerate(sample.probes if sample.kind == "reasoning" else []):
            conversations.append(messages_for(sample, probe["question"], video))
            budgets.append(token_budget(probe["qtype"], max_new_tokens))
            owners.append((i, j))
    replies = ask_all(model, conversations, budgets, batch_size, progress, desc)

    rows = [
        {"id": s.id, "family": s.family, "qtype": s.qtype, "kind": s.kind, "question": q, "probes": []}
        for s, q in zip(samples, questions)
    ]
    for (i, j), reply in zip(owners, replies):
        sample = samples[i]
        if j is None:
            rows[i].update(score_row(sample.qtype, sample.answer, reply))
        else:
            probe = sample.probes[j]
            rows[i]["probes"].append(
                {"question": probe["question"], "qtype": probe["qtype"]}
                | score_row(probe["qtype"], probe["answer"], reply)
            )
    return rows, len(conversations)


def evaluate_samples(
    model,
    samples: list[Sample],
    paraphrase: str = "canonical",
    max_new_tokens: int = 24,
    batch_size: int = 16,
    progress: bool = True,
    examples: int = 3,
) -> dict:
    """score_samples, summarized: accuracy per family and qtype, perception vs reasoning, grounding."""
    t0 = time.perf_counter()
    rows, asked = score_samples(model, samples, paraphrase, max_new_tokens, batch_size, progress)
    report = summarize(rows, examples)
    report["config"] = {
        "paraphrase": paraphrase,
        "paraphrased": sum(r["question"] != s.question for r, s in zip(rows, samples)),
        "max_new_tokens": max_new_tokens,
        "long_answer_tokens": dict(LONG_ANSWERS),
        "questions": asked,
    }
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _rank(qtype: str) -> int:
    return SCENE_QTYPES.index(qtype) if qtype in SCENE_QTYPES else 0


def summarize(rows: list[dict], examples: int = 3) -> dict:
    """The report of scored rows; sections with nothing to measure have n = 0 and null rates."""
    families = {}
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        # scene qtypes in the spec's order (perception, then reasoning), other families' alphabetically
        order = sorted({r["qtype"] for r in mine}, key=lambda q: (q not in SCENE_QTYPES, _rank(q), q))
        by_qtype = accuracy_by(mine, "qtype")
        families[family] = {**accuracy(mine), "qtypes": {q: by_qtype[q] for q in order}}
    scene = [r for r in rows if r["family"] == "scene"]
    picked = []
    for family in families:
        mine = [r for r in rows if r["family"] == family]
        # misses first: they are what a reader needs to see
        picked += sorted(mine, key=lambda r: r["correct"])[:examples]
    return {
        "overall": accuracy(rows),
        "families": families,
        "perception": accuracy(r for r in scene if r["kind"] == "perception"),
        "reasoning": reasoning_attribution(r for r in rows if r["kind"] == "reasoning"),
        "grounding": grounding(r["iou"] for r in rows if "iou" in r),
        "fashion": accuracy(r for r in rows if r["family"] == "fashion"),
        "digits": accuracy(r for r in rows if r["family"] == "digits"),
        "examples": [
            {k: r[k] for k in ("family", "qtype", "question", "answer", "prediction", "correct")}
            for r in picked
        ],
    }


def evaluate_world(
    model,
    families: tuple[str, ...] = ("scene", "fashion", "digits"),
    n: int = 500,
    seed: int = 0,
    split: str = "test",
    paraphrase: str = "canonical",
    max_new_tokens: int = 24,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """Evaluate `model` on n samples of each family; see the module docstring and format_report."""
    if paraphrase not in PARAPHRASES:
        raise ValueError(f"paraphrase must be one of {PARAPHRASES}, got {paraphrase!r}")
    samples = build_samples(tuple(families), n, seed, split)
    report = evaluate_samples(model, samples, paraphrase, max_new_tokens, batch_size, progress)
    report["config"] = {"families": list(families), "n": n, "seed": seed, "split": split} | report["config"]
    return report


# ---- output -----------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _summary_line(name: str, value: float | None, n: int, extra: str = "") -> str:
    return f"{name:<20}{_pct(value):>8}  n={n:<6}{extra}".rstrip()


def _clip(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_report(report: dict) -> str:
    """A terminal table: accuracy per family and qtype, then the summary lines, then examples."""
    cfg = report.get("config", {})
    lines = [
        f"world eval: split {cfg.get('split', '?')}, seed {cfg.get('seed', '?')}, "
        f"n {cfg.get('n', '?')} per family, {cfg.get('paraphrase', '?')} questions, "
        f"{report.get('seconds', 0):.1f} s",
        "",
        f"{'family':<10}{'qtype':<16}{'n':>6}{'accuracy':>10}",
    ]
    for family, stats in report["families"].items():
        for qtype, q in stats["qtypes"].items():
            lines.append(f"{family:<10}{qtype:<16}{q['n']:>6}{_pct(q['accuracy']):>10}")
        lines.append(f"{family:<10}{'(all)':<16}{stats['n']:>6}{_pct(stats['accuracy']):>10}")
    r, g = report["reasoning"], report["grounding"]
    attribution = (
        f"perception errors {_pct(r['perception_error_rate'])}, "
        f"reasoning errors {_pct(r['reasoning_error_rate'])}, probes right {_pct(r['probe_accuracy'])}"
    )
    mean_iou = "-" if g["mean_iou"] is None else f"{g['mean_iou']:.3f}"
    lines += [
        "",
        _summary_line("overall", report["overall"]["accuracy"], report["overall"]["n"]),
        _summary_line("perception (scene)", report["perception"]["accuracy"], report["perception"]["n"]),
        _summary_line("reasoning", r["accuracy"], r["n"], attribution),
        _summary_line("grounding Acc@0.5", g["acc@0.5"], g["n"], f"mean IoU {mean_iou}"),
        _summary_line("fashion", report["fashion"]["accuracy"], report["fashion"]["n"]),
        _summary_line("digits", report["digits"]["accuracy"], report["digits"]["n"]),
    ]
    if report.get("examples"):
        lines += ["", "examples:"]
        for e in report["examples"]:
            mark = "right" if e["correct"] else "WRONG"
            lines.append(f"  [{e['family']}/{e['qtype']}] {mark}: {e['question']}")
            lines.append(f"      answer {_clip(e['answer'])!r}, model {_clip(e['prediction'])!r}")
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> Path:
    """The report as indented JSON; parent folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
