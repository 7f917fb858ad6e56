"""JAX backend: the spec as pure functions of a parameter dict, gradients by jax autodiff,
AdamW written out in jax.numpy (gptspec/optim.py's update, line for line), the whole training
step one `jax.jit` computation.

Parameters keep their canonical names and torch (out, in) layout, so loading is a copy and
a linear layer is `x @ w.T + b`. optax is not used: its adamw applies weight decay to the
bias-corrected update (`p -= lr·(m̂/(√v̂+eps) + wd·p)`) instead of decaying p first, and
clipping would be a second transformation; both are a few lines here and match torch.

float64 needs `jax_enable_x64`, a process-wide switch: a float64 backend turns it on when
it is built and leaves it on. float32 backends are unaffected by it, since every array here
is made with an explicit dtype. jax is imported only if installed, so `gptbench backends`
can say how to get it.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from backends.base import Backend, adam_moments
from gptspec.optim import adamw_functional, decays
from gptspec.spec import LN_EPS
from gptspec.weights import check_params

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # unavailable() explains; the module stays importable for discovery
    jax = jnp = None

INSTALL_HINT = "pip install 'gptbench[jax]'"
JAX_PLATFORM = {"cpu": "cpu", "cuda": "gpu"}


# --- ops: jax arrays in, jax arrays out ----------------------------------------------------
def embedding(idx, wte, wpe, start=0):
    T = idx.shape[1]
    return wte[idx] + jax.lax.dynamic_slice_in_dim(wpe, start, T)  # (B, T, C)


def layernorm(x, w, b):
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)  # biased, as the spec
    return xc * jax.lax.rsqrt(var + LN_EPS) * w + b


def linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def gelu(x):
    return jax.nn.gelu(x, approximate=True)  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))


def gelu_erf(x):
    return jax.nn.gelu(x, approximate=False)  # x·Φ(x) = 0.5·x·(1 + erf(x/√2)), nanoGPT's nn.GELU


def masked_attention(q, k, v, allowed):
    """q (B, NH, Tq, HS); k, v (B, NH, Tk, HS); allowed (Tq, Tk) bool. Scale 1/sqrt(HS)."""
    att = (q @ jnp.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, NH, Tq, Tk)
    att = jnp.where(allowed, att, -jnp.inf)
    return jax.nn.softmax(att, axis=-1) @ v  # (B, NH, Tq, HS)


def attention(q, k, v):
    """Causal, the queries being the last Tq of Tk positions (as numpy_ref.attention_forward)."""
    Tq, Tk = q.shape[-2], k.shape[-2]
    return masked_attention(q, k, v, jnp.tri(Tq, Tk, Tk - Tq, dtype=bool))


def cross_entropy(logits, targets):
    logp = jax.nn.log_softmax(logits, axis=-1)  # (B, T, V)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()


GELUS = {"tanh": gelu, "erf": gelu_erf}  # GPTSpec.gelu -> the function


def linear_gelu(x, w, b, form="tanh"):
    return GELUS[form](linear(x, w, b))  # the MLP's first half, one op as in backends/torch_model.py


def ops(form: str) -> dict:
    """The op table of a spec whose GELU is `form` (GPTSpec.gelu)."""
    return {"embedding": embedding, "layernorm": layernorm, "linear": linear, "attention": attention,
            "gelu": GELUS[form], "linear_gelu": partial(linear_gelu, form=form), "cross_entropy": cross_entropy}


# --- the model -----------------------------------------------------------------------------
def hidden(P, idx, n_layer, n_head, kv=None, start=0, gelu="tanh"):
    """idx (B, T) at positions start.. -> (final hidden states (B, T, C) after ln_f, kv).
    kv: per-layer (K, V) caches (B, NH, block_size, HS); this chunk's keys and values are
    written at start.., and the queries attend over every cached position up to their own.
    gelu: the spec's form, "tanh" or "erf"."""
    x = embedding(idx, P["wte.weight"], P["wpe.weight"], start)
    B, T, C = x.shape
    new_kv = []
    for i in range(n_layer):
        p = f"h.{i}."
        h = layernorm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"])
        qkv = linear(h, P[p + "attn.c_attn.weight"], P[p + "attn.c_attn.bias"])  # (B, T, 3C)
        q, k, v = qkv.reshape(B, T, 3, n_head, C // n_head).transpose(2, 0, 3, 1, 4)  # 3 x (B, NH, T, HS)
        if kv is None:
            y = attention(q, k, v)
        else:
            K = jax.lax.dynamic_update_slice_in_dim(kv[i][0], k, start, axis=2)
            V = jax.lax.dynamic_update_slice_in_dim(kv[i][1], v, start, axis=2)
            new_kv.append((K, V))
            # query t (at position start + t) sees cache slots j <= start + t; later slots
            # are zeros or stale and masked out
            allowed = jnp.arange(K.shape[2])[None, :] <= start + jnp.arange(T)[:, None]  # (T, block_size)
            y = masked_attention(q, K, V, allowed)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + linear(y, P[p + "attn.c_proj.weight"], P[p + "attn.c_proj.bias"])
        h = layernorm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"])
        h = linear_gelu(h, P[p + "mlp.c_fc.weight"], P[p + "mlp.c_fc.bias"], gelu)  # (B, T, 4C)
        x = x + linear(h, P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])
    return layernorm(x, P["ln_f.weight"], P["ln_f.bias"]), new_kv


