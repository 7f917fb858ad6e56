"""The dispatcher's failure paths, without a Ray pool: a fake `ray` (nodes, wait, get,
cancel) and a fake cell task stand in for the pool, and raise Ray's own exception classes
where a real pool would (suite/dispatch.py `_collect`, `nodes_after_loss`, the deadline in
`run_matrix`). The run directory is the real one (suite/store.py). The same paths on a
real pool: tests/test_dispatch.py (slow)."""

import errno
import os
import time
from pathlib import Path

import pytest
import ray.exceptions as E

from reports.load import load_run
from reports.rundir import CELLS, latest, read_records
from suite import dispatch
from suite import matrix as M
from suite.cell import Cell
from suite.record import Limits, Record
from suite.store import RunStore, StoreError

CODE = "test-code"
NODE = {"NodeID": "a1" * 28, "NodeManagerAddress": "127.0.0.1", "NodeManagerPort": 0, "Alive": True,
        "Labels": {"gptbench/class": "local"}, "Resources": {"bench_slot": 1.0, "CPU": 2.0}}
MATRIX = """
name: failures
backends: [numpy]
workloads: {train: {options: {steps: 2}}}
specs: [tiny]
seeds: [0, 1, 2, 3, 4]
timeout_s: 60
host_classes:
  local: {labels: {gptbench/class: local}, budget_mb: 1000}
"""


def ok_record(cell: Cell, cell_id: str) -> dict:
    """What a cell task returns for a cell that ran to its end."""
    return Record.from_driver(cell, cell_id, CODE, Limits(), "ok", None, wall_s=0.5, workload_s=0.3).to_dict()


class FakeRay:
    """ray.nodes / wait / get / cancel over scripted outcomes: per cell seed (or per
    (host class, seed)), one outcome per attempt -- "ok", "hang" (never ready), "cut" (never
    ready, and the node it was placed on is marked dead at once, as the GCS does a minute
    after a link goes down), or an exception instance get() raises. `events` is the order of
    what happened: ("submit", seed), ("fsync", path), ("cancel", seed); `placed` the node id
    each submitted cell was pinned to."""

    def __init__(self, outcomes: dict, nodes=(NODE,), events=None):
        self.outcomes = {seed: list(o) for seed, o in outcomes.items()}
        self.node_list = [dict(n) for n in nodes]
        self.events = events if events is not None else []
        self.after_loss_nodes = None  # the pool as it is once a loss was seen
        self.interrupt_after = None   # KeyboardInterrupt once cells.jsonl has this many lines
        self.store_dir = None
        self.remote_delay_s = 0.0     # remote() returns this late, the task's life (wall_s) inside it
        self.submitted: list[Cell] = []  # every cell submitted, in order
        self.placed: list[str] = []      # the node each was pinned to
        self._node_id = None

    # the cell task
    def options(self, **opts):
        self._node_id = opts["scheduling_strategy"].node_id
        return self

    def remote(self, cell_dict, cell_id, code_version, limits):
        cell = Cell.from_dict(cell_dict)
        self.events.append(("submit", cell.seed))
        self.submitted.append(cell)
        self.placed.append(self._node_id)
        time.sleep(self.remote_delay_s)
        outcome = self.outcomes.get((cell.host_class, cell.seed), self.outcomes.get(cell.seed)).pop(0)
        if outcome == "cut":
            for n in self.node_list:
                n["Alive"] = n["Alive"] and n["NodeID"] != self._node_id
        return _Ref(cell, cell_id, outcome)

    # ray
    def nodes(self):
        return self.node_list

    def wait(self, refs, num_returns=1, timeout=None):
        if self.interrupt_after is not None and \
                len((self.store_dir / CELLS).read_text().splitlines()) >= self.interrupt_after:
            raise KeyboardInterrupt
        ready = [r for r in refs if r.outcome not in ("hang", "cut")][:num_returns]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref, timeout=None):
        if isinstance(ref.outcome, BaseException):
            if self.after_loss_nodes is not None:
                self.node_list = self.after_loss_nodes
            raise ref.outcome
        return ok_record(ref.cell, ref.cell_id)

    def cancel(self, ref, force=False):
        self.events.append(("cancel", ref.cell.seed))


