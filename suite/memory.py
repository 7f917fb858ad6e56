"""The memory a cell is expected to need, before it runs (pre-flight) and in its record.

RAM estimate = the tensors the spec says the workload holds (spec.memory_estimate, or
the workload's own shapes) + a fixed overhead per framework: the interpreter, the
libraries, the corpus, thread pools and allocator caches. The overhead is the backend's
registry entry's (backends/__init__.py, where each number's measurement is written); with
it, measured / estimated stayed within 0.87-1.09 (docs/records.md). On a GPU the tensors
go to VRAM (gpu_memory_estimate_mb) and the host keeps the overhead.
"""

from __future__ import annotations

import backends


def overhead_mb(backend: str) -> float:
    if backend not in backends.REGISTRY:
        try:
            backends.load(backend)
        except Exception:  # noqa: BLE001 -- a plugin that does not load here ends unavailable in its
            return backends.PLUGIN_DEFAULT_FRAMEWORK.overhead_mb  # child; its estimate: the stated default
    return backends.entry(backend).framework.overhead_mb  # a bad `framework` declaration is an error


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


def refuse_beyond_available(cell, advice: str = "Use a smaller spec or batch_size (docs/spec.md, Limits).") -> None:
    """limits.TooBig (exit 2) when the cell's host-RAM estimate is more than this machine has
    available: `gptbench train`, `cell`, `check` and `generate` say so before they allocate a
    spec too big to hold, not after the kernel kills them. A budget below the estimate is a
    measurement (the cell ends oom, as frontier probes do); the machine's own memory is not."""
    from gptspec.limits import fits, mb, quote

    est = estimate_fields(cell)
    if est["memory_estimate_mb"] is not None:  # None: the workload's estimate failed on an option the child names
        part = {k: mb(v * 2**20) for k, v in est["memory_estimate"].items() if k in ("tensors_mb", "overhead_mb")}
        fits(est["memory_estimate_mb"] * 2**20, f"{cell.workload} of spec {quote(cell.spec.get('name'))} "
             f"({cell.backend}, {cell.dtype}: tensors {part['tensors_mb']} + framework {part['overhead_mb']})", advice)
