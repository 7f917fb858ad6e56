"""Attention op benchmark: causal self-attention forward, backward and both, per provider.

A provider is one implementation of the op (the cell's `backend` names it):
  numpy  backends/numpy_ref attention_forward/backward (the reference)
  math   explicit torch: softmax(mask(q k^T / sqrt(D))) v, autograd backward
  sdpa   torch.nn.functional.scaled_dot_product_attention(is_causal=True), torch's choice
  sdpa-flash, sdpa-efficient, sdpa-cudnn, sdpa-math   SDPA pinned to one of its backends
         (unavailable where torch does not offer it for the device and dtype)
  triton backends/kernels/flash_attn.py, this project's kernels (CUDA only: timing Triton's
         CPU interpreter would mean nothing)
Add one by a PROVIDERS entry "name": "module:Class" (the Triton backend adds 'triton'); a
class has name, unavailable(device, dtype) and prepare(q, k, v, dout, dtype, device),
which returns an object with forward(), backward(), fwd_bwd(), sync() and output().

FLOPs follow FlashAttention's convention: causal forward 4·B·H·T²·D / 2 (two GEMMs,
half the square), backward 2.5x forward. Every configuration's forward output is checked
against the float64 reference on its first (batch, head) slice: max_abs_err.
"""

from __future__ import annotations

import importlib
import time

import numpy as np

from gptspec.spec import DTYPE_BYTES
from workloads import Metric, Option, Unavailable, options

PROVIDERS = {
    "numpy": "workloads.attention:NumpyAttention",
    "math": "workloads.attention:TorchMathAttention",
    "sdpa": "workloads.attention:TorchSDPAAttention",
    "sdpa-flash": "workloads.attention:SDPAFlash",
    "sdpa-efficient": "workloads.attention:SDPAEfficient",
    "sdpa-cudnn": "workloads.attention:SDPACudnn",
    "sdpa-math": "workloads.attention:SDPAMath",
    "triton": "workloads.attention:TritonAttention",
}
PASSES = ("forward", "backward", "fwd_bwd")
BWD_OVER_FWD = 2.5


def causal_flops(B: int, H: int, T: int, D: int, kind: str) -> float:
    fwd = 4 * B * H * T * T * D / 2
    return {"forward": fwd, "backward": BWD_OVER_FWD * fwd, "fwd_bwd": (1 + BWD_OVER_FWD) * fwd}[kind]


def provider(name: str):
    if name not in PROVIDERS:
        raise Unavailable(f"no attention provider {name!r}; known: {', '.join(PROVIDERS)}")
    module, _, cls = PROVIDERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


# --- providers ----------------------------------------------------------------------------
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
            with self._pin():
                self.op(q, q, q)
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


# --- the workload ---------------------------------------------------------------------------
def _block_size(spec: dict, before: dict) -> list[int]:
    """[the spec's block_size]"""
    return [spec["block_size"]]


def _head_size(spec: dict, before: dict) -> list[int]:
    """[the spec's head size, n_embd / n_head]"""
    return [spec["n_embd"] // spec["n_head"]]


def _n_head(spec: dict, before: dict) -> int:
    """the spec's n_head"""
    return spec["n_head"]


OPTIONS = (
    Option("batch_size", int, 8, "B", min=1),
    Option("n_head", int, _n_head, "H", min=1),
    Option("seq_lens", list[int], _block_size, "every T measured", min=1),
    Option("head_dims", list[int], _head_size, "every D measured", min=1),
    Option("passes", list[str], list(PASSES), "the passes timed", choices=PASSES),
    Option("repeats", int, 10, "timed calls per (T, D, pass)", min=1),
    Option("warmup", int, 2, "untimed calls before them", min=0),
)
# per (T, D, pass) numbers are rows (metrics["rows"], the attention figure), not scalars
METRICS = (
    Metric("max_abs_err", "1", "the largest forward error against the float64 reference, over every row"),
)


def summary_lines(metrics: dict) -> list[str]:
    """`gptbench cell`'s lines: one per row."""
    return [f"{row['provider']:6s} T={row['T']:<5d} D={row['D']:<4d} {row['pass']:8s} {row['ms_median']:9.3f} ms "
            f"{row['tflops_per_s']:8.4f} TFLOP/s" for row in metrics.get("rows", [])]


def memory_estimate(cell) -> dict:
    """q, k, v, out, their grads and dout (9 B·H·T·D) and about three T x T score arrays
    per head (scores, probabilities, their gradient), at the largest T and D."""
    o = options(cell)
    nbytes = DTYPE_BYTES[cell.dtype]
    B, H, T, D = o["batch_size"], o["n_head"], max(o["seq_lens"]), max(o["head_dims"])
    est = {"activations": 9 * B * H * T * D * nbytes, "scores": 3 * B * H * T * T * nbytes,
           "reference_check": 3 * T * T * 8}
    est["total"] = sum(est.values())
    return est


def prepare(cell):
    p = provider(cell.backend)
    reason = p.unavailable(cell.device, cell.dtype)
    if reason:
        raise Unavailable(reason)
    return lambda: p


def _time_ms(fn, sync, warmup: int, repeats: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(out)


def bench(prov, B: int, H: int, T: int, D: int, dtype: str, device: str, passes=PASSES, repeats: int = 10,
          warmup: int = 2, seed: int = 0) -> list[dict]:
    """Rows of one (B, H, T, D): a row per pass, times in ms, rate in TFLOP/s."""
    from backends.numpy_ref import attention_forward

    rng = np.random.default_rng(seed)
    q, k, v, dout = (rng.standard_normal((B, H, T, D)) for _ in range(4))  # (B, H, T, D) float64
    run = prov.prepare(q, k, v, dout, dtype, device)
    ref = attention_forward(q[:1, :1], k[:1, :1], v[:1, :1])[0]  # (1, 1, T, D), float64
    err = float(np.abs(run.output()[:1, :1] - ref).max())
    rows = []
    for kind in passes:
        ms = _time_ms(getattr(run, kind), run.sync, warmup, repeats)
        q1, med, q3 = np.percentile(ms, [25, 50, 75])
        flops = causal_flops(B, H, T, D, kind)
        rows.append({"provider": prov.name, "B": B, "H": H, "T": T, "D": D, "pass": kind,
                     "ms_median": float(med), "ms_iqr": float(q3 - q1), "flops": flops,
                     "flops_per_s": flops / (med / 1e3), "tflops_per_s": flops / (med / 1e3) / 1e12,
                     "max_abs_err": err})
    return rows


def run(prov, cell) -> dict:
    o = options(cell)
    rows = []
    for T in o["seq_lens"]:
        for D in o["head_dims"]:
            rows += bench(prov, o["batch_size"], o["n_head"], T, D, cell.dtype, cell.device, o["passes"],
                          o["repeats"], o["warmup"], cell.seed)
    return {"rows": rows, "max_abs_err": max(r["max_abs_err"] for r in rows)}
