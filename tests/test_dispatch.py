"""The matrix on real Ray: a simulated 3-node pool (head, lowram, rtx4070; one bench_slot
each, labels and vram_gb as on the real pool), shared by every test here because each
Ray node takes seconds to start on 2 loaded cores. Drivers run as the real CLI in their
own processes (`gptbench run`, and `ray job submit -- python -m suite run`)."""

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from reports.rundir import read_hosts, read_records
from suite import sim

REPO = Path(__file__).resolve().parents[1]
CLASSES = """
host_classes:
  head: {labels: {gptbench/class: head}, budget_mb: 1000, threads: 1}
  lowram: {labels: {gptbench/class: lowram}, budget_mb: 700, threads: 1, specs: [lumgpt]}
  rtx4070: {labels: {gptbench/class: rtx4070}, resources: {vram_gb: 12}, budget_mb: 2000, threads: 1, device: cpu}
"""
PLACED = (REPO / "matrices" / "sim.yaml").read_text()  # the demo matrix of the simulated pool
INFEASIBLE = """
name: infeasible
backends: [numpy]
workloads: [train]
specs: [tiny]
host_classes:
  bigcard: {resources: {vram_gb: 24}, budget_mb: 2000}
  nolabel: {labels: {gptbench/class: cloud}, budget_mb: 2000}
  tooSmall: {labels: {gptbench/class: lowram}, budget_mb: 10}
"""


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    state = sim.up(folder, dashboard=True)  # the dashboard hosts the job server of `ray job submit`
    yield {**state, "env": {**os.environ, **sim.client_env(state)}}
    pids = sim.down(folder)
    assert pids and not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                            for p in pids)


