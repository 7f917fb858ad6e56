"""The conformance workload as a cell (suite/cell.py): its record, and as a gate."""

from suite.cell import Cell
from suite.record import Limits
from suite.runner import run_cell
from workloads import conformance


def test_conformance_cell_of_torch_is_ok_and_its_record_carries_the_report_card():
    rec = run_cell(Cell.make("torch", "conformance", "tiny", options={"steps": 5}), Limits(timeout_s=300)).to_dict()
    assert rec["status"] == "ok", rec.get("traceback") or rec.get("reason")
    m = rec["metrics"]
    # ops 23; step0 30; eval 1; step 29; trajectory 29; generate 6 (greedy, sampled, sliding)
    assert m["ok"] and m["first_failure"] is None and len(m["rows"]) == 23 + 30 + 1 + 29 + 29 + 6
    assert m["dtype"] == "float32" and m["rows"][0]["name"] == "ops.embedding.out"
    assert 0 < m["rows"][0]["max_abs"] < 1e-5  # float32 rounding, measured against float64


def test_a_broken_backend_is_nonconformant_with_the_tensor_in_the_reason():
    from test_mutants import SPEC, LayerNormEps1e3

    cell = Cell.make("test_mutants:LayerNormEps1e3", "conformance", "tiny", dtype="float64", options={"steps": 5})
    metrics = conformance.run(LayerNormEps1e3(SPEC, dtype="float64"), cell)
    assert metrics["status"] == "nonconformant" and metrics["reason"].startswith("ops.layernorm.out from index")
    assert conformance.memory_estimate(cell)["total"] > 0


def test_a_train_cell_gated_by_conformance_trains_after_passing():
    rec = run_cell(Cell.make("torch", "train", "tiny", options={"steps": 4, "gate": "conformance"}), Limits(timeout_s=300)).to_dict()
    assert rec["status"] == "ok", rec.get("traceback") or rec.get("reason")
    assert rec["gate"]["status"] == "ok" and rec["gate"]["backend"] == "torch" and rec["gate"]["steps"] == 50
    assert len(rec["metrics"]["losses"]) == 4
