"""LayerNorm kernels (backends/kernels/layernorm.py) against float64 LayerNorm: output and
dx, dw, db, buffers poisoned with NaN. Widths below, at and off a power of two; row counts
off the tile of stacked rows; and few backward groups, so that each sums several tiles."""

import pytest
import torch
from conftest import DEVICE
from triton_checks import assert_close

pytest.importorskip("triton", reason="the Triton kernels need pip install 'gptbench[triton]'")
from backends.kernels import layernorm as ln

EPS = 1e-5
DTYPES = [torch.float32, torch.float16,
          pytest.param(torch.bfloat16, marks=pytest.mark.skipif(DEVICE == "cpu", reason="interpreter has no bf16"))]


def reference(x, w, b, dy):
    x, w, b = (t.detach().double().requires_grad_() for t in (x, w, b))
    y = torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, EPS)
    y.backward(dy.double())
    return y, x.grad, w.grad, b.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, groups", (((1, 1, 16), 256), ((2, 17, 32), 256), ((3, 100, 48), 4),
                                           ((1, 300, 129), 256)))
def test_layernorm_matches_float64(poison, monkeypatch, shape, groups, dtype):
    """Inputs in `dtype` (x off-centre and spread, w near 1, b small); float32 parameters as the
    backend keeps them. The output is written in `dtype`, as autocast's matmul wants it."""
    poison(ln)
    monkeypatch.setattr(ln, "BWD_GROUPS", groups)
    g = torch.Generator().manual_seed(sum(shape))
    C = shape[-1]
    x = (1.0 + 3.0 * torch.randn(shape, generator=g)).to(DEVICE, dtype).requires_grad_()
    w = (1.0 + 0.1 * torch.randn(C, generator=g)).to(DEVICE).requires_grad_()
    b = (0.1 * torch.randn(C, generator=g)).to(DEVICE).requires_grad_()
    dy = torch.randn(shape, generator=g).to(DEVICE, dtype)
    y = ln.layer_norm(x, w, b, EPS, out_dtype=dtype)
    grads = torch.autograd.grad(y, (x, w, b), dy)
    assert y.dtype == dtype and [t.dtype for t in grads] == [dtype, torch.float32, torch.float32]
    ref = reference(x, w, b, dy)
    # dw, db sum over all rows: compare at the scale of one row
    n = x.numel() // C
    for name, out, r, s in zip(("y", "dx", "dw", "db"), (y, *grads), ref, (1, 1, n ** -0.5, n ** -0.5)):
        assert_close(name, out * s, r * s, dtype)


def test_float32_input_with_half_output(poison):
    """The autocast case: a float32 residual stream normalised straight into float16."""
    poison(ln)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 64, generator=g).to(DEVICE).requires_grad_()
    w, b = torch.ones(64, device=DEVICE, requires_grad=True), torch.zeros(64, device=DEVICE, requires_grad=True)
    dy = torch.randn(4, 64, generator=g).to(DEVICE, torch.float16)
    y = ln.layer_norm(x, w, b, EPS, out_dtype=torch.float16)
    (dx,) = torch.autograd.grad(y, x, dy)
    ref_y, ref_dx, _, _ = reference(x, w, b, dy)
    assert y.dtype == torch.float16 and dx.dtype == torch.float32
    assert_close("y", y, ref_y, torch.float16)
    assert_close("dx", dx, ref_dx, torch.float32)  # dy is exact in float16, the rest is float32
