"""The memory frontier (workloads/frontier.py): its search against memory laws whose answer is
known (the probe function injected), its record from probe records (a GPU's among them), and
once for real: probe cells in child processes that end ok or oom under a small budget."""

import json
import math
import re

import pytest
from report_runs import write_run

import reports
from suite.cell import Cell
from suite.record import Limits
from suite.runner import run_cell
from workloads import frontier
from workloads.frontier import Probe, search


def law(base_mb: float, mb_per_seq: float, budget_mb: float, quad_mb: float = 0.0, block_mb: float | None = None):
    """A probe function for need(b) = base + slope·b + quad·b² (rounded up to allocator blocks):
    ok with that peak when it is within the budget, oom (stopped just over it) otherwise; and
    the true frontier, by brute force over the monotone law."""
    def need(b):
        mb = base_mb + mb_per_seq * b + quad_mb * b * b
        return math.ceil(mb / block_mb) * block_mb if block_mb else mb

    def probe(b):
        fits = need(b) <= budget_mb
        return Probe(b, "ok" if fits else "oom", need(b) if fits else budget_mb + 0.5, None, budget_mb)

    truth = 0
    while need(truth + 1) <= budget_mb:
        truth += 1
    return probe, truth


def _consistent(found, truth):
    batches = [p.batch_size for p in found["probes"]]
    assert len(batches) == len(set(batches)), f"a batch probed twice: {batches}"
    assert found["max_batch"] == truth and found["first_failing_batch"] == truth + 1, (found["max_batch"], truth, batches)


@pytest.mark.parametrize("estimate_factor", [1.0, 0.25, 4.0])
def test_a_linear_law_is_found_exactly_with_few_probes_even_from_a_wrong_estimate(estimate_factor):
    probe, truth = law(60.0, 1.7, 700.0)
    assert truth == 376  # (700 - 60) / 1.7
    found = search(probe, 1.7 * estimate_factor, limit=4096)
    _consistent(found, truth)
    # an exact estimate: batch 1, one past the line (oom), the line's guess, its neighbour;
    # a wrong one is corrected by the line two fitting probes measure
    assert len(found["probes"]) <= (4 if estimate_factor == 1.0 else 8), [p.batch_size for p in found["probes"]]


@pytest.mark.parametrize("quad_mb, block_mb", [(0.002, None), (0.0, 64.0), (0.01, 32.0)])
def test_a_curved_or_stepped_law_is_found_exactly_within_a_few_bisections(quad_mb, block_mb):
    probe, truth = law(45.0, 1.0, 2000.0, quad_mb, block_mb)
    found = search(probe, 1.0, limit=100_000)
    _consistent(found, truth)
    assert len(found["probes"]) <= 3 * math.ceil(math.log2(truth)) + 3


def test_nothing_fits_one_probe_and_a_frontier_of_zero():
    probe, truth = law(800.0, 1.0, 700.0)
    found = search(probe, 1.0, limit=4096)
    assert truth == 0 and found["max_batch"] == 0 and found["best"] is None
    assert [p.batch_size for p in found["probes"]] == [1]


def test_a_frontier_past_the_limit_is_the_limit_and_says_so():
    probe, truth = law(60.0, 0.5, 700.0)
    found = search(probe, 0.5, limit=1000)
    assert truth == 1280
    assert found["max_batch"] == 1000 and found["capped"] and found["first_failing_batch"] is None
    assert max(p.batch_size for p in found["probes"]) == 1000


def test_resolution_stops_with_a_bracket_that_holds_the_truth():
    probe, truth = law(60.0, 1.0, 900.0, quad_mb=0.001)
    found = search(probe, 2.0, limit=4096, resolution=16)
    assert found["max_batch"] <= truth < found["first_failing_batch"] <= found["max_batch"] + 16


def test_a_probe_that_neither_fits_nor_ooms_stops_the_search_and_the_cell_says_why():
    def run_cell(cell):  # batch 1 fits; anything larger crashes
        b = cell.options["batch_size"]
        return {"device": "cpu", "status": "ok" if b == 1 else "crash", "reason": None if b == 1 else "boom",
                "budget_mb": 700.0, "peak_rss_mb": 80.0, "memory_estimate_mb": 70.0, "metrics": {}}

    m = frontier.run(None, Cell.make("numpy", "frontier", "lumgpt"), run_cell)
    assert m["status"] == "crash" and m["max_batch"] == 1 and m["n_probes"] == 2
    assert m["reason"].startswith("the probe at batch ") and m["reason"].endswith("ended crash: boom")


