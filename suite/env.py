"""What machine and code a measurement came from: environment capture, the host
fingerprint that keys the calibration cache, and the code version in every cell id.

Nothing here imports torch (a NumPy cell must not): GPUs are read with nvidia-smi,
library versions with importlib.metadata.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from gptspec.files import cache_dir  # noqa: F401 -- suite's callers read it here

# the folder suite/ is in: a checkout, site-packages, or a job's working dir
REPO = Path(__file__).resolve().parents[1]
CODE_VERSION_ENV = "GPTBENCH_CODE_VERSION"
LIBRARIES = ("numpy", "torch", "triton", "safetensors", "psutil", "ray", "pytest-benchmark")
# the variables BLAS and OpenMP libraries size their thread pools from
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """The environment that holds BLAS/OpenMP to `threads` threads (set before they load)."""
    return {var: str(threads) for var in THREAD_ENV}


def bind_cpus(threads: int) -> list[int] | None:
    """Bind this process (and what it starts) to `threads` of the CPUs it may use, the
    lowest-numbered: frameworks that size their pools from the affinity mask rather than
    the environment (jax's XLA, some OpenMP builds) obey it too. Returns the CPUs, or None
    where the OS has no affinity call (macOS) or there are no more CPUs than threads."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if threads >= len(allowed):
        return None
    os.sched_setaffinity(0, allowed[:threads])
    return allowed[:threads]


def cpus_seen() -> int | None:
    """How many CPUs this process may run on (its affinity mask), where the OS says."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def checkout_commit() -> str | None:
    """The git commit of the checkout this code runs from; with uncommitted changes,
    '<commit>+dirty.<hash>' (hash of the diff) so edited code never reuses a finished cell's
    id. None where REPO is not the top of a checkout: an installed gptbench (site-packages
    may sit inside some other repository, whose commit is not this code's), or a job's
    uploaded working dir (no .git)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=10,
                              check=True).stdout

    try:
        top, commit = git("rev-parse", "--show-toplevel", "HEAD").decode().split()
        if Path(top).resolve() != REPO:
            return None
        diff = git("diff", "HEAD", "--", ".")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return f"{commit}+dirty.{hashlib.sha256(diff).hexdigest()[:8]}" if diff else commit


def package_version() -> str:
    from suite import __version__  # the one place the version is written (pyproject reads it)

    return __version__


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """What code measured: the checkout's commit (checkout_commit); else $GPTBENCH_CODE_VERSION,
    which a job's submit command sets from the submitting checkout (`--runtime-env-json`,
    docs/cluster.md: the uploaded working dir has no .git); else gptbench-<version>."""
    return checkout_commit() or os.environ.get(CODE_VERSION_ENV) or f"gptbench-{package_version()}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def nvidia_gpus() -> list[dict]:
    """[{name, memory_mb, driver}] from nvidia-smi, [] when there is none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, mem, driver = (s.strip() for s in line.split(","))
        gpus.append({"name": name, "memory_mb": int(float(mem)), "driver": driver})
    return gpus


@functools.lru_cache(maxsize=1)
def capture() -> dict:
    """The environment of this host, as recorded with every cell."""
    import psutil

    env = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_mb": psutil.virtual_memory().total // 2**20,
        "gpus": nvidia_gpus(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "libraries": {name: _version(name) for name in LIBRARIES},
        "gptbench": package_version(),
        "code_version": code_version(),
    }
    env["fingerprint"] = fingerprint(env)
    return env


def fingerprint(env: dict) -> str:
    """Hash of what decides a host's speed: hardware and the numeric libraries. The host
    name and the code version are left out, so identical boxes share calibration."""
    key = {k: env[k] for k in ("machine", "cpu_model", "cores_logical", "gpus", "python")}
    key["ram_gb"] = round(env["ram_mb"] / 1024)
    key["libraries"] = {k: env["libraries"].get(k) for k in ("numpy", "torch", "triton")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
