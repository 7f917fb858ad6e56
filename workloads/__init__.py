"""Workloads: what a cell makes a backend do. Each module or package `workloads.<name>` is one
workload and declares itself (docs/adding-a-workload.md):

    OPTIONS = (Option(...), ...)        its cell options: typed, with defaults and ranges
    METRICS = (Metric(...), ...)        its scalar metrics: units, quartiles, where they are shown
    run(target, cell) -> metrics dict   (a "status" key, if any: ok, diverged, nonconformant)
    memory_estimate(cell) -> bytes dict (spec.memory_estimate style, "total" included)
    prepare(cell) -> make               (optional; default: prepare_backend) make() -> target
    summary_lines(metrics) -> [str]     (optional: lines `gptbench cell` prints after the metrics)

A workload made of other cells (frontier: its probes) declares run(target, cell, run_cell):
it runs in the cell's supervisor instead of a child (suite/runner.py), target is None, and
run_cell(sub_cell) -> record dict measures a cell in its own child under the same limits.

The matrix validates a workload's options against OPTIONS at parse time, `gptbench cell
--option` before it spawns the child, and the workload reads them through options(cell).
The report's cells table, compare and the summaries read METRICS.

prepare checks, allocating nothing, and raises Unavailable when this host cannot run the
cell (the cell becomes `unavailable` with the reason); the runner caps the GPU between
prepare and make(). Modules import their frameworks lazily (no torch at the top), and this
file imports nothing heavy: the low-RAM box's cell child imports it.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from gptspec.errors import GptbenchError

EXPORTS = ("OPTIONS", "METRICS", "run", "memory_estimate")
_TYPE_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings")}


class Unavailable(Exception):
    """This host cannot run the cell (missing device, dtype, library); the message says why."""


class OptionError(GptbenchError):
    """Options a workload does not accept: problems are (option, what is wrong and what is allowed)."""

    def __init__(self, workload: str, problems: list[tuple[str, str]]):
        self.workload, self.problems = workload, problems
        super().__init__("; ".join(f"workload {workload!r} option {name!r}: {msg}" for name, msg in problems))


@dataclass(frozen=True)
class Option:
    """One cell option. `type` is int, float, str, list[int] or list[str], with `| None` where
    null is a value of its own (a default of None means: the workload decides, see help)."""
    name: str
    type: Any
    # a value, or a function (spec dict, the options declared before it) -> value whose
    # docstring says what it computes (docs/records.md shows it)
    default: Any = None
    help: str = ""
    min: float | None = None  # inclusive; a list's bounds hold for each item
    max: float | None = None
    choices: tuple | Callable[[], list] | None = None  # allowed values (a list's items); a function: known names

    def __post_init__(self):  # a declaration the checks below cannot read fails at import, not in a cell
        if self._shape()[0] not in _TYPE_NAMES:
            raise TypeError(f"option {self.name!r}: type {self.type!r} is not int, float, str or a list of one "
                            "(with | None where null is allowed)")

    def _shape(self) -> tuple[type, bool, bool]:
        """(item type, is a list, accepts None)."""
        t = self.type
        args = typing.get_args(t) if isinstance(t, types.UnionType) else (t,)
        nullable = type(None) in args
        (t,) = [a for a in args if a is not type(None)]
        if typing.get_origin(t) is list:
            return typing.get_args(t)[0], True, nullable
        return t, False, nullable

    def _choices(self):
        return self.choices() if callable(self.choices) else self.choices

    def expected(self) -> str:
        """What a value must be, in words: the error messages and docs/records.md say this."""
        base, is_list, nullable = self._shape()
        singular, plural = _TYPE_NAMES[base]
        choices = self._choices()
        if choices:
            text = ("a non-empty list of " if is_list else "one of ") + ", ".join(map(repr, choices))
        else:
            text = f"a non-empty list of {plural}" if is_list else singular
            if self.min is not None and self.max is not None:
                text += f" in [{self.min}, {self.max}]"
            elif self.min is not None:
                text += f" >= {self.min}"
            elif self.max is not None:
                text += f" <= {self.max}"
        return text + (" or null" if nullable else "")

    def check(self, value):
        """The value, typed (an int where a number is expected becomes a float); ValueError saying
        what is expected otherwise."""
        base, is_list, nullable = self._shape()
        if value is None and nullable:
            return None
        if is_list and not (isinstance(value, list) and value):
            raise ValueError(self._wrong(value))
        items = [self._item(base, v) for v in (value if is_list else [value])]
        if None in items:
            raise ValueError(self._wrong(value))
        return items if is_list else items[0]

    def _item(self, base: type, v):
        """The item typed, or None when it is not allowed."""
        if isinstance(v, bool) or not isinstance(v, (int, float) if base is float else base):
            return None
        v = base(v)
        choices = self._choices()
        if choices and v not in choices:
            return None
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            return None
        return v

    def _wrong(self, value) -> str:
        msg = f"expected {self.expected()}, got {value!r}"
        if isinstance(value, str) and self._shape()[0] is float:
            try:
                float(value)
                msg += " (YAML 1.1 reads a number like 1e-3 as a string: write 1.0e-3)"
            except ValueError:
                pass
        return msg

    def default_for(self, spec: dict, before: dict):
        if callable(self.default):
            return self.default(spec, before)
        return copy.deepcopy(self.default)  # a list default is never shared between cells


@dataclass(frozen=True)
class Metric:
    """A scalar of a workload's metrics, as the report's cells table, compare and the summaries
    read it. A median over samples has a spread: its quartiles, either kept in the record
    (`quartiles`) or computed by the report from the samples (`samples`)."""
    name: str  # compare's name for it; also its record key unless `key` is given
    unit: str  # "tokens/s", "ms", "s", "nats", "FLOP/s", "tokens", "1" (a plain ratio)
    help: str = ""
    key: str | None = None  # the record key of its value (a median: the samples' middle)
    quartiles: tuple[str, str] | None = None  # record keys of its q1 and q3
    samples: Callable[[dict], list] | None = None  # metrics dict -> the samples it is the median of
    compare: bool = False  # a row of `gptbench report --compare`
    summary: str | None = None  # its part of the summaries, a format of the value, e.g. "tokens/s {:,.0f}"

    @property
    def column(self) -> str:
        return self.key or self.name

    @property
    def spread(self) -> tuple[str, str] | None:
        """The cells table's columns of its q1 and q3, when it has a spread."""
        if self.quartiles:
            return self.quartiles
        return (f"{self.name}_q1", f"{self.name}_q3") if self.samples else None