def test_the_record_reads_the_gpu_memory_on_cuda_and_the_estimate_beside_it():
    """Probe records as a CUDA host writes them (no GPU here): the GPU's reserved peak against
    the GPU budget, its tensor estimate beside it; the RAM fields are not the frontier's."""
    spec = Cell.make("torch", "frontier", "gpt2-124m", dtype="bfloat16", device="cuda").spec_obj()
    per_seq_mb = (spec.memory_estimate(2, "bfloat16", "train")["total"] -
                  spec.memory_estimate(1, "bfloat16", "train")["total"]) / 2**20
    base_mb = spec.memory_estimate(1, "bfloat16", "train")["total"] / 2**20
    seen = []

    def run_cell(cell):  # the real card needs 60% of the estimate's activations (flash attention)
        b = cell.options["batch_size"]
        seen.append(cell)
        need = 1200 + 0.6 * per_seq_mb * b
        ok = need <= 12000
        return {"device": "cuda", "status": "ok" if ok else "oom", "reason": None if ok else "CUDA out of memory",
                "budget_mb": 12000.0, "peak_rss_mb": 2500.0, "gpu_budget_mb": 12000.0,
                "gpu_peak_reserved_mb": need if ok else 11990.0, "gpu_memory_estimate_mb": base_mb + per_seq_mb * (b - 1),
                "memory_estimate_mb": 320.0, "metrics": {"tokens_per_s": 1000.0 * b} if ok else {}}

    m = frontier.run(None, Cell.make("torch", "frontier", "gpt2-124m", dtype="bfloat16", device="cuda"), run_cell)
    truth = math.floor((12000 - 1200) / (0.6 * per_seq_mb))
    assert m.get("status", "ok") == "ok" and m["max_batch"] == truth and m["first_failing_batch"] == truth + 1
    assert m["binding_budget_mb"] == 12000.0 and m["peak_mb_at_max"] == pytest.approx(1200 + 0.6 * per_seq_mb * truth)
    assert m["estimate_mb_at_max"] == pytest.approx(base_mb + per_seq_mb * (truth - 1))
    # the estimate alone would stop where its line meets the budget
    assert m["estimated_max_batch"] == 1 + math.floor((12000 - base_mb) / per_seq_mb) < truth
    assert m["tokens_per_s_at_max"] == 1000.0 * truth and m["max_batch_tokens"] == truth * 1024
    # every probe is a train cell of the frontier's own backend, spec, dtype and device
    assert {(c.workload, c.backend, c.dtype, c.device, c.spec["name"]) for c in seen} == \
        {("train", "torch", "bfloat16", "cuda", "gpt2-124m")}
    assert {c.options["steps"] for c in seen} == {2} and {c.options["seq_len"] for c in seen} == {1024}


BUDGET_MB = 150.0


@pytest.fixture(scope="module")
def real():
    """numpy on tiny under 150 MB: every probe a child process that the runner measures, and
    kills when it passes the budget."""
    cell = Cell.make("numpy", "frontier", "tiny", host_class="lowram", options={"probe_steps": 1})
    return run_cell(cell, Limits(budget_mb=BUDGET_MB, timeout_s=120, threads=1))


def test_real_probe_cells_end_ok_and_oom_and_the_record_is_the_largest_that_fit(real):
    r, m, budget = real, real.metrics, BUDGET_MB
    assert r.status == "ok", (r.reason, r.traceback)
    probes = {p["batch_size"]: p for p in m["probes"]}
    assert {p["status"] for p in probes.values()} == {"ok", "oom"}
    assert probes[m["max_batch"]]["status"] == "ok" and probes[m["max_batch"] + 1]["status"] == "oom"
    assert m["max_batch"] > 100  # tiny's sequences are small: the frontier is far from batch 1
    for p in probes.values():
        # a probe that fit peaked within the budget; the runner killed the others just past it
        assert (p["peak_mb"] <= budget) if p["status"] == "ok" else (p["peak_mb"] > budget)
        assert p["budget_mb"] == budget and p["estimate_mb"] > 0
    # the frontier record's memory is its largest fitting probe's, with that probe's estimate
    assert max(r.peak_rss_mb, r.peak_rss_sampled_mb) == m["peak_mb_at_max"]
    assert r.memory_estimate_mb == m["estimate_mb_at_max"]
    assert r.memory_ratio == pytest.approx(r.peak_rss_mb / r.memory_estimate_mb)
    assert r.budget_mb == budget and r.heavy_modules == ["numpy"] and r.wall_s > 0
    assert m["n_probes"] == len(probes) <= 10


def test_a_budget_below_batch_one_is_a_frontier_of_zero_with_its_failed_probe():
    r = run_cell(Cell.make("numpy", "frontier", "tiny"), Limits(budget_mb=30.0, timeout_s=60, threads=1))
    assert r.status == "ok" and r.metrics["max_batch"] == 0 and r.metrics["n_probes"] == 1
    (probe,) = r.metrics["probes"]
    assert probe["status"] == "oom" and probe["peak_mb"] > 30.0 and "peak_mb_at_max" not in r.metrics
    assert max(r.peak_rss_mb, r.peak_rss_sampled_mb) == probe["peak_mb"]  # the record shows what did not fit


def test_the_report_draws_each_hosts_frontier_from_the_probes(real, tmp_path):
    page = reports.write_report(write_run(tmp_path / "run", [real.to_dict()])).read_text()
    titles = re.findall(r'<div class="figure" id="fig-\d+" data-title="([^"]*)"', page)
    figs = json.loads(re.search(r'<script type="application/json" id="figures">(.*?)</script>', page, re.S)
                      .group(1))["specs"]
    (fig,) = [f for t, f in zip(titles, figs) if t.startswith("Memory frontier on lowram")]
    probes = sorted(real.metrics["probes"], key=lambda p: p["batch_size"])
    fit = [p for p in probes if p["status"] == "ok"]
    line, estimate, oom = fig["data"]
    assert (line["x"], line["y"]) == ([p["batch_size"] for p in fit], [p["peak_mb"] for p in fit])
    assert (estimate["x"], estimate["y"]) == ([p["batch_size"] for p in probes], [p["estimate_mb"] for p in probes])
    assert oom["x"] == [p["batch_size"] for p in probes if p["status"] == "oom"] and oom["marker"]["symbol"] == "x"
    assert [s["y0"] for s in fig["layout"]["shapes"]] == [BUDGET_MB]
    assert [a["text"] for a in fig["layout"]["annotations"] if a["text"].startswith("max")] == \
        [f"max batch {real.metrics['max_batch']}"]
    assert f'<td class="num">{real.metrics["max_batch"]}</td>' in page.split('id="frontier"')[1]  # its numbers
