"""`vislang train RECIPE`: train the default model from a TOML recipe.

vislang train recipes/default.toml --out runs/default
vislang train recipes/default.toml --out runs/default --resume --max-minutes 50
vislang train recipes/default.toml --out runs/default --nproc 4      # DDP over 4 local processes

--nproc N starts N processes through torchrun's launcher, each running this same command; under
torchrun (started by `--nproc` or by hand, across machines: see distributed.py) it trains as one rank.
"""

from __future__ import annotations

import argparse
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
