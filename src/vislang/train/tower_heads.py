"""Heads that read the dense targets off the vision tower's patch features, their masked losses, and metrics.

The heads are small on purpose: whatever they need must already be in the tower's features, which is
what the language model will get (through the merger) once stage 1 is over. Per-patch heads share
one hidden layer; whole-image heads read a few attention-pooled summaries of each image's patches.
Every target is IGNORE (NaN for boxes) where its family cannot know it, and the losses skip those.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dense_targets import IGNORE, IMAGE_CLASSES, PATCH_CLASSES

OBJECT_HEADS = ("color", "shape", "size", "motion")  # scored on object cells only
# Heads trained on object (sign) cells alone: averaged over every cell, the many easy background cells
# drown the few that hold the answer (shape stayed at chance for 9,000 images that way). The colour
# head keeps the background class: it is the objectness the others lean on.
INSIDE = {"shape": "object", "size": "object", "motion": "object", "letter": "sign"}
# Centres are ~1.5% of a scene's cells: unweighted, the head learns to find none (F1 0 after 230 steps)
CENTRE_WEIGHT = 10.0


class PatchHeads(nn.Module):
    """Patch features [N, D] -> {name: logits [N, classes]} and "box" [N, 4]."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.trunk = nn.Sequential(nn.Linear(width, hidden), nn.GELU())
        self.classify = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in PATCH_CLASSES.items()})
        self.box = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(self.norm(x))
        return {name: head(h) for name, head in self.classify.items()} | {"box": self.box(h)}


class ImageHeads(nn.Module):
    """Patch features [N, D] of several images -> {name: logits [B, counters, classes]}.

    Each image is summarised by `queries` learned softmax-weighted averages of its patches (attention
    pooling): one query can learn to look at red cells, another at stars, and counts follow from
    the weights' mass. Images are segments of the packed sequence, `lengths` patches each.
    """

    def __init__(self, width: int, hidden: int, queries: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.score = nn.Linear(width, queries)
        self.value = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(queries * width, hidden), nn.GELU())
        self.classify = nn.ModuleDict(
            {name: nn.Linear(hidden, n * c) for name, (n, c) in IMAGE_CLASSES.items()}
        )

    def pool(self, x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        x = self.norm(x)
        scores, values = self.score(x).float(), self.value(x).float()  # [N, Q], [N, D]
        pooled = [
            s.softmax(0).T @ v for s, v in zip(scores.split(lengths), values.split(lengths))
        ]  # [Q, D] each
        return torch.stack(pooled).flatten(1)  # [B, Q * D]

    def forward(self, x: torch.Tensor, lengths: list[int]) -> dict[str, torch.Tensor]:
        h = self.mlp(self.pool(x, lengths).to(x.dtype))
        return {
            name: head(h).view(len(lengths), *IMAGE_CLASSES[name]) for name, head in self.classify.items()
        }


class TowerHeads(nn.Module):
    def __init__(self, width: int, hidden: int, queries: int = 4):
        super().__init__()
        self.patch = PatchHeads(width, hidden)
        self.image = ImageHeads(width, hidden, queries)

    def forward(self, features: torch.Tensor, lengths: list[int]) -> dict[str, dict[str, torch.Tensor]]:
        return {"patch": self.patch(features), "image": self.image(features, lengths)}


def tower_losses(out: dict, patch: dict, image: dict, weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """Each head's mean loss over the targets it has in this batch; "loss" is their weighted sum.

    A head with no target in the batch has no entry (and no gradient), rather than a zero that
    would drag the logged mean.
    """
    losses = {}
    objects, signs = patch["shape"] > 0, patch["sign"] == 1
    for name in PATCH_CLASSES:
        target = patch[name]
        if name in INSIDE:  # learnt only where there is something to tell
            target = torch.where(objects if INSIDE[name] == "object" else signs, target, IGNORE)
        if (target != IGNORE).any():
            logits = out["patch"][name].float()
            weight = torch.tensor([1.0, CENTRE_WEIGHT], device=logits.device) if name == "centre" else None
            losses[name] = F.cross_entropy(logits, target, weight, ignore_index=IGNORE)
    box = patch["box"]
    valid = ~box[:, 0].isnan()
    if valid.any():
        losses["box"] = F.l1_loss(out["patch"]["box"].float()[valid], box[valid])
    for name, (_, classes) in IMAGE_CLASSES.items():
        target = image[name].flatten()  # [B * counters]
        if (target != IGNORE).any():
            logits = out["image"][name].float().reshape(-1, classes)
            losses[name] = F.cross_entropy(logits, target, ignore_index=IGNORE)
    total = sum(weights.get(name, 1.0) * loss for name, loss in losses.items())
    return {"loss": total, **losses}


@torch.no_grad()
def tower_counts(out: dict, patch: dict, image: dict, lengths: list[int]) -> dict[str, tuple[float, float]]:
    """Metrics as (numerator, denominator) pairs, so that batches add up: accuracies, centre F1
    (2 TP over 2 TP + FP + FN), counting by centres, and the box L1 error."""
    counts: dict[str, tuple[float, float]] = {}

    def add(name: str, hits: torch.Tensor, mask: torch.Tensor) -> None:
        if mask.any():
            counts[name] = (float((hits & mask).sum()), float(mask.sum()))

    pred = {name: out["patch"][name].argmax(-1) for name in PATCH_CLASSES}
    objects = patch["shape"] > 0
    for name in OBJECT_HEADS:
        add(f"{name}_acc", pred[name] == patch[name], objects & (patch[name] != IGNORE))
    add("letter_acc", pred["letter"] == patch["letter"], patch["letter"] > 0)
    for name in ("sign", "layout"):
        add(f"{name}_acc", pred[name] == patch[name], patch[name] != IGNORE)
    known = patch["centre"] != IGNORE
    if known.any():
        truth, guess = patch["centre"] == 1, pred["centre"] == 1
        tp, wrong = float((truth & guess & known).sum()), float(((truth ^ guess) & known).sum())
        counts["centre_f1"] = (2 * tp, 2 * tp + wrong)
        # counting by centres: an image is right when it has as many predicted centres as objects
        per_image = [
            (int((g & k).sum()), int((t & k).sum()), bool(k.any()))
            for g, t, k in zip(guess.split(lengths), truth.split(lengths), known.split(lengths))
        ]
        right = sum(g == t for g, t, k in per_image if k)
        counts["centre_count_acc"] = (float(right), float(sum(k for _, _, k in per_image)))
    box = patch["box"]
    valid = ~box[:, 0].isnan()
    if valid.any():
        err = (out["patch"]["box"].float()[valid] - box[valid]).abs().mean(-1)
        counts["box_l1"] = (float(err.sum()), float(valid.sum()))
    for name in IMAGE_CLASSES:
        target = image[name]
        add(f"{name}_acc", out["image"][name].argmax(-1) == target, target != IGNORE)
    return counts


def ratios(counts: dict[str, tuple[float, float]]) -> dict[str, float]:
    return {name: num / den for name, (num, den) in counts.items() if den > 0}


def add_counts(total: dict, counts: dict) -> dict:
    for name, (num, den) in counts.items():
        n0, d0 = total.get(name, (0.0, 0.0))
        total[name] = (n0 + num, d0 + den)
    return total
