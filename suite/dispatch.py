"""Run a matrix's cells as Ray tasks across a heterogeneous pool, one record per cell.

Each cell is a Ray task that calls suite.runner.run_cell (the cell itself runs in a fresh
child process there). The driver places each task itself: on a live node whose labels and
numeric custom resources match the cell's host class and whose `bench_slot` (every
gptbench host advertises one, so two timed cells never share a machine) is free, pinned
there (hard node affinity), so it knows which node runs which cell. Before anything is
submitted, a pre-flight against the live pool (ray.nodes()) and the cell's memory estimate
turns what no node can run into a `no_host` record: Ray would queue an infeasible task
forever, silently.

Failures end in records, never in a hang: tasks have max_retries=0 (a task killed for
memory would otherwise be retried blindly); a worker or node lost under a task is
retried up to LOST_NODE_RETRIES times on the pool as it is after the loss (a class with no
node left gives `no_host`, no_host_cause "lost_node", which `--resume` runs again), then
recorded as `crash`. A node cut off by its link raises nothing at the driver (the task's
connection just goes silent): once Ray's GCS marks the node dead (its health checks, about
a minute), the cells placed there are lost the same way. Every wait is bounded (a task with
no result by its deadline is cancelled and `timeout`).
The driver appends each record to the run directory as it arrives (suite/store.py), so
Ctrl-C, `ray job stop` or a killed driver lose no finished cell; `--resume` runs the rest.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from suite import memory
from suite.cell import Cell
from suite.inventory import SLOT
from suite.matrix import HostClass, Matrix
from suite.record import Record
from suite.task import cell_task

LOST_NODE_RETRIES = 1
# a task gets its cell's timeout plus this for worker start, imports and first-use
# calibration on its host, plus one more cell timeout for waiting behind a cell of an
# overlapping host class on the same slot
START_GRACE_S = 120.0
WAIT_S = 0.5            # the driver loop's tick: ray.wait never blocks longer
# after a loss, how long to wait for the GCS to mark a node dead whose raylet no longer
# answers (its health checks: ~15 s for a refused connection, ~65 s for a silent host)
NODE_DEATH_WAIT_S = 75.0
PROBE_TIMEOUT_S = 2.0
# how often the driver asks the GCS which nodes are alive while cells run
NODE_CHECK_S = 2.0
LOST = ("NodeDiedError", "WorkerCrashedError", "LocalRayletDiedError", "ObjectLostError",
        "OwnerDiedError", "RaySystemError", "ActorDiedError", "TaskUnschedulableError")


# --- the pool -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    node_id: str
    ip: str
    labels: dict
    resources: dict
    port: int = 0  # the raylet's (node manager's)

    def describe(self) -> str:
        labels = {k: v for k, v in self.labels.items() if not k.startswith("ray.io/")}
        res = {k: v for k, v in self.resources.items()
               if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
        return f"{self.ip} {self.node_id[:8]} labels {labels} resources {res}"


def live_nodes() -> list[Node]:
    return [Node(n["NodeID"], n["NodeManagerAddress"], dict(n.get("Labels") or {}), dict(n["Resources"]),
                 int(n.get("NodeManagerPort") or 0)) for n in ray.nodes() if n["Alive"]]


def answers(node: Node) -> bool:
    """Whether the node's raylet accepts a connection now: a dead raylet refuses at once,
    long before the GCS's health checks mark its node dead."""
    try:
        with socket.create_connection((node.ip, node.port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def nodes_after_loss(log=lambda line: None) -> list[Node]:
    """The live pool after a cell lost its worker or node. Ray still lists a dead node as
    alive until its health checks fail, and a cell resubmitted before then is sent to it and
    waits there until its deadline. So nodes whose raylet does not answer are waited for
    until the GCS drops them (bounded), and left out either way. When no node answers, this
    driver cannot reach raylets at all (Ray Client): the GCS's view is all there is."""
    nodes = live_nodes()
    silent = {n.node_id for n in nodes if n.port and not answers(n)}
    if not silent or len(silent) == len(nodes):
        return nodes
    log(f"{len(silent)} node(s) no longer answer; waiting up to {NODE_DEATH_WAIT_S:.0f} s for Ray to drop them")
    deadline = time.monotonic() + NODE_DEATH_WAIT_S
    while silent & {n.node_id for n in nodes} and time.monotonic() < deadline:
        time.sleep(1.0)
        nodes = live_nodes()
    return [n for n in nodes if n.node_id not in silent]


def requirements(hc: HostClass) -> tuple[dict, dict]:
    """(labels, resources) a node must have to run a cell of this class."""
    res = {SLOT: 1.0, **hc.resources}
    if hc.device.startswith("cuda"):
        res.setdefault("GPU", 1.0)
    return dict(hc.labels), res


def matching(hc: HostClass, nodes: list[Node]) -> list[Node]:
    labels, res = requirements(hc)
    return [n for n in nodes if all(n.labels.get(k) == v for k, v in labels.items())
            and all(n.resources.get(k, 0) >= v for k, v in res.items())]


def infeasible(cell: Cell, hc: HostClass, nodes: list[Node], estimate: dict) -> str | None:
    """Why no node of the live pool can run the cell, or None when one can."""
    est, gpu_est = estimate.get("memory_estimate_mb"), estimate.get("gpu_memory_estimate_mb")
    if est and est > hc.budget_mb:
        return (f"memory estimate {est:.0f} MB exceeds the budget of host class {cell.host_class!r} "
                f"({hc.budget_mb:.0f} MB)")
    if gpu_est and hc.gpu_budget_mb and gpu_est > hc.gpu_budget_mb:
        return (f"GPU memory estimate {gpu_est:.0f} MB exceeds the GPU budget of host class "
                f"{cell.host_class!r} ({hc.gpu_budget_mb:.0f} MB)")
    if matching(hc, nodes):
        return None
    labels, res = requirements(hc)
    unmet = [f"label {k}={v}" for k, v in labels.items() if not any(n.labels.get(k) == v for n in nodes)]
    unmet += [f"resource {k}>={v:g}" for k, v in res.items() if not any(n.resources.get(k, 0) >= v for n in nodes)]
    what = ("no live node has " + ", ".join(unmet)) if unmet else \
        "no single live node has all of " + ", ".join([f"label {k}={v}" for k, v in labels.items()] +
                                                      [f"resource {k}>={v:g}" for k, v in res.items()])
    pool = "; ".join(n.describe() for n in nodes) or "none"
    return f"host class {cell.host_class!r}: {what} (live pool: {pool})"


# --- records the driver writes itself ------------------------------------------------------
def driver_record(t: "_Todo", matrix: Matrix, code_version: str, status: str, reason: str,
                  estimate: dict | None = None, **fields) -> dict:
    """The record of a cell that never ran to its end on a host (no_host, lost, stuck)."""
    return Record.from_driver(t.cell, t.cell_id, code_version, matrix.limits(t.hc), status, reason, estimate,
                              **fields).to_dict()


# --- the driver loop ----------------------------------------------------------------------
@dataclass
class _Todo:
    cell: Cell
    cell_id: str
    hc: HostClass
    attempts: int = 0


@dataclass
class _Flight:
    todo: _Todo
    node: Node
    submitted: float
    deadline: float


@dataclass
class Outcome:
    total: int
    written: int = 0
    skipped: int = 0          # had a record already (resume)
    feasible: int = 0         # passed the pre-flight
    interrupted: bool = False
    lost_node: int = 0        # no_host because their class lost its last node: --resume runs them
    statuses: dict = field(default_factory=dict)
    dispatch_s: list = field(default_factory=list)
    ray_overhead_s: list = field(default_factory=list)


def run_matrix(matrix: Matrix, store, code_version: str, progress=None, log=print, preflight=False) -> Outcome:
    """Run every cell of `matrix` that `store` has no record of; append each record as it
    comes. progress: a callable(done, total) (the CLI's bar). Returns counts; on Ctrl-C or
    SIGTERM (ray job stop) stops submitting and returns with interrupted=True; what still
    runs ends with the job (see _cancel_all). preflight: record the no_host cells, run none."""
    cells = matrix.cells()
    done = store.done_ids()
    out = Outcome(total=len(cells))
    todos = []
    for cell, hc in cells:
        cid = cell.cell_id(code_version)
        if cid in done:
            out.skipped += 1
        else:
            todos.append(_Todo(cell, cid, hc))
    finished = out.skipped

    def write(record: dict) -> None:
        nonlocal finished
        store.append(record)
        finished += 1
        out.written += 1
        out.statuses[record["status"]] = out.statuses.get(record["status"], 0) + 1
        out.lost_node += record.get("no_host_cause") == "lost_node"
        if record.get("dispatch_s") is not None:
            out.dispatch_s.append(record["dispatch_s"])
            out.ray_overhead_s.append(record["ray_overhead_s"])
        log(_line(record, finished, out.total))
        if progress:
            progress(finished, out.total)

    if progress:
        progress(finished, out.total)
    nodes = live_nodes()
    pending: list[_Todo] = []
    for t in todos:  # pre-flight: infeasible cells are recorded now, never submitted
        estimate = memory.estimate_fields(t.cell)
        reason = infeasible(t.cell, t.hc, nodes, estimate)
        if reason:
            write(driver_record(t, matrix, code_version, "no_host", reason, estimate, no_host_cause="pool"))
        else:
            pending.append(t)
    out.feasible = len(pending)
    if preflight:
        return out

    flights: dict = {}
    checked = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)  # `ray job stop` sends SIGTERM
    try:
        while pending or flights:
            _submit(pending, flights, nodes, matrix, code_version)
            ready, _ = ray.wait(list(flights), num_returns=1, timeout=WAIT_S)
            lost = False
            for ref in ready:
                record = _collect(ref, flights.pop(ref), pending, matrix, code_version)
                if record:
                    write(record)
                else:  # the cell went back to pending: its worker or node was lost
                    lost = True
            if flights and time.monotonic() - checked >= NODE_CHECK_S:
                checked = time.monotonic()
                for record in _drop_dead_nodes(flights, pending, matrix, code_version, log):
                    lost = True
                    if record:
                        write(record)
            if lost:
                nodes = _refresh_or_fail(pending, matrix, code_version, write, nodes_after_loss(log))
            now = time.monotonic()
            for ref, f in list(flights.items()):
                if now > f.deadline:  # bounded wait: a stuck task ends as a record, not a hang
                    ray.cancel(ref, force=True)
                    del flights[ref]
                    write(driver_record(f.todo, matrix, code_version, "timeout",
                                        f"dispatch: no result within {f.deadline - f.submitted:.0f} s of submission "
                                        "(task stuck or queued); cancelled", attempts=f.todo.attempts))
            if pending and not flights:
                nodes = _refresh_or_fail(pending, matrix, code_version, write, live_nodes())
    except KeyboardInterrupt:
        out.interrupted = True
        _cancel_all(flights)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return out


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt


def _slots(node: Node) -> int:
    return int(node.resources.get(SLOT, 0))


def _submit(pending: list, flights: dict, nodes: list[Node], matrix: Matrix, code_version: str) -> None:
    """Place waiting cells on nodes with a free slot, in queue order, each pinned to its node,
    so a submitted task starts at once and its deadline holds. Of the free nodes a cell's
    class matches, it takes the one the fewest waiting classes can use (a class that only one
    node serves is not kept off it by a class that could run elsewhere)."""
    busy = Counter(f.node.node_id for f in flights.values())
    free = [n for n in nodes if busy[n.node_id] < _slots(n)]
    if not free or not pending:
        return
    classes = {id(t.hc): t.hc for t in pending}
    demand = {n.node_id: sum(bool(matching(hc, [n])) for hc in classes.values()) for n in free}
    for t in list(pending):
        candidates = [n for n in matching(t.hc, free) if busy[n.node_id] < _slots(n)]
        if not candidates:
            continue
        node = min(candidates, key=lambda n: (demand[n.node_id], busy[n.node_id]))
        _, res = requirements(t.hc)
        opts = {"resources": {k: v for k, v in res.items() if k != "GPU"}, "num_gpus": res.get("GPU", 0),
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False)}
        now = time.monotonic()  # before .remote(): the task may start before that call returns
        ref = cell_task.options(**opts).remote(t.cell.to_dict(), t.cell_id, code_version,
                                                matrix.limits(t.hc).to_dict())
        t.attempts += 1
        flights[ref] = _Flight(t, node, now, now + 2 * matrix.timeout_s + START_GRACE_S)
        busy[node.node_id] += 1
        pending.remove(t)


