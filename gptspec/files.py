"""Writing a file so that a crash, a kill or a full disk never leaves half of one: the text
goes to a temporary file beside the target, is fsynced, then renamed over it (a rename
within one directory is atomic). Records, run metadata, caches and reports all use it."""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path


def write_text_atomic(path, text: str) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave the half-written temporary behind
        raise
    return path


@contextmanager
def replacing(path):
    """A temporary path beside `path` for any writer (torch.save, safetensors, pickle): fsynced
    and renamed over `path` when the block ends, removed if it raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
