"""In-context learning: tasks whose answer words exist only in the prompt, the skill Flamingo was built for.

    from vislang.eval.icl import evaluate_icl, format_icl
    result = evaluate_icl(model, tasks=("colors", "garments"), shots=(0, 1, 2, 4), n=200)
    print(format_icl(result))

Each task renames its labels with made-up words ("red" -> "dax", "coat" -> "wug"), a seeded bijection,
so no model can answer from its weights: the words mean something only through the k solved examples
that come before the query in the same conversation. The prompt lists the words (alphabetically, so
the list tells nothing), which makes 0-shot a fair guess at chance, 1 / #labels.

  colors    scene colour questions about one-object scenes, so what is tested is learning the words,
            not finding the object a referring expression names
  garments  Fashion-MNIST classes

Queries come from the test split, examples from the train split (never the same image). The examples
of a query are drawn one at a time, cycling through shuffled labels so that they show different
answers where possible; a query's k examples are the first k of one seeded draw, so more shots only
add examples and never swap the ones a smaller k saw.
Two layouts: "turns" (a user turn per image, the answer as the assistant's turn, what chat models
are trained on) and "interleaved" (one user turn: "<image> Q: ... A: dax" lines, Flamingo's prompt).
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vislang.data.real import FASHION_LABELS
from vislang.data.world import Sample, generate_sample, sample_rng
from vislang.data.world.palette import COLORS
from vislang.data.world.scene import draw_scene, sample_scene
from vislang.data.world.scene_questions import ask_question

from .metrics import rate
from .normalize import extract_candidate
from .robustness import bootstrap_ci
from .world import ask_all

# pronounceable nonsense, none an English word: the labels of every task are drawn from these
WORDS = (
    "blicket",
    "dax",
    "wug",
    "toma",
    "fep",
    "zorp",
    "kiki",
    "bouba",
    "nefa",
    "lorp",
    "vesk",
    "glorn",
    "pilo",
    "sarn",
    "quib",
    "trulb",
)
LAYOUTS = ("turns", "interleaved")
POOL_PER_LABEL = 8  # train examples kept per label; a query's examples are drawn from these
MAX_DRAWS = 100  # train samples per label read before giving up on filling the pool
SIDE = 224  # pixels, the world's canvas


def one_object_scene(split: str, seed: int, index: int) -> Sample:
    """A scene of one object, asked its colour: the scene family's question on the plainest scene."""
    rng = sample_rng("icl_colors", split, seed, index)
    scene = sample_scene(rng, SIDE, SIDE, count=1)
    question = ask_question("color", scene, rng)  # a lone object is always referable ("the star")
    return Sample(
        family="icl_colors",
        question=question.text,
        answer=question.answer,
        kind="perception",
        qtype="color",
        images=[draw_scene(scene)],
        objects=scene.records(),
        split=split,
        seed=seed,
        index=index,
    )


def fashion_image(split: str, seed: int, index: int) -> Sample:
    return generate_sample("fashion", split, seed, index)


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, ...]
    topic: str  # what the renamed words name, for the instruction
    make: Callable[[str, int, int], Sample]  # (split, seed, index) -> the sample


TASKS = {
    "colors": Task("colors", tuple(COLORS), "colors", one_object_scene),
    "garments": Task("garments", FASHION_LABELS, "clothing items", fashion_image),
}


@dataclass
class Item:
    """One query with its k examples, as a conversation."""

    messages: list[dict]
    answer: str  # the invented word
    shown: list[str]  # the examples' (invented) answers, in order
    query_id: str
    example_ids: list[str]


def icl_tasks() -> list[str]:
    return list(TASKS)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown icl task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]


# ---- renaming ---------------------------------------------------------------------------------------


def renaming(task: str, seed: int = 0) -> dict[str, str]:
    """The task's labels -> invented words: a bijection, the same for the same (task, seed)."""
    labels = get_task(task).labels
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    words = [str(w) for w in rng.permutation(WORDS)[: len(labels)]]
    return dict(zip(labels, words, strict=True))


def rename_text(text: str, mapping: dict[str, str]) -> str:
    """Every whole-word label in `text` replaced by its invented word (longest labels first, so
    "ankle boot" is not read as "boot"; "t-shirt" is one word, so "shirt" never matches inside it)."""
    if not mapping:
        return text
    labels = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, labels)) + r")(?![\w-])", re.IGNORECASE)
    return pattern.sub(lambda m: mapping[m.group(1).lower()], text)


def instruction(task: Task, mapping: dict[str, str]) -> str:
    words = ", ".join(sorted(mapping.values()))
    return f"In these pictures, {task.topic} have made-up names: {words}. Answer with one of these names."


# ---- samples ----------------------------------------------------------------------------------------


