"""`vislang train RECIPE`: train the default model from a TOML recipe.

vislang train recipes/default.toml --out runs/default
vislang train recipes/default.toml --out runs/default --resume --max-minutes 50
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def cmd_train(args) -> int:
    from .loop import train
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    logging.getLogger("vislang.train").setLevel(logging.INFO)  # distilling, resuming, stopping: worth seeing
    steps = recipe.total_steps
    print(f"training {args.recipe}: {len(recipe.stages)} stages, {steps} steps -> {out}", file=sys.stderr)
    result = train(recipe, out, resume=args.resume, device=args.device, max_minutes=args.max_minutes)
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
    parser.add_argument("--device", default="cpu", help="cpu, or cuda when one is available")
    parser.set_defaults(func=cmd_train)
    return parser
