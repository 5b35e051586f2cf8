"""Load on loopback: N concurrent chat requests against `vislang serve`, short and long mixed.

    python benchmarks/serve_load.py [--requests 32] [--long 4] [--max-tokens 48] [--weights int8]
                                    [--kv-budget-mb 4096]

Starts the server with the default model in a subprocess and sends every request at once, each from
its own thread: most with a different world scene as a data URL and a short question, `--long` of
them with text conversations of 2,000 to 7,800 tokens (SmolLM2's context is 8,192). Prints errors
(and any 5xx), p50 / p99 latency, the aggregate completion tokens/s over the whole run, and the
server's peak memory (max RSS) beside the KV budget it ran under.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from vislang.bench import machine
from vislang.data.world import WorldConfig, generate_sample
from vislang.generation.quantize import FORMATS

QUESTIONS = [
    "What color is the circle?",
    "How many objects are there?",
    "Describe the image.",
    "Is there a red square?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(weights: str, workdir: str, kv_budget_mb: int):
    port = free_port()
    log = open(os.path.join(workdir, "server.log"), "w")  # noqa: SIM115 (open for the server's lifetime)
    cmd = [sys.executable, "-m", "vislang", "serve", "--port", str(port), "--weights", weights]
    cmd += ["--kv-budget-mb", str(kv_budget_mb)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(base + "/health", timeout=1):
                return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def scene_url(i: int) -> str:
    buf = io.BytesIO()
    generate_sample("scene", "test", 11, i, WorldConfig()).images[0].save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def long_conversation(i: int, facts: int) -> list[dict]:
    """A fact is 19-21 tokens (more digits as k grows): 105 facts ~ 2,000 tokens, 365 ~ 7,800."""
    text = " ".join(f"Fact {k}: box {k} of row {i} holds {k * 7 % 100} marbles." for k in range(facts))
    return [{"role": "user", "content": text + " Which box holds the most marbles?"}]


def one(base: str, i: int, max_tokens: int, out: list, facts: int = 0):
    if facts:
        messages = long_conversation(i, facts)
    else:
        content = [
            {"type": "image_url", "image_url": {"url": scene_url(i)}},
            {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]},
        ]
        messages = [{"role": "user", "content": content}]
    body = {"messages": messages, "max_tokens": max_tokens}
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=1800) as r:
            reply = json.loads(r.read())
        out[i] = (time.perf_counter() - start, reply["usage"]["completion_tokens"], None, r.status)
    except urllib.error.HTTPError as e:  # counted and reported, never hidden
        out[i] = (time.perf_counter() - start, 0, f"{e.code}: {e.read()[:200]!r}", e.code)
    except Exception as e:
        out[i] = (time.perf_counter() - start, 0, repr(e), 0)


def peak_rss_gb(pid: int) -> float:
    """The process's high-water resident memory (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--weights", default="int8", choices=FORMATS)
    parser.add_argument("--long", type=int, default=4, help="requests with 2,000-7,800-token prompts")
    parser.add_argument("--kv-budget-mb", type=int, default=4096)
    args = parser.parse_args()
    facts = [0] * args.requests
    for k in range(min(args.long, args.requests)):  # spread from ~2,000 to ~7,800 tokens
        facts[k * args.requests // max(1, args.long)] = 105 + k * (260 // max(1, args.long - 1))
    with tempfile.TemporaryDirectory() as work:
        proc, base = start(args.weights, work, args.kv_budget_mb)
        try:
            one(base, 0, 2, [None])  # warm-up
            results: list = [None] * args.requests
            threads = [
                threading.Thread(target=one, args=(base, i, args.max_tokens, results, facts[i]))
                for i in range(args.requests)
            ]
            start_t = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start_t
            peak = peak_rss_gb(proc.pid)
            with urllib.request.urlopen(base + "/health", timeout=10) as r:
                kv_peak = json.loads(r.read())["kv_cache_peak_bytes"] / 2**30
        finally:
            proc.terminate()
            proc.wait(10)
    latencies = sorted(r[0] for r in results)
    errors = [r[2] for r in results if r[2]]
    tokens = sum(r[1] for r in results)
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"machine: {machine()}")
    print(
        f"{args.requests} concurrent requests ({args.requests - args.long} with an image, {args.long} with "
        f"2,000-7,800-token prompts), max_tokens {args.max_tokens}, weights {args.weights}"
    )
    server_errors = sum(1 for r in results if r[3] >= 500)
    print(f"errors: {len(errors)}, 5xx: {server_errors}" + (f" (first: {errors[0]})" if errors else ""))
    print(
        f"server peak memory (max RSS) {peak:.2f} GB, of which KV cache at most {kv_peak:.2f} GB "
        f"(budget {args.kv_budget_mb / 1024:.2f} GB)"
    )
    print(f"latency p50 {p(0.5):.2f} s, p99 {p(0.99):.2f} s; wall {wall:.1f} s")
    print(f"aggregate: {tokens} completion tokens, {tokens / wall:.1f} tokens/s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