class _Ref:
    def __init__(self, cell, cell_id, outcome):
        self.cell, self.cell_id, self.outcome = cell, cell_id, outcome


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """install(outcomes) -> the FakeRay in place of ray and the cell task; fsyncs are logged
    into its events with the file they were for."""
    events = []
    real_fsync = os.fsync

    def spy_fsync(fd):
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    def install(outcomes, **kw):
        ray = FakeRay(outcomes, events=events, **kw)
        monkeypatch.setattr(dispatch, "ray", ray)
        monkeypatch.setattr(dispatch, "cell_task", ray)
        monkeypatch.setattr(os, "fsync", spy_fsync)
        return ray

    return install


def _run(tmp_path, ray, matrix=MATRIX, resume=False):
    mx = M.parse(matrix, "m.yaml")
    run_dir = tmp_path / "run"
    store = RunStore.open(run_dir) if resume else \
        RunStore.create(run_dir, {"code_version": CODE, "matrix": mx.model_dump(mode="json")})
    ray.store_dir = run_dir
    with store:
        outcome = dispatch.run_matrix(mx, store, CODE, log=lambda line: None)
    return outcome, {r["seed"]: r for r in read_records(run_dir)}


# --- each error the dispatcher maps, and the record it becomes ------------------------------------
def test_each_ray_failure_becomes_its_record(fake, tmp_path):
    ray = fake({0: ["ok"],
                1: [E.OutOfMemoryError("Task was killed due to the node running low on memory.")],
                2: [E.WorkerCrashedError(), "ok"],  # lost once: retried, then fine
                3: [E.NodeDiedError("node n died"), E.WorkerCrashedError()],  # lost twice: crash
                4: [E.RayTaskError("cell_task", "Traceback: boom", RuntimeError("boom"))]})
    out, records = _run(tmp_path, ray)
    assert out.written == 5 and not out.interrupted
    assert records[0]["status"] == "ok" and records[0]["attempts"] == 1
    assert records[1]["status"] == "oom" and records[1]["attempts"] == 1
    assert records[1]["reason"].startswith("Ray's memory monitor killed the task's worker")
    assert records[1]["limit_enforced_by"] == "ray" and records[0]["limit_enforced_by"] is None
    assert records[2]["status"] == "ok" and records[2]["attempts"] == 2
    assert records[3]["status"] == "crash" and records[3]["attempts"] == 2
    assert records[3]["reason"] == "lost its node or worker 2 time(s) (WorkerCrashedError); not retried again"
    assert records[4]["status"] == "crash" and records[4]["reason"] == "the Ray task failed: RayTaskError"
    assert "boom" in records[4]["traceback"]
    # one slot; a lost cell goes back to the front of the queue: retried at once, once
    assert [seed for what, seed in ray.events if what == "submit"] == [0, 1, 2, 2, 3, 3, 4]


def test_a_lost_node_whose_class_has_no_node_left_becomes_no_host(fake, tmp_path):
    ray = fake({s: [E.NodeDiedError("the node running this task died")] for s in range(5)})
    ray.after_loss_nodes = []  # the only node of class local is gone
    out, records = _run(tmp_path, ray)
    assert out.written == 5
    assert records[0]["status"] == "no_host" and records[0]["attempts"] == 1
    assert records[0]["reason"].startswith("after losing a node: host class 'local': no live node has label "
                                           "gptbench/class=local")
    assert {r["status"] for r in records.values()} == {"no_host"}
    assert {r["no_host_cause"] for r in records.values()} == {"lost_node"} and out.lost_node == 5
    assert [e for e in ray.events if e[0] == "submit"] == [("submit", 0)]  # nothing sent to a pool without it


