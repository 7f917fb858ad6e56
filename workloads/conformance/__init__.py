"""Conformance: the proof that a backend computes the reference's function, as one unit.

    ladder.py         the ladder: ops, step 0, trajectory, against the float64 NumPy reference
    tolerances.py     the one tolerance table, by dtype and kind of check
    report_card.py    a check's row, the report card as text and JSON
    gradcheck.py      the reference itself against finite differences (float64)
    pytest_plugin.py  the ladder as pytest items (`pytest --gptbench-backend=...`)

This module is also the `conformance` workload: a cell that runs the ladder and is `ok` or
`nonconformant`. The ladder's names (run_ladder, ...) are importable from here; they load on
first use, so the pytest plugin, which pytest imports at every start, stays light.
"""

from __future__ import annotations

from workloads import Option, options

DEFAULT_STEPS = 50
DEFAULT_BATCH = 8


def __getattr__(name):
    import importlib

    ladder = importlib.import_module("workloads.conformance.ladder")  # not `from . import`: that recurses here
    try:
        return getattr(ladder, name)
    except AttributeError:
        raise AttributeError(f"module 'workloads.conformance' has no attribute {name!r}") from None


# --- the cell entry (workloads/__init__.py) ----------------------------------------------
OPTIONS = (
    Option("steps", int, DEFAULT_STEPS, "AdamW steps of the trajectory level", min=1),
    Option("batch_size", int, DEFAULT_BATCH, "sequences of the step-0 and trajectory batches", min=1),
)
# the report card (ok, first_failure, rows) is its result: shown as a card, not as scalars
METRICS = ()


def memory_estimate(cell) -> dict:
    """The backend under test and the float64 reference, both training the ladder's batch."""
    batch = options(cell)["batch_size"]
    spec = cell.spec_obj()
    est = {"backend": spec.memory_estimate(batch, cell.dtype, "train")["total"],
           "reference": spec.memory_estimate(batch, "float64", "train")["total"]}
    est["total"] = sum(est.values())
    return est


def run(backend, cell) -> dict:
    """The report card as metrics: status ok, or nonconformant with the first divergence."""
    from workloads.conformance.ladder import run_ladder
    from workloads.conformance.report_card import describe

    opts = options(cell)
    report = run_ladder(backend, cell.backend, cell.seed, opts["steps"], opts["batch_size"])
    metrics = {"status": "ok" if report.ok else "nonconformant", **report.to_dict()}
    if not report.ok:
        metrics["reason"] = describe(report.first_failure)
    return metrics
