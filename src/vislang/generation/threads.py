"""Keeping PyTorch's OpenMP workers from slowing the engine's model thread.

With GNU OpenMP (PyTorch's CPU wheels), every thread that runs a parallel op owns a pool of worker
threads, kept for its life. When the workers of all pools outnumber the cores, GNU OpenMP stops
letting idle workers spin and puts them to sleep, so every parallel region, of every pool, pays a
wake-up. A decode step is hundreds of short regions: on 2 cores, a batch-8 step took 43 ms on the
engine thread once the main thread had loaded the model (and so owned a worker), against 36 ms with
the main thread's pool released.

So the engine releases the idle pool of the thread that creates it (the one that most likely
loaded the model), and runs the caller-side work of `submit` (image transforms) on one thread,
which needs no pool. Both are no-ops where PyTorch does not use GNU OpenMP.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

import torch


def _libgomp():
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    candidates = sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*")) + [Path("libgomp.so.1")]
    for path in candidates:
        try:
            return ctypes.CDLL(str(path))
        except OSError:
            continue
    return None


_GOMP = _libgomp()


def release_idle_workers() -> bool:
    """Free the calling thread's idle OpenMP workers (they come back if it runs a parallel op);
    True if released."""
    if _GOMP is None or not hasattr(_GOMP, "omp_pause_resource_all"):
        return False
    return _GOMP.omp_pause_resource_all(1) == 0  # 1 = omp_pause_soft


@contextlib.contextmanager
def single_threaded():
    """Run the block's PyTorch ops on the calling thread alone (OpenMP's thread count is a
    per-thread setting, so the model thread keeps all of its own)."""
    if _GOMP is None:
        yield
        return
    before = _GOMP.omp_get_max_threads()
    _GOMP.omp_set_num_threads(1)
    try:
        yield
    finally:
        _GOMP.omp_set_num_threads(before)
