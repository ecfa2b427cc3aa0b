"""bf16 on a CPU: fast with native bf16 units (AVX512_BF16, AMX), emulated and far slower without.

On a CPU without them torch still runs bf16 matmuls, in software: one host measured 0.25 GFLOP/s
against 9.7 in fp32, 39x slower, with no word said. `train.precision: bf16` on such a CPU warns
once per process with the ratio measured there (two small matmuls, a few milliseconds), and
the run goes on: the weights and checkpoints stay fp32 either way, so it is slow, not wrong.
"""

from __future__ import annotations

import sys
import time
from functools import cache
from pathlib import Path

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def has_native_bf16() -> bool | None:
    """True/False from the CPU's flags; None where they cannot be read (not Linux x86)."""
    flags = cpu_flags()
    if not flags:
        return None
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def bf16_slowdown(size: int = 256, repeats: int = 3) -> float:
    """Seconds of a bf16 matmul over an fp32 one of the same size, best of `repeats`, here."""
    import torch

    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.ones(size, size, dtype=dtype), torch.ones(size, size, dtype=dtype)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            began = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - began)
        seconds[dtype] = best
    return seconds[torch.bfloat16] / seconds[torch.float32]


@cache
def warn_if_bf16_is_emulated() -> str | None:
    """Once per process: the warning printed when this CPU lacks native bf16 (else None)."""
    if has_native_bf16() is not False:
        return None
    ratio = bf16_slowdown()
    message = (
        f"netgeom: warning: train.precision: bf16 on a CPU without native bf16 (no {' or '.join(NATIVE_BF16_FLAGS)} "
        f"in /proc/cpuinfo): a bf16 matmul measured {ratio:.1f}x the time of fp32 here; use fp32 on this CPU"
    )
    print(message, file=sys.stderr, flush=True)
    return message
