"""Native kernels for block-quantized decoding, compiled on first use with PyTorch's own tooling.

`native()` returns the compiled module, or None where no C++ compiler is present or the build
fails; callers then take the pure-PyTorch path (same numbers to rounding, slower). The build is
cached by PyTorch (TORCH_EXTENSIONS_DIR, else the user's cache folder) and redone only when the
source or flags change; `vislang build-kernels` runs it ahead of time. VISLANG_NATIVE=0 turns the
kernels off for the process.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_LOCK = threading.Lock()
_STATE: dict = {}


def build_error() -> str | None:
    """Why `native()` is None (no compiler, build failure, turned off), or None when it is not."""
    native()
    return _STATE.get("error")


def native():
    """The compiled extension (qmatmul, dequantize, DecodeModel), or None."""
    with _LOCK:
        if "module" in _STATE:
            return _STATE["module"]
        _STATE["module"], _STATE["error"] = _build()
        if _STATE["error"]:
            log.warning("native decode kernels unavailable (%s): using the PyTorch path", _STATE["error"])
        return _STATE["module"]


def _build():
    if os.environ.get("VISLANG_NATIVE", "1") == "0":
        return None, "turned off by VISLANG_NATIVE=0"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return None, f"no C++ compiler ({compiler}) on PATH"
    try:
        from torch.utils.cpp_extension import load

        # -march=native: the AVX512-VNNI integer dot products exist only where the CPU has them;
        # the scalar fallback inside the source keeps other CPUs correct
        flags = ["-O3", "-march=native", "-fopenmp"]
        module = load(
            name="vislang_decode",
            sources=[str(_HERE / "decode.cpp")],
            extra_include_paths=[str(_HERE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as e:  # a compiler that cannot build it: the PyTorch path still works
        return (
            None,
            f"build failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}",
        )
    return module, None
