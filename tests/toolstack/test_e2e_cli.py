"""End to end through the command line only: pyxend, domain processes,
mini-OS guests, the way an administrator uses them."""
from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_helpers import cli, daemon_pid, env_for, rows, start_daemon, wait_until, xs  # noqa: F401


def test_create_list_pause_unpause_destroy(rd, cfgs):
    for n in ("alpha", "beta"):
        r = cli(rd, "create", cfgs(n))
        assert r.returncode == 0, r.stderr
    assert wait_until(lambda: rows(rd).get("alpha", {}).get("state") == "-b----")
    t = rows(rd)
    assert t["Domain-0"]["id"] == 0
    assert t["alpha"]["mem"] == 32 and t["beta"]["vcpus"] == 1
    assert cli(rd, "pause", "alpha").returncode == 0
    assert rows(rd)["alpha"]["state"] == "--p---"
    assert cli(rd, "unpause", "alpha").returncode == 0
    assert rows(rd)["alpha"]["state"][2] == "-"
    assert cli(rd, "domid", "beta").stdout.strip() == str(t["beta"]["id"])
    assert cli(rd, "domname", str(t["alpha"]["id"])).stdout.strip() == "alpha"
    assert cli(rd, "destroy", "alpha").returncode == 0
    assert "alpha" not in rows(rd)
    node = xs(rd, "xenstore-ls", f"/local/domain/{t['alpha']['id']}")
    assert node.returncode != 0, "the destroyed domain's XenStore nodes must be gone"
    assert not list((rd / "domains").glob(f"{t['alpha']['id']}.*"))


def test_console_shows_history_and_echoes_input(rd, cfgs):
    assert cli(rd, "create", cfgs("talker")).returncode == 0
    assert wait_until(lambda: "talker" in rows(rd))
    time.sleep(0.5)
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(env_for(rd))
        os.execv(sys.executable, [sys.executable, "-m", "pyxen.cli", "console", "talker"])
    out = b""

    def read_until(marker, end):
        nonlocal out
        while marker not in out and time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                out += os.read(fd, 4096)
    try:
        end = time.monotonic() + 15
        read_until(b"idle: ready", end)
        os.write(fd, b"ping from the test\r")
        read_until(b"echo: ping from the test", end)
        os.write(fd, b"\x1d")                     # Ctrl-] detaches
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert b"idle: ready" in out                  # output written before attaching
    assert b"echo: ping from the test" in out
    assert os.waitstatus_to_exitcode(status) == 0
    assert "talker" in rows(rd), "detaching leaves the domain running"


def test_shutdown_and_reboot_restart(rd, cfgs):
    assert cli(rd, "create", cfgs("rebooter", on_reboot="restart")).returncode == 0
    assert wait_until(lambda: "rebooter" in rows(rd))
    first = rows(rd)["rebooter"]["id"]
    time.sleep(0.5)
    assert cli(rd, "reboot", "rebooter").returncode == 0
    assert wait_until(lambda: rows(rd).get("rebooter", {}).get("id", first) != first)
    time.sleep(0.5)
    r = cli(rd, "shutdown", "-w", "rebooter")
    assert r.returncode == 0, r.stderr
    assert "rebooter" not in rows(rd)


def test_rename_restart_keeps_the_old_domain_renamed(rd, cfgs):
    """on_reboot="rename-restart", as xl: the rebooted domain stays (shut
    down) as NAME-YYYYMMDDTHHMMZ with a new uuid, the config is built again
    under its own name and uuid."""
    assert cli(rd, "create", cfgs("renamer", on_reboot="rename-restart")).returncode == 0
    assert wait_until(lambda: "renamer" in rows(rd))
    first = rows(rd)["renamer"]["id"]
    def uuid_of(name):
        return re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", cli(rd, "list", "-v", name).stdout)

    uuid = uuid_of("renamer")
    assert len(uuid) == 1
    time.sleep(0.5)
    assert cli(rd, "reboot", "renamer").returncode == 0
    assert wait_until(lambda: rows(rd).get("renamer", {}).get("id", first) != first)
    kept = {n: r for n, r in rows(rd).items() if n.startswith("renamer-")}
    assert len(kept) == 1, rows(rd)
    (name, row), = kept.items()
    assert re.fullmatch(r"renamer-\d{8}T\d{4}Z", name) and row["id"] == first
    assert row["state"][3] == "s"                    # shut down, not running
    assert xs(rd, "xenstore-read", f"/local/domain/{first}/name").stdout.strip() == name
    assert uuid_of("renamer") == uuid                # the config's
    assert len(uuid_of(name)) == 1 and uuid_of(name) != uuid
    assert cli(rd, "destroy", name).returncode == 0
    assert cli(rd, "destroy", "renamer").returncode == 0
    assert not rows(rd).keys() - {"Domain-0"}


