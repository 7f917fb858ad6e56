"""The backend contract as code: whether a class found by name (a built-in, an installed
plugin, a `module:Class` path) can be called the way the suite calls it, checked before it
is used, so a plugin that does not fit gets one paragraph naming the method and the
signature the suite expects (exit 2), never a traceback from deep inside a workload.

docs/adding-a-backend.md lists the same contract in prose.
"""

from __future__ import annotations

import inspect

from backends.base import Backend
from gptspec.errors import BackendError

# method -> (how the suite calls it, a sample call's positional arguments after self/cls)
METHODS = {
    "unavailable": ("unavailable(cls, device, dtype) -> str | None, a classmethod", ("cpu", "float32")),
    "__init__": ("__init__(self, spec, device='cpu', dtype='float32', optim=None)", (None, "cpu", "float32")),
    "load_state": ("load_state(self, params)", (None,)),
    "state": ("state(self) -> dict of arrays", ()),
    "forward": ("forward(self, idx, targets=None) -> (logits, loss)", (None, None)),
    "loss": ("loss(self, idx, targets) -> float", (None, None)),
    "backward": ("backward(self) -> dict of gradients", ()),
    "step": ("step(self, lr) -> gradient norm", (None,)),
    "train_step": ("train_step(self, x, y, lr) -> loss", (None, None, None)),
    "sync": ("sync(self)", ()),
    "prefill": ("prefill(self, idx) -> logits (B, V)", (None,)),
    "decode": ("decode(self, tok) -> logits (B, V)", (None,)),
    "generate": ("generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, seed=0, on_logits=None, "
                 "window='refill', vocab_limit=None)", (None, None)),
}
GENERATE_KEYWORDS = ("temperature", "top_k", "seed", "on_logits", "window", "vocab_limit")  # what the suite passes


def check(cls, source: str) -> None:
    """Raise BackendError when `cls` (loaded from `source`) does not fit the contract."""
    where = f"backend {source!r}"
    if not isinstance(cls, type) or not issubclass(cls, Backend):
        raise BackendError(f"{where} is {cls!r}, not a subclass of backends.base.Backend: a backend class "
                           "subclasses it and implements the methods in docs/adding-a-backend.md.")
    if not isinstance(getattr(cls, "name", None), str):
        raise BackendError(f"{where}: the class attribute `name` must be a string (the backend's label in "
                           "records and reports).")
    for method, (expected, sample) in METHODS.items():
        fn = inspect.getattr_static(cls, method, None)
        if method == "unavailable" and not isinstance(fn, classmethod):
            raise BackendError(f"{where}: {cls.__name__}.unavailable must be a classmethod; the suite calls "
                               f"it before making an instance. Expected {expected}.")
        bound = getattr(cls, method)
        if not callable(bound):  # e.g. an attribute assigned over the method
            raise BackendError(f"{where}: {cls.__name__}.{method} is not a method; expected {expected}.")
        try:
            sig = inspect.signature(bound)
        except (TypeError, ValueError):  # builtins and C extensions may hide it: trust them
            continue
        args = sample if method == "unavailable" else (None, *sample)
        kwargs = dict.fromkeys(GENERATE_KEYWORDS) if method == "generate" else {}
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise BackendError(f"{where}: {cls.__name__}.{method}{sig} cannot be called as the suite calls it "
                               f"({e}). Expected {expected}; see docs/adding-a-backend.md.") from None


def label(cls) -> str:
    """A backend's label in records and reports: the `name` its own class sets, else the class's
    name (a subclass that does not set one is not the backend it inherits from)."""
    return cls.__dict__.get("name") or cls.__name__


def describe(obj) -> dict:
    """What a record says of the implementation it measured: the class's name (its label in
    reports, however the cell named it), where it lives, and the versions it reports
    (the optional classmethod versions() -> {library: version})."""
    cls = obj if isinstance(obj, type) else type(obj)
    versions = getattr(cls, "versions", None)
    try:
        found = dict(versions()) if callable(versions) else {}
    except Exception as e:  # noqa: BLE001 -- a broken hook costs its own line, not the cell
        found = {"error": f"versions() raised {type(e).__name__}: {e}"}
    return {"name": label(cls), "class": f"{cls.__module__}:{cls.__qualname__}",
            "versions": found}
