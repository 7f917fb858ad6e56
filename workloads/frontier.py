"""frontier: the largest batch whose training step fits the host's memory budget.

A probe is a train cell of `probe_steps` steps at one batch size, measured like any other
cell: in its own child process under this cell's limits (the runner gives run a `run_cell`,
suite/runner.py), ending `ok` (it fits) or `oom` (the runner killed it over the RAM budget,
or the GPU allocator, capped at the GPU budget, refused). The budget that binds is the GPU's
for a CUDA cell, the RAM's otherwise; a probe's peak is the matching one (VmHWM, or the
CUDA allocator's reserved peak).

The search: batch 1 first (nothing fits when it does not), then the batch where the line
through the fitting probes meets the budget (the spec's memory estimate gives its slope
until two probes have measured one), 10% beyond it while no probe has failed; between the
largest fitting and the smallest failing batch, the line's guess inside the bracket, or
its midpoint when the line is past a failure or two guesses in a row did not halve it. A
good line brackets the frontier in two probes and pins it in two more; a bad one costs a
few times a bisection.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

from workloads import Metric, Option, options

BRACKET_MARGIN = 1.1  # the first guesses aim this far past the predicted frontier, to bracket it


def _block_size(spec: dict, before: dict) -> int:
    """the spec's block_size"""
    return spec["block_size"]


OPTIONS = (
    Option("seq_len", int, _block_size, "tokens per sequence of every probe", min=1),
    Option("probe_steps", int, 2, "training steps per probe: the first allocates the optimizer's state, the "
           "second shows the steady peak", min=1),
    Option("batch_limit", int, 4096, "the largest batch probed: a frontier beyond it is reported as batch_limit, "
           "with capped true", min=1),
    Option("resolution", int, 1, "stop when the largest fitting and the smallest failing batch are this close; "
           "1: the exact frontier", min=1),
)
# the scalars of run()'s metrics; the rest: probes (one row per probe, in the order run)
METRICS = (
    Metric("max_batch", "sequences", "the largest batch whose training step fit the budget (0: none did)",
           compare=True, summary="max batch {:,.0f}"),
    Metric("max_batch_tokens", "tokens", "max_batch x seq_len"),
    Metric("peak_mb_at_max", "MB", "the measured peak of the probe at max_batch (RAM, or GPU reserved on CUDA)",
           summary="peak at max {:,.0f} MB"),
    Metric("estimate_mb_at_max", "MB", "the memory estimate of that probe (suite/memory.py), beside its peak"),
    Metric("binding_budget_mb", "MB", "the budget that binds: the GPU's on CUDA, the RAM's otherwise"),
    Metric("estimated_max_batch", "sequences", "the largest batch the memory estimate alone would fit"),
    Metric("first_failing_batch", "sequences", "the smallest batch that did not fit (null: none probed)"),
    Metric("tokens_per_s_at_max", "tokens/s", "training throughput of the probe at max_batch (median step)"),
    Metric("n_probes", "probes", "probe cells run"),
    Metric("seq_len", "tokens", "tokens per sequence"),
)


@dataclass(frozen=True)
class Probe:
    """One probe cell, as the search and the record's probe rows see it."""
    batch_size: int
    status: str
    peak_mb: float | None = None      # of the binding memory
    estimate_mb: float | None = None  # its estimate, in the same memory
    budget_mb: float | None = None    # the binding budget
    tokens_per_s: float | None = None
    wall_s: float | None = None
    reason: str | None = None

    @property
    def fits(self) -> bool:
        return self.status in ("ok", "diverged")  # a diverged step still ran: the memory was there

    @classmethod
    def from_record(cls, batch_size: int, r: dict) -> "Probe":
        on_gpu = str(r.get("device") or "cpu").startswith("cuda")
        if on_gpu:  # an uncapped card's budget is the card
            budget = r.get("gpu_budget_mb") or (r.get("gpu") or {}).get("gpu_memory_mb")
            peak, estimate = r.get("gpu_peak_reserved_mb"), r.get("gpu_memory_estimate_mb")
        else:  # the runner's own measure: the child's high-water mark or its process tree's, sampled
            budget, estimate = r.get("budget_mb"), r.get("memory_estimate_mb")
            peak = max(r.get("peak_rss_mb") or 0.0, r.get("peak_rss_sampled_mb") or 0.0) or None
        return cls(batch_size, r.get("status") or "crash", peak, estimate, budget,
                   (r.get("metrics") or {}).get("tokens_per_s"), r.get("wall_s"),
                   None if r.get("status") == "ok" else r.get("reason"))


def _guess(fitting: list[Probe], hi: int | None, slope_mb: float, limit: int) -> int:
    """The line's guess, strictly between the largest fitting batch and hi (the smallest
    failing one; while none has failed, 10% past the predicted frontier, up to limit)."""
    lo = fitting[-1]
    if lo.peak_mb is None:  # no peak measured (no /proc): double, then bisect
        return min(limit, 2 * lo.batch_size) if hi is None else (lo.batch_size + hi) // 2
    if len(fitting) >= 2 and fitting[-2].peak_mb is not None:  # two fitting probes measure the line
        a = fitting[-2]
        measured = (lo.peak_mb - a.peak_mb) / (lo.batch_size - a.batch_size)
        slope_mb = measured if measured > 0 else slope_mb  # allocator steps can hide a small slope
    predicted = lo.batch_size + (lo.budget_mb - lo.peak_mb) / slope_mb  # where the line meets the budget
    if hi is None:
        return min(limit, max(lo.batch_size + 1, math.ceil(predicted * BRACKET_MARGIN)))
    if predicted >= hi:  # a failure contradicts the line (an estimate's slope too small): bisect
        return (lo.batch_size + hi) // 2
    return min(hi - 1, max(lo.batch_size + 1, math.floor(predicted)))


