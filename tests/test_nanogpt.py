"""nanoGPT interop against nanoGPT's side written out here, independently, from what nanoGPT is:

- its model: transformer.{wte, wpe, h[i].{ln_1, attn.{c_attn, c_proj}, ln_2, mlp.{c_fc, c_proj}}, ln_f},
  lm_head tied to wte, causal attention, the exact GELU (nn.GELU()), LayerNorm eps 1e-5, biases
  optional (bias=False drops them from Linear and LayerNorm);
- its files: ckpt.pt = {model, optimizer, model_args, iter_num, best_val_loss, config};
  data/<dataset>/meta.pkl = {vocab_size, itos, stoi} of the sorted characters; the split at int(0.9 n);
- sample.py: meta from os.path.join('data', config['dataset'], 'meta.pkl'), from its working directory;
  generate: the last block_size tokens, forward, the last position's logits, the next token;
- train.py --init_from=resume: configure_optimizers' two groups (dim >= 2 decayed, then the rest),
  AdamW.load_state_dict(checkpoint['optimizer']), clip the gradient norm to 1, step.
"""

import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from gptspec.data import BatchSampler, load_corpus  # noqa: E402
from suite.cli import main  # noqa: E402

ARGS = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0)


# --- nanoGPT, as described above ---------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.c_attn = nn.Linear(a["n_embd"], 3 * a["n_embd"], bias=a["bias"])
        self.c_proj = nn.Linear(a["n_embd"], a["n_embd"], bias=a["bias"])
        self.n_head = a["n_head"]

    def forward(self, x):
        B, T, C = x.shape
        heads = [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2)]
        return self.c_proj(F.scaled_dot_product_attention(*heads, is_causal=True).transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        C = a["n_embd"]
        self.ln_1 = nn.LayerNorm(C, eps=1e-5, bias=a["bias"])
        self.attn = Attention(a)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5, bias=a["bias"])
        self.mlp = nn.Sequential()
        self.mlp.c_fc = nn.Linear(C, 4 * C, bias=a["bias"])
        self.mlp.gelu = nn.GELU()
        self.mlp.c_proj = nn.Linear(4 * C, C, bias=a["bias"])

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.block_size = a["block_size"]
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(a["vocab_size"], a["n_embd"]), wpe=nn.Embedding(a["block_size"], a["n_embd"]),
            h=nn.ModuleList(Block(a) for _ in range(a["n_layer"])), ln_f=nn.LayerNorm(a["n_embd"], bias=a["bias"])))
        self.lm_head = nn.Linear(a["n_embd"], a["vocab_size"], bias=False)
        self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx, targets=None):
        t = self.transformer
        x = t.wte(idx) + t.wpe(torch.arange(idx.shape[1]))
        for block in t.h:
            x = block(x)
        logits = self.lm_head(t.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        return logits, loss

    @torch.no_grad()
    def generate_greedy(self, idx, new_tokens):
        """generate() with top_k=1: the only token left is the likeliest."""
        for _ in range(new_tokens):
            logits, _ = self(idx[:, -self.block_size:])
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return idx


def configure_optimizers(model, weight_decay, lr, betas):
    params = dict(model.named_parameters())
    return torch.optim.AdamW([{"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0}],
                             lr=lr, betas=betas)


def prepare(root, text, dataset="mini"):
    """data/<dataset>/: meta.pkl as prepare.py writes it; returns (encode, decode, val ids)."""
    chars = sorted(set(text))
    stoi, itos = {ch: i for i, ch in enumerate(chars)}, dict(enumerate(chars))
    (root / "data" / dataset).mkdir(parents=True)
    with open(root / "data" / dataset / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)
    n = len(text)
    return (lambda s: [stoi[c] for c in s]), (lambda ids: "".join(itos[i] for i in ids)), \
        [stoi[c] for c in text[int(n * 0.9):]]


def corpus_text(n=6000, seed=0):
    """Text with capitals, punctuation and newlines: 31 distinct characters."""
    words = ["ROMEO:", "JULIET:", "the", "and", "love,", "night;", "is", "a", "rose", "thou", "art!", "What?\n"]
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(words, n // 4))[:n]


def nanogpt_checkpoint(root, text, seed=0, bias=False, scale=0.3):
    """out-mini/ckpt.pt as train.py saves it (a compiled model's _orig_mod. keys), beside
    data/mini/meta.pkl; weights larger than nanoGPT's init so the logits are far from uniform."""
    encode, decode, val = prepare(root, text)
    args = {**ARGS, "bias": bias, "vocab_size": len(set(text))}
    torch.manual_seed(seed)
    model = NanoGPT(args)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(scale * torch.randn_like(p)) if name.endswith(("weight", "bias")) else None
    opt = configure_optimizers(model, 0.1, 1e-3, (0.9, 0.99))
    (root / "out-mini").mkdir()
    torch.save({"model": {"_orig_mod." + k: v for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(),
                "model_args": args, "iter_num": 250, "best_val_loss": torch.tensor(1.5),
                "config": {"dataset": "mini", "beta2": 0.99}}, root / "out-mini" / "ckpt.pt")
    return model, encode, decode, val


def mean_loss_over_windows(model, val, T):
    """Every non-overlapping T-window of the split from its start, targets shifted by one."""
    n = (len(val) - 1) // T
    data = torch.tensor(val)
    x, y = data[:n * T].view(n, T), data[1:n * T + 1].view(n, T)
    with torch.no_grad():
        return float(model(x, y)[1]), n * T


# --- nanoGPT -> gptbench --------------------------------------------------------------------------
def test_a_nanogpt_checkpoint_converts_with_its_vocabulary_and_scores_as_nanogpt(tmp_path, monkeypatch, capsys):
    text = corpus_text()
    model, encode, decode, val = nanogpt_checkpoint(tmp_path, text)
    (tmp_path / "input.txt").write_text(text)
    monkeypatch.chdir(tmp_path)  # nanoGPT's folder: where sample.py finds data/mini/meta.pkl
    assert main(["convert", "out-mini/ckpt.pt", "w.safetensors"]) == 0
    assert f"vocabulary of {len(set(text))} characters from data/mini/meta.pkl" in capsys.readouterr().err

    # the full validation split, float64: nanoGPT's model scored here, to rounding
    model = model.double()
    want, tokens = mean_loss_over_windows(model, val, ARGS["block_size"])
    assert main(["eval", "--weights", "w.safetensors", "--corpus", "input.txt", "--dtype", "float64", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["val_tokens"] == tokens == 592 and got["split_tokens"] == len(val) == 600
    assert got["spec"]["gelu"] == "erf" and abs(got["val_loss"] - want) < 1e-12, (got["val_loss"], want)
    # the tanh GELU would be another function: the exactness above is the erf form's
    assert main(["eval", "--weights", "w.safetensors", "--spec", json.dumps({**got["spec"], "gelu": "tanh"}),
                 "--corpus", "input.txt", "--dtype", "float64", "--json"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["val_loss"] - want) > 1e-6

    # its own vocabulary, and nanoGPT's window: the same greedy tokens well past block_size
    prompt, new = "ROMEO:", 3 * ARGS["block_size"]
    nano = model.generate_greedy(torch.tensor([encode(prompt)]), new)[0].tolist()
    for weights in ("w.safetensors", "out-mini"):  # the converted file, and the out_dir itself
        assert main(["generate", "--weights", weights, "--prompt", prompt, "--temperature", "0", "--dtype", "float64",
                     "--window", "sliding", "--max-new-tokens", str(new), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["tokens"] == nano and out["text"] == decode(nano)
    # the cache refill sees the same windows until the context is first full
    assert main(["generate", "--weights", "w.safetensors", "--prompt", prompt, "--temperature", "0", "--dtype",
                 "float64", "--max-new-tokens", str(new), "--json"]) == 0
    refill = json.loads(capsys.readouterr().out)["tokens"]
    agree = ARGS["block_size"] - len(prompt) + 1
    assert refill[:len(prompt) + agree] == nano[:len(prompt) + agree]


def test_the_meta_pkl_is_found_where_nanogpt_keeps_it_or_given(tmp_path, monkeypatch):
    from gptspec import nanogpt

    text = corpus_text()
    nanogpt_checkpoint(tmp_path, text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not nanoGPT's folder: the out_dir's parent's data/ still holds it
    ckpt = nanogpt.load_checkpoint(tmp_path / "out-mini")
    assert ckpt.tokenizer.chars == "".join(sorted(set(text))) and ckpt.spec.gelu == "erf" and ckpt.spec.name == "out-mini"
    assert any("bias=False" in n for n in ckpt.notes) and np.all(ckpt.params["h.0.mlp.c_fc.bias"] == 0)
    (tmp_path / "data" / "mini" / "meta.pkl").rename(tmp_path / "moved.pkl")
    missing = nanogpt.load_checkpoint(tmp_path / "out-mini" / "ckpt.pt")
    assert missing.tokenizer is None and any("no meta.pkl found" in n for n in missing.notes)
    assert nanogpt.load_checkpoint(tmp_path / "out-mini", meta=tmp_path / "moved.pkl").tokenizer.chars == ckpt.tokenizer.chars


# --- gptbench -> nanoGPT --------------------------------------------------------------------------
def test_a_gptbench_run_converts_to_a_folder_sample_and_resume_accept(tmp_path, monkeypatch, capsys):
    """Trained 6 steps, converted, then resumed one step in nanoGPT's way: the weights of the
    same run trained 7 steps. A fresh optimizer state instead lands elsewhere."""
    text = corpus_text(4000, seed=1)
    (tmp_path / "input.txt").write_text(text)
    spec = json.dumps({"vocab_size": 40, **{k: ARGS[k] for k in ("n_layer", "n_head", "n_embd", "block_size")}})
    lr = 3e-3  # constant (no warm-up, min_lr = lr), so a 6-step run is the first 6 steps of a 7-step one
    recipe = ["--spec", spec, "--gelu", "erf", "--corpus", str(tmp_path / "input.txt"), "--batch-size", "4",
              "--lr", str(lr), "--min-lr", str(lr), "--lr-warmup", "0", "--beta2", "0.99", "--json"]
    for steps in (6, 7):
        assert main(["train", "--steps", str(steps), "--out", str(tmp_path / f"run{steps}"), *recipe]) == 0
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "run6" / "weights.safetensors"), str(tmp_path / "out")]) == 0
    assert "AdamW state of step 6" in capsys.readouterr().err

    # sample.py, from some other working directory
    monkeypatch.chdir(tmp_path / "run7")
    checkpoint = torch.load(os.path.join(str(tmp_path / "out"), "ckpt.pt"), map_location="cpu")
    model = NanoGPT(checkpoint["model_args"])
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()})
    meta_path = os.path.join("data", checkpoint["config"]["dataset"], "meta.pkl")
    assert os.path.exists(meta_path)
    with open(meta_path, "rb") as f:
        meta = pickle.load(f)
    assert "".join(meta["itos"][i] for i in range(meta["vocab_size"])) == "".join(sorted(set(text)))
    assert [meta["stoi"][c] for c in "ROMEO:"] == load_corpus(str(tmp_path / "input.txt")).tokenizer.encode("ROMEO:").tolist()

    # train.py --init_from=resume: one more step on the 7th batch of the run
    corpus = load_corpus(str(tmp_path / "input.txt"))
    sampler = BatchSampler(corpus.train, 4, ARGS["block_size"], seed=0)
    x, y = [torch.from_numpy(b) for b in [sampler.next() for _ in range(7)][-1]]
    from gptspec.weights import load_safetensors

    _, want = load_safetensors(tmp_path / "run7" / "weights.safetensors")
    assert checkpoint["iter_num"] == 6
    distances = {}
    for state in ("resumed", "fresh"):
        model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in checkpoint["model"].items()})
        optimizer = configure_optimizers(model, 0.1, lr, (0.9, 0.95))
        if state == "resumed":
            optimizer.load_state_dict(checkpoint["optimizer"])
            assert optimizer.param_groups[0]["betas"] == (0.9, 0.99)  # the run's, not the command line's
        for group in optimizer.param_groups:
            group["lr"] = lr
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        got = {k.removeprefix("transformer."): v.detach().numpy() for k, v in model.state_dict().items()}
        distances[state] = max(float(np.abs(got[n] - want[n]).max() / np.abs(want[n]).max()) for n in want)
    # float32 on both sides: one AdamW step's rounding, amplified where v is small (3e-5 measured;
    # the ladder's float32 parameter tolerance is 1e-3), against a fresh state's 0.3
    assert distances["resumed"] < 2e-4 and distances["fresh"] > 1e-2, distances


def test_without_a_training_run_the_optimizer_entry_is_fresh_and_loads(tmp_path):
    from gptspec import nanogpt
    from gptspec.spec import preset
    from gptspec.weights import init_params

    spec = preset("tiny").replace(gelu="erf")
    nanogpt.save_checkpoint(tmp_path / "o", init_params(spec), spec)
    checkpoint = torch.load(tmp_path / "o" / "ckpt.pt")
    model = NanoGPT({**checkpoint["model_args"]})
    model.load_state_dict(checkpoint["model"])
    optimizer = configure_optimizers(model, 0.1, 1e-3, (0.9, 0.99))
    optimizer.load_state_dict(checkpoint["optimizer"])
    assert checkpoint["optimizer"]["state"] == {} and checkpoint["iter_num"] == 0
    assert [len(g["params"]) for g in optimizer.param_groups] == [2 + 4 * 2, 2 * 8 + 2]
    assert not (tmp_path / "o" / "meta.pkl").exists()  # no vocabulary known, none invented


# --- a meta.pkl that would run code ------------------------------------------------------------------
class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling it would create the marker file


def test_a_meta_pkl_that_would_run_code_is_refused_and_the_code_never_runs(tmp_path):
    nanogpt_checkpoint(tmp_path, corpus_text())
    marker = tmp_path / "pwned"
    meta = tmp_path / "out-mini" / "meta.pkl"
    meta.write_bytes(pickle.dumps({"vocab_size": 40, "itos": RunsCode(str(marker)), "stoi": {}}))
    proc = subprocess.run([sys.executable, "-m", "suite", "convert", str(tmp_path / "out-mini"),
                           str(tmp_path / "w.safetensors")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "run code" in proc.stderr
    assert re.search(r"asks to load \w+\.open\b", proc.stderr)  # io.open: what the pickle names
    assert not marker.exists() and not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize("meta, says", [
    ({"vocab_size": 2, "itos": {0: "a", 1: "b"}, "stoi": {"a": 0, "b": 1}, "scale": 0.5}, "strings and integers"),
    ({"vocab_size": 2, "itos": {0: "ab", 1: "c"}, "stoi": {"ab": 0, "c": 1}}, "one character"),
    ({"vocab_size": 2, "itos": {0: "a", 1: "b"}, "stoi": {"a": 1, "b": 0}}, "inverse"),
    ([1, 2], "strings and integers"),
])
def test_a_meta_pkl_other_than_nanogpts_is_refused_saying_why(tmp_path, meta, says):
    from gptspec.errors import WeightsError
    from gptspec.nanogpt import read_meta

    path = tmp_path / "meta.pkl"
    path.write_bytes(pickle.dumps(meta))
    with pytest.raises(WeightsError, match=says):
        read_meta(path)
