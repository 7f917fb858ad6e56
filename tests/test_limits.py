"""No input can exhaust the machine, and every damaged file is named: the limits of
gptspec/limits.py, the YAML loader (suite/yamlfile.py), matrix names and backends checked at
parse, run folders checked on read, and the corpus cases. Each probe ends with exit 2 and
one bounded paragraph before any work; the heavy ones are measured from outside (a fresh
process's largest child) to stay under 500 MB."""

import dataclasses
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import backends
from gptspec import limits
from gptspec.data import load_corpus, min_corpus_tokens
from gptspec.errors import GptbenchError, SpecError, WeightsError
from gptspec.spec import GPTSpec, preset
from gptspec.weights import init_params, load_safetensors, save_safetensors
from suite import env
from suite import matrix as M
from suite.cli import main

REPO = Path(__file__).resolve().parents[1]
MATRIX = "backends: [numpy]\nworkloads: [train]\nspecs: [tiny]\nhost_classes: {local: {budget_mb: 1000}}\n"
# within every field's bound, far beyond any machine: 1024 layers of width 8192 (~10 TB to train)
HUGE = '{"vocab_size": 65, "block_size": 1024, "n_layer": 1024, "n_head": 16, "n_embd": 8192}'


def fails(argv, capsys, *expected) -> str:
    """Run the CLI; assert exit 2 and one bounded paragraph holding each `expected`."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own exit
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and err and "\n\n" not in err and len(err) < 5000, err[:3000]
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def no_work(monkeypatch):
    """The work itself fails loudly: a refusal that comes only after it is caught."""
    def refuse(*a, **k):
        raise AssertionError("the work started before the bad input was refused")

    for target in ("suite.runner.run_here", "suite.runner.run_cell", "gptspec.weights.init_params",
                   "suite.dispatch.connect"):
        monkeypatch.setattr(target, refuse)


def peak_mb_of(argv, cwd) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MB) of `python -m suite ARGV`, measured from outside:
    a fresh process runs it as its only child and reads the child's ru_maxrss."""
    outer = ("import resource, subprocess, sys\n"
             "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "sys.stdout.write(f'{p.returncode}\\n{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n'"
             " + p.stderr)\n")
    out = subprocess.run([sys.executable, "-c", outer, sys.executable, "-m", "suite", *argv], cwd=cwd,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    code, peak_kb, err = out.split("\n", 2)
    return int(code), err, int(peak_kb) / 1024


# --- 1. budgets before allocation ----------------------------------------------------------------
@pytest.mark.parametrize("field", sorted(limits.SPEC_MAX))
def test_each_spec_field_has_an_upper_bound(field):
    base = dict(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32)
    at = {**base, field: limits.SPEC_MAX[field]}
    if field == "n_head":
        at["n_embd"] = limits.SPEC_MAX["n_head"]  # every head the same size
    GPTSpec(**at)  # at the bound: a spec (sizing it allocates nothing)
    with pytest.raises(SpecError, match=f"field '{field}' is {limits.SPEC_MAX[field] + 1:,}, above its limit of "
                                        f"{limits.SPEC_MAX[field]:,}"):
        GPTSpec(**{**at, field: limits.SPEC_MAX[field] + 1})
    xl = GPTSpec(vocab_size=50257, block_size=1024, n_layer=48, n_head=25, n_embd=1600)  # GPT-2 XL
    assert xl.n_params() > 1.5e9
    with pytest.raises(SpecError):  # its vocabulary or its block with three extra zeros
        xl.replace(**{field: getattr(xl, field) * 1000})


@pytest.mark.parametrize("argv", [
    ["train", "--spec", HUGE], ["cell", "--spec", HUGE], ["check", "numpy", "--spec", HUGE],
    ["check", "numpy", "--dtype", "float32", "--spec", HUGE], ["generate", "--spec", HUGE, "--prompt", "a"]])
def test_a_spec_beyond_this_machines_memory_is_refused_before_allocation(argv, capsys, no_work):
    err = fails(argv, capsys, "needs an estimated", "GB of memory, more than the", "available here",
                "nothing was allocated")
    assert "spec 'custom'" in err


def test_the_refusal_weighs_the_cells_estimate_against_the_available_memory(capsys, monkeypatch, no_work):
    from suite.cell import Cell
    from suite.memory import estimate_fields

    cell = Cell.make("numpy", "train", "lumgpt", options={"steps": 2, "batch_size": 8})
    estimate = estimate_fields(cell)["memory_estimate_mb"]
    # the spec's own tensors (weights, grads, two moments, activations) plus NumPy's overhead
    assert estimate == pytest.approx(preset("lumgpt").memory_estimate(8)["total"] / 2**20 + 45.0)
    monkeypatch.setattr(limits, "available_bytes", lambda: int((estimate - 1) * 2**20))
    argv = ["cell", "--spec", "lumgpt", "--option", "steps=2", "--option", "batch_size=8"]
    fails(argv, capsys,
          f"needs an estimated {estimate:,.0f} MB of memory, more than the {estimate - 1:,.0f} MB available here")
    monkeypatch.setattr(limits, "available_bytes", lambda: int((estimate + 1) * 2**20))
    with pytest.raises(AssertionError, match="the work started"):  # it fits: the cell would run
        main(argv)


def test_max_new_tokens_has_a_documented_maximum(capsys):
    from suite.cli import build_parser

    assert build_parser().parse_args(["generate", "--prompt", "a", "--max-new-tokens",
                                      str(limits.MAX_NEW_TOKENS)]).max_new_tokens == limits.MAX_NEW_TOKENS
    fails(["generate", "--prompt", "a", "--max-new-tokens", str(limits.MAX_NEW_TOKENS + 1)], capsys,
          "argument --max-new-tokens: expected an integer from 1 to 100,000")
    with pytest.raises(GptbenchError, match="max_new_tokens"):  # and the generate workload's option
        M.parse(MATRIX.replace("workloads: [train]", "workloads: {generate: {options: {max_new_tokens: 100001}}}"),
                "m.yaml")


def _sparse_weights(path: Path, wte_shape, spec=preset("tiny"), cut: int = 0) -> Path:
    """A safetensors file whose header is consistent (offsets = shape x 4 bytes) but whose
    wte is `wte_shape`, as a sparse file of that size (minus `cut` bytes)."""
    header, offset = {}, 0
    for name, shape in spec.param_shapes().items():
        shape = list(wte_shape) if name == "wte.weight" else list(shape)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * int(np.prod(shape))]}
        offset = header[name]["data_offsets"][1]
    header["__metadata__"] = {"format": "gptbench", "spec": spec.to_json()}
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset - cut)
    return path


