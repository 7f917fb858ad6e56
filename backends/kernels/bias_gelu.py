"""Bias + GELU (the tanh approximation or the exact erf form) in Triton, forward and backward,
math in float32.

The MLP's first half is `gelu(x @ w^T + b)`. Here the matmul runs without its bias and this
kernel adds the bias inside the GELU, so the only tensor saved for backward is the matmul's
output h; the backward recomputes gelu'(h + b) from it, and sums db over rows while dh is
still in registers (per-group partial sums, no atomics, so it is deterministic), instead of
reading dh back for a separate bias-gradient reduction.

Both forms are gelu(x) = x·s(x), gelu'(x) = s + x·ds, with (_gelu_parts):
  tanh  s = sigmoid(2u), u = sqrt(2/pi)·(x + 0.044715·x^3), which is 0.5·(1 + tanh(u))
        (backends/numpy_ref.py); ds = 2s(1 - s)·du/dx
  erf   s = Phi(x) = 0.5·(1 + erf(x/sqrt(2))), ds = phi(x) = exp(-x²/2)/sqrt(2 pi)
The form is a compile-time constant (ERF), so each form is its own kernel.
Offsets are 32-bit: rows x D must stay below 2**31 (gpt2-124m at B=64, T=1024: 2e8).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

GELU_C = tl.constexpr(math.sqrt(2.0 / math.pi))
INV_SQRT_2PI = tl.constexpr(1.0 / math.sqrt(2.0 * math.pi))


@triton.jit
def _gelu_parts(x, ERF: tl.constexpr):
    """For x float32: (s, ds) with gelu = x·s and gelu' = s + x·ds.
    tanh: s = sigmoid(2u) and s·(1 - s) both from e = exp(-2|u|) <= 1, so nothing overflows,
    and s·(1 - s) = e / (1 + e)^2 keeps its precision where s nears 1 (1 - s does not:
    float32 dh errors of 4.5e-6, not 6e-7).
    erf: tl.math.erf (libdevice's erff on a GPU; math.erf in the interpreter)."""
    if ERF:
        # a literal, not a constexpr: the interpreter's erf refuses a constexpr's product
        s = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))  # erf(x / sqrt(2))
        ds = INV_SQRT_2PI * tl.exp(-0.5 * x * x)
    else:
        u = GELU_C * (x + 0.044715 * x * x * x)
        e = tl.exp(-2.0 * tl.abs(u))
        r = 1.0 / (1.0 + e)
        s = tl.where(u >= 0, r, e * r)
        ds = 2.0 * e * r * r * GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return s, ds


@triton.jit
def _bias_gelu_fwd(H, B, Y, stride_h, N, D, ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ERF: tl.constexpr):
    """One program per ROWS x BLOCK_D tile: y = gelu(h + b). Y is contiguous (N, D)."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = (rows < N)[:, None] & (cols < D)[None, :]
    b = tl.load(B + cols, mask=cols < D, other=0.0).to(tl.float32)
    x = tl.load(H + rows[:, None] * stride_h + cols[None, :], mask=ok, other=0.0).to(tl.float32) + b[None, :]
    s, _ = _gelu_parts(x, ERF)  # (ROWS, BLOCK_D)
    tl.store(Y + rows[:, None] * D + cols[None, :], (x * s).to(Y.dtype.element_ty), mask=ok)


@triton.jit
def _bias_gelu_bwd(H, B, DY, DH, DB_PART, stride_h, stride_dy, N, D, n_tiles, tiles_per_program,
                   ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ERF: tl.constexpr):
    """Program (group, column block) walks its group's row tiles: dh = dy·gelu'(h + b), and
    the group's sum of dh over rows. DH is contiguous (N, D); DB_PART (groups, D) float32.
    Rows past N load dy = 0, so they add nothing to the sum."""
    group = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    b = tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)
    db = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)
    first = group * tiles_per_program
    for tile in range(first, tl.minimum(first + tiles_per_program, n_tiles)):
        rows = tile * ROWS + tl.arange(0, ROWS)
        ok = (rows < N)[:, None] & col_ok[None, :]
        x = tl.load(H + rows[:, None] * stride_h + cols[None, :], mask=ok, other=0.0).to(tl.float32) + b[None, :]
        dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        s, ds = _gelu_parts(x, ERF)
        dh = dy * (s + x * ds)  # (ROWS, BLOCK_D)
        tl.store(DH + rows[:, None] * D + cols[None, :], dh.to(DH.dtype.element_ty), mask=ok)
        db += dh
    tl.store(DB_PART + group * D + cols, tl.sum(db, 0), mask=col_ok)


def _empty(shape, dtype, device):
    """Every buffer the kernels write comes from here (tests poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


MAX_BLOCK_D = 512  # columns per program; wider rows (4C = 3072 in gpt2-124m) span several


def _tile(D: int):
    """(ROWS, BLOCK_D, num_warps): a program holds ~4096 elements."""
    block_d = min(MAX_BLOCK_D, triton.next_power_of_2(D))
    rows = min(64, 4096 // block_d)
    return rows, block_d, 4


BWD_GROUPS = 128  # row groups of the backward, times the column blocks: enough programs to fill a GPU


def _rows(t, D):
    """t (..., D) as (N, D) with unit column stride."""
    t2 = t.reshape(-1, D)
    return t2 if t2.stride(1) == 1 else t2.contiguous()


class _BiasGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, b, erf):
        shape, D = h.shape, h.shape[-1]
        h2 = _rows(h, D)  # (N, D)
        N = h2.shape[0]
        y = _empty((N, D), h.dtype, h.device)
        rows, block, warps = _tile(D)
        _bias_gelu_fwd[(triton.cdiv(N, rows), triton.cdiv(D, block))](h2, b, y, h2.stride(0), N, D, ROWS=rows,
                                                                      BLOCK_D=block, ERF=erf, num_warps=warps)
        ctx.save_for_backward(h2, b)
        ctx.shape, ctx.erf = shape, erf
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        h2, b = ctx.saved_tensors
        N, D = h2.shape
        dy = _rows(dy, D)
        rows, block, warps = _tile(D)
        n_tiles = triton.cdiv(N, rows)
        groups = min(n_tiles, BWD_GROUPS)
        dh = _empty((N, D), h2.dtype, h2.device)
        db_part = _empty((groups, D), torch.float32, h2.device)
        _bias_gelu_bwd[(groups, triton.cdiv(D, block))](h2, b, dy, dh, db_part, h2.stride(0), dy.stride(0), N, D,
                                                        n_tiles, triton.cdiv(n_tiles, groups), ROWS=rows,
                                                        BLOCK_D=block, ERF=ctx.erf, num_warps=warps)
        return dh.view(ctx.shape), db_part.sum(0).to(b.dtype), None


def bias_gelu(h, b, form: str = "tanh"):
    """gelu(h + b) for h (..., D) and b (D,), autograd through both; form: "tanh" (the
    approximation) or "erf" (exact), GPTSpec.gelu. The output and dh are in h's dtype, db in
    b's; the arithmetic is float32."""
    if form not in ("tanh", "erf"):
        raise ValueError(f"GELU form must be 'tanh' or 'erf', not {form!r}")
    return _BiasGelu.apply(h, b, form == "erf")
