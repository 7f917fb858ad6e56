"""The host inventory: each host class of the pool written once, in
cluster/hosts/<name>/host.yaml (docs/cluster.md), and read by everything that needs it:
cluster.yaml's setup and start commands (`gptbench host NAME --pip | --ray-start`), the
simulated pool (suite/sim.py) and the matrices, where a host class of the same name
inherits the host and may only narrow it (docs/matrix.md).

A host's Ray node advertises the label gptbench/class=<name>, one bench_slot and the
host's `resources`; its matrix class asks for the same. Needs only PyYAML: a host reads
its own entry before anything else of gptbench is installed.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from gptspec.errors import GptbenchError

LABEL = "gptbench/class"
SLOT = "bench_slot"  # every gptbench host advertises one: one timed cell per machine
HOSTS_DIR_ENV = "GPTBENCH_HOSTS_DIR"
# beside suite/: in a checkout (where cluster.yaml's commands and `pip install -e .` use it,
# and a job's `--working-dir .` carries it) and in an installed gptbench, whose wheel ships
# it as the `cluster` package's data (pyproject.toml)
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "cluster" / "hosts"
FILE = "host.yaml"

# what a matrix may change of an inventory host: which cells run there (any list), and
# less of the host for each (a lower budget, fewer threads, its CPU only)
NARROWING = ("specs", "backends", "workloads")
LOWER = ("budget_mb", "gpu_budget_mb", "threads")


class NarrowingError(GptbenchError):
    """A matrix's host class changes an inventory field instead of narrowing it."""

    def __init__(self, field: str, why: str):
        super().__init__(why)
        self.field = field


@dataclass(frozen=True)
class Host:
    name: str
    path: Path
    budget_mb: float                 # RAM for one cell's process tree
    install: str                     # the pip extra(s) of `pip install -e .[...]`
    resources: dict = field(default_factory=dict)  # custom resources its node advertises, e.g. vram_gb: 12
    gpu_budget_mb: float | None = None
    device: str = "cpu"
    threads: int | None = None       # None: all cores
    constraints: str | None = None   # pip's -c file (CPU builds of torch and friends)
    ray_start: tuple[str, ...] = ()  # `ray start` flags of this host's own

    def host_class(self) -> dict:
        """The matrix's host class of this name (suite/matrix.py HostClass fields)."""
        return {"labels": {LABEL: self.name}, "resources": dict(self.resources), "budget_mb": self.budget_mb,
                "gpu_budget_mb": self.gpu_budget_mb, "device": self.device, "threads": self.threads}

    def node_args(self) -> list[str]:
        """What its Ray node says it is (`ray start` flags; the simulated pool's too)."""
        return ["--labels", f"{LABEL}={self.name}",
                "--resources", json.dumps({SLOT: 1, **self.resources}, separators=(",", ":"))]

    def ray_start_args(self) -> list[str]:
        return [*self.node_args(), *self.ray_start]

    def pip_args(self) -> list[str]:
        return [*(["-c", self.constraints] if self.constraints else []), "-e", f".[{self.install}]"]

    def narrowed(self, given: dict) -> dict:
        """The host class a matrix makes of this host with its entry `given`: the host's
        fields, narrowed. `emulated: true` asks for no label: the host's limits on any node
        with its resources. NarrowingError names a field the matrix changes."""
        base = self.host_class()
        given = dict(given)
        emulated = given.pop("emulated", False)
        if not isinstance(emulated, bool):
            raise NarrowingError("emulated", f"true or false, not {emulated!r}")
        if emulated and "labels" in given:
            raise NarrowingError("labels", "an emulated class is placed by resources only, with no label")
        for key, value in given.items():
            if key in base and key not in NARROWING and value != base[key] and not self._lowers(key, value):
                raise NarrowingError(key, f"{value!r} would change {self.name}'s {base[key]!r} "
                                          f"({self.path}): a matrix may only narrow an inventory host "
                                          f"({', '.join(NARROWING)}; a lower budget_mb or gpu_budget_mb, fewer "
                                          "threads, device cpu). Change the host's file, or give an ad-hoc "
                                          "class another name")
        if given.get("device") == "cpu":
            base["gpu_budget_mb"] = None  # its CPU only: no VRAM to budget
        if emulated:
            base["labels"] = {}
        return {**base, **given}

    def _lowers(self, key: str, value) -> bool:
        """Whether `value` takes less of the host than its own `key` does."""
        if key == "device":
            return value == "cpu"
        if key not in LOWER or isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        current = getattr(self, key)
        if current is None:  # threads: all cores, so any count is fewer; gpu_budget_mb: no GPU
            return key == "threads"
        return value <= current


def hosts_dir() -> Path:
    return Path(os.environ.get(HOSTS_DIR_ENV) or DEFAULT_DIR)


def names() -> list[str]:
    folder = hosts_dir()
    if not folder.is_dir():
        raise GptbenchError(f"no host inventory at {folder}: gptbench reads cluster/hosts/ beside its suite/ "
                            f"package (a checkout, or the installed package's copy); set {HOSTS_DIR_ENV} to a "
                            "folder of <name>/host.yaml files.")
    return sorted(p.parent.name for p in folder.glob(f"*/{FILE}"))


# a host file's fields: the Host's, but its name and path, which are where the file is
_FIELDS = [f.name for f in fields(Host) if f.name not in ("name", "path")]
_REQUIRED = [f.name for f in fields(Host) if f.name in _FIELDS and f.default is f.default_factory is MISSING]


def load(name: str) -> Host:
    path = hosts_dir() / name / FILE
    if name not in names():
        raise GptbenchError(f"no host {name!r} in the inventory {hosts_dir()}; hosts: {', '.join(names()) or 'none'}.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise GptbenchError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise GptbenchError(f"{path}: a host is a YAML mapping of {', '.join(_FIELDS)}.")
    unknown = sorted(set(data) - set(_FIELDS))
    missing = [f for f in _REQUIRED if f not in data]
    if unknown or missing:
        raise GptbenchError(f"{path}: " + "; ".join(
            ([f"unknown field(s) {unknown}; allowed: {', '.join(_FIELDS)}"] if unknown else []) +
            ([f"missing {', '.join(missing)}"] if missing else [])))
    data["resources"] = data.get("resources") or {}
    data["ray_start"] = tuple(shlex.split(str(data.get("ray_start") or "")))
    return Host(name=name, path=path, **data)