def test_a_weights_header_is_checked_against_the_spec_before_a_tensor_is_read(tmp_path, capsys, monkeypatch):
    def never(*a, **k):
        raise AssertionError("a tensor was read")

    monkeypatch.setattr("safetensors.safe_open", never)
    big = _sparse_weights(tmp_path / "big.safetensors", (16_000_000, 32))  # 2 GB declared, ~nothing on disk
    assert big.stat().st_size > 2e9 and big.stat().st_blocks * 512 < 1e6
    fails(["generate", "--weights", str(big), "--prompt", "a"], capsys, f"{big} does not match spec 'tiny'",
          "wte.weight: (16000000, 32) (spec wants (32, 32))")
    short = _sparse_weights(tmp_path / "short.safetensors", (32, 32), cut=4)  # the header claims 4 bytes more
    with pytest.raises(WeightsError, match="is not a readable safetensors file .tensor 'ln_f.bias' declares F32 "
                                           r"\[32\], 128 bytes, at bytes .* of"):
        load_safetensors(short)
    huge_header = tmp_path / "h.safetensors"
    huge_header.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(WeightsError, match="its header declares 1,099,511,627,776 bytes; the file has 10"):
        load_safetensors(huge_header)


def test_weights_that_fit_the_spec_are_weighed_against_the_available_memory(tmp_path, monkeypatch):
    spec = preset("tiny")
    path = save_safetensors(tmp_path / "w.safetensors", init_params(spec, 0), spec)
    monkeypatch.setattr(limits, "available_bytes", lambda: path.stat().st_size)  # reading takes twice the file
    with pytest.raises(limits.TooBig, match=f"reading {path} needs an estimated 0 MB"):
        load_safetensors(path)
    monkeypatch.setattr(limits, "available_bytes", lambda: 2 * path.stat().st_size)
    assert load_safetensors(path)[0] == spec


