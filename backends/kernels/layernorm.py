"""LayerNorm over the last dim in Triton, forward and backward, statistics in float32.

What it saves over torch eager under autocast: torch normalises in float32 and then a
separate kernel casts the output for the next matmul; here the output is written once,
directly in the dtype the matmul wants (`out_dtype`). The backward writes dx and per-group
partial dw, db (no atomics, so it is deterministic), summed by torch afterwards.
Offsets are 32-bit: rows x C must stay below 2**31 (gpt2-124m at B=64: 5e7).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _ln_fwd(X, W, B, Y, MEAN, RSTD, stride_x, stride_y, C, eps, BLOCK_C: tl.constexpr):
    """One program per row: y = (x - mean) * rstd * w + b; saves mean and rstd."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    ok = cols < C
    x = tl.load(X + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    mean = tl.sum(x, 0) / C
    xc = tl.where(ok, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 0) / C + eps)
    w = tl.load(W + cols, mask=ok, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, (xc * rstd * w + b).to(Y.dtype.element_ty), mask=ok)
    tl.store(MEAN + row, mean)
    tl.store(RSTD + row, rstd)


@triton.jit
def _ln_bwd(X, W, DY, DX, DW_PART, DB_PART, MEAN, RSTD, stride_x, stride_dy, N, C, rows_per_program,
            BLOCK_C: tl.constexpr):
    """One program per group of rows: dx of each row, and the group's sums of dy * xhat and dy.
    DX is contiguous (N, C); DW_PART, DB_PART are (groups, C) float32."""
    group = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    ok = cols < C
    w = tl.load(W + cols, mask=ok, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_C], dtype=tl.float32)
    db = tl.zeros([BLOCK_C], dtype=tl.float32)
    first = group * rows_per_program
    for row in range(first, tl.minimum(first + rows_per_program, N)):
        x = tl.load(X + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + cols, mask=ok, other=0.0).to(tl.float32)
        xhat = (x - tl.load(MEAN + row)) * tl.load(RSTD + row)
        wdy = w * dy
        # d/dx of (x - mean) * rstd: remove the mean of wdy and its projection on xhat
        dx = (wdy - xhat * (tl.sum(wdy * xhat, 0) / C) - tl.sum(wdy, 0) / C) * tl.load(RSTD + row)
        tl.store(DX + row * C + cols, dx.to(DX.dtype.element_ty), mask=ok)
        dw += dy * xhat
        db += dy
    tl.store(DW_PART + group * C + cols, dw, mask=ok)
    tl.store(DB_PART + group * C + cols, db, mask=ok)


def _empty(shape, dtype, device):
    """Every buffer the kernels write comes from here (tests poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _warps(block_c: int) -> int:
    return min(16, max(1, block_c // 256))


BWD_GROUPS = 256  # partial-sum rows: enough programs to fill a GPU, few enough to sum cheaply


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, eps, out_dtype):
        shape, C = x.shape, x.shape[-1]
        x2 = x.reshape(-1, C)  # (N, C)
        if x2.stride(1) != 1:
            x2 = x2.contiguous()
        N = x2.shape[0]
        y = _empty((N, C), out_dtype, x.device)
        mean = _empty((N,), torch.float32, x.device)
        rstd = _empty((N,), torch.float32, x.device)
        block = triton.next_power_of_2(C)
        _ln_fwd[(N,)](x2, w, b, y, mean, rstd, x2.stride(0), y.stride(0), C, eps, BLOCK_C=block,
                      num_warps=_warps(block))
        ctx.save_for_backward(x2, w, mean, rstd)
        ctx.shape = shape
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        x2, w, mean, rstd = ctx.saved_tensors
        N, C = x2.shape
        dy = dy.reshape(N, C)
        if dy.stride(1) != 1:
            dy = dy.contiguous()
        groups = min(N, BWD_GROUPS)
        dx = _empty((N, C), x2.dtype, x2.device)
        dw_part = _empty((groups, C), torch.float32, x2.device)
        db_part = _empty((groups, C), torch.float32, x2.device)
        block = triton.next_power_of_2(C)
        _ln_bwd[(groups,)](x2, w, dy, dx, dw_part, db_part, mean, rstd, x2.stride(0), dy.stride(0), N, C,
                           triton.cdiv(N, groups), BLOCK_C=block, num_warps=_warps(block))
        return dx.view(ctx.shape), dw_part.sum(0).to(w.dtype), db_part.sum(0).to(w.dtype), None, None


def layer_norm(x, w, b, eps, out_dtype=None):
    """LayerNorm of x (..., C) with weight and bias (C,), autograd through all three. The
    output is in out_dtype (default x's); gradients come back in the inputs' dtypes."""
    return _LayerNorm.apply(x, w, b, eps, out_dtype or x.dtype)