def search(probe: Callable[[int], Probe], slope_mb: float, limit: int, resolution: int = 1) -> dict:
    """The frontier by probing: probe(batch) -> Probe; slope_mb: the estimate's MB per
    sequence. Returns max_batch, best (its probe), first_failing_batch, capped, the probes in
    order, and stopped: the probe that ended the search without an answer (neither ok nor oom)."""
    probes: list[Probe] = []
    fitting: list[Probe] = []  # increasing batch sizes: every probe lies above the last fitting one
    hi = stopped = None  # hi: the smallest failing batch
    width = None  # the bracket's width when the last probe was chosen
    slow = 0  # guesses in a row that did not halve the bracket
    b = 1
    while True:
        p = probe(b)
        probes.append(p)
        if p.fits:
            fitting.append(p)
        elif p.status == "oom":
            hi = b
        else:
            stopped = p
            break
        if not fitting:
            break  # batch 1 does not fit
        lo = fitting[-1].batch_size
        if (hi is not None and hi - lo <= resolution) or (hi is None and lo >= limit):
            break
        # two guesses in a row that did not halve the bracket are followed by a midpoint: never
        # worse than about three times a bisection, however wrong the line
        new_width = None if hi is None else hi - lo
        slow = slow + 1 if new_width is not None and width is not None and 2 * new_width > width else 0
        width = new_width
        if slow >= 2:
            b, slow = (lo + hi) // 2, 0
        else:
            b = _guess(fitting, hi, slope_mb, limit)
    best = fitting[-1] if fitting else None
    return {"max_batch": best.batch_size if best else 0, "best": best, "first_failing_batch": hi,
            "capped": hi is None and best is not None and best.batch_size >= limit, "probes": probes,
            "stopped": stopped}


# --- the cell ---------------------------------------------------------------------------------
def _probe_cell(cell, o: dict, batch_size: int):
    """The train cell of one probe: the frontier's own cell with the train workload."""
    opts = {"steps": o["probe_steps"], "batch_size": batch_size, "seq_len": o["seq_len"], "eval_interval": 0,
            "eval_batches": 1, "warmup_steps": 0, "lr_warmup_steps": 0}
    return dataclasses.replace(cell, workload="train", options=opts)


def _slope_mb(cell, o: dict) -> float:
    """The estimate's MB per sequence of batch (activations are linear in it)."""
    spec = cell.spec_obj()
    one, two = (spec.memory_estimate(b, cell.dtype, "train", o["seq_len"])["total"] for b in (1, 2))
    return (two - one) / 2**20


def memory_estimate(cell) -> dict:
    """The smallest probe's: a batch of one (pre-flight: a host that cannot hold it gets none)."""
    o = options(cell)
    return cell.spec_obj().memory_estimate(1, cell.dtype, "train", o["seq_len"])


def run(target, cell, run_cell) -> dict:
    """target: none (the probes make their own backends); run_cell(cell) -> record dict."""
    o = options(cell)
    slope = _slope_mb(cell, o)
    first = Probe.from_record(1, run_cell(_probe_cell(cell, o, 1)))
    if first.budget_mb is None and first.fits:
        return {"status": "crash", "reason": "a frontier needs a memory budget to find: give the host class a "
                "budget_mb (gpu_budget_mb on CUDA), or gptbench cell --budget-mb", "probes": [dataclasses.asdict(first)]}
    known = {1: first}

    def probe(b: int) -> Probe:
        if b not in known:
            known[b] = Probe.from_record(b, run_cell(_probe_cell(cell, o, b)))
        return known[b]

    found = search(probe, slope, o["batch_limit"], o["resolution"])
    probes, best = found["probes"], found["best"]
    metrics = {"seq_len": o["seq_len"], "max_batch": found["max_batch"], "max_batch_tokens": found["max_batch"] *
               o["seq_len"], "first_failing_batch": found["first_failing_batch"], "capped": found["capped"],
               "n_probes": len(probes), "probes": [dataclasses.asdict(p) for p in probes],
               "binding_budget_mb": first.budget_mb}
    if first.estimate_mb is not None and first.budget_mb:
        metrics["estimated_max_batch"] = max(0, 1 + math.floor((first.budget_mb - first.estimate_mb) / slope))
    if best is not None:
        metrics.update(peak_mb_at_max=best.peak_mb, estimate_mb_at_max=best.estimate_mb,
                       tokens_per_s_at_max=best.tokens_per_s)
    stopped = found["stopped"]
    if stopped is not None:  # neither fits nor oom: the frontier is unknown
        metrics.update(status=stopped.status if stopped.status in ("unavailable", "timeout") else "crash",
                       reason=f"the probe at batch {stopped.batch_size} ended {stopped.status}: {stopped.reason}")
    return metrics


def summary_lines(metrics: dict) -> list[str]:
    """`gptbench cell`'s lines: one per probe, in the order run."""
    return [f"batch {p['batch_size']:6d}  {p['status']:8s} peak {_mb(p['peak_mb'])}  estimate "
            f"{_mb(p['estimate_mb'])}  {p['wall_s'] or 0:6.1f} s" for p in metrics.get("probes", [])]


def _mb(x) -> str:
    return f"{x:9.1f} MB" if isinstance(x, (int, float)) else f"{'-':>9s}   "
