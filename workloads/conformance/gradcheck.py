"""Finite-difference check of the NumPy reference's hand-written gradients, in float64.

The numerical derivative is the fourth-order central stencil
    f'(p) ~ (8 (f(p+h) - f(p-h)) - (f(p+2h) - f(p-2h))) / (12 h),   h = 1e-3,
whose truncation (~h^4) and roundoff (~1e-16·|f|/h) errors are both near 1e-12, far below
the 1e-6 pass bound, even for the smallest gradients (LayerNorm biases).
Per tensor: rel_err = ||analytic - numeric|| / ||numeric|| over the checked elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.numpy_ref import NumpyBackend
from gptspec.spec import GPTSpec
from gptspec.weights import init_params

REL_TOL = 1e-6
STEP = 1e-3


@dataclass
class TensorCheck:
    name: str
    checked: int
    size: int
    max_abs_err: float
    rel_err: float
    grad_norm: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.rel_err) and self.rel_err <= REL_TOL)


def gradcheck(spec: GPTSpec, seed: int = 0, batch_size: int = 2, samples: int | None = 32,
              perturb: float = 0.0) -> list[TensorCheck]:
    """Check every parameter tensor; `samples` elements each (plus the largest-gradient
    one), or all elements when samples is None. `perturb` adds noise to the init so
    biases and LayerNorm weights are not at their special values 0 and 1."""
    rng = np.random.default_rng(seed)
    params = init_params(spec, seed, dtype=np.float64)
    if perturb:
        params = {n: p + perturb * rng.standard_normal(p.shape) for n, p in params.items()}
    model = NumpyBackend(spec, dtype="float64")
    model.load_state(params)
    x = rng.integers(0, spec.vocab_size, (batch_size, spec.block_size))
    y = rng.integers(0, spec.vocab_size, (batch_size, spec.block_size))
    model.forward(x, y)
    grads = model.backward()

    def loss():
        return model.forward(x, y)[1]

    results = []
    for name, p in model.params.items():
        g = grads[name].reshape(-1)
        flat = p.reshape(-1)  # a view: perturbing it perturbs the model
        if samples is None or samples >= flat.size:
            where = np.arange(flat.size)
        else:
            where = np.unique(np.append(rng.choice(flat.size, samples, replace=False), np.abs(g).argmax()))
        num = np.empty(len(where))
        for j, i in enumerate(where):
            old = flat[i]
            f = {}
            for k in (-2, -1, 1, 2):
                flat[i] = old + k * STEP
                f[k] = loss()
            flat[i] = old
            num[j] = (8 * (f[1] - f[-1]) - (f[2] - f[-2])) / (12 * STEP)
        ana = g[where]
        diff = np.linalg.norm(ana - num)
        norm = np.linalg.norm(num)
        rel = diff / norm if norm > 0 else (0.0 if diff < 1e-12 else np.inf)
        results.append(TensorCheck(name, len(where), flat.size, float(np.abs(ana - num).max()),
                                   float(rel), float(np.linalg.norm(g))))
    return results
