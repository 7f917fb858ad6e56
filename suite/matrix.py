"""The matrix: which cells a run measures and which hosts may run them (docs/matrix.md).

A YAML file, validated with pydantic; an error names the file, the field and what is
allowed. A workload's options are checked against what the workload declares
(workloads.check_options: names, types, ranges), so no cell of a bad matrix is dispatched.
Cells are the product backends x workloads x specs x dtypes x host classes x seeds x
repeats, narrowed per workload (its own backends, e.g. attention providers, and specs) and
per host class (the specs, backends and workloads it takes), minus `exclude` entries.
A host class named after an inventory host (suite/inventory.py) is that host, narrowed;
any other name is an ad-hoc class, written out in full.
With no file, the embedded default (default_matrix) runs on one CPU machine.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

import backends
import workloads
from gptspec.errors import GptbenchError
from gptspec.limits import cut, quote
from gptspec.spec import resolve_spec
from suite import inventory, yamlfile
from suite.cell import Cell
from suite.record import Limits

DEFAULT_PATH = Path(__file__).with_name("default_matrix.yaml")
FIELD_CHARS = 500  # an error line quotes a field and its message at most this long
EXCLUDE_KEYS = {"backend", "workload", "spec", "dtype", "host_class"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# a matrix's name names its run folder (runs/<UTC time>-<name>): a name, never a path
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _backend_names(v: list[str] | None) -> list[str] | None:
    """Each name a backend of this install (backends.check_name), or the field's error."""
    for name in v or []:
        try:
            backends.check_name(name)
        except GptbenchError as e:  # as a ValueError pydantic names the field
            raise ValueError(str(e)) from None
    return v


BackendNames = Annotated[list[str], AfterValidator(_backend_names)]


class HostClass(_Strict):
    """Which Ray nodes may run a cell, and what the cell may use there. An inventory host's
    class arrives here already resolved (parse), so a run directory's copy validates alone."""
    labels: dict[str, str] = Field(default_factory=dict, description="Ray node labels a host must carry")
    resources: dict[str, float] = Field(default_factory=dict,
                                        description="custom resources a host must have, e.g. vram_gb: 12")
    budget_mb: float = Field(gt=0, description="RAM for one cell's process tree on such a host")
    gpu_budget_mb: float | None = Field(default=None, gt=0)
    device: str = "cpu"
    threads: int | None = Field(default=None, ge=1, description="BLAS/OpenMP/torch threads (default: all cores)")
    specs: list[str] | None = None      # only these specs run here (default: the matrix's)
    backends: BackendNames | None = None   # only these backends
    workloads: list[str] | None = None  # only these workloads

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "cpu" and not v.startswith("cuda"):
            raise ValueError(f"device {quote(v)}: allowed are 'cpu', 'cuda' or 'cuda:N'")
        return v

    def limits(self, timeout_s: float, compile_cache: str = "fresh") -> Limits:
        """What one cell on such a host may use: travels to the child as one object."""
        return Limits(budget_mb=self.budget_mb, gpu_budget_mb=self.gpu_budget_mb, timeout_s=timeout_s,
                      threads=self.threads, compile_cache=compile_cache)


