"""vislang against llama.cpp on the same GGUF file (SmolLM2-135M-Instruct Q4_1), in one run.

    python benchmarks/peers.py [--quick] [--rounds N] [--formats q4,int8,fp32] [--threads N]
                               [--server PATH] [--json out.json]

Needs llama-cpp-python (`pip install 'vislang[peers]'`, built from source) and, for the
concurrent-request row, a llama-server binary ($LLAMA_SERVER or on PATH; built from llama.cpp's
source with `cmake --build build --target llama-server`). Without the server that row is skipped.

Method. One process, one file, the same token ids on both sides:
- the chat prompt (vislang.bench.CHAT) is rendered with the GGUF's own chat template and tokenized
  by llama.cpp; vislang receives those ids (its own tokenization of the same text is compared and
  reported, not used).
- measurements alternate within each round: vislang in one format, then llama.cpp, then the next
  format, then llama.cpp again, so a slow drift of a shared machine falls on both sides alike.
  Each number is a best-of-N after a warm-up; the table shows the median over rounds, and the
  1-minute load average is recorded beside every measurement (above the core count means another
  job was running and the ratios, more than the rates, are what to read).
- batch-1 decode: greedy, no early stop, (time of n + 1 tokens - time of 1) / n as
  vislang.bench.decode_rate; the greedy tokens of both sides are compared position by position.
- prefill: 200 fixed tokens from an empty cache, batch 1.
- 8 concurrent requests: vislang's continuous-batching engine (8 slots) on the default VLM,
  whose language model is the same SmolLM2, against llama-server with 8 slots; the same prompt
  ids and output lengths (16..128 tokens, vislang.bench.mixed_requests), no early stop.
- an image request end to end on the default VLM (vislang only: llama.cpp has no such model here),
  split into preprocessing, vision tower, prefill and decode.

Both sides use the same thread count (--threads, default: PyTorch's). vislang formats: for decode
and prefill, q4 and q8 run the file's own blocks, int8 and fp32 are made from its dequantized
weights; the VLM of the engine and image rows is `vislang.load(weights=FMT, fuse=True)`. A format
this vislang lacks runs as int8, and the table says so.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import llama_peer  # beside this file: a script's folder is on sys.path
import torch
from gguf import GGUFReader

import vislang
from vislang.bench import (
    CHAT,
    NEW_TOKENS,
    best_time,
    engine_throughput,
    machine,
    mixed_requests,
    read_bandwidth,
    vislang_decode,
)
from vislang.bench import decode_rate as vislang_decode_rate
from vislang.checkpoints.gguf import load_gguf_decoder, read_gguf_metadata, smollm2_path
from vislang.generation import quantize
from vislang.generation.quantize import weight_bytes_per_token
from vislang.generation.threads import release_idle_workers
from vislang.processing.chat_template import render_chat
from vislang.processing.gguf_tokenizer import gguf_chat_template, load_gguf_tokenizer

PREFILL_TOKENS = 200
# any fixed text longer than PREFILL_TOKENS tokens: the first 200 of llama.cpp's ids are used
PREFILL_TEXT = (
    "The lighthouse keeper kept a log of every ship that passed the point: its flag, its cargo if he "
    "could guess it, the hour, the wind, and whether it answered his lamp. In forty years he filled "
    "ninety-one notebooks. Most entries are dull, a line each, but some run for pages: the winter the "
    "harbour froze and the fishing boats were hauled onto the ice, the night a steamer lost its rudder "
    "and drifted past the rocks close enough that he could hear the crew shouting, the summer a whale "
    "came into the bay and stayed for a week while half the town rowed out to look at it. He wrote in "
    "pencil, in a small upright hand, and when a notebook was full he tied it with string and put it "
    "in a tea chest under the stairs. After he died his niece found the chest, read the notebooks over "
    "one long winter, and typed out the best of them. The typescript sat in a drawer for another thirty "
    "years before a local historian found it, recognised the names of ships that appear nowhere else, "
    "and persuaded the county archive to take the originals, which are kept there still, string and all."
)
IMAGE_QUESTION = "Describe the picture."
IMAGE_TOKENS = 32


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Log:
    """Every measurement with the load average right after it; medians over rounds."""

    def __init__(self):
        self.rows: list[dict] = []

    def measure(self, name: str, side: str, fmt: str, fn, weight_bytes: int | None = None):
        """weight_bytes: also log the roofline, bytes x rate over the read bandwidth sampled right
        before and right after (the higher of the two: vislang.bench.decode_roofline's method)."""
        before = read_bandwidth(repeats=3) if weight_bytes else None
        value = fn()
        rate = value[0] if isinstance(value, tuple) else value
        self.rows.append(
            {"measurement": name, "side": side, "format": fmt, "value": rate, "loadavg": loadavg()}
        )
        if weight_bytes:
            bandwidth = max(before, read_bandwidth(repeats=3))
            self.rows.append(
                {
                    "measurement": "roofline",
                    "side": side,
                    "format": fmt,
                    "value": weight_bytes * rate / bandwidth,
                    "bandwidth_GBps": bandwidth / 1e9,
                    "loadavg": loadavg(),
                }
            )
        return value

    def median(self, name: str, side: str, fmt: str | None = None) -> float | None:
        values = [r["value"] for r in self.select(name, side, fmt)]
        return statistics.median(values) if values else None

    def load_range(self, name: str, fmt: str) -> str:
        """1-minute load averages beside this format's measurements and all of llama.cpp's."""
        loads = [
            r["loadavg"][0] for r in self.rows if r["measurement"] == name and r["format"] in (fmt, "Q4_1")
        ]
        return f"{min(loads):.2f}-{max(loads):.2f}" if loads else ""

    def select(self, name, side, fmt=None):
        return [
            r
            for r in self.rows
            if r["measurement"] == name and r["side"] == side and fmt in (None, r["format"])
        ]


# --- vislang's side ---


def supports(fmt: str) -> bool:
    """Whether this vislang has the weight format (q4 / q8 run the GGUF's blocks, when present)."""
    if fmt not in quantize.FORMATS:
        return False
    return fmt not in ("q4", "q8") or "weights" in inspect.signature(load_gguf_decoder).parameters


def vislang_decoder(path: Path, fmt: str):
    """A bare Decoder prepared for inference in `fmt`: q4 / q8 hold the file's own blocks, the
    others are made from its dequantized weights."""
    if fmt in ("q4", "q8"):
        decoder = load_gguf_decoder(path, weights=fmt)
    else:
        decoder = load_gguf_decoder(path)
    return quantize.quantize_decoder(decoder, fmt, fuse=True)


def vislang_prefill_rate(decoder, ids: list[int], repeats: int) -> float:
    x = torch.tensor([ids])

    def run():
        with torch.inference_mode(), quantize.prefill():
            decoder(input_ids=x, cache=decoder.new_cache(1, 256), last_only=True)

    return len(ids) / best_time(run, repeats)


def hf_prefill_rate(hf, ids: list[int], repeats: int) -> float:
    x = torch.tensor([ids])

    def run():
        with torch.inference_mode():
            hf(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True, logits_to_keep=1)

    return len(ids) / best_time(run, repeats)


def vislang_decode_with_tokens(decoder, ids: list[int], new_tokens: int, repeats: int):
    run = vislang_decode(types.SimpleNamespace(language_model=decoder), ids)
    rate = vislang_decode_rate(run, new_tokens, repeats)
    return rate, run(new_tokens)[0].tolist()


def teacher_forced(decoder, prompt: list[int], theirs: list[int]) -> dict:
    """vislang's greedy choice at each step when fed llama.cpp's tokens, one decode step at a time
    (the decode-time weights). Free-running greedy runs part at the first near-tie and never meet
    again; this says whether the steps after it would agree, and how close the disagreements are
    (logit of vislang's choice minus logit of llama.cpp's, both read from vislang's logits)."""
    same, gaps = 0, []
    with torch.inference_mode():
        cache = decoder.new_cache(1, len(prompt) + len(theirs))
        with quantize.prefill():
            logits = decoder(input_ids=torch.tensor([prompt]), cache=cache, last_only=True)
        for tok in theirs:
            row = logits[0, -1]
            mine = int(row.argmax())
            same += mine == tok
            if mine != tok:
                gaps.append(round(float(row[mine] - row[tok]), 3))
            logits = decoder(input_ids=torch.tensor([[tok]]), cache=cache)
    return {"same": same, "of": len(theirs), "gaps": gaps}


def image_request(model, image, warm_image, new_tokens: int = IMAGE_TOKENS) -> dict:
    """Seconds of one image request through a 1-slot engine, by part. The vision tower is timed by
    wrapping the model's image_features; prefill is the rest of the time to first token."""
    from vislang.generation.engine import Engine

    def message(img):
        return [
            {
                "role": "user",
                "content": [{"type": "image", "image": img}, {"type": "text", "text": IMAGE_QUESTION}],
            }
        ]

    vision = []
    original = model.image_features

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        vision.append(time.perf_counter() - start)
        return out

    model.image_features = timed  # an instance attribute: the engine calls it in place of the method
    try:
        with Engine(model, max_batch=1) as engine:
            engine.generate(message(warm_image), max_new_tokens=2)  # warm-up (another image: no cache hit)
            start = time.perf_counter()
            handle = engine.submit(message(image), max_new_tokens=new_tokens, min_new_tokens=new_tokens)
            preprocess = time.perf_counter() - start  # image decode, resize, prompt tokens (caller's thread)
            done = handle.result()
    finally:
        del model.image_features
    if len(done.token_ids) != new_tokens:
        raise RuntimeError(f"image request generated {len(done.token_ids)} tokens, {new_tokens} asked")
    return {
        "preprocess": preprocess,
        "vision": vision[-1],
        "prefill": done.ttft_s - vision[-1],  # prefill forward and the first token
        "decode": done.total_s - done.ttft_s,  # the other new_tokens - 1 tokens
        "total": preprocess + done.total_s,
        "prompt_tokens": done.usage["prompt_tokens"],
    }


# --- one run ---


def agreement(a: list[int], b: list[int]) -> dict:
    same = sum(x == y for x, y in zip(a, b))
    prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return {"same": same, "prefix": prefix, "of": min(len(a), len(b))}


def prompts(path: Path, peer) -> dict:
    """The chat prompt and the 200-token prefill ids, tokenized by llama.cpp, and whether vislang's
    tokenizer gives the same ids for the same text."""
    md = read_gguf_metadata(path)
    tok = load_gguf_tokenizer(path)
    text = render_chat(
        gguf_chat_template(md), CHAT, add_generation_prompt=True, special_tokens=tok.special_tokens
    )
    chat_ids = peer.tokenize(text)
    long_ids = peer.tokenize(PREFILL_TEXT, special=False)
    if len(long_ids) < PREFILL_TOKENS:
        raise RuntimeError(f"the prefill text is {len(long_ids)} tokens, {PREFILL_TOKENS} needed")
    return {
        "chat_text": text,
        "chat_ids": chat_ids,
        "chat_ids_vislang": tok.encode(text, add_special_tokens=False),
        "prefill_ids": long_ids[:PREFILL_TOKENS],
        "prefill_ids_vislang": tok.encode(PREFILL_TEXT, add_special_tokens=False)[:PREFILL_TOKENS],
    }


def run(args) -> dict:
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    path = smollm2_path()
    repeats = 1 if args.quick else 3
    peer = llama_peer.LlamaPeer(path, threads=threads)
    p = prompts(path, peer)
    results: dict = {
        "machine": machine(),
        "threads": threads,
        "file": path.name,
        "llama_cpp": peer.lib.__version__,
        "tokenization": {
            "chat_tokens": len(p["chat_ids"]),
            "chat_ids_equal": p["chat_ids"] == p["chat_ids_vislang"],
            "prefill_ids_equal": p["prefill_ids"] == p["prefill_ids_vislang"],
        },
        "formats": {},
    }
    formats = {}  # asked -> run: a format this vislang lacks runs as int8, once
    for fmt in args.formats:
        used = fmt if supports(fmt) else "int8"
        results["formats"][fmt] = used
        if used not in formats.values():
            formats[fmt] = used

    decoders = {fmt: vislang_decoder(path, used) for fmt, used in formats.items()}
    # the engine drives a chat model: the default VLM, whose language model is the same SmolLM2
    vlms = {fmt: vislang.load(weights=used, fuse=True) for fmt, used in formats.items()}
    some_vlm = next(iter(vlms.values()))
    requests = mixed_requests(8)
    request_ids = [(some_vlm.prompt_ids(m, []), k) for m, k in requests]
    results["vlm_chat_ids_equal"] = some_vlm.prompt_ids(CHAT, []) == p["chat_ids"]

    binary = args.server or llama_peer.server_binary()
    server = None
    if binary is None:
        results["server"] = "skipped: no llama-server ($LLAMA_SERVER or on PATH)"
    else:
        server = llama_peer.LlamaServer(binary, path, slots=8, threads=threads)
        results["server"] = binary

    hf = None
    try:  # transformers, the third column, where it is installed (a test dependency of vislang)
        from generation import hf_decode, hf_static_batch, transformers_model

        hf = transformers_model()
        results["transformers"] = __import__("transformers").__version__
    except ImportError:
        results["transformers"] = "skipped: not installed"
    hf_prompts, hf_lengths = [i for i, _ in request_ids], [k for _, k in request_ids]
    hf_pad = some_vlm.tokenizer.eos_token_id
    log, tokens = Log(), {}
    # llama.cpp reads every tensor of the file once per token (the tied head is the embedding table)
    llama_bytes = sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors)
    results["weight_bytes_per_token"] = {"llama.cpp": llama_bytes} | {
        fmt: weight_bytes_per_token(d) for fmt, d in decoders.items()
    }
    chat_ids, prefill_ids = p["chat_ids"], p["prefill_ids"]
    try:
        for _ in range(args.rounds):
            for fmt, decoder in decoders.items():
                _, tokens[fmt] = log.measure(
                    "decode",
                    "vislang",
                    fmt,
                    lambda d=decoder: vislang_decode_with_tokens(d, chat_ids, NEW_TOKENS, repeats),
                    weight_bytes_per_token(decoder),
                )
                release_idle_workers()  # PyTorch's idle OpenMP workers off the cores llama.cpp uses
                _, tokens["llama"] = log.measure(
                    "decode",
                    "llama.cpp",
                    "Q4_1",
                    lambda: peer.decode_rate(chat_ids, NEW_TOKENS, repeats),
                    llama_bytes,
                )
                log.measure(
                    "prefill",
                    "vislang",
                    fmt,
                    lambda d=decoder: vislang_prefill_rate(d, prefill_ids, repeats),
                )
                release_idle_workers()
                log.measure("prefill", "llama.cpp", "Q4_1", lambda: peer.prefill_rate(prefill_ids, repeats))
            if hf is not None:
                log.measure(
                    "decode",
                    "transformers",
                    "fp32",
                    lambda: vislang_decode_rate(hf_decode(hf, chat_ids), repeats=repeats),
                )
                log.measure(
                    "prefill", "transformers", "fp32", lambda: hf_prefill_rate(hf, prefill_ids, repeats)
                )
            for fmt, vlm in vlms.items():
                log.measure("8 requests", "vislang", fmt, lambda m=vlm: engine_throughput(m, requests, 8))
                if server is not None:
                    release_idle_workers()
                    log.measure("8 requests", "llama.cpp", "Q4_1", lambda: server.throughput(request_ids))
            if hf is not None:  # a static batch: transformers has no continuous batching
                log.measure(
                    "8 requests",
                    "transformers",
                    "fp32",
                    lambda: hf_static_batch(hf, hf_prompts, hf_lengths, pad=hf_pad, repeats=1),
                )
    finally:
        if server is not None:
            server.close()

    from vislang.data.world import WorldConfig, generate_sample

    def world_image(i):
        return generate_sample("scene", "test", 7, i, WorldConfig()).images[0]

    image_parts = {}
    for fmt, vlm in vlms.items():
        parts = [image_request(vlm, world_image(r), world_image(1000 + r)) for r in range(args.rounds)]
        image_parts[fmt] = {k: statistics.median(x[k] for x in parts) for k in parts[0]}
        image_parts[fmt]["loadavg"] = loadavg()

    results["agreement"] = {fmt: agreement(tokens[fmt], tokens["llama"]) for fmt in decoders}
    results["teacher_forced"] = {
        fmt: teacher_forced(d, chat_ids, tokens["llama"]) for fmt, d in decoders.items()
    }
    results["image_request"] = image_parts
    results["measurements"] = log.rows
    results["table"] = table(log, results, formats)
    return results


