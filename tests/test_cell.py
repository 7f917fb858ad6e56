"""One cell, one child process, one record: every ending provoked for real and measured.

Peaks come from the kernel (os.wait4 of the child) and are checked against the runner's
own RSS samples of the same process; statuses come from real conditions (a raising and a
segfaulting backend, a budget below the peak, a short clock, a huge learning rate, a
device the backend does not have, a dependency that is not installed)."""

import json
import math
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from suite.cell import STATUSES, Cell
from suite.record import Limits
from suite.runner import GRACE_S, run_cell

HERE = str(Path(__file__).parent)
TEST_BACKENDS = {"PYTHONPATH": HERE}  # cell_backends*.py, importable by the child


def test_cell_id_is_stable_and_changes_with_every_field():
    cell = Cell.make("numpy", "train", "tiny", options={"steps": 5})
    same = Cell.from_dict(cell.to_dict())
    assert same == cell and same.cell_id("abc") == cell.cell_id("abc")
    assert len(cell.cell_id("abc")) == 16 and cell.spec["n_embd"] == 32
    variants = [Cell.make("torch", "train", "tiny", options={"steps": 5}),
                Cell.make("numpy", "generate", "tiny", options={"steps": 5}),
                Cell.make("numpy", "train", "lumgpt", options={"steps": 5}),
                Cell.make("numpy", "train", "tiny", dtype="float64", options={"steps": 5}),
                Cell.make("numpy", "train", "tiny", device="cuda", options={"steps": 5}),
                Cell.make("numpy", "train", "tiny", host_class="rtx4070", options={"steps": 5}),
                Cell.make("numpy", "train", "tiny", seed=1, options={"steps": 5}),
                Cell.make("numpy", "train", "tiny", options={"steps": 6})]
    ids = {v.cell_id("abc") for v in variants} | {cell.cell_id("abc"), cell.cell_id("abd")}
    assert len(ids) == len(variants) + 2
    with pytest.raises(ValueError, match="unknown field"):
        Cell.from_dict({**cell.to_dict(), "colour": "red"})


def assert_one_record(rec, status):
    assert rec["status"] == status and rec["status"] in STATUSES, (rec["status"], rec["reason"], rec["traceback"])
    assert rec["cell_id"] and rec["started"] < rec["ended"] and rec["wall_s"] > 0
    assert rec["peak_rss_mb"] > 5 and rec["host_fingerprint"] == rec["host"]["fingerprint"]


def test_backend_that_raises_gives_crash_with_the_traceback():
    rec = run_cell(Cell.make("cell_backends:RaisingBackend", "train", "tiny", options={"steps": 3}),
                   Limits(timeout_s=120), extra_env=TEST_BACKENDS).to_dict()
    assert_one_record(rec, "crash")
    assert rec["reason"] == "RuntimeError: deliberate failure in train_step"
    assert "cell_backends.py" in rec["traceback"] and "in train_step" in rec["traceback"]
    assert rec["exit_code"] == 0  # the child wrote the record itself and exited cleanly


def test_segfault_gives_crash_written_by_the_runner():
    rec = run_cell(Cell.make("cell_backends:SegfaultBackend", "train", "tiny", options={"steps": 3}),
                   Limits(timeout_s=120), extra_env=TEST_BACKENDS).to_dict()
    assert_one_record(rec, "crash")
    assert rec["signal"] == "SIGSEGV" and rec["reason"] == "killed by signal SIGSEGV"
    assert "Fatal Python error: Segmentation fault" in rec["traceback"]  # faulthandler's
    assert "in train_step" in rec["traceback"]


def test_budget_below_the_peak_gives_oom_with_the_measured_peak():
    budget = 70.0  # lumgpt on numpy peaks near 120 MB
    rec = run_cell(Cell.make("numpy", "train", "lumgpt", options={"steps": 50}),
                   Limits(budget_mb=budget, timeout_s=120)).to_dict()
    assert_one_record(rec, "oom")
    assert rec["peak_rss_mb"] > budget and rec["peak_rss_sampled_mb"] > budget
    assert f"budget of {budget:.0f} MB" in rec["reason"] and rec["signal"] == "SIGKILL"
    assert rec["limit_enforced_by"] == "sampler"
    assert rec["metrics"] == {}  # killed before it could report anything


def test_short_timeout_gives_timeout():
    rec = run_cell(Cell.make("numpy", "train", "lumgpt", options={"steps": 100_000}), Limits(timeout_s=2.0)).to_dict()
    assert_one_record(rec, "timeout")
    assert 2.0 <= rec["wall_s"] < 2.0 + GRACE_S + 2
    assert rec["signal"] in ("SIGTERM", "SIGKILL") and "timeout of 2 s" in rec["reason"]


def test_learning_rate_that_blows_up_gives_diverged():
    rec = run_cell(Cell.make("numpy", "train", "tiny", options={"steps": 20, "lr": 1e30}), Limits(timeout_s=120)).to_dict()
    assert_one_record(rec, "diverged")
    losses = rec["metrics"]["losses"]
    assert len(losses) < 20 and not math.isfinite(float(losses[-1]))  # stopped at the first bad loss
    assert all(math.isfinite(x) for x in losses[:-1])
    assert rec["reason"].startswith("loss became") and f"step {len(losses) - 1}" in rec["reason"]


