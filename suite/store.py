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
from reports.rundir import CELLS, HOSTS, LOCK, MATRIX, RUN, host_path, latest, read_hosts, read_records
from suite.record import now


# --- the write side -----------------------------------------------------------------------
class RunLocked(GptbenchError):
    """Another driver holds the run directory."""


class StoreError(GptbenchError):
    """The run directory cannot be written (a full disk, a read-only folder)."""


class RunStore:
    """The driver's handle on a run directory: locked for as long as it is open.

    RunStore.create(dir, matrix, matrix_text) starts a run (the folder must be new or
    empty); RunStore.open(dir) resumes one. Use as a context manager, or call close()."""

    def __init__(self, run_dir, _lock_fd: int):
        self.dir = Path(run_dir)
        self._lock_fd = _lock_fd
        torn = _drop_torn_tail(self.dir / CELLS)
        # what the driver should tell the user before it runs (a torn tail dropped)
        self.notes = [f"{self.dir / CELLS} ended in a line cut short ({torn} bytes, a record whose write a crash "
                      "interrupted); it was dropped, and its cell runs again."] if torn else []
        self._cells = os.open(self.dir / CELLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._hosts = set(read_hosts(self.dir))

    @classmethod
    def create(cls, run_dir, run_info: dict, matrix_text: str | None = None) -> "RunStore":
        folder = Path(run_dir)
        if folder.exists() and not folder.is_dir():
            raise StoreError(f"--out {folder} is a file; give a new folder for the run.")
        if folder.exists() and any(p.name != LOCK for p in folder.iterdir()):
            raise GptbenchError(f"{folder} already holds files: give a new --out folder, or "
                                f"`--resume {folder}` to finish the run that is there.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = _lock(folder)
            write_text_atomic(folder / RUN, json.dumps({**run_info, "started": now(),
                                                    "driver_host": socket.gethostname()}, indent=1))
            if matrix_text is not None:
                write_text_atomic(folder / MATRIX, matrix_text)
            (folder / HOSTS).mkdir(exist_ok=True)
            return cls(folder, fd)
        except OSError as e:
            raise StoreError(f"cannot start a run in {folder} ({e.strerror or e}); give an --out folder you can "
                             "write to, on a disk with space.") from None

    @classmethod
    def open(cls, run_dir) -> "RunStore":
        folder = Path(run_dir)
        if not (folder / RUN).is_file():
            raise GptbenchError(f"cannot resume {folder}: it has no {RUN}, so it is not a gptbench run directory.")
        try:
            fd = _lock(folder)
            (folder / HOSTS).mkdir(exist_ok=True)
            return cls(folder, fd)
        except OSError as e:
            raise StoreError(f"cannot resume {folder}: it cannot be written ({e.strerror or e}); its records are "
                             "untouched. Make the folder writable (or free space), then resume again.") from None

    def done_ids(self) -> set[str]:
        """cell_ids whose last record is final: any status but a `no_host` whose cause was a
        lost node (`no_host_cause` "lost_node", docs/records.md), which is no result: the pool
        shrank under the run, so --resume runs the cell again and appends its new record."""
        return {r["cell_id"] for r in latest(read_records(self.dir))
                if not (r["status"] == "no_host" and r.get("no_host_cause") == "lost_node")}

    def append(self, record: dict) -> None:
        """One record, one line, on disk before this returns (a crash after it loses nothing).
        When the disk is full or turns read-only, the line is taken back whole (the file ends
        with the last complete record) and StoreError says what to do."""
        data = (json.dumps(record, allow_nan=False, default=str) + "\n").encode()
        size = os.fstat(self._cells).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(self._cells, data[written:])
            os.fsync(self._cells)
        except OSError as e:
            try:
                os.ftruncate(self._cells, size)
            except OSError:
                pass  # a part of the line stays: the next open drops it as a torn tail
            raise StoreError(f"cannot append to {self.dir / CELLS} ({e.strerror or e}): the run stops here. Every "
                             f"record written before is intact; free space, then `gptbench run --resume {self.dir}` "
                             "runs the cells that have none.") from None
        host = record.get("host")
        fingerprint = record.get("host_fingerprint")
        if host and fingerprint and fingerprint not in self._hosts:
            try:
                write_text_atomic(host_path(self.dir, fingerprint), json.dumps(host, indent=1))
            except OSError as e:  # the record (which holds its host too) is on disk already
                raise StoreError(f"cannot write {host_path(self.dir, fingerprint)} ({e.strerror or e}): the run "
                                 f"stops here, every record intact; free space, then `gptbench run --resume "
                                 f"{self.dir}`.") from None
            self._hosts.add(fingerprint)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._cells)
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


def _drop_torn_tail(path: Path) -> int:
    """A driver killed mid-write leaves a line without its newline: cut it off before
    appending, or the next record would be glued to it. Its cell has no record, so it runs
    again. Returns the bytes dropped."""
    if not path.is_file():
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            return len(data) - keep
    return 0
