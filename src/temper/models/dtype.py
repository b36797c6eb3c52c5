"""Which float dtype to use here: bf16 only where it is measured faster than fp32."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch


def pick_dtype(dtype: str = "auto") -> torch.dtype:
    """auto -> bf16 where it is faster (CUDA with bf16, or a CPU whose measured bf16 matmul beats fp32)."""
    if dtype == "fp32":
        return torch.float32
    if dtype == "fp16":
        return torch.float16
    if dtype == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if bf16_supported() else torch.float32


def bf16_supported() -> bool:
    """Whether bf16 is the better choice here: CUDA with bf16, or a CPU whose bf16 matmul outruns its fp32 one.

    The CPU flag alone is not enough. A VM can expose AVX512-BF16 but hide AMX, and on such a machine (an
    Emerald Rapids VM, 2026-12-02) oneDNN's bf16 matmul ran at half the fp32 speed (75 vs 150 GFLOP/s per
    core), so an `auto` that trusted the flag made training 2x slower. So we measure, once per process.
    """
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False  # without them torch emulates bf16 at a few GFLOP/s; no need to measure
    return cpu_bf16_speedup() > BF16_MIN_SPEEDUP


BF16_MIN_SPEEDUP = 1.1  # below this, bf16's lost precision buys too little (seen: 0.5x on one VM, 4x on EPYC)


@functools.cache
def cpu_bf16_speedup(n: int = 512, rounds: int = 6) -> float:
    """bf16 / fp32 throughput of an n x n x n matmul at the current thread count (~50 ms).

    The two dtypes are timed in alternation, best of `rounds` each: the first matmuls of a process are slow
    (library start-up), and a one-sided warm-up once made fp32 look 3x slower than it is.
    """
    mats = {
        dt: (torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)) for dt in (torch.float32, torch.bfloat16)
    }
    best = dict.fromkeys(mats, float("inf"))
    for r in range(rounds + 2):
        for dt, (a, b) in mats.items():
            start = time.perf_counter()
            a @ b
            if r >= 2:  # two untimed rounds first
                best[dt] = min(best[dt], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]