@pytest.fixture(scope="module")
def node_classes(pool):
    code = "import ray, json; ray.init(address='auto'); print(json.dumps({n['NodeID']: n['Labels']['gptbench/class'] " \
           "for n in ray.nodes() if n['Alive']}))"
    out = subprocess.run([sys.executable, "-c", code], env=pool["env"], capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _matrix(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _run(args, pool, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "suite", "run", *args, "--address", "auto"], env=pool["env"],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)


def test_every_cell_lands_on_a_node_of_its_class(pool, node_classes, tmp_path):
    out = tmp_path / "run"
    proc = _run([_matrix(tmp_path, PLACED), "--out", str(out)], pool)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(out)
    assert len(records) == 6 and {r["status"] for r in records} == {"ok"}
    assert sorted(node_classes.values()) == ["head", "lowram", "rtx4070"]
    for r in records:
        assert node_classes[r["node_id"]] == r["host_class"] == r["node_labels"]["gptbench/class"]
        assert r["spec"]["name"] == ("lumgpt" if r["host_class"] == "lowram" else "tiny")
        assert r["budget_mb"] == {"head": 1000, "lowram": 700, "rtx4070": 2000}[r["host_class"]]
        assert 0 < r["peak_rss_mb"] < r["budget_mb"] and r["metrics"]["tokens_per_s"] > 0
        assert 0 < r["ray_overhead_s"] < r["dispatch_s"] < r["roundtrip_s"] and r["attempts"] == 1
    assert list(read_hosts(out)) == [records[0]["host_fingerprint"]]  # one machine
    assert "dispatch overhead per cell" in proc.stderr


def test_infeasible_cells_become_no_host_at_once(pool, tmp_path):
    out = tmp_path / "run"
    t0 = time.monotonic()
    proc = _run([_matrix(tmp_path, INFEASIBLE), "--out", str(out)], pool, timeout=120)
    wall_s = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wall_s < 30  # python + ray import + connect; nothing is submitted, nothing waits
    reasons = {r["host_class"]: r["reason"] for r in read_records(out)}
    assert {r["status"] for r in read_records(out)} == {"no_host"}
    assert "no live node has resource vram_gb>=24" in reasons["bigcard"]
    assert "no live node has label gptbench/class=cloud" in reasons["nolabel"]
    assert "exceeds the budget of host class 'tooSmall' (10 MB)" in reasons["tooSmall"]
    assert "live pool:" in reasons["bigcard"] and "'vram_gb': 12.0" in reasons["bigcard"]


def test_the_pool_matrix_preflights_here_its_gpu_cells_no_host_in_seconds(pool, tmp_path):
    """matrices/pool.yaml on the simulated pool, whose rtx4070 node has no GPU: --preflight
    records every GPU cell no_host with the reason and runs nothing; the CPU hosts' cells pass."""
    from suite import matrix as M

    cells = M.load(REPO / "matrices" / "pool.yaml")[0].cells()
    gpu = [c for c, hc in cells if hc.device.startswith("cuda")]
    assert {c.host_class for c in gpu} == {"rtx4070"} and {c.dtype for c in gpu} == {"float32", "bfloat16"}
    out = tmp_path / "run"
    t0 = time.monotonic()
    proc = _run([str(REPO / "matrices" / "pool.yaml"), "--preflight", "--out", str(out)], pool, timeout=120)
    wall_s = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wall_s < 30  # nothing is submitted, nothing waits
    records = read_records(out)
    assert sorted(r["cell_id"] for r in records) == sorted(c.cell_id(records[0]["code_version"]) for c in gpu)
    assert {r["status"] for r in records} == {"no_host"}
    assert all("no live node has resource GPU>=1" in r["reason"] for r in records)
    assert f"pre-flight only: {len(cells) - len(gpu)} cell(s) can run on the live pool" in proc.stderr
    assert not (out / "report.html").exists()


SLOW = """
name: slow
backends: [numpy]
workloads:
  train: {options: {steps: 60, batch_size: 4, eval_batches: 1}}
specs: [tiny]
seeds: [0, 1, 2, 3]
timeout_s: 120
""" + CLASSES


def _start_driver(matrix: str, out: Path, env: dict) -> subprocess.Popen:
    """`gptbench run` in the background, as a user would start it."""
    return subprocess.Popen([sys.executable, "-m", "suite", "run", matrix, "--address", "auto", "--out", str(out)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_records(run_dir: Path, n: int, proc, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (run_dir / "cells.jsonl").exists() and len(read_records(run_dir)) >= n:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    pytest.fail(f"fewer than {n} records after {timeout_s} s")


def _cells_of_pool(pool) -> list[psutil.Process]:
    """Cell child processes of this pool (tagged by the sim's environment marker)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "suite.cell" in (p.info["cmdline"] or []) and p.environ().get(sim.MARKER) == pool["temp_dir"]:
                found.append(p)
        except psutil.Error:
            pass
    return found


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


HOLD = """
import os, sys, time
from pathlib import Path
import ray
ray.init(address="auto", log_to_driver=False)
HELD = sys.argv[1]

@ray.remote(resources={"bench_slot": 1})
def hold():
    Path(HELD, str(os.getpid())).touch()
    time.sleep(300)

ray.get([hold.remote() for _ in range(int(sys.argv[2]))])
"""


def test_every_process_of_the_pool_listens_on_loopback_only(pool, tmp_path):
    """A task on every node (one bench_slot each: three tasks, three nodes), then every socket
    a process of the pool -- each node's tree, whatever carries the pool's marker -- or the
    driver listens on: GCS, raylets, object managers, workers, agents, metrics exporters, the
    dashboard and the autoscaler, on 127.0.0.1 alone."""
    held = tmp_path / "held"
    held.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", HOLD, str(held), str(len(pool["nodes"]))], env=pool["env"])
    try:
        deadline = time.monotonic() + 120
        while len(list(held.iterdir())) < len(pool["nodes"]) and time.monotonic() < deadline:
            assert driver.poll() is None
            time.sleep(0.2)
        workers = {int(p.name) for p in held.iterdir()}
        assert len(workers) == len(pool["nodes"])
        pids = {driver.pid}
        for node in pool["nodes"]:
            root = psutil.Process(node["pid"])
            pids |= {root.pid, *(c.pid for c in root.children(recursive=True))}
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if p.environ().get(sim.MARKER) == pool["temp_dir"]:
                    pids.add(p.pid)
        bound = [c for c in psutil.net_connections("inet") if c.pid in pids and c.laddr
                 and (c.status == psutil.CONN_LISTEN or c.type == socket.SOCK_DGRAM)]
        names = {}
        for c in bound:
            with contextlib.suppress(psutil.Error):
                names[c.pid] = psutil.Process(c.pid).name()
    finally:
        driver.kill()
        driver.wait()
    outside = [(c.laddr, names.get(c.pid)) for c in bound if not _loopback(c.laddr.ip)]
    assert not outside, outside
    ports = {c.laddr.port for c in bound}
    assert int(pool["address"].rsplit(":", 1)[1]) in ports  # the GCS
    assert int(pool["dashboard_url"].rsplit(":", 1)[1]) in ports  # the dashboard, the job server
    assert workers <= {c.pid for c in bound}  # each node's worker
    assert len({c.pid for c in bound if names.get(c.pid) == "raylet"}) == len(pool["nodes"])  # each raylet


def test_killed_driver_then_resume_loses_nothing_and_repeats_nothing(pool, tmp_path):
    out = tmp_path / "run"
    matrix = _matrix(tmp_path, SLOW)
    driver = _start_driver(matrix, out, pool["env"])
    _wait_for_records(out, 2, driver)
    driver.kill()  # SIGKILL: no handler runs, cells are mid-flight
    driver.communicate()
    before = (out / "cells.jsonl").read_text()
    n_before = len(read_records(out))
    assert 2 <= n_before < 12
    deadline = time.monotonic() + 30  # Ray ends the dead driver's workers; their cells die with them
    while _cells_of_pool(pool) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _cells_of_pool(pool)
    proc = _run(["--resume", str(out)], pool)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(out)
    ids = [r["cell_id"] for r in records]
    assert len(ids) == 12 and len(set(ids)) == 12  # 4 seeds x 3 classes, each once
    assert (out / "cells.jsonl").read_text().startswith(before)  # the first driver's records untouched
    assert {r["status"] for r in records} == {"ok"}
    assert f"{12 - n_before} record(s) written, {n_before} already there" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "ray-job-stop"])
def test_interrupt_keeps_finished_records_and_says_how_to_resume(pool, tmp_path, sig):
    """Ctrl-C is SIGINT; `ray job stop` sends the driver SIGTERM."""
    out = tmp_path / "run"
    driver = _start_driver(_matrix(tmp_path, SLOW), out, pool["env"])
    _wait_for_records(out, 1, driver)
    t0 = time.monotonic()
    driver.send_signal(sig)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err[-3000:]
    assert time.monotonic() - t0 < 20  # the driver leaves at once: bounded
    assert f"gptbench run --resume {out}" in err
    assert 1 <= len(read_records(out)) < 12
    deadline = time.monotonic() + 20
    while _cells_of_pool(pool) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _cells_of_pool(pool)  # cancelled cells were killed, not orphaned


LONG_ON_HEAD = """
name: long
backends: [numpy]
workloads:
  train: {options: {steps: 400, batch_size: 4, eval_batches: 1}}
specs: [tiny]
timeout_s: 120
host_classes:
  head: {labels: {gptbench/class: head}, budget_mb: 1000, threads: 1}
"""


@pytest.mark.parametrize("kills", [1, 2])
def test_a_worker_lost_under_a_cell_is_retried_once_then_recorded(pool, tmp_path, kills):
    """SIGKILL the Ray worker running the cell (what a lost node or an OOM-killed worker
    looks like to the driver): the cell runs again once, on a fresh worker; lost twice, it
    becomes a `crash` record that says so. Never a hang, never a blind retry loop."""
    out = tmp_path / "run"
    driver = _start_driver(_matrix(tmp_path, LONG_ON_HEAD), out, pool["env"])
    killed = set()
    deadline = time.monotonic() + 120
    while len(killed) < kills and time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()[1][-3000:]
        for cell in _cells_of_pool(pool):
            if cell.pid not in killed:
                killed.add(cell.pid)
                cell.parent().kill()  # the Ray worker; the cell dies with it (PR_SET_PDEATHSIG)
        time.sleep(0.05)
    assert len(killed) == kills
    _, err = driver.communicate(timeout=240)
    assert driver.returncode == 0, err[-3000:]
    [record] = read_records(out)
    assert record["attempts"] == 2
    if kills == 1:
        assert record["status"] == "ok" and record["metrics"]["tokens_per_s"] > 0
    else:
        assert record["status"] == "crash"
        assert "lost its node or worker 2 time(s)" in record["reason"] and "Worker" in record["reason"]


def test_a_node_lost_under_its_cell_ends_in_a_record_within_seconds(tmp_path):
    """Kill the lowram node (its whole process tree) while its cell runs, in a pool of its
    own. Ray lists a dead node as alive until its health checks fail; the driver sees the
    raylet refuse connections, waits for Ray to drop the node, then finds no lowram node
    left: `no_host`, in seconds, not `timeout` after the cell's deadline."""
    pool = sim.up(tmp_path / "pool", nodes=("head", "lowram"))
    try:
        env = {**os.environ, **sim.client_env(pool)}
        out = tmp_path / "run"
        # the inventory's lowram, its 700 MB budget inherited (a matrix may not raise it)
        matrix = LONG_ON_HEAD.replace("head: {labels: {gptbench/class: head}, budget_mb: 1000",
                                      "lowram: {labels: {gptbench/class: lowram}")
        driver = _start_driver(_matrix(tmp_path, matrix), out, env)
        deadline = time.monotonic() + 120
        while not _cells_of_pool(pool) and time.monotonic() < deadline:
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            time.sleep(0.05)
        node = psutil.Process(next(n["pid"] for n in pool["nodes"] if n["name"] == "lowram"))
        t0 = time.monotonic()
        for p in [node, *node.children(recursive=True)]:
            p.kill()
        _, err = driver.communicate(timeout=240)
        assert driver.returncode == 0, err[-3000:]
        assert time.monotonic() - t0 < 120  # the matrix's timeout_s: a record long before the task's deadline
        [record] = read_records(out)
        assert record["status"] == "no_host" and record["attempts"] == 1
        assert record["reason"].startswith("after losing a node: host class 'lowram': no live node has label")
        assert "no longer answer" in err
    finally:
        sim.down(tmp_path / "pool")


def test_ray_job_submit_runs_a_matrix_end_to_end(pool, node_classes, tmp_path):
    out = tmp_path / "job-run"  # absolute: the job runs in the head's copy of the working dir
    proc = subprocess.run([str(Path(sys.executable).with_name("ray")), "job", "submit", "--address",
                           pool["dashboard_url"], "--working-dir", ".", "--", "python", "-m", "suite", "run",
                           "matrices/sim.yaml", "--address", "auto", "--out", str(out)],  # uploaded with the dir
                          env=pool["env"], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    records = read_records(out)
    assert len(records) == 6 and {r["status"] for r in records} == {"ok"}
    assert all(node_classes[r["node_id"]] == r["host_class"] for r in records)
    assert json.loads((out / "run.json").read_text())["matrix"]["name"] == "sim"
    assert records[0]["code_version"].startswith("gptbench-")  # the uploaded copy has no .git


def test_local_ray_when_no_address_is_given(tmp_path):
    """No --address: the driver starts its own one-node Ray (the embedded default's path)."""
    out = tmp_path / "run"
    matrix = _matrix(tmp_path, PLACED.split("host_classes:")[0] + "host_classes:\n  local: {budget_mb: 1000, threads: 1}\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-m", "suite", "run", matrix, "--out", str(out)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "started a local Ray" in proc.stderr
    records = read_records(out)
    assert len(records) == 2 and {r["status"] for r in records} == {"ok"}
    assert {r["node_labels"]["gptbench/class"] for r in records} == {"local"}


def test_pool_ports_are_distinct_and_outside_the_ephemeral_range():
    # CI once lost the whole pool: bind(0) gave a port inside a worker range picked before it
    ports = sim._Ports(seed=0)
    singles = [ports.one() for _ in range(30)]
    ranges = [set(range(lo, lo + sim.WORKER_PORTS)) for lo in (ports.range(sim.WORKER_PORTS) for _ in range(3))]
    handed = singles + [p for r in ranges for p in r]
    assert len(handed) == len(set(handed)) == 30 + 3 * sim.WORKER_PORTS
    assert all(sim._Ports.LOW <= p < sim._ephemeral_low() for p in handed)


def test_a_node_that_loses_a_port_race_is_restarted_and_a_failed_start_shows_its_log(tmp_path, monkeypatch):
    # fake nodes: the first dies the way Ray does on a taken port, the second for another reason
    lines = ["ValueError: Ray component worker_ports is trying to use a port number 20001 "
             "that is used by other components.", "RuntimeError: something else entirely"]
    started = []

    def fake_start(name, args, log, state, ports):
        started.append(args)
        log.write_text(f"starting {name}\n{lines[len(started) - 1]}\n")
        return subprocess.Popen(["sh", "-c", "exit 1"], start_new_session=True)

    monkeypatch.setattr(sim, "_start", fake_start)
    monkeypatch.setattr(sim, "_alive_nodes", lambda state: 0)
    with pytest.raises(sim.GptbenchError) as err:
        sim.up(tmp_path, nodes=("head",))
    assert len(started) == 2 and started[0][started[0].index("--port") + 1] != started[1][started[1].index("--port") + 1]
    assert "something else entirely" in str(err.value) and str(tmp_path / "head.log") in str(err.value)
    assert type(err.value) is sim.GptbenchError  # not retried again: not a port race
    assert not (tmp_path / sim.STATE).exists()  # torn down


def _sleeping_node(name, args, log, state, ports):
    """A stand-in node: a process in its own session, as `ray start --block` is."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


def test_up_after_down_in_the_same_folder_starts_a_new_pool_with_a_new_token(tmp_path, monkeypatch):
    monkeypatch.setattr(sim, "_start", _sleeping_node)
    monkeypatch.setattr(sim, "_alive_nodes", lambda state: len(state["nodes"]))
    first = sim.up(tmp_path, nodes=("head", "lowram"))
    token = Path(first["auth_token_path"])
    old = token.read_text()
    assert token.stat().st_mode & 0o777 == 0o600 and Path(first["temp_dir"]).parent.stat().st_mode & 0o777 == 0o700
    assert len(sim.down(tmp_path)) == 2
    assert not token.exists() and not Path(first["temp_dir"]).exists()  # neither outlives its pool
    token.write_text("left by a pool whose state file was lost\n")
    second = sim.up(tmp_path, nodes=("head",))
    try:
        assert second["auth_token_path"] == str(token) and token.read_text() not in (old, "left by a pool whose "
                                                                                         "state file was lost\n")
        assert token.stat().st_mode & 0o777 == 0o600 and Path(second["temp_dir"]).is_dir()
    finally:
        sim.down(tmp_path)


@pytest.mark.parametrize("when", ["before the first node", "at the first node"])
def test_a_failed_up_leaves_no_temp_folder_no_token_and_no_state(tmp_path, monkeypatch, when):
    made = []
    real_mkdtemp = sim.tempfile.mkdtemp
    monkeypatch.setattr(sim.tempfile, "mkdtemp", lambda **kw: made.append(real_mkdtemp(**kw)) or made[-1])
    if when == "before the first node":
        monkeypatch.setattr(sim._Ports, "one", lambda self: (_ for _ in ()).throw(sim.GptbenchError("no free port")))
    else:
        monkeypatch.setattr(sim, "_start", lambda *a: subprocess.Popen(["sh", "-c", "exit 1"], start_new_session=True))
        monkeypatch.setattr(sim, "_alive_nodes", lambda state: 0)
    with pytest.raises(sim.GptbenchError):
        sim.up(tmp_path, nodes=("head",))
    assert len(made) == 1 and not Path(made[0]).exists()
    assert not (tmp_path / sim.TOKEN).exists() and not (tmp_path / sim.STATE).exists()
