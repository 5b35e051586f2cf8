"""The training loop: stages of AdamW on the projector (and LoRA adapters), checkpoints, exact resume.

Everything a step depends on is either in the checkpoint (trainable weights, optimizer moments, the
position, RNG states) or a pure function of the recipe (the data: example i of a stage is generated
from (seed, stage, i)), so a run stopped at any checkpoint continues with the very same losses.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from ..data.interleaved import INTERLEAVED, interleave, turn_count
from ..data.stream import MixtureDataset
from ..data.world import WorldConfig, generate_sample
from ..errors import VislangError
from ..models import default_qwen
from ..models.default import WEIGHTS, DefaultConfig, DefaultVLM, assemble
from ..models.flamingo import Flamingo, build_flamingo
from ..models.minigpt4 import MiniGPT4, build_minigpt4
from . import distributed
from .chat_data import chat_turns
from .lora import add_lora
from .recipe import CHAT, PSEUDO_FAMILIES, Recipe, Stage
from .report import plot_loss, write_log

log = logging.getLogger(__name__)

CHAT_SALT = zlib.crc32(b"vislang-chat-turn")  # the chat-or-world draw, apart from the mixture's own
CHECKPOINT = "checkpoint.pt"
CHAT_TURNS = "chat_turns.json"
RUNNING_MEAN = 20  # steps in the progress bar's loss


@dataclass
class TrainResult:
    model: DefaultVLM
    log: list[dict]  # one row a step, the rows of log.csv
    finished: bool  # False when max_minutes / max_steps stopped the run at a checkpoint


def lr_at(stage: Stage, step: int) -> float:
    """Linear warmup to lr over warmup_steps, then a half cosine down towards min_lr."""
    if step < stage.warmup_steps:
        return stage.lr * (step + 1) / stage.warmup_steps
    progress = (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps)
    return stage.min_lr + 0.5 * (stage.lr - stage.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def messages_for(images: list, question: str, video: bool = False) -> list[dict]:
    """One user turn: the images (for a model that reads video, its frames as one video), the question."""
    if video:
        content = [{"type": "video", "video": list(images)}]
    else:
        content = [{"type": "image", "image": image} for image in images]
    return [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]


class StageData:
    """Example i of a stage: a pure function of (recipe seed, stage index, i), so resuming needs no
    data state. Item i = (step * grad_accum + micro_batch) * batch_size + row."""

    def __init__(self, recipe: Recipe, index: int, turns: list[dict]):
        self.stage = stage = recipe.stages[index]
        self.seed = recipe.data.seed + 1000 * index  # each stage draws its own world streams
        world = {f: w for f, w in stage.families.items() if f not in PSEUDO_FAMILIES and w > 0}
        self.chat_share = stage.families.get(CHAT, 0) / sum(stage.families.values())
        self.interleaved_share = stage.families.get(INTERLEAVED, 0) / sum(stage.families.values())
        if self.chat_share > 0 and not turns:
            raise VislangError(f"stage {stage.name} asks for chat turns but there are none")
        self.mixture = MixtureDataset(world, stage.steps * stage.samples_per_step, "train", self.seed)
        side = recipe.data.image_size
        qtypes = {f: tuple(q) for f, q in stage.qtypes.items()}
        self.configs = {f: WorldConfig(side, side, stage.paraphrase, qtypes.get(f)) for f in world}
        self.turns = turns
        # Qwen2-VL's temporal patches and Flamingo's clips read a video as one; v0 sees frames
        self.reads_video = recipe.model.kind in ("qwen2vl", "flamingo")

    def world_sample(self, i: int):
        family = self.mixture.family_of(i)
        return generate_sample(family, "train", self.seed, i, self.configs[family])

    def __call__(self, i: int) -> tuple[list[dict], str]:
        draw = np.random.default_rng(np.random.SeedSequence([CHAT_SALT, self.seed, i]))
        u = draw.random()
        if u < self.chat_share:
            turn = self.turns[int(draw.integers(len(self.turns)))]
            # half the turns carry an unrelated image: an image in the prompt must not derail a text question
            images = self.world_sample(i).images[:1] if draw.random() < 0.5 else []
            return messages_for(images, turn["question"]), turn["answer"]
        if u < self.chat_share + self.interleaved_share:
            # answered turns on other samples of the stage first, then sample i asked
            earlier = [int(draw.integers(len(self.mixture))) for _ in range(turn_count(draw) - 1)]
            return interleave([self.world_turn(j) for j in [*earlier, i]])
        return self.world_turn(i)

    def world_turn(self, i: int) -> tuple[list[dict], str]:
        sample = self.world_sample(i)
        video = self.reads_video and sample.family == "video"
        return messages_for(sample.images, sample.question, video), sample.answer

    def micro_batches(self, model: DefaultVLM, step: int, device: torch.device):
        """The grad_accum micro-batches of one step, built as they are needed: of each, this process's
        rows (all of them on one process)."""
        size = self.stage.batch_size
        for m in range(self.stage.grad_accum):
            start = (step * self.stage.grad_accum + m) * size
            rows = distributed.shard_rows(range(size))
            batch = model.training_batch([self(start + row) for row in rows])
            yield {k: v.to(device) for k, v in batch.items()}


def build_model(recipe: Recipe):
    """v0: the pretrained towers with a fresh projector of the recipe's shape. v1: a Qwen2-VL around
    the packaged SmolLM2, its tower from stage 1 (the recipe's `tower`) or fresh."""
    if recipe.model.kind == "qwen2vl":
        return default_qwen.build_default(recipe.model.tower, seed=recipe.data.seed)
    if recipe.model.kind == "flamingo":
        return build_flamingo(seed=recipe.data.seed)
    if recipe.model.kind == "minigpt4":
        return build_minigpt4(seed=recipe.data.seed)
    return assemble(DefaultConfig(merge=recipe.model.merge), seed=recipe.data.seed)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """What training changes, the part a checkpoint holds."""
    if isinstance(model, DefaultVLM | Flamingo | MiniGPT4):
        return model.trainable_state()
    return default_qwen.trained_state(model)


def save_trained(model, path: Path) -> None:
    if isinstance(model, DefaultVLM | Flamingo | MiniGPT4):
        model.save_trained(path)
    else:
        default_qwen.save_default(model, path)


def load_init(model, path: str | Path) -> None:
    """Start from trained weights; adapters the file lacks keep their no-op initialisation."""
    if isinstance(model, Flamingo | MiniGPT4):
        model.load_trained(path)
        return
    if not isinstance(model, DefaultVLM):
        default_qwen.load_trained(model, path)
        return
    state = load_file(str(Path(path) / WEIGHTS))
    own = model.trainable_state()
    unknown = sorted(set(state) - set(own))
    if unknown or not state:
        raise VislangError(f"init weights in {path} do not fit this model: {unknown[:5]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)


def set_trainable(model: DefaultVLM, parts: list[str]) -> list[torch.nn.Parameter]:
    """Freeze everything but the named parts; returns the parameters left to train."""
    model.requires_grad_(False)
    params = []
    for name, p in model.named_parameters():
        if name.split(".")[0] in parts or ("lora" in parts and ".lora_" in name):
            params.append(p.requires_grad_(True))
    return params


def make_optimizer(params: list[torch.nn.Parameter], stage: Stage) -> torch.optim.AdamW:
    # no weight decay on biases: decay there only pulls offsets to zero
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": stage.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=stage.lr, betas=(0.9, 0.95))


def answer_tokens(batch: dict) -> int:
    """The positions the loss averages over: labels shifted by one, -100 left out (see answer_loss)."""
    return int((batch["labels"][:, 1:] != -100).sum())


def train_step(
    model: torch.nn.Module, optimizer, batches: Iterable[dict], lr: float, clip: float = 1.0
) -> float:
    """One optimizer step over micro-batches (gradients accumulated); returns their mean loss.

    model may be wrapped in DDP, each process holding some rows of every micro-batch: weighting its
    loss by its share of the answer tokens makes the step the one-process step (distributed.token_weights).
    """
    batches = list(batches)
    for group in optimizer.param_groups:
        group["lr"] = lr
    weights = distributed.token_weights([answer_tokens(b) for b in batches])  # 1.0 on one process
    total = 0.0
    for i, (batch, weight) in enumerate(zip(batches, weights)):
        with distributed.grad_sync(model, last=i + 1 == len(batches)):
            with torch.autocast("cuda", torch.bfloat16, enabled=batch["input_ids"].is_cuda):
                loss = model(**batch).loss * weight / len(batches)
            loss.backward()
        total += loss.item()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return distributed.reduce_mean(total)


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file, then rename: a crash mid-write leaves the previous checkpoint whole."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def restore(model: DefaultVLM, path: Path, recipe: Recipe) -> dict:
    """Load a checkpoint's weights and RNG states into place; returns it for the rest.

    Rank 0 reads it and hands it to the others: every process resumes from the same state.
    """
    main = distributed.is_main()
    ckpt = torch.load(path, map_location="cpu", weights_only=False) if main else None  # holds numpy RNG state
    ckpt = distributed.from_main(ckpt)

    def same(a: dict, b: dict) -> bool:
        return {k: v for k, v in a.items() if k != "checkpoint_minutes"} == {
            k: v for k, v in b.items() if k != "checkpoint_minutes"
        }

    if not same(ckpt["recipe"], recipe.to_dict()):
        log.warning("the recipe differs from the one the checkpoint was trained with")
    own = trainable_state(model)
    if set(ckpt["trainable"]) != set(own):
        odd = sorted(set(ckpt["trainable"]) ^ set(own))[:5]
        raise VislangError(f"{path} does not fit the model: {odd}")
    model.load_state_dict(ckpt["trainable"], strict=False)
    set_rng_states(ckpt["rng"])
    log.info("resuming %s at stage %d step %d", path.parent, ckpt["stage"], ckpt["step"])
    return ckpt


def pick_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("no CUDA device: training on the CPU")
        return torch.device("cpu")
    return torch.device(name)


def show_progress(progress: bool) -> bool:
    return progress and not os.environ.get("CI") and sys.stderr.isatty()


def prepare(model: DefaultVLM | None, recipe: Recipe, out: Path) -> tuple[DefaultVLM, list[dict]]:
    """The model as stage one starts it: chat answers distilled first, while the LM is still untouched."""
    model = model if model is not None else build_model(recipe)
    if isinstance(model, DefaultVLM) and model.cfg.merge != recipe.model.merge:
        raise VislangError(
            f"the model merges {model.cfg.merge}x{model.cfg.merge}, the recipe says {recipe.model.merge}"
        )
    uses_chat = any(s.families.get(CHAT, 0) > 0 for s in recipe.stages)
    turns = chat_turns(model, out / CHAT_TURNS) if uses_chat and distributed.is_main() else []
    turns = distributed.from_main(turns)  # distilled (or read) once, by rank 0
    torch.manual_seed(recipe.data.seed)  # the adapters' initialisation
    spec = recipe.model
    if spec.lora_rank:
        add_lora(model.language_model, spec.lora_targets, spec.lora_rank, spec.lora_alpha)
        model.cfg.lora_rank, model.cfg.lora_alpha = spec.lora_rank, spec.lora_alpha
        model.cfg.lora_targets = list(spec.lora_targets)
    if spec.init:
        load_init(model, spec.init)
    return model, turns


def train(
    recipe: Recipe,
    out_dir: str | Path,
    resume: bool = False,
    device: str = "cpu",
    max_minutes: float | None = None,
    progress: bool = True,
    model: DefaultVLM | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train `recipe` into out_dir (checkpoint.pt, log.csv, loss.png, trained/).

    model: train this one instead of assembling the default model (tests). max_minutes / max_steps:
    stop cleanly at a checkpoint after that much time / that many steps in this call.
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    dev = distributed.init(pick_device(device))  # under torchrun: joins the other processes
    # rank 0 alone reads and writes the run directory: the other ranks may be on other machines
    main = distributed.is_main()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt_path.exists() and not resume:
            raise VislangError(f"{out} already holds a run: resume it (--resume) or pick another --out")
        if resume and not ckpt_path.exists():
            raise VislangError(f"nothing to resume: no {CHECKPOINT} in {out}")
    for stage in recipe.stages:
        distributed.check_split(stage.batch_size, f"stage {stage.name}")
    model, turns = prepare(model, recipe, out)
    model.to(dev).train()
    if main:
        (out / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")

    start_stage, start_step, rows, elapsed0, opt_state = 0, 0, [], 0.0, None
    if resume:
        ckpt = restore(model, ckpt_path, recipe)
        start_stage, start_step, rows = ckpt["stage"], ckpt["step"], ckpt["log"]
        elapsed0, opt_state = ckpt["elapsed_s"], ckpt["optimizer"]
    if main:
        write_log(rows, out / "log.csv")

    t0 = last_save = time.monotonic()
    done_here = 0

    def checkpoint(stage_index: int, step: int, optimizer) -> None:
        nonlocal last_save
        if not main:
            return
        state = {
            "recipe": recipe.to_dict(),
            "stage": stage_index,
            "step": step,
            "trainable": {k: v.detach().cpu().clone() for k, v in trainable_state(model).items()},
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "rng": rng_states(),  # rank 0's; every rank restores it (no step draws per-rank randomness)
            "log": rows,
            "elapsed_s": elapsed0 + time.monotonic() - t0,
        }
        save_checkpoint(ckpt_path, state)
        plot_loss(rows, out / "loss.png")
        last_save = time.monotonic()

    def out_of_time() -> bool:
        # rank 0's clock decides for all: ranks that stopped apart would wait for each other forever
        over_time = max_minutes is not None and distributed.from_main(
            time.monotonic() - t0 >= 60 * max_minutes
        )
        return over_time or (max_steps is not None and done_here >= max_steps)

    for si in range(start_stage, len(recipe.stages)):
        stage = recipe.stages[si]
        optimizer = make_optimizer(set_trainable(model, stage.train), stage)
        first = start_step if si == start_stage else 0
        if si == start_stage and opt_state is not None:
            optimizer.load_state_dict(opt_state)
        data = StageData(recipe, si, turns)
        # DDP over the parameters this stage trains; a shard of text-only chat rows leaves the projector out
        trainer = distributed.ddp_wrap(model, find_unused_parameters=data.chat_share > 0)
        offset = sum(s.steps for s in recipe.stages[:si])
        quiet = not show_progress(progress) or not main
        bar = tqdm(total=stage.steps, initial=first, desc=stage.name, disable=quiet)
        for step in range(first, stage.steps):
            t_step = time.monotonic()
            lr = lr_at(stage, step)
            loss = train_step(trainer, optimizer, data.micro_batches(model, step, dev), lr)
            speed = stage.samples_per_step / (time.monotonic() - t_step)
            elapsed = elapsed0 + time.monotonic() - t0
            row = {"step": offset + step, "stage": stage.name, "loss": loss, "lr": lr}
            rows.append(row | {"samples_per_s": speed, "elapsed_s": elapsed})
            if main:
                write_log(rows[-1:], out / "log.csv", append=True)
            done_here += 1
            recent = [r["loss"] for r in rows[-RUNNING_MEAN:] if r["stage"] == stage.name]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", lr=f"{lr:.2e}", sps=f"{speed:.1f}")
            bar.update(1)
            last_of_stage = step + 1 == stage.steps
            due = time.monotonic() - last_save >= 60 * recipe.checkpoint_minutes
            stop = out_of_time()  # asked on every rank every step: it may talk to the other ranks
            if not last_of_stage and (due or stop):
                checkpoint(si, step + 1, optimizer)
                if stop:
                    bar.close()
                    log.info("stopped at stage %s step %d; resume to continue", stage.name, step + 1)
                    return TrainResult(model.eval(), rows, finished=False)
        bar.close()
        checkpoint(si + 1, 0, None)  # the next stage starts with a fresh optimizer
        if out_of_time() and si + 1 < len(recipe.stages):
            return TrainResult(model.eval(), rows, finished=False)

    if main:
        save_trained(model, out / "trained")
        plot_loss(rows, out / "loss.png")
        log.info("trained weights in %s", out / "trained")
    return TrainResult(model.eval(), rows, finished=True)