def logits(P, idx, n_layer, n_head, gelu="tanh"):
    x, _ = hidden(P, idx, n_layer, n_head, gelu=gelu)
    return linear(x, P["wte.weight"])  # (B, T, V), lm_head tied to wte


def loss_and_logits(P, idx, targets, n_layer, n_head, gelu="tanh"):
    z = logits(P, idx, n_layer, n_head, gelu)
    return cross_entropy(z, targets), z


def extend(P, kv, idx, start, n_layer, n_head, gelu="tanh"):
    """Generation: idx (B, T) at positions start.. through the KV cache kv ->
    (last position's logits (B, V), the updated cache)."""
    x, kv = hidden(P, idx, n_layer, n_head, kv, start, gelu)
    return linear(x[:, -1], P["wte.weight"]), kv


# --- the backend --------------------------------------------------------------------------
class JaxBackend(Backend):
    name = "jax"
    devices = ("cpu", "cuda")
    dtypes = ("float32", "float64")

    @classmethod
    def unavailable(cls, device="cpu", dtype="float32"):
        if jax is None:
            return f"jax is not installed: {INSTALL_HINT}"
        reason = super().unavailable(device.split(":")[0], dtype)
        if reason:
            return reason
        try:
            jax.devices(JAX_PLATFORM[device.split(":")[0]])
        except RuntimeError:
            return f"jax {jax.__version__} has no {device} backend (for CUDA: pip install 'jax[cuda12]')"
        return None

    @classmethod
    def versions(cls):
        return {} if jax is None else {"jax": jax.__version__}

    def __init__(self, spec, device="cpu", dtype="float32", optim=None):
        super().__init__(spec, device, dtype, optim)
        reason = self.unavailable(device, dtype)
        if reason:
            raise ValueError(reason)
        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)  # before any float64 array exists
        kind, _, index = device.partition(":")
        self.dev = jax.devices(JAX_PLATFORM[kind])[int(index or 0)]
        self.np_dtype = np.dtype(dtype)
        model = dict(n_layer=spec.n_layer, n_head=spec.n_head, gelu=spec.gelu)
        decayed = {n: decays(n, len(s)) for n, s in spec.param_shapes().items()}
        loss_fn = partial(loss_and_logits, **model)
        update = partial(adamw_functional, jnp, o=self.optim, decayed=decayed)
        self._ops = ops(spec.gelu)
        self._logits = jax.jit(partial(logits, **model))
        self._loss_logits = jax.jit(loss_fn)
        self._grads = jax.jit(jax.grad(loss_fn, has_aux=True))
        # params and moments are updated in place: their old buffers are given to XLA
        self._update = jax.jit(update, donate_argnums=(0, 2, 3))

        def train_step(P, m, v, x, y, lr, bc1, bc2):
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(P, x, y)
            P, m, v, _ = update(P, grads, m, v, lr, bc1, bc2)
            return P, m, v, loss

        self._train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))
        self._extend = jax.jit(partial(extend, **model), donate_argnums=(1,))
        self.P = None
        self._last = None

    def _put(self, a, dtype=None):
        return jax.device_put(np.asarray(a, dtype=dtype or self.np_dtype), self.dev)

    def _ids(self, a):
        return self._put(a, np.int32)

    # --- weights --------------------------------------------------------------------------
    def load_state(self, params):
        check_params(params, self.spec, source="params to load")
        self.P = {n: self._put(params[n]) for n in self.spec.param_shapes()}
        self.m = {n: jnp.zeros_like(p) for n, p in self.P.items()}
        self.v = {n: jnp.zeros_like(p) for n, p in self.P.items()}
        self.t = 0
        self._last = self.grads = None

    def state(self):
        return {n: np.array(p) for n, p in self.P.items()}

    def optimizer_state(self):
        return adam_moments(self.t, self.m, self.v)

    # --- training -------------------------------------------------------------------------
    def forward(self, idx, targets=None):
        x = self._ids(idx)
        if targets is None:
            self._last = None
            return np.array(self._logits(x)), None
        y = self._ids(targets)
        loss, logits = self._loss_logits(self.P, x, y)
        self._last = (x, y)
        return np.array(logits), float(loss)

    def loss(self, idx, targets):
        return float(self._loss_logits(self.P, self._ids(idx), self._ids(targets))[0])

    def backward(self):
        """jax differentiates a function, not a recorded forward: the gradient is one
        jitted forward + backward of the last forward's batch."""
        if self._last is None:
            raise RuntimeError("backward() needs a forward(idx, targets) first")
        self.grads, _ = self._grads(self.P, *self._last)
        self._last = None
        return {n: np.array(g) for n, g in self.grads.items()}

    def step(self, lr):
        if self.grads is None:
            raise RuntimeError("step() needs backward() first")
        self.P, self.m, self.v, norm = self._update(self.P, self.grads, self.m, self.v, lr, *self._bias_corrections())
        self.grads = None
        return float(norm)

    def _bias_corrections(self):
        self.t += 1
        return 1.0 - self.optim.beta1 ** self.t, 1.0 - self.optim.beta2 ** self.t

    def train_step(self, x, y, lr):
        """One jitted computation; the loss stays a jax array until the caller converts it."""
        self.P, self.m, self.v, loss = self._train_step(self.P, self.m, self.v, self._ids(x), self._ids(y), lr,
                                                        *self._bias_corrections())
        return loss

    def sync(self):
        jax.block_until_ready(self.P)

    # --- conformance level 1 ------------------------------------------------------------
    def op_vjp(self, name, inputs, dout):
        """Op `name` (of the spec's op table, ops()) and its input gradients by jax.vjp, from NumPy inputs."""
        if name not in self._ops:
            raise KeyError(f"{self.name} has no op {name!r}; it has {', '.join(self._ops)}")
        floats = [np.issubdtype(np.asarray(a).dtype, np.floating) for a in inputs]
        args = [self._put(a) if f else self._ids(a) for a, f in zip(inputs, floats)]

        def op(*xs):  # the op as a function of its floating-point inputs only
            it = iter(xs)
            return self._ops[name](*(next(it) if f else a for a, f in zip(args, floats)))

        out, vjp = jax.vjp(op, *(a for a, f in zip(args, floats) if f))
        grads = vjp(jnp.asarray(dout, dtype=out.dtype))
        return np.array(out), tuple(np.array(g) for g in grads)

    # --- generation with a KV cache -------------------------------------------------------
    def prefill(self, idx):
        s = self.spec
        shape = (idx.shape[0], s.n_head, s.block_size, s.head_size)
        self._kv = [(jnp.zeros(shape, self.np_dtype, device=self.dev),
                     jnp.zeros(shape, self.np_dtype, device=self.dev)) for _ in range(s.n_layer)]
        self._pos = 0
        return self.decode(idx)

    def decode(self, tok):
        """tok (B, T): T is 1 when decoding, the prompt's length when prefilling (one
        compilation per distinct length; start is traced, so decoding compiles once)."""
        logits, self._kv = self._extend(self.P, self._kv, self._ids(tok), self._pos)
        self._pos += tok.shape[1]
        return np.array(logits, dtype=np.float64)
