"""Triton backend: the torch model (backends/torch_eager.py) with attention, LayerNorm,
the MLP's bias + GELU and cross-entropy replaced by Triton kernels written in this project
(backends/kernels/):

  attention      flash attention, forward and backward, no T x T matrix (flash_attn.py)
  layernorm      output written once in the matmul's dtype under autocast (layernorm.py)
  linear_gelu    torch's matmul without bias, then bias + GELU in one kernel that saves only
                 the matmul's output and sums db in its backward (bias_gelu.py)
  cross_entropy  logits read in their own dtype, no float32 copy of them (cross_entropy.py)

Embedding and the other linears stay torch's (so does the `gelu` op, which the model no
longer calls alone). On a GPU this is the fast path; on a CPU the kernels run only in
Triton's interpreter (TRITON_INTERPRET=1), slowly, to prove them correct. The kernel
modules are imported when a backend is built, not with this module, so that discovery
works without triton and the interpreter setting is read at the right time.
"""

from __future__ import annotations

import importlib.util
import os

from backends.torch_eager import F, TorchBackend, torch
from gptspec.spec import LN_EPS

INSTALL_HINT = "pip install 'gptbench[triton]'"


def _autocast_dtype(device_type):
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def attention(q, k, v):
    """Flash attention. Under autocast its inputs are cast as autocast casts SDPA's (the KV
    cache may hold float32 keys beside low-precision queries)."""
    from backends.kernels.flash_attn import flash_attention

    dtype = _autocast_dtype(q.device.type) or q.dtype
    return flash_attention(q.to(dtype), k.to(dtype), v.to(dtype))


def layernorm(x, w, b):
    """Under autocast the output goes straight to the autocast dtype, which the next matmul
    would cast it to anyway; otherwise it stays in x's dtype."""
    from backends.kernels.layernorm import layer_norm

    return layer_norm(x, w, b, LN_EPS, _autocast_dtype(x.device.type))


def linear_gelu(x, w, b, form="tanh"):
    """gelu(x w^T + b) in the spec's form: the matmul is torch's (autocast casts it as it casts
    F.linear), the bias and GELU are one kernel, in the matmul's output dtype."""
    from backends.kernels.bias_gelu import bias_gelu

    return bias_gelu(F.linear(x, w), b, form)


def cross_entropy(logits, targets):
    from backends.kernels.cross_entropy import cross_entropy as ce

    return ce(logits, targets)


class TritonBackend(TorchBackend):
    name = "triton"
    devices = ("cuda", "cpu")
    dtypes = ("float32", "bfloat16", "float16")  # the kernels have no float64 path

    attention = staticmethod(attention)
    layernorm = staticmethod(layernorm)
    cross_entropy = staticmethod(cross_entropy)

    def linear_gelu(self, x, w, b):
        return linear_gelu(x, w, b, self.spec.gelu)

    @classmethod
    def versions(cls):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return {**super().versions(), "triton": version("triton")}
        except PackageNotFoundError:
            return super().versions()

    @classmethod
    def unavailable(cls, device="cpu", dtype="float32"):
        reason = super().unavailable(device, dtype)
        if reason:
            return reason
        if importlib.util.find_spec("triton") is None:
            return f"triton is not installed: {INSTALL_HINT}"
        if device.split(":")[0] == "cpu":
            if os.environ.get("TRITON_INTERPRET") != "1":
                return ("Triton kernels need a CUDA GPU; on cpu they run only in Triton's interpreter, for "
                        "correctness and not speed: set TRITON_INTERPRET=1")
            if dtype == "bfloat16":
                return "Triton's interpreter computes bfloat16 wrongly; on cpu use float32 or float16"
        return None
