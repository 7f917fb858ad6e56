"""The machine's state around a measurement (docs/records.md, `machine` and `contended`): a
figure taken while other work ran is a figure of that work too, so every record says how
loaded its host was.

snapshot(cpus) reads, at one instant: the load average and the runnable/total process counts
(/proc/loadavg), the CPU time the cell's CPUs (the runner's affinity mask: a cpuset-limited
host counts only its own cores) have spent busy and stolen since boot (/proc/stat), and the
cores' mean clock (/proc/cpuinfo). Taken at the cell's spawn and after its last process was
reaped, state() turns the two into the record's `machine` dict:

  other_load_cores = (busy CPU time of those CPUs - the cell's own CPU time, its helpers
                     reaped by the runner included) / wall time: how many cores other work
                     kept busy, on average, while the cell ran (the supervisor's own polling
                     and Ray's are in it);
  steal_pct        = stolen time over all time (a virtual machine's neighbours);
  contended        = other_load_cores > cores - threads + CONTENTION_MARGIN_CORES: the
                     other work needed more than what the cell left free, by more than
                     half a core, so it took CPU the cell would have used.

Where /proc is missing (macOS) the fields are None and contended is None (unknown).
"""

from __future__ import annotations

import os
from pathlib import Path

CONTENTION_MARGIN_CORES = 0.5
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def allowed_cpus() -> list[int] | None:
    """The CPUs this process may run on (its affinity mask), where the OS says."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _cpu_times(cpus: list[int] | None) -> tuple[float, float, float] | None:
    """(busy, steal, total) seconds since boot of `cpus` (None: every core), from /proc/stat."""
    text = _read("/proc/stat")
    if not text:
        return None
    wanted = None if cpus is None else {f"cpu{c}" for c in cpus}
    busy = steal = total = 0
    for line in text.splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or (name == "cpu") != (wanted is None) or (wanted and name not in wanted):
            continue
        user, nice, system, idle, iowait, irq, softirq, stolen = ([int(x) for x in values] + [0] * 8)[:8]
        # guest time is inside user already; idle and iowait are the only not-busy times
        b = user + nice + system + irq + softirq + stolen
        busy, steal, total = busy + b, steal + stolen, total + b + idle + iowait
    return busy / _TICK, steal / _TICK, total / _TICK


def _cpu_mhz() -> float | None:
    text = _read("/proc/cpuinfo")
    if not text:
        return None
    mhz = [float(line.split(":", 1)[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    return round(sum(mhz) / len(mhz), 1) if mhz else None


def snapshot(cpus: list[int] | None = None) -> dict:
    """The machine at this instant (module doc); CPU times of `cpus` (None: every core)."""
    load = _read("/proc/loadavg")
    snap: dict = {"loadavg_1m": None, "procs_running": None, "procs_total": None, "cpu_mhz": _cpu_mhz()}
    if load:
        parts = load.split()
        running, total = parts[3].split("/")
        snap.update(loadavg_1m=float(parts[0]), procs_running=int(running), procs_total=int(total))
    elif hasattr(os, "getloadavg"):
        snap["loadavg_1m"] = os.getloadavg()[0]
    times = _cpu_times(cpus)
    if times:
        snap["cpu_busy_s"], snap["cpu_steal_s"], snap["cpu_total_s"] = times
    return snap


def nice_of(pid: int) -> int | None:
    try:
        return os.getpriority(os.PRIO_PROCESS, pid)
    except (OSError, AttributeError):
        return None


def state(start: dict, end: dict, cell_cpu_s: float | None, wall_s: float, threads: int | None,
          nice: int | None, cores: int | None = None) -> tuple[dict, bool | None]:
    """(the record's `machine` dict, contended) from snapshots at the cell's start and end;
    cores: how many the snapshots counted (default: every core)."""
    cores = cores or os.cpu_count() or 1
    out = {"cores": cores, "threads": threads, "nice": nice,
           "start": {k: start.get(k) for k in ("loadavg_1m", "procs_running", "procs_total", "cpu_mhz")},
           "end": {k: end.get(k) for k in ("loadavg_1m", "procs_running", "procs_total", "cpu_mhz")},
           "cell_cpu_s": cell_cpu_s, "other_load_cores": None, "steal_pct": None}
    if "cpu_busy_s" not in start or "cpu_busy_s" not in end or wall_s <= 0:
        return out, None
    busy = end["cpu_busy_s"] - start["cpu_busy_s"]
    total = end["cpu_total_s"] - start["cpu_total_s"]
    other = max(0.0, (busy - (cell_cpu_s or 0.0)) / wall_s)
    out["other_load_cores"] = round(other, 3)
    out["steal_pct"] = round(100 * (end["cpu_steal_s"] - start["cpu_steal_s"]) / total, 2) if total > 0 else None
    free = cores - min(threads or cores, cores)
    return out, bool(other > free + CONTENTION_MARGIN_CORES)
