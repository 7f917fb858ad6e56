"""Run directories for the report tests (test-only), laid out per docs/run-dir.md from real
cells measured by suite.runner.run_cell, written without Ray (the dispatcher's own tests
cover its writer, suite/store.py). Plus derived runs: a copy made twice as fast, and a synthetic
thousand-cell run made by replicating real records with varied fields."""

from __future__ import annotations

import copy
import functools
import json
import random
from pathlib import Path

from suite.cell import Cell
from suite.record import Limits
from suite.runner import run_cell

HERE = str(Path(__file__).parent)
TEST_BACKENDS = {"PYTHONPATH": HERE}  # cell_backends.py, importable by the child
TRAIN = {"steps": 30, "batch_size": 8}
ATTN = {"seq_lens": [16, 32, 64], "batch_size": 2, "repeats": 5}


def real_cells() -> list[tuple[Cell, dict]]:
    """(cell, Limits fields): every status a CPU box can produce for real."""
    return [
        (Cell.make("numpy", "train", "tiny", options=TRAIN), {}),
        (Cell.make("numpy", "train", "tiny", dtype="float64", options=TRAIN), {}),
        (Cell.make("numpy", "generate", "tiny", options={"max_new_tokens": 24}), {}),
        (Cell.make("numpy", "attention", "tiny", options=ATTN), {}),
        (Cell.make("sdpa", "attention", "tiny", options=ATTN), {}),
        (Cell.make("numpy", "train", "tiny", device="cuda", options=TRAIN), {}),  # unavailable
        (Cell.make("numpy", "train", "tiny", options={"steps": 5, "lr": 1e30}), {}),  # diverged
        (Cell.make("cell_backends:RaisingBackend", "train", "tiny", options={"steps": 3}), {}),  # crash
        (Cell.make("numpy", "train", "lumgpt", options={"steps": 50}), {"budget_mb": 70.0}),  # oom
    ]


def measure(cells) -> list[dict]:
    return [run_cell(cell, Limits(timeout_s=120, **kw), extra_env=TEST_BACKENDS).to_dict() for cell, kw in cells]


@functools.cache
def run_a_records() -> tuple:
    """Run A, measured once per test session (both report test modules use it): the real
    cells and two conformance cards, one passing, one failing."""
    recs = measure(real_cells())
    return tuple(recs + [conformance_record(recs[0], True), conformance_record(recs[0], False)])


@functools.cache
def rerun_records() -> tuple:
    """The timed ok cells of run A measured again by the same code: run A's noise."""
    return tuple(measure([c for c in real_cells()[:5]]))


