"""Every process a cell started, so its memory is counted and its end is the end of all of
them: the child, its children, and what they started in sessions of their own.

Killing the child's process group misses a helper started with setsid (a compile worker, a
server, a deliberate escape), and once its parent exits it is no longer anyone's child but
init's. So on Linux the runner becomes a child subreaper (PR_SET_CHILD_SUBREAPER): an
orphan of the cell is re-parented to the runner, not to init, and stays findable. A scan
adds the child's descendants and the runner's children that were not there when the cell
started (the runner starts nothing else while it waits: they are the cell's orphans) to a
set that only grows; every process seen once is counted and, at the end, killed and
reaped. Elsewhere (macOS) the scan is all there is: a helper that escapes between two
scans is missed there. (What a killed runner leaves is found by the cell's marker instead:
suite/tempdirs.py.)
"""

from __future__ import annotations

import os
import signal
import sys

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphans of this process's descendants its children (Linux); False elsewhere."""
    if sys.platform != "linux":
        return False
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1) == 0


class CellTree:
    """The processes of one cell, rooted at its child `pid`, made just now by this process."""

    def __init__(self, pid: int):
        self.me = psutil.Process()
        self.root = psutil.Process(pid)
        self.others = set(self.me.children()) - {self.root}  # this process's own, before the cell
        self.known = {self.root}

    def scan(self) -> None:
        """Add what runs now: the child's descendants, and orphans of the cell re-parented
        to this process (with their own descendants)."""
        roots = [self.root]
        try:
            roots += [p for p in self.me.children() if p not in self.others]
        except psutil.Error:
            pass
        for r in roots:
            self.known.add(r)
            try:
                self.known.update(r.children(recursive=True))
            except psutil.Error:  # exited since
                pass

    def rss_mb(self) -> float:
        total = 0
        for p in list(self.known):
            try:
                total += p.memory_info().rss
            except psutil.Error:  # exited (a zombie has none either)
                pass
        return total / 2**20

    def signal(self, sig) -> None:
        """Send sig to every process seen, and to the child's process group (what it started
        since the last scan, in its own session)."""
        try:
            os.killpg(self.root.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for p in list(self.known):
            try:
                p.send_signal(sig)  # psutil checks the pid was not reused
            except psutil.Error:
                pass

    def kill_all(self, wait_s: float = 3.0) -> list[int]:
        """SIGKILL every process of the cell that still runs, after a last scan, and reap
        those that are this process's children. Returns the pids killed."""
        self.scan()
        alive = [p for p in self.known if p != self.root and _running(p)]
        self.signal(signal.SIGKILL)
        psutil.wait_procs([p for p in self.known if p != self.root], timeout=wait_s)  # reaps our children
        return [p.pid for p in alive]


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