def test_resume_reruns_the_cells_a_lost_node_left_no_host_and_readers_take_their_new_record(fake, tmp_path):
    """A class whose node was lost: its cells are no_host "lost_node", no result, and run again
    by --resume once the node is back; a class no node of the pool has stays no_host "pool"."""
    matrix = MATRIX + "  cloud: {labels: {gptbench/class: cloud}, budget_mb: 1000}\n"
    ray = fake({0: [E.NodeDiedError("the node running this task died"), "ok"], 1: ["ok"], 2: ["ok"], 3: ["ok"],
                4: ["ok"]})
    ray.after_loss_nodes = []
    first, _ = _run(tmp_path, ray, matrix)
    before = read_records(tmp_path / "run")
    causes = sorted((r["host_class"], r["status"], r["no_host_cause"]) for r in before)
    assert causes == [("cloud", "no_host", "pool")] * 5 + [("local", "no_host", "lost_node")] * 5
    ray.node_list, ray.after_loss_nodes, ray.events[:] = [dict(NODE)], None, []  # the node is back
    second, _ = _run(tmp_path, ray, matrix, resume=True)
    assert (second.skipped, second.written) == (5, 5)  # the pool's no_host stay final
    assert sorted(seed for what, seed in ray.events if what == "submit") == [0, 1, 2, 3, 4]
    written = read_records(tmp_path / "run")
    assert written[:10] == before and len(written) == 15  # appended, nothing rewritten
    cells = latest(written)
    assert len(cells) == 10 and len({r["cell_id"] for r in cells}) == 10
    assert sorted((r["host_class"], r["status"]) for r in cells) == [("cloud", "no_host")] * 5 + [("local", "ok")] * 5
    run = load_run(tmp_path / "run")  # the report's reader: one row per cell, its last record
    assert len(run.records) == len(run.cells) == 10
    assert sorted(run.cells.status) == ["no_host"] * 5 + ["ok"] * 5
    with RunStore.open(tmp_path / "run") as store:
        assert len(store.done_ids()) == 10  # a third --resume runs nothing


def test_a_task_past_its_deadline_is_cancelled_and_recorded_as_timeout(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "START_GRACE_S", 0.0)  # deadline: 2 x timeout_s
    ray = fake({0: ["hang"], 1: ["ok"], 2: ["ok"], 3: ["ok"], 4: ["ok"]})
    out, records = _run(tmp_path, ray, MATRIX.replace("timeout_s: 60", "timeout_s: 0.05"))
    assert records[0]["status"] == "timeout" and ("cancel", 0) in ray.events
    assert records[0]["reason"].startswith("dispatch: no result within 0 s of submission")
    assert [records[s]["status"] for s in range(1, 5)] == ["ok"] * 4


# --- a node cut off: Ray raises nothing, the GCS marks it dead ----------------------------------
HEAD = {**NODE, "NodeID": "b2" * 28, "NodeManagerAddress": "10.0.0.10", "Labels": {"gptbench/class": "head"}}
LOWRAM = {**NODE, "NodeID": "c3" * 28, "NodeManagerAddress": "10.0.0.11", "Labels": {"gptbench/class": "lowram"}}
TWO_CLASSES = """
name: link
backends: [numpy]
workloads: {train: {options: {steps: 2}}}
specs: [tiny]
seeds: [0, 1]
timeout_s: 60
host_classes:
  head: {labels: {gptbench/class: head}, budget_mb: 1000}
  lowram: {labels: {gptbench/class: lowram}, budget_mb: 600}
"""


def test_a_node_cut_off_mid_cell_loses_its_cells_when_ray_marks_it_dead_not_at_the_deadline(fake, tmp_path,
                                                                                              monkeypatch):
    """lowram's link goes down under its first cell: the task never fails at the driver, its
    connection just goes silent; once the GCS lists the node dead, the cell and the class's
    waiting cell are no_host "lost_node" (which --resume runs again), the head's cells run on."""
    monkeypatch.setattr(dispatch, "NODE_CHECK_S", 0.05)
    ray = fake({("head", 0): ["ok"], ("head", 1): ["ok"], ("lowram", 0): ["cut"], ("lowram", 1): ["ok"]},
               nodes=(HEAD, LOWRAM))
    lines = []
    t0 = time.monotonic()
    mx = M.parse(TWO_CLASSES, "m.yaml")
    with RunStore.create(tmp_path / "run", {"code_version": CODE, "matrix": mx.model_dump(mode="json")}) as store:
        ray.store_dir = tmp_path / "run"
        out = dispatch.run_matrix(mx, store, CODE, log=lines.append)
    assert time.monotonic() - t0 < 5  # the deadline is 2 x 60 + 120 s
    records = {(r["host_class"], r["seed"]): r for r in read_records(tmp_path / "run")}
    assert out.written == 4 and not [e for e in ray.events if e[0] == "cancel"]  # dropped, never cancelled
    assert out.lost_node == 2
    assert records[("head", 0)]["status"] == records[("head", 1)]["status"] == "ok"
    for seed in (0, 1):
        r = records[("lowram", seed)]
        assert (r["status"], r["no_host_cause"]) == ("no_host", "lost_node")
        assert r["reason"].startswith("after losing a node: host class 'lowram': no live node has label "
                                      "gptbench/class=lowram")
    assert records[("lowram", 0)]["attempts"] == 1 and records[("lowram", 1)]["attempts"] == 0
    # each cell went to a node of its class; the one on the cut node is named in the log
    assert [(c.host_class, n) for c, n in zip(ray.submitted, ray.placed)] == \
        [("head", HEAD["NodeID"]), ("lowram", LOWRAM["NodeID"]), ("head", HEAD["NodeID"])]
    assert any(line.startswith("node 10.0.0.11 (c3c3c3c3) was marked dead by Ray while it ran numpy train")
               for line in lines), lines