def test_unavailable_backends_say_why():
    rec = run_cell(Cell.make("numpy", "train", "tiny", device="cuda"), Limits(timeout_s=60)).to_dict()
    assert_one_record(rec, "unavailable")
    assert rec["reason"] == "numpy runs on cpu, not 'cuda'" and "torch" not in rec["heavy_modules"]
    rec = run_cell(Cell.make("cell_backends_missing:NeedsAcceleratorBackend", "train", "tiny"), Limits(timeout_s=60),
                   extra_env=TEST_BACKENDS).to_dict()
    assert_one_record(rec, "unavailable")
    assert "needs gptbench_no_such_accelerator, which is not installed" in rec["reason"]
    rec = run_cell(Cell.make("nosuch", "train", "tiny"), Limits(timeout_s=60)).to_dict()
    assert rec["status"] == "unavailable" and "unknown backend 'nosuch'" in rec["reason"]


def test_lumgpt_numpy_train_cell_peaks_under_150_mb_without_torch():
    rec = run_cell(Cell.make("numpy", "train", "lumgpt", options={"steps": 6, "eval_interval": 3}),
                   Limits(budget_mb=700, timeout_s=300)).to_dict()
    assert_one_record(rec, "ok")
    print(f"lumgpt numpy train cell: peak RSS {rec['peak_rss_mb']:.1f} MB (sampled {rec['peak_rss_sampled_mb']:.1f}), "
          f"estimate {rec['memory_estimate_mb']:.1f} MB, wall {rec['wall_s']:.2f} s")
    assert rec["heavy_modules"] == ["numpy"]
    assert rec["peak_rss_mb"] < 150
    # the kernel's peak and the runner's 10 ms samples of the same process agree
    assert rec["peak_rss_sampled_mb"] <= rec["peak_rss_mb"] * 1.02 and rec["peak_rss_sampled_mb"] > 0.8 * rec["peak_rss_mb"]
    assert rec["threads_seen"] == {"OMP_NUM_THREADS": str(rec["threads"]),
                                   "cpus": min(rec["threads"], len(os.sched_getaffinity(0)))}


# (backend, workload, spec, options): train cells and a torch op cell
ESTIMATE_CASES = [
    ("numpy", "train", "tiny", {"steps": 3}),
    ("numpy", "train", "lumgpt", {"steps": 3}),
    ("torch", "train", "lumgpt", {"steps": 3}),
    ("sdpa", "attention", "proust", {"repeats": 2, "batch_size": 16}),
]
ESTIMATE_FACTOR = 1.33  # measured / estimated within [1/1.33, 1.33]


@pytest.mark.parametrize("backend,workload,spec,options", ESTIMATE_CASES, ids=lambda x: str(x))
def test_memory_estimate_is_within_the_stated_factor_of_the_measured_peak(backend, workload, spec, options):
    if backend in ("torch", "sdpa") and find_spec("torch") is None:  # not imported here: see below
        pytest.skip("torch is not installed")
    rec = run_cell(Cell.make(backend, workload, spec, options=options), Limits(timeout_s=300, threads=1)).to_dict()
    assert_one_record(rec, "ok")
    ratio = rec["peak_rss_mb"] / rec["memory_estimate_mb"]
    print(f"{backend} {workload} {spec}: peak {rec['peak_rss_mb']:.1f} MB, estimate {rec['memory_estimate_mb']:.1f} MB, "
          f"ratio {ratio:.2f}")
    assert rec["memory_ratio"] == pytest.approx(ratio)
    assert 1 / ESTIMATE_FACTOR <= ratio <= ESTIMATE_FACTOR
    if backend != "numpy":  # torch was told the thread count, not only the environment
        assert rec["threads_seen"] == {"OMP_NUM_THREADS": "1", "torch": 1, "cpus": 1}


def test_peak_is_the_childs_own_not_the_spawning_processs():
    # Linux keeps the parent's high-water mark in a fork+exec'd child's ru_maxrss; the
    # record's peak (the child's VmHWM) must not see its spawner's 300 MB. The spawner is a
    # separate process so this test's ballast does not raise pytest's own high-water mark.
    code = ("import json, numpy as np; from suite.cell import Cell; from suite.runner import run_cell; from suite.record import Limits; "
            "ballast = np.ones(300 * 2**20 // 8); "
            "rec = run_cell(Cell.make('numpy', 'train', 'tiny', options={'steps': 2}), Limits(timeout_s=120)).to_dict(); "
            "print(json.dumps({k: rec[k] for k in ('status', 'ru_maxrss_mb', 'peak_rss_mb', 'peak_rss_sampled_mb')}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["status"] == "ok"
    assert rec["ru_maxrss_mb"] > 300 > 100 > rec["peak_rss_mb"]
    # the high-water mark and the 10 ms samples agree, up to the kernel's lazy RSS counters
    assert rec["peak_rss_mb"] >= 0.98 * rec["peak_rss_sampled_mb"] > 20


def test_threads_bind_the_cells_cpus_as_well_as_the_thread_pools():
    """One thread: the child may run on one CPU only, so a framework that sizes its pool from
    the affinity mask (not the environment) is held to it too."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: nothing to narrow")
    rec = run_cell(Cell.make("numpy", "train", "tiny", options={"steps": 2}), Limits(timeout_s=120, threads=1)).to_dict()
    assert rec["status"] == "ok" and rec["threads_seen"] == {"OMP_NUM_THREADS": "1", "cpus": 1}
