"""A minimal gptbench backend, as a newcomer writes one: nanoGPT's model in plain PyTorch,
wrapped in the Backend contract (backends/base.py). docs/adding-a-backend.md walks through it.

    gptbench check examples.minimal_torch:MinimalTorch --dtype float32
"""

from __future__ import annotations

import numpy as np

from backends.base import Backend
from gptspec.optim import decays

try:  # an optional dependency: unavailable() tells the user, instead of an ImportError
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError:
    torch = None


class MinimalTorch(Backend):
    name = "minimal-torch"
    devices = ("cpu", "cuda")
    dtypes = ("float32", "float64")

    @classmethod
    def unavailable(cls, device="cpu", dtype="float32"):
        if torch is None:
            return "needs torch: pip install torch"
        if device == "cuda" and not torch.cuda.is_available():
            return "no CUDA device"
        return super().unavailable(device, dtype)

    def __init__(self, spec, device="cpu", dtype="float32", optim=None):
        super().__init__(spec, device, dtype, optim)
        self.model = _GPT(spec).to(device, getattr(torch, dtype))
        self.params = dict(self.model.named_parameters())  # canonical names: wte.weight, h.0.ln_1.weight...

    def load_state(self, params):
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.from_numpy(np.asarray(params[name])))
                p.grad = None
        o = self.optim
        groups = [{"params": [p for n, p in self.params.items() if decays(n, p.ndim)], "weight_decay": o.weight_decay},
                  {"params": [p for n, p in self.params.items() if not decays(n, p.ndim)], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=0.0, betas=(o.beta1, o.beta2), eps=o.eps)

    def state(self):
        return {n: p.detach().cpu().numpy().copy() for n, p in self.params.items()}

    def forward(self, idx, targets=None):
        idx = torch.as_tensor(idx, device=self.device)
        if targets is None:
            with torch.no_grad():
                return self.model(idx).cpu().numpy(), None
        logits = self.model(idx)  # (B, T, V)
        # kept for backward() under a private name: `self.loss` would hide Backend.loss
        self._loss = F.cross_entropy(logits.flatten(0, 1), torch.as_tensor(targets, device=self.device).flatten())
        return logits.detach().cpu().numpy(), self._loss.item()

    def backward(self):
        self.opt.zero_grad(set_to_none=True)
        self._loss.backward()
        return {n: p.grad.cpu().numpy().copy() for n, p in self.params.items()}

    def step(self, lr):
        norm = torch.nn.utils.clip_grad_norm_(self.params.values(), self.optim.grad_clip)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        return norm.item()


class _Block(nn.Module if torch else object):
    def __init__(self, C, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(C, eps=1e-5), nn.LayerNorm(C, eps=1e-5)
        self.attn = nn.ModuleDict({"c_attn": nn.Linear(C, 3 * C), "c_proj": nn.Linear(C, C)})
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(C, 4 * C), "c_proj": nn.Linear(4 * C, C)})

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.attn["c_attn"](self.ln_1(x)).view(B, T, 3, self.n_head, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, NH, T, HS)
        x = x + self.attn["c_proj"](y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp["c_proj"](F.gelu(self.mlp["c_fc"](self.ln_2(x)), approximate="tanh"))


class _GPT(nn.Module if torch else object):
    def __init__(self, spec):
        super().__init__()
        self.wte = nn.Embedding(spec.vocab_size, spec.n_embd)
        self.wpe = nn.Embedding(spec.block_size, spec.n_embd)
        self.h = nn.ModuleList(_Block(spec.n_embd, spec.n_head) for _ in range(spec.n_layer))
        self.ln_f = nn.LayerNorm(spec.n_embd, eps=1e-5)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))  # (B, T, C)
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # (B, T, V): lm_head tied to wte
