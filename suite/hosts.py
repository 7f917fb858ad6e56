"""The real pool rehearsed on one machine (`gptbench cluster hosts up|down --dir D`, as root).

One host per inventory host (suite/inventory.py), each as separate as one machine allows:
- its own network namespace `gbp-<name>` on a private bridge `gbp-br0` (a /24 chosen free;
  the bridge is .1, the hosts .10, .11, ...; a default route on the link, no gateway);
- an sshd in the namespace, listening on the host's address only, with its own /tmp
  (Ray's session folders never meet another Ray on the machine);
- its own user `gbp-<name>` with its own home, logged in as cluster.yaml's one ssh_user
  LOGIN: each namespace sees LOGIN as its host's user (ip netns exec bind-mounts
  /etc/netns/<ns>/passwd over /etc/passwd), so each host has its own ~/gptbench, .venv,
  ~/.ray and ~/.gptbench/host-name;
- the operator's pip configuration as the host's /etc/pip.conf (an offline mirror works
  there too; the bridge reaches no index);
- for LIMITED hosts, a memory cgroup of the host's budget_mb plus RAY_SHARE_MB, pinned to
  one CPU: its sshd joins it before it execs, so everything started over SSH is in it.

D gets the pool's key pair, D/cluster.yaml (the shipped one with only the provider's
addresses and the SSH user and key changed), D/operator (the HOME for `ray up`, holding
the pool's token in .ray/auth_token) and D/env (what `ray` commands need). Everything made
is named gbp-* and recorded in D/hosts.json before it is made, so `down` removes exactly it,
also after a failed `up`, and a second `down` does nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from gptspec.errors import GptbenchError
from gptspec.files import write_json_atomic, write_private
from suite import cgroup, inventory, wheelhouse

PREFIX = "gbp-"
BRIDGE = "gbp-br0"
LOGIN = "gbp-bench"   # cluster.yaml's ssh_user on every host
STATE = "hosts.json"
HEAD = "head"
LIMITED = ("lowram",)  # the hosts whose RAM the kernel enforces
# what Ray itself keeps resident on lowram's node during a cell (measured, docs/cluster.md:
# raylet, log monitor, dashboard and runtime-env agents ~261 MB, the task's worker ~91 MB);
# the cell's budget_mb comes on top
RAY_SHARE_MB = 350
SHIPPED = Path(__file__).resolve().parents[1] / "cluster.yaml"
SSHD = "/usr/sbin/sshd"
SSHD_WAIT_S = 15.0
# the hosts' wheels the local indexes lack, packed once per machine and kept (a cache)
WHEELS = Path("/var/cache/gptbench-pool-wheels")


class Refused(GptbenchError):
    """This machine cannot host the rehearsal (not root, no namespaces, no cgroups)."""


def missing() -> str | None:
    """The capability the rehearsal lacks here, or None."""
    if os.geteuid() != 0:
        return "not root: namespaces, users and cgroups need root"
    if not shutil.which("ip") or not Path("/proc/self/ns/net").exists():
        return "no network namespaces (iproute2's `ip` and /proc/self/ns/net)"
    if not Path(SSHD).exists() or not shutil.which("rsync"):
        return f"no {SSHD} or rsync: apt-get install openssh-server rsync"
    if not shutil.which("unshare") or not shutil.which("useradd"):
        return "no unshare or useradd (util-linux, passwd)"
    return cgroup.missing()


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check and out.returncode:
        raise GptbenchError(f"`{' '.join(cmd)}` failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return out


def _used_networks() -> list:
    nets = []
    for word in _run("ip", "-o", "addr").stdout.split() + _run("ip", "route", "show", "table", "all").stdout.split():
        try:
            if "/" in word or word.count(".") == 3:
                nets.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            pass
    return nets


def free_subnet() -> ipaddress.IPv4Network:
    """A private /24 that no address or route of this machine touches."""
    used = _used_networks()
    for b in range(200, 256):
        net = ipaddress.ip_network(f"10.{b}.77.0/24")
        if not any(net.overlaps(u) for u in used if u.version == 4 and u.prefixlen > 0):
            return net
    raise GptbenchError("no free 10.200-255.77.0/24 subnet on this machine")


def node_names(only=None) -> list[str]:
    names = sorted(inventory.names(), key=lambda n: n != HEAD)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown or HEAD not in only:
            raise GptbenchError(f"--only {','.join(only)}: give inventory hosts ({', '.join(names)}), "
                                f"{HEAD} among them")
        names = [n for n in names if n in only]
    return names


def _pip_conf(names: list[str]) -> str:
    """The operator's pip settings as one pip.conf for the hosts, with WHEELS (what the
    hosts install that those folders lack, packed from the operator's Python) among the
    find-links. The hosts reach no index but file:// ones, so the first extra index becomes
    the index (pip would otherwise retry pypi.org for every package)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    conf = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        conf[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    for key, value in os.environ.items():
        if key.startswith("PIP_"):
            conf[key[4:].lower().replace("_", "-")] = value
    extra = conf.get("extra-index-url", "").split()
    if "index-url" not in conf and extra and all(u.startswith("file:") for u in extra):
        conf["index-url"], rest = extra[0], extra[1:]
        conf["extra-index-url"] = " ".join(rest)
    folders = [Path(u.removeprefix("file://")) for u in [conf.get("index-url", ""), *extra] if u.startswith("file:")]
    folders += [Path(f) for f in conf.get("find-links", "").split()]
    extras = {"ray"} | {e for n in names for e in inventory.load(n).install.split(",")}
    wheelhouse.make(WHEELS, {"gptbench": extras, "pyyaml": set()}, folders)
    os.chmod(WHEELS, 0o755)
    conf["find-links"] = " ".join([*conf.get("find-links", "").split(), str(WHEELS)])
    return "[global]\n" + "".join(f"{k} = {v}\n" for k, v in conf.items() if v)


def _sshd_config(host: dict, folder: Path) -> str:
    return "\n".join([
        f"ListenAddress {host['ip']}", "Port 22", f"HostKey {folder / 'ssh_host_ed25519_key'}", "PidFile none",
        "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "AuthorizedKeysFile .ssh/authorized_keys", f"AllowUsers {LOGIN}", "PermitRootLogin no",
        "Subsystem sftp internal-sftp", "LogLevel VERBOSE", ""])


def _write_state(folder: Path, state: dict) -> None:
    write_json_atomic(folder / STATE, state, indent=1)


def read_state(folder) -> dict | None:
    path = Path(folder) / STATE
    return json.loads(path.read_text()) if path.exists() else None


def up(folder, only=None) -> dict:
    """Make the pool; return its state (hosts with name, ip, user, ns, sshd pid, limit)."""
    why = missing()
    if why:
        raise Refused(f"cannot rehearse the pool here: {why}.")
    folder = Path(folder).resolve()
    if (folder / STATE).exists():
        raise GptbenchError(f"a pool is already recorded in {folder / STATE}: "
                            f"`gptbench cluster hosts down --dir {folder}` first.")
    names = node_names(only)
    clash = [n for n in _run("ip", "netns", "list").stdout.split() if n.startswith(PREFIX)]
    if clash or Path(f"/sys/class/net/{BRIDGE}").exists():
        raise GptbenchError(f"another rehearsed pool is up on this machine ({', '.join(clash) or BRIDGE}): "
                            "`gptbench cluster hosts down --dir` its folder first.")
    folder.mkdir(parents=True, exist_ok=True)
    net = free_subnet()
    addrs = list(net.hosts())
    state = {"subnet": str(net), "bridge": BRIDGE, "bridge_ip": str(addrs[0]), "login": LOGIN, "hosts": []}
    _write_state(folder, state)
    try:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{addrs[0]}/{net.prefixlen}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        key = folder / "id_ed25519"
        key.unlink(missing_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gptbench-pool", "-f", str(key))
        pip_conf = _pip_conf(names)
        for i, name in enumerate(names):
            host = {"name": name, "ip": str(addrs[9 + i]), "ns": PREFIX + name, "veth": f"{PREFIX}v{i}",
                    "user": PREFIX + name, "home": f"/home/{PREFIX}{name}", "sshd_pid": None,
                    "limit_mb": None, "cpu": None}
            state["hosts"].append(host)
            _write_state(folder, state)  # before it exists: down removes a half-made host too
            _make_host(host, key, net.prefixlen)
            _write_state(folder, state)
        # every user first: useradd replaces /etc/passwd, which detaches the copies bound over it
        for host in state["hosts"]:
            _start_sshd(host, folder, pip_conf)
            _write_state(folder, state)
        _write_cluster_yaml(folder, state)
        _write_operator(folder)
        _write_state(folder, state)
    except BaseException:
        down(folder)
        raise
    return state


def _make_host(host: dict, key: Path, prefixlen: int) -> None:
    """The host's namespace, link, address and user."""
    ns, veth = host["ns"], host["veth"]
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _run("ip", "link", "set", veth, "master", BRIDGE, "up")
    _run("ip", "-n", ns, "addr", "add", f"{host['ip']}/{prefixlen}", "dev", "eth0")
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    _run("ip", "-n", ns, "link", "set", "eth0", "up")
    # Ray takes a node's address from the route to the internet (else it binds its GCS to
    # loopback and no worker can join): an on-link default route, with no gateway, gives
    # one; nothing answers beyond the bridge, and the machine forwards nothing for it
    _run("ip", "-n", ns, "route", "add", "default", "dev", "eth0")

    _run("useradd", "--create-home", "--home-dir", host["home"], "--shell", "/bin/bash", "--user-group", host["user"])
    entry = pwd.getpwnam(host["user"])
    host["uid"] = entry.pw_uid
    home = Path(host["home"])
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    (home / ".ssh" / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    (home / ".gptbench").mkdir(exist_ok=True)
    (home / ".gptbench" / "host-name").write_text(host["name"] + "\n")  # docs/cluster.md: once per host
    _run("chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(home))


def _start_sshd(host: dict, folder: Path, pip_conf: str) -> None:
    """The host's /etc (its login, pip, ssh), cgroup and sshd."""
    ns = host["ns"]
    entry = pwd.getpwnam(host["user"])
    # in this host's namespace the login name is this host's user (ip netns exec mounts these over /etc)
    etc = Path("/etc/netns") / ns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text(Path("/etc/passwd").read_text() +
                                f"{LOGIN}:x:{entry.pw_uid}:{entry.pw_gid}:gptbench pool host:{host['home']}:/bin/bash\n")
    (etc / "pip.conf").write_text(pip_conf)
    (etc / "resolv.conf").write_text("# no name servers: the pool's network is its bridge\n")

    hdir = folder / "hosts" / host["name"]
    (hdir / "tmp").mkdir(parents=True, exist_ok=True)
    os.chmod(hdir / "tmp", 0o1777)
    # sshd's own files as the namespace's /etc/ssh: outside /tmp, which the host has its own of
    (etc / "ssh").mkdir(exist_ok=True)
    host_key = etc / "ssh" / "ssh_host_ed25519_key"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
    (etc / "ssh" / "sshd_config").write_text(_sshd_config(host, Path("/etc/ssh")))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder

    hostinfo = inventory.load(host["name"])
    join = None
    if host["name"] in LIMITED:
        host["limit_mb"] = int(hostinfo.budget_mb) + RAY_SHARE_MB
        host["cpu"] = (os.cpu_count() or 1) - 1
        host["cgroup"] = [str(d) for d in cgroup.make(ns, host["limit_mb"], host["cpu"])]
        join = lambda: cgroup.join(host["cgroup"])  # noqa: E731 -- in the child, before it execs sshd
    # `ip netns exec` mounts a fresh /sys, without the cgroup file systems: mounted again, so a
    # host's processes read their own memory limit and the kernel's OOM kills (suite/runner.py)
    script = " && ".join(['mount --bind "$1" /tmp', *_cgroup_mounts(), 'exec "$2" -D -e'])
    cmd = ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script,
           "sh", str(hdir / "tmp"), SSHD]
    with open(hdir / "sshd.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=join)
    host["sshd_pid"] = proc.pid
    deadline = time.monotonic() + SSHD_WAIT_S
    while not _answers(host["ip"]):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise GptbenchError(f"sshd of host {host['name']} did not listen on {host['ip']}:22; "
                                f"see {hdir / 'sshd.log'}")
        time.sleep(0.1)


def _cgroup_mounts() -> list[str]:
    """Shell commands that mount this machine's cgroup file systems again, as they are here."""
    cmds = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, opts = line.split()[:4]
        if point.startswith(str(cgroup.ROOT)) and fstype in ("tmpfs", "cgroup", "cgroup2"):
            cmds.append(f"mkdir -p {point} && mount -t {fstype} -o {opts} {fstype} {point}")
    return cmds


def _answers(ip: str) -> bool:
    try:
        with socket.create_connection((ip, 22), timeout=1.0) as s:
            return s.recv(4).startswith(b"SSH")
    except OSError:
        return False


def _write_cluster_yaml(folder: Path, state: dict) -> None:
    """The shipped cluster.yaml with the provider's addresses and the SSH user and key
    changed, nothing else: each line is kept but for those values (and the worker
    lines of hosts not in the pool)."""
    ips = {h["name"]: h["ip"] for h in state["hosts"]}
    workers = [n for n in ("lowram", "rtx4070")]  # the shipped file's worker_ips order
    out, in_workers, w = [], False, 0
    for line in SHIPPED.read_text().splitlines(keepends=True):
        m = re.match(r"(\s*)(head_ip|ssh_user|ssh_private_key):(\s*)(\S+)(.*)", line, re.S)
        if m:
            value = {"head_ip": ips[HEAD], "ssh_user": LOGIN, "ssh_private_key": str(folder / "id_ed25519")}[m[2]]
            line = f"{m[1]}{m[2]}:{m[3]}{value}{m[5]}"
        elif re.match(r"\s*worker_ips:", line):
            in_workers = True
        elif in_workers and (m := re.match(r"(\s*-\s*)(\S+)(.*)", line, re.S)):
            name = workers[w]
            w += 1
            if name not in ips:
                continue
            line = f"{m[1]}{ips[name]}{m[3]}"
        else:
            in_workers = False
        out.append(line)
    (folder / "cluster.yaml").write_text("".join(out))


def _write_operator(folder: Path) -> None:
    """The operator's side: a HOME of its own for `ray up` (its ~/.ray/auth_token is the
    pool's token, cluster.yaml's file mount), never the machine's real ~/.ray."""
    home = folder / "operator"
    (home / ".ray").mkdir(parents=True, mode=0o700, exist_ok=True)
    (home / ".ray" / "auth_token").unlink(missing_ok=True)
    write_private(home / ".ray" / "auth_token", secrets.token_hex(32))
    (folder / "env").write_text(f"export HOME={home} RAY_AUTH_MODE=token "
                                f"RAY_AUTH_TOKEN_PATH={home / '.ray' / 'auth_token'}\n")


# --- down --------------------------------------------------------------------------------
def _host_pids(host: dict) -> set[int]:
    pids = cgroup.pids(host.get("cgroup") or [])
    out = _run("ip", "netns", "pids", host["ns"], check=False)
    pids |= {int(p) for p in out.stdout.split()} if out.returncode == 0 else set()
    if host.get("uid") is not None:
        for p in psutil.process_iter(["uids"]):
            try:
                if p.info["uids"] and p.info["uids"].real == host["uid"]:
                    pids.add(p.pid)
            except psutil.Error:
                pass
    if host.get("sshd_pid"):
        pids.add(host["sshd_pid"])
    return {p for p in pids if p != os.getpid() and _alive(p)}


def _alive(pid: int) -> bool:
    """Running, not a zombie: Ray's daemons are orphans whose reaper may be slow (or never reap)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_host_processes(host: dict, timeout_s: float = 10.0) -> int:
    """SIGKILL every process of the host (its namespace, its cgroup, its user) until none is left."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while (pids := _host_pids(host)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return len(killed)


def down(folder) -> dict:
    """Remove what `up` recorded in folder: processes, namespaces, users, cgroups, the
    bridge. Returns what was removed; nothing recorded is fine (a second down)."""
    folder = Path(folder)
    state = read_state(folder)
    if state is None:
        return {}
    removed = {"processes": 0, "hosts": []}
    for host in state["hosts"]:
        removed["processes"] += kill_host_processes(host)
        _run("ip", "netns", "del", host["ns"], check=False)
        shutil.rmtree(Path("/etc/netns") / host["ns"], ignore_errors=True)
        if _run("id", "-u", host["user"], check=False).returncode == 0:
            _run("userdel", "--remove", host["user"], check=False)
        shutil.rmtree(host["home"], ignore_errors=True)
        cgroup.remove(host.get("cgroup") or [])
        shutil.rmtree(folder / "hosts" / host["name"] / "tmp", ignore_errors=True)
        removed["hosts"].append(host["name"])
    _run("ip", "link", "del", state["bridge"], check=False)
    (folder / STATE).unlink()
    return removed


def leftovers() -> list[str]:
    """Whatever named gbp-* exists on this machine: namespaces, links, users, cgroups."""
    found = [f"netns {n}" for n in _run("ip", "netns", "list").stdout.split() if n.startswith(PREFIX)]
    found += [f"link {p.name}" for p in Path("/sys/class/net").iterdir() if p.name.startswith(PREFIX)]
    found += [f"user {u.pw_name}" for u in pwd.getpwall() if u.pw_name.startswith(PREFIX)]
    found += [f"etc {p}" for p in Path("/etc/netns").glob(PREFIX + "*")] if Path("/etc/netns").exists() else []
    for d in {d.parent for d in cgroup.dirs("x")}:
        found += [f"cgroup {p}" for p in d.glob(PREFIX + "*")]
    # the top level too: a pool made by a process in another group
    found += [f"cgroup {p}" for p in cgroup.ROOT.glob(f"*/{PREFIX}*")]
    return found
