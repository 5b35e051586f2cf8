"""Qwen2-VL at the real Qwen2-VL-2B-Instruct shape, random weights: vislang against transformers.

    python benchmarks/qwen2vl.py [--dir FOLDER] [--new-tokens 32] [--json out.json]

Speed does not depend on the values, so nothing is downloaded: a folder of random bf16 weights with
the 2B config (32-layer 1280-wide ViT, 28-layer 1536-wide Qwen2 decoder, tied embeddings), a
tokenizer holding Qwen's special tokens and a Qwen-style chat template is written once (about 4.4 GB),
and both libraries load it as fp32. Each side runs in its own process, one after the other, so each
peak memory (max RSS) is its own. Printed, with the ratios the targets are stated in:

  vision tower, 448 x 448 and 1280 x 720 image   vislang / transformers   <= 0.7
  batch-1 decode, fp32                           vislang / transformers   >= 1.5
  batch-1 decode, vislang int8                   / transformers fp32      >= 2.5
  time to first token, image seen before         engine: seen / new image
  peak memory                                    each process's max RSS
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

IMAGE, VIDEO, START, END = 151655, 151656, 151652, 151653
SIZES = {"448x448": (448, 448), "1280x720": (1280, 720)}
PROMPT_WORDS = 24

CONFIG = {
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "model_type": "qwen2_vl",
    "image_token_id": IMAGE,
    "video_token_id": VIDEO,
    "vision_start_token_id": START,
    "vision_end_token_id": END,
    "tie_word_embeddings": True,
    "text_config": {
        "model_type": "qwen2_vl_text",
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "model_type": "qwen2_vl_vision",
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 1536,
        "mlp_ratio": 4,
        "num_heads": 16,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "hidden_act": "quick_gelu",
    },
}
SPECIAL = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": START,
    "<|vision_end|>": END,
    "<|image_pad|>": IMAGE,
    "<|video_pad|>": VIDEO,
}


def write_folder(path: Path) -> None:
    """Random weights at the 2B shape (bf16 on disk), config, tokenizer, processor settings."""
    from safetensors.torch import save_file
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    from vislang.checkpoints.keymaps import vislang_to_hf
    from vislang.config import Qwen2VLConfig
    from vislang.models import Qwen2VL
    from vislang.processing.chat_template import QWEN2VL_FALLBACK_CHAT_TEMPLATE

    path.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        model = Qwen2VL(Qwen2VLConfig.from_hf(CONFIG))
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, p in model.state_dict().items():
        if name.endswith("lm_head.weight"):
            continue  # tied
        if p.dim() == 1:
            value = torch.ones(p.shape) if "norm" in name or "ln_q" in name else torch.zeros(p.shape)
        else:
            value = torch.randn(p.shape, generator=g) * 0.02
        tensors[vislang_to_hf("qwen2_vl", name)] = value.to(torch.bfloat16)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(CONFIG, indent=2))
    vocab = {f"w{i}": i for i in range(151936)}
    for token, i in SPECIAL.items():
        vocab.pop(f"w{i}")
        vocab[token] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    )
    (path / "chat_template.jinja").write_text(QWEN2VL_FALLBACK_CHAT_TEMPLATE)
    pre = {
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(pre))


def picture(width: int, height: int, seed: int = 0):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8).numpy())


def timed(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def prompt_ids(n_image_tokens: int) -> torch.Tensor:
    words = list(range(1000, 1000 + PROMPT_WORDS))
    return torch.tensor(
        [[151644, *words[:4], START, *[IMAGE] * n_image_tokens, END, *words[4:], 151645, 151644]]
    )


def decode_rate(generate, new_tokens: int, repeats: int) -> float:
    """Tokens per second after the first: (n - 1) / (time for n tokens - time for 1 token)."""
    one = timed(lambda: generate(1), repeats)
    full = timed(lambda: generate(new_tokens), repeats)
    return (new_tokens - 1) / (full - one)


def part_transformers(folder: Path, args) -> dict:
    from transformers import Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model = Qwen2VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
    out = {}
    with torch.inference_mode():
        for name, (w, h) in SIZES.items():
            inputs = processor(images=[picture(w, h)], return_tensors="pt")
            reps = 1 if w * h > 500_000 else args.repeats
            out[f"vision_{name}_s"] = timed(
                lambda inputs=inputs: model.model.visual(
                    inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]
                ),
                reps,
            )
        inputs = processor(images=[picture(224, 224)], return_tensors="pt")
        ids = prompt_ids(int(inputs["image_grid_thw"].prod()) // 4)
        types = (ids == IMAGE).int()

        def generate(n):
            return model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                mm_token_type_ids=types,
                **inputs,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
            )

        out["decode_fp32_tok_s"] = decode_rate(generate, args.new_tokens, args.repeats)
    return out


def part_vislang(folder: Path, args, weights: str) -> dict:
    import vislang
    from vislang.generation.engine import Engine

    model = vislang.load(folder, weights=weights, fuse=True)
    out = {}
    with torch.inference_mode():
        if weights == "fp32":
            for name, (w, h) in SIZES.items():
                inputs, _ = model.prepare_images([picture(w, h)])
                reps = 1 if w * h > 500_000 else args.repeats
                out[f"vision_{name}_s"] = timed(lambda inputs=inputs: model.image_features(**inputs), reps)
        inputs, (count,) = model.prepare_images([picture(224, 224)])
        ids = prompt_ids(count)

        def generate(n):
            return model.generate(ids, torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, **inputs)

        out[f"decode_{weights}_tok_s"] = decode_rate(generate, args.new_tokens, args.repeats)
    if weights == "fp32":
        image = picture(448, 448, seed=1)
        ask = [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": "w5 w6"}],
            }
        ]
        with Engine(model, max_batch=1, max_len=1024) as engine:
            new = engine.generate(ask, max_new_tokens=1).ttft_s
            seen = min(engine.generate(ask, max_new_tokens=1).ttft_s for _ in range(args.repeats))
        out["ttft_new_s"], out["ttft_seen_s"] = new, seen
    return out


def run_part(part: str, folder: Path, args) -> dict:
    torch.set_num_threads(args.threads)
    result = part_transformers(folder, args) if part == "transformers" else part_vislang(folder, args, part)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {f"{part}.{k}": v for k, v in result.items()}


def rows(r: dict) -> list[tuple[str, float, float, float, str, float]]:
    """(measurement, vislang, transformers, ratio, direction, target)"""
    out = []
    for size in SIZES:
        key = f"vision_{size}_s"
        vl, hf = r[f"fp32.{key}"], r[f"transformers.{key}"]
        out.append((f"vision tower {size} (s)", vl, hf, vl / hf, "<=", 0.7))
    hf = r["transformers.decode_fp32_tok_s"]
    out.append(
        (
            "batch-1 decode fp32 (tok/s)",
            r["fp32.decode_fp32_tok_s"],
            hf,
            r["fp32.decode_fp32_tok_s"] / hf,
            ">=",
            1.5,
        )
    )
    out.append(
        (
            "batch-1 decode int8 (tok/s)",
            r["int8.decode_int8_tok_s"],
            hf,
            r["int8.decode_int8_tok_s"] / hf,
            ">=",
            2.5,
        )
    )
    return out


def format_table(r: dict, args) -> str:
    lines = [
        f"Qwen2-VL-2B shape, random weights; torch {torch.__version__}, {args.threads} threads, "
        f"{os.cpu_count()} cores; {args.new_tokens} new tokens, best of {args.repeats}",
        f"{'measurement':<34} {'vislang':>10} {'transformers':>13} {'ratio':>7}  target",
    ]
    for name, vl, hf, ratio, op, target in rows(r):
        met = ratio <= target if op == "<=" else ratio >= target
        lines.append(
            f"{name:<34} {vl:>10.3f} {hf:>13.3f} {ratio:>7.2f}  {op} {target} {'met' if met else 'MISSED'}"
        )
    lines.append(
        f"time to first token, vislang engine: image seen before {1e3 * r['fp32.ttft_seen_s']:.0f} ms, "
        f"new image {1e3 * r['fp32.ttft_new_s']:.0f} ms ({r['fp32.ttft_seen_s'] / r['fp32.ttft_new_s']:.3f}x)"
    )
    peaks = ", ".join(
        f"{label} {r[f'{part}.peak_rss_gb']:.1f} GB"
        for part, label in (
            ("transformers", "transformers fp32"),
            ("fp32", "vislang fp32"),
            ("int8", "vislang int8"),
        )
    )
    lines.append(f"peak memory (max RSS): {peaks}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", default=None, help="where the random checkpoint is written (kept)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--parts", default="transformers,fp32,int8", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None)
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.dir or Path(tempfile.gettempdir()) / "vislang-qwen2vl-2b-random")
    if args.part:
        print(json.dumps(run_part(args.part, folder, args)))
        return 0
    if not (folder / "model.safetensors").is_file():
        print(f"writing random Qwen2-VL-2B weights to {folder} ...", file=sys.stderr)
        write_folder(folder)
    results = {}
    for part in args.parts.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--part",
            part,
            "--dir",
            str(folder),
            "--threads",
            str(args.threads),
            "--new-tokens",
            str(args.new_tokens),
            "--repeats",
            str(args.repeats),
        ]
        print(f"running {part} ...", file=sys.stderr)
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.update(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(format_table(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
