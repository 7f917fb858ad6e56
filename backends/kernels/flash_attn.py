"""Causal flash attention in Triton: the forward keeps a running (online) softmax and saves
the log-sum-exp of every query row; the backward recomputes the probabilities block by
block from it (a delta preprocess, a dK/dV pass over the queries, a dQ pass over the keys).
No T x T matrix is ever stored.

Queries are the last Tq of Tk positions (Tq <= Tk, the KV-cache case): query i sees keys
j <= i + (Tk - Tq). Rows and keys past the ends of the sequences are masked, so any
length works. Each key/query block pair is either entirely visible (no mask is computed)
or straddles the diagonal (masked), so the bulk of the work runs unmasked.

float32 runs its dots in IEEE precision (not TF32) so it can match a float64 reference;
float16 and bfloat16 feed the tensor cores and accumulate in float32. Head dims 16, 32, 64
and 128 run as they are; other sizes up to 128 are zero-padded to the next of these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # scores are kept in log2 units so the kernels use exp2
LN2 = 0.6931471805599453
KERNEL_HEAD_DIMS = (16, 32, 64, 128)  # tl.dot needs >= 16; register tiles cap it at 128


# --- forward ----------------------------------------------------------------------------------
@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_base, v_base, skt, svt, offs_m, offs_n, offs_d, lo, hi, offset, TK,
               qk_scale, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, DOT_PREC: tl.constexpr):
    """Fold key blocks [lo, hi) into the running max m_i, sum l_i and output acc of q's rows."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n  # (BN,) key positions
        kt_ptrs = k_base + cols[None, :] * skt + offs_d[:, None]  # (D, BN): K transposed
        v_ptrs = v_base + cols[:, None] * svt + offs_d[None, :]  # (BN, D)
        if MASKED:
            kt = tl.load(kt_ptrs, mask=cols[None, :] < TK, other=0.0)
            v = tl.load(v_ptrs, mask=cols[:, None] < TK, other=0.0)
        else:  # the unmasked stage only visits keys < TK
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        s = tl.dot(q, kt, input_precision=DOT_PREC) * qk_scale  # (BM, BN), log2 units
        if MASKED:  # keys past the end are also past every real row's diagonal
            s = tl.where(cols[None, :] <= offs_m[:, None] + offset, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every row sees key 0 in its first block
        p = tl.math.exp2(s - m_new[:, None])  # (BM, BN)
        alpha = tl.math.exp2(m_i - m_new)  # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
              NH, TQ, TK, qk_scale,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr):
    """One program: BLOCK_M query rows of one (batch, head). Writes O and the natural-log LSE."""
    # axis 0 is (batch, head), launched fastest; axis 1 runs the last query block, which sees
    # the most keys, first, so the short causal blocks fill the tail of the launch
    bh = tl.program_id(0)
    start_m = (tl.num_programs(1) - 1 - tl.program_id(1)) * BLOCK_M
    b, h = bh // NH, bh % NH
    offset = TK - TQ  # query i sits at position i + offset
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < TQ
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    # keys [0, full) are visible to every row of the block: no mask
    full = (start_m + offset + 1) // BLOCK_N * BLOCK_N
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, skt, svt, offs_m, offs_n, offs_d, 0, full,
                               offset, TK, qk_scale, BLOCK_N, False, DOT_PREC)
    # the blocks crossing the diagonal, and the key tail
    hi = tl.minimum(start_m + BLOCK_M + offset, TK)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_base, v_base, skt, svt, offs_m, offs_n, offs_d, full, hi,
                               offset, TK, qk_scale, BLOCK_N, True, DOT_PREC)

    o = acc / l_i[:, None]
    tl.store(O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :], o.to(O.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(LSE + bh * TQ + offs_m, (m_i + tl.math.log2(l_i)) * LN2, mask=row_ok)


# --- backward ---------------------------------------------------------------------------------
@triton.jit
def _attn_bwd_preprocess(O, DO, DELTA, sob, soh, sot, sdb, sdh, sdt, NH, TQ,
                         HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta_i = sum_d O_id dO_id, the row term of the softmax backward."""
    bh = tl.program_id(0)
    b, h = bh // NH, bh % NH
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < TQ
    o = tl.load(O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # (BM,)
    tl.store(DELTA + bh * TQ + offs_m, delta, mask=row_ok)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqt, sdt, offs_n, offs_m, offs_d, lo, hi,
                offset, TQ, qk_scale, BLOCK_M: tl.constexpr, MASKED: tl.constexpr, DOT_PREC: tl.constexpr):
    """Accumulate the query blocks [lo, hi) into this key block's dk, dv (transposed tiles).
    Rows past TQ load as zeros (q, dO, lse, delta), which makes their terms exactly zero."""
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m  # (BM,)
        row_ok = rows < TQ
        qt = tl.load(q_base + rows[None, :] * sqt + offs_d[:, None], mask=row_ok[None, :], other=0.0)  # (D, BM)
        do = tl.load(do_base + rows[:, None] * sdt + offs_d[None, :], mask=row_ok[:, None], other=0.0)  # (BM, D)
        lse2 = tl.load(lse_base + rows, mask=row_ok, other=0.0) * LOG2E
        delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
        st = tl.dot(k, qt, input_precision=DOT_PREC) * qk_scale  # (BN, BM), log2 units
        pt = tl.math.exp2(st - lse2[None, :])  # P transposed, from the saved LSE
        if MASKED:
            pt = tl.where(offs_n[:, None] <= rows[None, :] + offset, pt, 0.0)
        dv += tl.dot(pt.to(do.dtype), do, input_precision=DOT_PREC)
        dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)  # (BN, BM)
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
                   NH, TQ, TK, qk_scale, sm_scale,
                   HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr):
    """One program: BLOCK_N keys of one (batch, head), looping over the queries that see them.
    DK and DV are contiguous (B, NH, TK, HEAD_DIM)."""
    bh = tl.program_id(0)
    start_n = tl.program_id(1) * BLOCK_N  # the first key block is seen by the most queries: first
    b, h = bh // NH, bh % NH
    offset = TK - TQ
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < TK
    k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svt + offs_d[None, :], mask=col_ok[:, None], other=0.0)
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sdb + h * sdh
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # the first query that sees key start_n; rows from `whole` on see the entire key block
    lo = tl.maximum(start_n - offset, 0)
    whole = tl.minimum(start_n + BLOCK_N - 1 - offset, TQ)
    mid = lo + tl.cdiv(tl.maximum(whole - lo, 0), BLOCK_M) * BLOCK_M
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, LSE + bh * TQ, DELTA + bh * TQ, sqt, sdt, offs_n, offs_m,
                         offs_d, lo, mid, offset, TQ, qk_scale, BLOCK_M, True, DOT_PREC)
    # keys past TK (zeros) pick up terms here, but their rows of dk, dv are never stored
    dk, dv = _dkdv_inner(dk, dv, k, v, q_base, do_base, LSE + bh * TQ, DELTA + bh * TQ, sqt, sdt, offs_n, offs_m,
                         offs_d, mid, TQ, offset, TQ, qk_scale, BLOCK_M, False, DOT_PREC)

    out = bh * TK * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, k_base, v_base, skt, svt, offs_m, offs_n, offs_d, lo, hi, offset, TK,
              qk_scale, BLOCK_N: tl.constexpr, MASKED: tl.constexpr, DOT_PREC: tl.constexpr):
    """Accumulate key blocks [lo, hi) into this query block's dq. Keys past TK (only in masked
    blocks) load as zeros and lie past every real row's diagonal."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            k = tl.load(k_base + cols[:, None] * skt + offs_d[None, :], mask=cols[:, None] < TK, other=0.0)
            vt = tl.load(v_base + cols[None, :] * svt + offs_d[:, None], mask=cols[None, :] < TK, other=0.0)
        else:
            k = tl.load(k_base + cols[:, None] * skt + offs_d[None, :])  # (BN, D)
            vt = tl.load(v_base + cols[None, :] * svt + offs_d[:, None])  # (D, BN)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale  # (BM, BN), log2 units
        p = tl.math.exp2(s - lse2[:, None])
        if MASKED:
            p = tl.where(cols[None, :] <= offs_m[:, None] + offset, p, 0.0)
        dp = tl.dot(do, vt, input_precision=DOT_PREC)  # (BM, BN)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
                 NH, TQ, TK, qk_scale, sm_scale,
                 HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr):
    """One program: BLOCK_M query rows of one (batch, head), looping over the keys they see.
    DQ is contiguous (B, NH, TQ, HEAD_DIM)."""
    # axis 0 is (batch, head), launched fastest; axis 1 runs the last query block, which sees
    # the most keys, first, so the short causal blocks fill the tail of the launch
    bh = tl.program_id(0)
    start_m = (tl.num_programs(1) - 1 - tl.program_id(1)) * BLOCK_M
    b, h = bh // NH, bh % NH
    offset = TK - TQ
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < TQ
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse2 = tl.load(LSE + bh * TQ + offs_m, mask=row_ok, other=0.0) * LOG2E
    delta = tl.load(DELTA + bh * TQ + offs_m, mask=row_ok, other=0.0)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    full = (start_m + offset + 1) // BLOCK_N * BLOCK_N  # as in the forward
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, skt, svt, offs_m, offs_n, offs_d, 0, full, offset,
                   TK, qk_scale, BLOCK_N, False, DOT_PREC)
    hi = tl.minimum(start_m + BLOCK_M + offset, TK)
    dq = _dq_inner(dq, q, do, lse2, delta, k_base, v_base, skt, svt, offs_m, offs_n, offs_d, full, hi, offset,
                   TK, qk_scale, BLOCK_N, True, DOT_PREC)
    tl.store(DQ + bh * TQ * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :],
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


