"""`gptbench calibrate --overhead BACKEND`: a framework's memory overhead, measured the way
the built-ins' were (backends/__init__.py): train cells of a few steps in float32, each in
its own child process (suite/runner.py), on specs of growing size; per spec, the kernel's
peak RSS of the cell minus the spec's tensor estimate (suite/memory.py) is what the
framework costs besides the tensors. The overhead is the median over the specs, to 10 MB:
with it, the pre-flight's estimate (tensors + overhead) meets the measured peak, and the
ratios printed say how closely on each spec. docs/adding-a-backend.md, section 6.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from gptspec.errors import GptbenchError

SPECS = ("tiny", "lumgpt", "proust")
STEPS = 4
# gptbench's own core: imported by every cell, never a plugin's framework
CORE_MODULES = {"numpy"}


@dataclass
class Measured:
    spec: str
    peak_mb: float
    tensors_mb: float

    @property
    def overhead_mb(self) -> float:
        return self.peak_mb - self.tensors_mb


@dataclass
class Overhead:
    backend: str
    rows: list[Measured]
    name: str
    heavy_modules: tuple[str, ...]
    threads: int

    @property
    def overhead_mb(self) -> float:
        return round(statistics.median(r.overhead_mb for r in self.rows) / 10) * 10

    def ratios(self) -> list[float]:
        """measured / estimated on each spec, with this overhead."""
        return [r.peak_mb / (r.tensors_mb + self.overhead_mb) for r in self.rows]

    def line(self) -> str:
        return f"framework = Framework({self.name!r}, {self.overhead_mb:.1f}, {self.heavy_modules!r})".replace("'", '"')


def measure(backend: str, specs=SPECS, steps: int = STEPS, timeout_s: float = 600) -> Overhead:
    from suite.cell import Cell
    from suite.record import Limits
    from suite.runner import run_cell

    rows, record = [], None
    for spec in specs:
        record = run_cell(Cell.make(backend, "train", spec, options={"steps": steps}), Limits(timeout_s=timeout_s))
        if record.status != "ok":
            raise GptbenchError(f"the train cell of {backend} on {spec} ended {record.status}: "
                                f"{(record.reason or '').strip()[:400]} -- the overhead is measured on cells that "
                                "run; `gptbench check` it first.")
        rows.append(Measured(spec, record.peak_rss_mb, record.memory_estimate["tensors_mb"]))
    name, heavy = _framework(backend, record)
    return Overhead(backend, rows, name, heavy, record.threads)


def _framework(backend: str, record) -> tuple[str, tuple[str, ...]]:
    """The framework's name and heavy modules: what the class declares, else the libraries
    its versions() names, else the registry's heavy modules the cell imported (numpy aside),
    else the top-level package of its module."""
    import backends

    declared = getattr(backends.load(backend), "framework", None)
    if isinstance(declared, backends.Framework):
        return declared.name, declared.heavy_modules
    if isinstance(declared, str) and declared in backends.FRAMEWORKS:
        return declared, backends.FRAMEWORKS[declared].heavy_modules
    versions = [k for k in ((record.implementation or {}).get("versions") or {}) if k != "error"]
    heavy = tuple(m.split(".")[0] for m in versions) or \
        tuple(m for m in record.heavy_modules or () if m not in CORE_MODULES) or \
        ((record.implementation or {}).get("class", backend).split(".")[0].split(":")[0],)
    return heavy[0], heavy


def report(o: Overhead) -> str:
    lines = [f"memory overhead of {o.backend}: train cells of {STEPS} steps, float32, {o.threads} threads, "
             "each in its own process"]
    for r, ratio in zip(o.rows, o.ratios()):
        lines.append(f"  {r.spec:10s} peak {r.peak_mb:7.1f} MB - tensors {r.tensors_mb:6.1f} MB = "
                     f"{r.overhead_mb:6.1f} MB   measured / estimated with {o.overhead_mb:.0f} MB: {ratio:.2f}")
    lines += [f"overhead: {o.overhead_mb:.0f} MB (the median, to 10 MB). Put in your backend class "
              "(`from backends import Framework`):", f"    {o.line()}"]
    return "\n".join(lines)
