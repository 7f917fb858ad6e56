"""Compare a tensor with its reference under a tolerance (workloads/conformance/tolerances.py) and gather
the rows into a report card, as text and as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from workloads.conformance.tolerances import Tolerance

STEP_STEPS = 3  # the step level's AdamW updates (ladder.check_step), named in its failures


@dataclass
class Row:
    level: str  # ops, step0, eval, step, trajectory or generate
    name: str  # e.g. ops.attention.dq, grad.h.0.ln_1.weight, trajectory.loss
    shape: tuple
    ok: bool
    max_abs: float
    max_scaled: float  # max |x - r| / rms(r): the least atol that passes with rtol 0
    max_rel: float  # max |x - r| / |r| over elements where r != 0
    norm_rel: float  # ||x - r|| / ||r||
    worst_index: tuple | None  # element with the largest |x - r| / (atol rms(r) + rtol |r|)
    worst_value: float | None
    worst_ref: float | None
    first_bad: tuple | None  # first element (C order) outside the element-wise bound
    tol: Tolerance
    note: str = ""


def compare(level: str, name: str, x, ref, tol: Tolerance) -> Row:
    ref = np.asarray(ref, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if x.shape != ref.shape:
        return Row(level, name, ref.shape, False, math.inf, math.inf, math.inf, math.inf, None, None, None, None,
                   tol, note=f"shape {x.shape} where the reference has {ref.shape}")
    diff = np.abs(x - ref)
    scale = float(np.sqrt(np.mean(ref * ref))) if ref.size else 0.0
    bound = tol.atol * scale + tol.rtol * np.abs(ref)
    bad = ~(diff <= bound)  # NaN compares False, so it is bad
    ratio = np.where(np.isnan(diff), np.inf, diff / bound)
    worst = np.unravel_index(int(np.argmax(ratio)), ref.shape) if ref.size else None
    nz = ref != 0
    ref_norm, err_norm = float(np.linalg.norm(ref)), float(np.linalg.norm(x - ref))
    if ref_norm > 0:
        norm_rel = err_norm / ref_norm
    else:
        norm_rel = 0.0 if err_norm == 0 else math.inf
    finite = bool(np.all(np.isfinite(x)))
    ok = finite and not bad.any() and norm_rel <= tol.norm_rtol
    first = np.unravel_index(int(np.flatnonzero(bad)[0]), ref.shape) if bad.any() else None
    return Row(
        level, name, ref.shape, bool(ok),
        max_abs=float(np.max(diff)) if diff.size else 0.0,
        max_scaled=float(np.max(diff)) / scale if scale > 0 else (0.0 if not diff.any() else math.inf),
        max_rel=float(np.max(diff[nz] / np.abs(ref[nz]))) if nz.any() else 0.0,
        norm_rel=norm_rel,
        worst_index=_ints(worst), worst_value=float(x[worst]) if worst is not None else None,
        worst_ref=float(ref[worst]) if worst is not None else None,
        first_bad=_ints(first), tol=tol, note="" if finite else "non-finite values",
    )


def failed_row(level: str, name: str, tol: Tolerance, note: str) -> Row:
    """A check that could not compare (a missing gradient, an exception)."""
    return Row(level, name, (), False, math.inf, math.inf, math.inf, math.inf, None, None, None, None, tol, note)


def _ints(index):
    return None if index is None else tuple(int(i) for i in index)


@dataclass
class Report:
    backend: str
    spec: dict
    device: str
    dtype: str
    settings: dict  # seed, steps, batch size...
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # levels or ops skipped, and why

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)

    @property
    def first_failure(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)

    def to_dict(self) -> dict:
        """Plain JSON types; inf and NaN as strings (JSON has neither)."""
        first = self.first_failure
        return _plain({
            "backend": self.backend, "spec": self.spec, "device": self.device, "dtype": self.dtype,
            "reference": "numpy float64", **self.settings, "ok": self.ok,
            "first_failure": None if first is None else first.name,
            "notes": self.notes,
            "rows": [{**asdict(r), "tol": asdict(r.tol)} for r in self.rows],
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def to_text(self) -> str:
        s = self.settings
        lines = [f"conformance of {self.backend} ({self.device} {self.dtype}) to the NumPy float64 reference, "
                 f"spec {self.spec.get('name')}, " + ", ".join(f"{k} {v}" for k, v in s.items())]
        lines += [f"note: {n}" for n in self.notes]
        head = (f"{'level':10s} {'tensor':34s} {'max_abs':>9s} {'max_rel':>9s} {'norm_rel':>9s}  "
                f"{'worst index':18s} {'atol/rtol/norm':20s} result")
        lines.append(head)
        for r in self.rows:
            tol = f"{r.tol.atol:.0e}/{r.tol.rtol:.0e}/{r.tol.norm_rtol:.0e}"
            where = "" if r.worst_index is None else str(r.worst_index)
            lines.append(f"{r.level:10s} {r.name:34s} {r.max_abs:9.2e} {r.max_rel:9.2e} {r.norm_rel:9.2e}  "
                         f"{where:18s} {tol:20s} {'ok' if r.ok else 'FAIL'}"
                         + (f"  ({r.note})" if r.note else ""))
        first = self.first_failure
        n_ok = sum(r.ok for r in self.rows)
        if first is None:
            lines.append(f"PASS: {n_ok}/{len(self.rows)} checks")
        else:
            lines.append(f"FAIL: {n_ok}/{len(self.rows)} checks pass; first divergence: {describe(first)}")
        return "\n".join(lines)


def describe(r: Row) -> str:
    """One line naming the tensor, the step, where it is worst, and by how much."""
    if r.worst_index is None:
        return f"{r.name}: {r.note}"
    per_step = r.name in ("trajectory.loss", "step.grad_norm")  # one value per step
    if r.first_bad is None:
        where = "(every element within bounds, the norm is not)"
    elif per_step:
        where = f"from step {r.first_bad[0]}"
    elif r.level == "generate":  # (step, batch row[, vocabulary id])
        where = f"from generated token {r.first_bad[0]} (batch row {r.first_bad[1]})"
    else:
        where = f"from index {r.first_bad}"
    if r.level == "step" and not per_step:  # a parameter, compared once the step level's updates are done
        where = f"after step {STEP_STEPS - 1} (the last of {STEP_STEPS} AdamW steps), {where}"
    worst = f"worst at step {r.worst_index[0]}" if per_step else f"worst index {r.worst_index}"
    return (f"{r.name} {where}; {worst}: {r.worst_value:.6g} vs reference "
            f"{r.worst_ref:.6g}; norm_rel {r.norm_rel:.2e} (limit {r.tol.norm_rtol:.0e})"
            + (f"; {r.note}" if r.note else ""))


def _plain(o):
    """JSON has no inf or NaN: write them as strings."""
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return o
