"""The host inventory (cluster/hosts/<name>/host.yaml, suite/inventory.py): a host is
written once, and the matrices, the simulated pool and cluster.yaml's commands read it."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gptspec.errors import GptbenchError
from suite import inventory, sim
from suite import matrix as M
from suite.cli import main

REPO = Path(__file__).resolve().parents[1]
HEAD = """
name: m
backends: [numpy]
workloads: [train]
specs: [tiny]
host_classes:
"""


@pytest.fixture
def hosts(tmp_path, monkeypatch):
    """A copy of the inventory to change, in force for this test."""
    folder = tmp_path / "hosts"
    shutil.copytree(REPO / "cluster" / "hosts", folder)
    monkeypatch.setenv(inventory.HOSTS_DIR_ENV, str(folder))
    return folder


def _edit(hosts, name, **fields):
    path = hosts / name / "host.yaml"
    data = yaml.safe_load(path.read_text()) if path.exists() else {}
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({**data, **fields}))


def _classes(text):
    return M.parse(HEAD + text, "m.yaml").host_classes


def test_a_host_is_written_once_and_every_matrix_inherits_it(hosts):
    _edit(hosts, "lowram", budget_mb=650)
    shipped = {path.name: M.load(path)[0] for path in sorted((REPO / "matrices").glob("*.yaml"))}
    assert {"pool.yaml", "sim.yaml", "rehearsal.yaml", "rehearsal-link.yaml"} <= set(shipped)  # each one parses
    pool = shipped["pool.yaml"]
    with_lowram = [mx for mx in [*shipped.values(), M.default_matrix()] if "lowram" in mx.host_classes]
    assert len(with_lowram) >= 4
    for mx in with_lowram:
        assert mx.host_classes["lowram"].budget_mb == 650
    assert pool.host_classes["lowram"].labels == {"gptbench/class": "lowram"}
    assert pool.host_classes["rtx4070"].gpu_budget_mb == 12000 and pool.host_classes["rtx4070"].device == "cuda"


def test_adding_a_host_is_one_file(hosts):
    _edit(hosts, "bigbox", budget_mb=64000, install="torch", resources={"cores": 64}, threads=32)
    hc = _classes("  bigbox: {backends: [numpy]}\n")["bigbox"]
    assert (hc.budget_mb, hc.threads, hc.labels, hc.resources) == (64000, 32, {"gptbench/class": "bigbox"}, {"cores": 64})
    assert "bigbox" in sim.node_names() and sim.node_names()[0] == "head"


@pytest.mark.parametrize("entry, field", [
    ("lowram: {budget_mb: 900}", "budget_mb"),
    ("lowram: {labels: {gptbench/class: other}}", "labels"),
    ("lowram: {gpu_budget_mb: 100}", "gpu_budget_mb"),  # the host has no GPU to budget
    ("rtx4070: {resources: {vram_gb: 24}}", "resources"),
    ("rtx4070: {device: 'cuda:1'}", "device"),
    ("head: {emulated: yes please}", "emulated"),
    ("lowram: {emulated: true, labels: {gptbench/class: lowram}}", "labels"),
])
def test_changing_an_inventory_field_is_an_error_naming_it(entry, field):
    name = entry.split(":")[0]
    with pytest.raises(GptbenchError) as e:
        _classes(f"  {entry}\n")
    assert f"m.yaml: invalid matrix:\n  host_classes.{name}.{field}: " in str(e.value)
    assert "unknown field" not in str(e.value)


def test_a_matrix_narrows_what_runs_and_how_much_of_the_host():
    c = _classes("  lowram: {budget_mb: 500, threads: 1, specs: [lumgpt], labels: {gptbench/class: lowram}}\n"
                 "  rtx4070: {device: cpu}\n  head:\n")
    assert (c["lowram"].budget_mb, c["lowram"].threads, c["lowram"].specs) == (500, 1, ["lumgpt"])
    assert (c["rtx4070"].device, c["rtx4070"].gpu_budget_mb, c["rtx4070"].resources) == ("cpu", None, {"vram_gb": 12})
    assert c["head"].budget_mb == inventory.load("head").budget_mb


def test_an_emulated_class_has_the_hosts_limits_on_any_node_with_its_resources():
    c = _classes("  rtx4070: {emulated: true}\n  lowram: {emulated: true}\n")
    assert (c["rtx4070"].labels, c["rtx4070"].resources, c["rtx4070"].gpu_budget_mb) == ({}, {"vram_gb": 12}, 12000)
    assert (c["lowram"].labels, c["lowram"].budget_mb) == ({}, 700)
    assert (M.default_matrix().host_classes["lowram"].labels, M.default_matrix().host_classes["lowram"].budget_mb) \
        == ({}, 700)


def test_an_ad_hoc_class_is_written_out_in_full():
    c = _classes("  laptop: {labels: {gptbench/class: laptop}, budget_mb: 8000}\n")
    assert (c["laptop"].labels, c["laptop"].budget_mb) == ({"gptbench/class": "laptop"}, 8000)
    with pytest.raises(GptbenchError, match="host_classes.laptop.budget_mb: Field required"):
        _classes("  laptop: {threads: 2}\n")
    with pytest.raises(GptbenchError, match=r"host_classes.laptop.emulated: unknown field; .*emulated \(inventory"):
        _classes("  laptop: {emulated: true, budget_mb: 10}\n")


def test_a_bad_host_file_is_explained(hosts):
    _edit(hosts, "lowram", ram=700)
    with pytest.raises(GptbenchError, match=r"lowram/host.yaml: unknown field\(s\) \['ram'\]"):
        inventory.load("lowram")
    (hosts / "head" / "host.yaml").write_text("install: ray\n")
    with pytest.raises(GptbenchError, match="head/host.yaml: missing budget_mb"):
        inventory.load("head")
    shutil.rmtree(hosts)
    with pytest.raises(GptbenchError, match=f"no host inventory at {hosts}.*{inventory.HOSTS_DIR_ENV}"):
        M.default_matrix()


def test_host_command_prints_each_hosts_pip_and_ray_start_words(capsys):
    assert main(["host", "lowram", "--ray-start"]) == 0
    assert shlex.split(capsys.readouterr().out) == [
        "--labels", "gptbench/class=lowram", "--resources", '{"bench_slot":1}',
        "--num-cpus", "1", "--object-store-memory", "78643200"]
    assert main(["host", "rtx4070", "--pip"]) == 0
    assert shlex.split(capsys.readouterr().out) == ["-e", ".[torch,triton,ray]"]
    assert main(["host", "nosuch", "--pip"]) == 2
    assert "no host 'nosuch' in the inventory" in capsys.readouterr().err


def _fake_home(tmp_path, host_name):
    """HOME with ~/gptbench (this checkout's packages) and stand-ins for its venv's pip and
    ray that write down their arguments."""
    home, calls = tmp_path / "home", tmp_path / "calls.jsonl"
    checkout = home / "gptbench"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    for name in ("suite", "gptspec", "cluster", "constraints"):
        (checkout / name).symlink_to(REPO / name)
    bin_ = checkout / ".venv" / "bin"
    (bin_ / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    record = f"{sys.executable} -c 'import json,sys; print(json.dumps(sys.argv[1:]))' \"$0\" \"$@\" >> {calls}\n"
    for tool in ("pip", "ray"):
        (bin_ / tool).write_text(f"#!/bin/sh\n{record}")
    for f in bin_.iterdir():
        f.chmod(0o755)
    if host_name:
        (home / ".gptbench").mkdir()
        (home / ".gptbench" / "host-name").write_text(host_name + "\n")
    return home, calls


def _run_cluster_command(tmp_path, key, host_name):
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    command = cluster[key][-1]  # setup_commands: the install; the start commands: ray start
    home, calls = _fake_home(tmp_path, host_name)
    env = {k: v for k, v in os.environ.items() if k != inventory.HOSTS_DIR_ENV}
    proc = subprocess.run(["bash", "-c", command], env={**env, "HOME": str(home), "RAY_HEAD_IP": "10.0.0.1"},
                          capture_output=True, text=True, timeout=60)
    seen = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return proc, [[Path(c[0]).name, *c[1:]] for c in seen]


def test_cluster_yaml_installs_and_starts_each_host_as_its_file_says(tmp_path):
    proc, calls = _run_cluster_command(tmp_path / "a", "setup_commands", "lowram")
    assert proc.returncode == 0, proc.stderr
    assert calls == [["pip", "install", "-q", "-c", "constraints/cpu.txt", "-e", ".[ray]"]]
    proc, calls = _run_cluster_command(tmp_path / "b", "worker_start_ray_commands", "rtx4070")
    assert proc.returncode == 0, proc.stderr
    assert calls == [["ray", "start", "--address=10.0.0.1:6379", "--labels", "gptbench/class=rtx4070",
                      "--resources", '{"bench_slot":1,"vram_gb":12}', "--num-gpus", "1"]]
    proc, calls = _run_cluster_command(tmp_path / "c", "head_start_ray_commands", "head")
    assert proc.returncode == 0, proc.stderr
    assert calls[0][:2] == ["ray", "start"] and calls[0][-6:] == [
        "--labels", "gptbench/class=head", "--resources", '{"bench_slot":1}', "--num-cpus", "4"]


def test_a_host_that_does_not_say_which_it_is_starts_no_ray(tmp_path):
    proc, calls = _run_cluster_command(tmp_path, "worker_start_ray_commands", None)
    assert proc.returncode != 0 and calls == []


def test_the_simulated_pool_is_the_inventory(tmp_path, monkeypatch):
    started = []

    class FakePopen:
        pid = 0

        def __init__(self, cmd, **kw):
            started.append(cmd)

    monkeypatch.setattr(sim.subprocess, "Popen", FakePopen)
    state = {"address": "127.0.0.1:1", "temp_dir": str(tmp_path), "auth_token_path": str(tmp_path / "t")}
    sim._start("rtx4070", [], tmp_path / "rtx4070.log", state, sim._Ports(0))
    cmd = started[0]
    assert cmd[cmd.index("--labels") + 1] == "gptbench/class=rtx4070"
    assert json.loads(cmd[cmd.index("--resources") + 1]) == {"bench_slot": 1, "vram_gb": 12}
    assert "--num-gpus" not in cmd  # the sim's nodes say what they are, they have no GPU
    assert sim.node_names() == ["head", "lowram", "rtx4070"]


@pytest.mark.skipif(shutil.which("rsync") is None, reason="the cluster launcher syncs with rsync")
def test_cluster_yaml_syncs_no_simulated_pool_and_no_token_but_the_pools_own(tmp_path):
    """Every file mount of cluster.yaml, synced by rsync with its rsync_exclude as the launcher
    passes it (one --exclude per pattern, for every mount): a checkout holding a simulated
    pool's folder and token files arrives without them, and the pool's own token mount
    (~/.ray/auth_token) still arrives."""
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    here, there = tmp_path / "here", tmp_path / "there"
    checkout = here / "checkout"
    files = {"suite/cli.py": "code", ".gptbench-sim/ray.token": "sim", ".gptbench-sim/sim.json": "{}",
             ".gptbench-sim/head.log": "log", "elsewhere/pool/ray.token": "sim", "auth.token": "t",
             "runs/x/auth_token": "t", "notes/auth_token": "t"}
    for rel, text in files.items():
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_text(text)
    (here / "home" / ".ray").mkdir(parents=True)
    (here / "home" / ".ray" / "auth_token").write_text("the pool's")
    excludes = [arg for pattern in cluster["rsync_exclude"] for arg in ("--exclude", pattern)]
    for remote, local in cluster["file_mounts"].items():
        source = checkout if local == "." else here / "home" / local.removeprefix("~/")
        target = there / remote.removeprefix("~/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():  # as the launcher does: a folder's contents, into the folder
            source, target = f"{source}/", f"{target}/"
        subprocess.run(["rsync", "-a", *excludes, str(source), str(target)], check=True)
    arrived = sorted(str(p.relative_to(there)) for p in there.rglob("*") if p.is_file())
    assert arrived == [".ray/auth_token", "gptbench/suite/cli.py"]
