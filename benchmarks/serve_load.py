"""Load on loopback: N concurrent chat requests with images against `vislang serve`.

    python benchmarks/serve_load.py [--requests 32] [--max-tokens 48] [--weights int8]

Starts the server with the default model in a subprocess, sends every request at once (each with
a different world scene as a data URL, from its own thread), and prints errors, p50 / p99 latency
and the aggregate completion tokens/s over the whole run.
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


def start(weights: str, workdir: str):
    port = free_port()
    log = open(os.path.join(workdir, "server.log"), "w")  # noqa: SIM115 (open for the server's lifetime)
    cmd = [sys.executable, "-m", "vislang", "serve", "--port", str(port), "--weights", weights]
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


def one(base: str, i: int, max_tokens: int, out: list):
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": scene_url(i)}},
                    {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]},
                ],
            }
        ],
        "max_tokens": max_tokens,
    }
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            reply = json.loads(r.read())
        out[i] = (time.perf_counter() - start, reply["usage"]["completion_tokens"], None)
    except Exception as e:  # counted and reported, never hidden
        out[i] = (time.perf_counter() - start, 0, repr(e))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--weights", default="int8", choices=FORMATS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        proc, base = start(args.weights, work)
        try:
            one(base, 0, 2, [None])  # warm-up
            results: list = [None] * args.requests
            threads = [
                threading.Thread(target=one, args=(base, i, args.max_tokens, results))
                for i in range(args.requests)
            ]
            start_t = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start_t
        finally:
            proc.terminate()
            proc.wait(10)
    latencies = sorted(r[0] for r in results)
    errors = [r[2] for r in results if r[2]]
    tokens = sum(r[1] for r in results)
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"machine: {machine()}")
    print(
        f"{args.requests} concurrent requests with an image each, "
        f"max_tokens {args.max_tokens}, weights {args.weights}"
    )
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"latency p50 {p(0.5):.2f} s, p99 {p(0.99):.2f} s; wall {wall:.1f} s")
    print(f"aggregate: {tokens} completion tokens, {tokens / wall:.1f} tokens/s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
