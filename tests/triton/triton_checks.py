"""Comparison against float64 truth for the kernel tests: the ladder's pass rule
(docs/adding-a-backend.md, "Check it"), element-wise |x - r| <= atol + rtol |r| plus a
relative-norm bound, so an all-zero output fails unless the truth is all zero; NaN never
passes. Inputs are O(1), so atol is absolute rather than scaled by rms(r)."""

import torch

from workloads.conformance.tolerances import tolerance


def assert_close(name, x, ref, dtype):
    """The suite's op-level tolerance of `dtype` (workloads/conformance/tolerances.py); the measured worst
    errors (docs/triton.md) are 5-10x below it."""
    tol = tolerance(str(dtype).removeprefix("torch."), "ops")
    atol, rtol, norm_rtol = tol.atol, tol.rtol, tol.norm_rtol
    x, ref = x.detach().double().cpu(), ref.detach().double().cpu()
    assert x.shape == ref.shape, f"{name}: shape {tuple(x.shape)} != {tuple(ref.shape)}"
    err = (x - ref).abs()
    bad = ~(err <= atol + rtol * ref.abs())  # NaN compares False, so it is bad
    assert not bad.any(), (f"{name}: {int(bad.sum())} of {x.numel()} elements off, worst at "
                           f"{tuple(int(i) for i in torch.nonzero(bad)[0])}: {x[bad][0]} vs {ref[bad][0]}")
    ref_norm = float(torch.linalg.vector_norm(ref))
    if ref_norm == 0:  # a truth of exact zeros (dq of a single key): the element rule has spoken
        return
    norm_err = float(torch.linalg.vector_norm(x - ref)) / ref_norm
    assert norm_err <= norm_rtol, f"{name}: relative norm error {norm_err:.2e} > {norm_rtol}"
