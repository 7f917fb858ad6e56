"""The matrix file and the run directory's write side, without Ray: validation errors that
name the file, the field and what is allowed; the cells a matrix expands to; the embedded
default; records on disk per append; a torn last line; the lock between two drivers."""

import json
import subprocess
import sys
import time

import pytest

import workloads
from gptspec.errors import GptbenchError
from reports.rundir import read_hosts, read_records, records_dataframe
from suite import matrix as M
from suite.store import RunLocked, RunStore

SMALL = """
name: small
backends: [numpy, torch]
workloads:
  train: {options: {steps: 3}}
  attention: {backends: [numpy, sdpa], options: {seq_lens: [16]}}
specs: [tiny, lumgpt]
seeds: [0, 1]
host_classes:
  cpu: {budget_mb: 2000, threads: 1, specs: [tiny]}
  lowram: {labels: {gptbench/class: lowram}, budget_mb: 700, backends: [numpy], workloads: [train]}
exclude:
  - {backend: torch, workload: train, host_class: cpu}
"""


def _write(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_matrix_expands_per_workload_and_host_class(tmp_path):
    mx, text = M.load(_write(tmp_path, SMALL))
    assert text == SMALL
    cells = [(c.backend, c.workload, c.spec["name"], c.host_class, c.seed) for c, _ in mx.cells()]
    # cpu: train numpy (torch excluded) + attention numpy, sdpa, on tiny only; lowram: numpy train, both specs
    expected = {(b, w, "tiny", "cpu", s) for b, w in [("numpy", "train"), ("numpy", "attention"),
                                                        ("sdpa", "attention")] for s in (0, 1)}
    expected |= {("numpy", "train", spec, "lowram", s) for spec in ("tiny", "lumgpt") for s in (0, 1)}
    assert sorted(cells) == sorted(expected) and len(cells) == 10
    by_class = {c.host_class: (c, hc) for c, hc in mx.cells()}
    assert by_class["cpu"][1].limits(600).threads == 1 and by_class["lowram"][1].limits(600).budget_mb == 700
    assert len({c.cell_id("v") for c, _ in mx.cells()}) == 10


def test_a_workload_has_its_own_specs_and_options_per_spec(tmp_path):
    text = SMALL.replace("  train: {options: {steps: 3}}",
                         "  train: {specs: [lumgpt, proust], options: {steps: 3, lr: 1.0e-3}, "
                         "spec_options: {proust: {steps: 7}}}")
    cells = M.load(_write(tmp_path, text))[0].cells()
    trains = {(c.host_class, c.spec["name"], c.seed): c.options for c, _ in cells if c.workload == "train"}
    # lowram has no specs of its own: train's; cpu's own [tiny] comes first; proust's steps are its own
    assert trains == {**{("lowram", "lumgpt", s): {"steps": 3, "lr": 1e-3} for s in (0, 1)},
                      **{("lowram", "proust", s): {"steps": 7, "lr": 1e-3} for s in (0, 1)},
                      **{("cpu", "tiny", s): {"steps": 3, "lr": 1e-3} for s in (0, 1)}}
    # the matrix's specs for the other workloads: attention on tiny (cpu's own) only
    assert {c.spec["name"] for c, _ in cells if c.workload == "attention"} == {"tiny"}


def test_repeats_are_distinct_cells(tmp_path):
    mx, _ = M.load(_write(tmp_path, SMALL.replace("seeds: [0, 1]", "seeds: [0]\nrepeats: 3")))
    cells = mx.cells()
    assert len(cells) == 15 and len({c.cell_id("v") for c, _ in cells}) == 15
    assert sorted({c.options["repeat"] for c, _ in cells}) == [0, 1, 2]


@pytest.mark.parametrize("change, field, allowed", [
    (("budget_mb: 700,", "budget_mb: 700, gpu: 1,"), "host_classes.lowram.gpu", "allowed: labels, resources"),
    (("  train: {options", "  trian: {options"), "workloads", "allowed: ['attention', "),
    (("budget_mb: 2000", "budget_mb: -5"), "host_classes.cpu.budget_mb", "greater than 0"),
    (("specs: [tiny, lumgpt]", "specs: [tiny, huge]"), "specs", "unknown spec preset 'huge'; known presets: tiny"),
    (("seeds: [0, 1]", "seeds: [0, 1]\ndtypes: [float8]"), "dtypes.0", "'float32', 'float64'"),
    (("exclude:\n  - {backend", "exclude:\n  - {colour: red, backend"), "exclude", "allowed keys"),
    # options, against what the workload declares (workloads/<name>.py OPTIONS)
    (("{steps: 3}", "{stepz: 3}"), "workloads.train.options.stepz", "unknown option; allowed: steps, batch_size"),
    (("{steps: 3}", "{steps: many}"), "workloads.train.options.steps", "expected an integer >= 1, got 'many'"),
    (("{steps: 3}", "{steps: 0}"), "workloads.train.options.steps", "expected an integer >= 1, got 0"),
    (("seq_lens: [16]", "seq_lens: 16"), "workloads.attention.options.seq_lens", "a non-empty list of integers"),
    (("{steps: 3}", "{steps: 3, gate: lint}"), "workloads.train.options.gate", "one of 'attention', 'conformance'"),
    (("seeds: [0, 1]", "seeds: [0, -1]"), "seeds.1", "greater than or equal to 0"),
    # a workload's own specs and its options for one spec
    (("  train: {options: {steps: 3}}", "  train: {specs: [tiny, huge], options: {steps: 3}}"), "workloads.train.specs",
     "unknown spec preset 'huge'"),
    (("{steps: 3}}", "{steps: 3}, spec_options: {lumgpt: {stepz: 9}}}"), "workloads.train.spec_options.lumgpt.stepz",
     "unknown option; allowed: steps"),
    (("{steps: 3}}", "{steps: 3}, spec_options: {huge: {steps: 9}}}"), "workloads.train.spec_options",
     "unknown spec preset 'huge'"),
])
def test_matrix_errors_name_file_field_and_what_is_allowed(tmp_path, change, field, allowed):
    path = _write(tmp_path, SMALL.replace(*change))
    with pytest.raises(GptbenchError) as err:
        M.load(path)
    msg = str(err.value)
    assert str(path) in msg and field in msg and allowed in msg.replace('"', "'")


def test_matrix_file_that_is_not_a_mapping(tmp_path):
    with pytest.raises(GptbenchError, match="m.yaml: a matrix is a YAML mapping"):
        M.load(_write(tmp_path, "- just\n- a list\n"))


def test_default_matrix_covers_every_workload_and_fits_the_lowram_budget():
    mx = M.default_matrix()
    cells = mx.cells()
    assert {c.workload for c, _ in cells} == set(workloads.names())  # train, generate, attention, conformance
    assert {"numpy", "torch", "compile"} <= {c.backend for c, _ in cells}
    assert {"numpy", "math", "sdpa"} <= {c.backend for c, _ in cells if c.workload == "attention"}
    assert all(c.device == "cpu" for c, _ in cells)
    lowram = [(c, hc) for c, hc in cells if c.host_class == "lowram"]
    assert {c.spec["name"] for c, _ in lowram} == {"lumgpt"} and lowram[0][1].budget_mb == 700
    from suite.memory import estimate_fields
    assert all(estimate_fields(c)["memory_estimate_mb"] < hc.budget_mb for c, hc in cells)


def _record(i: int, host="h1") -> dict:
    return {"cell_id": f"c{i}", "status": "ok", "host_fingerprint": host, "host": {"cpu": f"cpu-{host}"},
            "metrics": {"tokens_per_s": 100.0 * i}}


def test_store_writes_records_hosts_and_resumes(tmp_path):
    run = tmp_path / "run"
    with RunStore.create(run, {"code_version": "v1", "matrix": {"name": "m"}}, "name: m\n") as store:
        for i in range(3):
            store.append(_record(i, host=f"h{i % 2}"))
        # on disk before close: another reader sees every appended record
        assert [r["cell_id"] for r in read_records(run)] == ["c0", "c1", "c2"]
    assert (run / "matrix.yaml").read_text() == "name: m\n"
    info = json.loads((run / "run.json").read_text())
    assert info["code_version"] == "v1" and info["driver_host"] and info["started"]
    assert read_hosts(run) == {"h0": {"cpu": "cpu-h0"}, "h1": {"cpu": "cpu-h1"}}
    with RunStore.open(run) as store:
        assert store.done_ids() == {"c0", "c1", "c2"}
    df = records_dataframe(run)
    assert list(df["tokens_per_s" if "tokens_per_s" in df else "cell_id"]) == ["c0", "c1", "c2"]
    with pytest.raises(GptbenchError, match="already holds files"):
        RunStore.create(run, {"code_version": "v1"})


def test_torn_last_line_is_dropped_before_appending(tmp_path):
    run = tmp_path / "run"
    RunStore.create(run, {"code_version": "v1"}).close()
    with open(run / "cells.jsonl", "a") as f:  # a driver killed in the middle of a write
        f.write(json.dumps(_record(0)) + "\n" + '{"cell_id": "c1", "sta')
    assert [r["cell_id"] for r in read_records(run)] == ["c0"]
    with RunStore.open(run) as store:
        assert store.done_ids() == {"c0"}
        store.append(_record(1))
    assert [r["cell_id"] for r in read_records(run)] == ["c0", "c1"]


def test_two_drivers_never_share_a_run_directory(tmp_path):
    run = tmp_path / "run"
    RunStore.create(run, {"code_version": "v1"}).close()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom suite.store import RunStore\n"
                               f"s = RunStore.open({str(run)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"in use by another gptbench driver \\(pid {holder.pid} on host"):
            RunStore.open(run)
    finally:
        holder.kill()
        holder.wait()
    t0 = time.monotonic()
    RunStore.open(run).close()  # the kernel released the dead holder's lock
    assert time.monotonic() - t0 < 1.0