class WorkloadEntry(_Strict):
    backends: BackendNames | None = None  # default: the matrix's backends (attention: providers)
    specs: list[str] | None = None  # default: the matrix's specs; a host class's own specs come first
    options: dict = Field(default_factory=dict)  # the workload's OPTIONS (checked by Matrix) and runner options
    repeats: int | None = Field(default=None, ge=1)  # this workload's repeats (default: the matrix's)
    spec_options: dict[str, dict] = Field(default_factory=dict)  # per spec name: options over `options`

    @field_validator("specs")
    @classmethod
    def _specs_resolve(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_specs(v)

    @field_validator("spec_options")
    @classmethod
    def _spec_options_resolve(cls, v: dict[str, dict]) -> dict[str, dict]:
        _check_specs(list(v))
        return v


class Matrix(_Strict):
    name: str = "matrix"
    backends: BackendNames = Field(min_length=1)
    workloads: dict[str, WorkloadEntry]
    specs: list[str] = Field(min_length=1, description="preset names or inline JSON specs")
    dtypes: list[Literal["float32", "float64", "bfloat16", "float16"]] = ["float32"]
    host_classes: dict[str, HostClass] = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0)]] = [0]  # NumPy's generators take no negative seed
    repeats: int = Field(default=1, ge=1)
    timeout_s: float = Field(default=600, gt=0)
    compile_cache: Literal["fresh", "host"] = "fresh"  # suite/compile_cache.py
    exclude: list[dict[str, str]] = Field(default_factory=list,
                                          description="partial cells (backend, workload, spec, dtype, host_class)")

    @field_validator("name")
    @classmethod
    def _name_is_a_name(cls, v: str) -> str:
        if not NAME.fullmatch(v):
            raise ValueError(f"{quote(v)} is not a name: it names the run folder (runs/<UTC time>-<name>), so it "
                             "takes letters, digits, '.', '_' and '-', at most 64, the first a letter or digit")
        return v

    @field_validator("workloads", mode="before")
    @classmethod
    def _workload_list(cls, v):
        return {name: {} for name in v} if isinstance(v, list) else v  # [train, generate] shorthand

    @field_validator("workloads")
    @classmethod
    def _known_workloads(cls, v: dict) -> dict:
        unknown = sorted(set(v) - set(workloads.names()))
        if unknown:
            raise ValueError(f"unknown workload(s) {unknown}; allowed: {workloads.names()}")
        return v

    @field_validator("exclude")
    @classmethod
    def _exclude_keys(cls, v: list[dict]) -> list[dict]:
        for i, ex in enumerate(v):
            if set(ex) - EXCLUDE_KEYS:
                raise ValueError(f"entry {i} has unknown key(s) {sorted(set(ex) - EXCLUDE_KEYS)}; allowed keys: "
                                 f"{', '.join(sorted(EXCLUDE_KEYS))}")
        return v

    @model_validator(mode="after")
    def _workload_options(self):
        """Each workload's options against its declaration, an error per option at its own
        field (workloads.train.options.stepz), as pydantic names the others."""
        errors = []
        for name, entry in self.workloads.items():
            given = [(("options",), entry.options)] + [(("spec_options", spec), opts)
                                                        for spec, opts in entry.spec_options.items()]
            for where, opts in given:
                try:
                    workloads.check_options(name, opts)
                except workloads.OptionError as e:
                    errors += [_error("workload_option", ("workloads", name, *where, option), opts.get(option), msg)
                               for option, msg in e.problems]
        if errors:  # pydantic keeps a ValidationError raised in a validator as it is, locations included
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @field_validator("specs")
    @classmethod
    def _specs_resolve(cls, v: list[str]) -> list[str]:
        return _check_specs(v)

    @model_validator(mode="after")
    def _exclude_names_what_is_there(self):
        """An exclude entry whose value the matrix does not have, or that matches no cell,
        excludes nothing: a typo. Each is an error at its own field."""
        have = {"backend": set(self.backends) | {b for e in self.workloads.values() for b in e.backends or []},
                "workload": set(self.workloads), "dtype": set(self.dtypes), "host_class": set(self.host_classes),
                "spec": set(self.specs) | {s for hc in self.host_classes.values() for s in hc.specs or []}
                | {s for e in self.workloads.values() for s in e.specs or []}}
        errors = []
        for i, ex in enumerate(self.exclude):
            bad = [(k, v) for k, v in ex.items() if v not in have[k]]
            errors += [_error("exclude_value", ("exclude", i, k), v, f"{quote(v)} is no {k} of this matrix; its "
                              f"{k}s: {', '.join(sorted(map(str, have[k])))}") for k, v in bad]
            if not bad and not any(self._matches(ex, cell) for cell in self._product()):
                errors.append(_error("exclude_empty", ("exclude", i), ex, "matches no cell of this matrix "
                                     "(each value is there, but never together); remove it or fix it"))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_validator(mode="after")
    def _cross_checks(self):
        for name, hc in self.host_classes.items():
            try:
                _check_specs(hc.specs or [])
            except ValueError as e:
                raise ValueError(f"host_classes.{name}.specs: {e}") from None
            unknown = sorted(set(hc.workloads or []) - set(self.workloads))
            if unknown:
                raise ValueError(f"host_classes.{name}.workloads {unknown}: allowed are the matrix's "
                                 f"workloads {sorted(self.workloads)}")
        return self

    # --- expansion ---------------------------------------------------------------------------
    def cells(self) -> list[tuple[Cell, HostClass]]:
        """Every cell of the matrix with the host class that runs it, in a stable order: the
        repeats interleaved (every cell's repeat 0, then every cell's repeat 1, ...), so that
        load that comes and goes during a run hits every backend alike (reports/stats.py)."""
        coords = [c for c in self._product() if not any(self._matches(ex, c) for ex in self.exclude)]
        out = []
        for r in range(max((self.repeats_of(c["workload"]) for c in coords), default=1)):
            for c in coords:
                n = self.repeats_of(c["workload"])
                if r >= n:
                    continue
                hc, entry = self.host_classes[c["host_class"]], self.workloads[c["workload"]]
                options = {**entry.options, **entry.spec_options.get(c["spec"], {})}
                if n > 1:
                    options["repeat"] = r  # repeats are distinct cells with distinct ids
                out.append((Cell.make(c["backend"], c["workload"], resolve_spec(c["spec"]), dtype=c["dtype"],
                                      device=hc.device, host_class=c["host_class"], seed=c["seed"],
                                      options=options), hc))
        return out

    def repeats_of(self, workload: str) -> int:
        return self.workloads[workload].repeats or self.repeats

    def limits(self, hc: HostClass) -> Limits:
        """What one cell of host class hc may use in this matrix."""
        return hc.limits(self.timeout_s, self.compile_cache)

    def _product(self):
        """Each cell's coordinates (the keys exclude matches on, and the seed), before exclude."""
        for (hc_name, hc), (wl, entry), dtype, seed in itertools.product(
                self.host_classes.items(), self.workloads.items(), self.dtypes, self.seeds):
            if hc.workloads is not None and wl not in hc.workloads:
                continue
            backends = [b for b in (entry.backends or self.backends) if hc.backends is None or b in hc.backends]
            for backend, spec in itertools.product(backends, hc.specs or entry.specs or self.specs):
                yield dict(backend=backend, workload=wl, spec=spec, dtype=dtype, host_class=hc_name, seed=seed)

    @staticmethod
    def _matches(ex: dict, cell: dict) -> bool:
        return all(cell[k] == v for k, v in ex.items())


