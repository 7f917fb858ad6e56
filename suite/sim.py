"""A simulated heterogeneous pool on one machine (`gptbench cluster sim up|down|status`).

Several Ray nodes, each its own `ray start --block` process group, one per host of the
inventory (suite/inventory.py: head, lowram, rtx4070), each with its host's label and
resources. Every node is on loopback only (suite/loopback.py: its address is 127.0.0.1,
and so is every socket it listens on). Every port is a free one picked here and the temp
dir is the sim's own, so it never meets another Ray on the machine; `down` stops exactly the processes `up` started
(their PIDs are in the sim's state file), never by name, never `ray stop`. Budgets are
the matrix's business (host classes), and the hosts' own start flags (a GPU, 4 CPUs) are
not simulated: the nodes only say what they are.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from gptspec.errors import GptbenchError
from gptspec.files import write_json_atomic, write_private
from suite import inventory, loopback, tempdirs

STATE = "sim.json"
TOKEN = "ray.token"  # a *.token name: cluster.yaml's rsync leaves it out wherever the folder is
# in the environment of every process of the pool (cells included): tests find their own
MARKER = "GPTBENCH_SIM"
HEAD = "head"  # the inventory host whose node is the Ray head, as in cluster.yaml
OBJECT_STORE_BYTES = 80 * 2**20
UP_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class _Ports:
    """Ports for one pool: distinct, free now, and below the kernel's ephemeral range, so
    neither a port we hand out nor a worker range lands on a port the kernel gives the
    next outgoing connection (CI once saw Ray refuse a range that held another port of
    ours: bind(0) answers cluster). Above Ray's own defaults (10001, 10002-19999)."""

    LOW = 20000

    def __init__(self, seed: int | None = None):
        self.taken: set[int] = set()
        self.high = max(self.LOW + 1000, _ephemeral_low())
        self.rng = random.Random(seed)

    def range(self, n: int = 1) -> int:
        """The first of n consecutive ports, none handed out before and each bindable now."""
        for _ in range(1000):
            lo = self.rng.randrange(self.LOW, self.high - n)
            span = set(range(lo, lo + n))
            if not span & self.taken and all(_bindable(p) for p in span):
                self.taken |= span
                return lo
        raise GptbenchError(f"no {n} free consecutive port(s) between {self.LOW} and {self.high}")

    def one(self) -> int:
        return self.range(1)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
            return True
        except OSError:
            return False


WORKER_PORTS = 41


def _node_ports(ports: _Ports) -> list[str]:
    # every port a node binds, chosen free and distinct: defaults (52365, 8265, 10001...)
    # collide between nodes and with any other Ray on the machine
    lo = ports.range(WORKER_PORTS)
    return ["--node-manager-port", str(ports.one()), "--object-manager-port", str(ports.one()),
            "--metrics-export-port", str(ports.one()), "--dashboard-agent-listen-port", str(ports.one()),
            "--dashboard-agent-grpc-port", str(ports.one()), "--runtime-env-agent-port", str(ports.one()),
            "--min-worker-port", str(lo), "--max-worker-port", str(lo + WORKER_PORTS - 1)]


def client_env(state: dict) -> dict:
    """Environment for any process that talks to the sim (a driver, `ray job submit`): its
    own auth token, not ~/.ray/auth_token, which other Rays on a shared machine rewrite; and
    Ray's single-machine mode, in which the pool's 127.0.0.1 stays 127.0.0.1 (suite/loopback.py)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state["auth_token_path"],
            "RAY_ADDRESS": state["address"], **loopback.ENV}


def _path_with_this_python() -> str:
    """PATH with this Python's folder first: a job's `python -m suite run` runs in the
    head's environment and must find the interpreter gptbench is installed in."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def node_names() -> list[str]:
    """One node per inventory host, the head first."""
    return sorted(inventory.names(), key=lambda name: name != HEAD)


def _start(name: str, args: list[str], log: Path, state: dict, ports: _Ports) -> subprocess.Popen:
    # the label and resources flags of the real pool's start commands (`gptbench host NAME --ray-start`)
    # on loopback only: the node's address is 127.0.0.1 and all it opens listens there
    cmd = [*loopback.ray_start(), "--block", "--disable-usage-stats",
           "--num-cpus", "1", "--object-store-memory", str(OBJECT_STORE_BYTES),
           *inventory.load(name).node_args(), *_node_ports(ports), *args]
    with open(log, "wb") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **client_env(state), "PATH": _path_with_this_python(),
                                     MARKER: state["temp_dir"]})


