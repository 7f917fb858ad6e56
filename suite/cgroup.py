"""The kernel's memory limit for a rehearsed host (suite/hosts.py), cgroup v1 or v2.

A group is a memory limit plus one pinned CPU; a process put in it before it execs (its
sshd) brings everything it starts along. Two cgroup layouts exist: v1 (one hierarchy per
controller, e.g. /sys/fs/cgroup/memory and /sys/fs/cgroup/cpuset) and v2 (one unified
hierarchy with the controllers enabled in the root's cgroup.subtree_control).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _v2_controllers() -> set[str]:
    try:
        return set((ROOT / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


def missing() -> str | None:
    """Why no memory-limited group can be made here, or None when one can."""
    if (ROOT / "memory" / "memory.limit_in_bytes").exists():
        return None if (ROOT / "cpuset" / "cpuset.cpus").exists() else "cgroup v1 without the cpuset controller"
    if (ROOT / "cgroup.controllers").exists():
        need = {"memory", "cpuset"} - set((ROOT / "cgroup.controllers").read_text().split())
        return f"cgroup v2 without the {', '.join(sorted(need))} controller(s)" if need else None
    return "no cgroup memory controller mounted at /sys/fs/cgroup (v1 memory/ or v2 cgroup.controllers)"


def dirs(name: str) -> list[Path]:
    """The folders of a new group `name`, below this process's own groups, so a limit the
    machine puts on us still holds (v1: one per controller; v2: one)."""
    if (ROOT / "memory" / "memory.limit_in_bytes").exists():
        return [own_dir("memory") / name, own_dir("cpuset") / name]
    return [own_dir("") / name]


def make(name: str, limit_mb: int, cpu: int) -> list[Path]:
    """Create group `name`: at most limit_mb of memory (no swap), on CPU `cpu` only.
    Returns its folders (for join, pids, remove)."""
    limit = str(limit_mb * 2**20)
    if (ROOT / "memory" / "memory.limit_in_bytes").exists():
        mem, cpus = dirs(name)
        mem.mkdir(exist_ok=True)
        (mem / "memory.limit_in_bytes").write_text(limit)
        if (mem / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: no swap either
            (mem / "memory.memsw.limit_in_bytes").write_text(limit)
        cpus.mkdir(exist_ok=True)
        (cpus / "cpuset.mems").write_text((cpus.parent / "cpuset.mems").read_text().strip())
        (cpus / "cpuset.cpus").write_text(str(cpu))
        return [mem, cpus]
    group = dirs(name)[0]
    if not {"memory", "cpuset"} <= set((group.parent / "cgroup.subtree_control").read_text().split()):
        (group.parent / "cgroup.subtree_control").write_text("+memory +cpuset")
    group.mkdir(exist_ok=True)
    (group / "memory.max").write_text(limit)
    if (group / "memory.swap.max").exists():
        (group / "memory.swap.max").write_text("0")
    (group / "cpuset.cpus").write_text(str(cpu))
    return [group]


def join(folders, pid: int | None = None) -> None:
    """Put process `pid` (default: this one) in the group: what it starts stays there."""
    for d in folders:
        Path(d, "cgroup.procs").write_text(str(pid or os.getpid()))


def pids(folders) -> set[int]:
    found = set()
    for d in map(Path, folders):
        try:
            found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        except OSError:
            pass
    return found


def remove(folders) -> None:
    """Remove the group (its processes must have ended); absent is fine."""
    for d in map(Path, folders):
        try:
            d.rmdir()
        except FileNotFoundError:
            pass


def limit_mb(folder: Path | None) -> float | None:
    """A memory cgroup's limit in MB (None: none, or unknown)."""
    for f in ("memory.limit_in_bytes", "memory.max"):
        try:
            value = int(Path(folder, f).read_text())
        except (OSError, TypeError, ValueError):  # absent, or v2's "max"
            continue
        return value / 2**20 if value < 2**60 else None
    return None


def own_dir(controller: str, pid: str = "self") -> Path:
    """A process's cgroup folder for a v1 controller ("" for v2's unified one)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (controller == "" and controllers == ""):
            return (ROOT / controller if controller else ROOT) / path.lstrip("/")
    return ROOT / controller if controller else ROOT


def own_memory_dir() -> Path | None:
    """This process's memory cgroup folder (None when it cannot be read)."""
    try:
        return own_dir("memory" if (ROOT / "memory" / "memory.limit_in_bytes").exists() else "")
    except OSError:
        return None


def oom_kills(folder: Path | None) -> int | None:
    """How many processes the kernel's OOM killer has ended in this memory cgroup (v1
    memory.oom_control's oom_kill, v2 memory.events'), or None when not known."""
    if folder is None:
        return None
    for f in ("memory.events", "memory.oom_control"):
        try:
            for line in (folder / f).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            continue
    return None
