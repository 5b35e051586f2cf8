"""Train vislang's retrieval model (models/retrieval.py) on the world: LiT with a locked image tower.

    vislang train-retrieval --out runs/retrieval [--scenes 8000] [--steps 600]

Both towers' locked parts run once per image and per text (the features are cached under OUT, in
shards, so a stopped run resumes where it was); training then reads the cache: the image head, the
top MiniLM layer and the projections learn CLIP's contrastive loss. Texts: a scene's canonical
caption (most often) or one of its objects as a phrase ("a small red circle at the top left"), and
Fashion-MNIST / MNIST images with their label in a prompt template. A batch may hold several images
of one label, so every text of that label counts as a positive. Checkpoints every --save-every steps;
`--resume` continues bit for bit. The trained part is written to OUT/trained.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.real import FASHION_LABELS
from ..data.world import generate_sample
from ..eval.retrieval import CAPTION, DIGIT_WORDS, FASHION_TEMPLATES, recall_at_k
from ..models.retrieval import RetrievalModel, build_retrieval

log = logging.getLogger(__name__)

DIGIT_TEMPLATES = ("a photo of the digit {}.", "the number {}.", "a handwritten {}.", "a picture of a {}.")
SHARD = 500


def object_phrases(caption: str) -> list[str]:
    """The caption's objects as phrases: "Two objects: a x, and a y." -> ["a x", "a y"]."""
    body = caption.split(": ", 1)[1].rstrip(".")
    parts = [p.strip() for p in body.replace(", and ", ", ").replace(" and a ", ", a ").split(", ")]
    return [p for p in parts if p.startswith(("a ", "an "))]


def label_texts(family: str, label: int) -> list[str]:
    if family == "fashion":
        return [t.format(FASHION_LABELS[label]) for t in FASHION_TEMPLATES]
    return [
        t.format(w)
        for t, w in zip(DIGIT_TEMPLATES, (str(label), DIGIT_WORDS[label], str(label), DIGIT_WORDS[label]))
    ]


def world_items(scenes: int, fashion: int, digits: int) -> list[tuple]:
    """(family, index) of every image the run reads, in a fixed order."""
    return (
        [("scene", i) for i in range(scenes)]
        + [("fashion", i) for i in range(fashion)]
        + [("digits", i) for i in range(digits)]
    )


def make_item(family: str, split: str, index: int, seed: int):
    """(image, texts, group): a scene's caption first then its object phrases; a label image's prompts.
    group: -1 for a scene (its texts are its own), else a label id shared by images of one class."""
    if family == "scene":
        s = generate_sample("scene", split, seed, index, CAPTION)
        return s.images[0], [s.answer, *object_phrases(s.answer)], -1
    s = generate_sample(family, split, seed, index)
    label = s.meta["label"]
    offset = 0 if family == "fashion" else 10
    return s.images[0], label_texts(family, label), offset + label


def cache_features(
    model: RetrievalModel, out: Path, split: str, items: list[tuple], seed: int, progress: bool
):
    """Shards of locked image grids (fp16) and the texts of each image, written once."""
    out.mkdir(parents=True, exist_ok=True)
    for start in tqdm(range(0, len(items), SHARD), desc=f"features {split}", disable=not progress):
        path = out / f"{split}-{start:06d}.pt"
        if path.is_file():
            continue
        chunk = [make_item(f, split, i, seed) for f, i in items[start : start + SHARD]]
        grids = []
        for j in range(0, len(chunk), 50):
            pixels = model.image_transform.batch([c[0] for c in chunk[j : j + 50]])
            grids.append(model.image_grid(pixels).half())
        texts = [c[1] for c in chunk]
        flat = [t for ts in texts for t in ts]
        locked = []  # each text's states after MiniLM's locked layers, real tokens only
        for j in range(0, len(flat), 128):
            batch = model.tokenize(flat[j : j + 128])
            states = model.text_locked(batch["input_ids"], batch["attention_mask"]).half()
            locked += [s[: int(n)] for s, n in zip(states, batch["attention_mask"].sum(1))]
        shard = {"grids": torch.cat(grids), "texts": texts, "groups": [c[2] for c in chunk], "locked": locked}
        torch.save(shard, str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)


def load_cache(out: Path, split: str) -> tuple[torch.Tensor, list[list[str]], list[int], dict]:
    """Image grids, each image's texts and group, and every text's locked MiniLM states."""
    grids, texts, groups, locked = [], [], [], {}
    for path in sorted(out.glob(f"{split}-*.pt")):
        shard = torch.load(path, weights_only=True)
        grids.append(shard["grids"])
        texts += shard["texts"]
        groups += shard["groups"]
        locked.update(zip((t for ts in shard["texts"] for t in ts), shard["locked"]))
    return torch.cat(grids), texts, groups, locked


def pick_texts(texts: list[list[str]], groups: list[int], rows: np.ndarray, rng, phrase_p: float):
    """One text per image and the positives mask [B, B] (image i matches text j)."""
    chosen = []
    for r in rows:
        options = texts[r]
        if groups[r] >= 0:
            chosen.append(options[int(rng.integers(len(options)))])
        elif len(options) > 1 and rng.random() < phrase_p:
            chosen.append(options[1 + int(rng.integers(len(options) - 1))])
        else:
            chosen.append(options[0])
    g = torch.tensor([groups[r] for r in rows])
    positive = torch.eye(len(rows), dtype=torch.bool) | ((g[:, None] == g[None, :]) & (g[:, None] >= 0))
    # a repeated phrase (two scenes with "a small red circle at the top") is a positive for both
    same_text = torch.tensor([[a == b for b in chosen] for a in chosen])
    return chosen, positive | same_text


