"""What docs/adding-a-backend.md promises a backend author, run for real: the example
backend passes `gptbench check`, the pytest plugin runs the ladder as tests (and fails a
broken backend naming the tensor), and an installed plugin is found by its entry point."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPTBENCH = Path(sys.executable).parent / "gptbench"  # the installed console script
EXAMPLE = "examples.minimal_torch:MinimalTorch"


def run(cmd, cwd, pythonpath=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_example_backend_passes_gptbench_check_from_the_repo_root():
    proc = run([GPTBENCH, "check", EXAMPLE, "--dtype", "float32", "--json"], cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and {r["level"] for r in report["rows"]} == {"step0", "eval", "step", "trajectory",
                                                                      "generate"}
    assert report["notes"] == ["level 1 (ops) skipped: MinimalTorch has no op_vjp method; "
                               "the other levels still test the whole model"]


def test_pytest_plugin_runs_the_ladder_as_tests_for_both_dtypes_in_one_run(tmp_path):
    proc = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--gptbench-backend={EXAMPLE}",
                "--gptbench-dtype", "float32,float64", "--gptbench-steps", "10", "-rs", "-v"],
               cwd=tmp_path, pythonpath=[REPO])
    assert proc.returncode == 0, proc.stdout[-3000:]
    # per dtype: eval, step0, step, trajectory, generate pass; ops is skipped (no op_vjp)
    assert "10 passed, 2 skipped" in proc.stdout and "has no op_vjp" in proc.stdout
    assert f"gptbench[{EXAMPLE}-float64-generate] PASSED" in proc.stdout


def test_pytest_plugin_fails_when_the_backend_cannot_run_unless_told_to_skip(tmp_path):
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--gptbench-backend={EXAMPLE}",
           "--gptbench-device", "cuda", "-rs"]
    if __import__("torch").cuda.is_available():
        cmd[-2:-1] = ["mps"]  # a device this machine does not have either
    proc = run(cmd, cwd=tmp_path, pythonpath=[REPO])
    assert proc.returncode == 1 and "6 failed" in proc.stdout, proc.stdout[-3000:]
    assert "unavailable here" in proc.stdout and "--gptbench-allow-unavailable" in proc.stdout
    proc = run(cmd + ["--gptbench-allow-unavailable"], cwd=tmp_path, pythonpath=[REPO])
    assert proc.returncode == 0 and "6 skipped" in proc.stdout, proc.stdout[-3000:]
    proc = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--gptbench-backend=nosuch_mod:Cls"],
               cwd=tmp_path, pythonpath=[REPO])
    assert proc.returncode == 1 and "not found" in proc.stdout, proc.stdout[-3000:]


def test_pytest_plugin_fails_a_broken_backend_and_names_the_tensor(tmp_path):
    proc = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--gptbench-backend=test_mutants:ErfGelu",
                "--gptbench-steps", "5"], cwd=tmp_path, pythonpath=[REPO, REPO / "tests"])
    assert proc.returncode == 1, proc.stdout[-3000:]
    # every level but eval: one loss moves by less than its tolerance, the gradients do not
    assert "5 failed, 1 passed" in proc.stdout and "ops.gelu.out from index" in proc.stdout


def test_an_installed_plugin_is_found_by_its_entry_point(tmp_path):
    """What `pip install` of a package declaring the entry point leaves on sys.path."""
    dist = tmp_path / "gptbench_example_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gptbench-example-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[gptbench.backends]\nminimal = {EXAMPLE}\n")
    listed = run([GPTBENCH, "backends", "--json"], cwd=tmp_path, pythonpath=[tmp_path, REPO])
    assert {"name": "minimal", "available": True, "reason": "", "extra": None} in json.loads(listed.stdout)
    proc = run([GPTBENCH, "check", "minimal", "--dtype", "float64", "--steps", "5"], cwd=tmp_path,
               pythonpath=[tmp_path, REPO])
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1].startswith("PASS"), proc.stdout[-3000:]


# stand-ins for the recipe's `python3 -m venv` and `pip`: the install step runs as written,
# offline, and says what it would install; the tools it then runs are this environment's
STUB_PYTHON3 = """#!/usr/bin/env bash
[ "$1 $2" = "-m venv" ] || { echo "stub python3: only -m venv" >&2; exit 97; }
mkdir -p "$3/bin" && : > "$3/bin/activate"
"""
STUB_PIP = """#!/usr/bin/env bash
printf '%s|' "$@" >> "$PIP_LOG"; echo >> "$PIP_LOG"
"""
NUMPY_PLUGIN = REPO / "examples" / "numpy_plugin"


def _run_recipe(cwd, tmp_path, pythonpath, **variables):
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, text in (("python3", STUB_PYTHON3), ("pip", STUB_PIP)):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath)), "PIP_LOG": str(tmp_path / "pip.log"),
           "PATH": os.pathsep.join([str(stubs), str(Path(sys.executable).parent), os.environ["PATH"]]), **variables}
    env.pop("GPTBENCH_CI_NO_INSTALL", None)
    proc = subprocess.run(["bash", str(REPO / "examples" / "ci" / "gptbench-check.sh")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    installs = [line.split("|")[:-1] for line in (tmp_path / "pip.log").read_text().splitlines()]
    return proc.stdout, installs


def _constraints(ref="v0.1.0"):
    return f"https://raw.githubusercontent.com/gptbench/gptbench/{ref}/constraints/cpu.txt"


def test_the_ci_recipe_runs_on_the_torch_example_with_the_torch_extra(tmp_path):
    """examples/ci/gptbench-check.sh with the example as the backend and EXTRA=torch: the
    install step asks for gptbench's torch extra under the README's constraints, then check
    in float32 and float64, the pytest plugin, train, and generate from the saved weights."""
    out, installs = _run_recipe(tmp_path, tmp_path, [REPO], BACKEND=EXAMPLE, EXTRA="torch")
    assert installs == [
        ["install", "--quiet", "-c", _constraints(), "gptbench[dev,torch] @ git+https://github.com/gptbench/gptbench@v0.1.0"],
        ["install", "--quiet", "-c", _constraints(), "."]]
    assert out.count("PASS: 95/95 checks") == 2  # float32 and float64
    assert "10 passed, 2 skipped" in out and "status ok" in out
    assert out.rstrip().splitlines()[-1].startswith("ab")  # the generated text, from the prompt


def test_the_ci_recipe_runs_on_a_plugin_package_that_needs_no_extra(tmp_path):
    """The NumPy plugin package (its own pyproject, an entry point, its framework as its own
    dependency), installed as pip installs it; the recipe with EXTRA empty asks for no
    gptbench extra (an empty EXTRA used to become torch) and proves the plugin by its name."""
    src = shutil.copytree(NUMPY_PLUGIN, tmp_path / "plugin")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "--target", str(tmp_path / "site"), str(src)], check=True, capture_output=True, timeout=300)
    out, installs = _run_recipe(src, tmp_path, [tmp_path / "site", REPO], BACKEND="numpy-plugin", EXTRA="",
                                GPTBENCH_REF="abc1234")
    assert installs == [
        ["install", "--quiet", "-c", _constraints("abc1234"), "gptbench[dev] @ git+https://github.com/gptbench/gptbench@abc1234"],
        ["install", "--quiet", "-c", _constraints("abc1234"), "."]]
    assert re.search(r"numpy-plugin\s+│\s+yes", out)  # `gptbench backends` lists it by its entry point
    passes = re.findall(r"^PASS: (\d+)/(\d+) checks$", out, re.M)
    assert len(passes) == 2 and all(a == b for a, b in passes)  # float32 and float64, every level
    assert "10 passed, 2 skipped" in out and "status ok" in out  # ops skipped: the reference has no op_vjp
    assert out.rstrip().splitlines()[-1].startswith("ab")
