"""Run one cell in a fresh child process and return its one record, whatever happens.

run_cell is what the Ray task calls. It spawns `python -m suite.cell` in a new session
(process group) with the thread counts set, then polls: the child's exit (os.wait4), the
wall clock (timeout: SIGTERM to the cell's processes, SIGKILL after a grace), and the RSS
of the cell's processes against the memory budget (oom: SIGKILL at once, with the peak).
The cell's processes are every one it started, those in sessions of their own included
(suite/proctree.py); all of them end with the cell. A child that dies without writing its
part of the record (segfault, OOM killer, kill) gets one written here. See docs/records.md.

Peak RSS is the kernel's high-water mark of the child's program (VmHWM): reported by the
child at its end, or the last value polled here if it was killed. wait4's ru_maxrss is
kept as `ru_maxrss_mb` but is not the peak: Linux carries the parent's high-water mark
across fork+exec, so a cell spawned by a 400 MB Ray worker would read >= 400 MB.

A workload made of other cells (workloads.runs_cells: frontier) runs here in the
supervisor instead, measuring each of its sub-cells with run_cell in its own child.

No RLIMIT_AS: torch, CUDA and OpenBLAS reserve far more address space than they touch,
so an address-space cap kills healthy cells; polling the resident set measures what the
host actually loses. Between two polls (10 ms) a cell can overshoot the budget by what
it allocates in that time; the record's peak shows the overshoot.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import workloads
from suite import calibrate, cgroup, compile_cache, env, machine, tempdirs
from suite.cell import Cell, measure, vm_hwm_mb
from suite.proctree import CellTree, become_subreaper
from suite.record import Limits, Record, now

POLL_S = 0.01
TREE_EVERY = 10  # polls between scans for grandchildren (compile workers)
GRACE_S = 3.0
STDERR_TAIL = 4000


def _maxrss_mb(usage) -> float:
    return usage.ru_maxrss / 2**20 if sys.platform == "darwin" else usage.ru_maxrss / 1024


def _supervise(proc: subprocess.Popen, tree: CellTree, budget_mb, timeout_s, poll_s):
    """Wait for proc; kill its whole tree on timeout or over budget. Returns (wait status,
    rusage, killed_for, sampled tree peak MB, last polled VmHWM MB of the child)."""
    deadline = time.monotonic() + timeout_s if timeout_s else None
    killed_for, sampled_peak, hwm, n = None, 0.0, None, 0
    term_sent_at = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return status, usage, killed_for, sampled_peak, hwm
        if n % TREE_EVERY == 0:
            tree.scan()
        n += 1
        rss = tree.rss_mb()
        sampled_peak = max(sampled_peak, rss)
        # the high-water mark read after the sample, so it is never below the resident size that
        # decides an oom kill (a one-process cell's peak is then over the budget it passed)
        hwm = vm_hwm_mb(proc.pid) or hwm  # None once the child is a zombie
        if killed_for is None and budget_mb and rss > budget_mb:
            killed_for = "oom"
            tree.scan()
            tree.signal(signal.SIGKILL)  # memory is short now: no grace
        elif killed_for is None and deadline and time.monotonic() > deadline:
            killed_for, term_sent_at = "timeout", time.monotonic()
            tree.scan()
            tree.signal(signal.SIGTERM)
        elif term_sent_at and time.monotonic() - term_sent_at > GRACE_S:
            tree.signal(signal.SIGKILL)
            term_sent_at = None
        time.sleep(poll_s)


def _died_without_record(status: int, killed_for, budget_mb, timeout_s, peak_mb, kernel_kills: int = 0) -> dict:
    if killed_for == "oom":
        return {"status": "oom", "limit_enforced_by": "sampler",
                "reason": f"resident memory passed the budget of {budget_mb:.0f} MB (peak {peak_mb:.1f} MB); killed"}
    if killed_for == "timeout":
        return {"status": "timeout", "reason": f"no result within the timeout of {timeout_s:g} s; killed"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL and kernel_kills:
            limit = cgroup.limit_mb(cgroup.own_memory_dir())
            return {"status": "oom", "limit_enforced_by": "kernel",
                    "reason": f"killed by the kernel's OOM killer (peak {peak_mb:.1f} MB): this host's memory "
                              f"cgroup" + (f" limit of {limit:.0f} MB" if limit else "") + " was reached"}
        if sig == signal.SIGKILL:
            return {"status": "oom", "limit_enforced_by": "kernel",
                    "reason": f"killed by SIGKILL, not by the runner (peak {peak_mb:.1f} MB): "
                              "on Linux that is the kernel OOM killer when the host runs out of memory"}
        return {"status": "crash", "reason": f"killed by signal {signal.Signals(sig).name}"}
    return {"status": "crash", "reason": f"exited with code {os.WEXITSTATUS(status)} without writing a record"}


def _before_exec(threads: int):
    """What the child does between fork and exec: SIGKILL itself when its spawner dies (a Ray
    worker killed by `ray job stop`, a cancel or a lost driver), so no cell outlives its
    supervisor (Linux); and bind itself to `threads` CPUs (suite/env.py bind_cpus)."""
    def run():
        if sys.platform == "linux":
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        env.bind_cpus(threads)
    return run


def _child_env(limits: Limits, extra: dict | None, folder: Path) -> tuple[dict, str]:
    """(the child's environment, its compile caches' state: cold or warm). The marker finds
    what the cell started after a killed runner (suite/tempdirs.py); the compile caches are
    the cell's own empty folders under policy `fresh` (suite/compile_cache.py)."""
    child = {**os.environ, **(extra or {}), **env.thread_env(limits.threads), tempdirs.MARKER: str(folder)}
    state = compile_cache.environment(limits.compile_cache, folder, child)
    repo = str(env.REPO)  # `python -m suite.cell` works from any cwd, installed or not
    child["PYTHONPATH"] = os.pathsep.join(p for p in (repo, child.get("PYTHONPATH")) if p)
    return child, state


