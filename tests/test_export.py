"""`gptbench report --parquet/--csv/--long-*` of a real run, loaded as an analyst loads it
(pandas on pyarrow): typed columns, real nulls, no duplicated or shape-named columns, a
run id to tell runs apart, and the per-step table on the clock of time_to_target_s."""

import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from report_runs import TEST_BACKENDS, run_a_records, write_run

from reports.export import LONG_COLUMNS, run_id
from suite.cell import Cell
from suite.cli import main
from suite.record import Limits
from suite.runner import run_cell


def _text(typ) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run A's real records (every status, conformance cards) and a train cell that reaches
    an easy target at an evaluation, with torch.compile's per-graph compile times beside it."""
    reached = run_cell(Cell.make("numpy", "train", "tiny", options={"steps": 12, "eval_interval": 3,
                                                                     "target_val_loss": 3.0}),
                       Limits(timeout_s=120), extra_env=TEST_BACKENDS).to_dict()
    assert reached["metrics"]["target_reached"] is True
    reached["metrics"]["compile_s_by_graph"] = {"train (32, 16)": 1.5, "eval (4, 16)": 0.25}
    records = [*run_a_records(), reached]
    folder = write_run(tmp_path_factory.mktemp("export") / "run", records)
    out = folder.parent
    assert main(["report", str(folder), "-o", str(out / "r.html"), "--csv", str(out / "w.csv"), "--parquet",
                 str(out / "w.parquet"), "--long-csv", str(out / "l.csv"), "--long-parquet",
                 str(out / "l.parquet")]) == 0
    return folder, records


def test_the_wide_parquet_loads_typed_with_real_nulls(run):
    folder, records = run
    table = pq.read_table(folder.parent / "w.parquet")
    schema = {f.name: f.type for f in table.schema}
    train = [r["workload"] == "train" and r["status"] in ("ok", "diverged") for r in records]
    assert schema["metrics.target_reached"] == pa.bool_()
    assert table.column("metrics.target_reached").null_count == train.count(False)
    assert table.column("metrics.target_reached").to_pylist() == [
        r["metrics"].get("target_reached") if t else None for r, t in zip(records, train)]
    assert pa.types.is_timestamp(schema["started"]) and schema["started"].tz == "UTC"
    assert schema["seed"] == pa.int64() and _text(schema["status"])
    # a list column: JSON text where the record has the list, null elsewhere -- never "NaN"
    losses = table.column("metrics.losses").to_pylist()
    assert [json.loads(v) if v else None for v in losses] == [r["metrics"].get("losses") for r in records]
    texts = [name for name, typ in schema.items() if _text(typ)]
    assert "metrics.losses" in texts and not [n for n in texts if "NaN" in table.column(n).to_pylist()]
    df = pd.read_parquet(folder.parent / "w.parquet")
    assert df["metrics.target_reached"].notna().sum() == train.count(True)


def test_no_duplicated_or_shape_named_columns_and_a_run_id_first(run):
    folder, records = run
    df = pd.read_parquet(folder.parent / "w.parquet")
    assert list(df.columns[:3]) == ["run_id", "code_version", "cell_id"]
    info = json.loads((folder / "run.json").read_text())
    assert set(df.run_id) == {run_id(info)} and df.code_version.tolist() == [r["code_version"] for r in records]
    assert not [c for c in df.columns if re.search(r"[ ()]", c)]
    assert not [c for c in df.columns if c.startswith("metrics.spec.") or c in (
        "metrics.seed", "metrics.config.seed", "metrics.backend", "metrics.dtype", "host.code_version",
        "host.fingerprint")]
    assert {"spec.name", "seed", "backend", "host_fingerprint", "metrics.config.steps"} <= set(df.columns)
    graphs = df["metrics.compile_s_by_graph"].dropna().map(json.loads).tolist()
    assert graphs == [{"train (32, 16)": 1.5, "eval (4, 16)": 0.25}]
    # two runs' exports concatenate and stay apart
    other = df.assign(run_id="elsewhere")
    assert pd.concat([df, other]).groupby("run_id").size().to_dict() == {run_id(info): len(df), "elsewhere": len(df)}


def test_the_long_table_has_every_step_on_the_time_to_target_clock(run):
    folder, records = run
    long = pd.read_parquet(folder.parent / "l.parquet")
    assert list(long.columns) == LONG_COLUMNS
    schema = pq.read_schema(folder.parent / "l.parquet")
    assert schema.field("step").type == pa.int64() and schema.field("val_loss").type == pa.float64()
    curves = [r for r in records if isinstance((r.get("metrics") or {}).get("losses"), list)]
    assert set(long.cell_id) == {r["cell_id"] for r in curves}
    for r in curves:
        m, rows = r["metrics"], long[long.cell_id == r["cell_id"]]
        assert rows.step.tolist() == list(range(1, len(m["losses"]) + 1))
        assert rows.train_loss.tolist() == pytest.approx([float(v) for v in m["losses"]], nan_ok=True)  # JSON "nan"
        # a diverged evaluation's NaN is a null too (Arrow writes a NaN float as null); the status says why
        val = {s: float(v) for s, v in m["val_losses"] if float(v) == float(v)}
        assert rows.val_loss.notna().sum() == len(val)
        assert rows.set_index("step").val_loss[list(val)].tolist() == pytest.approx(list(val.values()))
        assert rows.seconds.iloc[-1] == pytest.approx(m["train_s"], rel=1e-9)
        if m.get("target_reached"):  # the first row at or below the target is where the workload stopped the clock
            hit = rows[rows.val_loss <= m["target_val_loss"]].iloc[0]
            assert (hit.step, hit.seconds) == (m["steps_to_target"], pytest.approx(m["time_to_target_s"], rel=1e-9))
    assert any(r["metrics"].get("target_reached") for r in curves)
    csv = pd.read_csv(folder.parent / "l.csv")
    assert csv.val_loss.isna().sum() == long.val_loss.isna().sum() and len(csv) == len(long)
