"""A cell: one (backend, workload, spec, dtype, device, host class, seed, options) to
measure, and the child process that measures it (`python -m suite.cell PAYLOAD RECORD`).

The child imports only what the cell needs (no torch in a NumPy cell), runs the workload,
and writes its record (suite/record.py: status, metrics, what it imported, GPU peaks) to
RECORD, atomically. suite/runner.py spawns it, watches time and memory, and completes
the record; if the child dies before writing, the runner writes the record itself.
See docs/records.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field

import backends
import workloads
from backends.contract import describe
from gptspec.files import write_json_atomic
from gptspec.spec import GPTSpec, preset
from suite.env import cpus_seen
from suite.record import Limits, Record

STATUSES = ("ok", "nonconformant", "oom", "timeout", "crash", "unavailable", "diverged", "no_host")
# besides every framework's in the backend registry: modules no cell should need to import
OTHER_HEAVY_MODULES = ("pandas", "scipy", "tensorflow", "ray")


@dataclass(frozen=True)
class Cell:
    backend: str          # built-in name, entry point or module:Class (attention: a provider)
    workload: str         # train | generate | attention | conformance
    spec: dict            # every GPTSpec field, so the id changes when a preset does
    dtype: str = "float32"
    device: str = "cpu"
    host_class: str = "any"
    seed: int = 0
    options: dict = field(default_factory=dict)  # workload options, plus gate and repeat

    @classmethod
    def make(cls, backend: str, workload: str, spec="tiny", **kw) -> "Cell":
        """spec: a preset name, a GPTSpec or a dict of its fields."""
        if isinstance(spec, str):
            spec = preset(spec)
        if isinstance(spec, GPTSpec):
            spec = spec.to_dict()
        return cls(backend=backend, workload=workload, spec=dict(spec), **kw)

    def spec_obj(self) -> GPTSpec:
        return GPTSpec.from_dict(self.spec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"cell has unknown field(s) {unknown}; fields are {sorted(known)}")
        return cls(**d)

    def cell_id(self, code_version: str | None = None) -> str:
        """Stable hash of the cell and the code that measures it (16 hex digits)."""
        if code_version is None:
            from suite.env import code_version as current

            code_version = current()
        key = json.dumps({"cell": self.to_dict(), "code": code_version}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


# --- the child ------------------------------------------------------------------------------
def vm_hwm_mb(pid="self") -> float | None:
    """Peak RSS of a process's current program, in MB: the kernel's VmHWM (Linux).

    Not getrusage/wait4's ru_maxrss: on Linux that keeps the high-water mark of the image
    replaced by exec, so a child spawned from a 400 MB parent reports at least 400 MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_mb_self() -> float:
    hwm = vm_hwm_mb()
    if hwm is not None:
        return hwm
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # elsewhere: the best there is
    return kb / 2**20 if sys.platform == "darwin" else kb / 1024  # macOS: bytes


def heavy_modules_imported() -> list[str]:
    """The heavy modules this process has imported: they say what the cell paid for (the
    NumPy cell must show no torch)."""
    return sorted(m for m in (*backends.heavy_modules(), *OTHER_HEAVY_MODULES) if m in sys.modules)


def _is_oom(exc: BaseException) -> bool:
    # torch.OutOfMemoryError (CUDA) is matched by name so a NumPy cell never imports torch
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


def _cap_gpu(cell: Cell, gpu_budget_mb: float | None) -> dict:
    """Cap this process's CUDA allocator at the host's VRAM budget (emulates a smaller
    card on a bigger one). Before any model is built, so every allocation is capped."""
    import torch

    if not torch.cuda.is_available():
        raise workloads.Unavailable(f"torch {torch.__version__} sees no CUDA device")
    index = torch.device(cell.device).index or 0
    total_mb = torch.cuda.get_device_properties(index).total_memory / 2**20
    info = {"gpu_name": torch.cuda.get_device_name(index), "gpu_memory_mb": round(total_mb),
            "cuda": torch.version.cuda}
    if gpu_budget_mb and gpu_budget_mb < total_mb:
        torch.cuda.set_per_process_memory_fraction(gpu_budget_mb / total_mb, index)
        info["gpu_capped_mb"] = gpu_budget_mb
    return info