def test_crash_preserve_and_coredump(rd, cfgs):
    assert cli(rd, "create", cfgs("crasher", guest="shutdown", extra="reason=crash",
                                  on_crash="preserve")).returncode == 0
    assert wait_until(lambda: rows(rd).get("crasher", {}).get("state", "").startswith("---sc"))
    assert cli(rd, "destroy", "crasher").returncode == 0
    assert "crasher" not in rows(rd)
    assert cli(rd, "create", cfgs("dumper", guest="shutdown", extra="reason=crash",
                                  on_crash="coredump-destroy")).returncode == 0
    dump = rd / "dump"
    assert wait_until(lambda: list(dump.glob("dumper-*.core")))
    assert wait_until(lambda: "dumper" not in rows(rd))
    core = next(dump.glob("dumper-*.core"))
    hdr = core.read_bytes()[:20]
    assert hdr[:4] == b"\x7fELF" and hdr[16] == 4   # ET_CORE
    out = subprocess.run(["readelf", "-S", str(core)], capture_output=True, text=True).stdout
    assert ".xen_pages" in out and ".xen_p2m" in out


def test_daemon_restart_keeps_domains(rd, cfgs):
    assert cli(rd, "create", cfgs("survivor")).returncode == 0
    assert wait_until(lambda: "survivor" in rows(rd))
    before = rows(rd)["survivor"]["id"]
    os.kill(daemon_pid(rd), signal.SIGKILL)
    time.sleep(0.3)
    down = cli(rd, "list")
    assert down.returncode == 1 and "pyxend is not running" in down.stderr
    start_daemon(rd)
    assert rows(rd)["survivor"]["id"] == before
    assert xs(rd, "xenstore-read", f"/local/domain/{before}/name").stdout.strip() == "survivor"
    time.sleep(0.3)
    assert cli(rd, "shutdown", "-w", "survivor").returncode == 0


def test_killed_domain_process_is_crashed_and_freed(rd, cfgs):
    assert cli(rd, "create", cfgs("victim")).returncode == 0
    assert wait_until(lambda: "victim" in rows(rd))
    domid = rows(rd)["victim"]["id"]
    pid = int((rd / "domains" / f"{domid}.json").read_text().split('"pid": ')[1].split(",")[0])
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: "victim" not in rows(rd))     # on_crash defaults to destroy
    assert xs(rd, "xenstore-ls", f"/local/domain/{domid}").returncode != 0
    assert "crash" in cli(rd, "log").stdout


