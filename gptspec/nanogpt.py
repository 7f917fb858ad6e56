"""nanoGPT interop: its checkpoint folder (ckpt.pt), its vocabulary (meta.pkl) and its optimizer
state, read and written so that gptbench reads what nanoGPT writes, and nanoGPT's own sample.py
and `train.py --init_from=resume` accept what gptbench writes, unchanged (docs/nanogpt.md).

The nanoGPT facts relied on:
- ckpt.pt is a torch.save'd dict: `model` (the state_dict, `_orig_mod.`-prefixed when compiled),
  `optimizer` (torch.optim.AdamW's state_dict), `model_args` (n_layer, n_head, n_embd,
  block_size, bias, vocab_size, dropout), `iter_num`, `best_val_loss`, `config` (train.py's settings).
- meta.pkl (data/<dataset>/, written by prepare.py) is {'vocab_size': int, 'itos': {int: str},
  'stoi': {str: int}}. sample.py opens os.path.join('data', config['dataset'], 'meta.pkl')
  from its working directory, and os.path.join drops 'data' before an absolute path: so a
  checkpoint whose config.dataset is the absolute path of its own folder has its meta.pkl
  found beside it, from any working directory.
- configure_optimizers makes two groups, parameters with dim >= 2 (decayed) then the others,
  each in named_parameters order, which is the canonical order of gptspec/spec.py.
- the MLP's activation is nn.GELU(), the exact erf form: a nanoGPT model is a `gelu: erf` spec.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptspec.data import ByteTokenizer, CharTokenizer
from gptspec.errors import WeightsError
from gptspec.files import atomic_path
from gptspec.optim import AdamWConfig, decays
from gptspec.spec import GPTSpec
from gptspec.weights import check_params, from_nanogpt_state_dict, to_nanogpt_state_dict

CKPT = "ckpt.pt"
META = "meta.pkl"
BYTE_VOCAB = "gptbench_tokenizer"  # config key marking a byte-level vocabulary (its meta.pkl is Latin-1)


# --- meta.pkl ---------------------------------------------------------------------------------
class _PlainUnpickler(pickle.Unpickler):
    """Builds only what needs no class: dicts, strings, integers. A pickle that names any class or
    function (the only way a pickle runs code) is refused before it is called."""

    def find_class(self, module, name):
        raise WeightsError(
            f"{self.source} is not a plain nanoGPT meta.pkl: it asks to load {module}.{name}, which could run "
            "code, so it is refused. gptbench reads only dicts of strings and integers (vocab_size, itos, "
            "stoi): recreate it with nanoGPT's prepare.py, or pass --meta with a trusted one.")


def _plain(x) -> bool:
    if isinstance(x, dict):
        return all(_plain(k) and _plain(v) for k, v in x.items())
    return type(x) in (str, int)  # not bool, float, bytes, lists: no meta.pkl holds them


def read_meta(path) -> CharTokenizer:
    """The character vocabulary of a nanoGPT meta.pkl, read without running any code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            unpickler = _PlainUnpickler(f)
            unpickler.source = path
            meta = unpickler.load()
    except OSError as e:
        raise WeightsError(f"cannot read {path}: {e.strerror or e}.") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        raise WeightsError(f"{path} is not a readable pickle ({type(e).__name__}: {e}).") from None
    if not (_plain(meta) and isinstance(meta, dict)):
        raise WeightsError(f"{path} holds something other than a dict of strings and integers; a nanoGPT "
                           "meta.pkl is {'vocab_size': int, 'itos': {int: str}, 'stoi': {str: int}}.")
    itos, stoi, n = meta.get("itos"), meta.get("stoi"), meta.get("vocab_size")
    if not (isinstance(itos, dict) and isinstance(stoi, dict) and isinstance(n, int)):
        raise WeightsError(f"{path} lacks nanoGPT's keys: it needs vocab_size (int), itos {{int: str}} and "
                           f"stoi {{str: int}}; it has {sorted(meta)}.")
    if sorted(itos) != list(range(n)) or any(not isinstance(ch, str) or len(ch) != 1 for ch in itos.values()):
        raise WeightsError(f"{path}: itos must map every id 0..{n - 1} to one character (a character-level "
                           "vocabulary, as nanoGPT's shakespeare_char); this one does not.")
    chars = "".join(itos[i] for i in range(n))
    if stoi != {ch: i for i, ch in enumerate(chars)}:
        raise WeightsError(f"{path}: stoi is not the inverse of itos.")
    return CharTokenizer(chars)