# --- launchers --------------------------------------------------------------------------------
def _empty(shape, dtype, device):
    """Every buffer the kernels write comes from here (tests poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _strides(t):
    return t.stride(0), t.stride(1), t.stride(2)


def _dot_precision(dtype):
    return "ieee" if dtype == torch.float32 else "tf32"  # tf32 is ignored for 16-bit inputs


def _block(rows: int, default: int) -> int:
    """Short sequences (decode: one row) get a smaller tile instead of a mostly masked one."""
    return min(default, max(16, triton.next_power_of_2(rows)))


def _fwd_config(D, dtype):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages): float32 tiles are twice the bytes, so smaller."""
    if dtype == torch.float32:
        return 64, 32, 4, 2
    return (128, 64, 4, 3) if D <= 64 else (128, 64, 8, 3)


def _bwd_config(D, dtype):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of both passes: the dK/dV pass holds BLOCK_N keys
    and streams BLOCK_M queries, the dQ pass the other way round, so one pair serves as
    (small, large) for dK/dV and (large, small) for dQ."""
    if dtype == torch.float32:
        return 32, 64, 4, 2
    return (32, 128, 4, 3) if D <= 64 else (32, 64, 8, 2)


def _forward(q, k, v, sm_scale):
    """q (B, NH, TQ, D), k/v (B, NH, TK, D), last dim contiguous -> o (B, NH, TQ, D), lse (B, NH, TQ) fp32."""
    B, NH, TQ, D = q.shape
    TK = k.shape[2]
    o = _empty((B, NH, TQ, D), q.dtype, q.device)
    lse = _empty((B, NH, TQ), torch.float32, q.device)
    bm, bn, warps, stages = _fwd_config(D, q.dtype)
    bm = _block(TQ, bm)
    grid = (B * NH, triton.cdiv(TQ, bm))
    _attn_fwd[grid](q, k, v, o, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(o), NH, TQ, TK,
                    sm_scale * LOG2E, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, DOT_PREC=_dot_precision(q.dtype),
                    num_warps=warps, num_stages=stages)
    return o, lse


def _backward(q, k, v, o, lse, do, sm_scale):
    """Gradients (dq, dk, dv) of sum(o * do), contiguous, in q's dtype."""
    B, NH, TQ, D = q.shape
    TK = k.shape[2]
    delta = _empty((B, NH, TQ), torch.float32, q.device)
    dq = _empty(q.shape, q.dtype, q.device)
    dk = _empty(k.shape, k.dtype, k.device)
    dv = _empty(v.shape, v.dtype, v.device)
    pre_m = _block(TQ, 128)
    _attn_bwd_preprocess[(B * NH, triton.cdiv(TQ, pre_m))](o, do, delta, *_strides(o), *_strides(do), NH, TQ,
                                                          HEAD_DIM=D, BLOCK_M=pre_m)
    small, large, warps, stages = _bwd_config(D, q.dtype)
    args = (*_strides(q), *_strides(k), *_strides(v), *_strides(do), NH, TQ, TK, sm_scale * LOG2E, sm_scale)
    prec = _dot_precision(q.dtype)
    bn = _block(TK, large)
    _attn_bwd_dkdv[(B * NH, triton.cdiv(TK, bn))](q, k, v, do, dk, dv, lse, delta, *args, HEAD_DIM=D,
                                                  BLOCK_M=small, BLOCK_N=bn, DOT_PREC=prec,
                                                  num_warps=warps, num_stages=stages)
    bm = _block(TQ, large)
    _attn_bwd_dq[(B * NH, triton.cdiv(TQ, bm))](q, k, v, do, dq, lse, delta, *args, HEAD_DIM=D, BLOCK_M=bm,
                                                BLOCK_N=small, DOT_PREC=prec, num_warps=warps, num_stages=stages)
    return dq, dk, dv


