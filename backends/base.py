"""The backend contract: what every implementation of the spec provides.

All inputs and outputs at this boundary are NumPy arrays with canonical names
(gptspec/weights.py), so a backend is judged by numbers alone. The suite owns data,
learning-rate schedule and sampling randomness; a backend owns the math.
"""

from __future__ import annotations

import numpy as np

from gptspec.optim import AdamWConfig
from gptspec.spec import GPTSpec

# what generate does once the context holds block_size tokens (docs/spec.md, Generation):
#   refill   one prefill from the last block_size // 2 tokens, then decode on: bounded cost per token
#   sliding  nanoGPT's generate: every new token recomputed over the last block_size tokens
WINDOWS = ("refill", "sliding")


class Backend:
    name = "base"
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = ("float32", "float64")

    # --- discovery ------------------------------------------------------------------------
    @classmethod
    def unavailable(cls, device: str = "cpu", dtype: str = "float32") -> str | None:
        """Why this backend cannot run here on (device, dtype), or None if it can."""
        if device not in cls.devices:
            return f"{cls.name} runs on {', '.join(cls.devices)}, not {device!r}"
        if dtype not in cls.dtypes:
            return f"{cls.name} supports dtypes {', '.join(cls.dtypes)}, not {dtype!r}"
        return None

    @classmethod
    def versions(cls) -> dict[str, str]:
        """The versions of what this backend runs on, e.g. {"torch": "2.13.0"}: records keep
        them beside the backend's name (`implementation.versions`). Optional."""
        return {}

    def __init__(self, spec: GPTSpec, device: str = "cpu", dtype: str = "float32",
                 optim: AdamWConfig | None = None):
        self.spec, self.device, self.dtype = spec, device, dtype
        self.optim = optim or AdamWConfig()

    # --- weights --------------------------------------------------------------------------
    def load_state(self, params: dict[str, np.ndarray]) -> None:
        """Take canonical params (copies them) and reset the optimizer state."""
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Current params as canonical NumPy arrays."""
        raise NotImplementedError

    # --- training -------------------------------------------------------------------------
    def forward(self, idx: np.ndarray, targets: np.ndarray | None = None):
        """idx (B, T) int -> (logits (B, T, V) ndarray, mean cross-entropy float or None)."""
        raise NotImplementedError

    def loss(self, idx: np.ndarray, targets: np.ndarray) -> float:
        """Mean cross-entropy only, keeping nothing for backward (evaluation)."""
        return self.forward(idx, targets)[1]

    def backward(self) -> dict[str, np.ndarray]:
        """Gradients of the last forward's loss, canonical names (tied wte summed once)."""
        raise NotImplementedError

    def step(self, lr: float) -> float:
        """One AdamW update (gptspec/optim.py semantics) from the last backward's gradients,
        after global-norm clipping. Returns the gradient norm before clipping."""
        raise NotImplementedError

    def optimizer_state(self) -> dict | None:
        """AdamW's state after the steps so far, with torch.optim.AdamW's meaning: {"step": t,
        "exp_avg": {name: m}, "exp_avg_sq": {name: v}}, canonical names, NumPy arrays. A training
        run saves it beside its weights, so that a nanoGPT checkpoint made from them resumes
        with the real moments (gptspec/nanogpt.py). Optional: None where a backend keeps it hidden."""
        return None

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float):
        """forward + backward + step, the fast path. Returns the loss as a scalar that
        float() converts (it may live on the device; converting synchronises)."""
        _, loss = self.forward(x, y)
        self.backward()
        self.step(lr)
        return loss

    def sync(self) -> None:
        """Wait for queued device work (timers call this)."""

    # --- generation -----------------------------------------------------------------------
    def prefill(self, idx: np.ndarray) -> np.ndarray:
        """Start a fresh context (a KV cache) from idx (B, T), 1 <= T <= block_size; return
        the last position's logits (B, V) as a float64 ndarray.
        Default: no cache; keep the context and run forward over it at every step."""
        self._context = np.asarray(idx)
        return np.asarray(self.forward(self._context)[0][:, -1, :], dtype=np.float64)

    def decode(self, tok: np.ndarray) -> np.ndarray:
        """Append tok (B, 1) at the next position (the context holds fewer than block_size
        tokens); return that position's logits (B, V) as a float64 ndarray."""
        return self.prefill(np.concatenate([self._context, tok], axis=1))

    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int = 0, on_logits=None, window: str = "refill",
                 vocab_limit: int | None = None) -> np.ndarray:
        """Append max_new_tokens sampled tokens to idx (B, T0), through prefill and decode.
        Sampling is done here, in NumPy, from the logits they return, so equal logits give
        equal text. Backends implement prefill and decode, not this.

        The context is at most block_size tokens: a longer prompt keeps its last block_size.
        When the context is full, window (WINDOWS) says what happens: "refill" (one prefill
        from the last block_size // 2 tokens, then decoding on: the cost per new token stays
        bounded), or "sliding" (nanoGPT's: a prefill of the last block_size tokens for every
        new token, so each sees a full window) (docs/spec.md, Generation).
        on_logits(kind, logits): called after every model call ("prefill" or "decode") with
        the logits it returned: how workloads time generation and the ladder checks it.
        vocab_limit: sample only ids below it -- the tokenizer's vocabulary when the spec's
        vocab_size is padded beyond it (tiny's 32 ids for the synthetic corpus's 8 letters,
        GPT-2's 50304 for 50257 tokens): ids no text holds are never sampled."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(f"generate needs idx of shape (B, T0) with T0 >= 1, got {idx.shape}")
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, not {window!r}")
        observe = on_logits or (lambda kind, logits: None)
        rng = np.random.default_rng(seed)
        bs = self.spec.block_size
        out = [idx]
        logits = self.prefill(idx[:, -bs:])
        observe("prefill", logits)
        context_len = min(idx.shape[1], bs)
        for _ in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, rng, vocab_limit)[:, None]  # (B, 1)
            out.append(nxt)
            if context_len == bs:
                keep = bs if window == "sliding" else bs // 2
                context = np.concatenate(out, axis=1)[:, -keep:]
                logits, kind = self.prefill(context), "prefill"
                context_len = context.shape[1]
            else:
                logits, kind = self.decode(nxt), "decode"
                context_len += 1
            observe(kind, logits)
        return np.concatenate(out, axis=1)

    def __init_subclass__(cls, **kw):
        """Backends written for gptbench 0.1 named the hooks _prefill and _decode: they still
        serve as prefill and decode (and are checked as such by `gptbench check`)."""
        super().__init_subclass__(**kw)
        for old, new in (("_prefill", "prefill"), ("_decode", "decode")):
            if old in cls.__dict__ and new not in cls.__dict__:
                setattr(cls, new, cls.__dict__[old])


def adam_moments(t: int, m: dict, v: dict) -> dict:
    """optimizer_state()'s dict from a backend's step count and moments (any arrays NumPy can
    read: numpy, jax, mlx), copied so later steps do not change it."""
    return {"step": t, "exp_avg": {n: np.array(a) for n, a in m.items()},
            "exp_avg_sq": {n: np.array(a) for n, a in v.items()}}


def sample_next(logits: np.ndarray, temperature: float, top_k: int | None,
                rng: np.random.Generator, vocab_limit: int | None = None) -> np.ndarray:
    """logits (B, V) -> next tokens (B,). temperature 0 is greedy (argmax).
    top_k keeps the k largest logits (ties at the k-th value kept, as nanoGPT).
    vocab_limit: only ids below it compete (the logits of the others are dropped first)."""
    logits = np.asarray(logits, dtype=np.float64)[:, :vocab_limit]  # (B, V'); [:None] keeps all
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    u = rng.random((logits.shape[0], 1))
    return np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), logits.shape[-1] - 1)