def table(log: Log, results: dict, formats: dict) -> str:
    names = {
        "decode": f"batch-1 decode, {NEW_TOKENS} tokens (tok/s)",
        "prefill": f"prefill, {PREFILL_TOKENS} tokens (tok/s)",
        "8 requests": "8 concurrent requests, engine vs server 8 slots (tok/s)",
        "roofline": "batch-1 decode: weight bytes x tok/s / read bandwidth beside it",
    }
    lines = [
        "| measurement | vislang | llama.cpp Q4_1 | transformers fp32 | vislang / llama.cpp "
        "| vislang / transformers | load avg (1 min) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, label in names.items():
        for fmt, used in formats.items():
            mine, theirs = log.median(key, "vislang", fmt), log.median(key, "llama.cpp")
            hf = log.median(key, "transformers")
            hf_text, hf_ratio = (f"{hf:.1f}", f"{mine / hf:.2f}") if hf else ("-", "-")
            if mine is None:
                continue
            shown = used if used == fmt else f"{used} (asked {fmt}: not in this vislang)"
            ratio = f"{mine / theirs:.2f}" if theirs else "-"
            show = (lambda v: f"{100 * v:.0f}%") if key == "roofline" else (lambda v: f"{v:.1f}")
            theirs_text = show(theirs) if theirs else "skipped"
            lines.append(
                f"| {label} | {shown}: {show(mine)} | {theirs_text} | {hf_text} | {ratio} | {hf_ratio} "
                f"| {log.load_range(key, fmt)} |"
            )
    for fmt, a in results["agreement"].items():
        lines.append(
            f"| greedy tokens equal ({formats[fmt]}) | {a['same']}/{a['of']} "
            f"(first {a['prefix']} identical) | | | | | |"
        )
        t = results["teacher_forced"][fmt]
        gaps = ", ".join(f"{g:.2f}" for g in t["gaps"][:5]) or "none"
        lines.append(
            f"| fed llama.cpp's tokens ({formats[fmt]}) | same choice {t['same']}/{t['of']}; "
            f"logit gaps where not: {gaps} | | | | | |"
        )
    lines.append("")
    lines.append("image request, default VLM, vislang only (ms, % of total):")
    lines.append(
        "| format | preprocess | vision tower | prefill | decode | total | prompt tokens | load avg |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for fmt, parts in results["image_request"].items():
        cells = [
            f"{1e3 * parts[k]:.0f} ({100 * parts[k] / parts['total']:.0f}%)"
            for k in ("preprocess", "vision", "prefill", "decode")
        ]
        lines.append(
            f"| {formats[fmt]} | {' | '.join(cells)} | {1e3 * parts['total']:.0f} | "
            f"{parts['prompt_tokens']} | {parts['loadavg'][0]:.2f} |"
        )
    return "\n".join(lines)


def report(results: dict) -> str:
    tk = results["tokenization"]
    lines = [
        f"machine: {results['machine']}; load average now {loadavg()}",
        f"file: {results['file']}; llama-cpp-python {results['llama_cpp']}; "
        f"{results['threads']} threads each side",
        f"chat prompt: {tk['chat_tokens']} tokens, llama.cpp's ids fed to both sides; vislang's tokenizer "
        f"gives {'the same' if tk['chat_ids_equal'] else 'DIFFERENT'} ids for the rendered text, "
        f"{'the same' if tk['prefill_ids_equal'] else 'DIFFERENT'} for the prefill text; the default VLM's "
        f"template renders {'the same' if results['vlm_chat_ids_equal'] else 'a different'} prompt",
        "8 requests: vislang's engine on the default VLM (same SmolLM2 weights); "
        f"llama-server: {results['server']}",
        "",
        results["table"],
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="best of 1 instead of 3 in each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds; the table shows medians")
    parser.add_argument("--formats", default="q4,int8,fp32", help="vislang weight formats, comma-separated")
    parser.add_argument("--threads", type=int, default=0, help="threads for both sides (default: PyTorch's)")
    parser.add_argument("--server", default=None, help="llama-server binary (default: $LLAMA_SERVER or PATH)")
    parser.add_argument("--json", default=None, help="write every measurement here")
    args = parser.parse_args(argv)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    missing = llama_peer.available()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    results = run(args)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
