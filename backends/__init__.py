"""Backends: one module per implementation of the spec (see backends/base.py), and the
registry of every implementation the suite knows.

A registry entry is one name with everything the suite needs to know about it: the model
it offers (a Backend class: train, generate and conformance cells), the attention op it
offers (attention cells, backends/attention_ops.py), or both (numpy, triton); its
framework (what a cell of it pays for: memory overhead and heavy modules, read by
suite/memory.py and suite/cell.py); and the pip extra that installs it. So one word means
one thing in every cell, and adding a built-in is one entry plus its module.

load(name) finds a model class by registry name, by entry point (group
`gptbench.backends`, for installed plugins) or by a `module:Class` path; entry(name) gives
a plugin an entry made from its class (its `framework` attribute, docs/adding-a-backend.md).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass

from gptspec.errors import BackendError
from gptspec.limits import quote


@dataclass(frozen=True)
class Framework:
    """What a cell pays for besides the tensors of its workload."""
    name: str
    overhead_mb: float              # host RAM of the interpreter, libraries, corpus, pools, caches
    heavy_modules: tuple[str, ...]  # top-level modules a cell of it imports (the record's heavy_modules)


# overhead_mb is measured: peak RSS minus the tensor estimate of train cells on tiny, lumgpt
# and proust (4 steps, float32, `gptbench cell ... --json`; Linux x86-64, CPython 3.11,
# numpy 2.4, torch 2.13 CPU, jax 0.10.2, mlx-cpu 0.32.4); with it, measured / estimated
# stays within 0.87-1.09 for numpy, torch and jax (docs/records.md), not for mlx (below).
NUMPY = Framework("numpy", 45.0, ("numpy",))  # 35 MB after imports, +10 MB corpus and temporaries
# 222 MB after import, ~100 MB more once autograd and oneDNN run
TORCH = Framework("torch", 320.0, ("torch",))
# inductor: 400-510 MB (warm or cold inductor cache, tiny spec; its compile workers are
# separate processes, in peak_rss_sampled_mb)
COMPILE = Framework("compile", 450.0, ("torch",))
# torch's number (the Triton backend is the torch model with kernels swapped; Triton's own
# import is not measured apart: on a CPU it runs only in its interpreter)
TRITON = Framework("triton", TORCH.overhead_mb, ("torch", "triton"))
# 161 MB after import, ~220 MB after a first jitted op; with the train step's XLA
# compilation 414, 443, 428 MB on tiny, lumgpt, proust (measured / estimated 0.96, 1.03, 1.00)
JAX = Framework("jax", 430.0, ("jax",))
# 36 MB after setup; then 55, 101, 198 MB on tiny, lumgpt, proust: MLX holds about twice
# the spec's tensor estimate, which no fixed overhead fits. The largest, so the estimate
# is not below the peak up to proust (measured / estimated 0.29, 0.64, 0.99).
MLX = Framework("mlx", 200.0, ("mlx",))
FRAMEWORKS = {f.name: f for f in (NUMPY, TORCH, COMPILE, TRITON, JAX, MLX)}


@dataclass(frozen=True)
class Entry:
    name: str
    framework: Framework
    extra: str | None               # the pip extra that installs it; None: gptbench's core
    model: str | None = None        # "module:Class" of a backends.base.Backend
    attention: str | None = None    # "module:Class" of an attention op (backends/attention_ops.py)

    def __post_init__(self):
        # a missing framework used to mean "torch" silently (jax and mlx got torch's overhead)
        if not isinstance(self.framework, Framework):
            raise BackendError(f"registry entry {self.name!r} has no framework (a backends.Framework: its "
                               f"memory overhead and heavy modules), got {self.framework!r}")
        if not (self.model or self.attention):
            raise BackendError(f"registry entry {self.name!r} offers neither a model nor an attention op")


_OPS = "backends.attention_ops"
# modules are imported only when asked for, so a NumPy cell on a low-RAM box never imports torch
REGISTRY = {e.name: e for e in (
    Entry("numpy", NUMPY, None, "backends.numpy_ref:NumpyBackend", f"{_OPS}:NumpyAttention"),
    Entry("torch", TORCH, "torch", "backends.torch_eager:TorchBackend"),
    Entry("compile", COMPILE, "torch", "backends.torch_compile:CompileBackend"),
    Entry("triton", TRITON, "triton", "backends.triton_attn:TritonBackend", f"{_OPS}:TritonAttention"),
    Entry("jax", JAX, "jax", "backends.jax_backend:JaxBackend"),
    Entry("mlx", MLX, "mlx", "backends.mlx_backend:MlxBackend"),
    Entry("math", TORCH, "torch", attention=f"{_OPS}:TorchMathAttention"),
    Entry("sdpa", TORCH, "torch", attention=f"{_OPS}:TorchSDPAAttention"),
    Entry("sdpa-flash", TORCH, "torch", attention=f"{_OPS}:SDPAFlash"),
    Entry("sdpa-efficient", TORCH, "torch", attention=f"{_OPS}:SDPAEfficient"),
    Entry("sdpa-cudnn", TORCH, "torch", attention=f"{_OPS}:SDPACudnn"),
    Entry("sdpa-math", TORCH, "torch", attention=f"{_OPS}:SDPAMath"),
)}

ENTRY_POINT_GROUP = "gptbench.backends"
# what a plugin's class that declares no `framework` is taken for (the suite's main framework)
PLUGIN_DEFAULT_FRAMEWORK = TORCH


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _models() -> list[str]:
    return [n for n, e in REGISTRY.items() if e.model]


def names() -> list[str]:
    """Registry names that offer a model, then installed plugins."""
    return _models() + [n for n in _entry_points() if n not in REGISTRY]


def attention_names() -> list[str]:
    return [n for n, e in REGISTRY.items() if e.attention]


def heavy_modules() -> list[str]:
    """Every registry framework's heavy modules, once each."""
    return list(dict.fromkeys(m for e in REGISTRY.values() for m in e.framework.heavy_modules))


