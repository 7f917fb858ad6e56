"""NumPy reference: the meaning of the spec, with hand-written backprop.

Every layer is an `op_forward(...) -> (out, cache)` / `op_backward(dout, cache)` pair,
written for float32 and float64 alike (the dtype of the inputs is kept). Imports neither
torch nor pandas, so the low-RAM box runs it.
Sizes: B batch, T time, C channels, NH heads, HS head size, V vocab, L layers.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from backends.base import Backend, adam_moments
from gptspec.optim import decays
from gptspec.spec import LN_EPS

GELU_C = math.sqrt(2.0 / math.pi)


# --- elementwise work in cache-sized row blocks -------------------------------------------
# A NumPy ufunc makes one single-threaded pass over the whole array, so an op of ten
# ufuncs over (B*T, 4C) activations streams them through memory ten times on one core
# while BLAS uses all of them. Cutting the rows into blocks that fit in L2 and running the
# blocks on a small thread pool (ufuncs release the GIL) roughly halves the non-GEMM time.
# Every row's arithmetic is unchanged, so results do not depend on the blocking.
BLOCK_BYTES = 256 * 1024
_pool: ThreadPoolExecutor | None = None
_blas = None  # threadpoolctl controller, made on first use


def keep_freed_memory() -> None:
    """Ask glibc to keep freed activation buffers (up to 32 MB each) in the heap rather
    than unmapping them: otherwise every step page-faults its activations in afresh, which
    costs ~8% of a shakespeare-char step. The peak RSS is unchanged."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc (musl): nothing to tune
            return
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


