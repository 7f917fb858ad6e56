"""The memory a cell is expected to need, before it runs (pre-flight) and in its record.

RAM estimate = the tensors the spec says the workload holds (spec.memory_estimate, or
the workload's own shapes) + a fixed overhead per framework: the interpreter, the
libraries, the corpus, thread pools and allocator caches. The overhead is measured:
peak RSS minus the tensor estimate of numpy and torch train cells on tiny, lumgpt and
proust (4 steps, float32, Linux x86-64, CPython 3.11, numpy 2.4, torch 2.13 CPU); with
it, measured / estimated stayed within 0.87-1.09 (docs/records.md). On a GPU the tensors
go to VRAM (gpu_memory_estimate_mb) and the host keeps the overhead.
"""

from __future__ import annotations

# MB. numpy: 35 MB after imports, +10 MB corpus and temporaries. torch: 222 MB after
# import, ~100 MB more once autograd and oneDNN run. compile: inductor, 400-510 MB (warm or
# cold inductor cache, tiny spec; its compile workers are separate processes, in
# peak_rss_sampled_mb).
# Plugins not listed are assumed to be torch-based.
OVERHEAD_MB = {"numpy": 45.0, "torch": 320.0, "compile": 450.0}
FRAMEWORK = {"numpy": "numpy", "torch": "torch", "compile": "compile", "math": "torch", "sdpa": "torch",
             "triton": "torch"}


def overhead_mb(backend: str) -> float:
    return OVERHEAD_MB[FRAMEWORK.get(backend, "torch")]


def estimate_fields(cell) -> dict:
    """The record's memory_estimate_mb (host RAM), gpu_memory_estimate_mb and breakdown."""
    import workloads

    try:
        tensors = workloads.load(cell.workload).memory_estimate(cell)
    except Exception as e:  # noqa: BLE001 -- an unknown workload or option fails in the child
        return {"memory_estimate_mb": None, "gpu_memory_estimate_mb": None,
                "memory_estimate": {"error": f"{type(e).__name__}: {e}"}}
    tensors_mb = tensors["total"] / 2**20
    overhead = overhead_mb(cell.backend)
    on_gpu = cell.device.startswith("cuda")
    return {
        "memory_estimate_mb": overhead if on_gpu else overhead + tensors_mb,
        "gpu_memory_estimate_mb": tensors_mb if on_gpu else None,
        "memory_estimate": {"tensors_mb": tensors_mb, "overhead_mb": overhead,
                            **{f"{k}_mb": v / 2**20 for k, v in tensors.items() if k != "total"}},
    }