def up(folder, dashboard: bool = False, nodes=None) -> dict:
    """Start the pool; return its state (address, dashboard URL, PIDs). `folder` holds
    the state file, the token and the logs; Ray's own temp dir is a short path under /tmp
    (unix sockets allow 107 bytes), in the user's private parent (suite/tempdirs.py: Ray
    opens it to all). A failed start stops what it started and removes both."""
    folder = Path(folder).resolve()
    if (folder / STATE).exists():
        raise GptbenchError(f"a simulated pool is already recorded in {folder / STATE}: "
                            f"`gptbench cluster sim down --dir {folder}` first.")
    folder.mkdir(parents=True, exist_ok=True)
    state = {"address": None, "temp_dir": None, "nodes": [], "dashboard_url": None,
             "auth_token_path": str(folder / TOKEN)}
    procs = {}
    try:
        state["temp_dir"] = tempfile.mkdtemp(prefix="gbsim", dir=tempdirs.private_parent("/tmp"))
        # a new pool, a new token; one left here belongs to no recorded pool (down removes its own)
        Path(state["auth_token_path"]).unlink(missing_ok=True)
        write_private(state["auth_token_path"], uuid.uuid4().hex)
        ports = _Ports()
        for name in nodes or node_names():
            for attempt in range(1, START_TRIES + 1):
                args = _head_args(state, ports, dashboard) if name == HEAD else ["--address", state["address"]]
                procs[name] = _start(name, args, folder / f"{name}.log", state, ports)
                state["nodes"].append({"name": name, "pid": procs[name].pid})
                _write_state(folder, state)  # every PID on disk before the next start: down finds them
                try:
                    # one at a time: on a loaded 2-core machine, nodes started together time out
                    _wait_for(state, len(procs), folder, procs)
                    break
                except _PortTaken:
                    if attempt == START_TRIES:
                        raise
                    # another process took a port between our check and Ray's bind: new ports
                    _signal_group(procs.pop(name).pid, signal.SIGKILL)
                    state["nodes"].pop()
                    _write_state(folder, state)
    except BaseException:
        down(folder)  # the nodes recorded so far
        _remove_files(state)  # and what was made before the first one was
        raise
    return state


START_TRIES = 3


class _PortTaken(GptbenchError):
    """A node exited at start because a port it was given was in use."""


def _head_args(state: dict, ports: _Ports, dashboard: bool) -> list[str]:
    port, dash_port, client_port = ports.one(), ports.one(), ports.one()
    state["address"] = f"127.0.0.1:{port}"
    state["dashboard_url"] = f"http://127.0.0.1:{dash_port}" if dashboard else None
    args = ["--head", "--port", str(port), "--ray-client-server-port", str(client_port),
            "--temp-dir", state["temp_dir"], "--include-dashboard", str(dashboard).lower()]
    if dashboard:  # the job server (ray job submit) lives in the dashboard
        args += ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port)]
    return args


def _alive_nodes(state: dict) -> int | None:
    """Alive nodes as the GCS sees them, asked from a short-lived process (no ray.init here)."""
    code = ("import ray,sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    try:
        out = subprocess.run([sys.executable, "-c", code, state["address"]], capture_output=True, text=True,
                             timeout=60, env={**os.environ, **client_env(state)})
        return int(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def _wait_for(state: dict, n: int, folder: Path, procs: dict) -> None:
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        if dead:
            tails = {name: _tail(folder / f"{name}.log") for name in dead}
            logs = "\n".join(f"--- {folder / name}.log, last lines:\n{tail}" for name, tail in tails.items())
            port_taken = all(_PORT_IN_USE.search(tail) for tail in tails.values())
            raise (_PortTaken if port_taken else GptbenchError)(f"simulated node(s) {dead} exited at start.\n{logs}")
        if (_alive_nodes(state) or 0) >= n:
            return
        time.sleep(1.0)
    raise GptbenchError(f"the simulated pool did not reach {n} node(s) within {UP_TIMEOUT_S:.0f} s; "
                        f"see the logs in {folder}")


_PORT_IN_USE = re.compile(r"port.*(in use|used by)|address already in use", re.IGNORECASE)


def _tail(path: Path, lines: int = 6) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(unreadable: {e})"


def _write_state(folder: Path, state: dict) -> None:
    write_json_atomic(folder / STATE, state, indent=1)


def status(folder) -> dict | None:
    path = Path(folder) / STATE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    for node in state["nodes"]:
        node["running"] = psutil.pid_exists(node["pid"])
    return state


def down(folder) -> list[int]:
    """Stop the pool's processes: SIGTERM to each node's process group and the processes
    it spawned, SIGKILL after a grace. Returns the PIDs signalled."""
    folder = Path(folder)
    state = status(folder)
    if state is None:
        return []
    procs = []
    for node in state["nodes"]:
        try:
            root = psutil.Process(node["pid"])
            procs += [root, *root.children(recursive=True)]  # raylet, gcs, workers: all of this node
        except psutil.NoSuchProcess:
            pass
    for node in state["nodes"]:
        _signal_group(node["pid"], signal.SIGTERM)
    for p in procs:
        tempdirs.signal_quietly(p, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_S)
    for node in state["nodes"]:
        _signal_group(node["pid"], signal.SIGKILL)
    for p in alive:
        tempdirs.signal_quietly(p, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=STOP_GRACE_S)
    (folder / STATE).unlink()
    _remove_files(state)
    return [p.pid for p in procs]


def _remove_files(state: dict) -> None:
    """The pool's Ray temp dir and its token: neither outlives the pool."""
    if state.get("temp_dir"):
        shutil.rmtree(state["temp_dir"], ignore_errors=True)
    Path(state["auth_token_path"]).unlink(missing_ok=True)


def _signal_group(pgid: int, sig) -> None:
    try:
        os.killpg(pgid, sig)  # each node was started as its own session: pgid == its pid
    except (ProcessLookupError, PermissionError):
        pass