def test_each_probe_of_the_issue_ends_in_exit_2_under_500_mb_measured_from_outside(tmp_path):
    (tmp_path / "laughs.yaml").write_text(_laughs(levels=9))
    _sparse_weights(tmp_path / "big.safetensors", (16_000_000, 32))
    probes = {
        "field 'vocab_size' is 1,000,000,000": ["train", "--spec", '{"vocab_size": 1000000000, "block_size": 16, '
                                                 '"n_layer": 2, "n_head": 2, "n_embd": 32}'],
        "more than the": ["cell", "--spec", HUGE],
        "does not match spec 'tiny'": ["generate", "--weights", "big.safetensors", "--prompt", "a"],
        "aliases expand to more than 10,000 values": ["run", "laughs.yaml"],
    }
    for expected, argv in probes.items():
        code, err, peak = peak_mb_of(argv, tmp_path)
        assert code == 2 and expected in err and "Traceback" not in err and len(err) < 1000, err
        assert peak < 500, (argv, peak)


# --- 2. YAML ----------------------------------------------------------------------------------------
def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines + [f"backends: [*a{levels - 1}]", ""])


def test_aliases_that_expand_beyond_the_bound_are_refused_in_bounded_time():
    import time

    from suite import yamlfile

    text = _laughs(levels=9)  # 9^9 = 387 million strings once expanded, ~500 bytes as written
    assert len(text) < 600
    t0 = time.perf_counter()
    with pytest.raises(GptbenchError, match=r"laughs.yaml line \d+: its aliases expand to more than 10,000 values"):
        yamlfile.load(text, "laughs.yaml")
    # refused while counting, not after expanding: expanding would take minutes and gigabytes, so
    # even a loaded machine is far inside this bound (the refusal itself takes milliseconds)
    assert time.perf_counter() - t0 < 20.0
    assert yamlfile.load(_laughs(levels=3), "small.yaml")["a2"][8][8][8] == "lol"  # 9^3 = 729 twice: within it
    with pytest.raises(GptbenchError, match="line 1: an alias refers to the node that holds it"):
        yamlfile.load("a: &a [1, *a]\n", "self.yaml")
    with pytest.raises(GptbenchError, match="deep.yaml nests too deep"):
        yamlfile.load("[" * 100_000, "deep.yaml")


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, capsys, no_work):
    path = tmp_path / "m.yaml"
    path.write_text(MATRIX + "specs: [lumgpt]\n")
    fails(["run", str(path)], capsys, f"{path} line 5: key 'specs' is given twice in one mapping (first on line 3)")
    nested = "host_classes: {local: {budget_mb: 1000, budget_mb: 2000}}"
    with pytest.raises(GptbenchError, match="m.yaml line 4: key 'budget_mb' is given twice"):
        M.parse(MATRIX.replace("host_classes: {local: {budget_mb: 1000}}", nested), "m.yaml")
    # a merge key's values may be overridden by the mapping's own keys: YAML's meaning, not a repeat
    merged = MATRIX.replace("host_classes: {local: {budget_mb: 1000}}",
                            "base: &base {budget_mb: 1000, threads: 1}\nhost_classes: {local: {<<: *base, threads: 2}}")
    from suite import yamlfile

    assert yamlfile.load(merged, "m.yaml")["host_classes"]["local"] == {"budget_mb": 1000, "threads": 2}


