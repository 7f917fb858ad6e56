"""Backends that test the verdict itself (docs/results/noise.md): the NumPy reference under
other names, so that a matrix holds rows whose truth is known.

    Twin  the reference, unchanged: the headline must call it tied with numpy, and compare
          must call nothing on it between two runs of the same code. With GPTBENCH_TWIN_SLOWDOWN
          set (a fraction, e.g. 0.4) it spends that fraction of each training step's own time
          more: a regression of known size that no cell identity shows.
    Slow  the reference spending SLOW_FRACTION more of each training step: 40% slower, always.

The extra time is spun, not slept: a cell that sleeps a millisecond or two per step leaves its
CPU to whatever else is runnable and waits to get it back (Ray runs cells at nice 15), which
measured 2.7x slower instead of 1.4x beside a burner (docs/results/noise.md); spinning holds
the CPU, so the slowdown is the stated fraction.

    gptbench run matrices/noise.yaml      (docs/results/noise.md has the commands)
"""

from __future__ import annotations

import os
import time

from backends.numpy_ref import NumpyBackend

SLOW_FRACTION = 0.4


class _Slowed(NumpyBackend):
    """The reference, spinning `fraction()` of each training step's own time after it."""

    def fraction(self) -> float:
        return 0.0

    def train_step(self, x, y, lr):
        t0 = time.perf_counter()
        loss = super().train_step(x, y, lr)
        if self.fraction():
            end = time.perf_counter() + self.fraction() * (time.perf_counter() - t0)
            while time.perf_counter() < end:
                pass
        return loss


class Twin(_Slowed):
    name = "numpy-twin"

    def fraction(self) -> float:
        return float(os.environ.get("GPTBENCH_TWIN_SLOWDOWN") or 0.0)


class Slow(_Slowed):
    name = "numpy-slow"

    def fraction(self) -> float:
        return SLOW_FRACTION
