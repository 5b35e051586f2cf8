"""The questions of world-spec.md section 2 about one scene, with canonical answers and probes.

Each builder returns None when the scene cannot carry the question (nothing referable, or no pair
with the wanted yes/no answer); the caller then draws a new scene from the same stream.
A reasoning question lists its perception probes, and its answer follows from theirs alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import palette as P
from .paraphrases import canonical_question
from .render import format_box, normalized_box
from .scene import (
    Scene,
    above,
    caption,
    column_of,
    left_of,
    referable,
    referring_expression,
    region_of,
    row_of,
)

PERCEPTION = (
    "count_all",
    "count_shape",
    "count_color",
    "count_both",
    "color",
    "shape",
    "size",
    "exist",
    "where",
    "ground",
    "caption",
)
REASONING = ("more", "count_not", "left_of", "above", "same_color")
QTYPES = PERCEPTION + REASONING
YES_NO = ("exist", "more", "left_of", "above", "same_color")

# The attribute each question asks for, which its referring expressions must not name (world-spec v2).
# Pair questions follow their probes: left_of / above are settled by `where`, same_color by `color`.
ASKS_FOR = {
    "color": frozenset({"color"}),
    "shape": frozenset({"shape"}),
    "size": frozenset({"size"}),
    "where": frozenset({"region"}),
    "ground": frozenset({"region"}),
    "left_of": frozenset({"region"}),
    "above": frozenset({"region"}),
    "same_color": frozenset({"color"}),
}


@dataclass
class Question:
    qtype: str
    fields: dict[str, str]  # what fills the template
    answer: str
    probes: list[dict] = field(default_factory=list)  # [{"question", "answer", "qtype"}], canonical wording
    refs: list[int] = field(default_factory=list)  # indices of the objects the question names
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "reasoning" if self.qtype in REASONING else "perception"

    @property
    def text(self) -> str:
        return canonical_question(self.qtype, self.fields)


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def pick_attribute(rng: np.random.Generator, present: list, everything: Sequence):
    """Half the time something in the scene, half the time anything: counts of 0 and above both occur."""
    return choice(rng, present) if rng.random() < 0.5 else choice(rng, everything)


def probe(qtype: str, fields: dict[str, str], answer: str) -> dict:
    return {"question": canonical_question(qtype, fields), "answer": answer, "qtype": qtype}


# ---- perception ---------------------------------------------------------------------------------


def count(scene: Scene, shape: str | None = None, color: str | None = None) -> int:
    return sum(
        (shape is None or o.shape == shape) and (color is None or o.color == color) for o in scene.objects
    )


def ask_count(qtype: str, scene: Scene, rng: np.random.Generator) -> Question:
    objs = scene.objects
    if qtype == "count_all":
        return Question(qtype, {}, str(count(scene)))
    if qtype == "count_shape":
        shape = pick_attribute(rng, [o.shape for o in objs], P.SHAPES)
        return Question(qtype, {"shape": shape}, str(count(scene, shape=shape)))
    if qtype == "count_color":
        color = pick_attribute(rng, [o.color for o in objs], list(P.COLORS))
        return Question(qtype, {"color": color}, str(count(scene, color=color)))
    pairs = [(c, s) for c in P.COLORS for s in P.SHAPES]
    color, shape = pick_attribute(rng, [(o.color, o.shape) for o in objs], pairs)
    return Question(qtype, {"color": color, "shape": shape}, str(count(scene, shape, color)))


def ask_about_object(qtype: str, scene: Scene, rng: np.random.Generator) -> Question | None:
    """color, shape, size, where, ground: about one object that has a unique description."""
    objs, w, h, avoid = scene.objects, scene.width, scene.height, ASKS_FOR[qtype]
    candidates = referable(objs, w, h, avoid)
    if not candidates:
        return None
    i = choice(rng, candidates)
    obj = objs[i]
    fields = {"ref": referring_expression(obj, objs, w, h, rng, avoid)}
    if qtype == "ground":
        answer = format_box(normalized_box(obj.box, scene.width, scene.height))
        return Question(qtype, fields, answer, refs=[i], meta={"box": list(obj.box)})
    answer = {
        "color": obj.color,
        "shape": obj.shape,
        "size": obj.size,
        "where": region_of(obj, scene.width, scene.height),
    }[qtype]
    return Question(qtype, fields, answer, refs=[i])


def ask_exist(scene: Scene, rng: np.random.Generator, want_yes: bool) -> Question:
    present = sorted({(o.color, o.shape) for o in scene.objects})
    absent = [(c, s) for c in P.COLORS for s in P.SHAPES if (c, s) not in present]  # never empty: <= 6 of 30
    color, shape = choice(rng, present if want_yes else absent)
    return Question("exist", {"color": color, "shape": shape}, yes_no(want_yes))


# ---- reasoning ----------------------------------------------------------------------------------


def ask_more(scene: Scene, rng: np.random.Generator, want_yes: bool) -> Question | None:
    counts = {c: count(scene, color=c) for c in P.COLORS}
    pairs = [
        (c1, c2)
        for c1 in P.COLORS
        for c2 in P.COLORS
        if c1 != c2 and counts[c1] + counts[c2] > 0 and (counts[c1] > counts[c2]) == want_yes
    ]
    if not pairs:
        return None
    c1, c2 = choice(rng, pairs)
    probes = [
        probe("count_color", {"color": c1}, str(counts[c1])),
        probe("count_color", {"color": c2}, str(counts[c2])),
    ]
    return Question("more", {"color1": c1, "color2": c2}, yes_no(want_yes), probes)


def ask_count_not(scene: Scene, rng: np.random.Generator) -> Question:
    shape = choice(rng, [o.shape for o in scene.objects])  # a shape in the scene: the answer stays in 0..5
    n, k = count(scene), count(scene, shape=shape)
    probes = [probe("count_all", {}, str(n)), probe("count_shape", {"shape": shape}, str(k))]
    return Question("count_not", {"shape": shape}, str(n - k), probes)


def ask_pair(
    qtype: str,
    scene: Scene,
    rng: np.random.Generator,
    want_yes: bool,
    askable: Callable[[int, int], bool],
    holds: Callable[[int, int], bool],
    probe_qtype: str,
    probe_answer: Callable[[int], str],
) -> Question | None:
    """A yes/no question about an ordered pair of referable objects."""
    objs, w, h, avoid = scene.objects, scene.width, scene.height, ASKS_FOR[qtype]
    candidates = referable(objs, w, h, avoid)
    pairs = [(i, j) for i in candidates for j in candidates if i != j and askable(i, j)]
    pairs = [(i, j) for i, j in pairs if holds(i, j) == want_yes]
    if not pairs:
        return None
    i, j = choice(rng, pairs)
    ref1 = referring_expression(objs[i], objs, w, h, rng, avoid)
    ref2 = referring_expression(objs[j], objs, w, h, rng, avoid)
    probes = [
        probe(probe_qtype, {"ref": ref1}, probe_answer(i)),
        probe(probe_qtype, {"ref": ref2}, probe_answer(j)),
    ]
    return Question(qtype, {"ref1": ref1, "ref2": ref2}, yes_no(want_yes), probes, refs=[i, j])


def ask_relation(qtype: str, scene: Scene, rng: np.random.Generator, want_yes: bool) -> Question | None:
    """left_of / above. Asked only when the relation or its opposite holds with the spec's margin and
    the two objects sit in different columns (rows), so the `where` probes settle the answer."""
    objs, w, h = scene.objects, scene.width, scene.height
    if qtype == "left_of":
        before, band = (lambda a, b: left_of(a, b, w)), (lambda o: column_of(o, w))
    else:
        before, band = (lambda a, b: above(a, b, h)), (lambda o: row_of(o, h))

    def askable(i: int, j: int) -> bool:
        a, b = objs[i], objs[j]
        return (before(a, b) or before(b, a)) and band(a) != band(b)

    return ask_pair(
        qtype,
        scene,
        rng,
        want_yes,
        askable,
        lambda i, j: before(objs[i], objs[j]),
        "where",
        lambda i: region_of(objs[i], w, h),
    )


def ask_same_color(scene: Scene, rng: np.random.Generator, want_yes: bool) -> Question | None:
    objs = scene.objects
    return ask_pair(
        "same_color",
        scene,
        rng,
        want_yes,
        lambda i, j: True,
        lambda i, j: objs[i].color == objs[j].color,
        "color",
        lambda i: objs[i].color,
    )


def ask_question(
    qtype: str, scene: Scene, rng: np.random.Generator, want_yes: bool | None = None
) -> Question | None:
    """A question of `qtype` about the scene; yes/no types need the answer wanted, chosen beforehand."""
    if qtype in YES_NO and want_yes is None:
        raise ValueError(f"{qtype} is a yes/no question: pass want_yes")
    if qtype in ("count_all", "count_shape", "count_color", "count_both"):
        return ask_count(qtype, scene, rng)
    if qtype in ("color", "shape", "size", "where", "ground"):
        return ask_about_object(qtype, scene, rng)
    if qtype == "exist":
        return ask_exist(scene, rng, want_yes)
    if qtype == "caption":
        return Question("caption", {}, caption(scene))
    if qtype == "more":
        return ask_more(scene, rng, want_yes)
    if qtype == "count_not":
        return ask_count_not(scene, rng)
    if qtype in ("left_of", "above"):
        return ask_relation(qtype, scene, rng, want_yes)
    if qtype == "same_color":
        return ask_same_color(scene, rng, want_yes)
    raise ValueError(f"unknown scene qtype {qtype!r}; qtypes: {', '.join(QTYPES)}")
