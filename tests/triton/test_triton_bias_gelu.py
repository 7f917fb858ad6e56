"""Bias + GELU kernels (backends/kernels/bias_gelu.py) against float64 torch (F.gelu with
approximate="tanh": tanh, not the kernels' sigmoid form; F.gelu for the erf form): output and dh, db, buffers
poisoned with NaN. Widths below, at and off a power of two and over one column block; row
counts off the row tile; and few backward groups, so that each sums several tiles."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICE
from triton_checks import assert_close

pytest.importorskip("triton", reason="the Triton kernels need pip install 'gptbench[triton]'")
from backends.kernels import bias_gelu as bg

DTYPES = [torch.float32, torch.float16,
          pytest.param(torch.bfloat16, marks=pytest.mark.skipif(DEVICE == "cpu", reason="interpreter has no bf16"))]


def reference(h, b, dy, gelu=lambda x: F.gelu(x, approximate="tanh")):
    h, b = (t.detach().double().requires_grad_() for t in (h, b))
    y = gelu(h + b)
    y.backward(dy.double())
    return y, h.grad, b.grad


def inputs(shape, dtype, seed):
    """h in `dtype`, spread over GELU's curved range (N(0, 4)); b float32 as the backend keeps it."""
    g = torch.Generator().manual_seed(seed)
    h = (2.0 * torch.randn(shape, generator=g)).to(DEVICE, dtype).requires_grad_()
    b = (0.5 * torch.randn(shape[-1], generator=g)).to(DEVICE).requires_grad_()
    return h, b, torch.randn(shape, generator=g).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, groups", (((1, 1, 16), 128), ((2, 17, 64), 128), ((3, 100, 48), 2),
                                           ((1, 300, 129), 128), ((2, 70, 1100), 3)))
def test_bias_gelu_matches_float64(poison, monkeypatch, shape, groups, dtype):
    poison(bg)
    monkeypatch.setattr(bg, "BWD_GROUPS", groups)
    h, b, dy = inputs(shape, dtype, sum(shape))
    y = bg.bias_gelu(h, b)
    grads = torch.autograd.grad(y, (h, b), dy)
    assert y.dtype == dtype and [t.dtype for t in grads] == [dtype, torch.float32]
    # db sums over all rows: compare at the scale of one row
    n = h.numel() // shape[-1]
    for name, out, r, s in zip(("y", "dh", "db"), (y, *grads), reference(h, b, dy), (1, 1, n ** -0.5)):
        assert_close(name, out * s, r * s, dtype)


@pytest.mark.parametrize("dtype", DTYPES[:2])
@pytest.mark.parametrize("shape, groups", (((2, 17, 64), 128), ((3, 100, 48), 2), ((1, 300, 129), 128)))
def test_exact_erf_bias_gelu_matches_float64(poison, monkeypatch, shape, groups, dtype):
    """The erf form (GPTSpec.gelu "erf", nanoGPT's nn.GELU) against float64 F.gelu."""
    poison(bg)
    monkeypatch.setattr(bg, "BWD_GROUPS", groups)
    h, b, dy = inputs(shape, dtype, sum(shape))
    y = bg.bias_gelu(h, b, "erf")
    grads = torch.autograd.grad(y, (h, b), dy)
    n = h.numel() // shape[-1]
    for name, out, r, s in zip(("y", "dh", "db"), (y, *grads), reference(h, b, dy, F.gelu), (1, 1, n ** -0.5)):
        assert_close(name, out * s, r * s, dtype)


@pytest.mark.parametrize("form", ("tanh", "erf"))
def test_far_tails_are_exact_limits(poison, form):
    """|h + b| up to 50: gelu is 0 or x and gelu' is 0 or 1, with no overflow to NaN (erf's
    gelu'(-12) is -12·phi(12) = -2.6e-31, which float32 holds)."""
    poison(bg)
    h = torch.tensor([[-50.0, -12.0, 12.0, 50.0]], device=DEVICE, requires_grad=True)
    b = torch.zeros(4, device=DEVICE, requires_grad=True)
    y = bg.bias_gelu(h, b, form)
    (dh,) = torch.autograd.grad(y, h, torch.ones_like(y))
    assert y.tolist() == [[0.0, 0.0, 12.0, 50.0]]
    tail = 0.0 if form == "tanh" else -12 * math.exp(-72) / math.sqrt(2 * math.pi)
    assert dh[0, 0] == 0 and dh[0, 2:].tolist() == [1.0, 1.0] and dh[0, 1].item() == pytest.approx(tail, rel=1e-5)


def test_float32_check_tells_erf_gelu_from_tanh():
    """The erf kernel is not the tanh one: against the tanh reference it fails, in every output
    (what the TanhGelu mutant of tests/test_mutants.py does to an erf spec)."""
    h, b, dy = inputs((4, 64), torch.float32, 0)
    y = bg.bias_gelu(h, b, "erf")
    grads = torch.autograd.grad(y, (h, b), dy)
    for name, out, tanh in zip(("y", "dh", "db"), (y, *grads), reference(h, b, dy)):
        with pytest.raises(AssertionError, match=name):
            assert_close(name, out, tanh, torch.float32)


def test_float32_check_tells_tanh_gelu_from_erf():
    """The float32 tolerance is tight enough to catch the wrong GELU (erf's, as the ErfGelu
    mutant of tests/test_mutants.py) in output and derivative."""
    h, b, dy = inputs((4, 64), torch.float32, 0)
    for name, ours, erf in zip(("y", "dh", "db"), reference(h, b, dy), reference(h, b, dy, F.gelu)):
        with pytest.raises(AssertionError, match=name):
            assert_close(name, erf, ours, torch.float32)
