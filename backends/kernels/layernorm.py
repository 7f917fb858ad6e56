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
def _ln_fwd(X, W, B, Y, MEAN, RSTD, stride_x, stride_y, N, C, eps, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program per ROWS rows: y = (x - mean) * rstd * w + b; saves mean and rstd."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    row_ok = rows < N
    ok = row_ok[:, None] & (cols < C)[None, :]
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=ok, other=0.0).to(tl.float32)  # (ROWS, BLOCK_C)
    mean = tl.sum(x, 1) / C
    xc = tl.where(ok, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / C + eps)
    w = tl.load(W + cols, mask=cols < C, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=cols < C, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=ok)
    tl.store(MEAN + rows, mean, mask=row_ok)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.jit
def _ln_bwd(X, W, DY, DX, DW_PART, DB_PART, MEAN, RSTD, stride_x, stride_dy, N, C, n_tiles, tiles_per_program,
            ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program per group of tiles of ROWS rows: dx of each row, and the group's sums of
    dy * xhat and dy. DX is contiguous (N, C); DW_PART, DB_PART are (groups, C) float32.
    Rows past N load as zeros (mean and rstd too), so they add nothing to the sums."""
    group = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < C
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros([ROWS, BLOCK_C], dtype=tl.float32)
    db = tl.zeros([ROWS, BLOCK_C], dtype=tl.float32)
    first = group * tiles_per_program
    for tile in range(first, tl.minimum(first + tiles_per_program, n_tiles)):
        rows = tile * ROWS + tl.arange(0, ROWS)
        row_ok = rows < N
        ok = row_ok[:, None] & col_ok[None, :]
        x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        xhat = (x - tl.load(MEAN + rows, mask=row_ok, other=0.0)[:, None]) * rstd[:, None]  # (ROWS, BLOCK_C)
        wdy = w[None, :] * dy
        # d/dx of (x - mean) * rstd: remove the mean of wdy and its projection on xhat
        dx = (wdy - xhat * (tl.sum(wdy * xhat, 1) / C)[:, None] - (tl.sum(wdy, 1) / C)[:, None]) * rstd[:, None]
        tl.store(DX + rows[:, None] * C + cols[None, :], dx.to(DX.dtype.element_ty), mask=ok)
        dw += dy * xhat
        db += dy
    tl.store(DW_PART + group * C + cols, tl.sum(dw, 0), mask=col_ok)
    tl.store(DB_PART + group * C + cols, tl.sum(db, 0), mask=col_ok)


def _empty(shape, dtype, device):
    """Every buffer the kernels write comes from here (tests poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _tile(C: int):
    """(ROWS, BLOCK_C, num_warps): narrow rows are stacked so a program holds ~4096 elements."""
    block_c = triton.next_power_of_2(C)
    rows = min(16, max(1, 4096 // block_c))
    return rows, block_c, min(8, max(1, rows * block_c // 512))


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
        rows, block, warps = _tile(C)
        _ln_fwd[(triton.cdiv(N, rows),)](x2, w, b, y, mean, rstd, x2.stride(0), y.stride(0), N, C, eps, ROWS=rows,
                                         BLOCK_C=block, num_warps=warps)
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
        rows, block, warps = _tile(C)
        n_tiles = triton.cdiv(N, rows)
        groups = min(n_tiles, BWD_GROUPS)
        dx = _empty((N, C), x2.dtype, x2.device)
        dw_part = _empty((groups, C), torch.float32, x2.device)
        db_part = _empty((groups, C), torch.float32, x2.device)
        _ln_bwd[(groups,)](x2, w, dy, dx, dw_part, db_part, mean, rstd, x2.stride(0), dy.stride(0), N, C, n_tiles,
                           triton.cdiv(n_tiles, groups), ROWS=rows, BLOCK_C=block, num_warps=warps)
        return dx.view(ctx.shape), dw_part.sum(0).to(w.dtype), db_part.sum(0).to(w.dtype), None, None


def layer_norm(x, w, b, eps, out_dtype=None):
    """LayerNorm of x (..., C) with weight and bias (C,), autograd through all three. The
    output is in out_dtype (default x's); gradients come back in the inputs' dtypes."""
    return _LayerNorm.apply(x, w, b, eps, out_dtype or x.dtype)