def _lost(t: _Todo, pending: list, matrix: Matrix, code_version: str, why: str, traceback: str | None = None):
    """A cell whose worker or node was lost: back to the front of the queue (None) while it
    has retries left, else its `crash` record."""
    if t.attempts <= LOST_NODE_RETRIES:
        pending.insert(0, t)
        return None
    return driver_record(t, matrix, code_version, "crash",
                         f"lost its node or worker {t.attempts} time(s) ({why}); not retried again",
                         traceback=traceback, attempts=t.attempts)


def _drop_dead_nodes(flights: dict, pending: list, matrix: Matrix, code_version: str, log) -> list:
    """The cells running on nodes the GCS no longer lists alive, taken out of flight as lost:
    a node cut off by its link leaves its task's connection silent, and the driver would
    otherwise wait for the task's deadline. Their refs are dropped, not cancelled (there is
    nobody to cancel on a dead node; see _cancel_all for the race a cancel risks).
    Returns, per lost cell, its crash record or None (requeued)."""
    alive = {n.node_id for n in live_nodes()}
    out = []
    for ref, f in list(flights.items()):
        if f.node.node_id not in alive:
            del flights[ref]
            log(f"node {f.node.ip} ({f.node.node_id[:8]}) was marked dead by Ray while it ran "
                f"{f.todo.cell.backend} {f.todo.cell.workload} ({f.todo.cell.host_class}); the cell is lost with it")
            out.append(_lost(f.todo, pending, matrix, code_version,
                             f"node {f.node.node_id[:8]} at {f.node.ip} marked dead by Ray's GCS"))
    return out


