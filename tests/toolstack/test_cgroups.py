"""The domains' cgroups (toolstack/cgroups.py): which cgroup version a host
offers, the files weight, cap and cpupools become, and on this host the
kernel enforcing a cap on a domain process."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_helpers import cli
from pyxen.toolstack import cgroups

# /proc/self/mounts of a cgroup v1-hybrid host (this one: systemd's "hybrid"
# layout, cgroup2 at unified/ with only hugetlb) and of a pure cgroup v2 host
V1_HYBRID_MOUNTS = """\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
V1_COMBINED_MOUNTS = """\
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,nosuid,nodev,noexec,relatime,cpuset 0 0
"""
V2_MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
"""
V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc\n"


def fake_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_detect_v1_hybrid(tmp_path):
    """cgroup2 is mounted but has neither cpu nor cpuset: the v1 hierarchies."""
    root = fake_tree(tmp_path, {"sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n"})
    for d in ("cpu", "cpuacct", "cpuset", "memory"):
        (root / "sys/fs/cgroup" / d).mkdir(parents=True)
    lay = cgroups.detect(V1_HYBRID_MOUNTS, root)
    assert lay.kind == "v1"
    assert lay.v1 == {c: root / "sys/fs/cgroup" / c for c in ("cpu", "cpuacct", "cpuset")}
    assert "hugetlb" in lay.why


def test_detect_v1_combined_cpu_cpuacct(tmp_path):
    root = fake_tree(tmp_path, {"sys/fs/cgroup/unified/cgroup.controllers": ""})
    lay = cgroups.detect(V1_COMBINED_MOUNTS, root)
    assert lay.kind == "v1"
    assert lay.v1["cpu"] == lay.v1["cpuacct"] == root / "sys/fs/cgroup/cpu,cpuacct"
    tree = cgroups.CgroupTree(lay, "x")
    assert len(tree._mounts()) == 2           # one directory per hierarchy, not per controller


def test_detect_v2(tmp_path):
    root = fake_tree(tmp_path, {"sys/fs/cgroup/cgroup.controllers": V2_CONTROLLERS})
    lay = cgroups.detect(V2_MOUNTS, root)
    assert lay.kind == "v2" and lay.v2 == root / "sys/fs/cgroup"


def test_detect_none(tmp_path):
    """v2 without cpu (a container that was not delegated it), no v1: nothing
    usable, and why."""
    root = fake_tree(tmp_path, {"sys/fs/cgroup/cgroup.controllers": "memory pids\n"})
    lay = cgroups.detect(V2_MOUNTS, root)
    assert lay.kind is None and "memory pids" in lay.why
    assert cgroups.detect("proc /proc proc rw 0 0\n", root).kind is None
    with pytest.raises(cgroups.CgroupError):
        cgroups.CgroupTree(lay, "x")


def test_detect_escaped_mount_point(tmp_path):
    mounts = "cgroup2 /sys/fs/my\\040cgroup cgroup2 rw 0 0\n"
    root = fake_tree(tmp_path, {"sys/fs/my cgroup/cgroup.controllers": V2_CONTROLLERS})
    assert cgroups.detect(mounts, root).v2 == root / "sys/fs/my cgroup"


def test_v2_files(tmp_path):
    """What pyxen writes on a v2 host (a fake tree: the kernel's files are
    plain files here): controllers enabled down the tree, the pool's cpuset,
    cpu.weight (256 -> 100) and cpu.max (cap 50 = 50 ms per 100 ms)."""
    root = fake_tree(tmp_path, {"cg/cgroup.controllers": V2_CONTROLLERS,
                                "cg/cgroup.subtree_control": ""})
    lay = cgroups.Layout("v2", v2=root / "cg")
    tree = cgroups.CgroupTree(lay, "inst")
    for p in ("cg/pyxen", "cg/pyxen/inst", "cg/pyxen/inst/pool1"):
        fake_tree(root, {f"{p}/cgroup.subtree_control": ""})
    tree.setup()
    assert (root / "cg/cgroup.subtree_control").read_text() == "+cpuset +cpu"
    assert (root / "cg/pyxen/inst/cgroup.subtree_control").read_text() == "+cpuset +cpu"
    tree.set_pool(1, {2, 3, 5})
    assert (root / "cg/pyxen/inst/pool1/cpuset.cpus").read_text() == "2-3,5"
    tree.add_domain(1, 7, 4242)
    d = root / "cg/pyxen/inst/pool1/d7"
    assert (d / "cgroup.procs").read_text() == "4242"
    tree.apply(1, 7, 256, 50)
    assert (d / "cpu.weight").read_text() == "100"
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert tree.get_settings(1, 7) == (256, 50)
    tree.apply(1, 7, 512, 0)
    assert (d / "cpu.weight").read_text() == "200"
    assert (d / "cpu.max").read_text() == "max 100000"
    (d / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    assert tree.usage_seconds(1, 7) == 1.5
    assert tree.find_domain(7) == 1


def test_weight_values():
    assert cgroups.weight_value("v2", 1) == "1"
    assert cgroups.weight_value("v2", 65535) == "10000"
    assert cgroups.weight_value("v1", 256) == "1024"
    assert cgroups.weight_value("v1", 65535) == "262140"
    assert cgroups.cpu_list([]) == "" and cgroups.cpu_list([0, 1, 2, 4]) == "0-2,4"


def _host_tree(tag: str) -> cgroups.CgroupTree:
    lay = cgroups.detect_host()
    assert lay.kind is not None, f"this host has no usable cgroups: {lay.why}"
    tree = cgroups.CgroupTree(lay, tag)
    tree.setup()
    return tree


def test_host_cgroup_caps_a_busy_process():
    """On this host (cgroup v1 hybrid here; v2 elsewhere): a process spinning
    in a cgroup of a pool of CPU 0 with cap 20 uses about 20% of one CPU, as
    the kernel counts it, and runs on CPU 0 only."""
    tree = _host_tree(f"test-{os.getpid()}")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        tree.set_pool(0, {0})
        tree.add_domain(0, 1, busy.pid)
        tree.apply(0, 1, 256, 20)
        assert busy.pid in tree.procs(0, 1)
        assert os.sched_getaffinity(busy.pid) == {0}
        cg = Path(f"/proc/{busy.pid}/cgroup").read_text()
        assert f"pyxen/test-{os.getpid()}/pool0/d1" in cg
        t0, u0 = time.monotonic(), tree.usage_seconds(0, 1)
        time.sleep(1.5)
        share = (tree.usage_seconds(0, 1) - u0) / (time.monotonic() - t0)
        assert 0.12 < share < 0.28, share
    finally:
        busy.kill()
        busy.wait()
        tree.remove_domain(0, 1)
        tree.prune()
    assert not tree.path().exists()


def _cgroup_of(pid: int, controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if controller in ctrls.split(",") or (ctrls == "" and controller == ""):
            return path
    return ""


def test_domain_process_in_its_cgroup_capped(rd, cfgs):
    """pyxend puts the domain process in pyxen/<instance>/pool0/d<domid>;
    cap= and cpu_weight= of its config and sched-credit land in the cgroup's
    files; a spinning guest with cap 20 uses about 20% of a CPU by the
    cgroup's own accounting; the cgroup goes with the domain."""
    import json
    cfg = cfgs("capped", guest="spin", cmdline="ms=30000", cap=20, cpu_weight=512)
    r = cli(rd, "create", cfg)
    assert r.returncode == 0, r.stderr
    info = cli(rd, "info").stdout
    assert "pyxen_scheduling       : cgroups v" in info
    pid = json.loads((rd / "domains/1.json").read_text())["pid"]
    tree = _host_tree(cgroups.instance_name(rd))
    path = f"/pyxen/{cgroups.instance_name(rd)}/pool0/d1"
    assert _cgroup_of(pid, "cpu" if tree.kind == "v1" else "") == path
    assert tree.get_settings(0, 1) == (512, 20)
    if tree.kind == "v1":
        d = tree.path("pool0", "d1", controller="cpu")
        assert (d / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert (d / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (d / "cpu.shares").read_text().strip() == "2048"
    time.sleep(0.5)
    t0, u0 = time.monotonic(), tree.usage_seconds(0, 1)
    time.sleep(2.0)
    share = (tree.usage_seconds(0, 1) - u0) / (time.monotonic() - t0)
    assert 0.12 < share < 0.3, share
    # xl sched-credit changes the kernel's settings
    assert cli(rd, "sched-credit", "-d", "capped", "-w", "128", "-c", "0").returncode == 0
    assert tree.get_settings(0, 1) == (128, 0)
    assert cli(rd, "sched-credit", "-d", "capped").stdout.splitlines()[1].split()[2:] == \
        ["128", "0"]
    assert cli(rd, "destroy", "capped").returncode == 0
    assert not any(p.exists() for p in tree.domain_dirs(0, 1))
