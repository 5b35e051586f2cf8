"""Training on two processes: DDP over gloo, started by `vislang train --nproc 2` through torchrun's
launcher, against one process at the same global batch. The tiny random model of test_train.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_train import TURNS, tiny_model, tokenizer_path  # noqa: F401 (a fixture)
from vislang.errors import VislangError
from vislang.train import load_recipe, train
from vislang.train.cli import add_train_parser
from vislang.train.distributed import shard_rows, token_weights
from vislang.train.loop import CHAT_TURNS, CHECKPOINT, StageData
from vislang.train.report import read_log

WORKER = Path(__file__).with_name("ddp_worker.py")
# 5 steps over two stages: the projector alone, then projector and LoRA with gradient accumulation
# and text-only chat rows (a rank whose rows hold no image leaves the projector out of its forward)
RECIPE = """
[model]
lora_rank = 2
lora_alpha = 4.0

[data]
seed = 21  # a seed whose chat rows leave each rank a micro-batch without an image
image_size = 64

[[stage]]
name = "align"
steps = 2
batch_size = 4
lr = 1e-2
warmup_steps = 1
families = { scene = 1.0 }
qtypes = { scene = ["caption"] }

[[stage]]
name = "instruct"
steps = 3
batch_size = 4
grad_accum = 2
lr = 5e-3
min_lr = 1e-4
weight_decay = 0.1
train = ["projector", "lora"]
families = { scene = 0.5, text = 0.2, chat = 0.3 }
paraphrase = true
"""


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "ddp.toml"
    path.write_text(RECIPE)
    return path


def new_run(out: Path) -> Path:
    """A run directory holding the chat turns a real run would have distilled."""
    out.mkdir(parents=True)
    (out / CHAT_TURNS).write_text(json.dumps({"turns": TURNS}))
    return out


def vislang_train(tokenizer: Path, recipe: Path, out: Path, *flags: str) -> None:
    """`vislang train RECIPE --out OUT --nproc 2 FLAGS` with the tiny model, in a fresh process."""
    argv = [sys.executable, str(WORKER), str(tokenizer), "train", str(recipe), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [*argv, "--nproc", "2", *flags], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]


def losses(log: list[dict]) -> list[tuple[int, str, float]]:
    return [(r["step"], r["stage"], r["loss"]) for r in log]


@pytest.fixture(scope="module")
def one_process(tokenizer_path, recipe_path, tmp_path_factory):  # noqa: F811
    out = new_run(tmp_path_factory.mktemp("one") / "run")
    return train(load_recipe(recipe_path), out, model=tiny_model(tokenizer_path), progress=False)


@pytest.fixture(scope="module")
def two_processes(tokenizer_path, recipe_path, tmp_path_factory) -> Path:  # noqa: F811
    out = new_run(tmp_path_factory.mktemp("two") / "run")
    vislang_train(tokenizer_path, recipe_path, out)
    return out


def test_two_processes_follow_one_process(one_process, two_processes):
    ckpt = torch.load(two_processes / CHECKPOINT, weights_only=False)
    one, two = losses(one_process.log), losses(ckpt["log"])
    assert [s for s, _, _ in two] == list(range(5)) and [g for _, g, _ in two] == [g for _, g, _ in one]
    diff = max(abs(a - b) for (_, _, a), (_, _, b) in zip(one, two, strict=True))
    assert diff <= 1e-5, (one, two)
    assert one[-1][2] != one[0][2]  # the losses moved: the comparison is not between constants
    trained = one_process.model.trainable_state()
    assert set(ckpt["trainable"]) == set(trained) and any(".lora_" in k for k in trained)
    for k, v in ckpt["trainable"].items():
        torch.testing.assert_close(v, trained[k], rtol=0, atol=1e-5)
    # rank 0 alone writes: one log row a step, not one a rank
    assert [int(r["step"]) for r in read_log(two_processes / "log.csv")] == list(range(5))
    assert (two_processes / "trained").is_dir() and (two_processes / "loss.png").is_file()


def test_each_rank_builds_its_own_rows(two_processes, recipe_path, tokenizer_path):  # noqa: F811
    recipe = load_recipe(recipe_path)
    ranks = [json.loads((two_processes / f"rows-rank{r}.json").read_text()) for r in (0, 1)]
    # the one-process global micro-batches, in order: stage by stage, step by step
    whole = []
    for si, stage in enumerate(recipe.stages):
        data = StageData(recipe, si, TURNS)
        for k in range(stage.steps * stage.grad_accum):
            whole.append([data(k * stage.batch_size + row)[1] for row in range(stage.batch_size)])
    assert len(ranks[0]) == len(ranks[1]) == len(whole) == 2 + 3 * 2
    tok = tiny_model(tokenizer_path).tokenizer
    uneven = imageless = 0
    for mine, theirs, batch in zip(*ranks, whole, strict=True):
        answers = [[a for a, _ in rows] for rows in (mine, theirs)]
        assert len(mine) == len(theirs) == 2 and sorted(answers[0] + answers[1]) == sorted(batch)
        tokens = [sum(len(tok.encode(a, add_special_tokens=False)) for a in rows) for rows in answers]
        uneven += tokens[0] != tokens[1]
        imageless += sum(all(n == 0 for _, n in rows) for rows in (mine, theirs))
    assert uneven  # the ranks held unequal answer tokens: the loss's normalisation was put to the test
    assert imageless  # a rank's forward left the projector out: DDP had to find the unused parameters


def test_two_processes_resume_exactly(two_processes, tokenizer_path, recipe_path, tmp_path):  # noqa: F811
    out = new_run(tmp_path / "split")
    vislang_train(tokenizer_path, recipe_path, out, "--max-steps", "3")  # stops inside the second stage
    ckpt = torch.load(out / CHECKPOINT, weights_only=False)
    assert (ckpt["stage"], ckpt["step"], len(ckpt["log"])) == (1, 1, 3)
    vislang_train(tokenizer_path, recipe_path, out, "--resume")
    straight = torch.load(two_processes / CHECKPOINT, weights_only=False)
    resumed = torch.load(out / CHECKPOINT, weights_only=False)
    for (s1, g1, l1), (s2, g2, l2) in zip(losses(straight["log"]), losses(resumed["log"]), strict=True):
        assert (s1, g1) == (s2, g2) and l1 == pytest.approx(l2, abs=1e-6)
    for k, v in straight["trainable"].items():
        torch.testing.assert_close(resumed["trainable"][k], v, rtol=0, atol=1e-6)
    assert [int(r["step"]) for r in read_log(out / "log.csv")] == list(range(5))


def test_batch_too_small_for_the_processes_fails_before_launching(recipe_path, tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", str(recipe_path), "--out", str(tmp_path / "run"), "--nproc", "8"])
    with pytest.raises(VislangError, match="batch_size 4 cannot be split over 8 processes"):
        args.func(args)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("size, world", [(4, 2), (5, 2), (7, 3), (3, 3)])
def test_shards_cover_the_batch_once(size, world):
    shards = [shard_rows(range(size), at_rank=r, world=world) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shard_rows(range(size)) == list(range(size))  # one process: every row
    assert token_weights([3, 5]) == [1.0, 1.0]
