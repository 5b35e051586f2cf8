"""`vislang world ...`: write the visual world to disk, or look at it.

    vislang world generate --family scene --n 1000 --seed 0 --split train --out data/scene \
        --format jsonl --format webdataset
    vislang world preview --family scene -o grid.png
"""

from __future__ import annotations

import argparse
import os
import sys

from .world import FAMILIES, SPLITS, WorldConfig, generate_sample

FORMAT_CHOICES = ("jsonl", "llava", "webdataset")


def _family(args) -> str | None:
    # checked here rather than with argparse choices: the registry is read when the command runs
    if args.family in FAMILIES:
        return args.family
    print(
        f"vislang world: error: unknown family {args.family!r}; families: {', '.join(FAMILIES)}",
        file=sys.stderr,
    )
    return None


def _progress_disabled() -> bool:
    return bool(os.environ.get("CI")) or not sys.stderr.isatty()


def cmd_generate(args) -> int:
    from tqdm import tqdm

    from .formats import write_dataset

    family = _family(args)
    if family is None:
        return 2
    cfg = WorldConfig(width=args.width, height=args.height, paraphrase=args.paraphrase)
    samples = (generate_sample(family, args.split, args.seed, i, cfg) for i in range(args.n))
    bar = tqdm(
        samples, total=args.n, unit="sample", desc=f"{family} {args.split}", disable=_progress_disabled()
    )
    written = write_dataset(bar, args.out, args.format or ["jsonl"], shard_size=args.shard_size)
    for fmt, paths in written.items():
        shown = str(paths[0]) if len(paths) == 1 else f"{paths[0]} .. {paths[-1].name} ({len(paths)} shards)"
        print(f"{fmt:<10} {shown}")
    print(f"wrote {args.n} {family} samples ({args.split}, seed {args.seed}) to {args.out}")
    return 0


def cmd_preview(args) -> int:
    from .preview import preview_grid

    family = _family(args)
    if family is None:
        return 2
    cfg = WorldConfig(width=args.width, height=args.height)
    samples = [generate_sample(family, args.split, args.seed, i, cfg) for i in range(args.n)]
    preview_grid(samples, columns=args.columns, cell=args.cell).save(args.output)
    print(f"wrote {args.output}")
    return 0


def _size(text: str) -> int:
    value = int(text)
    if not 64 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"canvas sides must be in [64, 1024], got {value}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_world_parser(subparsers) -> argparse.ArgumentParser:
    """Add `world generate` and `world preview` to an argparse subparsers object."""
    world = subparsers.add_parser("world", help="generate and preview the visual world's data")
    sub = world.add_subparsers(dest="world_command", required=True)

    gen = sub.add_parser("generate", help="write samples as PNG + JSONL, LLaVA JSON or WebDataset shards")
    gen.add_argument("--family", required=True, help=f"one of: {', '.join(FAMILIES)}")
    gen.add_argument("--n", type=positive_int, required=True, help="number of samples")
    gen.add_argument("--seed", type=non_negative_int, default=0)
    gen.add_argument("--split", choices=SPLITS, default="train")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--format", action="append", choices=FORMAT_CHOICES, help="repeatable; default jsonl")
    gen.add_argument("--paraphrase", action="store_true", help="ask with random paraphrases (training)")
    gen.add_argument("--width", type=_size, default=224)
    gen.add_argument("--height", type=_size, default=224)
    gen.add_argument("--shard-size", type=positive_int, default=1000, help="samples per WebDataset shard")
    gen.set_defaults(func=cmd_generate)

    preview = sub.add_parser("preview", help="a PNG grid of samples with their questions and answers")
    preview.add_argument("--family", required=True, help=f"one of: {', '.join(FAMILIES)}")
    preview.add_argument("--n", type=positive_int, default=8)
    preview.add_argument("--seed", type=non_negative_int, default=0)
    preview.add_argument("--split", choices=SPLITS, default="test")
    preview.add_argument("--columns", type=positive_int, default=4)
    preview.add_argument("--cell", type=positive_int, default=224, help="cell side in pixels")
    preview.add_argument("--width", type=_size, default=224)
    preview.add_argument("--height", type=_size, default=224)
    preview.add_argument("-o", "--output", required=True, help="the PNG to write")
    preview.set_defaults(func=cmd_preview)
    return world