def _gpu_peaks(cell: Cell) -> dict:
    torch = sys.modules.get("torch")
    if torch is None or not cell.device.startswith("cuda") or not torch.cuda.is_initialized():
        return {}
    return {"gpu_peak_allocated_mb": torch.cuda.max_memory_allocated(cell.device) / 2**20,
            "gpu_peak_reserved_mb": torch.cuda.max_memory_reserved(cell.device) / 2**20}


def _add_mfu(metrics: dict, peak: float | None) -> None:
    """MFU = model FLOP/s / the host's calibrated peak GEMM FLOP/s for the cell's dtype;
    for op benchmarks (metrics["rows"]) per row."""
    if not peak:
        return
    metrics["peak_flops_per_s"] = peak
    if metrics.get("model_flops_per_s"):
        metrics["mfu"] = metrics["model_flops_per_s"] / peak
    for row in metrics.get("rows", []):
        if row.get("flops_per_s"):
            row["mfu"] = row["flops_per_s"] / peak


def measure(cell: Cell, limits: Limits, peak_flops_per_s: float | None = None, **hooks) -> tuple[Record, object]:
    """Measure `cell` in this process: the child's job (suite/runner.py spawns it for this),
    and `gptbench train`'s. Returns the record with the child's fields filled in, and what
    was measured (the backend; None when it was never made). hooks go to the workload's run
    (train: on_step, for progress)."""
    out = Record.child(cell, limits)
    target = None
    t0 = time.perf_counter()
    try:
        module = workloads.load(cell.workload)
        gate = cell.options.get("gate")
        make = getattr(module, "prepare", workloads.prepare_backend)(cell)
        if cell.device.startswith("cuda"):
            out.gpu = _cap_gpu(cell, limits.gpu_budget_mb)
        target = make()
        out.implementation = describe(target)
        out.threads_seen = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "cpus": cpus_seen()}
        if "torch" in sys.modules and limits.threads:  # the env vars fix BLAS/OpenMP; torch's intra-op pool too
            sys.modules["torch"].set_num_threads(limits.threads)
            out.threads_seen["torch"] = sys.modules["torch"].get_num_threads()
        out.rss_after_setup_mb = peak_rss_mb_self()
        out.setup_s = time.perf_counter() - t0
        if gate:  # e.g. gate "conformance": a failing gate ends the cell with its status
            gate_cell = dataclasses.replace(cell, workload=gate, options={})  # the gate's own defaults
            gate_metrics = workloads.load(gate).run(workloads.prepare_backend(gate_cell)(), gate_cell)
            out.gate = gate_metrics
            if gate_metrics.get("status", "ok") != "ok":
                out.update(status=gate_metrics["status"], reason=f"gate {gate!r}: {gate_metrics.get('reason', '')}")
                return out, target
        t1 = time.perf_counter()
        metrics = module.run(target, cell, **hooks)
        out.workload_s = time.perf_counter() - t1
        out.status = metrics.pop("status", "ok")
        out.reason = metrics.pop("reason", None)
        _add_mfu(metrics, peak_flops_per_s)
        out.metrics = metrics
    except workloads.Unavailable as e:
        out.update(status="unavailable", reason=str(e))
    except BaseException as e:  # noqa: BLE001 -- every failure must end in a record
        out.update(status="oom" if _is_oom(e) else "crash", reason=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc())
    finally:
        out.update(**_gpu_peaks(cell))
        out.heavy_modules = heavy_modules_imported()
        out.peak_rss_mb = peak_rss_mb_self()  # the runner takes the larger of this and its last poll
    return out, target


def execute(payload: dict) -> Record:
    """The child's part of the record of the payload's cell (`python -m suite.cell`)."""
    return measure(Cell.from_dict(payload["cell"]), Limits.from_dict(payload["limits"]),
                   payload.get("peak_flops_per_s"))[0]


def main(argv=None) -> int:
    import faulthandler

    faulthandler.enable()  # a segfault still leaves a Python traceback on stderr
    payload_path, record_path = (argv or sys.argv[1:])[:2]
    with open(payload_path) as f:
        payload = json.load(f)
    write_json_atomic(record_path, execute(payload).to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