def write_meta(path, tokenizer) -> Path:
    """nanoGPT's meta.pkl for a gptbench tokenizer. A byte-level one maps each byte to its
    Latin-1 character: ids and ASCII text are exact, other text shows byte by byte."""
    chars = tokenizer.chars if isinstance(tokenizer, CharTokenizer) else bytes(range(256)).decode("latin-1")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {ch: i for i, ch in enumerate(chars)}}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(meta, f)
    return Path(path)


def meta_places(ckpt: Path, dataset: str | None) -> list[Path]:
    """Where a checkpoint's meta.pkl may be, in the order looked: beside it; where sample.py looks
    (data/<dataset>/ from the working directory); data/<dataset>/ of the nanoGPT folder holding
    the checkpoint's out_dir."""
    places = [ckpt.parent / META]
    if dataset:
        places += [Path("data") / dataset / META, ckpt.resolve().parent.parent / "data" / dataset / META]
    return list(dict.fromkeys(places))


# --- reading a checkpoint -----------------------------------------------------------------------
@dataclass
class NanoGPTCheckpoint:
    spec: GPTSpec
    params: dict
    tokenizer: object | None
    notes: list[str] = field(default_factory=list)  # what the user should know (no vocabulary found...)


def _torch():
    try:
        import torch
    except ImportError:
        raise WeightsError("reading or writing a nanoGPT ckpt.pt needs torch: pip install 'gptbench[torch]'.") from None
    return torch


def load_checkpoint(path, meta=None) -> NanoGPTCheckpoint:
    """A nanoGPT ckpt.pt (a file, or its out_dir) and its vocabulary: from `meta` if given, else
    the first meta.pkl of meta_places. The spec is model_args with gelu "erf"."""
    torch = _torch()
    path = Path(path)
    if path.is_dir():
        path = path / CKPT
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist.")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- not a zip, a truncated file, a pickle weights_only refuses
        why = "it is not a zip archive, which torch.save writes" if not zipfile.is_zipfile(path) else \
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}"
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint ({why}); a nanoGPT ckpt.pt is what "
                           "nanoGPT's train.py saves with torch.save.") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or \
            not isinstance(ckpt.get("model_args"), dict):
        have = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise WeightsError(f"{path} is not a nanoGPT checkpoint: expected a dict whose 'model' (the state_dict) "
                           f"and 'model_args' are dicts, found {have}.")
    args = ckpt["model_args"]
    fields = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
    missing = [k for k in fields if k not in args]
    if missing:
        raise WeightsError(f"{path}: its model_args lack {', '.join(missing)}; nanoGPT's hold {', '.join(fields)}.")
    name = path.parent.name if path.stem == "ckpt" and path.parent.name else path.stem
    try:
        spec = GPTSpec(**{k: int(args[k]) for k in fields}, name=name, gelu="erf")
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: its model_args are not a GPT spec ({e}).") from None
    out = NanoGPTCheckpoint(spec, from_nanogpt_state_dict(ckpt["model"], spec), None)
    if not args.get("bias", True):
        out.notes.append("trained with bias=False: its biases are zeros here, the same function")
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    if config.get(BYTE_VOCAB) == "byte":
        out.tokenizer = ByteTokenizer()
        return out
    if meta is not None:
        if not Path(meta).is_file():
            raise WeightsError(f"--meta {meta} does not exist.")
        out.tokenizer = read_meta(meta)
    else:
        places = meta_places(path, config.get("dataset"))
        found = next((p for p in places if p.is_file()), None)
        if found is None:
            out.notes.append(f"no meta.pkl found (looked in {', '.join(map(str, places))}): the weights carry no "
                             "vocabulary (nanoGPT's sample.py would assume GPT-2's BPE); pass --meta PATH if "
                             "there is one")
        else:
            out.tokenizer = read_meta(found)
            out.notes.append(f"vocabulary of {out.tokenizer.vocab_size} characters from {found}")
    if out.tokenizer is not None and out.tokenizer.vocab_size > spec.vocab_size:
        raise WeightsError(f"the vocabulary has {out.tokenizer.vocab_size} tokens but the checkpoint's "
                           f"vocab_size is {spec.vocab_size}: they are not one model's.")
    return out


