"""NumPy reference: the meaning of the spec, with hand-written backprop.

Every layer is an `op_forward(...) -> (out, cache)` / `op_backward(dout, cache)` pair,
written for float32 and float64 alike (the dtype of the inputs is kept). Imports neither
torch nor pandas, so the low-RAM box runs it.
Sizes: B batch, T time, C channels, NH heads, HS head size, V vocab, L layers.
"""

from __future__ import annotations

import math

import numpy as np

from backends.base import Backend
from suite.optim import decays
from suite.spec import LN_EPS

GELU_C = math.sqrt(2.0 / math.pi)


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
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)  # (B, T, 1)
    xhat = xc * rstd
    out = xhat * w + b
    return out, (xhat, rstd, w)


def layernorm_backward(dout, cache):
    xhat, rstd, w = cache
    C = dout.shape[-1]
    dw = np.einsum("ij,ij->j", dout.reshape(-1, C), xhat.reshape(-1, C))
    db = dout.reshape(-1, C).sum(axis=0)
    dxhat = dout * w
    dx = dxhat - dxhat.mean(axis=-1, keepdims=True)
    dx -= xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True)
    dx *= rstd
    return dx, dw, db


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
    db = d2.sum(axis=0)
    return dx, dw, db


# --- causal self-attention ----------------------------------------------------------------
def attention_forward(q, k, v):
    """q (B, NH, Tq, HS); k, v (B, NH, Tk, HS) with Tk >= Tq: the queries are the last Tq
    positions, query i sees keys j <= Tk - Tq + i. Scale 1/sqrt(HS)."""
    Tq, Tk, HS = q.shape[2], k.shape[2], q.shape[3]
    scale = 1.0 / math.sqrt(HS)
    att = q @ k.transpose(0, 1, 3, 2)  # (B, NH, Tq, Tk)
    att *= scale
    if Tq > 1:
        future = np.triu(np.ones((Tq, Tk), dtype=bool), k=Tk - Tq + 1)
        att[..., future] = -np.inf
    att -= att.max(axis=-1, keepdims=True)
    np.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)
    y = att @ v  # (B, NH, Tq, HS)
    return y, (q, k, v, att, scale)


def attention_backward(dy, cache):
    q, k, v, att, scale = cache
    datt = dy @ v.transpose(0, 1, 3, 2)  # (B, NH, Tq, Tk)
    dv = att.transpose(0, 1, 3, 2) @ dy
    # softmax backward; masked entries have att == 0 and so get no gradient
    datt -= np.sum(datt * att, axis=-1, keepdims=True)
    datt *= att
    datt *= scale
    dq = datt @ k
    dk = datt.transpose(0, 1, 3, 2) @ q
    return dq, dk, dv


def split_heads(qkv, n_head):
    B, T, C3 = qkv.shape
    hs = C3 // 3 // n_head
    q, k, v = qkv.reshape(B, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)  # 3 x (B, NH, T, HS)
    return q, k, v


def merge_heads(y):
    B, NH, T, HS = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, NH * HS)  # (B, T, C)


# --- GELU, tanh approximation -------------------------------------------------------------
def gelu_forward(x):
    t = np.tanh(GELU_C * (x + 0.044715 * (x * x * x)))
    out = 0.5 * x * (1.0 + t)
    return out, (x, t)


def gelu_backward(dout, cache):
    x, t = cache
    dt = (1.0 - t * t) * (GELU_C * (1.0 + 3 * 0.044715 * (x * x)))
    return dout * (0.5 * (1.0 + t) + 0.5 * x * dt)


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

    def __init__(self, spec, device="cpu", dtype="float32", optim=None):
        super().__init__(spec, device, dtype, optim)
        reason = self.unavailable(device, dtype)
        if reason:
            raise ValueError(reason)
        self.np_dtype = np.dtype(dtype)
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
            g, c7 = gelu_forward(f)
            m, c8 = linear_forward(g, P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])
            x = x + m
            keep((c1, c2, c3, c4, c5, c6, c7, c8))
        x, c = layernorm_forward(x, P["ln_f.weight"], P["ln_f.bias"])
        keep(c)
        return x, caches

    def forward(self, idx, targets=None):
        idx = np.asarray(idx)
        x, caches = self._run(idx, train=targets is not None)
        logits, c_head = linear_forward(x, self.params["wte.weight"])  # (B, T, V), tied
        if targets is None:
            self._caches = None
            return logits, None
        loss, c_ce = cross_entropy_forward(logits, np.asarray(targets))
        self._caches = (caches, c_head, c_ce)
        return logits, float(loss)

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
            df = gelu_backward(dg, c7)
            dh, grads[p + "mlp.c_fc.weight"], grads[p + "mlp.c_fc.bias"] = linear_backward(df, c6)
            dln, grads[p + "ln_2.weight"], grads[p + "ln_2.bias"] = layernorm_backward(dh, c5)
            dx = dx + dln
            dy, grads[p + "attn.c_proj.weight"], grads[p + "attn.c_proj.bias"] = linear_backward(dx, c4)
            B, T, C = dy.shape
            dq, dk, dv = attention_backward(dy.reshape(B, T, self.spec.n_head, -1).transpose(0, 2, 1, 3), c3)
            dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * C)
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
    def _prefill(self, idx):
        B = idx.shape[0]
        shape = (B, self.spec.n_head, self.spec.block_size, self.spec.head_size)
        self._kv = [(np.zeros(shape, self.np_dtype), np.zeros(shape, self.np_dtype))
                    for _ in range(self.spec.n_layer)]
        self._pos = 0
        return self._extend(idx)

    def _decode(self, tok):
        return self._extend(tok)

    def _extend(self, idx):
        x, _ = self._run(np.asarray(idx), kv=self._kv, start=self._pos)
        self._pos += idx.shape[1]
        return (x[:, -1, :] @ self.params["wte.weight"].T).astype(np.float64)  # (B, V)
