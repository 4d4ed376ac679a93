"""xl's cpupools (xl_cpupool.c, libxl_cpupool.c, Xen's cpupool.c) on pyxend:
the output formats, the rules (a CPU in at most one pool, free CPUs, Pool-0
and busy pools kept), domains moving between pools' cpusets, the pools
surviving a pyxend restart, and the per-pool listings of sched-credit(2)."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from daemon_helpers import cli, daemon_pid, start_daemon
from pyxen.toolstack import cgroups

HEAD = "Name               CPUs   Sched     Active   Domain count"
N = os.cpu_count() or 1
REST = ",".join(str(c) for c in range(N) if c != 1)       # Pool-0's CPUs without CPU 1


def pool_row(name, ncpus, sched, ndom):
    return "%-19s%3d %9s       y       %4d" % (name, ncpus, sched, ndom)


def ok(r):
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r


def cpuset_of(rd, name: str) -> str:
    domid = int(ok(cli(rd, "domid", name)).stdout)
    pid = json.loads((rd / f"domains/{domid}.json").read_text())["pid"]
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "cpuset" in ctrls.split(",") or ctrls == "":
            return path
    return ""


def test_cpupool_round_trip(rd, cfgs, tmp_path):
    assert N >= 2, "cpupools need a host with two CPUs"
    inst = cgroups.instance_name(rd)
    assert ok(cli(rd, "cpupool-list")).stdout.splitlines() == [HEAD, pool_row("Pool-0", N, "credit", 1)]
    ok(cli(rd, "create", cfgs("pooled")))
    assert cpuset_of(rd, "pooled") == f"/pyxen/{inst}/pool0/d1"

    # CPU 1 is Pool-0's: not free for a new pool until it is taken out (as Xen)
    r = cli(rd, "cpupool-create", 'name="p1"', 'cpus="1"')
    assert r.returncode == 1 and r.stderr == "cpu 1 illegal or not free\n"
    assert ok(cli(rd, "cpupool-cpu-remove", "Pool-0", "1")).stdout == ""
    assert ok(cli(rd, "cpupool-list", "-c")).stdout.splitlines() == [
        "%-19sCPU list" % "Name", "%-19s%s" % ("Pool-0", REST)]
    assert ok(cli(rd, "info")).stdout.count("free_cpus              : 1\n") == 1

    # a dry run checks and prints, creates nothing; a file names the pool
    dry = ok(cli(rd, "cpupool-create", "-n", 'name="p1"', 'cpus="1"')).stdout
    assert dry == ('Using config file "command line"\ncpupool name:   p1\n'
                   "scheduler:      credit\nnumber of cpus: 1\n")
    assert len(ok(cli(rd, "cpupool-list")).stdout.splitlines()) == 2
    f = tmp_path / "p1.cfg"
    f.write_text('sched = "credit2"\ncpus = ["1"]\n')
    out = ok(cli(rd, "cpupool-create", str(f))).stdout
    assert out == (f'Using config file "{f}"\ncpupool name:   p1.cfg\n'
                   "scheduler:      credit2\nnumber of cpus: 1\n")
    assert ok(cli(rd, "cpupool-rename", "p1.cfg", "p1")).stdout == ""
    r = cli(rd, "cpupool-create", 'name="p1"')
    assert r.returncode == 1 and r.stderr == 'Pool name "p1" already exists\n'
    r = cli(rd, "cpupool-create", 'name="p2"', 'sched="rtds"')
    assert r.returncode == 1 and r.stderr == "Unknown scheduler\n"
    assert ok(cli(rd, "cpupool-list")).stdout.splitlines() == [
        HEAD, pool_row("Pool-0", N - 1, "credit", 2), pool_row("p1", 1, "credit2", 0)]
    assert ok(cli(rd, "cpupool-list", "p1")).stdout.splitlines()[1:] == [
        pool_row("p1", 1, "credit2", 0)]

    # a domain moves: its cgroup into the pool's cpuset, its vCPUs onto CPU 1
    assert ok(cli(rd, "cpupool-migrate", "pooled", "p1")).stdout == ""
    assert cpuset_of(rd, "pooled") == f"/pyxen/{inst}/pool1/d1"
    rows = ok(cli(rd, "list", "-c")).stdout.splitlines()
    assert rows[0].endswith("Time(s)         Cpupool")
    assert rows[1].endswith("%16s" % "Pool-0") and rows[2].endswith("%16s" % "p1")
    assert ok(cli(rd, "vcpu-list", "pooled")).stdout.splitlines()[1].split()[-3] == "1"
    # a domain may be created in a pool
    ok(cli(rd, "create", cfgs("born", pool="p1")))
    assert cpuset_of(rd, "born") == f"/pyxen/{inst}/pool1/d2"
    # list -l and create -n show the pool (and cpu_weight=, cap=) as libxl's JSON does
    born = json.loads(ok(cli(rd, "list", "-l", "born")).stdout)[0]["config"]
    assert (born["c_info"]["poolid"], born["c_info"]["pool_name"]) == (1, "p1")
    assert born["b_info"]["sched_params"]["sched"] == "credit2"
    dry = json.loads(ok(cli(rd, "create", "-n", cfgs("dry", pool="p1", cpu_weight=512,
                                                     cap=20))).stdout)
    assert dry["c_info"]["pool_name"] == "p1" and "poolid" not in dry["c_info"]
    assert dry["b_info"]["sched_params"] == {"weight": 512, "cap": 20}
    r = cli(rd, "create", cfgs("lost", pool="nosuch"))
    assert r.returncode != 0 and "Illegal pool specified: nosuch" in r.stderr

    # sched-credit lists the credit pools, sched-credit2 the credit2 ones
    head = "%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap")
    assert ok(cli(rd, "sched-credit")).stdout.splitlines() == [
        "Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us", head,
        "%-33s %4d %6d %4d" % ("Domain-0", 0, 256, 0)]
    assert ok(cli(rd, "sched-credit2", "-p", "p1")).stdout.splitlines() == [
        "Cpupool p1: ratelimit=1000us", head,
        "%-33s %4d %6d %4d" % ("pooled", 1, 256, 0), "%-33s %4d %6d %4d" % ("born", 2, 256, 0)]
    assert ok(cli(rd, "sched-credit", "-p", "p1")).stdout == ""
    r = cli(rd, "sched-credit", "-p", "nosuch")
    assert r.returncode == 1 and r.stderr == "unknown cpupool 'nosuch'\n"

    # Xen's refusals
    r = cli(rd, "cpupool-destroy", "p1")
    assert r.returncode == 1 and r.stderr == "Can't destroy cpupool 'p1'\n"
    r = cli(rd, "cpupool-destroy", "Pool-0")
    assert r.returncode == 1 and r.stderr == "Can't destroy cpupool 'Pool-0'\n"
    r = cli(rd, "cpupool-cpu-remove", "p1", "1")       # its last CPU, with domains
    assert r.returncode == 0 and r.stderr.splitlines() == [
        "libxl: error: libxl_cpupool.c:365:libxl_cpupool_cpuremove: Error removing cpu 1 "
        "from cpupool: Device or resource busy",
        "Some cpus may have not or only partially been removed from 'p1'.",
        "If a cpu can't be added to another cpupool, add it to 'p1' again and retry."]
    r = cli(rd, "cpupool-cpu-add", "Pool-0", "1")      # it is p1's
    assert r.returncode == 0 and r.stderr.splitlines() == [
        "libxl: error: libxl_cpupool.c:302:libxl_cpupool_cpuadd: Error moving cpu 1 to "
        "cpupool: Device or resource busy", "some cpus may not have been added to Pool-0"]
    r = cli(rd, "cpupool-list", "nosuch")
    assert r.returncode == 1 and r.stderr == "Pool 'nosuch' does not exist\n"
    r = cli(rd, "cpupool-migrate", "nosuch", "p1")
    assert r.returncode == 1 and r.stderr == "unknown domain 'nosuch'\n"
    r = cli(rd, "cpupool-migrate", "pooled", "nosuch")
    assert r.returncode == 1 and r.stderr == "unknown cpupool 'nosuch'\n"
    r = cli(rd, "cpupool-migrate", "0", "p1")
    assert r.returncode == 1 and r.stderr.endswith(
        "Domain 0:Error moving domain to cpupool: Operation not permitted\n")

    # a restarted pyxend keeps the pools and who is in them
    os.kill(daemon_pid(rd), signal.SIGKILL)
    time.sleep(0.3)
    start_daemon(rd)
    assert ok(cli(rd, "cpupool-list")).stdout.splitlines() == [
        HEAD, pool_row("Pool-0", N - 1, "credit", 1), pool_row("p1", 1, "credit2", 2)]

    # back to Pool-0 (by id), then p1 can go; its CPU is free, then Pool-0's again
    ok(cli(rd, "cpupool-migrate", "pooled", "0"))
    ok(cli(rd, "destroy", "born"))
    assert cpuset_of(rd, "pooled") == f"/pyxen/{inst}/pool0/d1"
    assert ok(cli(rd, "cpupool-destroy", "p1")).stdout == ""
    assert ok(cli(rd, "cpupool-list")).stdout.splitlines() == [
        HEAD, pool_row("Pool-0", N - 1, "credit", 2)]
    assert ok(cli(rd, "cpupool-cpu-add", "Pool-0", "1")).stderr == ""
    assert ok(cli(rd, "cpupool-list")).stdout.splitlines() == [
        HEAD, pool_row("Pool-0", N, "credit", 2)]
    assert ok(cli(rd, "vcpu-list", "pooled")).stdout.splitlines()[1].split()[-3] == "all"


def test_cpupool_help():
    from pyxen.cli import build_parser
    p = build_parser()
    for c in ("cpupool-create", "cpupool-list", "cpupool-destroy", "cpupool-rename",
              "cpupool-cpu-add", "cpupool-cpu-remove", "cpupool-migrate", "cpupool-numa-split"):
        sub = p._subparsers._group_actions[0].choices[c]
        assert sub.format_help().startswith(f"usage: pyxen {c}")


def _cpu_seconds(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            f = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


def test_without_cgroups(rd, cfgs, monkeypatch):
    """A host without usable cgroups (here turned off with PYXEN_CGROUPS=0):
    pyxend says so, the cap is the domain process's watchdog, pools are the
    vCPU threads' affinity; cpupool-numa-split, refused while pools are in
    use, then names the pools after the NUMA nodes."""
    assert N >= 2, "cpupools need a host with two CPUs"
    os.kill(daemon_pid(rd), signal.SIGKILL)
    time.sleep(0.3)
    monkeypatch.setenv("PYXEN_CGROUPS", "0")
    start_daemon(rd)
    assert "pyxen_scheduling       : nice+watchdog (cgroups turned off (PYXEN_CGROUPS=0))\n" \
        in ok(cli(rd, "info")).stdout
    assert "warning: no usable cgroups" in (rd / "pyxend.err").read_text()
    ok(cli(rd, "create", cfgs("nice", guest="spin", cmdline="ms=30000", cap=20)))
    pid = json.loads((rd / "domains/1.json").read_text())["pid"]
    assert "/pyxen/" not in Path(f"/proc/{pid}/cgroup").read_text()
    time.sleep(0.5)
    t0, c0 = time.monotonic(), _cpu_seconds(pid)
    time.sleep(2.0)
    share = (_cpu_seconds(pid) - c0) / (time.monotonic() - t0)
    assert 0.05 < share < 0.4, share                # the watchdog's cap (coarse)
    ok(cli(rd, "cpupool-cpu-remove", "Pool-0", "1"))
    ok(cli(rd, "cpupool-create", 'name="p1"', 'cpus="1"'))
    ok(cli(rd, "cpupool-migrate", "nice", "p1"))
    assert ok(cli(rd, "vcpu-list", "nice")).stdout.splitlines()[1].split()[-3] == "1"
    r = cli(rd, "cpupool-numa-split")
    assert r.returncode == 1 and r.stderr == "splitting not possible, already cpupools in use\n"
    ok(cli(rd, "cpupool-migrate", "nice", "Pool-0"))
    ok(cli(rd, "cpupool-destroy", "p1"))
    ok(cli(rd, "cpupool-cpu-add", "Pool-0", "1"))
    assert ok(cli(rd, "vcpu-list", "nice")).stdout.splitlines()[1].split()[-3] == "all"
    ok(cli(rd, "cpupool-numa-split"))
    pools = ok(cli(rd, "cpupool-list")).stdout.splitlines()[1:]
    assert pools and all(p.startswith("Pool-node") for p in pools), pools
    assert ok(cli(rd, "sched-credit")).stdout.startswith("Cpupool Pool-node")