def _collect(ref, f: _Flight, pending: list, matrix: Matrix, code_version: str) -> dict | None:
    """The record of a finished task; None when its cell went back to pending (lost node)."""
    t = f.todo
    roundtrip_s = time.monotonic() - f.submitted
    try:
        record = ray.get(ref, timeout=WAIT_S)
    except Exception as e:  # noqa: BLE001 -- every way a task can fail ends in a record
        kind = type(e).__name__
        if kind == "OutOfMemoryError":  # Ray's memory monitor killed the worker: never retried blindly
            return driver_record(t, matrix, code_version, "oom", f"Ray's memory monitor killed the task's worker: {e}",
                                 attempts=t.attempts, limit_enforced_by="ray")
        if kind in LOST or any(k in kind for k in LOST):
            return _lost(t, pending, matrix, code_version, kind, traceback=str(e)[-4000:])
        return driver_record(t, matrix, code_version, "crash", f"the Ray task failed: {kind}",
                             traceback=str(e)[-4000:], attempts=t.attempts)
    # overhead: everything but the workload itself (Ray's part: all but the child's life)
    record.update(roundtrip_s=roundtrip_s, dispatch_s=roundtrip_s - (record.get("workload_s") or 0.0),
                  ray_overhead_s=roundtrip_s - record["wall_s"], attempts=t.attempts)
    return record