def test_a_cell_whose_node_was_cut_off_runs_again_on_another_node_of_its_class(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "NODE_CHECK_S", 0.05)
    second = {**NODE, "NodeID": "d4" * 28, "NodeManagerAddress": "10.0.0.12"}
    ray = fake({0: ["cut", "ok"]}, nodes=(NODE, second))
    _, records = _run(tmp_path, ray, matrix=MATRIX.replace("seeds: [0, 1, 2, 3, 4]", "seeds: [0]"))
    assert records[0]["status"] == "ok" and records[0]["attempts"] == 2
    assert ray.placed == [NODE["NodeID"], second["NodeID"]]  # the driver knew where it ran, and where not to


def test_a_cell_pinned_to_a_node_that_died_before_it_started_runs_again_on_the_pool(fake, tmp_path):
    """The driver's view of the pool can lag: a cell pinned (hard affinity) to a node that
    has just gone is refused by Ray as unschedulable; that is a lost node, not a crash."""
    ray = fake({0: [E.TaskUnschedulableError("The node specified via NodeAffinitySchedulingStrategy doesn't exist "
                                             "any more"), "ok"]})
    _, records = _run(tmp_path, ray, matrix=MATRIX.replace("seeds: [0, 1, 2, 3, 4]", "seeds: [0]"))
    assert records[0]["status"] == "ok" and records[0]["attempts"] == 2


