"""Stage 1 of the default model: the Qwen2-VL vision tower learns to see from the world's dense ground truth.

No language model is in the loop: small heads (tower_heads.py) read per-patch and whole-image labels
(dense_targets.py, batched by tower_data.py) off the tower's patch features, so a step costs the tower
alone and a 2-core CPU sees hundreds of thousands of images. Sample i of the stream is a pure function
of (seed, i), and everything else a step depends on is in the checkpoint, so a resumed run repeats the
very same losses.

vislang train-tower --out runs/tower --steps 20000 --max-minutes 60
vislang train-tower --out runs/tower --resume

The run leaves tower.safetensors (keys exactly QwenVisionTransformer's, for a Qwen2-VL's `vision`),
heads.safetensors, tower_config.json, log.csv (losses and metrics a step), loss.png and eval.json.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ..config import QwenVisionConfig
from ..errors import VislangError
from ..models.default_qwen import VISION
from ..vision import QwenVisionTransformer
from .dense_targets import IMAGE_CLASSES, PATCH_CLASSES
from .loop import (
    lr_at,
    make_optimizer,
    pick_device,
    rng_states,
    save_checkpoint,
    set_rng_states,
    show_progress,
)
from .report import plot_loss, write_log
from .tower_data import TowerBatch, TowerData, collate
from .tower_heads import TowerHeads, add_counts, ratios, tower_counts, tower_losses

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
TOWER_WEIGHTS, HEAD_WEIGHTS, TOWER_CONFIG = "tower.safetensors", "heads.safetensors", "tower_config.json"
LOSS_NAMES = ("loss", *PATCH_CLASSES, "box", *IMAGE_CLASSES)
METRICS = ("color_acc", "shape_acc", "size_acc", "motion_acc", "centre_f1", "centre_count_acc", "box_l1")
METRICS += ("sign_acc", "letter_acc", "layout_acc", "count_acc", "color_count_acc", "shape_count_acc")
METRICS += ("fashion_acc", "digit_acc")
COLUMNS = ("step", "lr", *LOSS_NAMES, *METRICS, "images", "images_per_s", "elapsed_s")


def default_vision() -> QwenVisionConfig:
    """The default model's tower; its merger, not trained here, maps to SmolLM2's width."""
    return dataclasses.replace(VISION)


@dataclass
class TowerConfig:
    vision: QwenVisionConfig = field(default_factory=default_vision)
    steps: int = 20000
    batch_size: int = 32  # samples a step; a multi sample is two images
    lr: float = 5e-4  # lr, min_lr, warmup_steps, weight_decay: the names loop.lr_at / make_optimizer read
    min_lr: float = 5e-5
    warmup_steps: int = 500
    weight_decay: float = 0.05
    clip: float = 1.0
    head_hidden: int = 256
    pool_queries: int = 4
    families: dict[str, float] = field(
        default_factory=lambda: {
            "scene": 0.35, "text": 0.15, "multi": 0.1, "video": 0.15,
            "document": 0.08, "ui": 0.07, "fashion": 0.05, "digits": 0.05,
        }
    )  # fmt: skip
    # [W, H] canvases, one drawn a sample; the tower is native-resolution, mixed sizes teach it so
    sizes: list[list[int]] = field(default_factory=lambda: [[224, 224]])
    video_pairs: int = 1  # temporal patches (frame pairs) kept of a video: the tower sees each pair alone
    loss_weights: dict[str, float] = field(default_factory=lambda: {"box": 2.0})  # the rest weigh 1
    min_pixels: int = 112 * 112  # the processor's bounds, as the default model's
    max_pixels: int = 448 * 448
    seed: int = 0
    checkpoint_minutes: float = 10.0
    bf16: bool = True  # autocast matmuls to bfloat16: 1.7x faster on a CPU with avx512_bf16
    eval_samples: int = 256  # val samples scored at the end (eval.json)
    init: str | None = None  # a run directory (or assets folder) whose tower and heads this run starts from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TowerConfig:
        d = dict(d)
        d["vision"] = QwenVisionConfig(**d["vision"])
        return cls(**d)


def build(cfg: TowerConfig) -> tuple[QwenVisionTransformer, TowerHeads]:
    """A fresh tower and heads, drawn from cfg.seed: truncated normal 0.02 weights (residual outputs scaled
    down with depth, as GPT-2), zero biases, unit norms."""
    torch.manual_seed(cfg.seed)
    tower = QwenVisionTransformer(cfg.vision)
    heads = TowerHeads(cfg.vision.width, cfg.head_hidden, cfg.pool_queries)
    for module in (tower, heads):
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                residual = name.endswith(("attn.proj.weight", "mlp.fc2.weight"))
                std = 0.02 / math.sqrt(2 * cfg.vision.depth) if residual else 0.02
                torch.nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
            elif name.endswith("bias"):
                torch.nn.init.zeros_(p)
    return tower, heads


def warm_start(tower: QwenVisionTransformer, heads: TowerHeads, folder: Path) -> None:
    """Weights of an earlier run (a new schedule and optimizer: a continuation, not a resume)."""
    from safetensors.torch import load_file

    tower.load_state_dict({k: v.float() for k, v in load_file(str(folder / TOWER_WEIGHTS)).items()})
    if (folder / HEAD_WEIGHTS).is_file():
        heads.load_state_dict({k: v.float() for k, v in load_file(str(folder / HEAD_WEIGHTS)).items()})
    log.info("starting from the tower in %s", folder)


def forward(tower, heads, batch: TowerBatch, bf16: bool) -> dict:
    dev = batch.pixel_values.device
    with torch.autocast(dev.type, torch.bfloat16, enabled=bf16):
        features = tower(batch.pixel_values, batch.grid_thw)  # [N, width]
        return heads(features, batch.lengths)


@dataclass
class TowerResult:
    tower: QwenVisionTransformer
    heads: TowerHeads
    log: list[dict]  # the rows of log.csv
    finished: bool  # False when max_minutes / max_steps stopped the run at a checkpoint
    metrics: dict[str, float] | None = None  # eval.json: val metrics of the finished run


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """safetensors, written to a temporary file and renamed: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@torch.no_grad()
def evaluate(
    tower, heads, cfg: TowerConfig, samples: int | None = None, device: str = "cpu"
) -> dict[str, float]:
    """Metrics over the first `samples` val samples of the mixture (never trained on). In fp32: the
    tower's no-grad linears skip autocast, which its attention's bf16 output does not mix with."""
    samples = samples or cfg.eval_samples
    data, total = TowerData(cfg, "val", samples), {}
    was_training = tower.training
    tower.eval()
    heads.eval()
    for start in range(0, samples, cfg.batch_size):
        items = [it for i in range(start, min(samples, start + cfg.batch_size)) for it in data.items(i)]
        batch = collate(items, data.patches).to(pick_device(device))
        add_counts(
            total,
            tower_counts(forward(tower, heads, batch, bf16=False), batch.patch, batch.image, batch.lengths),
        )
    tower.train(was_training)
    heads.train(was_training)
    return ratios(total)


