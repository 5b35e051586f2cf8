"""llama.cpp as a peer: the same GGUF file through llama-cpp-python (batch 1) and llama-server (slots).

Both sides are timed as vislang.bench times vislang: best of N after a warm-up, and decode rate as
(time of n + 1 tokens - time of 1 token) / n, so prefill cancels out. Greedy decoding here is the
argmax of the last logits, read straight from llama.cpp's buffer: no sampler chain in between.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from vislang.bench import best_time, decode_rate

INSTALL = "pip install 'vislang[peers]' (builds llama.cpp from source: a C++ compiler and cmake are needed)"


def available() -> str | None:
    """None when llama-cpp-python imports, else what to do about it."""
    try:
        import llama_cpp  # noqa: F401
    except Exception as e:  # an ImportError, or a broken shared library (OSError)
        return f"llama.cpp peer not installed: {INSTALL} ({type(e).__name__}: {e})"
    return None


def server_binary() -> str | None:
    """llama-server: $LLAMA_SERVER, else the one on PATH (the pip package does not ship it)."""
    return os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")


class LlamaPeer:
    """One llama.cpp context over a GGUF file, driven token by token (the low-level eval loop)."""

    def __init__(self, path: str | Path, threads: int = 2, n_ctx: int = 1024):
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=n_ctx,
            n_batch=512,
            verbose=False,
            logits_all=False,
        )
        self.n_vocab = self.llm.n_vocab()

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """llama.cpp's own tokenization; special: control tokens such as <|im_start|> are parsed."""
        return self.llm.tokenize(text.encode(), add_bos=False, special=special)

    def _argmax(self) -> int:
        # the last evaluated position's logits (with logits_all=False llama.cpp keeps only that row)
        ptr = self.lib.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def greedy(self, prompt_ids: list[int], n: int) -> list[int]:
        """n new tokens, greedy, never stopping early: one prefill, then n - 1 one-token evals."""
        llm = self.llm
        llm.reset()
        llm.eval(prompt_ids)
        out = [self._argmax()]
        for _ in range(n - 1):
            llm.eval([out[-1]])
            out.append(self._argmax())
        return out

    def decode_rate(
        self, prompt_ids: list[int], new_tokens: int, repeats: int = 3
    ) -> tuple[float, list[int]]:
        """(tokens/s of decoding alone, the greedy tokens of a new_tokens run)."""
        rate = decode_rate(lambda n: self.greedy(prompt_ids, n), new_tokens, repeats)
        return rate, self.greedy(prompt_ids, new_tokens)

    def prefill_rate(self, ids: list[int], repeats: int = 3) -> float:
        """Tokens/s of evaluating `ids` from an empty cache (one batch: n_batch is 512)."""

        def run():
            self.llm.reset()
            self.llm.eval(ids)

        return len(ids) / best_time(run, repeats)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float = 600.0) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class LlamaServer:
    """llama-server with `slots` parallel sequences (continuous batching is its default), started
    on a free local port; a context manager that stops it."""

    def __init__(self, binary: str, path: str | Path, slots: int = 8, threads: int = 2, slot_ctx: int = 512):
        self.slots = slots
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        args = [binary, "-m", str(path), "-t", str(threads), "-tb", str(threads), "-np", str(slots)]
        args += ["-c", str(slots * slot_ctx), "--port", str(port), "--host", "127.0.0.1", "--no-webui"]
        # its log goes to a file: a pipe nobody reads would fill up and stall the server
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the server runs; close() closes it)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def log_tail(self, chars: int = 2000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # 503 while loading, refused before listening
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"llama-server did not answer /health within {timeout:.0f} s")

    def complete(self, prompt_ids: list[int], n_predict: int) -> dict:
        """One greedy completion of exactly n_predict tokens, the prompt evaluated afresh."""
        body = {
            "prompt": prompt_ids,
            "n_predict": n_predict,
            "temperature": 0,
            "ignore_eos": True,
            "cache_prompt": False,
            "return_tokens": True,
        }
        return _post(self.url + "/completion", body)

    def throughput(self, requests: list[tuple[list[int], int]], repeats: int = 1) -> tuple[float, int]:
        """(aggregate tokens/s, tokens) for (prompt ids, new tokens) requests sent at once, one
        connection each; the best of `repeats` rounds, after a warm-up request."""
        self.complete(requests[0][0], 2)
        best, tokens = 0.0, 0
        for _ in range(repeats):
            with ThreadPoolExecutor(len(requests)) as pool:
                start = time.perf_counter()
                replies = list(pool.map(lambda r: self.complete(*r), requests))
                seconds = time.perf_counter() - start
            tokens = sum(r["tokens_predicted"] for r in replies)
            expected = sum(k for _, k in requests)
            if tokens != expected:
                raise RuntimeError(f"llama-server generated {tokens} tokens, {expected} asked")
            best = max(best, tokens / seconds)
        return best, tokens

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def server_throughput(
    binary: str,
    path: str | Path,
    requests: list[tuple[list[int], int]],
    slots: int = 8,
    threads: int = 2,
    repeats: int = 1,
) -> tuple[float, int]:
    """(aggregate tokens/s, tokens) of llama-server with `slots` slots on requests sent at once."""
    with LlamaServer(binary, path, slots, threads) as server:
        return server.throughput(requests, repeats)
