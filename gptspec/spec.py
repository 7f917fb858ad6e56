"""The GPT specification every backend implements (see docs/spec.md).

nanoGPT-style: pre-LayerNorm (eps 1e-5), learned position embeddings, GELU (`gelu`: the tanh
approximation by default, or the exact erf form of nanoGPT's nn.GELU), MLP ratio 4, biases on,
`lm_head` tied to `wte` (no bias), no dropout.
The spec also knows its own size: parameters, training FLOPs per token, memory.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from gptspec.errors import SpecError
from gptspec.limits import MAX_SPEC_FILE, SPEC_MAX, not_a_file, quote

LN_EPS = 1e-5
MLP_RATIO = 4
DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
# the MLP's activation: 0.5·x·(1 + tanh(sqrt(2/pi)·(x + 0.044715·x³))) or x·Phi(x) = 0.5·x·(1 + erf(x/sqrt(2)))
GELUS = ("tanh", "erf")


@dataclass(frozen=True)
class GPTSpec:
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    name: str = "custom"
    gelu: str = "tanh"  # one of GELUS; a converted nanoGPT checkpoint is "erf"

    def __post_init__(self):
        for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SpecError(
                    f"spec {quote(self.name)}: field '{field}' must be a positive integer, got {quote(value)}."
                )
            if value > SPEC_MAX[field]:  # before anything is sized by it (docs/spec.md, Limits)
                raise SpecError(f"spec {quote(self.name)}: field '{field}' is {value:,}, above its limit of "
                                f"{SPEC_MAX[field]:,} (docs/spec.md, Limits: a GPT-2 XL is far inside every one); "
                                "check the number for extra digits.")
        if not isinstance(self.name, str):
            raise SpecError(f"spec field 'name' must be a string, got {quote(self.name)}.")
        if self.gelu not in GELUS:
            raise SpecError(f"spec {quote(self.name)}: field 'gelu' must be one of {', '.join(map(repr, GELUS))} "
                            f"(the tanh approximation, or the exact erf form nanoGPT uses), got {quote(self.gelu)}.")
        if self.n_embd % self.n_head:
            raise SpecError(
                f"spec {quote(self.name)}: n_embd ({self.n_embd}) must be divisible by n_head "
                f"({self.n_head}) so every head has the same size; try n_head in "
                f"{[h for h in range(1, min(self.n_embd, 64) + 1) if self.n_embd % h == 0]}."
            )

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def replace(self, **changes) -> "GPTSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"spec has unknown field(s) {quote(unknown)}; allowed fields are {sorted(known)}.")
        missing = sorted(f for f in known - {"name", "gelu"} if f not in d)  # optional: defaults
        if missing:
            raise SpecError(f"spec is missing field(s) {missing}.")
        return cls(**d)

    # --- size --------------------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical parameter names and shapes, torch (out, in) layout, in canonical order."""
        V, T, C = self.vocab_size, self.block_size, self.n_embd
        shapes = {"wte.weight": (V, C), "wpe.weight": (T, C)}
        for i in range(self.n_layer):
            p = f"h.{i}."
            shapes[p + "ln_1.weight"] = (C,)
            shapes[p + "ln_1.bias"] = (C,)
            shapes[p + "attn.c_attn.weight"] = (3 * C, C)
            shapes[p + "attn.c_attn.bias"] = (3 * C,)
            shapes[p + "attn.c_proj.weight"] = (C, C)
            shapes[p + "attn.c_proj.bias"] = (C,)
            shapes[p + "ln_2.weight"] = (C,)
            shapes[p + "ln_2.bias"] = (C,)
            shapes[p + "mlp.c_fc.weight"] = (MLP_RATIO * C, C)
            shapes[p + "mlp.c_fc.bias"] = (MLP_RATIO * C,)
            shapes[p + "mlp.c_proj.weight"] = (C, MLP_RATIO * C)
            shapes[p + "mlp.c_proj.bias"] = (C,)
        shapes["ln_f.weight"] = (C,)
        shapes["ln_f.bias"] = (C,)
        return shapes

    def n_params(self, non_embedding: bool = False) -> int:
        """Parameter count (lm_head is tied, so counted once). non_embedding drops wpe,
        as nanoGPT does: wte still costs FLOPs as the lm_head."""
        n = sum(_prod(s) for s in self.param_shapes().values())
        return n - self.block_size * self.n_embd if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward), the PaLM/nanoGPT convention:
        6·N (N without wpe) + 12·L·T·C for attention scores and values (non-causal count)."""
        T = self.block_size if seq_len is None else seq_len
        return 6 * self.n_params(non_embedding=True) + 12 * self.n_layer * T * self.n_embd

    def memory_estimate(self, batch_size: int, dtype: str = "float32", mode: str = "train",
                        seq_len: int | None = None) -> dict[str, int]:
        """Bytes of tensors a straightforward implementation holds at its peak.

        train: weights, grads, two AdamW moments, and the activations kept for backward
        (per layer ~24·C per token plus two T-wide attention rows per head).
        generate: weights plus the KV cache and one step's activations.
        bfloat16 and float16 are autocast (backends/torch_eager.py): weights, grads, moments
        and the KV cache stay float32, with one low-precision copy of the weights (autocast's
        casts); activations are low precision.
        Framework and interpreter overhead is not included (the cell runner measures it).
        """
        if dtype not in DTYPE_BYTES:
            raise SpecError(f"unknown dtype {dtype!r}; known: {sorted(DTYPE_BYTES)}.")
        if mode not in ("train", "generate"):
            raise SpecError(f"memory_estimate mode must be 'train' or 'generate', got {mode!r}.")
        nbytes = DTYPE_BYTES[dtype]
        master = max(4, nbytes)  # the parameters' precision: float32 masters under autocast
        T = self.block_size if seq_len is None else seq_len
        B, C, L, NH, V = batch_size, self.n_embd, self.n_layer, self.n_head, self.vocab_size
        weights = self.n_params() * master
        if mode == "train":
            per_token = L * (24 * C + 2 * NH * T) + 4 * V + 4 * C
            est = {
                "weights": weights,
                "grads": weights,
                "adam_moments": 2 * weights,
                "activations": B * T * per_token * nbytes,
            }
        else:
            est = {
                "weights": weights,
                "kv_cache": 2 * L * B * T * C * master,
                "activations": B * T * (MLP_RATIO * C + NH * T + V) * nbytes,
            }
        if nbytes < master:
            est["weights_cast"] = self.n_params() * nbytes
        est["total"] = sum(est.values())
        return est


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


PRESETS: dict[str, GPTSpec] = {
    # tests: small enough for float64 finite differences of every gradient
    "tiny": GPTSpec(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32, name="tiny"),
    # the synthetic corpus's 8 letters in a 128-token window, one layer: learns the order-2
    # source past its unigram plateau in ~200 steps of batch 32 on any CPU backend (the
    # default matrix's generation samples from it, docs/matrix.md)
    "markov": GPTSpec(vocab_size=8, block_size=128, n_layer=1, n_head=2, n_embd=32, name="markov"),
    # the low-RAM box (~700 MB free): trains with the NumPy reference in well under 150 MB
    "lumgpt": GPTSpec(vocab_size=65, block_size=128, n_layer=4, n_head=4, n_embd=128, name="lumgpt"),
    # d128, 2 heads, 2 layers, ctx 256: ~0.42M params
    "proust": GPTSpec(vocab_size=65, block_size=256, n_layer=2, n_head=2, n_embd=128, name="proust"),
    # nanoGPT's config/train_shakespeare_char.py
    "shakespeare-char": GPTSpec(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384,
                                name="shakespeare-char"),
    # GPT-2 small; vocab padded to 50304 as in nanoGPT
    "gpt2-124m": GPTSpec(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                         name="gpt2-124m"),
}


def resolve_spec(arg: str) -> GPTSpec:
    """A spec from the command line: a preset name, inline JSON, or a .json file."""
    text, source = arg, "inline JSON"
    if arg.endswith(".json"):
        from pathlib import Path

        problem = not_a_file(arg)
        if problem:  # a FIFO or /dev/zero named x.json is never read
            raise SpecError(f"spec file {arg} {problem}; give a JSON file of the spec's fields.")
        if Path(arg).stat().st_size > MAX_SPEC_FILE:
            raise SpecError(f"spec file {arg} has {Path(arg).stat().st_size:,} bytes; a spec is a JSON object of a "
                            f"few fields (at most {MAX_SPEC_FILE:,} bytes).")
        try:
            text, source = Path(arg).read_text(), arg
        except OSError as e:
            raise SpecError(f"cannot read spec file {arg}: {e.strerror}.") from None
    elif not arg.lstrip().startswith("{"):
        return preset(arg)
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"spec {source} is not valid JSON: {e}.") from None
    except RecursionError:
        raise SpecError(f"spec {source} nests too deep to be a spec (a flat JSON object).") from None
    if not isinstance(d, dict):
        raise SpecError(f"spec {source} must be a JSON object with fields vocab_size, block_size, "
                        "n_layer, n_head, n_embd.")
    d.setdefault("name", "custom")
    return GPTSpec.from_dict(d)


def preset(name: str) -> GPTSpec:
    """The named preset spec; an unknown name lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise SpecError(
            f"unknown spec preset {quote(name)}; known presets: {', '.join(PRESETS)}."
        ) from None
