"""Workloads: what a cell makes a backend do. Module `workloads.<name>` provides

    run(target, cell) -> metrics dict   (a "status" key, if any: ok, diverged, nonconformant)
    memory_estimate(cell) -> bytes dict (spec.memory_estimate style, "total" included)
    prepare(cell) -> make               (optional; default: prepare_backend) make() -> target

prepare checks, allocating nothing, and raises Unavailable when this host cannot run the
cell (the cell becomes `unavailable` with the reason); the runner caps the GPU between
prepare and make(). Modules import their frameworks lazily (no torch at the top).
"""

from __future__ import annotations

import importlib

from gptspec.errors import GptbenchError

# generic options the cell runner handles; the rest belong to the workload
RUNNER_OPTIONS = ("threads", "gate", "repeat")  # repeat: the matrix's repeat index, part of the cell id


class Unavailable(Exception):
    """This host cannot run the cell (missing device, dtype, library); the message says why."""


def load(name: str):
    try:
        return importlib.import_module(f"workloads.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"workloads.{name}":
            raise GptbenchError(f"unknown workload {name!r}; known: train, generate, attention"
                                " (and conformance where installed).") from None
        raise


def workload_options(cell, allowed) -> dict:
    """The cell's options for the workload, checked against the names it knows."""
    opts = {k: v for k, v in cell.options.items() if k not in RUNNER_OPTIONS}
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise GptbenchError(f"workload {cell.workload!r} has no option(s) {unknown}; "
                            f"it knows {sorted(allowed)}.")
    return opts


def prepare_backend(cell):
    """A constructor of the cell's backend on its device and dtype, or Unavailable."""
    import backends

    try:
        cls = backends.load(cell.backend)
    except ImportError as e:  # the backend's own dependency (torch, triton) is not installed
        raise Unavailable(f"backend {cell.backend!r} needs {e.name or e}, which is not installed here") from None
    except GptbenchError as e:
        raise Unavailable(str(e)) from None
    reason = cls.unavailable(cell.device, cell.dtype)
    if reason:
        raise Unavailable(reason)
    return lambda: cls(cell.spec_obj(), device=cell.device, dtype=cell.dtype)
