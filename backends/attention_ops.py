"""Attention ops: the implementations of causal self-attention that the `attention`
workload (workloads/attention.py) times, each the `attention` of a registry entry
(backends/__init__.py), so an attention cell's `backend` names an entry like any cell's:
  numpy  backends/numpy_ref attention_forward/backward (the reference)
  math   explicit torch: softmax(mask(q k^T / sqrt(D))) v, autograd backward
  sdpa   torch.nn.functional.scaled_dot_product_attention(is_causal=True), torch's choice
  sdpa-flash, sdpa-efficient, sdpa-cudnn, sdpa-math   SDPA pinned to one of its backends
         (unavailable where torch does not offer it for the device and dtype)
  triton backends/kernels/flash_attn.py, this project's kernels (CUDA only: timing Triton's
         CPU interpreter would mean nothing)
An op class has name, unavailable(device, dtype) and prepare(q, k, v, dout, dtype, device),
which returns an object with forward(), backward(), fwd_bwd(), sync() and output().
Frameworks are imported inside the methods: this module is imported by attention cells of
every framework.
"""

from __future__ import annotations

import numpy as np


class NumpyAttention:
    name = "numpy"

    def unavailable(self, device, dtype):
        if device != "cpu" or dtype not in ("float32", "float64"):
            return f"numpy attention runs on cpu in float32/float64, not {device}/{dtype}"
        return None

    def prepare(self, q, k, v, dout, dtype, device):
        from backends.numpy_ref import attention_backward, attention_forward

        q, k, v, dout = (a.astype(dtype) for a in (q, k, v, dout))
        cache = attention_forward(q, k, v)[1]

        class Passes:
            def forward(self):
                return attention_forward(q, k, v)

            def backward(self):
                return attention_backward(dout, cache)

            def fwd_bwd(self):
                return attention_backward(dout, attention_forward(q, k, v)[1])

            def sync(self):
                pass

            def output(self):
                return attention_forward(q, k, v)[0].astype(np.float64)

        return Passes()


class _TorchAttention:
    def unavailable(self, device, dtype):
        try:
            import torch
        except ImportError:
            return "torch is not installed"
        if device.startswith("cuda") and not torch.cuda.is_available():
            return "no CUDA device visible to torch"
        if not hasattr(torch, dtype):
            return f"torch has no dtype {dtype!r}"
        return None

    def op(self, q, k, v):
        raise NotImplementedError

    def prepare(self, q, k, v, dout, dtype, device):
        import torch

        def tensor(a, grad):
            return torch.tensor(a, dtype=getattr(torch, dtype), device=device, requires_grad=grad)

        q, k, v = (tensor(a, True) for a in (q, k, v))
        dout = tensor(dout, False)
        op = self.op
        retained = op(q, k, v)  # a graph kept for timing backward alone

        class Passes:
            def forward(self):
                with torch.no_grad():
                    return op(q, k, v)

            def backward(self):
                retained.backward(dout, retain_graph=True)

            def fwd_bwd(self):
                op(q, k, v).backward(dout)

            def sync(self):
                if q.is_cuda:
                    torch.cuda.synchronize()

            def output(self):
                return self.forward().double().cpu().numpy()

        return Passes()


class TorchMathAttention(_TorchAttention):
    name = "math"

    def op(self, q, k, v):  # the very function the torch backend runs with attention="math"
        from backends.torch_eager import math_attention

        return math_attention(q, k, v)


class TorchSDPAAttention(_TorchAttention):
    name = "sdpa"

    def op(self, q, k, v):  # the torch backend's default attention
        from backends.torch_eager import sdpa_attention

        return sdpa_attention(q, k, v)


class _PinnedSDPA(_TorchAttention):
    """SDPA restricted to one backend (torch.nn.attention.SDPBackend member `backend`)."""
    backend = ""

    def _pin(self):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(getattr(SDPBackend, self.backend))

    def unavailable(self, device, dtype):
        reason = super().unavailable(device, dtype)
        if reason:
            return reason
        import torch

        # torch's own answer: a small causal call (head dim 64, as benchmarked) under the pin
        q = torch.zeros(1, 1, 16, 64, dtype=getattr(torch, dtype), device=device)
        try:
            self.op(q, q, q)  # pinned, as every call
        except RuntimeError as e:
            return f"torch {torch.__version__} offers no SDPA {self.backend} kernel for {device}/{dtype}: " \
                   f"{str(e).splitlines()[0]}"
        return None

    def op(self, q, k, v):
        import torch.nn.functional as F

        with self._pin():  # the backward runs the kernel the forward chose
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class SDPAFlash(_PinnedSDPA):
    name, backend = "sdpa-flash", "FLASH_ATTENTION"


class SDPAEfficient(_PinnedSDPA):
    name, backend = "sdpa-efficient", "EFFICIENT_ATTENTION"


class SDPACudnn(_PinnedSDPA):
    name, backend = "sdpa-cudnn", "CUDNN_ATTENTION"


class SDPAMath(_PinnedSDPA):
    name, backend = "sdpa-math", "MATH"


class TritonAttention(_TorchAttention):
    name = "triton"

    def unavailable(self, device, dtype):
        if not device.startswith("cuda"):
            return ("the triton provider times Triton kernels on a CUDA GPU; on cpu they run only in "
                    "Triton's interpreter, which proves them correct (tests/triton) but times nothing")
        from backends.triton_attn import TritonBackend

        return TritonBackend.unavailable(device, dtype)

    def op(self, q, k, v):
        from backends.kernels.flash_attn import flash_attention

        return flash_attention(q, k, v)
