"""Canonical weights: a flat dict of NumPy arrays with nanoGPT names, torch (out, in) layout.

init_params draws each tensor from its own stream (seed, crc32(name)), so the numbers of a
tensor depend only on the seed, its name and its shape: identical on every machine and
backend. Files are safetensors with the spec (and optionally the tokenizer) in the metadata;
a training run's AdamW state goes beside them (save_optimizer_state). nanoGPT's ckpt.pt
folders: gptspec/nanogpt.py.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

from gptspec.errors import WeightsError
from gptspec.files import atomic_path
from gptspec.limits import MAX_SAFETENSORS_HEADER, QUOTE_CHARS, SAFETENSORS_READ_FACTOR, fits, not_a_file, quote
from gptspec.optim import AdamWConfig
from gptspec.spec import GPTSpec

INIT_STD = 0.02


def init_params(spec: GPTSpec, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """nanoGPT init: normal(0, 0.02); residual projections (c_proj) 0.02/sqrt(2·n_layer);
    biases 0; LayerNorm weight 1."""
    params = {}
    resid_std = INIT_STD / math.sqrt(2 * spec.n_layer)
    for name, shape in spec.param_shapes().items():
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            arr = np.ones(shape)
        elif name.endswith(".bias"):
            arr = np.zeros(shape)
        else:
            std = resid_std if name.endswith("c_proj.weight") else INIT_STD
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            arr = rng.standard_normal(shape) * std
        params[name] = np.ascontiguousarray(arr, dtype=dtype)
    return params


def check_params(params: dict[str, np.ndarray], spec: GPTSpec, source: str = "weights") -> None:
    """Raise WeightsError naming every missing, unexpected or mis-shaped tensor."""
    check_shapes({n: tuple(a.shape) for n, a in params.items()}, spec, source)
    bad = [n for n, a in params.items() if not np.all(np.isfinite(a))]
    if bad:
        raise WeightsError(f"{source} holds non-finite values (NaN or inf) in {_few(bad)}.")


def check_shapes(shapes: dict[str, tuple], spec: GPTSpec, source: str = "weights") -> None:
    """check_params on names and shapes alone: what a safetensors header declares is
    checked with it before a byte of its tensors is read."""
    expected = spec.param_shapes()
    missing = [n for n in expected if n not in shapes]
    unexpected = [n for n in shapes if n not in expected]
    wrong = [f"{n}: {tuple(shapes[n])} (spec wants {expected[n]})"
             for n in expected if n in shapes and tuple(shapes[n]) != expected[n]]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_few(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) with the wrong shape: {_few(wrong)}")
    if problems:
        raise WeightsError(
            f"{source} does not match spec {quote(spec.name)} ({spec.to_json()}): "
            + "; ".join(problems)
            + ". Pass the spec the weights were made with (it is stored in gptbench files), "
            "or re-create the weights for this spec."
        )


def _few(items, n=4) -> str:
    items = [quote(i)[1:-1] if len(i) > QUOTE_CHARS else i for i in items]  # a name from a file: bounded
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# --- safetensors ------------------------------------------------------------------------
def save_safetensors(path, params: dict[str, np.ndarray], spec: GPTSpec,
                     extra_metadata: dict | None = None) -> Path:
    from safetensors.numpy import save_file

    check_params(params, spec, source="params to save")
    metadata = {"format": "gptbench", "spec": spec.to_json()}
    for key, value in (extra_metadata or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({n: np.ascontiguousarray(a) for n, a in params.items()}, str(tmp), metadata=metadata)
    return path


# safetensors dtypes and their bytes per element (a header's declared size is shape x these)
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def read_header(path) -> tuple[dict[str, tuple], dict[str, str]]:
    """({name: shape}, metadata) of a safetensors file from its header alone, which is
    checked against the file before anything else is read: a header within
    MAX_SAFETENSORS_HEADER, every tensor's declared bytes (shape x dtype) equal to its byte
    range, the ranges inside the file and apart. A header that declares more than the file
    holds (a 2 GB tensor in a sparse file of a few bytes on disk) is refused here."""
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise WeightsError(f"weights file {path} {problem}.")
    size = path.stat().st_size

    def bad(why: str):
        return WeightsError(f"{path} is not a readable safetensors file ({why}).")

    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes: shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise bad(f"its header declares {n:,} bytes; the file has {size:,} and a header is at most "
                      f"{MAX_SAFETENSORS_HEADER:,}")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError) as e:
            raise bad(f"its header is not JSON: {quote(str(e))}") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("its __metadata__ is not an object of strings")
    data, shapes, ranges = size - 8 - n, {}, []
    for name, t in header.items():
        dtype, shape, offsets = (t.get(k) for k in ("dtype", "shape", "data_offsets")) if isinstance(t, dict) \
            else (None, None, None)
        if not (dtype in _DTYPE_BYTES and _counts(shape) and _counts(offsets) and len(offsets) == 2):
            raise bad(f"tensor {quote(name)} is declared as {quote(t)}, not {{dtype, shape, data_offsets}} of "
                      f"a known dtype ({', '.join(_DTYPE_BYTES)})")
        begin, end = offsets
        declared = math.prod(shape) * _DTYPE_BYTES[dtype]
        if end - begin != declared or end > data:
            raise bad(f"tensor {quote(name)} declares {dtype} {shape}, {declared:,} bytes, at bytes "
                      f"{begin:,}-{end:,} of {data:,} after the header")
        shapes[name] = tuple(shape)
        ranges.append((begin, end, name))
    for (_, end, a), (begin, _, b) in zip(sorted(ranges), sorted(ranges)[1:]):
        if begin < end:
            raise bad(f"tensors {quote(a)} and {quote(b)} overlap")
    return shapes, metadata


def _counts(x) -> bool:
    """A JSON list of integers >= 0 (a shape, a byte range)."""
    return isinstance(x, list) and all(type(d) is int and d >= 0 for d in x)


def read_safetensors(path, expect=None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(params, metadata) as stored. The header is checked first (read_header), then
    expect(shapes, metadata) when given (a spec's check: it raises before a byte of tensor is
    read), then what reading takes against the memory available here."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    shapes, metadata = read_header(path)
    if expect is not None:
        expect(shapes, metadata)
    fits(SAFETENSORS_READ_FACTOR * (path.stat().st_size), f"reading {path}",
         "Load it on a machine with more memory, or check that the file is the one you meant.")
    try:
        with safe_open(str(path), framework="np") as f:
            params = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file ({e}).") from None
    return params, metadata


def load_safetensors(path, spec: GPTSpec | None = None) -> tuple[GPTSpec, dict[str, np.ndarray]]:
    """Load and check weights. With no spec given, the spec stored in the file is used."""
    return load_with_metadata(path, spec)[:2]


def load_with_metadata(path, spec: GPTSpec | None = None) -> tuple[GPTSpec, dict[str, np.ndarray], dict[str, str]]:
    """load_safetensors, with the file's metadata (its tokenizer, ...) from the same read.
    The tensors' names and shapes are checked against the spec from the header, before
    they are read."""
    found = {}

    def expect(shapes, metadata):
        nonlocal spec
        if spec is None:
            if "spec" not in metadata:
                raise WeightsError(f"{path} carries no gptbench spec in its metadata; pass --spec.")
            spec = GPTSpec.from_dict(metadata_json(path, metadata, "spec"))
        check_shapes(shapes, spec, source=str(path))
        found["spec"] = spec

    params, metadata = read_safetensors(path, expect)
    check_params(params, found["spec"], source=str(path))
    return found["spec"], params, metadata


def metadata_json(path, metadata: dict, key: str) -> dict:
    """The JSON object gptbench stored under `key` of a safetensors file's metadata (the spec,
    the tokenizer), or WeightsError naming the file and the key."""
    try:
        value = json.loads(metadata[key])
    except ValueError as e:
        raise WeightsError(f"{path}: its metadata {key!r} is not JSON ({e}); the file was not written by "
                           "gptbench, or was changed since. Pass --spec (and --corpus for the vocabulary), or "
                           "convert the weights again.") from None
    if not isinstance(value, dict):
        raise WeightsError(f"{path}: its metadata {key!r} is {type(value).__name__} JSON, not an object.")
    return value


# --- AdamW state -------------------------------------------------------------------------
def save_optimizer_state(path, moments: dict, spec: GPTSpec, optim) -> Path:
    """A run's AdamW state: moments {"step": t, "exp_avg": {name: m}, "exp_avg_sq": {name: v}}
    (canonical names, torch.optim.AdamW's meaning) and its AdamWConfig, as safetensors."""
    from dataclasses import asdict

    from safetensors.numpy import save_file

    tensors = {f"{kind}.{n}": np.ascontiguousarray(moments[kind][n], dtype=np.float32)
               for kind in ("exp_avg", "exp_avg_sq") for n in spec.param_shapes()}
    metadata = {"format": "gptbench-adamw", "spec": spec.to_json(), "step": str(int(moments["step"])),
                "adamw": json.dumps(asdict(optim))}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_optimizer_state(path, spec: GPTSpec):
    """(moments, AdamWConfig) from save_optimizer_state's file, checked against the spec."""
    def expect(shapes, metadata):
        if metadata.get("format") != "gptbench-adamw" or not metadata.get("step", "").isdigit():
            raise WeightsError(f"{path} is not a gptbench AdamW state file (its metadata has no format "
                               "'gptbench-adamw' and step count).")
        for kind in ("exp_avg", "exp_avg_sq"):
            check_shapes({n[len(kind) + 1:]: s for n, s in shapes.items() if n.startswith(kind + ".")}, spec,
                         source=f"{path} ({kind})")

    tensors, metadata = read_safetensors(path, expect)
    moments = {"step": int(metadata["step"])}
    for kind in ("exp_avg", "exp_avg_sq"):
        found = {n[len(kind) + 1:]: a for n, a in tensors.items() if n.startswith(kind + ".")}
        check_params(found, spec, source=f"{path} ({kind})")
        moments[kind] = {n: found[n] for n in spec.param_shapes()}  # canonical order, not the file's sorted one
    return moments, AdamWConfig(**metadata_json(path, metadata, "adamw"))


# --- nanoGPT checkpoints ----------------------------------------------------------------
_NANOGPT_PREFIX = "transformer."


def from_nanogpt_state_dict(state_dict: dict, spec: GPTSpec) -> dict[str, np.ndarray]:
    """nanoGPT model state_dict (torch tensors or arrays) -> canonical params.

    Drops the `_orig_mod.` prefix of compiled models and the causal-mask buffers
    (`attn.bias`, 4-D). A checkpoint trained with bias=False gets zero biases: the same
    function. lm_head.weight must equal wte (tied)."""
    sd = {}
    for key, value in state_dict.items():
        key = key.removeprefix("_orig_mod.")
        arr = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if key.endswith(".attn.bias") and arr.ndim == 4:
            continue  # the causal mask buffer, not a parameter
        sd[key] = arr
    lm_head = sd.pop("lm_head.weight", None)
    params = {}
    for key, arr in sd.items():
        if not key.startswith(_NANOGPT_PREFIX):
            raise WeightsError(f"nanoGPT state_dict key {key!r} is not under 'transformer.'.")
        params[key[len(_NANOGPT_PREFIX):]] = arr
    for name, shape in spec.param_shapes().items():
        if name.endswith(".bias") and name not in params:
            params[name] = np.zeros(shape, dtype=params["wte.weight"].dtype if "wte.weight" in params else np.float32)
    if lm_head is not None and not np.array_equal(lm_head, params.get("wte.weight")):
        raise WeightsError("nanoGPT lm_head.weight differs from transformer.wte.weight: "
                           "gptbench's spec ties them, so this checkpoint is a different model.")
    check_params(params, spec, source="nanoGPT state_dict")
    return params


def to_nanogpt_state_dict(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sd = {_NANOGPT_PREFIX + name: arr for name, arr in params.items()}
    sd["lm_head.weight"] = params["wte.weight"]
    return sd
