"""`vislang eval world ...`: score a model on the visual world's test split.

vislang eval world --model default --families scene,fashion,digits --n 500 --out report.json
"""

from __future__ import annotations

import argparse
import sys

from ..data.cli import non_negative_int, positive_int
from ..generation.quantize import FORMATS


def _families(text: str) -> tuple[str, ...]:
    from vislang.data.world import FAMILIES

    families = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise argparse.ArgumentTypeError(f"unknown families {unknown}; families: {', '.join(FAMILIES)}")
    return families


def cmd_eval_world(args) -> int:
    import vislang

    from .world import evaluate_world, format_report, write_report

    model = vislang.load(None if args.model == "default" else args.model, weights=args.weights, fuse=True)
    report = evaluate_world(
        model,
        families=args.families,
        n=args.n,
        seed=args.seed,
        paraphrase=args.paraphrase,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    print(format_report(report))
    if args.out:
        print(f"wrote {write_report(report, args.out)}", file=sys.stderr)
    return 0


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add `eval world` to an argparse subparsers object."""
    evaluate = subparsers.add_parser("eval", help="evaluate a model")
    sub = evaluate.add_subparsers(dest="eval_command", required=True)

    world = sub.add_parser("world", help="accuracy on the visual world's test split, per family and qtype")
    world.add_argument("--model", default="default", help="'default' or a checkpoint folder")
    world.add_argument(
        "--families", type=_families, default=("scene", "fashion", "digits"), help="comma-separated"
    )
    world.add_argument("--n", type=positive_int, default=500, help="samples per family")
    world.add_argument("--seed", type=non_negative_int, default=0)
    world.add_argument("--paraphrase", choices=("canonical", "heldout"), default="canonical")
    world.add_argument("--out", default=None, help="write the report as JSON here")
    world.add_argument("--batch-size", type=positive_int, default=16)
    world.add_argument("--weights", choices=FORMATS, default="fp32", help="the LM's weight format")
    world.add_argument("--max-new-tokens", type=positive_int, default=24)
    world.set_defaults(func=cmd_eval_world)
    return evaluate
