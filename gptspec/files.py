"""Writing a file so that a crash, a kill or a full disk never leaves half of one: the text
goes to a temporary file beside the target, is fsynced, then renamed over it (a rename
within one directory is atomic). Records, run metadata, caches and reports all use it."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path


def cache_dir() -> Path:
    """$GPTBENCH_CACHE_DIR, else $XDG_CACHE_HOME/gptbench, else ~/.cache/gptbench: this
    host's calibration and shared pretrained weights."""
    if os.environ.get("GPTBENCH_CACHE_DIR"):
        return Path(os.environ["GPTBENCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gptbench"


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path` to write the whole file to (by any library's own
    writer: safetensors, torch.save); on success it is fsynced and renamed over `path`, on
    any failure removed, so `path` is the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave the half-written temporary behind
        raise


def write_text_atomic(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_private(path, text: str) -> Path:
    """A secret (a token): mode 0600 from the moment the file exists, never readable by others
    in between; a new file only (an existing one is an error, not silently replaced)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path, obj, indent: int | None = None) -> Path:
    """obj as JSON; NumPy scalars and arrays become numbers and lists, and non-finite floats
    the strings 'nan', 'inf', '-inf' (JSON has none of them)."""
    return write_text_atomic(path, json.dumps(finite(obj), allow_nan=False, default=jsonable, indent=indent))


def jsonable(x):
    """json.dumps' default= for NumPy scalars and arrays."""
    if hasattr(x, "tolist"):
        return finite(x.tolist())
    if hasattr(x, "item"):
        return finite(x.item())
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def finite(x):
    """JSON has no NaN/inf: a diverged loss is written as the string 'nan' / 'inf'."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x
