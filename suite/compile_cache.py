"""Which compile caches a cell starts with (docs/records.md, `compile_cache`): a torch.compile
cell that finds its graphs in Inductor's on-disk cache trains to its target in a fraction of
the time of one that compiles them, so a verdict that depends on what ran on the machine
before is no verdict. The policy is the matrix's `compile_cache`:

  fresh  (the default) every cell gets its own empty cache folders, inside its temp folder
         and removed with it: every compiling backend starts cold, every repeat alike;
  host   the machine's caches as they are (the frameworks' defaults, or what the
         environment names): faster, and the record says whether they held anything.

The caches: Inductor's (TORCHINDUCTOR_CACHE_DIR: FX graphs, AOTAutograd, its Triton code) and
Triton's (TRITON_CACHE_DIR), both on disk by default; jax's persistent compilation cache is
off unless JAX_COMPILATION_CACHE_DIR names one, so `fresh` unsets it; mlx's `mx.compile` and
jax's in-memory cache live and die with the cell's process.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from pathlib import Path

POLICIES = ("fresh", "host")
FRESH_VARS = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
UNSET_WHEN_FRESH = ("JAX_COMPILATION_CACHE_DIR",)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "user"


def host_dirs(env: dict) -> list[Path]:
    """The cache folders a cell would use under policy `host`: the environment's, else the
    frameworks' defaults (jax's only when named)."""
    dirs = [Path(env.get("TORCHINDUCTOR_CACHE_DIR") or Path(tempfile.gettempdir(), f"torchinductor_{_user()}")),
            Path(env.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")]
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        dirs.append(Path(env["JAX_COMPILATION_CACHE_DIR"]))
    return dirs


def _holds_anything(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError:
        return False


def environment(policy: str, folder: Path, env: dict) -> str:
    """Set the cell's cache variables in `env` (in place) under `policy`, with `folder` the cell's
    own temp folder; return the caches' state at the start: 'cold' or 'warm'."""
    if policy not in POLICIES:
        raise ValueError(f"compile_cache {policy!r}: allowed are {', '.join(POLICIES)}")
    if policy == "fresh":
        for var, name in FRESH_VARS.items():
            path = Path(folder, "compile-cache", name)
            path.mkdir(parents=True, exist_ok=True)
            env[var] = str(path)
        for var in UNSET_WHEN_FRESH:
            env.pop(var, None)
        return "cold"
    return "warm" if any(_holds_anything(d) for d in host_dirs(env)) else "cold"
