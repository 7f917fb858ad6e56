"""The write side of a run directory (its layout and readers: reports/rundir.py).

The one writer is RunStore, held by the driver (suite/dispatch.py): records come back to it through Ray, so
no shared filesystem is assumed. An exclusive lock on RUN_DIR/.lock keeps a second driver
out while the first runs; the kernel drops it when its holder dies, however it dies.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from gptspec.errors import GptbenchError
from gptspec.files import write_text_atomic
from reports.rundir import CELLS, HOSTS, LOCK, MATRIX, RUN, read_hosts, read_records
from suite.record import now


# --- the write side -----------------------------------------------------------------------
class RunLocked(GptbenchError):
    """Another driver holds the run directory."""


class RunStore:
    """The driver's handle on a run directory: locked for as long as it is open.

    RunStore.create(dir, matrix, matrix_text) starts a run (the folder must be new or
    empty); RunStore.open(dir) resumes one. Use as a context manager, or call close()."""

    def __init__(self, run_dir, _lock_fd: int):
        self.dir = Path(run_dir)
        self._lock_fd = _lock_fd
        _drop_torn_tail(self.dir / CELLS)
        self._cells = open(self.dir / CELLS, "a", encoding="utf-8")
        self._hosts = set(read_hosts(self.dir))

    @classmethod
    def create(cls, run_dir, run_info: dict, matrix_text: str | None = None) -> "RunStore":
        folder = Path(run_dir)
        if folder.exists() and any(p.name != LOCK for p in folder.iterdir()):
            raise GptbenchError(f"{folder} already holds files: give a new --out folder, or "
                                f"`--resume {folder}` to finish the run that is there.")
        folder.mkdir(parents=True, exist_ok=True)
        fd = _lock(folder)
        write_text_atomic(folder / RUN, json.dumps({**run_info, "started": now(),
                                                "driver_host": socket.gethostname()}, indent=1))
        if matrix_text is not None:
            write_text_atomic(folder / MATRIX, matrix_text)
        (folder / HOSTS).mkdir(exist_ok=True)
        return cls(folder, fd)

    @classmethod
    def open(cls, run_dir) -> "RunStore":
        folder = Path(run_dir)
        if not (folder / RUN).is_file():
            raise GptbenchError(f"cannot resume {folder}: it has no {RUN}, so it is not a gptbench run directory.")
        fd = _lock(folder)
        (folder / HOSTS).mkdir(exist_ok=True)
        return cls(folder, fd)

    def run_info(self) -> dict:
        return json.loads((self.dir / RUN).read_text())

    def done_ids(self) -> set[str]:
        """cell_ids that already have their record (whatever its status)."""
        return {r["cell_id"] for r in read_records(self.dir)}

    def append(self, record: dict) -> None:
        """One record, one line, on disk before this returns (a crash after it loses nothing)."""
        line = json.dumps(record, allow_nan=False, default=str)
        self._cells.write(line + "\n")
        self._cells.flush()
        os.fsync(self._cells.fileno())
        host = record.get("host")
        fingerprint = record.get("host_fingerprint")
        if host and fingerprint and fingerprint not in self._hosts:
            write_text_atomic(self.dir / HOSTS / f"{fingerprint}.json", json.dumps(host, indent=1))
            self._hosts.add(fingerprint)

    def close(self) -> None:
        if self._lock_fd is not None:
            self._cells.close()
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _lock(folder: Path) -> int:
    """flock RUN_DIR/.lock exclusively, without waiting; the file names the holder."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unknown process"
        os.close(fd)
        raise RunLocked(f"{folder} is in use by another gptbench driver ({holder}); two drivers must "
                        "never write one run directory. Wait for it to end, or stop it first.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {now()}\n".encode(), 0)
    return fd


def _drop_torn_tail(path: Path) -> None:
    """A driver killed mid-write leaves a line without its newline: cut it off before
    appending, or the next record would be glued to it. Its cell has no record, so it runs again."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