def run_cell(cell: Cell, limits: Limits = Limits(), extra_env: dict | None = None,
             poll_s: float = POLL_S) -> Record:
    """Measure `cell` in a child process under `limits`; return its record (docs/records.md).

    limits.budget_mb: the RAM budget of the child's process tree; gpu_budget_mb: the VRAM
    budget (a bigger card is capped at it); threads: BLAS/OpenMP/torch threads (None: every core)."""
    limits = dataclasses.replace(limits, threads=int(limits.threads or os.cpu_count() or 1))
    module = _made_of_cells(cell)
    if module is not None:
        return _run_made_of_cells(cell, limits, module, extra_env, poll_s)
    record = Record.start(cell, limits)
    peak_flops, record.calibration_error = calibrate.host_peak(cell.device, cell.dtype)

    become_subreaper()  # orphans of the cell come back to this process, not to init
    tempdirs.sweep(tempdirs.CELL_PREFIX)  # what a runner killed before its cleanup left behind
    tmp = tempdirs.make(tempdirs.CELL_PREFIX)
    memcg = cgroup.own_memory_dir()  # the kernel's count of OOM kills there tells its kill from another's
    kills_before = cgroup.oom_kills(memcg) or 0
    try:
        payload_path, record_path = Path(tmp, "payload.json"), Path(tmp, "record.json")
        payload_path.write_text(json.dumps({"cell": cell.to_dict(), "limits": limits.to_dict(),
                                            "peak_flops_per_s": peak_flops}))
        child_env, cache_state = _child_env(limits, extra_env, tmp)
        record.started = now()
        cpus = machine.allowed_cpus()
        before, reaped0 = machine.snapshot(cpus), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        with open(Path(tmp, "stdout"), "wb") as out, open(Path(tmp, "stderr"), "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "suite.cell", str(payload_path), str(record_path)],
                                    stdout=out, stderr=err, env=child_env,
                                    start_new_session=True, preexec_fn=_before_exec(limits.threads))
            nice = machine.nice_of(proc.pid)
            tree = CellTree(proc.pid)
            status, usage, killed_for, sampled_mb, polled_hwm = _supervise(proc, tree, limits.budget_mb,
                                                                           limits.timeout_s, poll_s)
        record.wall_s = time.perf_counter() - t0
        record.ended = now()
        tree.kill_all()  # helpers the child left behind (compile workers), in its session or their own
        # the cell's CPU time: the child's and every helper of it this runner reaped (a subreaper)
        reaped1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cell_cpu = reaped1.ru_utime + reaped1.ru_stime - reaped0.ru_utime - reaped0.ru_stime
        record.machine, record.contended = machine.state(before, machine.snapshot(cpus), cell_cpu,
                                                         time.perf_counter() - t0, limits.threads, nice,
                                                         len(cpus) if cpus else None)
        record.compile_cache_state = cache_state
        record.update(peak_rss_mb=polled_hwm, peak_rss_sampled_mb=sampled_mb, ru_maxrss_mb=_maxrss_mb(usage),
                      exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                      signal=signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None,
                      stderr_tail=Path(tmp, "stderr").read_bytes()[-STDERR_TAIL:].decode(errors="replace"))
        child = Record.from_dict(json.loads(record_path.read_text())) \
            if record_path.exists() and not killed_for else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if child is None:
        if record.peak_rss_mb is None:  # no /proc: the inflated bound is all there is
            record.peak_rss_mb = record.ru_maxrss_mb
        peak_mb = max(record.peak_rss_mb, sampled_mb)
        kernel_kills = (cgroup.oom_kills(memcg) or 0) - kills_before
        record.update(**_died_without_record(status, killed_for, limits.budget_mb, limits.timeout_s, peak_mb,
                                             kernel_kills))
        if record.status == "crash":
            record.traceback = record.stderr_tail
    else:
        record.take_child(child)
        if record.status == "oom":  # the cell's own MemoryError or CUDA out-of-memory
            record.limit_enforced_by = "cell"
        # VmHWM at the child's end, or later at the last poll (teardown allocates too)
        record.peak_rss_mb = max(child.peak_rss_mb, polled_hwm or 0.0)
        peak_mb = max(record.peak_rss_mb, sampled_mb)
        if limits.budget_mb and peak_mb > limits.budget_mb and record.status == "ok":
            # finished between two polls, but the host would not have had the memory
            record.update(status="oom", limit_enforced_by="sampler",
                          reason=f"peak RSS {peak_mb:.1f} MB passed the budget of {limits.budget_mb:.0f} MB")
    est = record.memory_estimate_mb
    record.memory_ratio = record.peak_rss_mb / est if est else None
    return record


