"""How often a reduced weight format picks fp32's greedy token, on chat prompts (SmolLM2-135M).

    python benchmarks/agreement.py [--formats q4,q8,int8] [--tokens 48]

For each of the 8 chat prompts of vislang.bench.mixed_requests, fp32 decodes `--tokens` greedy
tokens; each format is then fed fp32's tokens one step at a time and its own greedy choice is
compared with fp32's at every step (free-running decodes part at the first near-tie and are not
comparable after it). Printed per format: same choices / steps, the first-token agreement, the
identical free-running prefix, and the logit gap (fp32's top two) at every disagreement.
"""

from __future__ import annotations

import argparse
import copy

import torch

from vislang.bench import mixed_requests
from vislang.checkpoints.gguf import load_gguf_decoder
from vislang.generation.quantize import prefill, quantize_decoder


def forced_choices(decoder, prompt: list[int], tokens: list[int]) -> tuple[list[int], list[torch.Tensor]]:
    """The decoder's greedy choice after the prompt and after each of `tokens` (fed one by one)."""
    cache = decoder.new_cache(1, len(prompt) + len(tokens) + 1)
    with torch.inference_mode():
        with prefill():
            logits = decoder(input_ids=torch.tensor([prompt]), cache=cache, last_only=True)[0, -1]
        choices, all_logits = [int(logits.argmax())], [logits]
        for t in tokens[:-1]:
            logits = decoder(input_ids=torch.tensor([[t]]), cache=cache)[0, -1]
            choices.append(int(logits.argmax()))
            all_logits.append(logits)
    return choices, all_logits


def greedy(decoder, prompt: list[int], n: int) -> list[int]:
    out, cache = [], decoder.new_cache(1, len(prompt) + n + 1)
    with torch.inference_mode():
        with prefill():
            logits = decoder(input_ids=torch.tensor([prompt]), cache=cache, last_only=True)[0, -1]
        for _ in range(n):
            out.append(int(logits.argmax()))
            logits = decoder(input_ids=torch.tensor([[out[-1]]]), cache=cache)[0, -1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", default="q4,q8,int8")
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()

    import vislang

    tokenizer_model = vislang.load()
    prompts = [tokenizer_model.prompt_ids(m, []) for m, _ in mixed_requests(8)]
    base = load_gguf_decoder()
    fp32 = quantize_decoder(copy.deepcopy(base), "fp32", fuse=True)
    reference = [greedy(fp32, p, args.tokens) for p in prompts]
    for fmt in args.formats.split(","):
        if fmt in ("q4", "q8"):
            decoder = quantize_decoder(load_gguf_decoder(weights=fmt), fmt, fuse=True)
        else:
            decoder = quantize_decoder(copy.deepcopy(base), fmt, fuse=True)
        same = steps = first = prefix_total = 0
        gaps = []
        for prompt, ref in zip(prompts, reference):
            choices, _ = forced_choices(decoder, prompt, ref)
            _, ref_logits = forced_choices(fp32, prompt, ref)
            for i, (c, r) in enumerate(zip(choices, ref)):
                steps += 1
                same += c == r
                if c != r:
                    top = ref_logits[i].topk(2).values
                    gaps.append(float(top[0] - top[1]))
            first += choices[0] == ref[0]
            own = greedy(decoder, prompt, args.tokens)
            prefix_total += next((i for i, (a, b) in enumerate(zip(own, ref)) if a != b), len(ref))
        print(
            f"{fmt}: same greedy choice as fp32 at {same}/{steps} steps fed fp32's tokens; first token "
            f"{first}/{len(prompts)}; free-running identical prefix {prefix_total / len(prompts):.1f} of "
            f"{args.tokens} tokens on average; fp32's top-two logit gap where they differ: "
            f"{', '.join(f'{g:.2f}' for g in gaps) or 'none'}"
        )


if __name__ == "__main__":
    main()
