"""Generation speed: vislang against transformers `generate` on the same SmolLM2 weights, same run.

    python benchmarks/generation.py [--quick] [--threads N] [--json out.json]

Both sides load SmolLM2-135M-Instruct from the same GGUF file (dequantized to fp32), take the same
chat prompt's token ids, decode greedily and never stop early (64 new tokens). Printed: the
machine, the settings, every rate and the ratios the generation targets are stated in:

  batch-1 decode, fp32                  vislang / transformers           >= 1.0
  batch-1 decode, vislang int8          vislang int8 / transformers fp32 >= 2.0 (and int8-full)
  roofline                              weight bytes x tokens/s / read bandwidth >= 0.70
                                        (bandwidth sampled beside each decode run; also
                                        against the highest sample of the whole run)
  8 mixed requests through the engine   / transformers static batch of 8 >= 1.5
                                        / vislang engine with one slot   >= 3.0
  time to first token, repeated image   hit / miss                       <= 0.5
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from vislang.bench import (
    CHAT,
    NEW_TOKENS,
    best_time,
    decode_rate,
    engine_throughput,
    format_results,
    mixed_requests,
    run_bench,
)

TARGETS = [
    ("batch-1 decode fp32, vislang / transformers", "fp32_vs_hf", ">=", 1.0),
    ("batch-1 decode int8, vislang / transformers fp32", "int8_vs_hf", ">=", 2.0),
    ("batch-1 decode int8-full, vislang / transformers fp32", "int8full_vs_hf", ">=", 2.0),
    ("roofline of vislang fp32 decode (bandwidth beside it)", "roofline_fp32", ">=", 0.70),
    ("roofline of vislang fp32 decode (highest bandwidth)", "roofline_fp32_strict", ">=", 0.70),
    ("roofline of vislang int8 decode", "roofline_int8", ">=", 0.70),
    ("roofline of vislang int8-full decode", "roofline_int8full", ">=", 0.70),
    ("8 requests: engine / transformers static batch 8", "engine_vs_hf_static", ">=", 1.5),
    ("8 requests: engine int8 / transformers static batch 8 fp32", "engine_int8_vs_hf_static", ">=", 1.5),
    ("8 requests: engine 8 slots / engine 1 slot", "engine_vs_batch1", ">=", 3.0),
    ("8 requests, int8: engine 8 slots / engine 1 slot", "engine_int8_vs_batch1", ">=", 3.0),
    ("time to first token: repeated image / new image", "ttft_hit_vs_miss", "<=", 0.5),
]


def transformers_model():
    from transformers import AutoModelForCausalLM

    from vislang.checkpoints.gguf import smollm2_path

    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval()


def hf_decode(hf, ids: list[int]):
    x = torch.tensor([ids])

    def run(n):
        with torch.inference_mode():
            out = hf.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False
            )
        assert out.shape[1] == x.shape[1] + n
        return out

    return run


def hf_static_batch(hf, prompts: list[list[int]], lengths: list[int], pad: int, repeats: int) -> float:
    """Useful tokens/s of one left-padded batch run until its longest answer is done."""
    T = max(len(p) for p in prompts)
    x = torch.full((len(prompts), T), pad)
    mask = torch.zeros_like(x)
    for i, p in enumerate(prompts):
        x[i, T - len(p) :], mask[i, T - len(p) :] = torch.tensor(p), 1
    longest = max(lengths)

    def run():
        with torch.inference_mode():
            hf.generate(
                x,
                attention_mask=mask,
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=pad,
            )

    return sum(lengths) / best_time(run, repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one timed run each")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3

    import vislang

    r = run_bench(("fp32", "bf16", "int8", "int8-full"), quick=args.quick)
    print(format_results(r))
    hf = transformers_model()
    base = vislang.load(fuse=True)  # as served
    ids = base.prompt_ids(CHAT, [])
    hf_rate = decode_rate(hf_decode(hf, ids), repeats=1 if args.quick else 5)  # as vislang's
    requests = mixed_requests(8)
    prompts = [base.prompt_ids(m, []) for m, _ in requests]
    lengths = [k for _, k in requests]
    hf_static = hf_static_batch(hf, prompts, lengths, pad=base.tokenizer.eos_token_id, repeats=repeats)
    # the engine again, right after transformers, so both see the machine in the same state
    engine8, _ = engine_throughput(base, requests, 8, 1 if args.quick else 2)
    engine8 = max(engine8, r["engine8_tokens_per_s"])

    import transformers

    print(
        f"transformers {transformers.__version__}: batch-1 decode fp32 {hf_rate:.1f} tok/s; "
        f"static batch 8 {hf_static:.1f} useful tok/s"
    )
    ratios = {
        "fp32_vs_hf": r["decode"]["fp32"]["tokens_per_s"] / hf_rate,
        "int8_vs_hf": r["decode"]["int8"]["tokens_per_s"] / hf_rate,
        "roofline_fp32": r["decode"]["fp32"]["roofline"],
        "roofline_fp32_strict": r["decode"]["fp32"]["roofline_vs_highest"],
        "roofline_int8": r["decode"]["int8"]["roofline"],
        "int8full_vs_hf": r["decode"]["int8-full"]["tokens_per_s"] / hf_rate,
        "roofline_int8full": r["decode"]["int8-full"]["roofline"],
        "engine_vs_hf_static": engine8 / hf_static,
        "engine_vs_batch1": engine8 / r["engine1_tokens_per_s"],
        "engine_int8_vs_hf_static": r["engine8_int8_tokens_per_s"] / hf_static,
        "engine_int8_vs_batch1": r["engine8_int8_tokens_per_s"] / r["engine1_int8_tokens_per_s"],
        "ttft_hit_vs_miss": r["ttft_hit_s"] / r["ttft_miss_s"],
    }
    print(
        f"\nsettings: greedy, {NEW_TOKENS} new tokens, prompt {len(ids)} tokens; best of "
        + ("1" if args.quick else "5 (batch-1 decode), 3 (static batch), 2 (engine rounds)")
    )
    for label, key, op, bound in TARGETS:
        ok = ratios[key] >= bound if op == ">=" else ratios[key] <= bound
        print(f"  {label:<52} {ratios[key]:6.2f}  (target {op} {bound})  {'met' if ok else 'MISSED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    **r,
                    "hf_decode_tokens_per_s": hf_rate,
                    "hf_static8_tokens_per_s": hf_static,
                    "ratios": ratios,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