def by_rows(fn, n_rows: int, row_bytes: int, blas_threads: int | None = None) -> None:
    """Call fn(rows: slice) over blocks of rows covering range(n_rows). blas_threads
    limits BLAS inside the blocks when they run in parallel."""
    step = max(1, BLOCK_BYTES // max(1, row_bytes))
    blocks = [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]
    threads = min(len(blocks), int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    if threads <= 1:
        for rows in blocks:
            fn(rows)
        return
    global _pool, _blas
    if _pool is None or _pool._max_workers != threads:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="numpy_ref")
    if blas_threads is None:
        for _ in _pool.map(fn, blocks):  # re-raises a block's exception here
            pass
        return
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    with _blas.limit(limits=blas_threads, user_api="blas"):
        for _ in _pool.map(fn, blocks):
            pass


# --- embeddings ---------------------------------------------------------------------------
def embedding_forward(idx, wte, wpe, start=0):
    T = idx.shape[1]
    out = wte[idx] + wpe[start:start + T]  # (B, T, C)
    return out, (idx, wte.shape, wpe.shape, start)


def embedding_backward(dout, cache):
    idx, wte_shape, wpe_shape, start = cache
    C = dout.shape[-1]
    dwte = np.zeros(wte_shape, dtype=dout.dtype)
    np.add.at(dwte, idx.reshape(-1), dout.reshape(-1, C))  # repeated tokens accumulate
    dwpe = np.zeros(wpe_shape, dtype=dout.dtype)
    dwpe[start:start + idx.shape[1]] = dout.sum(axis=0)
    return dwte, dwpe


# --- layernorm ----------------------------------------------------------------------------
def layernorm_forward(x, w, b, eps=LN_EPS):
    C = x.shape[-1]
    x2 = x.reshape(-1, C)  # (N, C)
    xhat, out = np.empty_like(x2), np.empty_like(x2)
    rstd = np.empty((x2.shape[0], 1), dtype=x.dtype)

    def block(r):
        xh = xhat[r]
        np.subtract(x2[r], x2[r].mean(axis=-1, keepdims=True), out=xh)
        var = np.einsum("ij,ij->i", xh, xh)[:, None] / C
        np.divide(1.0, np.sqrt(var + eps), out=rstd[r])
        xh *= rstd[r]
        np.multiply(xh, w, out=out[r])
        out[r] += b

    by_rows(block, x2.shape[0], x2.strides[0])
    return out.reshape(x.shape), (xhat, rstd, w)


def layernorm_backward(dout, cache):
    xhat, rstd, w = cache
    C = dout.shape[-1]
    d2 = dout.reshape(-1, C)  # (N, C)
    dw = np.einsum("ij,ij->j", d2, xhat)
    db = np.ones(d2.shape[0], dtype=d2.dtype) @ d2
    dx = np.empty_like(d2)

    def block(r):
        dxh = dx[r]
        np.multiply(d2[r], w, out=dxh)  # d xhat
        proj = np.einsum("ij,ij->i", dxh, xhat[r])[:, None] / C
        dxh -= dxh.mean(axis=-1, keepdims=True)
        dxh -= xhat[r] * proj
        dxh *= rstd[r]

    by_rows(block, d2.shape[0], d2.strides[0])
    return dx.reshape(dout.shape), dw, db


# --- linear -------------------------------------------------------------------------------
def linear_forward(x, w, b=None):
    x2 = x.reshape(-1, x.shape[-1])  # (B*T, in): one GEMM, not a batched loop
    out = x2 @ w.T  # (B*T, out)
    if b is not None:
        out += b
    return out.reshape(*x.shape[:-1], w.shape[0]), (x, w)


def linear_backward(dout, cache):
    x, w = cache
    d2 = dout.reshape(-1, dout.shape[-1])
    dx = (d2 @ w).reshape(x.shape)
    dw = d2.T @ x.reshape(-1, x.shape[-1])
    db = np.ones(d2.shape[0], dtype=d2.dtype) @ d2  # a GEMV: faster than sum(axis=0)
    return dx, dw, db


# --- causal self-attention ----------------------------------------------------------------
# Attention runs one block of (batch, head) matrices at a time, whole: scores, softmax and
# values while the block's T x T scores are still in cache. Blocks run on the thread pool
# with BLAS held to one thread, so the small per-head GEMMs do not oversubscribe the cores.
def attention_forward(q, k, v):
    """q (B, NH, Tq, HS); k, v (B, NH, Tk, HS) with Tk >= Tq: the queries are the last Tq
    positions, query i sees keys j <= Tk - Tq + i. Scale 1/sqrt(HS)."""
    B, NH, Tq, HS = q.shape
    Tk = k.shape[2]
    scale = 1.0 / math.sqrt(HS)
    q3, k3, v3 = _flat(q), _flat(k), _flat(v)  # (B*NH, T, HS)
    att = np.empty((B * NH, Tq, Tk), dtype=q.dtype)
    y = np.empty((B * NH, Tq, HS), dtype=q.dtype)
    mask = _causal_mask(Tq, Tk, q.dtype) if Tq > 1 else None

    def block(r):
        a = att[r]
        np.matmul(q3[r] * scale, k3[r].transpose(0, 2, 1), out=a)  # scaling q is Tk/HS x cheaper
        if mask is not None:
            a += mask
        a -= a.max(axis=-1, keepdims=True)
        np.exp(a, out=a)
        a *= 1.0 / a.sum(axis=-1, keepdims=True)
        np.matmul(a, v3[r], out=y[r])

    by_rows(block, B * NH, att.strides[0], blas_threads=1)
    return y.reshape(B, NH, Tq, HS), (q3, k3, v3, att, scale)


def attention_backward(dy, cache):
    q3, k3, v3, att, scale = cache
    B, NH, Tq, HS = dy.shape
    dy3 = _flat(dy)
    dq, dk, dv = np.empty_like(q3), np.empty_like(k3), np.empty_like(v3)

    def block(r):
        a = att[r]
        datt = dy3[r] @ v3[r].transpose(0, 2, 1)  # (n, Tq, Tk)
        np.matmul(a.transpose(0, 2, 1), dy3[r], out=dv[r])
        # softmax backward; masked entries have att == 0 and so get no gradient
        datt -= np.einsum("ijk,ijk->ij", datt, a)[..., None]
        datt *= a
        datt *= scale
        np.matmul(datt, k3[r], out=dq[r])
        np.matmul(datt.transpose(0, 2, 1), q3[r], out=dk[r])

    by_rows(block, B * NH, att.strides[0], blas_threads=1)
    shape = (B, NH, -1, HS)
    return dq.reshape(shape), dk.reshape(shape), dv.reshape(shape)


def _flat(a):
    """(B, NH, T, HS) -> (B*NH, T, HS), a view where the strides allow (KV-cache slices do)."""
    return a.reshape(-1, *a.shape[2:])


def _causal_mask(Tq, Tk, dtype):
    """(Tq, Tk) additive mask: 0 where query i may see key j, -inf in its future."""
    return np.where(np.tri(Tq, Tk, k=Tk - Tq, dtype=bool), 0.0, -np.inf).astype(dtype)


def split_heads(qkv, n_head):
    B, T, C3 = qkv.shape
    hs = C3 // 3 // n_head
    q, k, v = qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)  # 3 x (B, NH, T, HS) views
    return np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v)


def merge_heads(y):
    B, NH, T, HS = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, NH * HS)  # (B, T, C), a copy