def _error(kind: str, loc: tuple, value, message: str) -> InitErrorDetails:
    """One error of a model validator at its own field, as pydantic names a field's own."""
    return InitErrorDetails(type=PydanticCustomError(kind, "{problem}", {"problem": message}), loc=loc, input=value)


def _check_specs(specs: list[str]) -> list[str]:
    for s in specs:
        try:
            resolve_spec(s)
        except GptbenchError as e:  # as a ValueError pydantic names the field
            raise ValueError(str(e)) from None
    return specs


def parse(text: str, source: str) -> Matrix:
    """A Matrix from YAML text; GptbenchError naming `source`, the field and what is allowed."""
    data = yamlfile.load(text, source)  # aliases bounded, a key given twice refused
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a YAML {type(data).__name__}"
        raise GptbenchError(f"{source}: a matrix is a YAML mapping with backends, workloads, specs, "
                            f"host_classes, ...; got {got}.")
    lines = _inherit_hosts(data)
    if lines:
        raise _invalid(source, lines)
    return validate(data, source)


def validate(data, source: str) -> Matrix:
    """A Matrix from its fields (a run directory's run.json holds them, hosts resolved);
    GptbenchError naming `source` and each field, as parse does."""
    try:
        return Matrix.model_validate(data)
    except ValidationError as e:
        raise _invalid(source, [f"  {cut('.'.join(str(p) for p in err['loc']) or '(top level)', FIELD_CHARS)}: "
                                f"{cut(_allowed(err), FIELD_CHARS)}" for err in e.errors()]) from None


def _invalid(source: str, lines: list[str]) -> GptbenchError:
    if len(lines) > MAX_ERROR_LINES:  # a screenful: the first ones show what is wrong
        lines[MAX_ERROR_LINES:] = [f"  ... and {len(lines) - MAX_ERROR_LINES} more"]
    return GptbenchError("\n".join([f"{source}: invalid matrix:", *lines]))


MAX_ERROR_LINES = 30


def _inherit_hosts(data: dict) -> list[str]:
    """Replace each host class named after an inventory host by that host, narrowed by the
    matrix's entry; the error lines of the entries that change the host instead."""
    classes = data.get("host_classes")
    if not isinstance(classes, dict):
        return []  # the schema says what is wrong
    lines, hosts = [], inventory.names()
    for name, given in classes.items():
        given = {} if given is None else given  # `lowram:` alone: the host as it is
        if name in hosts and isinstance(given, dict):
            try:
                classes[name] = inventory.load(name).narrowed(given)
            except inventory.NarrowingError as e:
                lines.append(f"  host_classes.{name}.{e.field}: {e}")
    return lines  # an ad-hoc class with `emulated` is the schema's: an unknown field


def _allowed(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field; allowed: " + ", ".join(_fields_at(err["loc"]))
    return err["msg"].removeprefix("Value error, ")


def _fields_at(loc: tuple) -> list[str]:
    """The field names allowed where an unknown one was found."""
    model: type[BaseModel] = Matrix
    for part in loc[:-1]:
        if part == "host_classes":
            return [*HostClass.model_fields, "emulated (inventory hosts)"]
        if part == "workloads":
            return list(WorkloadEntry.model_fields)
    return list(model.model_fields)


def load(path) -> tuple[Matrix, str]:
    """(matrix, its text as given) from a YAML file."""
    p = Path(path)
    if not p.is_file():
        raise GptbenchError(f"matrix file {p} " + ("is a folder" if p.is_dir() else "does not exist") +
                            "; give a matrix YAML file (docs/matrix.md).")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GptbenchError(f"matrix file {p} is not UTF-8 text (byte {e.start}: {e.reason}); a matrix is a "
                            "YAML file (docs/matrix.md).") from None
    except OSError as e:
        raise GptbenchError(f"cannot read matrix file {p}: {e.strerror or e}.") from None
    return parse(text, str(p)), text


def default_matrix() -> Matrix:
    """The embedded default: every CPU backend and every workload this install has, on one
    CPU machine with no GPU and no data file. Workloads not installed are left out; a
    workload the file does not name runs with its declared defaults."""
    data = yamlfile.load(DEFAULT_PATH.read_text(), str(DEFAULT_PATH))
    present = workloads.names()
    named = {k: v for k, v in data["workloads"].items() if k in present}
    data["workloads"] = {**named, **{k: {} for k in present if k not in named}}
    for hc in data["host_classes"].values():
        if hc.get("workloads"):
            hc["workloads"] = [w for w in hc["workloads"] if w in present]
    return parse(yaml.safe_dump(data), "the embedded default matrix")
