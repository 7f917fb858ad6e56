"""The machine's state in every record (suite/machine.py): the accounting against numbers
made up to be known, and a real cell measured beside a CPU burner this test starts, whose
CPU time it measures itself."""

import os
import subprocess
import sys
import time

import psutil
import pytest

from suite import compile_cache, machine
from suite.cell import Cell
from suite.record import Limits
from suite.runner import run_cell


def snap(busy, steal=0.0, total=None, load=1.0):
    return {"loadavg_1m": load, "procs_running": 2, "procs_total": 100, "cpu_mhz": 2000.0,
            "cpu_busy_s": busy, "cpu_steal_s": steal, "cpu_total_s": total if total is not None else busy * 2}


def test_other_load_is_the_machines_busy_time_less_the_cells_over_the_wall_time():
    cores = os.cpu_count()
    # 10 s of wall: the machine was busy 25 core-seconds, the cell used 5 of them
    state, contended = machine.state(snap(100.0, 1.0, 400.0), snap(125.0, 3.0, 400.0 + 10 * cores), 5.0, 10.0,
                                     threads=1, nice=15)
    assert state["other_load_cores"] == pytest.approx(2.0)
    assert state["steal_pct"] == pytest.approx(100 * 2.0 / (10 * cores), abs=0.01)
    assert state["nice"] == 15 and state["cell_cpu_s"] == 5.0 and state["start"]["loadavg_1m"] == 1.0
    assert contended == (2.0 > cores - 1 + machine.CONTENTION_MARGIN_CORES)
    # a cell that takes every core is contended by more than half a core of other work
    assert machine.state(snap(0.0), snap(6.0 + 4.0), 4.0, 10.0, threads=cores, nice=0)[1] is True   # 0.6 cores
    assert machine.state(snap(0.0), snap(4.0 + 4.0), 4.0, 10.0, threads=cores, nice=0)[1] is False  # 0.4 cores
    # no /proc: unknown, not "quiet"
    assert machine.state({}, {}, 1.0, 1.0, 1, 0) == (machine.state({}, {}, 1.0, 1.0, 1, 0)[0], None)


def test_snapshot_reads_this_machine_and_only_the_cpus_asked_for():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc on this platform: the fields are None there")
    s = machine.snapshot()
    assert s["loadavg_1m"] >= 0 and s["procs_total"] >= s["procs_running"] >= 1
    assert s["cpu_total_s"] >= s["cpu_busy_s"] > 0
    cpus = machine.allowed_cpus()
    per = [machine.snapshot([c]) for c in cpus]
    every = machine.snapshot(cpus)
    # the CPUs' own lines add up to their sum (read a moment apart: a small tolerance)
    assert sum(p["cpu_total_s"] for p in per) == pytest.approx(every["cpu_total_s"], rel=1e-3)
    if len(cpus) > 1:
        assert per[0]["cpu_total_s"] < every["cpu_total_s"]


BURN = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc on this platform")
def test_a_cell_beside_a_burner_records_the_burners_load_and_is_contended():
    cores = os.cpu_count()
    burners = [subprocess.Popen([sys.executable, "-c", BURN.format(s=60)]) for _ in range(cores)]
    try:
        procs = [psutil.Process(b.pid) for b in burners]
        time.sleep(0.5)
        cpu0 = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
        t0 = time.perf_counter()
        rec = run_cell(Cell.make("numpy", "train", "tiny", options={"steps": 30, "eval_interval": 0}),
                       Limits(timeout_s=120, threads=cores))
        wall = time.perf_counter() - t0
        burned = (sum(p.cpu_times().user + p.cpu_times().system for p in procs) - cpu0) / wall
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert rec.status == "ok", rec.reason
    m = rec.machine
    # at least what our own burners took (other work on the machine only adds), at most every core
    assert burned - 0.3 <= m["other_load_cores"] <= cores + 0.3
    assert rec.contended is True
    assert m["cell_cpu_s"] > 0 and m["threads"] == cores and m["nice"] == os.getpriority(os.PRIO_PROCESS, 0)
    assert m["start"]["procs_total"] > 0 and m["end"]["loadavg_1m"] >= 0
    assert rec.compile_cache == "fresh" and rec.compile_cache_state == "cold"


def test_compile_cache_fresh_gives_the_cell_empty_folders_and_host_reports_what_the_machine_holds(tmp_path):
    env = {"JAX_COMPILATION_CACHE_DIR": "/somewhere"}
    assert compile_cache.environment("fresh", tmp_path, env) == "cold"
    assert "JAX_COMPILATION_CACHE_DIR" not in env
    for var in compile_cache.FRESH_VARS:
        assert env[var].startswith(str(tmp_path)) and not os.listdir(env[var])
    inductor = tmp_path / "inductor"
    host = {"TORCHINDUCTOR_CACHE_DIR": str(inductor), "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    assert compile_cache.environment("host", tmp_path, dict(host)) == "cold"
    inductor.mkdir()
    (inductor / "fxgraph").mkdir()
    assert compile_cache.environment("host", tmp_path, dict(host)) == "warm"
    with pytest.raises(ValueError, match="allowed are fresh, host"):
        compile_cache.environment("lukewarm", tmp_path, {})