def test_a_value_in_an_error_is_quoted_within_a_few_hundred_characters(capsys, no_work):
    long = "x" * 1_000_000
    err = fails(["train", "--spec", json.dumps({"vocab_size": long, "block_size": 16, "n_layer": 2, "n_head": 2,
                                                "n_embd": 32})], capsys, "field 'vocab_size' must be a positive integer",
                "(1,000,002 characters in all)")
    assert len(err) < 600
    with pytest.raises(GptbenchError) as e:
        M.parse(MATRIX + f"exclude: [{{backend: {long}}}]\n", "m.yaml")
    assert "is no backend of this matrix" in str(e.value) and len(str(e.value)) < 1000


def test_an_error_is_held_to_a_screenful(capsys, monkeypatch):
    bad = "".join(f"  - {{backend: b{i}}}\n" for i in range(100))  # 100 exclude entries, each wrong
    with pytest.raises(GptbenchError) as e:
        M.parse(MATRIX + "exclude:\n" + bad, "m.yaml")
    lines = str(e.value).splitlines()
    assert len(lines) == 1 + 30 + 1 and lines[-1] == "  ... and 70 more" and "exclude.0.backend: 'b0'" in lines[1]

    def verbose(args):
        raise GptbenchError("y" * 100_000)

    monkeypatch.setattr("suite.cli.cmd_backends", verbose)
    err = fails(["backends"], capsys, "... (96,000 more characters left out)")
    assert len(err) < 4100


