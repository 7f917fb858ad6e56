"""Optimizer semantics shared by all backends: AdamW, the schedule, gradient clipping.

The suite computes the learning rate of each step (lr_at) and passes it to
Backend.step(lr); backends implement the update below exactly (torch.optim.AdamW
semantics, decoupled weight decay applied before the moment update):

    g    <- g * min(1, clip / (||g||_2 + 1e-6))        global norm over all tensors
    p    <- p * (1 - lr * wd)                           2-D tensors only (not biases, LN)
    m    <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
    p    <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class AdamWConfig:
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping


@dataclass(frozen=True)
class Schedule:
    """Linear warmup to lr, then cosine decay to min_lr (default lr/10) at decay_steps
    (nanoGPT get_lr)."""
    lr: float = 1e-3
    warmup_steps: int = 10
    decay_steps: int = 1000
    min_lr: float | None = None  # the final rate; None: lr / 10

    def lr_at(self, step: int) -> float:
        min_lr = self.lr / 10 if self.min_lr is None else self.min_lr
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        if step >= self.decay_steps:
            return min_lr
        ratio = (step - self.warmup_steps) / max(1, self.decay_steps - self.warmup_steps)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (self.lr - min_lr)


def decays(name: str, ndim: int) -> bool:
    """Weight decay applies to 2-D tensors only (matrices and embeddings)."""
    return ndim >= 2


def adamw_functional(xp, P, grads, m, v, lr, bc1, bc2, o: AdamWConfig, decayed):
    """The update above on dicts of immutable arrays, for functional frameworks (jax, mlx):
    xp is the array namespace (jax.numpy, mlx.core). bc1, bc2: the bias corrections
    1 - beta^t, computed by the caller in Python floats as torch does. Returns the new
    (P, m, v) and the gradient norm before clipping."""
    norm = xp.sqrt(sum((g * g).sum() for g in grads.values()))
    coef = xp.minimum(1.0, o.grad_clip / (norm + 1e-6)) if o.grad_clip > 0 else 1.0
    newP, newm, newv = {}, {}, {}
    for n, p in P.items():
        g = grads[n] * coef
        if o.weight_decay and decayed[n]:
            p = p * (1.0 - lr * o.weight_decay)
        newm[n] = o.beta1 * m[n] + (1.0 - o.beta1) * g
        newv[n] = o.beta2 * v[n] + (1.0 - o.beta2) * (g * g)
        newP[n] = p - (lr / bc1) * newm[n] / (xp.sqrt(newv[n] / bc2) + o.eps)
    return newP, newm, newv, norm
