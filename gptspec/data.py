"""Data: tokenizers, corpus lookup, train/val split, the seeded batch sampler, and the
synthetic Markov corpus whose entropy rate is known exactly (the embedded default).

Every backend gets its batches from here as NumPy int64 arrays, so all see the same data.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptspec.errors import DataError
from gptspec.files import write_text_atomic
from gptspec.limits import CORPUS_BYTES_FACTOR, fits, not_a_file, quote

SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DATA_DIR_ENV = "GPTBENCH_DATA_DIR"


# --- tokenizers ---------------------------------------------------------------------------
def _ids_below(ids, vocab_size: int, what: str) -> np.ndarray:
    """ids flattened; DataError "token id N <what> sample with vocab_limit=..." for the first
    id outside 0..vocab_size-1."""
    ids = np.asarray(ids).reshape(-1)
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
        raise DataError(f"token id {int(bad[0])} {what} sample with vocab_limit=tokenizer.vocab_size "
                        "(docs/spec.md, Generation).")
    return ids


class CharTokenizer:
    """One token per character of a fixed vocabulary (ids in the order of `chars`)."""
    kind = "char"

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise DataError("char tokenizer vocabulary has repeated characters.")
        self.chars = chars
        self._ids = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.fromiter((self._ids[ch] for ch in text), dtype=np.int64, count=len(text))
        except KeyError:
            unknown = sorted({ch for ch in text if ch not in self._ids})
            first = next(i for i, ch in enumerate(text) if ch not in self._ids)
            raise DataError(
                f"text has {len(unknown)} character(s) outside the saved vocabulary of "
                f"{self.vocab_size}: {''.join(unknown)[:20]!r} (first at position {first}). Use only "
                f"characters from the vocabulary {self.chars[:80]!r}, or use the byte-level tokenizer."
            ) from None

    def decode(self, ids) -> str:
        """Text of ids; an id outside the vocabulary is an error that names it, never another
        character (generation samples only ids below vocab_size: docs/spec.md, Generation)."""
        ids = _ids_below(ids, self.vocab_size, f"is outside the character vocabulary of {self.vocab_size} "
                         f"({self.chars[:80]!r}): a spec's vocab_size padded beyond its tokenizer's holds ids no "
                         "text has;")
        return "".join(self.chars[i] for i in ids.tolist())

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


class ByteTokenizer:
    """UTF-8 bytes, vocabulary 256: never meets an unknown character."""
    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        """Text of byte ids (an invalid UTF-8 sequence shows as U+FFFD); an id outside 0-255 is
        an error that names it, not a byte taken modulo 256."""
        ids = _ids_below(ids, self.vocab_size, "is not a byte (0-255):")
        return bytes(ids.astype(np.uint8).tolist()).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"kind": self.kind}


def tokenizer_from_dict(d: dict):
    kind = d.get("kind")
    if kind == "char":
        return CharTokenizer(d["chars"])
    if kind == "byte":
        return ByteTokenizer()
    raise DataError(f"unknown tokenizer kind {kind!r}; known: 'char', 'byte'.")


def save_tokenizer(tok, path) -> Path:
    path = Path(path)
    write_text_atomic(path, json.dumps(tok.to_dict(), ensure_ascii=False))
    return path


def load_tokenizer(path):
    try:
        return tokenizer_from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"cannot read tokenizer vocabulary {path}: {e}.") from None


# --- the synthetic corpus -----------------------------------------------------------------
class MarkovSource:
    """A seeded order-k character Markov chain over a K-letter alphabet.

    Each k-letter context has a next-letter distribution drawn from Dirichlet(alpha).
    Its entropy rate h = sum_s pi(s) H(P(.|s)) (nats per character) is computed exactly
    from the stationary distribution pi, and so is the best possible mean loss over a
    block of T positions, where the first k positions see less than k letters of context.
    """

    def __init__(self, alphabet_size: int = 8, order: int = 2, alpha: float = 0.1, seed: int = 1234):
        if not 2 <= alphabet_size <= 26 or order < 1:
            raise DataError("MarkovSource needs 2 <= alphabet_size <= 26 and order >= 1.")
        self.alphabet = "abcdefghijklmnopqrstuvwxyz"[:alphabet_size]
        self.K, self.k, self.alpha, self.seed = alphabet_size, order, alpha, seed
        rng = np.random.default_rng(seed)
        self.P = rng.dirichlet(np.full(self.K, alpha), size=self.K ** order)  # (K^k, K)
        self.pi = self._stationary()  # (K^k,), state s = x_1 * K^(k-1) + ... + x_k

    def _stationary(self) -> np.ndarray:
        n, K = self.K ** self.k, self.K
        T = np.zeros((n, n))
        for s in range(n):
            T[s, (s * K) % n + np.arange(K)] = self.P[s]  # s -> (s[1:], c)
        pi = np.full(n, 1.0 / n)
        for _ in range(100000):
            nxt = pi @ T
            if np.abs(nxt - pi).max() < 1e-15:
                break
            pi = nxt
        return nxt / nxt.sum()

    @staticmethod
    def _entropy(p) -> float:
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    @property
    def entropy_rate(self) -> float:
        """h, nats per character."""
        return float(sum(self.pi[s] * self._entropy(self.P[s]) for s in range(len(self.pi))))

    def position_entropies(self, T: int) -> np.ndarray:
        """H(X_t | X_0..X_{t-1}) for t = 1..T: the targets of a T-token block, the chain
        started in its stationary law (target t sees t letters of context)."""
        joint = self.pi.reshape((self.K,) * self.k)  # law of k consecutive letters
        laws = [self._entropy(joint.sum(axis=tuple(range(t, self.k)))) for t in range(1, self.k + 1)]
        out = [laws[t] - laws[t - 1] for t in range(1, min(T + 1, self.k))]
        out += [self.entropy_rate] * (T - len(out))
        return np.array(out)

    def block_floor(self, T: int) -> float:
        """The least achievable mean cross-entropy over T-token training blocks."""
        return float(self.position_entropies(T).mean())

    def oracle_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy of the true source on batches (x, y) of letter ids: what a
        perfect model scores on exactly these tokens (first k positions use less context)."""
        K, k = self.K, self.k
        joint = self.pi.reshape((K,) * k)
        seq = np.concatenate([x, y[:, -1:]], axis=1)  # (B, T+1)
        total = 0.0
        for t in range(1, seq.shape[1]):
            if t >= k:
                s = np.zeros(len(seq), dtype=np.int64)
                for j in range(k):
                    s = s * K + seq[:, t - k + j]
                p = self.P[s, seq[:, t]]
            else:  # P(x_t | x_0..x_{t-1}) from the stationary law of the first t+1 letters
                marg = joint.sum(axis=tuple(range(t + 1, k))) if t + 1 < k else joint
                num = marg[tuple(seq[:, j] for j in range(t + 1))]
                den = marg.sum(axis=-1)[tuple(seq[:, j] for j in range(t))]
                p = num / den
            total += float(-np.log(p).sum())
        return total / y.size

    def sample(self, n: int, seed: int | None = None) -> str:
        rng = np.random.default_rng(self.seed + 1 if seed is None else seed)
        n_states, K = len(self.pi), self.K
        cdf = np.cumsum(self.P, axis=1).tolist()
        s = int(rng.choice(n_states, p=self.pi))
        letters = self.alphabet.encode()
        out = bytearray(letters[s // K ** (self.k - 1 - j) % K] for j in range(self.k))
        while len(out) < n:  # uniforms drawn in chunks: the same stream, little memory
            for u in rng.random(min(8192, n - len(out))).tolist():
                c = min(bisect.bisect_right(cdf[s], u), K - 1)
                out.append(letters[c])
                s = (s * K) % n_states + c
        return out[:n].decode()


# --- corpora ------------------------------------------------------------------------------
@dataclass
class Corpus:
    name: str
    text: str
    tokenizer: object
    train: np.ndarray  # token ids
    val: np.ndarray
    source: MarkovSource | None = field(default=None, repr=False)

    def block_floor(self, T: int) -> float | None:
        """Exact loss floor for T-token blocks (synthetic corpus only)."""
        return None if self.source is None else self.source.block_floor(T)

    def describe(self) -> dict:
        d = {"name": self.name, "chars": len(self.text), "train_tokens": int(self.train.size),
             "val_tokens": int(self.val.size), "tokenizer": self.tokenizer.to_dict()}
        if self.source is not None:
            d.update(entropy_rate=self.source.entropy_rate, markov_order=self.source.k,
                     alphabet_size=self.source.K, alpha=self.source.alpha, seed=self.source.seed)
        return d


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gptbench" / "data"


def find_shakespeare() -> Path:
    """$GPTBENCH_DATA_DIR, then the user cache. The error names every place looked."""
    places = []
    if os.environ.get(DATA_DIR_ENV):
        places.append(Path(os.environ[DATA_DIR_ENV]) / SHAKESPEARE_FILE)
    places.append(user_cache_dir() / SHAKESPEARE_FILE)
    for p in places:
        if p.is_file():
            return p
    looked = "; ".join(str(p) for p in places)
    raise DataError(
        f"Tiny Shakespeare not found. Looked in: {looked}"
        f"{'' if os.environ.get(DATA_DIR_ENV) else f' ({DATA_DIR_ENV} is not set)'}. "
        f"Get it with: mkdir -p {user_cache_dir()} && curl -L -o {user_cache_dir() / SHAKESPEARE_FILE} "
        f"{SHAKESPEARE_URL} -- or set {DATA_DIR_ENV} to the folder holding {SHAKESPEARE_FILE}, "
        "or pass --corpus PATH, or use --corpus synthetic (needs no file)."
    )


def load_corpus(corpus: str = "synthetic", tokenizer="char", val_fraction: float = 0.1,
                synthetic_chars: int = 200_000) -> Corpus:
    """corpus: 'synthetic' (the embedded default), 'shakespeare', or a path to a text file.
    tokenizer: 'char' (the text's own characters), 'byte', or a tokenizer object (loaded
    weights' vocabulary: the text is encoded with it, and a character outside it is an error).
    The split is nanoGPT's prepare.py's: train is the first int(n·(1 - val_fraction)) tokens,
    val the rest."""
    source = None
    if corpus == "synthetic":
        source = MarkovSource()
        text, name = source.sample(synthetic_chars), "synthetic"
        tok = _tokenizer(tokenizer, lambda: CharTokenizer(source.alphabet))
    else:
        path = find_shakespeare() if corpus == "shakespeare" else Path(corpus)
        problem = not_a_file(path)  # /dev/zero, a FIFO: named for what they are, and never read
        if problem:
            raise DataError(f"corpus file {path} {problem}. Pass an existing text file, 'shakespeare' (looked up in "
                            "the data directory) or 'synthetic'.")
        size = path.stat().st_size
        fits(size * CORPUS_BYTES_FACTOR, f"corpus file {path} ({size:,} bytes: its text and its token ids)",
             "Train on a shorter text file.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"corpus file {path} is not UTF-8 text ({e}).") from None
        except OSError as e:  # no permission, an I/O error
            raise DataError(f"cannot read corpus file {path}: {e.strerror or e}.") from None
        name = "shakespeare" if corpus == "shakespeare" else path.name
        tok = _tokenizer(tokenizer, lambda: CharTokenizer.from_text(text))
    ids = tok.encode(text)
    n_train = int(len(ids) * (1.0 - val_fraction))
    if n_train < 2 or len(ids) - n_train < 2:
        raise DataError(f"corpus {name} has only {len(ids)} tokens: too short to split into train and val.")
    return Corpus(name, text, tok, ids[:n_train], ids[n_train:], source)


def _tokenizer(kind, char_tokenizer):
    """A tokenizer object as given, or the named kind: 'char' (char_tokenizer() makes it) or 'byte'."""
    if not isinstance(kind, str):
        return kind
    if kind not in ("char", "byte"):
        raise DataError(f"unknown tokenizer {kind!r}; choose 'char' or 'byte'.")
    return char_tokenizer() if kind == "char" else ByteTokenizer()


def check_corpus(corpus: Corpus, spec, seq_len: int | None = None) -> None:
    """DataError, before any training, when the corpus cannot train `spec` on blocks of
    seq_len (default block_size) tokens: more distinct tokens than the spec's vocab_size, or
    too short for a block and its next token in both splits. Each says what would fit."""
    check_vocab(corpus, spec)
    T = seq_len or spec.block_size
    if min(corpus.train.size, corpus.val.size) < T + 2:
        unit = "bytes" if corpus.tokenizer.kind == "byte" else "characters"
        raise DataError(
            f"corpus {corpus.name} is too short for blocks of {T} tokens: it has {corpus.train.size + corpus.val.size:,} "
            f"{unit} and needs at least {min_corpus_tokens(T):,} (the last 10% is the validation split, and each "
            f"split needs one block of {T} and its next token). Give a longer text, or a spec with a smaller "
            "block_size.")


def min_corpus_tokens(T: int, val_fraction: float = 0.1) -> int:
    """The fewest tokens whose train and val splits (load_corpus's) each hold T + 2."""
    n = max(1, int((T + 1) / val_fraction) - 10)  # below it the val split is shorter than T + 2
    while int(n * (1.0 - val_fraction)) < T + 2 or n - int(n * (1.0 - val_fraction)) < T + 2:
        n += 1
    return n


def check_vocab(corpus: Corpus, spec) -> None:
    """DataError when the corpus's tokenizer has more tokens than spec.vocab_size, naming what
    fits: the presets, a vocab_size, the other tokenizer where it would do."""
    from gptspec.spec import PRESETS

    need, have, kind = corpus.tokenizer.vocab_size, spec.vocab_size, corpus.tokenizer.kind
    if need <= have:
        return
    what = (f"{need} distinct characters (char-level tokens)" if kind == "char" else
            f"a vocabulary of {need} tokens ({kind}-level)")
    presets = [name for name, p in PRESETS.items() if p.vocab_size >= need]
    fixes = [f"a spec whose vocab_size is at least {need} (inline JSON: --spec '{{\"vocab_size\": {need}, ...}}')",
             f"a preset with room for it ({', '.join(presets)})" if presets else f"(no preset has {need} tokens)"]
    distinct = len(set(corpus.text))
    if kind == "char" and have >= ByteTokenizer.vocab_size:  # the other tokenizer, only where it fits
        fixes.append(f"--tokenizer byte ({ByteTokenizer.vocab_size} tokens)")
    elif kind == "byte" and distinct <= have:
        fixes.append(f"--tokenizer char (this text has {distinct} distinct characters)")
    raise DataError(f"corpus {corpus.name} has {what} but spec {quote(spec.name)} has vocab_size {have}. Use "
                    + "; or ".join(fixes) + ".")


def split_windows(data: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every non-overlapping block_size window of data from its start, and its targets shifted by
    one: x (N, T) = data[i·T : (i+1)·T], y = data[i·T + 1 : (i+1)·T + 1], N = (len(data) - 1) // T.
    What a full-split evaluation scores: each token but the last few is a target exactly once."""
    n = (len(data) - 1) // block_size
    if n < 1:
        raise DataError(f"data of {len(data)} tokens is too short for one window of {block_size} and its targets.")
    x = data[:n * block_size].reshape(n, block_size)
    y = data[1:n * block_size + 1].reshape(n, block_size)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def spread_windows(data: np.ndarray, count: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """count windows (and targets) at evenly spaced offsets over data: a fixed sample of a split
    that depends on nothing but the data, so every run and every seed is scored on the same text."""
    if len(data) <= block_size + 1:
        raise DataError(f"data of {len(data)} tokens is too short for blocks of {block_size}.")
    offsets = np.linspace(0, len(data) - block_size - 1, count).astype(np.int64)
    window = offsets[:, None] + np.arange(block_size + 1)  # (count, T+1)
    chunk = data[window]
    return np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])


class BatchSampler:
    """Seeded random windows of a token array: x = data[o:o+T], y = data[o+1:o+T+1]."""

    def __init__(self, data: np.ndarray, batch_size: int, block_size: int, seed: int = 0):
        if len(data) <= block_size + 1:
            raise DataError(f"data of {len(data)} tokens is too short for blocks of {block_size}.")
        self.data, self.B, self.T = data, batch_size, block_size
        self.rng = np.random.default_rng(seed)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        offsets = self.rng.integers(0, len(self.data) - self.T - 1, size=self.B)
        window = offsets[:, None] + np.arange(self.T + 1)  # (B, T+1)
        chunk = self.data[window]
        return np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])
