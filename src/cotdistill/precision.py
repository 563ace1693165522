"""Which float precision a job computes in, decided by measuring this machine rather than assuming.

Shared by fine-tuning (bf16 autocast) and evaluation (bf16 weights), and the benchmark's MFU denominator.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU has native bf16 instructions (whether they beat fp32 is measured)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16_MARGIN = 1.25  # bf16 must beat fp32 by this much: near-equal timings must not flip the choice between runs


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 8, fresh: bool = False) -> float:
    """This CPU's matmul throughput (FLOP/s) in `dtype` with the current thread count (best of 3 timings): the
    precision choice and the benchmark's MFU denominator. Native bf16 instructions do not make bf16 faster: on one
    AVX512-BF16 Xeon bf16 matmuls ran at half the fp32 rate (164 against 312 GFLOP/s, 2 threads). Measured once per
    process unless `fresh` (a benchmark taking the best of the machine's state before and after its runs: on one
    shared 2-core VM the same matmul ran at 147 GFLOP/s before ten minutes of training and at 103 after)."""
    measure = _matmul_peak.__wrapped__ if fresh else _matmul_peak
    return measure(dtype, n, reps, torch.get_num_threads())


@lru_cache(maxsize=None)
def _matmul_peak(dtype: torch.dtype, n: int, reps: int, threads: int) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 * reps / best


def use_bf16(precision: str, key: str = "training.precision", reproducible: bool = False) -> bool:
    """Whether to compute in bf16: ``auto`` takes bf16 on GPUs that support it, and on CPUs only where a measured
    bf16 matmul beats fp32 by `BF16_MARGIN` (without native bf16 it is emulated and slower). `key` names the
    config key in errors. `reproducible` (evaluation): on a CPU ``auto`` keeps fp32, because bf16 inference there
    was not reproducible between processes (on an AMX Xeon, 1 of 6 identical evaluations of SmolLM2-135M in bf16
    wrote a different rationale for 2 of 200 items, and confidences moved by up to 0.08 with their batch
    companions; three fp32 runs were identical), at 1.5x the bf16 time; ``bf16`` still forces it."""
    if precision == "fp32":
        return False
    gpu = torch.cuda.is_available()
    available = torch.cuda.is_bf16_supported() if gpu else cpu_has_bf16()
    if precision == "bf16":
        if not available:
            raise ValueError(f"{key} is bf16 but this machine has no bf16 support; use auto or fp32")
        return True
    if gpu or not available:
        return available
    if reproducible:
        log.info("precision auto: fp32 on a CPU, whose bf16 inference is not reproducible between processes")
        return False
    faster = matmul_peak(torch.bfloat16) / matmul_peak(torch.float32)
    log.info("precision auto: bf16 matmul at %.2fx the fp32 rate on this CPU -> %s", faster,
             "bf16" if faster >= BF16_MARGIN else "fp32")
    return faster >= BF16_MARGIN