def _last_dim_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sm_scale):
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        o, lse = _forward(q, k, v, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.sm_scale = sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, o, lse, _last_dim_contiguous(do.to(o.dtype)), ctx.sm_scale)
        return dq, dk, dv, None


def flash_attention(q, k, v):
    """Causal softmax(q k^T / sqrt(HS)) v with autograd. q (B, NH, Tq, HS); k, v (B, NH, Tk, HS),
    Tk >= Tq, one dtype (float32, float16 or bfloat16); the queries are the last Tq positions."""
    Tq, Tk, D = q.shape[2], k.shape[2], q.shape[3]
    if Tk < Tq:
        raise ValueError(f"flash_attention needs Tk >= Tq (queries are the last positions), got Tq={Tq}, Tk={Tk}")
    if D > KERNEL_HEAD_DIMS[-1]:
        raise ValueError(f"flash_attention supports head dims up to {KERNEL_HEAD_DIMS[-1]}, got {D}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    sm_scale = 1.0 / math.sqrt(D)
    Dk = next(d for d in KERNEL_HEAD_DIMS if d >= D)
    if Dk == D:
        return _FlashAttention.apply(q, k, v, sm_scale)
    # zero columns leave q k^T unchanged and add zero output columns, sliced off again
    q, k, v = (F.pad(t, (0, Dk - D)) for t in (q, k, v))
    return _FlashAttention.apply(q, k, v, sm_scale)[..., :D]
