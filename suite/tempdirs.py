"""Temporary folders of a driver (its local Ray), of a cell runner and of the simulated pool,
and what is left of them when their owner is SIGKILLed.

Every folder lives in the user's private parent, <tmp>/gptbench-<uid>, mode 0700, a real
folder of this user (not a link): Ray opens its temp folder to everyone (mode 0777), so
without the parent another user could rewrite what is in it.

make(prefix) creates <parent>/<prefix>XXXX with an OWNER file naming the creating process
(pid and start time). Every process started for that folder carries MARKER=<folder> in its
environment: the local Ray's GCS, raylet and agents, a cell's child and whatever it starts.
A killed owner runs no cleanup, so the next driver or runner calls sweep(prefix): for each
folder whose owner is provably gone, it ends this user's processes that still carry its
marker (Ray's agents outlive a killed driver by a minute; a cell's helper in its own
session, for ever) and removes the folder. A folder, or OWNER file, that is not this user's
own (or that others could write), one without an OWNER file, one whose owner cannot be
looked at, and any process of another user or without the exact marker are never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from pathlib import Path

import psutil

from gptspec.errors import GptbenchError
from gptspec.files import write_private

MARKER = "GPTBENCH_TMP"
OWNER = ".owner"
DRIVER_PREFIX = "gbr"  # a driver's local Ray, under /tmp: short, for Ray's unix sockets (107 bytes)
CELL_PREFIX = "gptbench-cell-"  # a cell's payload, record, stdout and stderr
GRACE_S = 3.0


def private_parent(base: str | None = None) -> Path:
    """<base or the temp folder>/gptbench-<uid>: made mode 0700 when absent; refused when it
    is not a folder of this user's (another user made it first, or it is a link)."""
    parent = Path(base or tempfile.gettempdir()) / f"gptbench-{os.getuid()}"
    try:
        parent.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(parent)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        what = "a link" if stat.S_ISLNK(st.st_mode) else \
            "not a folder" if not stat.S_ISDIR(st.st_mode) else f"owned by uid {st.st_uid}"
        raise GptbenchError(f"{parent} is {what}, not a folder of yours: gptbench keeps its temporary folders there, "
                            "where no other user can enter. Remove it (or set TMPDIR to a folder of yours) and "
                            "try again.")
    if st.st_mode & 0o077:
        os.chmod(parent, 0o700)  # ours, left open (by hand): close it
    return parent


def make(prefix: str, base: str | None = None) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=private_parent(base)))
    me = psutil.Process()
    write_private(folder / OWNER, f"{me.pid} {me.create_time():.2f}\n")
    return folder


def _mine(path: Path, kind, others_may_write: bool = False) -> bool:
    """Whether `path` (not followed if a link) is a `kind` (stat.S_ISDIR...) of this user's."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return kind(st.st_mode) and st.st_uid == os.getuid() and (others_may_write or not st.st_mode & 0o022)


def owner_alive(folder: Path) -> bool | None:
    """Whether the process that made `folder` still runs: False only when it provably does
    not (no process has its pid, or the one that has it started at another time); None when
    that cannot be known, or must not be believed: no OWNER file, or a folder or OWNER file
    that is not this user's own, or one others could have written."""
    # Ray opens its own temp folder to all (0777): the private parent keeps others out of it
    if not _mine(folder, stat.S_ISDIR, others_may_write=True) or not _mine(folder / OWNER, stat.S_ISREG):
        return None
    try:
        pid, started = (folder / OWNER).read_text().split()
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 0.05  # not a reused pid
    except (OSError, ValueError):
        return None
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # cannot look at it: not provably gone
        return None


def marked(folder: Path) -> list[psutil.Process]:
    """The processes of this user whose environment carries `folder`'s marker."""
    found = []
    for p in psutil.process_iter():
        try:
            # root reads every user's environment: the uid, not a refused read, keeps others' out
            if p.pid != os.getpid() and p.uids().real == os.getuid() and p.environ().get(MARKER) == str(folder):
                found.append(p)
        except psutil.Error:  # gone
            pass
    return found


def end(procs: list[psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM, then SIGKILL what is left after grace_s; children of this process are reaped."""
    for p in procs:
        signal_quietly(p, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        signal_quietly(p, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace_s)


def signal_quietly(p: psutil.Process, sig) -> None:
    """Signal p if it is still the same process; nothing if it is gone or not ours."""
    try:
        p.send_signal(sig)  # psutil checks the pid is still the same process
    except psutil.Error:
        pass


def sweep(prefix: str, base: str | None = None) -> list[Path]:
    """Clean up after owners that died: end their marked processes, remove their folders.
    Returns the folders removed."""
    removed = []
    for folder in private_parent(base).glob(f"{prefix}*"):
        if owner_alive(folder) is False:
            end(marked(folder))
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
