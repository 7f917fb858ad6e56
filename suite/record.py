"""The record of one cell (docs/records.md) and the limits it runs under: one type each.

A cell's record is filled in by whoever sees each part of its life:

    Record.start(cell, limits)      the runner (suite/runner.py), before it spawns the child;
                                    `gptbench train`, which runs the same workload in-process
    Record.child(cell, limits)      the child (suite/cell.py): status, metrics, what it imported
    record.take_child(child)        the runner, when the child wrote its part
    Record.from_driver(...)         the dispatcher (suite/dispatch.py), for a cell that never
                                    ran to its end on a host: no_host, a lost node, a stuck task

On disk and through Ray a record is its to_dict(): one flat JSON object whose keys are the
fields below, in this order; a value not known for this cell is null.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone

# 2: `implementation` (the measured class's name, module and versions) joined the record
# 3: the machine's state (machine, contended), the compile caches (compile_cache, compile_cache_state),
# no_host_cause, limit_enforced_by
SCHEMA_VERSION = 3


def now() -> str:
    """ISO 8601 UTC with milliseconds: the one clock format of records and run files."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Limits:
    """What a host class lets one cell use; it travels from the matrix's host class to the
    child as one object. None means no limit (budgets, timeout) or every core (threads)."""
    budget_mb: float | None = None      # RAM for the cell's process tree: over it, oom
    gpu_budget_mb: float | None = None  # VRAM: a bigger card is capped at it
    timeout_s: float | None = 600       # wall clock from spawn: past it, timeout
    threads: int | None = None          # BLAS/OpenMP/torch threads of the child
    compile_cache: str = "fresh"        # fresh: the cell's own empty compile caches; host: the machine's

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Limits":
        return cls(**(d or {}))


# the fields the child owns: the runner copies exactly these from the child's record
CHILD_FIELDS = ("status", "reason", "traceback", "metrics", "implementation", "threads_seen", "rss_after_setup_mb", "setup_s",
                "workload_s", "gate", "heavy_modules", "gpu", "gpu_peak_allocated_mb", "gpu_peak_reserved_mb")


@dataclass
class Record:
    # the cell (suite/cell.py) and the code that measured it
    schema_version: int = SCHEMA_VERSION
    cell_id: str | None = None
    backend: str | None = None
    workload: str | None = None
    spec: dict | None = None
    dtype: str | None = None
    device: str | None = None
    host_class: str | None = None
    seed: int | None = None
    options: dict = field(default_factory=dict)
    code_version: str | None = None
    # how it ended
    status: str | None = None
    reason: str | None = None
    # an oom's limit: "sampler" (the runner's budget_mb), "kernel" (the OOM killer: a memory
    # cgroup's limit or the machine's RAM), "ray" (Ray's memory monitor), or "cell" (a
    # MemoryError or CUDA out-of-memory inside the cell); null unless status is oom
    limit_enforced_by: str | None = None
    traceback: str | None = None
    metrics: dict = field(default_factory=dict)
    implementation: dict | None = None  # backends/contract.py describe(): name, class, versions
    # the limits it ran under, and what the child saw of them
    budget_mb: float | None = None
    gpu_budget_mb: float | None = None
    timeout_s: float | None = None
    threads: int | None = None
    threads_seen: dict | None = None
    compile_cache: str | None = None        # the policy (suite/compile_cache.py)
    compile_cache_state: str | None = None  # cold | warm: what the caches held at the start
    # memory: measured, then estimated (suite/memory.py)
    peak_rss_mb: float | None = None
    peak_rss_sampled_mb: float | None = None
    ru_maxrss_mb: float | None = None
    rss_after_setup_mb: float | None = None
    memory_estimate_mb: float | None = None
    gpu_memory_estimate_mb: float | None = None
    memory_estimate: dict | None = None
    memory_ratio: float | None = None
    gpu: dict | None = None
    gpu_peak_allocated_mb: float | None = None
    gpu_peak_reserved_mb: float | None = None
    # time
    started: str | None = None
    ended: str | None = None
    wall_s: float | None = None
    setup_s: float | None = None
    workload_s: float | None = None
    # the host (suite/env.py) and what the child imported
    host_fingerprint: str | None = None
    host: dict | None = None
    heavy_modules: list | None = None
    calibration_error: str | None = None
    # how the child process ended
    exit_code: int | None = None
    signal: str | None = None
    stderr_tail: str | None = None
    # the machine while the cell ran (suite/machine.py): load, steal, clock, nice, other work
    machine: dict | None = None
    contended: bool | None = None
    gate: dict | None = None  # a gate's report card (cell option `gate`)
    # matrix runs (suite/dispatch.py): where the Ray task ran and what dispatch cost
    node_id: str | None = None
    node_ip: str | None = None
    node_labels: dict | None = None
    worker_pid: int | None = None
    roundtrip_s: float | None = None
    dispatch_s: float | None = None
    ray_overhead_s: float | None = None
    attempts: int | None = None
    no_host_cause: str | None = None  # a no_host's: "pool" (final) or "lost_node" (--resume runs it again)
    worker_code_version: str | None = None

    # --- constructors ----------------------------------------------------------------------
    @classmethod
    def start(cls, cell, limits: Limits, *, cell_id: str | None = None, code_version: str | None = None,
              host: dict | None = None) -> "Record":
        """The cell's identity, its limits, its memory estimate and its host, before it runs."""
        from suite import env, memory

        code_version = code_version or env.code_version()
        host = host if host is not None else env.capture()
        return cls(cell_id=cell_id or cell.cell_id(code_version), **cell.to_dict(), code_version=code_version,
                   **limits.to_dict(), host_fingerprint=host.get("fingerprint"), host=host,
                   **memory.estimate_fields(cell))

    @classmethod
    def child(cls, cell, limits: Limits) -> "Record":
        """The child's record: its identity and limits; it fills in the CHILD_FIELDS."""
        return cls(**cell.to_dict(), **limits.to_dict(), status="crash")

    @classmethod
    def from_driver(cls, cell, cell_id: str, code_version: str, limits: Limits, status: str, reason: str,
                    estimate: dict | None = None, **fields) -> "Record":
        """A cell that never ran to its end on a host: nothing was measured."""
        from suite import memory

        return cls(cell_id=cell_id, **cell.to_dict(), code_version=code_version, status=status, reason=reason,
                   **limits.to_dict(), **(estimate or memory.estimate_fields(cell)), ended=now(), **fields)

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        """A record read back (JSON, Ray); a key this code does not know is an error."""
        unknown = sorted(set(d) - _FIELDS)
        if unknown:
            raise ValueError(f"record has unknown field(s) {unknown}; see docs/records.md")
        return cls(**d)

    # --- filling in ------------------------------------------------------------------------
    def update(self, **fields) -> "Record":
        unknown = sorted(set(fields) - _FIELDS)
        if unknown:
            raise ValueError(f"record has no field(s) {unknown}; see docs/records.md")
        for k, v in fields.items():
            setattr(self, k, v)
        return self

    def take_child(self, child: "Record") -> "Record":
        """The runner's record completed with the child's part."""
        return self.update(**{k: getattr(child, k) for k in CHILD_FIELDS})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_FIELDS = {f.name for f in dataclasses.fields(Record)}