# what the record of a workload made of cells takes from its ok sub-cell with the highest peak
# (with none ok, from the sub-cell with the highest peak: a frontier where nothing fits)
SUB_CELL_FIELDS = ("peak_rss_mb", "peak_rss_sampled_mb", "rss_after_setup_mb", "memory_estimate_mb",
                   "gpu_memory_estimate_mb", "memory_estimate", "memory_ratio", "gpu", "gpu_peak_allocated_mb",
                   "gpu_peak_reserved_mb", "implementation", "threads_seen", "heavy_modules", "compile_cache_state")


def _made_of_cells(cell: Cell):
    """The cell's workload module when it is made of other cells (workloads.runs_cells), else
    None; an unknown workload is left to the child, where every failure becomes a record."""
    try:
        module = workloads.load(cell.workload)
    except Exception:  # noqa: BLE001
        return None
    return module if workloads.runs_cells(module) else None


def _run_made_of_cells(cell: Cell, limits: Limits, module, extra_env, poll_s) -> Record:
    """A workload made of other cells (frontier): its run, here in the supervisor, measures
    each sub-cell with run_cell in its own child under these limits, each given what is left
    of this cell's timeout. The record's memory fields are those of the ok sub-cell with the
    highest peak (for the frontier: the largest batch that fit), else of any sub-cell."""
    record = Record.start(cell, limits)
    record.started = now()
    t0 = time.perf_counter()
    subs: list[Record] = []

    def sub(c: Cell) -> dict:
        left = None if limits.timeout_s is None else limits.timeout_s - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            r = Record(**c.to_dict(), status="timeout", reason=f"the {cell.workload} cell's timeout of "
                                                               f"{limits.timeout_s:g} s ran out before this sub-cell")
        else:
            r = run_cell(c, dataclasses.replace(limits, timeout_s=left), extra_env, poll_s)
        subs.append(r)
        return r.to_dict()

    try:
        metrics = module.run(None, cell, run_cell=sub)
        record.update(status=metrics.pop("status", "ok"), reason=metrics.pop("reason", None), metrics=metrics)
    except Exception as e:  # noqa: BLE001 -- every failure must end in a record
        record.update(status="crash", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    record.update(wall_s=time.perf_counter() - t0, ended=now())
    record.workload_s = record.wall_s
    ran = [r for r in subs if r.contended is not None]
    if ran:  # the machine as its busiest sub-cell saw it; contended when any sub-cell was
        record.update(machine=max(ran, key=lambda r: r.machine.get("other_load_cores") or 0.0).machine,
                      contended=any(r.contended for r in ran))
    measured = [r for r in subs if r.peak_rss_mb is not None]
    ok = [r for r in measured if r.status == "ok"] or measured
    if ok:
        top = max(ok, key=lambda r: (r.gpu_peak_reserved_mb or 0.0, r.peak_rss_mb))
        record.update(**{k: getattr(top, k) for k in SUB_CELL_FIELDS})
    return record


def run_here(cell: Cell, limits: Limits = Limits(), **hooks) -> tuple[Record, object]:
    """Measure `cell` in this process instead of a child: `gptbench train`, which shows
    progress (hooks go to the workload's run) and keeps the trained backend to save its
    weights. The same record as run_cell's, without what only a supervisor sees (the
    sampled tree peak, wait4's numbers, the exit); limits.budget_mb and timeout_s are not
    enforced. Returns the record and the measured backend (None if it was never made)."""
    record = Record.start(cell, limits)
    peak_flops, record.calibration_error = calibrate.host_peak(cell.device, cell.dtype)
    tmp = tempdirs.make(tempdirs.CELL_PREFIX)
    saved = dict(os.environ)
    try:
        record.compile_cache_state = compile_cache.environment(limits.compile_cache, tmp, os.environ)
        record.started = now()
        cpus = machine.allowed_cpus()
        before, cpu0 = machine.snapshot(cpus), resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        child, target = measure(cell, limits, peak_flops, **hooks)
        record.take_child(child)
        record.update(wall_s=time.perf_counter() - t0, ended=now(), peak_rss_mb=child.peak_rss_mb)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        record.machine, record.contended = machine.state(
            before, machine.snapshot(cpus), cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, record.wall_s,
            limits.threads or env.cpus_seen(), machine.nice_of(os.getpid()), len(cpus) if cpus else None)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)
    est = record.memory_estimate_mb
    record.memory_ratio = record.peak_rss_mb / est if est else None
    return record, target
