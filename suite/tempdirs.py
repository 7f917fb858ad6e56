"""Temporary folders of a driver (its local Ray) and of a cell runner, and what is left of
them when their owner is SIGKILLed.

make(prefix) creates <tmp>/<prefix>XXXX with an OWNER file naming the creating process
(pid and start time). Every process started for that folder carries MARKER=<folder> in its
environment: the local Ray's GCS, raylet and agents, a cell's child and whatever it starts.
A killed owner runs no cleanup, so the next driver or runner calls sweep(prefix): for each
folder whose owner is gone, it ends the processes that still carry its marker (Ray's agents
outlive a killed driver by a minute; a cell's helper in its own session, for ever) and
removes the folder. Folders without an OWNER file (another program's, an older gptbench's)
are never touched, nor is any process without the exact marker.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import psutil

MARKER = "GPTBENCH_TMP"
OWNER = ".owner"
DRIVER_PREFIX = "gbr"  # a driver's local Ray, under /tmp: short, for Ray's unix sockets (107 bytes)
CELL_PREFIX = "gptbench-cell-"  # a cell's payload, record, stdout and stderr
GRACE_S = 3.0


def make(prefix: str, dir: str | None = None) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    me = psutil.Process()
    (folder / OWNER).write_text(f"{me.pid} {me.create_time():.2f}\n")
    return folder


def owner_alive(folder: Path) -> bool | None:
    """Whether the process that made `folder` still runs; None when it has no OWNER file."""
    try:
        pid, started = (folder / OWNER).read_text().split()
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 0.05  # not a reused pid
    except (OSError, ValueError):
        return None
    except psutil.Error:
        return False


def marked(folder: Path) -> list[psutil.Process]:
    """The processes of this user whose environment carries `folder`'s marker."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get(MARKER) == str(folder):
                found.append(p)
        except psutil.Error:  # another user's, or gone
            pass
    return found


def end(procs: list[psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM, then SIGKILL what is left after grace_s; children of this process are reaped."""
    for p in procs:
        _signal(p, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        _signal(p, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace_s)


def _signal(p: psutil.Process, sig) -> None:
    try:
        p.send_signal(sig)  # psutil checks the pid is still the same process
    except psutil.Error:
        pass


def sweep(prefix: str, dir: str | None = None) -> list[Path]:
    """Clean up after owners that died: end their marked processes, remove their folders.
    Returns the folders removed."""
    removed = []
    for folder in Path(dir or tempfile.gettempdir()).glob(f"{prefix}*"):
        if folder.is_dir() and owner_alive(folder) is False:
            end(marked(folder))
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
