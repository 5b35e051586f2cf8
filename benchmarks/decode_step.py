"""Ways to run one batch-1 decode step of SmolLM2-135M, measured in one run.

    python benchmarks/decode_step.py [--skip-compile] [--json out.json]

The same 42-token prompt is prefilled once per variant, then a one-token decode step is timed
(best of 50 after 10 warm-up steps, the cache rewound each time so every step sees 42 cached
positions). Variants:
- fp32 eager: PyTorch op by op (fused q/k/v and gate/up, oneDNN-layout weights: `fuse=True`),
  and the same on plain row-major weights (what the compiler and the native step read).
- fp32 torch.compile: the decoder's forward compiled by Inductor (default mode, then with the C++
  wrapper, which is the code AOTInductor would save ahead of time); dynamic cache length.
- fp32 native step: kernels/decode.cpp reading the plain fp32 rows, the whole step in one call.
- q4 layer by layer: the GGUF's blocks, each matmul a native call from PyTorch's Python forward.
- q4 native step: the GGUF's blocks, the whole step in one call.
Printed: ms per step and tokens/s for each, with the compile time where there is one.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

import vislang.nn.linear as linear_module
from vislang.bench import machine
from vislang.checkpoints.gguf import load_gguf_decoder
from vislang.generation.native_step import attach_native_step
from vislang.generation.quantize import prefill, quantize_decoder

PROMPT = 42


def step_time(forward, decoder, repeats: int = 50) -> float:
    """Best wall time of one decode step after a 42-token prefill (the cache rewound each time)."""
    ids = torch.arange(100, 100 + PROMPT)[None]
    cache = decoder.new_cache(1, 128)
    with torch.inference_mode():
        with prefill():
            decoder(input_ids=ids, cache=cache)
        token = torch.tensor([[7]])
        best = float("inf")
        for i in range(10 + repeats):
            cache.length = PROMPT
            start = time.perf_counter()
            forward(input_ids=token, cache=cache)
            if i >= 10:
                best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile variants")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    base = load_gguf_decoder()
    results = {"machine": machine()}

    eager = quantize_decoder(copy.deepcopy(base), "fp32", fuse=True)
    eager.fast_decode = None  # op by op
    results["fp32 eager"] = {"ms": 1e3 * step_time(eager, eager)}

    plain = copy.deepcopy(
        base
    )  # fused, plain row-major fp32 weights (what the compiler and the native step take)
    for module in plain.modules():
        if hasattr(module, "fuse"):
            module.fuse()
    results["fp32 eager, plain weights"] = {"ms": 1e3 * step_time(plain, plain)}

    if not args.skip_compile:
        # the compiler traces F.linear (it cannot trace oneDNN's op; with freezing it picks its own)
        linear_module.ONEDNN = False
        for label, options in (
            ("fp32 torch.compile", {}),
            ("fp32 torch.compile, C++ wrapper", {"cpp_wrapper": True}),
        ):
            torch._dynamo.reset()
            compiled = torch.compile(plain, dynamic=True, options=options)
            start = time.perf_counter()
            step_time(compiled, plain, repeats=1)
            compile_s = time.perf_counter() - start
            results[label] = {"ms": 1e3 * step_time(compiled, plain), "compile_s": compile_s}
        linear_module.ONEDNN = True

    if attach_native_step(plain):
        results["fp32 native step"] = {"ms": 1e3 * step_time(plain, plain)}

    q4 = quantize_decoder(load_gguf_decoder(weights="q4"), "q4", fuse=True)
    if q4.fast_decode is not None:
        results["q4 native step"] = {"ms": 1e3 * step_time(q4, q4)}
        q4.fast_decode = None
    results["q4 layer by layer"] = {"ms": 1e3 * step_time(q4, q4)}

    print(results.pop("machine"))
    for name, r in results.items():
        extra = f", compiled in {r['compile_s']:.0f} s" if "compile_s" in r else ""
        print(f"{name:34s} {r['ms']:6.2f} ms/step  {1e3 / r['ms']:6.1f} tok/s{extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
