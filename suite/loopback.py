"""Ray on this machine's loopback only: the local Ray of `gptbench run` and the simulated pool.

Ray (2.60) binds every server of a node -- the GCS, raylet, object manager, workers, the
agents, the metrics exporters and the dashboard's and autoscaler's Prometheus servers -- to
127.0.0.1 only when the node's own address is 127.0.0.1; for any other address they listen
on every interface. `--node-ip-address 127.0.0.1` does not get there: Ray replaces a loopback
address by the machine's own IP, except in its single-machine mode (ENV, its default on
macOS and Windows), where a node's address is 127.0.0.1. Every process that starts or joins
such a Ray needs ENV (a client without it turns the pool's 127.0.0.1 into the machine's IP
and finds nothing there).

`ray start` refuses to start a node that joins a head in single-machine mode (a check meant
for macOS and Windows, where multi-node Ray is unsupported); JOIN runs Ray's own `ray start`
with that one check let through, so the nodes of the simulated pool join a loopback head.
"""

from __future__ import annotations

import sys

ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

# `python -c JOIN start ARGS...` is `ray start ARGS...`: Ray's CLI reads ENABLE_RAY_CLUSTER from
# a view of its constants in which it is true (only the refusal to join reads it there), while
# the node's address and its processes' bind addresses come from the real constants, where
# ENV made it false
JOIN = """
import sys, types
import ray._private.ray_constants as constants
from ray.scripts import scripts

class JoinAllowed(types.ModuleType):
    def __getattr__(self, name):
        return getattr(constants, name)

view = JoinAllowed(constants.__name__)
view.ENABLE_RAY_CLUSTER = True
scripts.ray_constants = view
sys.argv[0] = "ray"
scripts.main()
"""


def ray_start() -> list[str]:
    """The command that is `ray start` for a node on loopback (run it with ENV)."""
    return [sys.executable, "-c", JOIN, "start"]
