"""Every bad input a careless user (or an attacker) gives gptbench ends before any work with
exit code 2 and one paragraph that names the flag or the file and what to do -- never a
traceback, never work lost after it was done. Each case is a probe a user met, run through
the real CLI (`suite.cli.main`) in this process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gptspec.spec import preset
from gptspec.nanogpt import save_checkpoint
from gptspec.weights import init_params, save_safetensors
from suite import calibrate, env
from suite.cli import main

REPO = Path(__file__).resolve().parents[1]
MATRIX = "backends: [numpy]\nworkloads: [train]\nspecs: [tiny]\nhost_classes: {local: {budget_mb: 1000}}\n"


def fails(argv, capsys, *expected) -> str:
    """Run the CLI; assert exit 2 and one paragraph holding each `expected`; return it."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own exit, through suite.cli._Parser.error
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and err and "\n\n" not in err, err
    for text in expected:
        assert text in err, err
    return err


def no_work(monkeypatch):
    """Make the work itself fail loudly: a check that only happens after it is caught."""
    def refuse(*a, **k):
        raise AssertionError("the work started before the bad input was refused")

    monkeypatch.setattr("suite.runner.run_here", refuse)
    monkeypatch.setattr("suite.runner.run_cell", refuse)


# --- argument domains: refused by the parser ----------------------------------------------------
@pytest.mark.parametrize("argv, flag", [
    (["train", "--steps", "-1"], "--steps"),
    (["train", "--steps", "0"], "--steps"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--eval-batches", "0"], "--eval-batches"),
    (["train", "--device", "tpu"], "--device"),
    (["--threads", "-1", "train"], "--threads"),
    (["--threads", "0", "train"], "--threads"),
    (["check", "numpy", "--batch-size", "0"], "--batch-size"),
    (["check", "numpy", "--samples", "-1"], "--samples"),
    (["check", "numpy", "--steps", "0"], "--steps"),
    (["cell", "--budget-mb", "0"], "--budget-mb"),
    (["cell", "--budget-mb", "-5"], "--budget-mb"),
    (["cell", "--gpu-budget-mb", "0"], "--gpu-budget-mb"),
    (["cell", "--timeout", "0"], "--timeout"),
    (["cell", "--timeout", "inf"], "--timeout"),
    (["generate", "--prompt", "a", "--max-new-tokens", "-3"], "--max-new-tokens"),
    (["generate", "--prompt", "a", "--temperature", "-1"], "--temperature"),
    (["generate", "--prompt", "a", "--top-k", "0"], "--top-k"),
    (["calibrate", "--device", "tpu"], "--device"),
    (["calibrate", "--device", "mps"], "--device"),
    (["backends", "--device", "cuda:x"], "--device"),
])
def test_an_argument_out_of_its_domain_is_refused_by_the_parser(argv, flag, capsys, monkeypatch):
    no_work(monkeypatch)
    fails(argv, capsys, f"argument {flag}: expected", "--help") if "calibrate" not in argv else \
        fails(argv, capsys, f"argument {flag}: calibration measures cpu, cuda, cuda:N")


def test_limits_take_none_for_no_limit_and_good_values_pass():
    from suite.cli import build_parser

    args = build_parser().parse_args(["cell", "--budget-mb", "none", "--timeout", "None", "--device", "cuda:1"])
    assert (args.budget_mb, args.timeout, args.device) == (None, None, "cuda:1")
    args = build_parser().parse_args(["generate", "--prompt", "a", "--temperature", "0", "--top-k", "1"])
    assert (args.temperature, args.top_k) == (0.0, 1)


def test_untrained_generation_samples_only_the_tokenizers_ids_and_decodes_every_one(capsys):
    # tiny's vocab_size is 32, the synthetic corpus has 8 letters: untrained weights, nearly
    # uniform over 32, would sample an id >= 8 in 40 draws with probability 1 - (8/32)^40
    # unless generation is limited to the tokenizer's vocabulary
    assert main(["generate", "--prompt", "a", "--max-new-tokens", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tokens"]) == 41 and all(0 <= t < 8 for t in out["tokens"])
    assert "\ufffd" not in out["text"] and len(out["text"]) == 41 and set(out["text"]) <= set("abcdefgh")


# --- outputs: proven writable before the work ---------------------------------------------------
@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write into, even root: a read-only tmpfs where mounting is
    allowed, else (not root) one without write permission."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("root without mount: no way to make a folder read-only for root here")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_train_out_onto_a_file_or_a_read_only_folder_fails_before_training(tmp_path, read_only_dir, capsys,
                                                                          monkeypatch):
    no_work(monkeypatch)
    existing = tmp_path / "existing"
    existing.write_text("x")
    fails(["train", "--steps", "2", "--out", str(existing)], capsys, f"--out {existing}: cannot write there")
    fails(["train", "--steps", "2", "--out", str(read_only_dir / "run")], capsys, "cannot write there")
    assert existing.read_text() == "x"


def test_cell_out_onto_a_folder_or_a_read_only_folder_fails_before_the_cell(tmp_path, read_only_dir, capsys,
                                                                           monkeypatch):
    no_work(monkeypatch)
    fails(["cell", "--out", str(tmp_path)], capsys, f"--out {tmp_path}: cannot write the record there",
          "it is a folder")
    fails(["cell", "--out", str(read_only_dir / "r.json")], capsys, "cannot write the record there")


def test_cell_out_is_written_whole_and_replaces_a_file(tmp_path, capsys):
    out = tmp_path / "deep" / "r.json"
    assert main(["cell", "--option", "steps=2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["status"] == "ok"
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary left beside it


# --- loaders: a bad file is named, with what is wrong ---------------------------------------------
def test_bad_checkpoints_are_explained(tmp_path, capsys):
    out = str(tmp_path / "o.safetensors")
    notzip = tmp_path / "notzip.pt"
    notzip.write_bytes(b"hello, not a checkpoint")
    fails(["convert", str(notzip), out], capsys, f"{notzip} is not a readable PyTorch checkpoint",
          "not a zip archive")
    keyless = tmp_path / "keyless.pt"
    torch.save({"foo": 1}, keyless)
    fails(["convert", str(keyless), out], capsys, f"{keyless} is not a nanoGPT checkpoint", "found ['foo']")
    argless = tmp_path / "argless.pt"
    torch.save({"model": {}, "model_args": {"n_layer": 2}}, argless)
    fails(["convert", str(argless), out], capsys, "model_args lack vocab_size, block_size, n_head, n_embd")
    assert not Path(out).exists()


def test_convert_round_trips_a_real_checkpoint(tmp_path, capsys):
    spec = preset("tiny")
    params = init_params(spec, 3)
    save_checkpoint(tmp_path / "ckpt.pt", params, spec)
    assert main(["convert", str(tmp_path / "ckpt.pt"), str(tmp_path / "w.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "w.safetensors"), str(tmp_path / "back.pt")]) == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)["model"]
    assert np.array_equal(back["transformer.h.1.mlp.c_fc.weight"].numpy(), params["h.1.mlp.c_fc.weight"])


@pytest.mark.parametrize("key", ["spec", "tokenizer"])
def test_safetensors_metadata_that_is_not_json_is_explained(key, tmp_path, capsys):
    spec = preset("tiny")
    path = tmp_path / "w.safetensors"
    save_safetensors(path, init_params(spec, 0), spec, {"tokenizer": {"kind": "char", "chars": "abcdefgh"}})
    from safetensors.numpy import load_file, save_file

    from gptspec.weights import read_safetensors

    meta = read_safetensors(path)[1]
    save_file(load_file(path), path, metadata={**meta, key: "{not json"})
    fails(["generate", "--weights", str(path), "--prompt", "a"], capsys, f"{path}: its metadata {key!r} is not JSON")


def test_bad_matrix_files_are_explained(tmp_path, capsys, monkeypatch):
    no_work(monkeypatch)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    fails(["run", str(binary)], capsys, f"matrix file {binary} is not UTF-8 text")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    fails(["run", str(empty)], capsys, "a matrix is a YAML mapping", "got an empty file")
    listed = tmp_path / "list.yaml"
    listed.write_text("- numpy\n")
    fails(["run", str(listed)], capsys, "got a YAML list")
    fails(["run", str(tmp_path)], capsys, f"matrix file {tmp_path} is a folder")


@pytest.mark.parametrize("extra, where, what", [
    ("exclude: [{backend: nmupy}]", "exclude.0.backend", "'nmupy' is no backend of this matrix; its backends: numpy"),
    ("exclude: [{dtype: float16}]", "exclude.0.dtype", "'float16' is no dtype of this matrix"),
    ("exclude: [{host_class: lcoal}]", "exclude.0.host_class", "'lcoal' is no host_class of this matrix"),
    ("exclude: [{colour: red}]", "exclude", "entry 0 has unknown key(s) ['colour']"),
    ("seeds: [-1]", "seeds.0", "Input should be greater than or equal to 0"),
])
def test_a_matrix_that_names_what_it_does_not_have_is_refused(extra, where, what, tmp_path, capsys, monkeypatch):
    no_work(monkeypatch)
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX + extra + "\n")
    fails(["run", str(path)], capsys, f"  {where}: {what}")


def test_an_exclude_entry_that_matches_no_cell_is_refused(tmp_path, capsys):
    from suite import matrix as M

    text = MATRIX.replace("workloads: [train]", "workloads: {train: {}, attention: {backends: [math]}}")
    with pytest.raises(Exception, match=r"exclude.0: matches no cell of this matrix"):
        M.parse(text + "exclude: [{backend: math, workload: train}]\n", "m.yaml")
    kept = M.parse(text + "exclude: [{backend: math}]\n", "m.yaml").cells()  # a real exclusion
    assert [(c.backend, c.workload) for c, _ in kept] == [("numpy", "train")]


def test_corpus_that_is_a_folder_or_unreadable_is_explained(tmp_path, capsys, monkeypatch):
    no_work(monkeypatch)
    fails(["train", "--corpus", str(tmp_path)], capsys, f"corpus file {tmp_path} is a folder")
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be " * 50)

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)  # root reads anything: the error is played
    fails(["train", "--corpus", str(corpus)], capsys, f"cannot read corpus file {corpus}: Permission denied")


def test_a_plugin_that_does_not_load_is_bad_input_wherever_it_is_named(capsys, monkeypatch):
    no_work(monkeypatch)
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    raising, misfit = "plugin_raises_on_import:X", "plugin_misfits:StepWithoutLr"
    for argv in (["check", raising], ["train", "--backend", raising], ["generate", "--backend", raising, "--prompt", "a"],
                 ["cell", "--backend", raising]):
        fails(argv, capsys, "importing 'plugin_raises_on_import' raised RuntimeError")
    for argv in (["check", misfit], ["train", "--backend", misfit], ["cell", "--backend", misfit]):
        fails(argv, capsys, "StepWithoutLr.step(self) cannot be called as the suite calls it")
    fails(["cell", "--backend", "nmupy"], capsys, "nmupy")


# --- the calibration cache -------------------------------------------------------------------------
@pytest.fixture
def bad_cache(tmp_path, monkeypatch):
    """write(section) -> the cache file of this host, holding `section` as its cpu section."""
    monkeypatch.setenv("GPTBENCH_CACHE_DIR", str(tmp_path))
    e = env.capture()
    path = calibrate.cache_path(e["fingerprint"])
    path.parent.mkdir(parents=True)

    def write(section):
        path.write_text(json.dumps({"fingerprint": e["fingerprint"], "env": e, "cpu": section}))
        return path
    return write


GOOD = {"gemm_flops_per_s": {"float32": {"numpy": 5e10}}, "bandwidth_bytes_per_s": {"numpy": 1e10},
        "measured_at": "2026-01-01T00:00:00+00:00", "threads": 2, "seconds": 1.0}


@pytest.mark.parametrize("peak, shown", [("fast", "'fast'"), (-5e10, "-50000000000.0"), (0, "0")])
def test_a_cache_whose_peak_is_not_a_rate_is_explained_and_replaced_by_a_cell(peak, shown, bad_cache, capsys,
                                                                            monkeypatch):
    path = bad_cache({**GOOD, "gemm_flops_per_s": {"float32": {"numpy": peak}}})
    fails(["calibrate", "--cached"], capsys, f"calibration cache {path}: cpu.gemm_flops_per_s.float32.numpy is "
          f"{shown}, not a measured rate", "`gptbench calibrate` measures again")

    measured = []

    def measure(cmd, **kw):  # the measurement child, played: its real run takes seconds
        measured.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(GOOD), stderr="")

    monkeypatch.setattr(calibrate.subprocess, "run", measure)
    from suite.cell import Cell
    from suite.record import Limits
    from suite.runner import run_cell

    rec = run_cell(Cell.make("numpy", "train", "tiny", options={"steps": 3}), Limits(timeout_s=120)).to_dict()
    assert rec["status"] == "ok" and rec["calibration_error"] is None and len(measured) == 1
    m = rec["metrics"]
    assert m["peak_flops_per_s"] == 5e10 and m["mfu"] > 0 and m["mfu"] == pytest.approx(m["model_flops_per_s"] / 5e10)
    assert json.loads(path.read_text())["cpu"] == GOOD  # replaced: the next cell reads a good cache


def test_an_unparsable_cache_is_explained(bad_cache, capsys):
    path = bad_cache(GOOD)
    path.write_text("{truncated")
    fails(["calibrate", "--cached"], capsys, f"calibration cache {path} is unreadable")


def test_a_typo_in_a_workload_option_is_refused_at_its_field(tmp_path, capsys, monkeypatch):
    no_work(monkeypatch)
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX.replace("workloads: [train]", "workloads: {train: {options: {stepz: 2}}}"))
    fails(["run", str(path)], capsys, "  workloads.train.options.stepz: unknown option; allowed: steps,")
    fails(["cell", "--option", "stepz=2"], capsys, "workload 'train' option 'stepz': unknown option")


def test_a_run_into_a_read_only_folder_or_a_file_fails_before_ray_starts(tmp_path, read_only_dir, capsys):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(MATRIX)
    fails(["run", str(matrix), "--out", str(read_only_dir / "run")], capsys,
          f"cannot start a run in {read_only_dir / 'run'}", "give an --out folder you can write to")
    fails(["run", str(matrix), "--out", str(matrix)], capsys, f"--out {matrix} is a file")
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_a_refused_run_leaves_this_process_environment_as_it_was(tmp_path, capsys):
    import ray  # noqa: F401 -- importing ray sets RAY_CLIENT_MODE by itself: not ours to undo

    before = dict(os.environ)
    fails(["run", str(tmp_path / "absent.yaml")], capsys, "does not exist")
    assert dict(os.environ) == before
