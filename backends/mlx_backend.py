"""MLX backend: the spec as pure functions of a parameter dict (the way MLX ports of nanoGPT
write it), gradients by `mx.value_and_grad`, AdamW written out (gptspec/optim.py's update),
the training step one `mx.compile`d function.

Written by following docs/adding-a-backend.md. Three MLX facts shape it:
- `mx.array(ndarray)` turns float64 into float32 silently: arrays are made with an explicit dtype.
- `mx.compile` retraces for every new Python scalar argument, so the learning rate and the
  bias corrections go in as 0-d arrays.
- MLX is lazy: `mx.eval` after each step keeps the graph from growing across steps.
mlx.optimizers.AdamW is not used (no bias correction by default); mlx.nn.gelu_approx is not
the tanh formula of the spec. mlx is imported only if installed, so `gptbench backends` can
say how to get it.

float32 only: MLX has float64 arrays on the CPU, but its float64 `exp` (so softmax and
logsumexp) and `mx.fast.layer_norm` compute to float32 accuracy (relative errors ~1e-7;
`FLOAT64_EXP_ERROR` in tests/test_mlx_backend.py watches for a fix), so the float64 rung of
the ladder fails at ops.layernorm.out and would only measure MLX's approximations.
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
    import mlx.core as mx
except ImportError:  # unavailable() explains; the module stays importable for discovery
    mx = None

INSTALL_HINT = "pip install 'gptbench[mlx]'"
GELU_C = math.sqrt(2.0 / math.pi)
SQRT_HALF = math.sqrt(0.5)


# --- ops: mx arrays in, mx arrays out ------------------------------------------------------
def embedding(idx, wte, wpe, start=0):
    return wte[idx] + wpe[start:start + idx.shape[1]]  # (B, T, C)


def layernorm(x, w, b):
    return mx.fast.layer_norm(x, w, b, LN_EPS)  # biased variance, as the spec


def linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def gelu(x):
    return 0.5 * x * (1.0 + mx.tanh(GELU_C * (x + 0.044715 * x * x * x)))


def gelu_erf(x):
    return 0.5 * x * (1.0 + mx.erf(x * SQRT_HALF))  # x·Φ(x), nanoGPT's nn.GELU


def attention(q, k, v):
    """Causal; q (B, NH, Tq, HS), k, v (B, NH, Tk, HS) with Tk >= Tq: the queries are the
    last Tq positions (as numpy_ref.attention_forward). Scale 1/sqrt(HS)."""
    Tq, Tk = q.shape[-2], k.shape[-2]
    att = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, NH, Tq, Tk)
    if Tq > 1:
        att = mx.where(mx.tri(Tq, Tk, Tk - Tq, dtype=mx.bool_), att, -mx.inf)
    return mx.softmax(att, axis=-1) @ v  # (B, NH, Tq, HS)


def cross_entropy(logits, targets):
    target_logit = mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]  # (B, T)
    return (mx.logsumexp(logits, axis=-1) - target_logit).mean()


GELUS = {"tanh": gelu, "erf": gelu_erf}  # GPTSpec.gelu -> the function


def linear_gelu(x, w, b, form="tanh"):
    return GELUS[form](linear(x, w, b))  # the MLP's first half, one op as in backends/torch_model.py


def ops(form: str) -> dict:
    """The op table of a spec whose GELU is `form` (GPTSpec.gelu)."""
    return {"embedding": embedding, "layernorm": layernorm, "linear": linear, "attention": attention,
            "gelu": GELUS[form], "linear_gelu": partial(linear_gelu, form=form), "cross_entropy": cross_entropy}


# --- the model -----------------------------------------------------------------------------
def hidden(P, idx, n_layer, n_head, kv=None, start=0, gelu="tanh"):
    """idx (B, T) at positions start.. -> final hidden states (B, T, C) after ln_f.
    kv: per-layer [K, V] caches (B, NH, block_size, HS), written at start.. and attended over.
    gelu: the spec's form, "tanh" or "erf"."""
    x = embedding(idx, P["wte.weight"], P["wpe.weight"], start)
    B, T, C = x.shape
    for i in range(n_layer):
        p = f"h.{i}."
        h = layernorm(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"])
        qkv = linear(h, P[p + "attn.c_attn.weight"], P[p + "attn.c_attn.bias"])  # (B, T, 3C)
        q, k, v = qkv.reshape(B, T, 3, n_head, C // n_head).transpose(2, 0, 3, 1, 4)  # 3 x (B, NH, T, HS)
        if kv is not None:  # generation: this chunk's keys and values join the cache
            K, V = kv[i]
            K[:, :, start:start + T] = k
            V[:, :, start:start + T] = v
            k, v = K[:, :, :start + T], V[:, :, :start + T]
        y = attention(q, k, v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + linear(y, P[p + "attn.c_proj.weight"], P[p + "attn.c_proj.bias"])
        h = layernorm(x, P[p + "ln_2.weight"], P[p + "ln_2.bias"])
        h = linear_gelu(h, P[p + "mlp.c_fc.weight"], P[p + "mlp.c_fc.bias"], gelu)  # (B, T, 4C)
        x = x + linear(h, P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])
    return layernorm(x, P["ln_f.weight"], P["ln_f.bias"])


def loss_and_logits(P, idx, targets, n_layer, n_head, gelu="tanh"):
    logits = linear(hidden(P, idx, n_layer, n_head, gelu=gelu), P["wte.weight"])  # (B, T, V), lm_head tied to wte
    return cross_entropy(logits, targets), logits


# --- the backend --------------------------------------------------------------------------
class MlxBackend(Backend):
    name = "mlx"
    devices = ("cpu", "mps", "cuda")  # the GPU is Metal on Apple silicon, CUDA with mlx[cuda]
    dtypes = ("float32",)

    @classmethod
    def unavailable(cls, device="cpu", dtype="float32"):
        if mx is None:
            return f"mlx is not installed: {INSTALL_HINT}"
        if dtype == "float64":
            return ("MLX's float64 is not float64-accurate (exp, softmax and fast.layer_norm err by ~1e-7); "
                    "check and run mlx in float32")
        reason = super().unavailable(device, dtype)
        if reason:
            return reason
        if device != "cpu" and not mx.is_available(mx.gpu):
            return f"mlx {mx.__version__} sees no GPU"
        return None

    @classmethod
    def versions(cls):
        return {} if mx is None else {"mlx": mx.__version__}

    def __init__(self, spec, device="cpu", dtype="float32", optim=None):
        super().__init__(spec, device, dtype, optim)
        reason = self.unavailable(device, dtype)
        if reason:
            raise ValueError(reason)
        self.dev = mx.cpu if device == "cpu" else mx.gpu
        self.mx_dtype = getattr(mx, dtype)
        decayed = {n: decays(n, len(s)) for n, s in spec.param_shapes().items()}
        loss_fn = partial(loss_and_logits, n_layer=spec.n_layer, n_head=spec.n_head, gelu=spec.gelu)
        self._ops = ops(spec.gelu)
        update = partial(adamw_functional, mx, o=self.optim, decayed=decayed)
        self._loss_logits = mx.compile(loss_fn)
        self._grads = mx.compile(mx.grad(lambda P, x, y: loss_fn(P, x, y)[0]))
        self._update = mx.compile(update)

        def train_step(P, m, v, x, y, lr, bc1, bc2):
            loss, grads = mx.value_and_grad(lambda P: loss_fn(P, x, y)[0])(P)
            P, m, v, _ = update(P, grads, m, v, lr, bc1, bc2)
            return P, m, v, loss

        self._train_step = mx.compile(train_step)
        self.P = None
        self._last = None

    def _arr(self, a):
        return mx.array(np.asarray(a), dtype=self.mx_dtype)  # canonical params may come as float64

    def _scalar(self, a):
        return mx.array(a, dtype=self.mx_dtype)

    # --- weights --------------------------------------------------------------------------
    def load_state(self, params):
        check_params(params, self.spec, source="params to load")
        with mx.stream(self.dev):
            self.P = {n: self._arr(params[n]) for n in self.spec.param_shapes()}
            self.m = {n: mx.zeros_like(p) for n, p in self.P.items()}
            self.v = {n: mx.zeros_like(p) for n, p in self.P.items()}
        self.t = 0
        self._last = self.grads = None

    def state(self):
        return {n: np.array(p) for n, p in self.P.items()}

    def optimizer_state(self):
        return adam_moments(self.t, self.m, self.v)

    # --- training -------------------------------------------------------------------------
    def forward(self, idx, targets=None):
        x = mx.array(np.asarray(idx))
        with mx.stream(self.dev):
            if targets is None:
                self._last = None
                return np.array(linear(hidden(self.P, x, self.spec.n_layer, self.spec.n_head, gelu=self.spec.gelu),
                                       self.P["wte.weight"])), None
            y = mx.array(np.asarray(targets))
            loss, logits = self._loss_logits(self.P, x, y)
        self._last = (x, y)
        return np.array(logits), loss.item()

    def loss(self, idx, targets):
        with mx.stream(self.dev):
            return self._loss_logits(self.P, mx.array(np.asarray(idx)), mx.array(np.asarray(targets)))[0].item()

    def backward(self):
        """MLX differentiates a function, not a recorded forward: the gradient is one
        compiled forward + backward of the last forward's batch."""
        if self._last is None:
            raise RuntimeError("backward() needs a forward(idx, targets) first")
        with mx.stream(self.dev):
            self.grads = self._grads(self.P, *self._last)
        self._last = None
        return {n: np.array(g) for n, g in self.grads.items()}

    def step(self, lr):
        if self.grads is None:
            raise RuntimeError("step() needs backward() first")
        with mx.stream(self.dev):
            self.P, self.m, self.v, norm = self._update(self.P, self.grads, self.m, self.v, *self._scalars(lr))
        self.grads = None
        return norm.item()

    def _scalars(self, lr):
        """lr and this step's bias corrections as 0-d arrays (a Python float would retrace)."""
        self.t += 1
        bc1, bc2 = 1.0 - self.optim.beta1 ** self.t, 1.0 - self.optim.beta2 ** self.t
        return self._scalar(lr), self._scalar(bc1), self._scalar(bc2)

    def train_step(self, x, y, lr):
        """One compiled step, evaluated (MLX is lazy) but left on the device: float() of the
        returned loss reads it."""
        with mx.stream(self.dev):
            self.P, self.m, self.v, loss = self._train_step(self.P, self.m, self.v, mx.array(np.asarray(x)),
                                                            mx.array(np.asarray(y)), *self._scalars(lr))
            mx.eval(self.P, self.m, self.v, loss)
        return loss

    def sync(self):
        mx.synchronize()

    # --- conformance level 1 ------------------------------------------------------------
    def op_vjp(self, name, inputs, dout):
        """Op `name` (of the spec's op table, ops()) and its input gradients by mx.vjp, from NumPy inputs."""
        if name not in self._ops:
            raise KeyError(f"{self.name} has no op {name!r}; it has {', '.join(self._ops)}")
        floats = [np.issubdtype(np.asarray(a).dtype, np.floating) for a in inputs]
        args = [self._arr(a) if f else mx.array(np.asarray(a)) for a, f in zip(inputs, floats)]

        def op(*xs):  # the op as a function of its floating-point inputs only
            it = iter(xs)
            return self._ops[name](*(next(it) if f else a for a, f in zip(args, floats)))

        with mx.stream(self.dev):
            (out,), grads = mx.vjp(op, [a for a, f in zip(args, floats) if f], [self._arr(dout)])
        return np.array(out), tuple(np.array(g) for g in grads)

    # --- generation with a KV cache -------------------------------------------------------
    def prefill(self, idx):
        s = self.spec
        shape = (idx.shape[0], s.n_head, s.block_size, s.head_size)
        with mx.stream(self.dev):
            self._kv = [[mx.zeros(shape, self.mx_dtype), mx.zeros(shape, self.mx_dtype)] for _ in range(s.n_layer)]
        self._pos = 0
        return self.decode(idx)

    def decode(self, tok):
        """tok (B, T) at the next positions (the whole window when prefilling); eager MLX, the
        cache being updated in place."""
        with mx.stream(self.dev):
            x = hidden(self.P, mx.array(np.asarray(tok)), self.spec.n_layer, self.spec.n_head, self._kv, self._pos,
                       self.spec.gelu)
            logits = linear(x[:, -1], self.P["wte.weight"])  # (B, V)
            mx.eval(logits, self._kv)
        self._pos += tok.shape[1]
        return np.array(logits).astype(np.float64)
