"""gptbench as users install it: a wheel built from this tree (not editable), installed into
a folder of its own and run from another folder, with nothing of the checkout on sys.path.
It runs a one-cell matrix on an inventory host (the inventory is package data), reports it,
and says its version. Offline and fast: the wheel is built without build isolation and
installed without dependencies, which come from the test's own environment."""

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from suite import __version__, env
from suite.inventory import HOSTS_DIR_ENV

REPO = Path(__file__).resolve().parents[1]
# a host of the inventory, emulated on this machine's one local node: its budget and threads
MATRIX = ("name: installed\nbackends: [numpy]\nspecs: [tiny]\nworkloads: {train: {options: {steps: 3}}}\n"
          "host_classes: {lowram: {emulated: true}}\n")


def _tree(dest: Path) -> Path:
    """The working tree's files git knows or would add (edits included; build/, *.egg-info and
    .venv left out), copied so the build writes nothing into the checkout."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("installed")
    src = _tree(tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel, = (tmp / "dist").glob("gptbench-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                    str(tmp / "site"), str(wheel)], check=True, capture_output=True, timeout=300)
    return wheel, tmp / "site"


def _gptbench(site: Path, cwd: Path, *args, timeout=300, **extra_env) -> subprocess.CompletedProcess:
    """The installed console script, from `cwd`, with only the install folder on PYTHONPATH."""
    keep = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", HOSTS_DIR_ENV, env.CODE_VERSION_ENV) and not k.startswith("RAY_")}
    return subprocess.run([str(site / "bin" / "gptbench"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**keep, "PYTHONPATH": str(site), **extra_env})


def test_the_wheel_carries_the_inventory_and_the_default_matrix(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    hosts = {p.relative_to(REPO).as_posix() for p in (REPO / "cluster" / "hosts").glob("*/host.yaml")}
    assert hosts and hosts <= names and "suite/default_matrix.yaml" in names
    assert wheel.name.startswith(f"gptbench-{__version__}-")


def test_an_installed_gptbench_runs_a_matrix_and_reports_it_from_another_folder(installed, tmp_path):
    _, site = installed
    probe = subprocess.run([sys.executable, "-c", "import suite, sys; print(suite.__file__); print(sys.path)"],
                           cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)})
    where, paths = probe.stdout.splitlines()
    # the checkout is not seen (a virtual environment inside it, as CI's .venv-ci, may be)
    assert where.startswith(str(site / "suite")) and str(REPO) not in ast.literal_eval(paths)
    assert _gptbench(site, tmp_path, "--version").stdout == f"gptbench {__version__}\n"  # no checkout: no commit
    hosts = _gptbench(site, tmp_path, "host")
    assert hosts.returncode == 0 and hosts.stdout.split() == sorted(p.parent.name for p in
                                                                    (REPO / "cluster" / "hosts").glob("*/host.yaml"))
    listed = _gptbench(site, tmp_path, "backends", "--json")
    assert {"name": "numpy", "available": True, "reason": "", "extra": None} in json.loads(listed.stdout)
    (tmp_path / "m.yaml").write_text(MATRIX)
    run = _gptbench(site, tmp_path, "run", "m.yaml", "--out", "run", GPTBENCH_CODE_VERSION="abc123+dirty.0f")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    record, = [json.loads(line) for line in (tmp_path / "run" / "cells.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["metrics"]["steps_trained"] == 3
    assert record["budget_mb"] == 700  # the inventory's lowram, read from the installed package
    # the submitting checkout's commit, as a job's submit command passes it (docs/cluster.md)
    assert record["code_version"] == record["host"]["code_version"] == "abc123+dirty.0f"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["code_version"] == "abc123+dirty.0f"
    report = _gptbench(site, tmp_path, "report", "run", "--csv", "cells.csv")
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "run" / "report.html").stat().st_size > 0 and (tmp_path / "cells.csv").is_file()


def test_from_a_checkout_the_version_names_the_commit():
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    proc = subprocess.run([sys.executable, "-m", "suite", "--version"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.startswith(f"gptbench {__version__} (code {commit}")
