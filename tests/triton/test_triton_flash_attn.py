"""Flash attention kernels (backends/kernels/flash_attn.py) against float64 attention on fresh
random inputs: output, log-sum-exp and dq, dk, dv, with every kernel-written buffer
poisoned with NaN. Lengths cover one row, block tails (17, 100) and one past a 128 block
(129); Tq < Tk is the KV-cache case (queries are the last positions).

bfloat16 runs on a GPU only: the interpreter loads bfloat16 wrongly (errors ~1e9)."""

import math

import pytest
import torch
from conftest import DEVICE
from triton_checks import assert_close

pytest.importorskip("triton", reason="the Triton kernels need pip install 'gptbench[triton]'")
from backends.kernels import flash_attn as fa

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = [torch.float32, torch.float16,
          pytest.param(torch.bfloat16, marks=pytest.mark.skipif(DEVICE == "cpu", reason="interpreter has no bf16"))]


def reference(q, k, v, do):
    """float64 causal attention with the last-Tq alignment: (o, lse, dq, dk, dv)."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    Tq, Tk = q.shape[2], k.shape[2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, NH, Tq, Tk)
    visible = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
    s = s.masked_fill(~visible, float("-inf"))
    o = torch.softmax(s, -1) @ v
    o.backward(do.double())
    return o, torch.logsumexp(s, -1), q.grad, k.grad, v.grad


def inputs(B, NH, Tq, Tk, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v, do = (torch.randn(B, NH, T, D, generator=g).to(DEVICE, dtype) for T in (Tq, Tk, Tk, Tq))
    return q, k, v, do


def check_kernels(B, NH, Tq, Tk, D, dtype, seed):
    q, k, v, do = inputs(B, NH, Tq, Tk, D, dtype, seed)
    scale = 1 / math.sqrt(D)
    o, lse = fa._forward(q, k, v, scale)
    grads = fa._backward(q, k, v, o, lse, do, scale)
    for name, x, r in zip(("o", "lse", "dq", "dk", "dv"), (o, lse, *grads), reference(q, k, v, do)):
        assert_close(name, x, r, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("T", (1, 17, 100, 129))
def test_kernels_match_float64(poison, T, D, dtype):
    poison(fa)
    check_kernels(2, 2, T, T, D, dtype, seed=T * 1000 + D)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("Tq, Tk", ((1, 37), (20, 129)))
def test_kernels_with_a_kv_cache_match_float64(poison, Tq, Tk, D, dtype):
    poison(fa)
    check_kernels(1, 2, Tq, Tk, D, dtype, seed=Tq * 1000 + Tk + D)


def test_autograd_on_strided_views_and_padded_head_dim(poison):
    """As the model calls it: q, k, v are permuted views of one (B, T, 3, NH, HS) tensor, and
    HS = 24 is zero-padded to the kernels' 32."""
    poison(fa)
    B, T, NH, HS = 2, 33, 3, 24
    qkv = torch.randn(B, T, 3, NH, HS, generator=torch.Generator().manual_seed(5)).to(DEVICE).requires_grad_()
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, NH, T, HS), not contiguous
    do = torch.randn(B, NH, T, HS, device=DEVICE)
    o = fa.flash_attention(q, k, v)
    (dqkv,) = torch.autograd.grad(o, qkv, do)
    ref_o, _, dq, dk, dv = reference(q, k, v, do)
    assert_close("o", o, ref_o, torch.float32)
    assert_close("dqkv", dqkv, torch.stack((dq, dk, dv)).permute(1, 3, 0, 2, 4), torch.float32)


def test_bad_shapes_are_refused():
    q = torch.zeros(1, 1, 8, 16, device=DEVICE)
    with pytest.raises(ValueError, match="Tk >= Tq"):
        fa.flash_attention(q, q[:, :, :4], q[:, :, :4])
    big = torch.zeros(1, 1, 8, 256, device=DEVICE)
    with pytest.raises(ValueError, match="up to 128"):
        fa.flash_attention(big, big, big)
