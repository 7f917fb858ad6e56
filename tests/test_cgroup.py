"""suite/cgroup.py on both cgroup layouts. v1 is exercised for real by the pool rehearsal
(tests/test_pool_rehearsal.py, where the kernel enforces it); this machine has no v2
memory controller, so v2 is checked here against a folder laid out as the kernel's v2
interface is documented (Documentation/admin-guide/cgroup-v2.rst: cgroup.controllers,
cgroup.subtree_control, memory.max, memory.swap.max, memory.events' oom_kill,
cpuset.cpus, cgroup.procs), with what the kernel would create in a new group put there by
hand. What it cannot show: that a v2 kernel enforces the limit."""

from pathlib import Path

import pytest

from suite import cgroup


@pytest.fixture
def v2(tmp_path, monkeypatch):
    """A v2 root with the memory and cpuset controllers available but not yet enabled for
    children; this process's group is the root."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (tmp_path / "cgroup.subtree_control").write_text("\n")
    monkeypatch.setattr(cgroup, "ROOT", tmp_path)
    monkeypatch.setattr(cgroup, "own_dir", lambda controller, pid="self": tmp_path)
    return tmp_path


def _kernel_makes(group: Path, oom_kills: int = 0) -> None:
    """The files a v2 kernel puts in a new group, at their defaults."""
    group.mkdir()
    for name, value in {"memory.max": "max", "memory.swap.max": "max", "cpuset.cpus": "", "cgroup.procs": "",
                        "memory.events": f"low 0\nhigh 0\nmax 3\noom {oom_kills + 1}\noom_kill {oom_kills}\n"}.items():
        (group / name).write_text(value)


def test_v2_group_limits_memory_without_swap_and_pins_one_cpu(v2):
    assert cgroup.missing() is None
    _kernel_makes(v2 / "gbp-lowram", oom_kills=2)
    folders = cgroup.make("gbp-lowram", 1050, 1)
    assert folders == [v2 / "gbp-lowram"] == cgroup.dirs("gbp-lowram")
    assert (v2 / "cgroup.subtree_control").read_text() == "+memory +cpuset"  # enabled for the children
    group = folders[0]
    assert int((group / "memory.max").read_text()) == 1050 * 2**20
    assert (group / "memory.swap.max").read_text() == "0"
    assert (group / "cpuset.cpus").read_text() == "1"
    assert cgroup.limit_mb(group) == 1050.0
    assert cgroup.oom_kills(group) == 2  # memory.events' oom_kill, not its oom (3)
    cgroup.join(folders, pid=4242)
    assert (group / "cgroup.procs").read_text() == "4242"


def test_v2_limit_of_max_is_no_limit_and_a_missing_controller_is_named(v2):
    _kernel_makes(v2 / "g")
    assert cgroup.limit_mb(v2 / "g") is None  # "max"
    (v2 / "cgroup.controllers").write_text("cpu io pids\n")
    assert cgroup.missing() == "cgroup v2 without the cpuset, memory controller(s)"


def test_v1_oom_kill_count_comes_from_memory_oom_control(tmp_path):
    (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    (tmp_path / "memory.limit_in_bytes").write_text(str(700 * 2**20))
    assert cgroup.oom_kills(tmp_path) == 5 and cgroup.limit_mb(tmp_path) == 700.0
    (tmp_path / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # v1's "unlimited"
    assert cgroup.limit_mb(tmp_path) is None
    assert cgroup.oom_kills(None) is None and cgroup.oom_kills(tmp_path / "absent") is None