# --- GELU, tanh approximation (the spec's default) -----------------------------------------------
# 0.5·(1 + tanh(u)) == sigmoid(2u): computed through exp, which NumPy vectorises better
# than tanh, in place to spare temporaries. Same function, to rounding.
def gelu_forward(x):
    x2 = x.reshape(-1, x.shape[-1])  # (N, 4C)
    out, s = np.empty_like(x2), np.empty_like(x2)  # s becomes sigmoid(2u)

    def block(r):
        xb, sb = x2[r], s[r]
        np.multiply(xb, xb, out=sb)
        sb *= 0.044715
        sb += 1.0
        sb *= xb
        sb *= -2.0 * GELU_C  # -2u
        with np.errstate(over="ignore"):  # exp overflow -> inf -> s = 0, the right limit
            np.exp(sb, out=sb)
        sb += 1.0
        np.reciprocal(sb, out=sb)
        np.multiply(xb, sb, out=out[r])

    by_rows(block, x2.shape[0], x2.strides[0])
    return out.reshape(x.shape), (x2, s)


def gelu_backward(dout, cache):
    x, s = cache
    d2 = dout.reshape(x.shape)
    g = np.empty_like(x)

    def block(r):
        # d/dx [x·s(x)] = s + x·2s(1-s)·du/dx,  du/dx = GELU_C·(1 + 3·0.044715·x²)
        xb, sb, gb = x[r], s[r], g[r]
        du = xb * xb
        du *= 3 * 0.044715
        du += 1.0
        du *= 2.0 * GELU_C
        np.subtract(1.0, sb, out=gb)
        gb *= sb
        gb *= du
        gb *= xb
        gb += sb
        gb *= d2[r]

    by_rows(block, x.shape[0], x.strides[0])
    return g.reshape(dout.shape)


# --- GELU, exact (erf) form: x·Phi(x), nanoGPT's nn.GELU() -------------------------------
# NumPy has no erf (and the reference imports no SciPy), so Phi(x) = 0.5·erfc(-x/sqrt(2)) is
# computed here to float64 rounding (tests/test_numpy_ref.py measures it against math.erf):
# near 0 by a series of positive terms, in the tails by a continued fraction for erfc, which
# keeps the relative precision of Phi where it is tiny (large negative x).
SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SERIES_BELOW = 1.5  # |z| where the series hands over to the continued fraction
CF_TERMS = 100  # the continued fraction's depth: relative error < 2e-14 from |z| = 1.5 on


def _erf_series(z):
    """erf(z) for |z| < SERIES_BELOW: 2/sqrt(pi)·exp(-z²)·sum_n 2^n z^(2n+1) / (2n+1)!!. Every
    term has z's sign, so nothing cancels; it stops when the terms no longer change the sum."""
    z2 = z * z
    term, total = z.copy(), z.copy()
    eps, n = np.finfo(z.dtype).eps / 4, 0
    while True:
        n += 1
        term *= z2 * (2.0 / (2 * n + 1))
        total += term
        if not np.any(np.abs(term) > eps * np.abs(total)):
            return (2.0 / math.sqrt(math.pi)) * np.exp(-z2) * total


def _erfc_tail(a):
    """erfc(a) for a >= SERIES_BELOW: exp(-a²)/sqrt(pi) / (a + (1/2)/(a + (2/2)/(a + (3/2)/(a + ...)))),
    evaluated from the bottom."""
    f = a.copy()
    for k in range(CF_TERMS, 0, -1):
        f = a + (0.5 * k) / f
    return np.exp(-a * a) / (math.sqrt(math.pi) * f)


def normal_cdf(x):
    """Phi(x) = 0.5·erfc(-x/sqrt(2)) element-wise, in x's dtype."""
    z = -SQRT_HALF * x
    out = np.empty_like(x)
    near = np.abs(z) < SERIES_BELOW
    out[near] = 0.5 * (1.0 - _erf_series(z[near]))
    tail = ~near
    if tail.any():
        zt = z[tail]
        half_erfc = 0.5 * _erfc_tail(np.abs(zt))
        out[tail] = np.where(zt > 0, half_erfc, 1.0 - half_erfc)  # erfc(-a) = 2 - erfc(a)
    return out


def gelu_erf_forward(x):
    x2 = x.reshape(-1, x.shape[-1])  # (N, 4C)
    out, cdf = np.empty_like(x2), np.empty_like(x2)

    def block(r):
        cdf[r] = normal_cdf(x2[r])
        np.multiply(x2[r], cdf[r], out=out[r])

    by_rows(block, x2.shape[0], x2.strides[0])
    return out.reshape(x.shape), (x2, cdf)