def entry(name: str) -> Entry:
    """The registry entry of a name; for a plugin (entry point or module:Class), one made
    from its class: its `framework` attribute, a FRAMEWORKS name or a Framework, or by
    default PLUGIN_DEFAULT_FRAMEWORK."""
    if name in REGISTRY:
        return REGISTRY[name]
    declared = getattr(load(name), "framework", None) or PLUGIN_DEFAULT_FRAMEWORK
    if isinstance(declared, str):
        if declared not in FRAMEWORKS:
            raise BackendError(f"backend {name!r} declares framework {declared!r}; known: "
                               f"{', '.join(FRAMEWORKS)}, or give a backends.Framework(name, overhead_mb, "
                               "heavy_modules)")
        declared = FRAMEWORKS[declared]
    return Entry(name, declared, None, model=name)


def check_name(name: str) -> None:
    """BackendError unless `name` can name a backend here: a registry name (a model or an
    attention op), an installed entry point, or a `module:Class` whose top-level package is
    on the path (looked up, not imported: a matrix naming a torch plugin is parsed without
    torch). A backend that exists but cannot run on a host passes: its cells record
    `unavailable` there. A typo is named with the closest known name."""
    if name in REGISTRY:
        return
    if ":" in name:
        module, _, class_name = name.partition(":")
        top = module.split(".")[0]
        if top.isidentifier() and class_name and _findable(top):
            return
        raise BackendError(f"backend {quote(name)}: no package {quote(top)} can be imported here (a 'package.module:"
                           "ClassName' path names an installed package or one in the current folder).")
    eps = _entry_points()
    if name in eps:
        return
    known = list(REGISTRY) + [n for n in eps if n not in REGISTRY]
    close = difflib.get_close_matches(name, known, n=1)
    raise BackendError(f"unknown backend {quote(name)}" + (f" (did you mean {close[0]!r}?)" if close else "")
                       + f"; known: {', '.join(known)}, an installed plugin (entry-point group '{ENTRY_POINT_GROUP}') "
                       "or a 'package.module:ClassName' path.")


def _findable(top: str) -> bool:
    """A top-level module on sys.path or in the current folder (load() looks there too);
    finding a top-level module runs none of its code."""
    try:
        if importlib.util.find_spec(top) is not None:
            return True
    except (ImportError, ValueError):
        return False
    return importlib.machinery.PathFinder.find_spec(top, [os.getcwd()]) is not None


def load(name_or_path: str):
    """The backend class for a registry name, an entry point name or 'module:Class', checked
    against the contract (backends/contract.py). Whatever goes wrong -- no such module, a
    module that raises on import, a class that does not fit -- is a BackendError that says so."""
    from backends import contract

    if name_or_path in REGISTRY:
        target = REGISTRY[name_or_path].model
        if target is None:
            raise BackendError(f"{name_or_path!r} is an attention op (attention cells only), not a model; "
                               f"models: {', '.join(_models())}")
    elif ":" in name_or_path:
        target = name_or_path
        if os.getcwd() not in sys.path:  # the `gptbench` script, unlike `python -m`, does not
            sys.path.append(os.getcwd())  # look in the current directory: a local file is found
    else:
        eps = _entry_points()
        if name_or_path not in eps:
            raise BackendError(
                f"unknown backend {name_or_path!r}. Built-in: {', '.join(_models())}; installed "
                f"plugins (entry-point group '{ENTRY_POINT_GROUP}'): {', '.join(eps) or 'none'}; "
                "or give a 'package.module:ClassName' path."
            )
        target = eps[name_or_path].value
    cls = _import(target, name_or_path)
    contract.check(cls, name_or_path)
    return cls


def load_attention(name: str):
    """The attention op class of a registry name."""
    target = REGISTRY[name].attention if name in REGISTRY else None
    if target is None:
        raise BackendError(f"no attention provider {name!r}; known: {', '.join(attention_names())}")
    return _import(target, name)


def _import(target: str, given: str):
    """The class at 'module:Class'; `given` is how the user named it, for the message."""
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise BackendError(f"backend module {module_name!r} not found (from {target!r}).") from None
        raise BackendError(f"backend {given!r} needs {e.name}, which is not installed here (module "
                           f"{module_name!r} imports it).") from None
    except Exception as e:  # noqa: BLE001 -- a plugin's own import error, told in one paragraph
        raise BackendError(f"backend {given!r}: importing {module_name!r} raised "
                           f"{type(e).__name__}: {e}") from None
    try:
        return functools.reduce(getattr, class_name.split("."), module)  # an entry point may name Outer.Cls
    except AttributeError:
        raise BackendError(f"module {module_name!r} has no class {class_name!r} (from {target!r}).") from None