def contrastive_loss(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy with the target spread evenly over each row's positives."""
    target = positive.float() / positive.float().sum(1, keepdim=True)
    target_t = positive.T.float() / positive.T.float().sum(1, keepdim=True)
    return 0.5 * (
        -(target * logits.log_softmax(1)).sum(1).mean() - (target_t * logits.T.log_softmax(1)).sum(1).mean()
    )


def text_batch(model: RetrievalModel, texts: list[str], locked: dict) -> torch.Tensor:
    """Text embeddings from cached locked states: only the trained layers run."""
    rows = [locked[t] for t in texts]
    width = max(len(r) for r in rows)
    states = rows[0].new_zeros(len(rows), width, rows[0].shape[-1], dtype=torch.float32)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        states[i, : len(r)], mask[i, : len(r)] = r.float(), 1
    return model.text_from_locked(states, mask)


@torch.inference_mode()
def recall_at(model: RetrievalModel, grids: torch.Tensor, captions: list[str], locked: dict) -> dict:
    """Recall@1/5/10 both ways from cached features, one caption per image."""
    model.eval()
    img = torch.cat([model.image_from_grid(grids[i : i + 256].float()) for i in range(0, len(grids), 256)])
    txt = torch.cat([text_batch(model, captions[i : i + 256], locked) for i in range(0, len(captions), 256)])
    return recall_at_k(F.normalize(img, dim=-1), F.normalize(txt, dim=-1))


@dataclass
class RetrievalRun:
    """What `train_retrieval` does (`vislang train-retrieval` takes each as a flag)."""

    out: Path
    scenes: int = 8000
    fashion: int = 1500
    digits: int = 1500
    eval_scenes: int = 1000
    steps: int = 600
    batch_size: int = 256
    lr: float = 1e-3
    text_lr: float = 1e-4
    phrase_p: float = 0.2
    seed: int = 0
    save_every: int = 50
    resume: bool = False
    stop_at: int | None = None  # stop (with a checkpoint) at this step


def train_retrieval(args: RetrievalRun) -> dict | None:
    """Train (or continue) a run; its held-out recall when it finished, None when it stopped early."""
    args.out = Path(args.out)
    progress = not os.environ.get("CI")

    model = build_retrieval(seed=args.seed)
    feats = args.out / "features"
    train_items = world_items(args.scenes, args.fashion, args.digits)
    cache_features(model, feats, "train", train_items, args.seed, progress)
    cache_features(model, feats, "test", world_items(args.eval_scenes, 0, 0), args.seed, progress)
    grids, texts, groups, locked = load_cache(feats, "train")
    test_grids, test_texts, _, test_locked = load_cache(feats, "test")
    test_captions = [t[0] for t in test_texts]

    head = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("text.")]
    tower = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("text.")]
    opt = torch.optim.AdamW(
        [{"params": head, "lr": args.lr}, {"params": tower, "lr": args.text_lr}], weight_decay=0.05
    )
    base_lrs = [g["lr"] for g in opt.param_groups]
    ckpt, step = args.out / "checkpoint.pt", 0
    rng = np.random.default_rng(args.seed)
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["optimizer"])
        step, rng = state["step"], state["rng"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed at step %d", step)
    model.train()
    bar = tqdm(total=args.steps, initial=step, desc="train", disable=not progress)
    stop = args.steps if args.stop_at is None else min(args.stop_at, args.steps)
    while step < stop:
        warm = min(1.0, (step + 1) / 30)
        decay = 0.5 * (1 + np.cos(np.pi * step / args.steps))
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * warm * decay
        rows = rng.choice(len(grids), size=args.batch_size, replace=False)
        chosen, positive = pick_texts(texts, groups, rows, rng, args.phrase_p)
        img = F.normalize(model.image_from_grid(grids[torch.from_numpy(rows)].float()), dim=-1)
        txt = F.normalize(text_batch(model, chosen, locked), dim=-1)
        loss = contrastive_loss(model.logits(img, txt), positive)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*head, *tower], 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        if step % 25 == 0:
            log.info("step %d loss %.4f", step, loss.item())
        if step % args.save_every == 0 or step == stop:
            trained = {k: v for k, v in model.state_dict().items() if k in model.trainable_state()}
            state = {
                "model": trained,
                "optimizer": opt.state_dict(),
                "step": step,
                "rng": rng,
                "torch_rng": torch.get_rng_state(),
            }
            torch.save(state, str(ckpt) + ".tmp")
            os.replace(str(ckpt) + ".tmp", ckpt)
    bar.close()
    if step < args.steps:
        log.info("stopped at step %d of %d; continue with --resume", step, args.steps)
        return None
    model.eval()
    model.save_trained(args.out / "trained")
    return recall_at(model, test_grids, test_captions, test_locked)


if __name__ == "__main__":  # the same command as `vislang train-retrieval`
    from ..cli import main

    sys.exit(main(["train-retrieval", *sys.argv[1:]]))