def gelu_erf_backward(dout, cache):
    x, cdf = cache
    d2 = dout.reshape(x.shape)
    g = np.empty_like(x)

    def block(r):
        # d/dx [x·Phi(x)] = Phi(x) + x·phi(x),  phi(x) = exp(-x²/2) / sqrt(2 pi)
        xb, gb = x[r], g[r]
        np.multiply(xb, xb, out=gb)
        gb *= -0.5
        np.exp(gb, out=gb)
        gb *= INV_SQRT_2PI
        gb *= xb
        gb += cdf[r]
        gb *= d2[r]

    by_rows(block, x.shape[0], x.strides[0])
    return g.reshape(dout.shape)


def gelu_ops(kind: str):
    """The (forward, backward) pair of the spec's GELU (GPTSpec.gelu), looked up when called so
    that a test may swap a module function."""
    return {"tanh": (gelu_forward, gelu_backward), "erf": (gelu_erf_forward, gelu_erf_backward)}[kind]


# --- fused softmax cross-entropy ----------------------------------------------------------
def cross_entropy_forward(logits, targets):
    """Mean over all positions of -log softmax(logits)[target]."""
    V = logits.shape[-1]
    z = logits.reshape(-1, V)
    z = z - z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=-1, keepdims=True))
    logp = z - lse  # (N, V)
    t = targets.reshape(-1)
    loss = -logp[np.arange(t.size), t].mean()
    return loss, (logp, t, logits.shape)


def cross_entropy_backward(dloss, cache):
    logp, t, shape = cache
    dlogits = np.exp(logp)  # probs
    dlogits[np.arange(t.size), t] -= 1.0
    dlogits *= dloss / t.size
    return dlogits.reshape(shape)


