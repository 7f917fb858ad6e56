"""The real pool rehearsed on this machine (suite/hosts.py, docs/cluster.md): a namespace,
an sshd, a user and a home per host, lowram's RAM enforced by the kernel. Needs root,
network namespaces and a cgroup memory controller (CI has them); skipped, naming what is
missing, elsewhere. One pool for the module; it is removed even when a test fails."""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from reports.rundir import CELLS, read_records
from suite import hosts

pytestmark = pytest.mark.pool

MISSING = hosts.missing()
needs_pool = pytest.mark.skipif(MISSING is not None, reason=f"pool rehearsal: {MISSING}")


def ssh(state: dict, folder, name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    ip = next(h["ip"] for h in state["hosts"] if h["name"] == name)
    return subprocess.run(["ssh", "-i", str(folder / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                           f"{state['login']}@{ip}", command],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    try:
        state = hosts.up(folder, only=["head", "lowram"])
        yield folder, state
    finally:
        hosts.down(folder)  # idempotent: a test may have brought it down already


@needs_pool
def test_each_host_has_its_address_user_home_and_ssh(pool):
    folder, state = pool
    net = ipaddress.ip_network(state["subnet"])
    seen = {}
    for host in state["hosts"]:
        out = ssh(state, folder, host["name"],
                  "id -u; echo $HOME; cat ~/.gptbench/host-name; ip -4 -o addr show eth0; ls -A /tmp | wc -l")
        assert out.returncode == 0, out.stderr
        uid, home, name, addr, tmp_entries = out.stdout.splitlines()
        ip = addr.split()[3].split("/")[0]
        assert ip == host["ip"] and ipaddress.ip_address(ip) in net
        assert (int(uid), home, name) == (host["uid"], host["home"], host["name"])
        assert tmp_entries == "0"  # its own /tmp, not the machine's
        seen[host["name"]] = (uid, home, ip)
    assert len({v[0] for v in seen.values()}) == len({v[1] for v in seen.values()}) == len(seen) == 2
    # each sshd listens on its host's address only: the head's address does not reach lowram's sshd
    ip_lowram = seen["lowram"][2]
    out = subprocess.run(["ip", "netns", "exec", "gbp-head", "ss", "-ltnH"], capture_output=True, text=True)
    assert f"{seen['head'][2]}:22" in out.stdout and "0.0.0.0:22" not in out.stdout
    assert ip_lowram not in out.stdout


@needs_pool
def test_lowram_memory_is_enforced_by_the_kernel(pool):
    folder, state = pool
    lowram = next(h for h in state["hosts"] if h["name"] == "lowram")
    limit = lowram["limit_mb"]
    assert limit == 700 + hosts.RAY_SHARE_MB
    alloc = f"python3 -c 'b = bytearray({limit + 100} * 2**20); print(len(b))'"
    before = int(_oom_kills(lowram))
    killed = ssh(state, folder, "lowram", alloc)
    # ssh says 255 for a remote command ended by a signal; the cgroup's count says who sent it
    assert killed.returncode != 0 and killed.stdout == "", (killed.returncode, killed.stdout, killed.stderr)
    assert int(_oom_kills(lowram)) == before + 1
    # the same allocation is fine on the head (no limit), and lowram holds what fits
    assert ssh(state, folder, "head", alloc).returncode == 0
    fits = ssh(state, folder, "lowram", f"python3 -c 'b = bytearray({limit - 200} * 2**20); print(len(b))'")
    assert fits.returncode == 0 and int(fits.stdout) == (limit - 200) * 2**20
    # pinned to one CPU
    cpus = ssh(state, folder, "lowram", "python3 -c 'import os; print(sorted(os.sched_getaffinity(0)))'")
    assert cpus.stdout.strip() == f"[{lowram['cpu']}]"


def _oom_kills(host: dict) -> int:
    from suite import cgroup

    return cgroup.oom_kills(Path(host["cgroup"][0]))


REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
RUN_DIR = "/home/gbp-head/runs/rehearsal"  # on the head, where the job's driver writes
LINK_RUN_DIR = "/home/gbp-head/runs/link"
# Ray's GCS marks a silent node dead after its health checks (~65 s measured); the driver asks
# every NODE_CHECK_S; the bound leaves room for a loaded machine
LINK_LOSS_BOUND_S = 120


def _ray_env(folder) -> dict:
    env = dict(os.environ)
    for word in (folder / "env").read_text().split()[1:]:
        key, _, value = word.partition("=")
        env[key] = value
    return env


def _alive_nodes(state, folder) -> int:
    code = ("import ray; ray.init(address='auto', log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    out = ssh(state, folder, "head", f"cd ~/gptbench && RAY_AUTH_MODE=token .venv/bin/python -c \"{code}\"")
    try:
        return int(out.stdout.split()[-1])
    except (IndexError, ValueError):
        return 0


@contextlib.contextmanager
def tunnel(folder):
    """`ray dashboard cluster.yaml`: the launcher's SSH tunnel to the head's job server (once
    the cluster is up: it asks the launcher for the head)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([RAY, "dashboard", "--port", str(port), str(folder / "cluster.yaml")], cwd=REPO,
                            env=_ray_env(folder), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "`ray dashboard` opened no tunnel"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@needs_pool
def test_ray_up_the_shipped_cluster_yaml_and_a_matrix_through_the_tunnel(pool):
    folder, state = pool
    env = _ray_env(folder)
    t0 = time.monotonic()
    up = subprocess.run([RAY, "up", "-y", "--no-config-cache", str(folder / "cluster.yaml")], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=420)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    while _alive_nodes(state, folder) < 2:  # the head's autoscaler sets lowram up over SSH
        assert time.monotonic() - t0 < 480, "lowram did not join within 8 minutes of `ray up`"
        time.sleep(5)
    print(f"ray up: {time.monotonic() - t0:.0f} s until both nodes were alive")

    # the token reached every host, readable by its user alone
    for host in state["hosts"]:
        out = ssh(state, folder, host["name"], "stat -c %a ~/.ray/auth_token; cat ~/.ray/auth_token")
        assert out.stdout.split() == ["600", (folder / "operator/.ray/auth_token").read_text().strip()]

    # another host with a wrong token: its node cannot join, its client is refused by the GCS
    head_gcs = f"{next(h['ip'] for h in state['hosts'] if h['name'] == 'head')}:6379"
    wrong = ("cd ~/gptbench && echo 0123456789abcdef0123456789abcdef > /tmp/wrong && chmod 600 /tmp/wrong && "
             "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/tmp/wrong && ")
    node = ssh(state, folder, "lowram", wrong + f"timeout 90 .venv/bin/ray start --address={head_gcs} "
               "--temp-dir /tmp/ray-wrong --node-manager-port 30001 --object-manager-port 30002 "
               "--metrics-export-port 30003 --dashboard-agent-listen-port 30004 --dashboard-agent-grpc-port 30005 "
               "--runtime-env-agent-port 30006 --min-worker-port 30010 --max-worker-port 30020", timeout=120)
    assert node.returncode != 0 and "InvalidAuthToken" in node.stdout + node.stderr, node.stdout[-2000:]
    client = ssh(state, folder, "lowram", wrong + "timeout 60 .venv/bin/python -c "
                 f"\"import ray; ray.init(address='{head_gcs}'); print('JOINED')\"", timeout=90)
    assert "JOINED" not in client.stdout and "Unauthenticated" in client.stdout + client.stderr
    assert _alive_nodes(state, folder) == 2  # with the pool's token the same client joins

    # the job server through the tunnel: refused without the token, used with it
    import urllib.error
    import urllib.request

    with tunnel(folder) as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/jobs/", timeout=30)
        assert refused.value.code == 401
        job = _submit(url, env, "matrices/rehearsal.yaml", "--out", RUN_DIR)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    print(f"ray up and the job: {time.monotonic() - t0:.0f} s")

    records = {r["host_class"]: r for r in _records(RUN_DIR)}
    ips = {h["name"]: h["ip"] for h in state["hosts"]}
    assert {c: r["status"] for c, r in records.items()} == {"head": "ok", "lowram": "ok", "lowram_unsampled": "oom"}
    assert records["head"]["node_ip"] == ips["head"] and records["lowram"]["node_ip"] == ips["lowram"]
    assert records["lowram_unsampled"]["node_id"] == records["lowram"]["node_id"] != records["head"]["node_id"]
    kernel = records["lowram_unsampled"]
    lowram = next(h for h in state["hosts"] if h["name"] == "lowram")
    # the runner's budget (4000 MB) never fired: the kernel ended it at the host's limit
    assert kernel["limit_enforced_by"] == "kernel" and kernel["signal"] == "SIGKILL"
    assert f"limit of {lowram['limit_mb']} MB" in kernel["reason"]
    assert kernel["peak_rss_mb"] < lowram["limit_mb"] < kernel["budget_mb"]
    assert records["lowram"]["limit_enforced_by"] is None

    _link_fault(state, folder, env, lowram_node=records["lowram"]["node_id"])
    print(f"ray up, the job and the link fault: {time.monotonic() - t0:.0f} s")

    down = subprocess.run([RAY, "down", "-y", str(folder / "cluster.yaml")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    # `ray stop` ran on the head (its venv is on the login PATH); the local provider leaves the
    # workers' Ray running (docs/cluster.md): hosts down ends it
    head = next(h for h in state["hosts"] if h["name"] == "head")
    left = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["uids", "cmdline", "status"])
            if p.info["uids"].real == head["uid"] and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert not [c for c in left if "ray" in c], left
    print(f"the rehearsal took {time.monotonic() - t0:.0f} s")


def _records(run_dir: str) -> list[dict]:
    """The run's records so far (none before its first): the project's reader, which skips a
    line the driver is still writing."""
    return read_records(run_dir) if Path(run_dir, CELLS).exists() else []


def _submit(url: str, env: dict, *args: str, wait: bool = True):
    cmd = [RAY, "job", "submit", "--address", url, "--working-dir", ".", "--", "python", "-m", "suite", "run",
           *args, "--address", "auto"]
    if wait:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _link_fault(state, folder, env, lowram_node: str) -> None:
    """lowram's link taken down under its cell: the cell ends no_host (lost node) within
    LINK_LOSS_BOUND_S while the head's cell ends ok and the run goes on; the link back,
    lowram rejoins by itself (the launcher's autoscaler restarts Ray on it over SSH) and
    `--resume` runs that cell again there."""
    lowram = next(h for h in state["hosts"] if h["name"] == "lowram")
    ips = {h["name"]: h["ip"] for h in state["hosts"]}
    with tunnel(folder) as url:
        job = _submit(url, env, "matrices/rehearsal-link.yaml", "--out", LINK_RUN_DIR, wait=False)
        try:
            deadline = time.monotonic() + 180
            while not [p for p in psutil.process_iter(["uids", "cmdline"])
                       if p.info["uids"].real == lowram["uid"] and "suite.cell" in (p.info["cmdline"] or [])]:
                assert job.poll() is None and time.monotonic() < deadline, "no cell started on lowram"
                time.sleep(0.2)
            subprocess.run(["ip", "link", "set", lowram["veth"], "down"], check=True)
            down_at = time.monotonic()
            while not [r for r in _records(LINK_RUN_DIR) if r["host_class"] == "lowram"]:
                assert time.monotonic() - down_at < LINK_LOSS_BOUND_S, "lowram's cell not ended after its link went"
                time.sleep(0.5)
            lost_after = time.monotonic() - down_at
            out, _ = job.communicate(timeout=300)
        finally:
            subprocess.run(["ip", "link", "set", lowram["veth"], "up"], check=True)
            if job.poll() is None:
                job.kill()
        assert job.returncode == 0, out[-3000:]
        print(f"link down: lowram's cell ended {lost_after:.0f} s later")
        first = {r["host_class"]: r for r in _records(LINK_RUN_DIR)}
        assert (first["lowram"]["status"], first["lowram"]["no_host_cause"]) == ("no_host", "lost_node")
        assert first["lowram"]["reason"].startswith("after losing a node: host class 'lowram': no live node")
        assert first["head"]["status"] == "ok" and first["head"]["node_ip"] == ips["head"]
        assert f"node {ips['lowram']} (" in out and "was marked dead by Ray" in out
        assert f"1 cell(s) lost their node (no_host, lost_node): once it is back in the pool, run them with\n" \
               f"  gptbench run --resume {LINK_RUN_DIR}" in out

        t_up = time.monotonic()
        while _alive_nodes(state, folder) < 2:
            assert time.monotonic() - t_up < 300, "lowram did not rejoin within 5 minutes of its link coming back"
            time.sleep(3)
        print(f"link up: lowram alive again {time.monotonic() - t_up:.0f} s later")
        resumed = _submit(url, env, "--resume", LINK_RUN_DIR)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    records = _records(LINK_RUN_DIR)
    assert sorted(r["host_class"] for r in records[:2]) == ["head", "lowram"]  # the first run's, either order
    again, = records[2:]  # only the lost cell ran again
    assert again["cell_id"] == first["lowram"]["cell_id"] and again["status"] == "ok"
    assert again["node_ip"] == ips["lowram"] and again["node_id"] != lowram_node  # Ray restarted there


@needs_pool
def test_down_leaves_nothing_and_twice_is_fine(pool):
    folder, state = pool
    assert sorted(hosts.leftovers()) != []
    hosts.down(folder)
    assert hosts.leftovers() == []
    assert not any(os.path.exists(h["home"]) for h in state["hosts"])
    assert hosts.down(folder) == {}


def test_up_refuses_when_not_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(hosts.Refused, match="not root"):
        hosts.up(tmp_path)
    assert not (tmp_path / hosts.STATE).exists()


def test_the_pool_uses_the_shipped_cluster_yaml_with_only_addresses_and_ssh_changed(tmp_path):
    import yaml

    state = {"hosts": [{"name": "head", "ip": "10.9.9.10"}, {"name": "lowram", "ip": "10.9.9.11"}]}
    hosts._write_cluster_yaml(tmp_path, state)
    shipped, ours = hosts.SHIPPED.read_text().splitlines(), (tmp_path / "cluster.yaml").read_text().splitlines()
    ops = [op for op in difflib.SequenceMatcher(a=shipped, b=ours, autojunk=False).get_opcodes() if op[0] != "equal"]
    removed = [line for tag, i1, i2, _, _ in ops if tag in ("delete", "replace") for line in shipped[i1:i2]]
    added = [line for tag, _, _, j1, j2 in ops if tag in ("insert", "replace") for line in ours[j1:j2]]
    assert [line.split("#")[0].split() for line in removed] == [
        ["head_ip:", "192.168.1.10"], ["-", "192.168.1.11"], ["-", "192.168.1.12"], ["ssh_user:", "bench"],
        ["ssh_private_key:", "~/.ssh/id_ed25519"]]
    # rtx4070's worker line is the one left out; everything else is the shipped file, byte for byte
    assert [line.split("#")[0].split() for line in added] == [
        ["head_ip:", "10.9.9.10"], ["-", "10.9.9.11"], ["ssh_user:", hosts.LOGIN],
        ["ssh_private_key:", str(tmp_path / "id_ed25519")]]
    a, b = yaml.safe_load("\n".join(shipped)), yaml.safe_load("\n".join(ours))
    assert b["provider"] == {"type": "local", "head_ip": "10.9.9.10", "worker_ips": ["10.9.9.11"]}
    assert b["auth"] == {"ssh_user": hosts.LOGIN, "ssh_private_key": str(tmp_path / "id_ed25519")}
    for key in set(a) | set(b):
        if key not in ("provider", "auth"):
            assert a.get(key) == b.get(key), key
