"""Family `scene`: one scene, one perception or reasoning question (world-spec.md sections 1 and 2)."""

from __future__ import annotations

import numpy as np

from .paraphrases import ask
from .sample import Sample, WorldConfig
from .scene import MAX_SCENES, Scene, draw_scene, sample_scene
from .scene_questions import QTYPES, YES_NO, Question, ask_question, choice


def family_qtypes(cfg: WorldConfig, known: tuple[str, ...], family: str) -> tuple[str, ...]:
    """The question types to draw from: cfg.qtypes when set (all must be known), else all of them."""
    if cfg.qtypes is None:
        return known
    unknown = [q for q in cfg.qtypes if q not in known]
    if unknown or not cfg.qtypes:
        raise ValueError(f"family {family!r} has no qtypes {unknown or '()'}; it has: {', '.join(known)}")
    return tuple(cfg.qtypes)


def scene_and_question(
    rng: np.random.Generator, cfg: WorldConfig, qtype: str, want_yes: bool | None
) -> tuple[Scene, Question]:
    """Scenes from the stream until one can carry the question (and the wanted answer)."""
    for _ in range(MAX_SCENES):
        scene = sample_scene(rng, cfg.width, cfg.height)
        question = ask_question(qtype, scene, rng, want_yes)
        if question is not None:
            return scene, question
    raise RuntimeError(f"no scene found for {qtype} (want_yes={want_yes})")


def make(rng: np.random.Generator, cfg: WorldConfig, split: str) -> Sample:
    qtype = choice(rng, family_qtypes(cfg, QTYPES, "scene"))
    # yes/no balance: the answer is chosen first, the question is then built to have it
    want_yes = bool(rng.random() < 0.5) if qtype in YES_NO else None
    scene, question = scene_and_question(rng, cfg, qtype, want_yes)
    text = ask(qtype, question.fields, rng, cfg.paraphrase)
    return scene_sample(scene, question, qtype, text, draw_scene(scene))


def scene_sample(scene: Scene, question: Question, qtype: str, text: str, image) -> Sample:
    """The scene family's sample: the drawn scene, the question as worded, its ground truth."""
    meta = {
        "background": scene.background,
        "noise_sigma": scene.noise_sigma,
        "fields": dict(question.fields),
        "refs": list(question.refs),
        **question.meta,
    }
    return Sample(
        family="scene",
        question=text,
        answer=question.answer,
        kind=question.kind,
        qtype=qtype,
        images=[image],
        objects=scene.records(),
        probes=question.probes,
        meta=meta,
    )
