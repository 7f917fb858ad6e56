"""The real pool is authenticated: a head started exactly as cluster.yaml starts it (its
setup and head start commands, run by bash in a stand-in home with this checkout as
~/gptbench; on loopback) refuses a job submitted without the pool's token -- the shell
command it carries never runs -- and runs a matrix submitted with `ray job submit` and the
token. Without the token the head does not start at all.

The stand-in `.venv/bin/ray` passes cluster.yaml's words through and adds only what one
shared test machine needs: free ports instead of Ray's fixed ones (6379, 8265, ... collide
with other Rays here), a temp dir of its own, `--block` (so the test stops exactly the
processes it started), and no `--autoscaling-config`, which names the launcher's file."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from reports.rundir import read_records
from suite import sim, tempdirs

REPO = Path(__file__).resolve().parents[1]
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
RAY = str(Path(sys.executable).with_name("ray"))

WRAPPER = """#!{python}
import os, sys
args = sys.argv[1:]
if args[:1] == ["start"]:
    args = [a for a in args if not a.startswith("--autoscaling-config")] + {extra!r}
os.execv({ray!r}, [{ray!r}, *args])
"""


def _home(tmp_path, ports, ray_tmp) -> tuple[Path, int]:
    """A home with ~/gptbench (this checkout), its .venv's python and ray, and the host name."""
    home = tmp_path / "home"
    bin_ = home / "gptbench" / ".venv" / "bin"
    bin_.mkdir(parents=True)
    for entry in REPO.iterdir():
        if entry.name not in (".venv", ".git"):
            (home / "gptbench" / entry.name).symlink_to(entry)
    (bin_ / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    dashboard = ports.one()
    extra = ["--block", "--disable-usage-stats", "--temp-dir", ray_tmp, "--port", str(ports.one()),
             "--dashboard-port", str(dashboard), "--ray-client-server-port", str(ports.one()),
             *sim._node_ports(ports)]
    (bin_ / "ray").write_text(WRAPPER.format(python=sys.executable, ray=RAY, extra=extra))
    for f in bin_.iterdir():
        f.chmod(0o755)
    (home / ".gptbench").mkdir()
    (home / ".gptbench" / "host-name").write_text("head\n")
    return home, dashboard


def _env(home: Path, ray_tmp: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "GPTBENCH_HOSTS_DIR"}
    # PATH: the job's `python` is the one gptbench is installed in (docs/cluster.md)
    return {**env, "HOME": str(home), "PATH": os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]),
            tempdirs.MARKER: ray_tmp}  # every process of this head carries it: the test ends exactly those


def _bash(command: str, env: dict, **kw):
    return subprocess.Popen(["bash", "-c", command], env=env, start_new_session=True, **kw)


@pytest.fixture
def pool_home(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="gbp", dir="/tmp")  # short: Ray's unix sockets
    home, dashboard = _home(tmp_path, sim._Ports(), ray_tmp)
    yield home, dashboard, _env(home, ray_tmp)
    tempdirs.end(tempdirs.marked(Path(ray_tmp)))
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _post_job(url: str, headers: dict) -> int:
    body = json.dumps({"entrypoint": "touch PWNED"}).encode()
    req = urllib.request.Request(f"{url}/api/jobs/", data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _wait_for_dashboard(url: str, head, timeout_s=180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert head.poll() is None, "the head exited at start"
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (with an error): it is up
        except OSError:
            time.sleep(1)
    pytest.fail(f"no dashboard at {url} within {timeout_s} s")


def test_the_pool_head_refuses_a_job_without_the_token_and_runs_one_with_it(pool_home, tmp_path):
    home, dashboard, env = pool_home
    token = home / ".ray" / "auth_token"
    # made as docs/cluster.md says, before `ray up`
    subprocess.run(["bash", "-c", f"(umask 077 && {RAY} get-auth-token --generate >/dev/null)"], env=env,
                   check=True, capture_output=True)
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32
    setup = subprocess.run(["bash", "-c", CLUSTER["setup_commands"][0]], env=env, capture_output=True, text=True)
    assert setup.returncode == 0, setup.stderr
    log = open(tmp_path / "head.log", "w")
    head = _bash(CLUSTER["head_start_ray_commands"][-1], env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dashboard}"
    _wait_for_dashboard(url, head)

    # the job server is the dashboard's, on the head's loopback only (an SSH tunnel reaches it)
    assert {c.laddr.ip for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == dashboard} == {"127.0.0.1"}
    cwd_of_job = Path.cwd()
    assert _post_job(url, {}) == 401  # no token: refused
    assert _post_job(url, {"Authorization": "Bearer not-the-token"}) in (401, 403)
    assert not list(Path(home).rglob("PWNED")) and not (cwd_of_job / "PWNED").exists()

    out = tmp_path / "run"  # absolute: the job runs in the head's copy of the working dir
    job_env = {**env, "RAY_AUTH_MODE": "token"}  # the token: ~/.ray/auth_token of this home
    # the uploaded working dir has no .git: the commit travels as docs/cluster.md says
    code = subprocess.run([sys.executable, "-m", "suite", "--code-version"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    job = subprocess.run([RAY, "job", "submit", "--address", url, "--working-dir", ".", "--runtime-env-json",
                          json.dumps({"env_vars": {"GPTBENCH_CODE_VERSION": code}}), "--", "python", "-m", "suite",
                          "run", "matrices/sim.yaml", "--address", "auto", "--out", str(out)],
                         env=job_env, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
    records = {(r["host_class"], r["workload"]): r for r in read_records(out)}
    assert {k: r["status"] for k, r in records.items()} == {
        ("head", "train"): "ok", ("head", "generate"): "ok",  # this pool is the head alone:
        ("lowram", "train"): "no_host", ("lowram", "generate"): "no_host",
        ("rtx4070", "train"): "no_host", ("rtx4070", "generate"): "no_host"}
    assert records[("head", "train")]["node_labels"] == {"gptbench/class": "head"}
    assert len(code) >= 40 and {(r["code_version"], (r.get("host") or {}).get("code_version", code),
                                 r["worker_code_version"]) for r in records.values()} == {(code, code, None)}


def test_without_the_token_the_pool_does_not_start(pool_home, tmp_path):
    home, dashboard, env = pool_home
    setup = subprocess.run(["bash", "-c", CLUSTER["setup_commands"][0]], env=env, capture_output=True, text=True)
    assert setup.returncode == 1 and "no Ray token at ~/.ray/auth_token" in setup.stderr
    # and were the setup skipped, the start command itself refuses to start an open head
    head = _bash(CLUSTER["head_start_ray_commands"][-1], env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 text=True)
    try:
        output, _ = head.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the head started without a token")
    assert head.returncode != 0 and "token" in output.lower(), output[-2000:]
    print(output.strip().splitlines()[-1])
    assert not (home / ".ray" / "auth_token").exists()  # and made none of its own
