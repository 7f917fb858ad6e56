"""PyTorch eager backend: the spec as torch modules (backends/torch_model.py), AdamW and
global-norm clipping from torch (the semantics of gptspec/optim.py).

Every layer's arithmetic is one of the op functions below, held as class attributes of
TorchBackend: a subclass swaps one (the Triton backend swaps `attention`), the constructor's
`attention=` picks "sdpa" (default) or "math" or any function (q, k, v) -> y, and
`op_vjp` lets level 1 of the conformance ladder test exactly the ops the model runs.

float32 and float64 run in that dtype. bfloat16 and float16 are autocast: parameters,
gradients and AdamW stay float32, matmuls and attention run in the low precision.
torch is imported here only if installed, so `gptbench backends` can say how to get it.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from backends.base import Backend
from gptspec.optim import decays
from gptspec.spec import LN_EPS
from gptspec.weights import check_params

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # unavailable() explains; the module stays importable for discovery
    torch = F = None

INSTALL_HINT = "pip install 'gptbench[torch]'"
OPS = ("embedding", "layernorm", "linear", "attention", "gelu", "linear_gelu", "cross_entropy")


# --- ops: torch tensors in, torch tensors out ----------------------------------------------
def math_attention(q, k, v):
    """Explicit causal attention. q (B, NH, Tq, HS); k, v (B, NH, Tk, HS), Tk >= Tq: the
    queries are the last Tq positions (as numpy_ref.attention_forward). Scale 1/sqrt(HS)."""
    Tq, Tk = q.shape[-2], k.shape[-2]
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, NH, Tq, Tk)
    if Tq > 1:
        future = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).triu(Tk - Tq + 1)
        att = att.masked_fill(future, float("-inf"))
    return F.softmax(att, dim=-1) @ v  # (B, NH, Tq, HS)


def sdpa_attention(q, k, v):
    """The same function through F.scaled_dot_product_attention (fused kernels where the
    device has them). is_causal aligns the mask top-left, so Tq < Tk needs an explicit mask."""
    Tq, Tk = q.shape[-2], k.shape[-2]
    if Tq == Tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if Tq == 1:  # one new token sees every cached key
        return F.scaled_dot_product_attention(q, k, v)
    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


ATTENTION = {"sdpa": sdpa_attention, "math": math_attention}


def embedding(idx, wte, wpe, start=0):
    return F.embedding(idx, wte) + wpe[start:start + idx.shape[1]]  # (B, T, C)


def layernorm(x, w, b):
    return F.layer_norm(x, x.shape[-1:], w, b, LN_EPS)


def linear(x, w, b=None):
    return F.linear(x, w, b)


def cross_entropy(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# --- the backend --------------------------------------------------------------------------
class TorchBackend(Backend):
    name = "torch"
    devices = ("cpu", "cuda", "mps")
    dtypes = ("float32", "float64", "bfloat16", "float16")

    # the ops the model runs (see OPS); subclasses replace any of them
    embedding = staticmethod(embedding)
    layernorm = staticmethod(layernorm)
    linear = staticmethod(linear)
    attention = staticmethod(sdpa_attention)
    cross_entropy = staticmethod(cross_entropy)

    def gelu(self, x):
        """The spec's GELU (GPTSpec.gelu): the tanh approximation, or nn.GELU's exact erf form."""
        return F.gelu(x, approximate="tanh" if self.spec.gelu == "tanh" else "none")

    def linear_gelu(self, x, w, b):
        """The MLP's gelu(linear(x, w, b)), composed of this backend's own two ops (so a
        subclass that swaps either changes it too); a subclass may fuse it instead."""
        return self.gelu(self.linear(x, w, b))

    @classmethod
    def unavailable(cls, device="cpu", dtype="float32"):
        if torch is None:
            return f"torch is not installed: {INSTALL_HINT}"
        kind = device.split(":")[0]
        reason = super().unavailable(kind, dtype)
        if reason:
            return reason
        if kind == "cuda" and not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            return f"torch {torch.__version__} ({build}) sees no CUDA device"
        if kind == "mps" and not torch.backends.mps.is_available():
            return "torch sees no Apple MPS device"
        if kind == "mps" and dtype == "float64":
            return "MPS has no float64"
        if kind == "cuda" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name(device)} has no bfloat16"
        return None

    @classmethod
    def versions(cls):
        return {} if torch is None else {"torch": torch.__version__, "cuda": torch.version.cuda}

    def __init__(self, spec, device="cpu", dtype="float32", optim=None, attention=None):
        """attention: None (the class's), "sdpa", "math", or a function (q, k, v) -> y."""
        super().__init__(spec, device, dtype, optim)
        reason = self.unavailable(device, dtype)
        if reason:
            raise ValueError(reason)
        if attention is not None:
            self.attention = ATTENTION[attention] if isinstance(attention, str) else attention
        from backends.torch_model import GPT

        self.dev = torch.device(device)
        self.param_dtype = torch.float64 if dtype == "float64" else torch.float32
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        ops = SimpleNamespace(**{n: getattr(self, n) for n in OPS})
        self.module = GPT(spec, ops).to(self.dev, self.param_dtype)
        self.model = self.module  # what training calls; CompileBackend puts the compiled one here
        self.params = dict(self.module.named_parameters())
        self.opt = None
        self._loss = None

    def _autocast(self):
        return torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _ids(self, a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self.dev, non_blocking=True)

    @staticmethod
    def _numpy(t):
        t = t.detach()
        return (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).cpu().numpy()

    # --- weights --------------------------------------------------------------------------
    def load_state(self, params):
        check_params(params, self.spec, source="params to load")
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.from_numpy(np.asarray(params[name])))
                p.grad = None
        self.opt = torch.optim.AdamW(self._param_groups(), lr=0.0, betas=(self.optim.beta1, self.optim.beta2),
                                     eps=self.optim.eps)
        self._loss = None

    def _param_groups(self):
        wd = self.optim.weight_decay
        return [{"params": [p for n, p in self.params.items() if decays(n, p.ndim)], "weight_decay": wd},
                {"params": [p for n, p in self.params.items() if not decays(n, p.ndim)], "weight_decay": 0.0}]

    def state(self):
        return {n: self._numpy(self.params[n]).copy() for n in self.spec.param_shapes()}

    def optimizer_state(self):
        if self.opt is None:
            return None
        state = {n: self.opt.state.get(p, {}) for n, p in self.params.items()}

        def moment(n, key):  # zeros for a parameter no step has touched yet
            return self._numpy(state[n][key]).copy() if state[n] else np.zeros(self.params[n].shape, np.float32)

        return {"step": int(max((float(s["step"]) for s in state.values() if "step" in s), default=0)),
                "exp_avg": {n: moment(n, "exp_avg") for n in state},
                "exp_avg_sq": {n: moment(n, "exp_avg_sq") for n in state}}

    # --- training -------------------------------------------------------------------------
    def _loss_of(self, x, y):
        """The training forward (the one train_step runs): loss on the device, graph kept."""
        with self._autocast():
            return self.model(self._ids(x), self._ids(y))

    def forward(self, idx, targets=None):
        if targets is None:
            with torch.no_grad(), self._autocast():
                logits, _ = self.model(self._ids(idx))
            self._loss = None
            return self._numpy(logits), None
        logits, self._loss = self._loss_of(idx, targets)
        return self._numpy(logits), float(self._loss.detach())

    def loss(self, idx, targets):
        """Evaluation: no graph kept."""
        with torch.no_grad(), self._autocast():
            _, loss = self.model(self._ids(idx), self._ids(targets))
        return float(loss)

    def backward(self):
        if self._loss is None:
            raise RuntimeError("backward() needs a forward(idx, targets) first")
        self._zero_grads()
        self._loss.backward()
        self._loss = None
        return {n: self._numpy(p.grad).copy() for n, p in self.params.items()}

    def _zero_grads(self):
        """Gradients accumulate in torch: every backward starts from none."""
        for p in self.params.values():
            p.grad = None

    def _clip_grads(self):
        """Global-norm clip (gptspec/optim.py); returns the norm before clipping, on the device."""
        params = list(self.params.values())
        if self.optim.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.optim.grad_clip)
        return torch.nn.utils.get_total_norm([p.grad for p in params])

    def _update(self, lr):
        norm = self._clip_grads()
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        return norm

    def step(self, lr):
        if self.opt is None:
            raise RuntimeError("step() needs load_state() first")
        return float(self._update(lr))

    def train_step(self, x, y, lr):
        """No host copies: the loss stays on the device until the caller converts it."""
        self._zero_grads()
        _, loss = self._loss_of(x, y)
        loss.backward()
        self._update(lr)
        return loss.detach()

    def sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        elif self.dev.type == "mps":
            torch.mps.synchronize()

    # --- conformance level 1 ------------------------------------------------------------
    def op_vjp(self, name, inputs, dout):
        """Run op `name` (one of OPS) on NumPy inputs; return (output, gradients of the
        floating-point inputs given the output's cotangent dout), as NumPy."""
        if name not in OPS:
            raise KeyError(f"{self.name} has no op {name!r}; it has {', '.join(OPS)}")
        args = [torch.tensor(a, device=self.dev,
                             dtype=self.param_dtype if np.issubdtype(np.asarray(a).dtype, np.floating) else torch.int64)
                for a in inputs]
        for a in args:
            a.requires_grad_(a.is_floating_point())
        with self._autocast():
            out = getattr(self, name)(*args)
        out.backward(torch.as_tensor(dout, dtype=out.dtype, device=self.dev))
        return self._numpy(out), tuple(self._numpy(a.grad) for a in args if a.is_floating_point())

    # --- generation with a KV cache -------------------------------------------------------
    def prefill(self, idx):
        s = self.spec
        shape = (idx.shape[0], s.n_head, s.block_size, s.head_size)
        self._kv = [(torch.zeros(shape, dtype=self.param_dtype, device=self.dev),
                     torch.zeros(shape, dtype=self.param_dtype, device=self.dev)) for _ in range(s.n_layer)]
        self._pos = 0
        return self._extend(idx)

    def decode(self, tok):
        return self._extend(tok)

    def _extend(self, idx):
        with torch.no_grad(), self._autocast():
            x = self.module.hidden(self._ids(idx), self._kv, self._pos)  # (B, T, C)
            logits = self.linear(x[:, -1], self.module.wte.weight)  # (B, V)
        self._pos += idx.shape[1]
        return self._numpy(logits).astype(np.float64)