def _refresh_or_fail(pending: list, matrix: Matrix, code_version: str, write, nodes: list[Node]) -> list[Node]:
    """Re-check the waiting cells against the pool as it is now (after a loss, or when
    nothing runs): a cell no node can run any more is recorded `no_host`."""
    for t in list(pending):
        reason = infeasible(t.cell, t.hc, nodes, memory.estimate_fields(t.cell))
        if reason:
            pending.remove(t)
            write(driver_record(t, matrix, code_version, "no_host", f"after losing a node: {reason}",
                                attempts=t.attempts, no_host_cause="lost_node"))
    return nodes


def _cancel_all(flights: dict) -> None:
    """Leave the running tasks to the job's teardown instead of ray.cancel: in Ray 2.60 a
    cancel that races with the task's own completion aborts the driver (a RAY_CHECK in
    TaskManager::CompletePendingTask, ray-project/ray#54846), losing the clean exit. When
    the driver exits, the raylets kill its job's workers, and each cell's child dies with
    its worker (PR_SET_PDEATHSIG, suite/runner.py); finished records are already on disk."""
    if flights:
        print(f"interrupted: {len(flights)} running cell(s) end with this job", file=sys.stderr)


def _line(r: dict, n: int, total: int) -> str:
    spec = r["spec"].get("name", "?") if isinstance(r.get("spec"), dict) else r.get("spec")
    where = r.get("node_ip") or "-"
    tail = f"{r['dispatch_s']:.2f} s overhead" if r.get("dispatch_s") is not None else (r.get("reason") or "")
    return f"[{n}/{total}] {r['backend']} {r['workload']} {spec} {r['dtype']} {r['host_class']} on {where}: " \
           f"{r['status']}  {tail}"


def connect(address: str | None, temp_dir: str | None = None) -> str:
    """Join the pool at `address` ('auto', 'IP:port', 'ray://...'), or with None start a
    local one-node Ray: this machine as one host with one bench_slot, labelled
    gptbench/class=local. Returns a line saying which."""
    if address:
        ray.init(address=address, log_to_driver=False)
        return f"joined the Ray pool at {address}: {len(live_nodes())} node(s)"
    # address="local": never join another user's Ray that `ray start` left on this machine
    ray.init(address="local", num_cpus=os.cpu_count(), resources={SLOT: 1}, labels={"gptbench/class": "local"},
             include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
             _temp_dir=temp_dir)
    return f"started a local Ray on {socket.gethostname()} (one node, one bench_slot)"