def write_run(run_dir: Path, records: list[dict]) -> Path:
    """RUN_DIR/{run.json, hosts/<fingerprint>.json, cells.jsonl} as the dispatcher writes them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "hosts").mkdir(exist_ok=True)
    for r in records:
        if r.get("host"):
            (run_dir / "hosts" / f"{r['host_fingerprint']}.json").write_text(json.dumps(r["host"]))
    first = records[0]
    (run_dir / "run.json").write_text(json.dumps({"code_version": first["code_version"], "started": first["started"],
                                                  "driver_host": first["host"]["hostname"], "matrix": {}}))
    with open(run_dir / "cells.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return run_dir


def conformance_record(like: dict, ok: bool) -> dict:
    """A conformance cell's record in the report card's shape (workloads/conformance/ladder.py),
    written out so the report tests need no ladder run."""
    tol = {"atol": 1e-5, "rtol": 1e-4, "norm_rtol": 1e-5}
    rows = [{"level": "step0", "name": "logits", "shape": [2, 16, 16], "ok": True, "max_abs": 1e-7,
             "max_scaled": 1e-6, "max_rel": 1e-6, "norm_rel": 2e-7, "worst_index": [0, 3, 5], "worst_value": 0.1,
             "worst_ref": 0.1, "first_bad": None, "tol": tol, "note": ""},
            {"level": "step0", "name": "grad.h.0.ln_1.weight", "shape": [32], "ok": ok,
             "max_abs": 1e-7 if ok else 3e-2, "max_scaled": 1e-6, "max_rel": 1e-6 if ok else 0.4,
             "norm_rel": 2e-7 if ok else 0.3, "worst_index": [7], "worst_value": 0.5, "worst_ref": 0.52,
             "first_bad": None if ok else [7], "tol": tol, "note": ""}]
    card = {"backend": "torch" if ok else "broken", "spec": like["spec"], "device": "cpu", "dtype": "float32",
            "reference": "numpy float64", "seed": 0, "steps": 50, "batch_size": 8, "ok": ok,
            "first_failure": None if ok else "grad.h.0.ln_1.weight",
            "notes": ["level 1 (ops) skipped: TorchBackend has no op_vjp method"], "rows": rows}
    r = copy.deepcopy(like)
    r.update(backend=card["backend"], workload="conformance", cell_id=("c0" if ok else "c1") + like["cell_id"][2:],
             status="ok" if ok else "nonconformant", metrics=card,
             reason=None if ok else "grad.h.0.ln_1.weight from index (7,); worst index (7,): 0.5 vs reference 0.52")
    return r


def scaled(records: list[dict], speed: float) -> list[dict]:
    """The same run, every measured time divided by `speed` (rates multiplied by it)."""
    out = copy.deepcopy(records)
    for r in out:
        m = r.get("metrics") or {}
        for k in ("step_ms", "token_ms"):
            if k in m:
                m[k] = [t / speed for t in m[k]]
        for k in ("step_ms_median", "step_ms_iqr", "token_ms_median", "token_ms_iqr", "time_to_first_token_ms",
                  "time_to_target_s"):
            if m.get(k) is not None:
                m[k] /= speed
        for k in ("tokens_per_s", "tokens_per_s_q1", "tokens_per_s_q3", "decode_tokens_per_s", "model_flops_per_s"):
            if k in m:
                m[k] *= speed
        for row in m.get("rows", []):
            if "ms_median" in row:
                row["ms_median"] /= speed
                row["ms_iqr"] /= speed
                row["tflops_per_s"] *= speed
    return out


def repeated(records: list[dict], speeds=(0.97, 1.0, 1.03)) -> list[dict]:
    """Each ok cell as len(speeds) repeats (option `repeat`, ids of their own), the i-th scaled
    by speeds[i] (scaled()), interleaved as the matrix orders them: repeat 0 of every cell first;
    marked not contended."""
    ok = [r for r in records if r["status"] == "ok"]
    out = []
    for i, speed in enumerate(speeds):
        for r in scaled(ok, speed):
            r["options"] = {**(r.get("options") or {}), "repeat": i}
            r["cell_id"] = f"{r['cell_id']}-r{i}"
            r["contended"] = False  # the statistics under test, not the shared machine the cells ran on
            out.append(r)
    return out


HOSTS = [("old-box", 700.0), ("desktop-4070", 16000.0), ("laptop", 8000.0), ("cloud-h100", 64000.0)]


def thousand(records: list[dict], n: int = 1000, seed: int = 0) -> list[dict]:
    """n records replicated from real ones over 4 host classes, 8 backends and 4 specs,
    with varied speeds, memory and losses (a large matrix's shape, not its numbers)."""
    rng = random.Random(seed)
    out = []
    specs = ["tiny", "lumgpt", "proust", "shakespeare-char"]
    backends = ["numpy", "torch", "compile", "triton", "b4", "b5", "b6", "b7"]
    for i in range(n):
        r = copy.deepcopy(records[i % len(records)])
        host, budget = HOSTS[i % len(HOSTS)]
        speed = rng.uniform(0.5, 4.0)
        r = scaled([r], speed)[0]
        r.update(cell_id=f"{i:016x}", host_class=host, budget_mb=budget, seed=i // 128)
        if r["workload"] != "attention":  # attention cells name a provider, kept as measured
            r["backend"] = backends[(i // 4) % len(backends)]
            if r.get("implementation"):  # what reports label a cell by
                r["implementation"] = {**r["implementation"], "name": r["backend"]}
        r["spec"] = {**r["spec"], "name": specs[(i // 32) % len(specs)]}
        m = r.get("metrics") or {}
        if "losses" in m:
            m["losses"] = [v * rng.uniform(0.95, 1.05) if isinstance(v, float) else v for v in m["losses"]]
        if r.get("peak_rss_mb"):
            r["peak_rss_mb"] *= rng.uniform(0.8, 1.5)
        out.append(r)
    return out
