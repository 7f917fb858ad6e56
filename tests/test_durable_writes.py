"""The run directory survives a full disk, a torn write and a hostile worker: records are
taken back whole or kept whole, the report is the old page or the new one, never half of
one, and a name a worker sends never becomes a path outside the run."""

import errno
import os

import pytest

from gptspec.errors import GptbenchError
from reports.rundir import CELLS, HOSTS, read_hosts, read_records
from suite.cell import Cell
from suite.cli import main
from suite.record import Limits, Record
from suite.store import RunStore, StoreError


def record(seed: int, fingerprint: str = "0123456789abcdef") -> dict:
    cell = Cell.make("numpy", "train", "tiny", seed=seed, options={"steps": 2})
    return Record.from_driver(cell, f"id{seed}", "code", Limits(), "no_host", "none here",
                              host_fingerprint=fingerprint, host={"hostname": "h", "fingerprint": fingerprint}).to_dict()


def new_run(tmp_path) -> RunStore:
    return RunStore.create(tmp_path / "run", {"code_version": "code", "matrix": {}})


def enospc_after(monkeypatch, nbytes: int):
    """os.write writes nbytes of what it is given, then fails as a full disk does."""
    real = os.write

    def write(fd, data):
        monkeypatch.setattr(os, "write", lambda fd, data: _raise(errno.ENOSPC))
        return real(fd, data[:nbytes])

    monkeypatch.setattr(os, "write", write)


def _raise(code):
    raise OSError(code, os.strerror(code))


def test_a_full_disk_takes_back_the_half_written_line_and_says_how_to_resume(tmp_path, monkeypatch):
    with new_run(tmp_path) as store:
        store.append(record(0))
        before = (store.dir / CELLS).read_bytes()
        enospc_after(monkeypatch, 100)  # a part of the next line reaches the file, then the disk is full
        with pytest.raises(StoreError) as err:
            store.append(record(1))
        monkeypatch.undo()
        assert (store.dir / CELLS).read_bytes() == before  # the last complete record ends the file
    message = str(err.value)
    assert "No space left on device" in message and f"gptbench run --resume {store.dir}" in message
    with RunStore.open(store.dir) as again:
        assert again.notes == [] and [r["cell_id"] for r in read_records(store.dir)] == ["id0"]


def test_a_torn_tail_is_dropped_and_the_resume_says_so(tmp_path, capsys):
    with new_run(tmp_path) as store:
        store.append(record(0))
    with open(store.dir / CELLS, "a") as f:
        f.write('{"cell_id": "id1", "sta')  # a driver killed mid-write
    # resuming with other code is refused, but the torn line is reported (and dropped) first
    assert main(["run", "--resume", str(store.dir)]) == 2
    err = capsys.readouterr().err
    assert f"{store.dir / CELLS} ended in a line cut short (23 bytes" in err and "its cell runs again" in err
    assert "was measured with code code" in err
    assert (store.dir / CELLS).read_text().endswith("}\n") and len(read_records(store.dir)) == 1


@pytest.mark.parametrize("fingerprint", ["../../x", "ABSOLUTE", ".hidden", "a/b", "x" * 200])
def test_a_fingerprint_from_a_worker_never_becomes_a_path(fingerprint, tmp_path):
    if fingerprint == "ABSOLUTE":  # inside tmp_path: were the code broken, it would write there, not in /etc
        fingerprint = str(tmp_path / "abs")
    with new_run(tmp_path) as store:
        store.append(record(0, fingerprint))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(store.dir in p.parents for p in files)  # nothing outside the run directory
    [host_file] = (store.dir / HOSTS).iterdir()
    assert host_file.name.startswith("x") and len(host_file.name) == 22  # x + 16 hex digits + .json
    assert read_hosts(store.dir) == {fingerprint: {"hostname": "h", "fingerprint": fingerprint}}


def test_a_plain_fingerprint_is_its_own_file_name(tmp_path):
    with new_run(tmp_path) as store:
        store.append(record(0))
    assert [p.name for p in (store.dir / HOSTS).iterdir()] == ["0123456789abcdef.json"]


def test_a_run_cannot_start_in_a_file(tmp_path, capsys):
    spot = tmp_path / "file"
    spot.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        RunStore.create(spot, {"code_version": "code", "matrix": {}})


# --- the report: the old page or the new one ------------------------------------------------------
@pytest.fixture
def run_dir(tmp_path):
    with new_run(tmp_path) as store:
        store.append(record(0))
    return store.dir


def test_a_full_disk_leaves_the_previous_report_whole(run_dir, capsys, monkeypatch):
    pytest.importorskip("plotly")
    from reports.html import PLOTLY_JS

    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    capsys.readouterr()
    monkeypatch.setattr(os, "fsync", lambda fd: _raise(errno.ENOSPC))
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {run_dir / 'report.html'} (No space left on device)" in err
    assert "records are untouched" in err and "Traceback" not in err
    monkeypatch.undo()
    assert (run_dir / "report.html").read_text() == page
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "cells.jsonl", "hosts", PLOTLY_JS, "report.html",
                                                         "run.json"]


def test_exports_are_written_whole_or_not_at_all(run_dir, tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    from reports.export import export

    monkeypatch.setattr(os, "fsync", lambda fd: _raise(errno.EROFS))
    with pytest.raises(GptbenchError, match="Read-only file system"):
        export(run_dir, csv=tmp_path / "r.csv")
    monkeypatch.undo()
    assert not list(tmp_path.glob("*r.csv*"))
    assert export(run_dir, csv=tmp_path / "r.csv") == [tmp_path / "r.csv"]
    assert "no_host" in (tmp_path / "r.csv").read_text()
