"""`vislang train RECIPE`: train the default model from a TOML recipe; `vislang train-tower` (its
vision tower from the world's dense labels) and `vislang train-retrieval` (the retrieval model).

vislang train recipes/default.toml --out runs/default
vislang train recipes/default.toml --out runs/default --resume --max-minutes 50
vislang train recipes/default.toml --out runs/default --nproc 4      # DDP over 4 local processes

--nproc N starts N processes through torchrun's launcher, each running this same command; under
torchrun (started by `--nproc` or by hand, across machines: see distributed.py) it trains as one rank.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from . import distributed

PROGRAM = ["-m", "vislang"]  # what each process runs, followed by the train arguments


def worker_argv(args, out: Path) -> list[str]:
    """The command line each launched process runs: this one, with the run directory spelled out."""
    argv = ["--verbose"] if getattr(args, "verbose", False) else []
    argv += ["train", args.recipe, "--out", str(out), "--device", args.device]
    argv += ["--resume"] if args.resume else []
    argv += ["--max-minutes", str(args.max_minutes)] if args.max_minutes is not None else []
    argv += ["--max-steps", str(args.max_steps)] if args.max_steps is not None else []
    return argv


def cmd_train(args) -> int:
    from .loop import train
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    steps = recipe.total_steps
    if args.nproc > 1 and not distributed.launched():
        for stage in recipe.stages:  # before starting anything
            distributed.check_split(stage.batch_size, f"stage {stage.name}", args.nproc)
        print(f"training {args.recipe} on {args.nproc} processes -> {out}", file=sys.stderr)
        return distributed.launch(args.nproc, [*PROGRAM, *worker_argv(args, out)])

    main = distributed.is_main()  # one process reports for all
    if main:
        logging.getLogger("vislang.train").setLevel(logging.INFO)  # distilling, resuming, stopping
        print(f"training {args.recipe}: {len(recipe.stages)} stages, {steps} steps -> {out}", file=sys.stderr)
    try:
        result = train(
            recipe, out, resume=args.resume, device=args.device, max_minutes=args.max_minutes,
            max_steps=args.max_steps,
        )  # fmt: skip
    finally:
        distributed.shutdown()
    if not main:
        return 0
    if result.finished:
        print(f"done: trained weights in {out / 'trained'}; log in {out / 'log.csv'}")
    else:
        print(f"stopped at a checkpoint after {len(result.log)} of {steps} steps; continue with --resume")
    return 0


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train the default model's projector from a TOML recipe")
    parser.add_argument("recipe", help="a recipe file, e.g. recipes/default.toml")
    parser.add_argument("--out", default=None, help="run directory (default: runs/<recipe name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop cleanly at a checkpoint after this long"
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="stop cleanly at a checkpoint after this many steps"
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda when one is available")
    parser.add_argument(
        "--nproc", type=int, default=1,
        help="processes on this machine (DDP through torchrun; one GPU each with --device cuda)",
    )  # fmt: skip
    parser.set_defaults(func=cmd_train)
    return parser


def cmd_train_tower(args) -> int:
    import torch

    from .tower import TowerConfig, default_vision, train_tower

    logging.getLogger("vislang").setLevel(logging.INFO)  # a long run reports its progress
    d, v = TowerConfig(), default_vision()
    if args.threads:
        torch.set_num_threads(args.threads)
    vision = dataclasses.replace(v, depth=args.depth, embed_dim=args.width, num_heads=args.heads)
    cfg = dataclasses.replace(
        d, vision=vision, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=min(args.warmup_steps, args.steps), checkpoint_minutes=args.checkpoint_minutes,
        families=args.families or d.families, sizes=[list(s) for s in args.size] if args.size else d.sizes,
        seed=args.seed, bf16=not args.fp32, eval_samples=args.eval_samples, head_hidden=args.width,
        init=args.init,
    )  # fmt: skip
    out = Path(args.out)
    if args.resume and (out / "config.json").exists():  # the run's own config, not the flags' defaults
        cfg = TowerConfig.from_dict(json.loads((out / "config.json").read_text()))
    result = train_tower(cfg, out, args.resume, args.device, args.max_minutes, args.max_steps)
    if result.finished:
        print(json.dumps(result.metrics, indent=2))
    else:
        print(f"stopped after step {len(result.log)} of {cfg.steps}; continue with --resume", file=sys.stderr)
    return 0


def add_tower_parser(subparsers) -> argparse.ArgumentParser:
    from .tower import TowerConfig, default_vision, parse_families

    d, v = TowerConfig(), default_vision()
    p = subparsers.add_parser(
        "train-tower", help="stage 1: the Qwen2-VL vision tower learns the world's labels"
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument(
        "--max-minutes", type=float, default=None, help="stop cleanly at a checkpoint after this long"
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop cleanly after this many steps in this call"
    )
    p.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes)
    p.add_argument("--depth", type=int, default=v.depth)
    p.add_argument("--width", type=int, default=v.embed_dim)
    p.add_argument("--heads", type=int, default=v.num_heads)
    p.add_argument("--families", type=parse_families, default=None, help="e.g. scene=0.5,text=0.3,video=0.2")
    p.add_argument(
        "--size", type=int, nargs=2, action="append", metavar=("W", "H"), help="canvas; repeatable"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--init", default=None, help="start from the tower (and heads) of this run directory")
    p.add_argument("--fp32", action="store_true", help="no bfloat16 autocast")
    p.add_argument("--eval-samples", type=int, default=d.eval_samples)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 shares a busy CPU best)")
    p.set_defaults(func=cmd_train_tower)
    return p


def cmd_train_retrieval(args) -> int:
    from .retrieval import RetrievalRun, train_retrieval

    logging.getLogger("vislang").setLevel(logging.INFO)  # a long run reports its progress
    fields = {f.name for f in dataclasses.fields(RetrievalRun)}
    result = train_retrieval(RetrievalRun(**{k: v for k, v in vars(args).items() if k in fields}))
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


def add_retrieval_parser(subparsers) -> argparse.ArgumentParser:
    from .retrieval import RetrievalRun

    d = RetrievalRun(out=Path("."))
    p = subparsers.add_parser("train-retrieval", help="train the retrieval model (LiT) on the world")
    p.add_argument("--out", type=Path, required=True)
    for name in ("scenes", "fashion", "digits", "eval_scenes", "steps", "batch_size", "seed", "save_every"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "text_lr", "phrase_p"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-at", type=int, default=None, help="stop (with a checkpoint) at this step")
    p.set_defaults(func=cmd_train_retrieval)
    return p