def names() -> list[str]:
    """Every workload: each module or package directly under workloads/."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def _gates() -> list[str]:
    """The workloads a gate can be: those that run in a cell's child (not made of cells)."""
    return [n for n in names() if not runs_cells(load(n))]


# the options the cell runner handles for every workload (suite/cell.py, the matrix); threads are not an
# option but part of the cell's limits (suite/record.py)
RUNNER_OPTIONS = (
    Option("gate", str | None, None, "a workload run first on the same backend, with its own defaults; a gate "
           "that is not ok ends the cell with its status", choices=_gates),
    Option("repeat", int | None, None, "set by the matrix when repeats > 1: repeats are distinct cells with "
           "distinct ids", min=0),
)


def load(name: str):
    """The module of workload `name`, checked to declare itself."""
    try:
        module = importlib.import_module(f"workloads.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"workloads.{name}":
            raise GptbenchError(f"unknown workload {name!r}; known: {', '.join(names())}.") from None
        raise
    missing = [x for x in EXPORTS if not hasattr(module, x)]
    if missing:
        raise GptbenchError(f"workloads.{name} is not a workload: it lacks {', '.join(missing)} "
                            "(docs/adding-a-workload.md).")
    return module


def runs_cells(module) -> bool:
    """Whether a workload module is made of other cells: its run takes `run_cell`."""
    import inspect

    return "run_cell" in inspect.signature(module.run).parameters


def metrics(name) -> tuple[Metric, ...]:
    """The metrics workload `name` declares; none for a name this install lacks (an old run's record)."""
    return load(name).METRICS if name in names() else ()


def check_options(workload: str, raw: dict) -> dict:
    """The workload's own options among `raw` (a cell's), typed; OptionError naming every
    unknown option and every value of the wrong type or out of range. Runner options are
    checked too, and left out."""
    declared = {o.name: o for o in load(workload).OPTIONS}
    runner = {o.name: o for o in RUNNER_OPTIONS}
    out, problems = {}, []
    for name, value in raw.items():
        option = declared.get(name) or runner.get(name)
        if option is None:
            problems.append((name, f"unknown option; allowed: {', '.join([*declared, *runner])}"))
            continue
        try:
            typed = option.check(value)
        except ValueError as e:
            problems.append((name, str(e)))
            continue
        if name in declared:
            out[name] = typed
    if problems:
        raise OptionError(workload, problems)
    return out


def options(cell) -> dict:
    """Every option of the cell's workload: the cell's, typed, and the declared defaults for
    the rest (in declaration order: a default may depend on the options before it)."""
    given = check_options(cell.workload, cell.options)
    out = {}
    for option in load(cell.workload).OPTIONS:
        out[option.name] = given[option.name] if option.name in given else option.default_for(cell.spec, out)
    return out


def prepare_backend(cell, **ctor_kwargs):
    """A constructor of the cell's backend on its device and dtype (and ctor_kwargs), or
    Unavailable."""
    import backends

    try:
        cls = backends.load(cell.backend)
    except ImportError as e:  # the backend's own dependency (torch, triton) is not installed
        raise Unavailable(f"backend {cell.backend!r} needs {e.name or e}, which is not installed here") from None
    except GptbenchError as e:
        raise Unavailable(str(e)) from None
    reason = cls.unavailable(cell.device, cell.dtype)
    if reason:
        raise Unavailable(reason)
    return lambda: cls(cell.spec_obj(), device=cell.device, dtype=cell.dtype, **ctor_kwargs)
