"""Cross-entropy kernels (backends/kernels/cross_entropy.py) against float64 log-softmax:
the mean loss and dlogits for a non-unit upstream gradient, buffers poisoned with NaN.
Vocabulary sizes: below, at and past a chunk (the forward streams 2048 columns at a time)."""

import pytest
import torch
from conftest import DEVICE
from triton_checks import assert_close

pytest.importorskip("triton", reason="the Triton kernels need pip install 'gptbench[triton]'")
from backends.kernels import cross_entropy as ce

DTYPES = [torch.float32, torch.float16,
          pytest.param(torch.bfloat16, marks=pytest.mark.skipif(DEVICE == "cpu", reason="interpreter has no bf16"))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, V", ((1, 5), (17, 65), (3, 2048), (4, 5000)))
def test_cross_entropy_matches_float64(poison, n, V, dtype):
    poison(ce)
    g = torch.Generator().manual_seed(n * V)
    logits = (3 * torch.randn(2, n, V, generator=g)).to(DEVICE, dtype).requires_grad_()
    targets = torch.randint(0, V, (2, n), generator=g).to(DEVICE)
    loss = ce.cross_entropy(logits, targets)
    (dlogits,) = torch.autograd.grad(loss, logits, torch.tensor(0.7, device=DEVICE))

    x = logits.detach().double().requires_grad_()
    ref = torch.nn.functional.cross_entropy(x.reshape(-1, V), targets.reshape(-1))
    ref.backward(torch.tensor(0.7, dtype=torch.float64, device=DEVICE))
    assert loss.dtype == torch.float32 and dlogits.dtype == dtype
    assert_close("loss", loss, ref, dtype)
    # dlogits are O(1/(n V)): compare them at the scale of one row's gradient
    assert_close("dlogits", dlogits * (2 * n), x.grad * (2 * n), dtype)


def test_large_logits_do_not_overflow(poison):
    """The running max keeps exp in range: exp(100) overflows float32. The answer, log(1 + e),
    is known to within the float32 spacing of the logits (1e-5 at 100)."""
    poison(ce)
    logits = torch.tensor([[100.0, 99.0, -100.0]], device=DEVICE, requires_grad=True)
    loss = ce.cross_entropy(logits, torch.tensor([1], device=DEVICE))
    (dlogits,) = torch.autograd.grad(loss, logits)
    assert abs(float(loss.detach()) - 1.3132616875182228) < 3e-5
    p = torch.tensor([[1 / (1 + 1 / 2.718281828459045), 1 / (1 + 2.718281828459045), 0.0]], dtype=torch.float64)
    assert_close("dlogits", dlogits, p - torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), torch.float32)
