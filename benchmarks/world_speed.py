"""How fast the world generates on one core, against the target of 200 samples/s for `scene` at 224 x 224.

    python benchmarks/world_speed.py [--seconds 5] [--family-seconds 2]

The process is pinned to one core (where the OS allows) and torch to one thread, so the number is
what one DataLoader worker delivers. A family that is not written yet, or whose dataset is not
installed, is reported as missing instead of stopping the run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from vislang.data.world import FAMILIES, WorldConfig, family_maker, generate_sample
from vislang.errors import VislangError

TARGET = 200.0  # scene samples/s on one core at 224 x 224


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity here)"


def rate(family: str, cfg: WorldConfig, seconds: float) -> tuple[float, int]:
    """(samples/s, samples) generating `family` for about `seconds`, after one warm-up sample."""
    generate_sample(family, "train", 0, 0, cfg)  # loads fonts and datasets once, as a worker would
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        generate_sample(family, "train", 0, n + 1, cfg)
        n += 1
    return n / (time.perf_counter() - start), n


def missing_reason(family: str) -> str | None:
    try:
        family_maker(family)
    except ImportError as e:
        return f"missing ({e})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="scene at 224 x 224")
    parser.add_argument("--family-seconds", type=float, default=2.0, help="each family")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    torch.set_num_threads(1)
    print(f"machine   {platform.machine()}, {os.cpu_count()} cores, {pin_one_core()}")
    print(f"python    {platform.python_version()}")
    print(f"torch     {torch.__version__}, {torch.get_num_threads()} thread")
    cfg = WorldConfig(width=args.size, height=args.size)

    reason = missing_reason("scene")
    if reason:
        print(f"scene     {reason}")
    else:
        per_s, n = rate("scene", cfg, args.seconds)
        size, ratio = f"{args.size}x{args.size}", per_s / TARGET
        print(f"scene     {per_s:8.1f} samples/s at {size} ({n} samples), {ratio:.2f}x the 200/s target")

    print(f"\nper family, {args.family_seconds:g} s each:")
    for family in FAMILIES:
        reason = missing_reason(family)
        if reason is None:
            try:
                per_s, n = rate(family, cfg, args.family_seconds)
            except VislangError as e:  # a real dataset that is not installed
                reason = f"missing ({e})"
        if reason:
            print(f"  {family:<10} {reason}")
        else:
            print(f"  {family:<10} {per_s:8.1f} samples/s ({n} samples), {per_s / TARGET:.2f}x target")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