def test_a_cell_cut_off_twice_is_a_crash_that_says_which_node(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(dispatch, "NODE_CHECK_S", 0.05)
    nodes = [{**NODE, "NodeID": f"{i}e" * 28, "NodeManagerAddress": f"10.0.0.{i}"} for i in (1, 2, 3)]
    ray = fake({0: ["cut", "cut"]}, nodes=nodes)
    _, records = _run(tmp_path, ray, matrix=MATRIX.replace("seeds: [0, 1, 2, 3, 4]", "seeds: [0]"))
    assert records[0]["status"] == "crash" and records[0]["attempts"] == 2
    assert records[0]["reason"] == ("lost its node or worker 2 time(s) (node 2e2e2e2e at 10.0.0.2 marked dead by "
                                    "Ray's GCS); not retried again")


def test_a_cell_any_node_can_run_leaves_the_only_node_of_another_class_free(fake, tmp_path):
    """Placement: of the free nodes a class matches, the one fewer waiting classes can use;
    so `anywhere` (no labels) takes the head, and lowram's cell starts beside it at once."""
    matrix = TWO_CLASSES.replace("head: {labels: {gptbench/class: head}", "anywhere: {labels: {}").replace(
        "seeds: [0, 1]", "seeds: [0]")
    ray = fake({("anywhere", 0): ["hang"], ("lowram", 0): ["hang"]}, nodes=(LOWRAM, HEAD))
    ray.interrupt_after = 0  # stop at the first wait: what was placed by then is the first round
    _run(tmp_path, ray, matrix)
    assert sorted(zip((c.host_class for c in ray.submitted), ray.placed)) == \
        [("anywhere", HEAD["NodeID"]), ("lowram", LOWRAM["NodeID"])]


# --- the overhead fields: Ray's part is never negative --------------------------------------------
def test_a_task_that_runs_before_remote_returns_still_has_a_positive_ray_overhead(fake, tmp_path):
    """A busy driver can get its .remote() call back after the task has started, or even
    after it ended: the worker's wall_s (0.5 s, ok_record) then lies wholly inside that call.
    Roundtrip must still contain it, so the submission is stamped before .remote()."""
    ray = fake({0: ["ok"]})
    ray.remote_delay_s = 0.6  # the task's whole life (0.5 s) passes before the call returns
    _, records = _run(tmp_path, ray, matrix=MATRIX.replace("seeds: [0, 1, 2, 3, 4]", "seeds: [0]"))
    r = records[0]
    assert r["roundtrip_s"] >= 0.6 and 0 < r["ray_overhead_s"] < r["dispatch_s"] < r["roundtrip_s"]
    assert r["ray_overhead_s"] == pytest.approx(r["roundtrip_s"] - 0.5)
    assert r["dispatch_s"] == pytest.approx(r["roundtrip_s"] - 0.3)


# --- durability: each record on disk before the next cell goes out --------------------------------
def test_each_record_is_fsynced_before_the_next_cell_is_dispatched(fake, tmp_path):
    ray = fake({s: ["ok"] for s in range(5)})
    _run(tmp_path, ray)
    order = [e for e in ray.events if e[0] == "submit" or e == ("fsync", CELLS)]
    # one slot: submit a cell, its record reaches the disk, only then the next submission
    assert order == [e for s in range(5) for e in (("submit", s), ("fsync", CELLS))]


# --- repeats: interleaved, so drift hits every backend alike ------------------------------------------
def test_repeats_are_submitted_round_robin_across_backends_and_per_workload(fake, tmp_path):
    matrix = """
name: rounds
backends: [numpy, torch, jax]
workloads: {train: {repeats: 3, options: {steps: 2}}, conformance: {options: {steps: 1}}}
specs: [tiny]
timeout_s: 60
host_classes:
  local: {labels: {gptbench/class: local}, budget_mb: 1000}
"""
    ray = fake({0: ["ok"] * 12})
    outcome, _ = _run(tmp_path, ray, matrix)
    order = [(c.workload, c.backend, c.options.get("repeat")) for c in ray.submitted]
    assert order == [("train", "numpy", 0), ("train", "torch", 0), ("train", "jax", 0),
                     ("conformance", "numpy", None), ("conformance", "torch", None), ("conformance", "jax", None),
                     ("train", "numpy", 1), ("train", "torch", 1), ("train", "jax", 1),
                     ("train", "numpy", 2), ("train", "torch", 2), ("train", "jax", 2)]
    assert outcome.written == 12 and len({c.cell_id(CODE) for c in ray.submitted}) == 12


# --- resume: failed cells are finished cells -------------------------------------------------------
def test_resume_runs_only_the_cells_without_a_record_and_repeats_none(fake, tmp_path):
    matrix = MATRIX + "  cloud: {labels: {gptbench/class: cloud}, budget_mb: 1000}\n"  # no node has it: no_host
    ray = fake({0: ["ok", "ok"], 1: [E.RayTaskError("cell_task", "tb", RuntimeError("x")), "ok"],
                2: [E.OutOfMemoryError("killed"), "ok"], 3: ["ok", "ok"], 4: ["ok", "ok"]})
    ray.interrupt_after = 5 + 3  # the five no_host records at pre-flight, then crash, oom and one ok
    first, _ = _run(tmp_path, ray, matrix)
    assert first.interrupted
    before = read_records(tmp_path / "run")
    assert sorted(r["status"] for r in before) == ["crash", "no_host", "no_host", "no_host", "no_host", "no_host",
                                                   "ok", "oom"]
    assert {r["no_host_cause"] for r in before if r["status"] == "no_host"} == {"pool"}  # final: not run again
    ray.interrupt_after, ray.events[:] = None, []
    second, _ = _run(tmp_path, ray, matrix, resume=True)
    records = read_records(tmp_path / "run")
    ids = [r["cell_id"] for r in records]
    assert len(ids) == len(set(ids)) == 10  # every cell once: 5 seeds x 2 classes
    assert records[:8] == before  # the first run's records, untouched
    assert second.skipped == 8 and second.written == 2
    assert sorted(seed for what, seed in ray.events if what == "submit") == [3, 4]  # only what had no record


def test_a_full_disk_mid_run_stops_it_with_every_record_whole_then_resume_finishes(fake, tmp_path, monkeypatch):
    ray = fake({s: ["ok", "ok"] for s in range(5)})
    real_write, lines = os.write, []

    def write(fd, data):  # the third record finds the disk full
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name == CELLS:
            lines.append(data)
            if len(lines) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(StoreError, match=f"No space left on device.*gptbench run --resume {tmp_path / 'run'}"):
        _run(tmp_path, ray)
    monkeypatch.setattr(os, "write", real_write)
    assert [r["seed"] for r in read_records(tmp_path / "run")] == [0, 1]
    out, records = _run(tmp_path, ray, resume=True)
    assert out.skipped == 2 and out.written == 3 and sorted(records) == [0, 1, 2, 3, 4]
    assert len(read_records(tmp_path / "run")) == 5