def train_tower(
    cfg: TowerConfig,
    out_dir: str | Path,
    resume: bool = False,
    device: str = "cpu",
    max_minutes: float | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> TowerResult:
    """Train the tower into out_dir; max_minutes / max_steps stop this call cleanly at a checkpoint."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise VislangError(f"{out} already holds a run: resume it (--resume) or pick another --out")
    if resume and not ckpt_path.exists():
        raise VislangError(f"nothing to resume: no {CHECKPOINT} in {out}")
    dev = pick_device(device)
    tower, heads = build(cfg)
    tower.to(dev).train()
    heads.to(dev).train()
    if cfg.init and not resume:
        warm_start(tower, heads, Path(cfg.init))
    params = [*tower.parameters(), *heads.parameters()]
    optimizer = make_optimizer(params, cfg)
    start, rows, elapsed0 = 0, [], 0.0
    if resume:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # ours: holds numpy RNG state
        if ckpt["config"] != cfg.to_dict():
            log.warning("the config differs from the one the checkpoint was trained with")
        tower.load_state_dict(ckpt["tower"])
        heads.load_state_dict(ckpt["heads"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_states(ckpt["rng"])
        start, rows, elapsed0 = ckpt["step"], ckpt["log"], ckpt["elapsed_s"]
        log.info("resuming %s at step %d", out, start)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    write_log(rows, out / "log.csv", columns=COLUMNS)
    data = TowerData(cfg)
    t0 = last_save = time.monotonic()

    def checkpoint(step: int) -> None:
        nonlocal last_save
        state = {
            "config": cfg.to_dict(),
            "step": step,
            "tower": {k: v.detach().cpu().clone() for k, v in tower.state_dict().items()},
            "heads": {k: v.detach().cpu().clone() for k, v in heads.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "rng": rng_states(),
            "log": rows,
            "elapsed_s": elapsed0 + time.monotonic() - t0,
        }
        save_checkpoint(ckpt_path, state)
        # the weights as they stand, ready for stage 2 whether or not the run goes on
        save_weights(tower, out / TOWER_WEIGHTS)
        save_weights(heads, out / HEAD_WEIGHTS)
        (out / TOWER_CONFIG).write_text(json.dumps(cfg.vision.to_hf(), indent=2) + "\n")
        plot_loss([{"step": r["step"], "loss": r["loss"], "stage": "tower"} for r in rows], out / "loss.png")
        last_save = time.monotonic()

    def out_of_time(done: int) -> bool:
        over = max_minutes is not None and time.monotonic() - t0 >= 60 * max_minutes
        return over or (max_steps is not None and done >= max_steps)

    bar = tqdm(total=cfg.steps, initial=start, desc="tower", disable=not show_progress(progress))
    for step in range(start, cfg.steps):
        t_step = time.monotonic()
        lr = lr_at(cfg, step)  # cfg has the fields of a Stage that lr_at reads
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = data.batch(step).to(dev)
        out_heads = forward(tower, heads, batch, cfg.bf16)
        losses = tower_losses(out_heads, batch.patch, batch.image, cfg.loss_weights)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        metrics = ratios(tower_counts(out_heads, batch.patch, batch.image, batch.lengths))
        seconds = time.monotonic() - t_step
        row = {"step": step, "lr": lr, **{k: v.item() for k, v in losses.items()}, **metrics}
        row |= {"images": len(batch.lengths), "images_per_s": len(batch.lengths) / seconds}
        rows.append(row | {"elapsed_s": elapsed0 + time.monotonic() - t0})
        write_log(rows[-1:], out / "log.csv", append=True, columns=COLUMNS)
        bar.set_postfix(loss=f"{row['loss']:.3f}", color=f"{metrics.get('color_acc', math.nan):.2f}")
        bar.update(1)
        done = step + 1 - start
        if step + 1 < cfg.steps and (
            time.monotonic() - last_save >= 60 * cfg.checkpoint_minutes or out_of_time(done)
        ):
            checkpoint(step + 1)
            if out_of_time(done):
                bar.close()
                log.info("stopped at step %d; resume to continue", step + 1)
                return TowerResult(tower.eval(), heads.eval(), rows, finished=False)
    bar.close()
    checkpoint(cfg.steps)
    metrics = evaluate(tower, heads, cfg, device=device) if cfg.eval_samples else None
    if metrics is not None:
        (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("tower weights in %s", out / TOWER_WEIGHTS)
    return TowerResult(tower.eval(), heads.eval(), rows, finished=True, metrics=metrics)


def parse_families(text: str) -> dict[str, float]:
    """ "scene=0.5,text=0.2" -> {"scene": 0.5, "text": 0.2}."""
    pairs = [part.split("=") for part in text.split(",") if part]
    return {name.strip(): float(weight) for name, weight in pairs}


if __name__ == "__main__":  # the same command as `vislang train-tower`
    from ..cli import main

    sys.exit(main(["train-tower", *sys.argv[1:]]))
