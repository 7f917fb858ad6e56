"""The generate workload's pretrained weights (workloads/generate.py `pretrained`): trained once
per host, then read back by every cell that asks for the same training, byte for byte."""

import numpy as np

from backends.numpy_ref import NumpyBackend
from gptspec.data import load_corpus
from gptspec.spec import resolve_spec
from workloads.generate import pretrained
from workloads.train import config_for, train


def test_the_second_cell_reads_the_first_cells_weights_and_they_are_the_trained_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTBENCH_CACHE_DIR", str(tmp_path))
    spec, corpus = resolve_spec("markov"), load_corpus("synthetic")
    first, m1 = pretrained(spec, corpus, steps=6, seed=0)
    second, m2 = pretrained(spec, corpus, steps=6, seed=0)
    assert (m1["pretrain_cached"], m2["pretrain_cached"]) == (False, True)
    assert m1["pretrain_s"] > 0 and m2["pretrain_s"] == 0.0
    assert m1["weights_sha256"] == m2["weights_sha256"] and m1["pretrain_val_loss"] == m2["pretrain_val_loss"]
    assert all(np.array_equal(first[k], second[k]) for k in first)
    # independent truth: the same training done here, without the cache
    ref = NumpyBackend(spec, dtype="float32")
    train(ref, corpus, config_for(spec.name, steps=6, seed=0, eval_interval=0))
    assert all(np.array_equal(ref.state()[k], second[k]) for k in first)
    # other training, other weights: its own entry
    other, m3 = pretrained(spec, corpus, steps=7, seed=0)
    assert not m3["pretrain_cached"] and m3["weights_sha256"] != m1["weights_sha256"]
    assert len(list((tmp_path / "pretrained").glob("*.safetensors"))) == 2


def test_a_damaged_entry_is_trained_again_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTBENCH_CACHE_DIR", str(tmp_path))
    spec, corpus = resolve_spec("markov"), load_corpus("synthetic")
    _, m1 = pretrained(spec, corpus, steps=3, seed=1)
    entry, = (tmp_path / "pretrained").glob("*.safetensors")
    entry.write_bytes(b"not a safetensors file")
    _, m2 = pretrained(spec, corpus, steps=3, seed=1)
    assert not m2["pretrain_cached"] and m2["weights_sha256"] == m1["weights_sha256"]
    _, m3 = pretrained(spec, corpus, steps=3, seed=1)
    assert m3["pretrain_cached"]