# --- writing a checkpoint folder ----------------------------------------------------------------
def adamw_state_dict(spec: GPTSpec, optim: AdamWConfig, moments: dict | None):
    """torch.optim.AdamW(...).state_dict() for canonical params grouped as nanoGPT's
    configure_optimizers groups them, in the spec's canonical order (which is nanoGPT's
    named_parameters order; a safetensors file lists its tensors sorted by name instead).
    moments: {"step", "exp_avg", "exp_avg_sq"} (canonical names) from a gptbench run, or None
    for a fresh state. The groups' lr is 0: nanoGPT's train.py sets it before every step;
    betas, eps and weight decay are the run's and load_state_dict makes them the resumed
    run's. The state dict names parameters by index, never holds their values: the optimizer
    is built over empty tensors of their shapes, not a copy of the weights."""
    torch = _torch()
    shapes = spec.param_shapes()
    tensors = {n: torch.nn.Parameter(torch.empty(s)) for n, s in shapes.items()}
    decayed = {n: decays(n, len(s)) for n, s in shapes.items()}
    groups = [{"params": [p for n, p in tensors.items() if decayed[n]], "weight_decay": optim.weight_decay},
              {"params": [p for n, p in tensors.items() if not decayed[n]], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=0.0, betas=(optim.beta1, optim.beta2), eps=optim.eps)
    if moments is not None:
        for n, p in tensors.items():
            opt.state[p] = {"step": torch.tensor(float(moments["step"]), dtype=torch.float32),
                            "exp_avg": torch.from_numpy(np.array(moments["exp_avg"][n], dtype=np.float32)),
                            "exp_avg_sq": torch.from_numpy(np.array(moments["exp_avg_sq"][n], dtype=np.float32))}
    return opt.state_dict()


def save_checkpoint(path, params: dict, spec: GPTSpec, tokenizer=None, optim: AdamWConfig | None = None,
                    moments: dict | None = None) -> Path:
    """A nanoGPT out_dir at `path` (a folder, or the ckpt.pt inside one): ckpt.pt with model,
    optimizer (moments or fresh), model_args, iter_num (the moments' step), best_val_loss and
    config.dataset (the folder's absolute path), and meta.pkl beside it when the vocabulary is known."""
    torch = _torch()
    check_params(params, spec, source="params to convert")
    path = Path(path)
    ckpt_path = path if path.suffix == ".pt" else path / CKPT
    folder = ckpt_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    model_args = {"n_layer": spec.n_layer, "n_head": spec.n_head, "n_embd": spec.n_embd,
                  "block_size": spec.block_size, "bias": True, "vocab_size": spec.vocab_size, "dropout": 0.0}
    config = {"dataset": str(folder.resolve())}
    if isinstance(tokenizer, ByteTokenizer):
        config[BYTE_VOCAB] = "byte"
    ckpt = {
        "model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_nanogpt_state_dict(params).items()},
        "optimizer": adamw_state_dict(spec, optim or AdamWConfig(), moments),
        "model_args": model_args,
        "iter_num": int(moments["step"]) if moments else 0,
        "best_val_loss": math.inf,  # nanoGPT keeps its first evaluation's checkpoint
        "config": config,
    }
    with atomic_path(ckpt_path) as tmp:
        torch.save(ckpt, str(tmp))
    if tokenizer is not None:
        write_meta(folder / META, tokenizer)
    return ckpt_path

