"""Host calibration: the measured peak that MFU is computed against (never a datasheet).

measure_gemm_flops times a square matrix product through NumPy's BLAS, the best
case for any CPU backend built on it.
"""

from __future__ import annotations

import time

import numpy as np


def measure_gemm_flops(dtype: str = "float32", n: int = 1024, repeats: int = 10) -> float:
    """Best-of-`repeats` FLOP/s of an n x n x n GEMM (2 n^3 FLOPs) on random data."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    a @ b  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best
