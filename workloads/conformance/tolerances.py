"""The one tolerance table of the suite: how close to the float64 NumPy reference a
backend computing in a given dtype must be, for each kind of check of the conformance
ladder (workloads/conformance/ladder.py).

A tensor x passes against its reference r when every element is finite and
    |x - r| <= atol * rms(r) + rtol * |r|    element-wise: catches a local error
    ||x - r|| / ||r|| <= norm_rtol           whole tensor: catches a small error everywhere,
                                             and an all-zero or constant output always fails
NaN fails both. atol is relative to the tensor's RMS rather than absolute, so one number
serves tensors of any scale: a dot product's rounding error grows with the size of its
terms, not of its result, so elements near zero carry errors of the tensor's scale.

The values come from measurement (torch eager and compiled, sdpa and math attention, on
CPU; specs tiny, lumgpt, proust; seed 0; 50 steps of batch 8) with a margin of 10x or more
in float64 and float32. The worst measured values are in the comments as
(max |x - r| / rms(r), max norm-relative error). bfloat16 and float16 were measured with
CPU autocast only; GPU kernels round differently and are not yet measured.
"""

from __future__ import annotations

from dataclasses import dataclass

# what the ladder checks: ops (level 1), step0 (level 2), loss and params (level 3: the loss
# of every step, then the final parameters)
KINDS = ("ops", "step0", "loss", "params")


@dataclass(frozen=True)
class Tolerance:
    atol: float  # times rms(reference)
    rtol: float
    norm_rtol: float


TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "float64": {
        "ops": Tolerance(1e-12, 1e-12, 1e-13),  # measured (7e-15, 8e-16)
        "step0": Tolerance(1e-12, 1e-12, 1e-13),  # (8e-15, 2e-15)
        "loss": Tolerance(1e-12, 1e-12, 1e-13),  # (4e-15, 3e-15)
        "params": Tolerance(1e-10, 1e-10, 1e-11),  # (1e-13, 1e-14)
    },
    "float32": {
        "ops": Tolerance(1e-4, 1e-4, 1e-5),  # (4e-6, 4e-7)
        "step0": Tolerance(1e-4, 1e-4, 1e-5),  # (4e-6, 8e-7)
        "loss": Tolerance(1e-5, 1e-5, 1e-5),  # (2e-7, 8e-8)
        # AdamW divides by sqrt(v): where a gradient is tiny its rounding error moves the
        # parameter by up to lr, so final parameters drift more than losses do
        "params": Tolerance(1e-3, 1e-3, 1e-4),  # (6e-5, 6e-6)
    },
    "bfloat16": {  # 8-bit mantissa: margins of ~5x only
        "ops": Tolerance(0.3, 0.05, 0.03),  # (3e-2, 5e-3)
        "step0": Tolerance(0.3, 0.05, 0.05),  # (5e-2, 1e-2)
        "loss": Tolerance(1e-2, 1e-2, 3e-3),  # (7e-4, 2e-4)
        # rounding noise amplified by AdamW dominates: this only catches gross errors, the
        # loss row is the real test of a low-precision trajectory
        "params": Tolerance(5.0, 0.5, 0.3),  # (0.7, 4e-2)
    },
    "float16": {
        "ops": Tolerance(0.05, 0.01, 5e-3),  # (5e-3, 6e-4)
        "step0": Tolerance(0.05, 0.01, 1e-2),  # (6e-3, 1e-3)
        "loss": Tolerance(1e-3, 1e-3, 3e-4),  # (7e-5, 3e-5)
        "params": Tolerance(10.0, 0.5, 0.5),  # (1.4, 0.1)
    },
}


def tolerance(dtype: str, kind: str) -> Tolerance:
    if dtype not in TOLERANCES:
        raise KeyError(f"no tolerances for dtype {dtype!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[dtype][kind]