# --- the model ----------------------------------------------------------------------------
class NumpyBackend(Backend):
    name = "numpy"

    @classmethod
    def versions(cls):
        return {"numpy": np.__version__}

    def __init__(self, spec, device="cpu", dtype="float32", optim=None):
        super().__init__(spec, device, dtype, optim)
        reason = self.unavailable(device, dtype)
        if reason:
            raise ValueError(reason)
        self.np_dtype = np.dtype(dtype)
        keep_freed_memory()
        self.params: dict[str, np.ndarray] = {}
        self._caches = None

    def load_state(self, params):
        self.params = {n: np.array(params[n], dtype=self.np_dtype) for n in self.spec.param_shapes()}
        self.m = {n: np.zeros_like(p) for n, p in self.params.items()}
        self.v = {n: np.zeros_like(p) for n, p in self.params.items()}
        self.t = 0
        self.grads = None

    def state(self):
        return {n: p.copy() for n, p in self.params.items()}

    def optimizer_state(self):
        return adam_moments(self.t, self.m, self.v)

    def _run(self, idx, kv=None, start=0, train=False):
        """Blocks over idx (B, T) at positions start.. ; kv: per-layer (K, V) caches to fill
        and attend over. Returns final hidden states (B, T, C) after ln_f, and caches."""
        P, NH = self.params, self.spec.n_head
        if idx.shape[1] + start > self.spec.block_size:
            raise ValueError(f"sequence of {idx.shape[1] + start} tokens exceeds block_size "
                             f"{self.spec.block_size}")
        caches = []
        keep = caches.append if train else (lambda c: None)
        x, c = embedding_forward(idx, P["wte.weight"], P["wpe.weight"], start)
        keep(c)
        for i in range(self.spec.n_layer):
            p = f"h.{i}."
            h, c1 = layernorm_forward(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"])
            qkv, c2 = linear_forward(h, P[p + "attn.c_attn.weight"], P[p + "attn.c_attn.bias"])
            q, k, v = split_heads(qkv, NH)
            if kv is not None:
                K, V = kv[i]
                K[:, :, start:start + k.shape[2]] = k
                V[:, :, start:start + v.shape[2]] = v
                k, v = K[:, :, :start + k.shape[2]], V[:, :, :start + v.shape[2]]
            y, c3 = attention_forward(q, k, v)
            a, c4 = linear_forward(merge_heads(y), P[p + "attn.c_proj.weight"], P[p + "attn.c_proj.bias"])
            x = x + a  # (B, T, C)
            h, c5 = layernorm_forward(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"])
            f, c6 = linear_forward(h, P[p + "mlp.c_fc.weight"], P[p + "mlp.c_fc.bias"])  # (B, T, 4C)
            g, c7 = gelu_ops(self.spec.gelu)[0](f)
            m, c8 = linear_forward(g, P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])
            x = x + m
            keep((c1, c2, c3, c4, c5, c6, c7, c8))
        x, c = layernorm_forward(x, P["ln_f.weight"], P["ln_f.bias"])
        keep(c)
        return x, caches

    def forward(self, idx, targets=None):
        idx = np.asarray(idx)
        self._caches = None  # free the last step's activations before making new ones
        x, caches = self._run(idx, train=targets is not None)
        logits, c_head = linear_forward(x, self.params["wte.weight"])  # (B, T, V), tied
        if targets is None:
            self._caches = None
            return logits, None
        loss, c_ce = cross_entropy_forward(logits, np.asarray(targets))
        self._caches = (caches, c_head, c_ce)
        return logits, float(loss)

    def loss(self, idx, targets):
        x, _ = self._run(np.asarray(idx))
        logits, _ = linear_forward(x, self.params["wte.weight"])
        return float(cross_entropy_forward(logits, np.asarray(targets))[0])

    def backward(self):
        if self._caches is None:
            raise RuntimeError("backward() needs a forward(idx, targets) first")
        caches, c_head, c_ce = self._caches
        P, grads = self.params, {}
        dlogits = cross_entropy_backward(1.0, c_ce)
        dx, dwte_head, _ = linear_backward(dlogits, c_head)
        dx, grads["ln_f.weight"], grads["ln_f.bias"] = layernorm_backward(dx, caches[-1])
        for i in reversed(range(self.spec.n_layer)):
            p = f"h.{i}."
            c1, c2, c3, c4, c5, c6, c7, c8 = caches[1 + i]
            dg, grads[p + "mlp.c_proj.weight"], grads[p + "mlp.c_proj.bias"] = linear_backward(dx, c8)
            df = gelu_ops(self.spec.gelu)[1](dg, c7)
            dh, grads[p + "mlp.c_fc.weight"], grads[p + "mlp.c_fc.bias"] = linear_backward(df, c6)
            dln, grads[p + "ln_2.weight"], grads[p + "ln_2.bias"] = layernorm_backward(dh, c5)
            dx = dx + dln
            dy, grads[p + "attn.c_proj.weight"], grads[p + "attn.c_proj.bias"] = linear_backward(dx, c4)
            B, T, C = dy.shape
            dq, dk, dv = attention_backward(dy.reshape(B, T, self.spec.n_head, -1).transpose(0, 2, 1, 3), c3)
            dqkv = np.empty((B, T, 3 * C), dtype=dy.dtype)
            for j, d in enumerate((dq, dk, dv)):  # undo split_heads: one copy each
                dqkv[:, :, j * C:(j + 1) * C] = merge_heads(d)
            dh, grads[p + "attn.c_attn.weight"], grads[p + "attn.c_attn.bias"] = linear_backward(dqkv, c2)
            dln, grads[p + "ln_1.weight"], grads[p + "ln_1.bias"] = layernorm_backward(dh, c1)
            dx = dx + dln
        dwte, grads["wpe.weight"] = embedding_backward(dx, caches[0])
        grads["wte.weight"] = dwte + dwte_head
        self._caches = None
        self.grads = {n: grads[n] for n in P}  # canonical order
        return self.grads

    def step(self, lr):
        if self.grads is None:
            raise RuntimeError("step() needs backward() first")
        o = self.optim
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in self.grads.values()))
        coef = min(1.0, o.grad_clip / (norm + 1e-6)) if o.grad_clip > 0 else 1.0
        self.t += 1
        bc1, bc2 = 1.0 - o.beta1 ** self.t, 1.0 - o.beta2 ** self.t
        for n, p in self.params.items():
            g, m, v = self.grads[n], self.m[n], self.v[n]
            if coef < 1.0:
                g = g * coef
            if o.weight_decay and decays(n, p.ndim):
                p *= 1.0 - lr * o.weight_decay
            m *= o.beta1
            m += (1.0 - o.beta1) * g
            v *= o.beta2
            v += (1.0 - o.beta2) * (g * g)
            p -= (lr / bc1) * m / (np.sqrt(v / bc2) + o.eps)
        self.grads = None
        return norm

    # --- generation with a KV cache -------------------------------------------------------
    def prefill(self, idx):
        B = idx.shape[0]
        shape = (B, self.spec.n_head, self.spec.block_size, self.spec.head_size)
        self._kv = [(np.zeros(shape, self.np_dtype), np.zeros(shape, self.np_dtype))
                    for _ in range(self.spec.n_layer)]
        self._pos = 0
        return self._extend(idx)

    def decode(self, tok):
        return self._extend(tok)

    def _extend(self, idx):
        x, _ = self._run(np.asarray(idx), kv=self._kv, start=self._pos)
        self._pos += idx.shape[1]
        return (x[:, -1, :] @ self.params["wte.weight"].T).astype(np.float64)  # (B, V)
