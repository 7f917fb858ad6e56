"""A cell ends every process it started, and a killed runner or driver leaves nothing for
good: real helpers in sessions of their own, holding real memory, are counted, killed and
reaped (suite/proctree.py); what a SIGKILLed owner left is swept by the next one
(suite/tempdirs.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gptspec.errors import GptbenchError
from suite import tempdirs
from suite.cell import Cell
from suite.record import Limits
from suite.runner import run_cell

HERE = str(Path(__file__).parent)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def escaping_cell(tmp_path):
    """Runs a cell whose backend starts a helper that escapes its process group; returns
    (record, the helper's pid). A helper that survives a failing test is killed after it."""
    pidfile = tmp_path / "hog.pid"

    def run(hog_mb: int, steps: int, limits: Limits):
        record = run_cell(Cell.make("cell_backends:EscapingHelperBackend", "train", "tiny", options={"steps": steps}),
                          limits, extra_env={"PYTHONPATH": HERE, "HOG_MB": str(hog_mb), "HOG_PIDFILE": str(pidfile)})
        return record.to_dict(), int(pidfile.read_text())

    yield run
    if pidfile.exists() and _alive(int(pidfile.read_text())):
        psutil.Process(int(pidfile.read_text())).kill()


def test_a_helper_in_its_own_session_counts_against_the_budget_and_dies_with_the_oom(escaping_cell):
    # the child alone peaks near 60 MB; its orphaned helper holds 300 MB: only together over 250
    rec, hog = escaping_cell(hog_mb=300, steps=10_000, limits=Limits(budget_mb=250, timeout_s=120))
    assert rec["status"] == "oom", (rec["reason"], rec["stderr_tail"])
    assert rec["peak_rss_sampled_mb"] > 250 and rec["peak_rss_mb"] < 250  # the child's own high-water mark is small
    assert not _alive(hog)


def test_a_helper_in_its_own_session_dies_with_the_timeout(escaping_cell):
    rec, hog = escaping_cell(hog_mb=10, steps=10_000, limits=Limits(timeout_s=4))
    assert rec["status"] == "timeout", (rec["reason"], rec["stderr_tail"])
    assert not _alive(hog)


def test_a_helper_left_behind_by_a_finished_cell_is_killed(escaping_cell):
    rec, hog = escaping_cell(hog_mb=10, steps=3, limits=Limits(timeout_s=120))
    assert rec["status"] == "ok", (rec["reason"], rec["traceback"])
    assert not _alive(hog)
    mine = [p for p in tempdirs.private_parent().glob(f"{tempdirs.CELL_PREFIX}*")
            if (p / tempdirs.OWNER).is_file() and (p / tempdirs.OWNER).read_text().split()[0] == str(os.getpid())]
    assert not mine  # the cell's folder went with the cell


# --- after a SIGKILL: the next owner sweeps -----------------------------------------------------
OWNER = """
import os, subprocess, sys, time
from gptspec.errors import GptbenchError
from suite import tempdirs
folder = tempdirs.make(sys.argv[1], sys.argv[2])
env = {**os.environ, tempdirs.MARKER: str(folder)}
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], env=env, start_new_session=True)
print(folder, helper.pid, flush=True)
time.sleep(3600)
"""


def _killed_owner(tmp_path, prefix):
    """A process that made a temp folder and started a marked helper in its own session,
    then was SIGKILLed: no cleanup ran. Returns (folder, helper pid)."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, prefix, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(HERE).parent)})
    folder, helper = owner.stdout.readline().split()
    owner.kill()
    owner.wait()
    return Path(folder), int(helper)


def test_sweep_ends_what_a_killed_owner_left_and_touches_nothing_else(tmp_path):
    folder, helper = _killed_owner(tmp_path, "gbr")
    assert folder.is_dir() and _alive(helper)
    live = tempdirs.make("gbr", str(tmp_path))  # this process's own: its owner runs
    foreign = tmp_path / "gbr-not-ours"  # no owner file: another program's
    foreign.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                 env={**os.environ, tempdirs.MARKER: str(live)})
    try:
        assert tempdirs.sweep("gbr", str(tmp_path)) == [folder]
        assert not folder.exists() and not _alive(helper)
        assert live.is_dir() and foreign.is_dir() and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


NOBODY = 65534


def _as_nobody():
    os.setgid(NOBODY)
    os.setuid(NOBODY)


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="making another user's folders and processes needs root")


def test_temp_folders_live_in_a_parent_only_their_user_can_enter(tmp_path):
    folder = tempdirs.make("gbr", str(tmp_path))
    parent = tmp_path / f"gptbench-{os.getuid()}"
    assert folder.parent == parent
    assert parent.stat().st_mode & 0o777 == 0o700 and parent.stat().st_uid == os.getuid()
    folder.chmod(0o777)  # what Ray does to its temp folder
    if os.geteuid() == 0:  # another user cannot list, enter or write into it
        probe = subprocess.run(["ls", str(folder)], preexec_fn=_as_nobody, capture_output=True, text=True)
        assert probe.returncode != 0 and "Permission denied" in probe.stderr, probe.stderr


def test_a_parent_that_is_not_the_users_own_folder_is_refused(tmp_path):
    parent = tmp_path / f"gptbench-{os.getuid()}"
    parent.symlink_to(tmp_path)
    with pytest.raises(GptbenchError, match="is a link, not a folder of yours"):
        tempdirs.make("gbr", str(tmp_path))
    parent.unlink()
    parent.mkdir(mode=0o755)
    tempdirs.make("gbr", str(tmp_path))  # ours but open: closed
    assert parent.stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        os.chown(parent, NOBODY, NOBODY)  # planted by another user
        with pytest.raises(GptbenchError, match=f"is owned by uid {NOBODY}, not a folder of yours"):
            tempdirs.sweep("gbr", str(tmp_path))


@root_only
def test_another_users_folder_and_processes_are_never_swept(tmp_path):
    """A folder whose owner is dead but which belongs to another user, or whose OWNER file
    does, stays; a process of another user carrying the marker of a dead owner's folder of
    ours is not signalled (root reads every process's environment)."""
    theirs, helper = _killed_owner(tmp_path, "gbr")
    for path in (theirs, theirs / tempdirs.OWNER):
        os.chown(path, NOBODY, NOBODY)
    planted, planted_helper = _killed_owner(tmp_path, "gbr")
    os.chown(planted / tempdirs.OWNER, NOBODY, NOBODY)  # its word is another user's
    ours, ours_helper = _killed_owner(tmp_path, "gbr")
    stranger = subprocess.Popen(["sleep", "3600"], preexec_fn=_as_nobody,  # this Python is root's alone
                                env={**os.environ, tempdirs.MARKER: str(ours)})
    try:
        assert tempdirs.owner_alive(theirs) is None and tempdirs.owner_alive(planted) is None
        assert tempdirs.sweep("gbr", str(tmp_path)) == [ours]
        assert not ours.exists() and not _alive(ours_helper)
        assert theirs.is_dir() and planted.is_dir() and stranger.poll() is None
        assert _alive(helper) and _alive(planted_helper)  # their folders were not swept: nor their processes
    finally:
        stranger.kill()
        stranger.wait()
        for pid in (helper, planted_helper, ours_helper):
            if _alive(pid):
                psutil.Process(pid).kill()


def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path):
    folder = tempdirs.make("gbr", str(tmp_path))
    pid, _ = (folder / tempdirs.OWNER).read_text().split()
    (folder / tempdirs.OWNER).write_text(f"{pid} 12345.00\n")  # this pid, started at another time
    assert tempdirs.owner_alive(folder) is False


def test_the_next_cell_sweeps_what_a_killed_runner_left(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # tempfile reads it once: reset its cache
    monkeypatch.setattr("tempfile.tempdir", None)
    folder, helper = _killed_owner(tmp_path, tempdirs.CELL_PREFIX)
    rec = run_cell(Cell.make("numpy", "train", "tiny", options={"steps": 2}), Limits(timeout_s=120)).to_dict()
    assert rec["status"] == "ok"
    assert not folder.exists() and not _alive(helper)
    assert not list(tempdirs.private_parent(str(tmp_path)).glob(f"{tempdirs.CELL_PREFIX}*"))  # its own is gone too


def test_a_killed_driver_leaves_nothing_after_the_next_run_starts(tmp_path):
    """SIGKILL `gptbench run` while its local Ray runs a cell: Ray's agents outlive it (about
    a minute) and its temp dir would stay for ever. The next `gptbench run` -- here one with a
    missing matrix, which starts no Ray -- ends them and removes the folder. While it runs,
    the local Ray is private: its own 0600 token (none written to ~/.ray) and every port it
    listens on bound to loopback."""
    repo = Path(HERE).parent
    matrix = tmp_path / "m.yaml"
    matrix.write_text("backends: [numpy]\nworkloads: {train: {options: {steps: 100000}}}\nspecs: [tiny]\n"
                      "host_classes: {local: {budget_mb: 1000, threads: 1}}\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    env["HOME"] = str(home)
    with open(tmp_path / "driver.log", "w") as log:  # a file, not a pipe nobody reads while it runs
        driver = subprocess.Popen([sys.executable, "-m", "suite", "run", str(matrix), "--out", str(tmp_path / "run")],
                                  cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _kill_and_sweep(driver, home, env, tmp_path)
    finally:  # a failing check leaves no driver, nor its Ray, behind
        if driver.poll() is None:
            driver.terminate()
            driver.wait(timeout=60)
        tempdirs.sweep(tempdirs.DRIVER_PREFIX, "/tmp")


def _kill_and_sweep(driver, home, env, tmp_path):
    repo = Path(HERE).parent
    deadline = time.monotonic() + 180
    cells = []
    while time.monotonic() < deadline and not cells:
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        cells = [p for p in psutil.Process(driver.pid).children(recursive=True) if _is_cell(p)]
        time.sleep(0.2)
    assert cells, "no cell started"
    [folder] = [p for p in tempdirs.private_parent("/tmp").glob(f"{tempdirs.DRIVER_PREFIX}*")
                if (p / tempdirs.OWNER).is_file() and (p / tempdirs.OWNER).read_text().split()[0] == str(driver.pid)]
    assert (folder / "auth_token").stat().st_mode & 0o777 == 0o600  # the local Ray's own token
    assert folder.parent.stat().st_mode & 0o777 == 0o700  # in a parent no other user can enter
    assert not (home / ".ray").exists()
    left = tempdirs.marked(folder)
    pids = {p.pid for p in left}
    listening = [c.laddr for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert len(listening) >= 5 and all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip, _ in listening), \
        listening  # GCS, raylet, workers, agents, metrics: none reachable from another machine
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert folder.is_dir() and any(_alive(p.pid) for p in left)
    proc = subprocess.run([sys.executable, "-m", "suite", "run", str(tmp_path / "absent.yaml")], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"removed {folder}" in proc.stderr
    assert not folder.exists() and not any(_alive(p.pid) for p in left)
    assert not tempdirs.marked(folder)


def _is_cell(p: psutil.Process) -> bool:
    try:
        return "suite.cell" in p.cmdline()
    except psutil.Error:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_CHILD_SUBREAPER is Linux's")
def test_an_orphan_comes_back_to_the_runner_not_to_init():
    from suite.proctree import become_subreaper

    code = ("import os, subprocess, sys, time; from suite.proctree import become_subreaper; become_subreaper(); "
            "subprocess.run([sys.executable, '-c', 'import subprocess, sys; "
            "print(subprocess.Popen([sys.executable, \"-c\", \"import time; time.sleep(60)\"], "
            "start_new_session=True).pid)'], check=True); time.sleep(60)")
    runner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(HERE).parent)})
    try:
        orphan = psutil.Process(int(runner.stdout.readline()))
        deadline = time.monotonic() + 10
        while orphan.ppid() != runner.pid and time.monotonic() < deadline:  # until its parent has exited
            time.sleep(0.05)
        assert orphan.ppid() == runner.pid  # the subreaper took it, not init
    finally:
        for p in psutil.Process(runner.pid).children():
            p.kill()
        runner.kill()
        runner.wait()
    assert become_subreaper() is True
