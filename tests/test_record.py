"""One record type (suite/record.py): the runner's, the child's and the driver's records have
the same fields, in docs/records.md's table; a field nobody knows is refused."""

import json
import re
from pathlib import Path

import pytest

from suite.cell import Cell
from suite.record import CHILD_FIELDS, SCHEMA_VERSION, Limits, Record

DOC = Path(__file__).resolve().parents[1] / "docs" / "records.md"


def documented_keys() -> set[str]:
    """Every `key` named in the first column of the record table of docs/records.md."""
    text = DOC.read_text().split("## The record", 1)[1].split("###", 1)[0]
    keys = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            keys |= set(re.findall(r"`([a-z_0-9]+)`", line.split("|")[1]))
    return keys


def test_every_field_is_documented_and_every_documented_key_is_a_field():
    fields = set(Record().to_dict())
    assert fields == documented_keys()


def test_driver_and_runner_records_have_the_same_keys_and_the_limits_as_one_object():
    cell = Cell.make("numpy", "train", "tiny", options={"steps": 2})
    limits = Limits(budget_mb=700, gpu_budget_mb=None, timeout_s=60, threads=1)
    runner = Record.start(cell, limits, code_version="v1", host={"fingerprint": "f"})
    driver = Record.from_driver(cell, "id", "v1", limits, "no_host", "no node")
    assert list(runner.to_dict()) == list(driver.to_dict())
    for rec in (runner.to_dict(), driver.to_dict()):
        assert rec["schema_version"] == SCHEMA_VERSION == 3
        assert (rec["budget_mb"], rec["timeout_s"], rec["threads"]) == (700, 60, 1)
        assert rec["options"] == {"steps": 2} and rec["memory_estimate_mb"] > 0
    assert runner.cell_id == cell.cell_id("v1") and driver.status == "no_host" and driver.ended
    # through JSON and back (Ray, the run directory): the same record
    assert Record.from_dict(json.loads(json.dumps(runner.to_dict()))) == runner


def test_unknown_fields_are_refused_and_the_runner_takes_only_the_childs_fields():
    with pytest.raises(ValueError, match="unknown field"):
        Record.from_dict({"status": "ok", "colour": "red"})
    with pytest.raises(ValueError, match="no field"):
        Record().update(colur="red")
    cell = Cell.make("numpy", "train", "tiny")
    child = Record.child(cell, Limits()).update(status="ok", metrics={"x": 1}, budget_mb=1.0, cell_id="forged")
    runner = Record(cell_id="real", budget_mb=700).take_child(child)
    assert (runner.status, runner.metrics, runner.cell_id, runner.budget_mb) == ("ok", {"x": 1}, "real", 700)
    assert set(CHILD_FIELDS) < set(Record().to_dict())


def test_limits_travel_whole():
    limits = Limits(budget_mb=1.5, gpu_budget_mb=12000, timeout_s=None, threads=3)
    assert Limits.from_dict(json.loads(json.dumps(limits.to_dict()))) == limits
    assert Limits.from_dict(None) == Limits()
