"""Attention op benchmark: causal self-attention forward, backward and both, per provider.

A provider is one implementation of the op: the cell's `backend` names a registry entry
(backends/__init__.py) that offers an attention op (backends/attention_ops.py: numpy,
math, sdpa, sdpa-flash, sdpa-efficient, sdpa-cudnn, sdpa-math, triton).

FLOPs follow FlashAttention's convention: causal forward 4·B·H·T²·D / 2 (two GEMMs,
half the square), backward 2.5x forward. Every configuration's forward output is checked
against the float64 reference on its first (batch, head) slice: max_abs_err.
"""

from __future__ import annotations

import time

import numpy as np

import backends
from gptspec.errors import BackendError
from gptspec.spec import DTYPE_BYTES
from workloads import Metric, Option, Unavailable, options

PASSES = ("forward", "backward", "fwd_bwd")
BWD_OVER_FWD = 2.5


def causal_flops(B: int, H: int, T: int, D: int, kind: str) -> float:
    fwd = 4 * B * H * T * T * D / 2
    return {"forward": fwd, "backward": BWD_OVER_FWD * fwd, "fwd_bwd": (1 + BWD_OVER_FWD) * fwd}[kind]


def provider(name: str):
    try:
        return backends.load_attention(name)()
    except BackendError as e:
        raise Unavailable(str(e)) from None


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