@lru_cache(maxsize=4)  # the images of the last few (task, n, seed), not of every run
def queries(name: str, n: int, seed: int) -> list[Sample]:
    return [get_task(name).make("test", seed, i) for i in range(n)]


@lru_cache(maxsize=4)
def example_pool(name: str, seed: int) -> dict[str, list[Sample]]:
    """label -> POOL_PER_LABEL train samples with that answer (first come in the train stream)."""
    task = get_task(name)
    pool: dict[str, list[Sample]] = {label: [] for label in task.labels}
    for index in range(MAX_DRAWS * len(task.labels)):
        sample = task.make("train", seed, index)
        bucket = pool[sample.answer]
        if len(bucket) < POOL_PER_LABEL:
            bucket.append(sample)
        if all(len(b) == POOL_PER_LABEL for b in pool.values()):
            return pool
    raise RuntimeError(f"the {name} train stream does not give {POOL_PER_LABEL} examples of every label")


def draw_examples(pool: dict[str, list[Sample]], k: int, rng: np.random.Generator) -> list[Sample]:
    """k distinct examples; answers cycle through shuffled labels, so the first #labels all differ.
    Drawn one by one from `rng`, so the first k are the same whatever k is asked for."""
    labels, chosen, used = list(pool), [], set()
    order: list[str] = []
    while len(chosen) < k:
        if not order:
            order = [labels[j] for j in rng.permutation(len(labels))]
        bucket = pool[order.pop(0)]
        start = int(rng.integers(len(bucket)))
        for j in range(len(bucket)):  # the drawn one, or the next one not used yet
            sample = bucket[(start + j) % len(bucket)]
            if sample.id not in used:
                used.add(sample.id)
                chosen.append(sample)
                break
    return chosen


# ---- conversations ----------------------------------------------------------------------------------


def _image(sample: Sample) -> dict:
    return {"type": "image", "image": sample.images[0]}


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def conversation(
    header: str, examples: list[tuple[Sample, str, str]], query: tuple[Sample, str], layout: str
) -> list[dict]:
    """examples: (sample, question, answer) solved before the query (sample, question)."""
    if layout == "turns":
        messages, first = [], [_text(header)]
        for sample, question, answer in examples:
            messages.append({"role": "user", "content": [*first, _image(sample), _text(question)]})
            messages.append({"role": "assistant", "content": answer})
            first = []
        sample, question = query
        messages.append({"role": "user", "content": [*first, _image(sample), _text(question)]})
        return messages
    if layout == "interleaved":
        content = [_text(header + "\n")]
        for sample, question, answer in examples:
            content += [_image(sample), _text(f"Q: {question} A: {answer}\n")]
        sample, question = query
        content += [_image(sample), _text(f"Q: {question} A:")]
        return [{"role": "user", "content": content}]
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def build_items(task: str, k: int, n: int, seed: int = 0, layout: str = "turns") -> list[Item]:
    """n queries of `task`, each after k solved examples; the same arguments, the same items."""
    spec, mapping = get_task(task), renaming(task, seed)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not 0 <= k <= POOL_PER_LABEL * len(spec.labels):
        raise ValueError(f"k must be in 0..{POOL_PER_LABEL * len(spec.labels)}, got {k}")
    header, pool = instruction(spec, mapping), example_pool(task, seed) if k else {}
    items = []
    for i, query in enumerate(queries(task, n, seed)):
        rng = np.random.default_rng([seed, i, zlib.crc32(task.encode())])
        examples = draw_examples(pool, k, rng) if k else []
        solved = [(s, rename_text(s.question, mapping), mapping[s.answer]) for s in examples]
        messages = conversation(header, solved, (query, rename_text(query.question, mapping)), layout)
        shown = [answer for _, _, answer in solved]
        items.append(Item(messages, mapping[query.answer], shown, query.id, [s.id for s in examples]))
    return items


def icl_conversations(
    task: str, k: int, n: int, seed: int = 0, layout: str = "turns"
) -> list[tuple[list[dict], str]]:
    """(messages, answer) for n queries of `task` with k examples each; answer is the invented word."""
    return [(item.messages, item.answer) for item in build_items(task, k, n, seed, layout)]


# ---- scoring ----------------------------------------------------------------------------------------


def icl_answer(prediction: str, words) -> str | None:
    """The invented word a reply names (the longest, then the earliest); None when it names none."""
    return extract_candidate(str(prediction), list(words))


def score_reply(reply: str, item: Item, words) -> dict:
    got = icl_answer(reply, words)
    return {
        "answer": item.answer,
        "reply": str(reply),
        "correct": got == item.answer,
        "in_vocab": got is not None,  # the reply names a listed word, right or wrong
        "covered": item.answer in item.shown,  # an example showed this answer
    }