# --- 3. names are names ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../../tmp/x", "a/b", ".hidden", "-flag", "x" * 65, "", "a b", "caf\u00e9"])
def test_a_matrix_name_is_a_name_not_a_path(name, tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.yaml"
    path.write_text(f"name: {json.dumps(name)}\n" + MATRIX)
    fails(["run", str(path)], capsys, "  name: ", "is not a name: it names the run folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]  # no runs/ folder, nothing outside it


def test_good_names_pass():
    assert M.parse("name: pool-v2.1_x\n" + MATRIX, "m.yaml").name == "pool-v2.1_x"


# --- 4. backends resolved at parse ------------------------------------------------------------------
@pytest.mark.parametrize("where, text, match", [
    ("backends", MATRIX.replace("[numpy]", "[numpy, numpyy]"), "unknown backend 'numpyy' (did you mean 'numpy'?)"),
    ("workloads.attention.backends", MATRIX.replace("workloads: [train]", "workloads: {attention: {backends: [sdpaa]}}"),
     "unknown backend 'sdpaa' (did you mean 'sdpa'?)"),
    ("host_classes.local.backends", MATRIX.replace("budget_mb: 1000}", "budget_mb: 1000, backends: [trch]}"),
     "unknown backend 'trch' (did you mean 'torch'?)"),
    ("backends", MATRIX.replace("[numpy]", "[no_such_package.mod:Cls]"), "no package 'no_such_package' can be imported"),
])
def test_a_backend_that_does_not_exist_is_refused_at_parse(where, text, match, tmp_path, capsys, no_work):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    err = fails(["run", str(path)], capsys, f"  {where}: ", match)
    assert "known: numpy, torch, compile, triton, jax, mlx, math, sdpa" in err or "no package" in err


def test_existing_backends_pass_at_parse_without_importing_their_frameworks(monkeypatch):
    code = ("import sys\nfrom suite import matrix as M\n"
            "M.parse('backends: [numpy, torch, jax, mlx, triton, cell_backends:EscapingHelperBackend]\\n"
            "workloads: {train: {}, attention: {backends: [numpy, math, sdpa]}}\\nspecs: [tiny]\\n"
            "host_classes: {local: {budget_mb: 1000}}\\n', 'm.yaml')\n"
            "print(sorted(m for m in ('torch', 'jax', 'mlx', 'triton', 'cell_backends') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # parsed, and not one framework (nor the plugin's module) imported
    monkeypatch.setattr(backends, "_entry_points", lambda: {"myplugin": None})  # an installed plugin's name
    M.parse(MATRIX.replace("[numpy]", "[numpy, myplugin]"), "m.yaml")


# --- 5. damaged run folders --------------------------------------------------------------------------
def _run_folder(root: Path, name: str, lines=None, run_json=None) -> Path:
    """A run folder of this code version: one real record (a no_host cell), then `lines`."""
    from suite.cell import Cell
    from suite.record import Limits, Record

    info = {"code_version": env.code_version(), "matrix_source": "m", "matrix": M.parse(MATRIX, "m").model_dump(mode="json")}
    cell = Cell.make("numpy", "train", "tiny", host_class="local")
    good = Record.from_driver(cell, cell.cell_id(), info["code_version"], Limits(), "no_host", "none").to_dict()
    folder = root / name
    (folder / "hosts").mkdir(parents=True)
    (folder / "run.json").write_text(run_json if run_json is not None else json.dumps(info))
    (folder / "cells.jsonl").write_text("".join(line + "\n" for line in [json.dumps(good), *(lines or [])]))
    return folder


DAMAGE = {
    "no cell_id": (['{"backend": "numpy", "workload": "train", "spec": {}, "host_class": "x", "status": "ok"}'], None,
                   "cells.jsonl line 2: the record has no cell_id"),
    "no backend": (['{"cell_id": "c", "workload": "train", "spec": {}, "host_class": "x", "status": "ok"}'], None,
                   "cells.jsonl line 2: the record has no backend"),
    "bare schema_version": (['{"schema_version": 2}'], None, "cells.jsonl line 2: the record has no cell_id, backend"),
    "not a record": (["[1, 2]"], None, "cells.jsonl line 2 is [1, 2], not a record"),
    "wrong type": (['{"cell_id": "c", "backend": "numpy", "workload": "train", "spec": "tiny", "host_class": "x", '
                    '"status": "ok"}'], None, "cells.jsonl line 2: field 'spec' is 'tiny', not an object"),
    "run.json not JSON": ([], "{not json", "run.json is not JSON"),
    "run.json a list": ([], "[]", "run.json is [], not a JSON object"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_run_folder_is_named_by_report_compare_and_resume_before_a_lock_or_ray(damage, tmp_path, capsys,
                                                                                          no_work):
    lines, run_json, expected = DAMAGE[damage]
    bad = _run_folder(tmp_path, "bad", lines, run_json)
    good = _run_folder(tmp_path, "good")
    for argv in (["report", str(bad)], ["report", str(good), "--compare", str(bad)], ["run", "--resume", str(bad)]):
        fails(argv, capsys, f"{bad}/{expected}")
    assert not (bad / ".lock").exists() and not (bad / "report.html").exists()


def test_resume_names_an_invalid_matrix_in_run_json_before_a_lock(tmp_path, capsys, no_work):
    info = {"code_version": env.code_version(), "matrix": {"name": "x", "backends": []}}
    bad = _run_folder(tmp_path, "bad", run_json=json.dumps(info))
    fails(["run", "--resume", str(bad)], capsys, f"{bad}/run.json (field 'matrix'): invalid matrix:",
          "  backends: List should have at least 1 item", "  specs: Field required")
    info["matrix"] = "tiny"
    (bad / "run.json").write_text(json.dumps(info))
    fails(["run", "--resume", str(bad)], capsys, f"{bad}/run.json: field 'matrix' is 'tiny', not an object")
    assert not (bad / ".lock").exists()


def test_a_damaged_host_file_is_named(tmp_path, capsys, no_work):
    bad = _run_folder(tmp_path, "bad")
    (bad / "hosts" / "0123456789abcdef.json").write_text("{cut")
    fails(["report", str(bad)], capsys, f"{bad}/hosts/0123456789abcdef.json is not JSON")
    fails(["run", "--resume", str(bad)], capsys, f"{bad}/hosts/0123456789abcdef.json is not JSON")


def test_the_record_field_types_are_the_records():
    from reports.rundir import FIELD_TYPES
    from suite.record import Record

    types = {"int": int, "str": str, "dict": dict, "float": float, "list": list, "bool": bool}
    assert FIELD_TYPES == {f.name: types[f.type.split(" ")[0]] for f in dataclasses.fields(Record)}


# --- 6. corpus cases ------------------------------------------------------------------------------------
def test_a_corpus_too_short_for_the_block_says_how_many_characters_it_needs(tmp_path, capsys, no_work):
    need = min_corpus_tokens(16)  # tiny's block
    short = tmp_path / "short.txt"
    short.write_text(("abcdefgh" * 100)[:need - 1])
    fails(["train", "--corpus", str(short)], capsys, f"corpus short.txt is too short for blocks of 16 tokens: it has "
          f"{need - 1} characters and needs at least {need}")
    # the number is exact: with `need` characters, both splits hold a block and its next token
    from gptspec.data import BatchSampler, spread_windows

    short.write_text(("abcdefgh" * 100)[:need])
    corpus = load_corpus(str(short))
    BatchSampler(corpus.train, 2, 16).next()
    spread_windows(corpus.val, 2, 16)


def test_a_corpus_with_more_characters_than_the_vocabulary_names_what_fits(tmp_path, capsys, no_work):
    wide = tmp_path / "wide.txt"
    wide.write_text("".join(chr(0x100 + i) for i in range(200)) * 20)
    err = fails(["train", "--corpus", str(wide)], capsys, "corpus wide.txt has 200 distinct characters",
                "spec 'tiny' has vocab_size 32", "vocab_size is at least 200", "a preset with room for it (gpt2-124m)")
    assert "--tokenizer" not in err  # char is in use, and bytes (256) do not fit vocab_size 32 either
    spec = '{"vocab_size": 300, "block_size": 16, "n_layer": 1, "n_head": 1, "n_embd": 8}'
    wider = tmp_path / "wider.txt"
    wider.write_text("".join(chr(0x100 + i) for i in range(400)) * 5)
    fails(["train", "--corpus", str(wider), "--spec", spec], capsys, "has 400 distinct characters",
          "--tokenizer byte (256 tokens)")
    fails(["train", "--corpus", str(wide), "--tokenizer", "byte"], capsys, "a vocabulary of 256 tokens (byte-level)",
          "vocab_size 32")


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo"])
def test_a_device_or_a_fifo_as_corpus_is_named_for_what_it_is_and_never_read(kind, tmp_path):
    path = kind
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    # in a child with a timeout: a read of either would never end
    out = subprocess.run([sys.executable, "-m", "suite", "train", "--corpus", path], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    what = "a character device" if kind == "/dev/zero" else "a FIFO (a named pipe)"
    assert out.returncode == 2 and f"corpus file {path} is {what}, not a regular file" in out.stderr, out.stderr


def test_a_record_field_of_the_wrong_type_is_named_and_a_right_bool_is_read(tmp_path, capsys, no_work):
    good = _run_folder(tmp_path, "good")
    lines = (good / "cells.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["contended"] = True
    (good / "cells.jsonl").write_text(json.dumps(rec) + "\n")
    from reports.rundir import REPORT_FIELDS, read_records
    assert read_records(good, REPORT_FIELDS)[0]["contended"] is True
    rec["contended"] = "yes"
    (good / "cells.jsonl").write_text(json.dumps(rec) + "\n")
    fails(["report", str(good)], capsys, "field 'contended' is 'yes', not true or false")