def test_bad_input(rd, cfgs, tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text('name = "broken"\nmemory = 32\nkernel = "nope\n')
    r = cli(rd, "create", str(bad))
    assert r.returncode != 0 and f"{bad}:3:" in r.stderr
    assert "broken" not in rows(rd)
    assert not list((rd / "domains").glob("*.json"))
    r = cli(rd, "destroy", "no-such-domain")
    assert r.returncode == 1 and "invalid domain identifier" in r.stderr
    # two concurrent creates of one name: one wins, the other gets xl's message
    c = cfgs("twin")
    procs = [subprocess.Popen([sys.executable, "-m", "pyxen.cli", "create", c], env=env_for(rd),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 1], results
    assert any("already exists" in r[1] for r in results)
    r = cli(rd, "create", cfgs("huge", memory=10_000_000))
    assert r.returncode == 1 and "memory" in r.stderr


def test_cli_without_daemon(tmp_path):
    r = cli(tmp_path / "nowhere", "list")
    assert r.returncode == 1
    assert "pyxend is not running" in r.stderr


def test_info_uptime_vcpu_sched_mem(rd, cfgs):
    assert cli(rd, "create", cfgs("tuned", vcpus=1)).returncode == 0
    assert wait_until(lambda: "tuned" in rows(rd))
    info = cli(rd, "info").stdout
    assert "xen_caps               : xen-3.0-x86_64" in info and "total_memory" in info
    assert "tuned" in cli(rd, "uptime").stdout
    vl = cli(rd, "vcpu-list", "tuned").stdout.splitlines()
    assert vl[0].startswith("Name") and vl[1].split()[0] == "tuned"
    assert cli(rd, "vcpu-pin", "tuned", "0", "0").returncode == 0
    assert cli(rd, "vcpu-list", "tuned").stdout.splitlines()[1].split()[-3] == "0"
    assert cli(rd, "sched-credit", "-d", "tuned", "-w", "512", "-c", "50").returncode == 0
    sc = cli(rd, "sched-credit").stdout
    assert sc.startswith("Cpupool Pool-0: ")
    assert any(l.split()[:1] == ["tuned"] and l.split()[2:] == ["512", "50"] for l in sc.splitlines())
    # one domain: xl's header and its row, no cpupool line (xl_sched.c)
    domid = rows(rd)["tuned"]["id"]
    assert cli(rd, "sched-credit", "-d", "tuned").stdout.splitlines() == [
        "%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap"),
        "%-33s %4d %6d %4d" % ("tuned", domid, 512, 50)]
    r = cli(rd, "sched-credit", "-w", "256")
    assert r.returncode == 1 and r.stderr.strip() == "Must specify a domain."
    up = cli(rd, "uptime").stdout.splitlines()
    assert up[0] == "%-33s %4s %s" % ("Name", "ID", "Uptime")
    row = next(line for line in up if line.startswith("tuned "))
    head = "%-33s %4d " % ("tuned", domid)
    assert row.startswith(head) and re.fullmatch(r"[ \d]\d:\d\d:\d\d", row[len(head):]), row
    short = cli(rd, "uptime", "-s", "tuned").stdout
    assert re.fullmatch(r" \d\d:\d\d:\d\d up [ \d]\d:\d\d, tuned \(%d\)\n" % domid, short), short
    assert cli(rd, "mem-set", "tuned", "16m").returncode == 0
    domid = rows(rd)["tuned"]["id"]
    assert xs(rd, "xenstore-read", f"/local/domain/{domid}/memory/target").stdout.strip() == "16384"
    r = cli(rd, "mem-set", "tuned", "64")
    assert r.returncode == 1 and "static_max" in r.stderr
    assert cli(rd, "rename", "tuned", "renamed").returncode == 0
    assert "renamed" in rows(rd)
    top = cli(rd, "top", "-b", "-i", "2", "-d", "0.2").stdout
    assert "renamed" in top and "CPU(%)" in top


def test_two_linux_domains_at_once(rd, linux_images, tmp_path):
    names = ("deb1", "deb2")
    for n in names:
        cfg = tmp_path / f"{n}.cfg"
        cfg.write_text(f'name = "{n}"\nkernel = "{linux_images.kernel}"\n'
                       f'ramdisk = "{linux_images.initrd}"\nextra = "console=hvc0"\n'
                       f'memory = 256\n')
        assert cli(rd, "create", str(cfg)).returncode == 0
    t = rows(rd)
    assert all(n in t for n in names)
    for n in names:
        log = rd / "log" / f"guest-{n}.log"
        assert wait_until(lambda: log.exists() and b"pyxen:" in log.read_bytes(), timeout=180), \
            (log.read_bytes()[-2000:] if log.exists() else b"no log")
    for n in names:
        pid, fd = pty.fork()
        if pid == 0:
            os.environ.update(env_for(rd))
            os.execv(sys.executable, [sys.executable, "-m", "pyxen.cli", "console", n])
        out = b""
        end = time.monotonic() + 30
        sent = False
        while b"i am " + n.encode() not in out and time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                out += os.read(fd, 4096)
            if not sent and time.monotonic() > end - 28:
                os.write(fd, f"echo i am $(cat /proc/sys/kernel/hostname | tr -d -) {n}\r".encode())
                os.write(fd, f"echo i am {n}\r".encode())
                sent = True
        os.write(fd, b"\x1d")
        os.waitpid(pid, 0)
        os.close(fd)
        assert b"i am " + n.encode() in out, out[-1000:]
    for n in names:
        assert cli(rd, "shutdown", "-w", n, timeout=120).returncode == 0
    assert not any(n in rows(rd) for n in names)


def test_event_channel_between_two_domain_processes(rd, cfgs):
    a_cfg = cfgs("peer-a", guest="evtpeer", extra="role=a peer=2")
    assert cli(rd, "create", a_cfg).returncode == 0
    a = rows(rd)["peer-a"]["id"]
    assert a == 1
    port = None

    def published():
        nonlocal port
        r = xs(rd, "xenstore-read", f"/local/domain/{a}/data/port")
        port = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None
        return port is not None
    assert wait_until(published, 20)
    b_cfg = cfgs("peer-b", guest="evtpeer", extra=f"role=b peer={a} port={port}")
    assert cli(rd, "create", b_cfg).returncode == 0
    # mini-OS writes with console_io, which lands in the hypervisor log (xl dmesg)
    for domid in (a, a + 1):
        log = rd / "log" / f"domain-{domid}.log"
        assert wait_until(lambda: log.exists() and b"Test result:" in log.read_bytes(), 60), \
            log.read_bytes() if log.exists() else b""
        assert b"Test result: SUCCESS" in log.read_bytes(), log.read_bytes().decode()


def test_destroy_of_a_domain_whose_process_does_not_answer(rd, cfgs):
    """A domain process that no longer answers (stopped, as if stuck in a
    hypercall) is still destroyed: pyxend kills it."""
    assert cli(rd, "create", cfgs("stuck")).returncode == 0
    assert wait_until(lambda: "stuck" in rows(rd))
    domid = rows(rd)["stuck"]["id"]
    pid = int((rd / "domains" / f"{domid}.json").read_text().split('"pid": ')[1].split(",")[0])
    os.kill(pid, signal.SIGSTOP)
    t = time.monotonic()
    r = cli(rd, "destroy", "stuck", timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t < 30
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                      "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
    assert "stuck" not in rows(rd)


# --- issue 18: mem-set/mem-max sizes, vcpu-pin cpumaps, vcpu-list as xl prints it ---------------
def test_mem_sizes_in_kib_as_xl(rd, cfgs):
    assert cli(rd, "create", cfgs("sized")).returncode == 0
    assert wait_until(lambda: "sized" in rows(rd))
    domid = rows(rd)["sized"]["id"]

    def key(k):
        return xs(rd, "xenstore-read", f"/local/domain/{domid}/memory/{k}").stdout.strip()
    r = cli(rd, "mem-set", "sized", "20000k")
    assert r.returncode == 0, r.stderr
    assert key("target") == "20000"
    assert cli(rd, "mem-set", str(domid), "25165824B").returncode == 0 and key("target") == "24576"
    for bad in ("12x", "1.5g", "16mb", "-1k"):
        r = cli(rd, "mem-set", "sized", "--", bad)
        assert (r.returncode, r.stderr) == (1, f"invalid memory size: {bad}\n"), bad
    r = cli(rd, "mem-max", "sized", "20m")         # below the target: libxl refuses
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.endswith(f"cannot set domid {domid} static max memory to : 20m\n")
    assert cli(rd, "mem-max", "sized", "40000K").returncode == 0 and key("static-max") == "40000"
    r = cli(rd, "mem-set", "sized", "40001k")
    assert r.returncode == 1 and "static_max" in r.stderr
    assert r.stderr.endswith(f"cannot set domid {domid} dynamic max memory to : 40001k\n")


def test_vcpu_pin_cpumaps_as_xl(rd, cfgs):
    # the idle guest brings up vCPU 0 only: vCPU 1 stays offline, without a thread
    assert cli(rd, "create", cfgs("pinned", vcpus=2)).returncode == 0
    assert wait_until(lambda: "pinned" in rows(rd))
    ncpu = os.cpu_count()

    def hard():
        return [l.split()[-3] for l in cli(rd, "vcpu-list", "pinned").stdout.splitlines()[1:]]
    assert wait_until(lambda: len(hard()) == 2)
    r = cli(rd, "vcpu-pin", "pinned", "all", "0")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert hard() == ["0", "0"]        # vCPU 1 too: its thread gets it when it starts
    r = cli(rd, "vcpu-pin", "pinned", "0", "all,^0")
    assert r.returncode == 0, r.stderr
    assert hard()[0] == ("1" if ncpu == 2 else f"1-{ncpu - 1}")
    assert cli(rd, "vcpu-pin", "pinned", "0", "node:0").returncode == 0
    assert hard()[0] == "all"          # node 0 holds every CPU of this host
    r = cli(rd, "vcpu-pin", "pinned", "0", "0", "1")
    assert r.returncode == 0 and "soft affinity is not supported" in r.stderr
    assert hard()[0] == "0"
    r = cli(rd, "vcpu-pin", "pinned", "0", "-", "1")        # '-': leave the hard one alone
    assert r.returncode == 0 and "soft affinity" in r.stderr and hard()[0] == "0"
    for args, msg in ((("0", "^0"), "vcpu hard affinity map is empty\n"),
                      (("0", "1-0"), "Invalid pcpu range: 1-0.\n"),
                      (("0", "-"), ""),
                      (("0", "^all"), 'Can\'t combine "^" and "all".\n'),
                      (("0", "0", "x"), "Invalid pcpu range: x.\n"),
                      (("x", "0"), "Error: Invalid argument x as VCPU.\n"),
                      (("-f", "all", "0"), "Error: --force and 'all' as VCPU not allowed.\n")):
        r = cli(rd, "vcpu-pin", "pinned", *args) if args[0] != "-f" else \
            cli(rd, "vcpu-pin", "-f", "pinned", *args[1:])
        assert (r.returncode, r.stderr) == (1 if msg else 0, msg), args
    assert hard()[0] == "0"
    r = cli(rd, "vcpu-pin", "pinned", "7", "0")
    assert r.returncode == 1 and r.stderr.endswith("Could not set affinity for vcpu `7'.\n")


def test_vcpu_list_as_xl(rd, cfgs):
    assert cli(rd, "create", cfgs("listed", vcpus=2)).returncode == 0
    assert wait_until(lambda: "listed" in rows(rd))
    ncpu = os.cpu_count()
    assert cli(rd, "vcpu-pin", "listed", "0", str(ncpu - 1)).returncode == 0
    out = cli(rd, "vcpu-list").stdout.splitlines()
    assert out[0] == "Name" + " " * 32 + "ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)"
    dom0 = [l for l in out[1:] if l.startswith("Domain-0 ")]
    assert [l.split()[1:4] for l in dom0] == [["0", str(i), str(i)] for i in range(ncpu)]
    assert all(l.split()[4] in ("r--", "-b-") for l in dom0)
    assert [l.split()[-3] for l in dom0] == [str(i) for i in range(ncpu)]
    for name in ("Domain-0", "0"):
        only = cli(rd, "vcpu-list", name).stdout.splitlines()[1:]
        assert [l.split()[:3] for l in only] == [["Domain-0", "0", str(i)] for i in range(ncpu)]
    domid = rows(rd)["listed"]["id"]
    mine = [l for l in out[1:] if l.startswith("listed ")]
    assert len(mine) == 2
    assert mine[0][32:55] == "%6d%6d%5d   " % (domid, 0, ncpu - 1) + mine[0][52:55]
    assert mine[0][52:55] in ("r--", "-b-", "---")
    assert mine[0].endswith(f"  {ncpu - 1} / all")
    assert mine[1][32:56] == "%6d%6d    -   --p " % (domid, 1)      # offline
    assert mine[1].endswith("  all / all")
    # vCPU 0 runs only on the last CPU, so that is where its thread last ran
    assert wait_until(lambda: cli(rd, "vcpu-list", "listed").stdout.splitlines()[1].split()[3]
                      == str(ncpu - 1))
