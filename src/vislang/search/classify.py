"""Zero-shot classification with a dual encoder: the label whose prompt embedding is nearest the image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import VislangError

DEFAULT_TEMPLATES = ("a photo of a {}.",)
DEFAULT_SCALE = 100.0  # CLIP's trained logit scale ends at its cap of 100


def label_embeddings(embedder, labels: list[str], templates=DEFAULT_TEMPLATES) -> torch.Tensor:
    """One unit vector per label [L, P]: the mean over templates of its prompts' embeddings, renormalized
    (CLIP's prompt ensembling)."""
    for template in templates:
        if "{}" not in template:
            raise VislangError(f"template {template!r} has no {{}} for the label")
    prompts = [template.format(label) for label in labels for template in templates]
    text = embedder.embed(texts=prompts)["text_embeds"].float()  # [L * T, P]
    return F.normalize(text.view(len(labels), len(templates), -1).mean(1), dim=-1)


def logit_scale(embedder) -> float:
    """The model's own temperature where it has one (exp of a learned log-scale), else CLIP's."""
    scale = getattr(embedder, "logit_scale", None)
    if isinstance(scale, torch.Tensor):
        return float(scale.detach().float().exp().clamp(max=100).reshape(-1)[0])
    return DEFAULT_SCALE


def zero_shot(embedder, image, labels: list[str], templates=DEFAULT_TEMPLATES) -> dict[str, float]:
    """{label: probability} in the order given; softmax over scaled cosine of the image and each label."""
    labels = [label.strip() for label in labels if label.strip()]
    if not labels:
        raise VislangError("give at least one label to classify into")
    if len(set(labels)) != len(labels):
        raise VislangError(f"labels repeat: {labels}")
    text = label_embeddings(embedder, labels, tuple(templates) or DEFAULT_TEMPLATES)
    image_embeds = embedder.embed(images=[image])["image_embeds"].float()  # [1, P]
    probs = torch.softmax(logit_scale(embedder) * image_embeds @ text.T, dim=-1)[0]  # [L]
    return dict(zip(labels, probs.tolist()))
