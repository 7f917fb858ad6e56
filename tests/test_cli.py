"""The command line as a user meets it: real processes, exit codes, one-paragraph errors."""

import json
import os
import subprocess
import sys

import pytest

from suite.cli import main


def gptbench(*args, **kw):
    return subprocess.run([sys.executable, "-m", "suite", *args], capture_output=True, text=True,
                          timeout=300, **kw)


def assert_clean_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gptbench "), proc.stderr
    for needle in needles:
        assert needle in proc.stderr


def test_check_numpy_prints_a_line_per_tensor_and_passes():
    proc = gptbench("check", "numpy", "--samples", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(" ok" in ln for ln in lines) == 28 and lines[-1] == "PASS: 28/28 tensors"


def test_train_then_generate_from_the_saved_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--steps", "30", "--out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    m = record["metrics"]
    assert record["status"] == "ok" and len(m["losses"]) == 30 and m["tokens_per_s"] > 0
    assert m["entropy_floor"] == pytest.approx(0.7536, abs=1e-3)
    assert json.loads((out / "record.json").read_text()) == record
    assert main(["generate", "--weights", str(out / "weights.safetensors"), "--prompt", "abc",
                 "--max-new-tokens", "25", "--temperature", "0.8", "--top-k", "4", "--json"]) == 0
    gen = json.loads(capsys.readouterr().out)
    assert gen["text"].startswith("abc") and len(gen["text"]) == 28 and set(gen["text"]) <= set("abcdefgh")


def test_generate_from_barely_trained_weights_samples_only_the_corpus_letters(tmp_path, capsys):
    # tiny's 32 ids for the synthetic corpus's 8 letters: two steps leave the padding ids
    # likely, and sampling one was an IndexError in the tokenizer's decode
    out = tmp_path / "run"
    assert main(["train", "--steps", "2", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["generate", "--weights", str(out / "weights.safetensors"), "--prompt", "abc",
                 "--max-new-tokens", "300", "--json"]) == 0
    gen = json.loads(capsys.readouterr().out)
    assert len(gen["text"]) == 303 and set(gen["text"]) <= set("abcdefgh") and max(gen["tokens"]) < 8


def test_diverged_training_exits_nonzero_with_the_status(capsys):
    with pytest.warns(RuntimeWarning):
        code = main(["train", "--steps", "10", "--lr", "1e30", "--json"])
    assert code == 1 and json.loads(capsys.readouterr().out)["status"] == "diverged"


def test_bad_input_gets_one_paragraph_not_a_traceback(tmp_path):
    assert_clean_error(gptbench("train", "--spec", "gpt5"), "unknown spec preset 'gpt5'", "shakespeare-char")
    assert_clean_error(gptbench("train", "--spec", '{"vocab_size": 8, "block_size": 8, "n_layer": 1, '
                                '"n_head": 3, "n_embd": 16}'), "divisible by n_head")
    env = {**os.environ, "GPTBENCH_DATA_DIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    assert_clean_error(gptbench("train", "--corpus", "shakespeare", env=env), "Looked in", str(tmp_path))
    assert_clean_error(gptbench("train", "--corpus", str(tmp_path / "missing.txt")), "does not exist")
    assert_clean_error(gptbench("generate", "--prompt", "hello!"), "outside the saved vocabulary")
    assert_clean_error(gptbench("train", "--backend", "nosuch"), "unknown backend 'nosuch'")
    # weights made for tiny, loaded as another spec
    w = tmp_path / "w"
    assert gptbench("train", "--steps", "2", "--out", str(w)).returncode == 0
    assert_clean_error(gptbench("generate", "--weights", str(w / "weights.safetensors"), "--spec", "lumgpt",
                                "--prompt", "ab"), "does not match spec 'lumgpt'", "wrong shape")


def test_cell_options_are_checked_before_a_child_is_spawned():
    assert_clean_error(gptbench("cell", "--option", "stepz=3"), "workload 'train' option 'stepz': unknown option; "
                       "allowed: steps, batch_size")
    assert_clean_error(gptbench("cell", "--workload", "attention", "--option", "seq_lens=[0]"),
                       "option 'seq_lens': expected a non-empty list of integers >= 1, got [0]")
    assert_clean_error(gptbench("cell", "--workload", "gradcheck"), "unknown workload 'gradcheck'; known: attention")


def test_lumgpt_trains_with_numpy_under_150_mb_and_without_torch():
    # the child's own peak RSS as the kernel counts it (VmHWM). Not wait4's ru_maxrss: after
    # fork+exec that keeps the spawning process's high-water mark (here, pytest's).
    code = ("import sys, json; from suite.cli import main; rc = main(['train', '--spec', 'lumgpt', "
            "'--steps', '6', '--json']); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
            "print(json.dumps({'torch': 'torch' in sys.modules, 'rc': rc, 'peak_kb': int(hwm)}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    lines = proc.stdout.strip().splitlines()
    record, tail = json.loads(lines[0]), json.loads(lines[-1])
    assert proc.returncode == 0 and record["status"] == "ok"
    assert tail["torch"] is False and tail["rc"] == 0
    peak_mb = tail["peak_kb"] / 1024
    print(f"lumgpt numpy float32 training peak RSS: {peak_mb:.1f} MB")
    assert 30 < peak_mb < 150


def test_train_writes_the_same_record_as_a_train_cell(capsys):
    assert main(["train", "--steps", "4", "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert main(["cell", "--workload", "train", "--option", "steps=4", "--json"]) == 0
    cell = json.loads(capsys.readouterr().out)
    assert list(trained) == list(cell) and set(trained["metrics"]) == set(cell["metrics"])
    assert trained["schema_version"] == cell["schema_version"] and trained["cell_id"]
    assert (trained["workload"], trained["backend"], trained["options"]["steps"]) == ("train", "numpy", 4)
    assert trained["peak_rss_mb"] > 5 and trained["host"]["fingerprint"] == trained["host_fingerprint"]


def test_train_refuses_an_output_folder_it_cannot_write_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = gptbench("train", "--steps", "100000", "--out", str(blocker / "run"))
    assert_clean_error(proc, "cannot write there")
    assert "step " not in proc.stderr  # refused before the first step


def test_the_recipe_options_reach_the_optimizer_and_schedule(capsys):
    """--beta1/--beta2/--weight-decay/--min-lr: the losses are those of the library's train() on a
    backend made with that AdamWConfig and that final rate; a value out of range is bad input."""
    from backends.numpy_ref import NumpyBackend
    from gptspec.data import load_corpus
    from gptspec.optim import AdamWConfig
    from gptspec.spec import preset
    from workloads.train import config_for, train

    assert main(["train", "--steps", "12", "--lr-warmup", "2", "--beta1", "0.8", "--beta2", "0.99",
                 "--weight-decay", "0.0", "--min-lr", "0.0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    cfg = record["metrics"]["config"]
    assert (cfg["beta1"], cfg["beta2"], cfg["weight_decay"], cfg["min_lr"]) == (0.8, 0.99, 0.0, 0.0)
    model = NumpyBackend(preset("tiny"), optim=AdamWConfig(beta1=0.8, beta2=0.99, weight_decay=0.0))
    want = train(model, load_corpus("synthetic"), config_for("tiny", steps=12, lr_warmup_steps=2, min_lr=0.0,
                                                             eval_interval=0))["losses"]
    assert record["metrics"]["losses"] == want
    default = NumpyBackend(preset("tiny"))
    assert train(default, load_corpus("synthetic"), config_for("tiny", steps=12, lr_warmup_steps=2))["losses"] != want
    assert_clean_error(gptbench("train", "--beta2", "1.5"), "option 'beta2': expected a number in [0, 1], got 1.5")


def test_backends_prints_the_missing_extra_with_its_brackets(monkeypatch, capsys):
    """rich reads `[jax]` as markup and drops it unless escaped: the install hint must survive."""
    import backends.jax_backend as jb

    monkeypatch.setattr(jb, "jax", None)  # jax missing, whether or not this machine has it
    monkeypatch.setenv("COLUMNS", "250")  # one line per row, so the hint is not wrapped
    assert main(["backends"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.strip("│ ").startswith("jax "))
    assert "jax is not installed: pip install 'gptbench[jax]'" in row and row.split("│")[2].strip() == "no"