def cell(rows: list[dict], seed: int = 0, misses: int = 3) -> dict:
    """One (task, k) result from score_reply rows, with the first few misses to read."""
    correct = [bool(r["correct"]) for r in rows]
    covered = [r for r in rows if r["covered"]]
    return {
        "n": len(rows),
        "accuracy": rate(sum(correct), len(rows)),
        "ci": bootstrap_ci(correct, seed),
        "in_vocab": rate(sum(bool(r["in_vocab"]) for r in rows), len(rows)),
        "covered": rate(len(covered), len(rows)),
        "accuracy_covered": rate(sum(bool(r["correct"]) for r in covered), len(covered)),
        "misses": [{"answer": r["answer"], "reply": r["reply"]} for r in rows if not r["correct"]][:misses],
    }


def max_images(model) -> int | None:
    """How many images one request may hold, when the model (or its engine) says."""
    for owner in (model, getattr(model, "engine", None)):
        limit = getattr(owner, "max_images", None)
        if isinstance(limit, int):
            return limit
    return None


def evaluate_icl(
    model,
    tasks=("colors", "garments"),
    shots=(0, 1, 2, 4),
    n: int = 200,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    max_new_tokens: int = 8,
    layout: str = "turns",
) -> dict:
    """Accuracy of `model` on every (task, k): {"tasks": {task: {k: cell}}, "chance", "config"}.
    A model is anything with chat(messages, max_new_tokens=...) (chat_batch / chat_budgets when offered)."""
    t0 = time.perf_counter()
    tasks, shots = [tasks] if isinstance(tasks, str) else list(tasks), sorted(set(shots))
    for task in tasks:
        get_task(task)
    limit = max_images(model)
    if limit is not None and max(shots) + 1 > limit:
        raise ValueError(
            f"{max(shots)} shots and the query make {max(shots) + 1} images; the model takes {limit}"
        )
    plan = [(task, k, build_items(task, k, n, seed, layout)) for task in tasks for k in shots]
    conversations = [item.messages for _, _, items in plan for item in items]
    replies = iter(
        ask_all(model, conversations, [max_new_tokens] * len(conversations), batch_size, progress, "icl")
    )

    result = {"tasks": {task: {} for task in tasks}, "chance": {}, "config": {}}
    for task, k, items in plan:
        words = renaming(task, seed).values()
        rows = [score_reply(next(replies), item, words) for item in items]
        result["tasks"][task][k] = cell(rows, seed)
    result["chance"] = {task: 1 / len(get_task(task).labels) for task in tasks}
    result["config"] = {
        "tasks": tasks,
        "shots": shots,
        "n": n,
        "seed": seed,
        "layout": layout,
        "max_new_tokens": max_new_tokens,
        "renaming": {task: renaming(task, seed) for task in tasks},
    }
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


# ---- output -----------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _with_ci(c: dict) -> str:
    if c["ci"] is None:
        return _pct(c["accuracy"])
    lo, hi = c["ci"]
    return f"{_pct(c['accuracy'])} [{100 * lo:.0f}-{100 * hi:.0f}]"


def format_icl(result: dict) -> str:
    """A terminal table: accuracy (95% interval) per task and number of shots; below it, how often
    an example showed the query's answer, the accuracy then, and how often a reply named a listed word."""
    cfg = result.get("config", {})
    shots = cfg.get("shots") or sorted({k for cells in result["tasks"].values() for k in cells})
    width = 18

    def row(label: str, cells: dict, value) -> str:
        return label + "".join(f"{value(cells[k]) if k in cells else '-':>{width}}" for k in shots)

    lines = [
        f"in-context learning: n {cfg.get('n', '?')} per cell, seed {cfg.get('seed', '?')}, "
        f"{cfg.get('layout', '?')} layout, {result.get('seconds', 0):.1f} s",
        "",
        f"{'task':<10}{'chance':>8}" + "".join(f"{f'k={k}':>{width}}" for k in shots),
    ]
    for task, cells in result["tasks"].items():
        lines.append(row(f"{task:<10}{_pct(result['chance'].get(task)):>8}", cells, _with_ci))
    lines.append("")
    for task, cells in result["tasks"].items():
        lines.append(row(f"{task:<10}{'shown':>8}", cells, lambda c: _pct(c["covered"])))
        lines.append(row(f"{'':<10}{'then':>8}", cells, lambda c: _pct(c["accuracy_covered"])))
        lines.append(row(f"{'':<10}{'listed':>8}", cells, lambda c: _pct(c["in_vocab"])))
    lines.append("(shown: an example had the query's answer; then: accuracy on those; listed: a listed word)")
    return "\n".join(lines)
