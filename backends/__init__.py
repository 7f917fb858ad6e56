"""Backends: one module per implementation of the spec (see backends/base.py).

load(name) finds a backend class by built-in name, by entry point (group
`gptbench.backends`, for installed plugins) or by a `module:Class` path.
"""

from __future__ import annotations

import importlib
import os
import sys

from gptspec.errors import BackendError

# built-in name -> "module:Class"; modules are imported only when asked for, so a NumPy
# cell on a low-RAM box never imports torch.
BUILTIN = {
    "numpy": "backends.numpy_ref:NumpyBackend",
    "torch": "backends.torch_eager:TorchBackend",
    "compile": "backends.torch_compile:CompileBackend",
    "triton": "backends.triton_attn:TritonBackend",
    "jax": "backends.jax_backend:JaxBackend",
    "mlx": "backends.mlx_backend:MlxBackend",
}

ENTRY_POINT_GROUP = "gptbench.backends"


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Built-in names, then installed plugins."""
    return list(BUILTIN) + [n for n in _entry_points() if n not in BUILTIN]


def load(name_or_path: str):
    """The backend class for a built-in name, an entry point name or 'module:Class', checked
    against the contract (backends/contract.py). Whatever goes wrong -- no such module, a
    module that raises on import, a class that does not fit -- is a BackendError that says so."""
    from backends import contract

    if name_or_path in BUILTIN:
        target = BUILTIN[name_or_path]
    elif ":" in name_or_path:
        target = name_or_path
        if os.getcwd() not in sys.path:  # the `gptbench` script, unlike `python -m`, does not
            sys.path.append(os.getcwd())  # look in the current directory: a local file is found
    else:
        eps = _entry_points()
        if name_or_path not in eps:
            raise BackendError(
                f"unknown backend {name_or_path!r}. Built-in: {', '.join(BUILTIN)}; installed "
                f"plugins (entry-point group '{ENTRY_POINT_GROUP}'): {', '.join(eps) or 'none'}; "
                "or give a 'package.module:ClassName' path."
            )
        target = eps[name_or_path].value
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise BackendError(f"backend module {module_name!r} not found (from {target!r}).") from None
        raise BackendError(f"backend {name_or_path!r} needs {e.name}, which is not installed here (module "
                           f"{module_name!r} imports it).") from None
    except Exception as e:  # noqa: BLE001 -- a plugin's own import error, told in one paragraph
        raise BackendError(f"backend {name_or_path!r}: importing {module_name!r} raised "
                           f"{type(e).__name__}: {e}") from None
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        raise BackendError(f"module {module_name!r} has no class {class_name!r} (from {target!r}).") from None
    contract.check(cls, name_or_path)
    return cls
