"""Mean softmax cross-entropy over the vocabulary in Triton, reading the logits in their own
dtype. Under autocast torch's cross_entropy first makes a float32 copy of the (B*T, V)
logits and keeps a float32 log-softmax of the same size for backward; here each row is
streamed in chunks with a running max and sum, only its log-sum-exp (one float per row) is
kept, and the backward writes dlogits straight in the logits' dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _ce_fwd(LOGITS, TARGETS, LOSS, LSE, stride_row, V, BLOCK_V: tl.constexpr):
    """One program per row: loss = logsumexp(x) - x[target], and the row's logsumexp."""
    row = tl.program_id(0)
    base = LOGITS + row.to(tl.int64) * stride_row  # B*T*V can pass 2**31
    m = float("-inf")  # running max and sum, in log2 units
    s = 0.0
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32) * LOG2E
        m_new = tl.maximum(m, tl.max(x, 0))  # finite: the first chunk holds column 0
        s = s * tl.math.exp2(m - m_new) + tl.sum(tl.math.exp2(x - m_new), 0)
        m = m_new
    lse = (m + tl.math.log2(s)) * LN2
    target = tl.load(TARGETS + row)
    x_t = tl.load(base + target).to(tl.float32)
    tl.store(LOSS + row, lse - x_t)
    tl.store(LSE + row, lse)


@triton.jit
def _ce_bwd(LOGITS, TARGETS, LSE, DLOSS, DLOGITS, stride_row, V, inv_n, BLOCK_V: tl.constexpr):
    """dlogits = (softmax(x) - onehot(target)) * dloss / n, one program per (row, chunk).
    DLOGITS is contiguous (n, V)."""
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    ok = cols < V
    x = tl.load(LOGITS + row.to(tl.int64) * stride_row + cols, mask=ok, other=0.0).to(tl.float32)
    lse = tl.load(LSE + row)
    target = tl.load(TARGETS + row)
    scale = tl.load(DLOSS) * inv_n  # dloss stays on the device: no host sync
    g = (tl.math.exp2((x - lse) * LOG2E) - tl.where(cols == target, 1.0, 0.0)) * scale
    tl.store(DLOGITS + row.to(tl.int64) * V + cols, g.to(DLOGITS.dtype.element_ty), mask=ok)


def _empty(shape, dtype, device):
    """Every buffer the kernels write comes from here (tests poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


FWD_BLOCK_V = 2048  # a row streams through one program: wide chunks keep the loads in flight
BWD_BLOCK_V = 1024  # the backward spreads rows and chunks over the grid


def _block(V: int, cap: int) -> int:
    return min(cap, max(16, triton.next_power_of_2(V)))


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        n, V = logits.shape
        loss = _empty((n,), torch.float32, logits.device)
        lse = _empty((n,), torch.float32, logits.device)
        _ce_fwd[(n,)](logits, targets, loss, lse, logits.stride(0), V, BLOCK_V=_block(V, FWD_BLOCK_V), num_warps=8)
        ctx.save_for_backward(logits, targets, lse)
        return loss.mean()

    @staticmethod
    def backward(ctx, dloss):
        logits, targets, lse = ctx.saved_tensors
        n, V = logits.shape
        dlogits = _empty((n, V), logits.dtype, logits.device)
        block = _block(V, BWD_BLOCK_V)
        _ce_bwd[(n, triton.cdiv(V, block))](logits, targets, lse, dloss.float().contiguous(), dlogits,
                                            logits.stride(0), V, 1.0 / n, BLOCK_V=block, num_warps=4)
        return dlogits, None


def cross_entropy(logits, targets):
    """Mean cross-entropy, float32 scalar, with autograd. logits (..., V) float32, float16 or
    bfloat16; targets (...) integer class indices in [0, V) (no ignore_index)."""
    V = logits.shape[-1]
    logits = logits.reshape(-1, V)  # (N, V), a view when it can be
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return _CrossEntropy.apply(logits, targets.reshape(-1).contiguous())
