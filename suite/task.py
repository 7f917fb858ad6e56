"""The Ray task of one cell: what a worker host imports to run it.

Kept apart from suite/dispatch.py so that a worker (the 700 MB box) imports ray and the
cell runner only, not the driver's matrix validation (pydantic, yaml) or pandas.
"""

from __future__ import annotations

import os
import signal

import ray

from suite.cell import Cell
from suite.record import Limits
from suite.runner import run_cell


@ray.remote(num_cpus=0, max_retries=0)  # OOM-killed tasks are not retried blindly: the driver decides
def cell_task(cell_dict: dict, cell_id: str, code_version: str, limits: dict) -> dict:
    """Runs on the chosen node: the cell in a child process, plus where it ran. Plain dicts
    in and out (Cell.to_dict, Limits.to_dict, Record.to_dict): a host running other code
    than the driver still reads them."""
    import psutil

    try:
        record = run_cell(Cell.from_dict(cell_dict), Limits.from_dict(limits))
    except KeyboardInterrupt:  # ray.cancel: the cell's child runs in its own session; end it
        for child in psutil.Process().children():
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        raise
    if record.code_version != code_version:  # this host runs other code than the driver
        record.worker_code_version = record.code_version
    ctx = ray.get_runtime_context()
    labels = {k: v for k, v in ctx.get_node_labels().items() if not k.startswith("ray.io/")}
    record.update(cell_id=cell_id, code_version=code_version, node_id=ctx.get_node_id(), node_labels=labels,
                  node_ip=ray.util.get_node_ip_address(), worker_pid=os.getpid())
    return record.to_dict()
