#!/usr/bin/env python3
"""pyxen's PV disk (blkback) and network (netback) backends, with the host and
QEMU TCG measured in the same run. It prints figures and ratios; it asserts
nothing about them.

  disk   a raw image file as /dev/xvdb (pyxen), as the file itself (host) and as
         a virtio-blk disk with cache=none (QEMU TCG): sequential write (busybox
         dd bs=1M conv=fsync), sequential read after dropping the caches
         (busybox dd bs=1M), 4 KiB random reads with O_DIRECT (devio randread,
         one request at a time)
  net    guest -> host TCP throughput (devio send, 1 MiB writes; the host's
         Python receiver checks a sha256 of everything it got) and ping round
         trip both ways (busybox ping, average): pyxen's vif and QEMU's
         virtio-net on a TAP device are both on the bridge pxb0 in a network
         namespace of the run's own; the host baseline is loopback

Write, read and TCP are repeated (5 times, once with --quick) and the median
is shown. For pyxen it also prints the host CPU time of pyxend (the backends)
and of the domain process (vCPU thread, guest mode) for each operation.

The guests run the same Debian cloud kernel, busybox and static devio (bench/devio.c).
pyxen's guest runs under a private pyxend (its own run directory). The network
is hermetic: a namespace pxb-<pid>-<random> (ip netns) is created for the run
and holds the bridge pxb0 with the host-side address 192.0.2.1/24, pyxen's vif
(vif key netns=, a pyxen extension) and QEMU's TAP device; the host side of
the traffic (receiver, ping) runs inside it, and the namespace is deleted at
the end, also when the run fails. The host's own namespace gets no bridge
and no address.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pyxen.build.linux_guest import (build_initramfs, kernel_modules_dir,    # noqa: E402
                                     module_files, prepare_linux)
from pyxen.toolstack.client import Client                                  # noqa: E402
from pyxen.toolstack.guestshell import ConsoleShell, PROMPT               # noqa: E402
from qemu_console import Qemu                                              # noqa: E402

NETNS = f"pxb-{os.getpid()}-{secrets.token_hex(3)}"      # this run's network namespace
BRIDGE, BRIDGE_IP, NET = "pxb0", "192.0.2.1", "192.0.2"   # in NETNS (TEST-NET-1)
PYXEN_VIF = "pxbv0"                                       # in NETNS
QEMU_TAP = f"pxbq{os.getpid() % 100000}"                  # QEMU makes it here; moved to NETNS
GUEST_IP = {"pyxen": f"{NET}.2", "tcg": f"{NET}.3"}
DOMAIN = "pxbdev"
BLOCK = 1 << 20

# the virtio drivers the Debian cloud kernel needs for QEMU (all =m in its config)
VIRTIO_MODULES = ("virtio_pci", "virtio_blk", "virtio_net")


# --- helpers -------------------------------------------------------------------------------------
def sh(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def modinfo_depends(ko: Path) -> list[str]:
    m = re.search(rb"\0depends=([^\0]*)\0", b"\0" + ko.read_bytes())
    return [d for d in (m.group(1).decode().split(",") if m else []) if d]


def virtio_module_files(mods: Path) -> dict[str, bytes]:
    """VIRTIO_MODULES and everything they depend on (from each .ko's .modinfo),
    a modules.dep for busybox's modprobe and /etc/modules in load order."""
    by_name = {}
    for ko in mods.rglob("*.ko"):
        by_name[ko.stem.replace("-", "_")] = ko
    order: list[str] = []
    deps: dict[str, list[str]] = {}

    def visit(name: str) -> None:
        if name in deps:
            return
        if name not in by_name:
            raise FileNotFoundError(f"module {name} is not in {mods}")
        deps[name] = modinfo_depends(by_name[name])
        for d in deps[name]:
            visit(d)
        order.append(name)

    for m in VIRTIO_MODULES:
        visit(m)
    ver = mods.name
    rel = {n: str(by_name[n].relative_to(mods)) for n in order}
    files = {f"lib/modules/{ver}/{rel[n]}": by_name[n].read_bytes() for n in order}

    def closure(n, seen):
        for d in deps[n]:
            if d not in seen:
                seen.append(d)
                closure(d, seen)
        return seen
    files[f"lib/modules/{ver}/modules.dep"] = "".join(
        f"{rel[n]}: {' '.join(rel[d] for d in closure(n, []))}\n" for n in order).encode()
    files["etc/modules"] = "".join(n + "\n" for n in order).encode()
    return files


def drop_host_cache(path: Path) -> None:
    """Evict the image from the host page cache (blkback does buffered I/O)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def guest_time(run, cmd: str, timeout: float) -> float:
    """Wall time of cmd measured by the guest's own clock (busybox time)."""
    out = run(f"time sh -c '{cmd}' 2>&1 >/dev/null", timeout=timeout)
    m = re.search(r"real\s+(\d+)m\s*([\d.]+)s", out)
    if not m:
        raise RuntimeError(f"no timing in {out!r}")
    return int(m.group(1)) * 60 + float(m.group(2))


def parse_kv(out: str, key: str) -> float:
    m = re.search(rf"\b{key}=([\d.]+)", out)
    if not m:
        raise RuntimeError(f"no {key}= in {out!r}")
    return float(m.group(1))


def parse_ping(out: str) -> float:
    m = re.search(r"min/avg/max = [\d.]+/([\d.]+)/", out)
    if not m:
        raise RuntimeError(f"no ping summary in {out!r}")
    return float(m.group(1))


def proc_cpu(pid: int, guest: bool = False) -> float:
    """CPU seconds of a process (user + system, which includes the time its
    threads ran guest code under KVM), or with guest=True only that guest time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[40]) if guest else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def expected_sha256(mib: int) -> str:
    x, words = 1, array("Q", bytes(BLOCK))
    mask = (1 << 64) - 1
    for i in range(BLOCK // 8):
        x = (x * 6364136223846793005 + 1442695040888963407) & mask
        words[i] = x
    blk = bytearray(words.tobytes())
    h = hashlib.sha256()
    for i in range(mib):
        struct.pack_into("<Q", blk, 0, i)
        h.update(blk)
    return h.hexdigest()


def netns_socket(family=socket.AF_INET, type=socket.SOCK_STREAM) -> socket.socket:
    """A socket in the run's network namespace."""
    from pyroute2 import netns
    return netns.create_socket(NETNS, family, type, flags=0)


class Receiver:
    """One TCP connection on the host: counts bytes, hashes them, times first
    byte to end of stream. in_netns: listen in the run's namespace (the
    guests' side), else in the host's (loopback)."""

    def __init__(self, ip: str, in_netns: bool = False):
        self.sock = netns_socket() if in_netns else socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 0))
        self.sock.listen(1)
        self.sock.settimeout(600)
        self.port = self.sock.getsockname()[1]
        self.nbytes, self.secs, self.sha, self.error = 0, 0.0, None, None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            c, _ = self.sock.accept()
            buf = bytearray(4 << 20)
            mv = memoryview(buf)
            h = hashlib.sha256()
            t0 = None
            with c:
                while True:
                    n = c.recv_into(buf)
                    if t0 is None:
                        t0 = time.monotonic()
                    if n == 0:
                        break
                    h.update(mv[:n])
                    self.nbytes += n
            self.secs = time.monotonic() - t0
            self.sha = h.hexdigest()
        except Exception as e:               # reported by result()
            self.error = e
        finally:
            self.sock.close()

    def result(self, mib: int, sha: str, timeout: float) -> float:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("the receiver did not finish")
        if self.error:
            raise RuntimeError(f"receiver: {self.error}")
        if self.nbytes != mib * BLOCK or self.sha != sha:
            raise RuntimeError(f"received {self.nbytes} bytes (sent {mib * BLOCK}), sha256 "
                               f"{'matches' if self.sha == sha else 'DIFFERS'}")
        return self.nbytes / self.secs / 1e6


# --- the measurements, the same in every environment -------------------------------------
class Sizes:
    def __init__(self, quick: bool):
        self.disk_mib = 64 if quick else 256
        self.net_mib = 32 if quick else 256
        self.rand_secs = 3 if quick else 10
        self.pings = 10 if quick else 20
        self.reps = 1 if quick else 5


def suite(ops: dict, img: Path, sz: Sizes, sha: str, note=None) -> dict:
    """The measurements, the same everywhere. ops: write() and read() -> seconds,
    randread() -> IOPS, send(port) -> sender's MB/s, ping() -> ms, drop_caches(),
    receiver_ip, receiver_in_netns. Write, read and TCP run sz.reps times (the median is the figure,
    res["samples"] has all); note(key, f) wraps each timed call (pyxen's CPU split)."""
    note = note or (lambda key, f: f())
    res: dict = {"samples": {"write": [], "read": [], "tcp": []}}
    smp = res["samples"]
    # one untimed pass first: the first write and read of an image are the slowest
    # everywhere (block allocation, the caches of the machine under this host)
    ops["write"]()
    ops["read"]()
    for _ in range(sz.reps):
        t = note("write", ops["write"])
        smp["write"].append(sz.disk_mib * BLOCK / t / 1e6)
        ops["drop_caches"]()
        drop_host_cache(img)
        t = note("read", ops["read"])
        smp["read"].append(sz.disk_mib * BLOCK / t / 1e6)
    drop_host_cache(img)
    res["randread"] = note("randread", ops["randread"])
    senders = []
    for _ in range(sz.reps):
        rcv = Receiver(ops["receiver_ip"], ops["receiver_in_netns"])
        senders.append(note("tcp", lambda: ops["send"](rcv.port)))
        smp["tcp"].append(rcv.result(sz.net_mib, sha, 60))
    res["tcp_sender"] = statistics.median(senders)
    res["ping"] = note("ping", ops["ping"])
    res["ping_in"] = note("ping_in", ops["ping_in"])
    for k, v in smp.items():
        res[k] = statistics.median(v)
    return res


def host_ping(busybox: Path, ip: str, n: int, in_netns: bool = False) -> float:
    where = ("ip", "netns", "exec", NETNS) if in_netns else ()
    return parse_ping(sh(*where, busybox, "ping", "-c", n, "-i", "0.2", ip).stdout)


def guest_ops(env: str, run, dev: str, busybox: Path, sz: Sizes) -> dict:
    """suite() ops inside a guest: run(cmd, timeout) -> output."""
    ip = GUEST_IP[env]
    run(f"ip link set eth0 up; ip addr add {ip}/24 dev eth0")
    # the first packets also resolve ARP (and wait for the link to come up)
    run(f"ping -c 1 -W 10 {BRIDGE_IP}", timeout=60)
    return {
        "write": lambda: guest_time(
            run, f"dd if=/dev/zero of={dev} bs=1M count={sz.disk_mib} conv=fsync", 600),
        "drop_caches": lambda: run("sync; echo 3 > /proc/sys/vm/drop_caches"),
        "read": lambda: guest_time(run, f"dd if={dev} of=/dev/null bs=1M count={sz.disk_mib}",
                                   600),
        "randread": lambda: parse_kv(run(f"devio randread {dev} {sz.rand_secs}",
                                         timeout=sz.rand_secs * 10 + 60), "iops"),
        "receiver_ip": BRIDGE_IP,
        "receiver_in_netns": True,
        "send": lambda port: parse_kv(run(f"devio send {BRIDGE_IP} {port} {sz.net_mib}",
                                          timeout=600), "mbps"),
        "ping": lambda: parse_ping(run(f"ping -c {sz.pings} -i 0.2 {BRIDGE_IP}", timeout=120)),
        "ping_in": lambda: host_ping(busybox, ip, sz.pings, in_netns=True),
    }


def host_ops(devio: Path, busybox: Path, img: Path, sz: Sizes) -> dict:
    def timed(*cmd):
        t = time.monotonic()
        sh(*cmd)
        return time.monotonic() - t
    return {
        "write": lambda: timed(busybox, "dd", "if=/dev/zero", f"of={img}", "bs=1M",
                               f"count={sz.disk_mib}", "conv=fsync,notrunc"),
        "drop_caches": lambda: None,            # drop_host_cache(img) is what matters here
        "read": lambda: timed(busybox, "dd", f"if={img}", "of=/dev/null", "bs=1M",
                              f"count={sz.disk_mib}"),
        "randread": lambda: parse_kv(sh(devio, "randread", img, sz.rand_secs).stdout, "iops"),
        "receiver_ip": "127.0.0.1",
        "receiver_in_netns": False,
        "send": lambda port: parse_kv(sh(devio, "send", "127.0.0.1", port, sz.net_mib).stdout,
                                      "mbps"),
        "ping": lambda: host_ping(busybox, "127.0.0.1", sz.pings),
        "ping_in": lambda: host_ping(busybox, "127.0.0.1", sz.pings),
    }


# --- pyxen ---------------------------------------------------------------------------------------
def pyxen_env(rd: Path) -> dict:
    return dict(os.environ, PYXEN_RUN_DIR=str(rd), PYTHONPATH=str(ROOT / "src"))


def cli(rd: Path, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pyxen.cli", *args], env=pyxen_env(rd),
                          capture_output=True, text=True, timeout=timeout)


def pyxen_run(tmp: Path, g, initrd: Path, img: Path, sz: Sizes, sha: str) -> tuple[dict, dict]:
    rd = tmp / "run"
    rd.mkdir()
    daemon = subprocess.Popen([sys.executable, "-m", "pyxen.toolstack.daemon", "-F"],
                              env=pyxen_env(rd), stdout=subprocess.DEVNULL,
                              stderr=open(rd / "pyxend.err", "ab"), start_new_session=True)
    shell = client = None
    try:
        for _ in range(300):
            if (rd / "pyxend.sock").exists() and cli(rd, "list", timeout=10).returncode == 0:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("pyxend did not start")
        cfg = tmp / "pyxen.cfg"
        cfg.write_text(f'name = "{DOMAIN}"\nkernel = "{g.kernel}"\nramdisk = "{initrd}"\n'
                       f'extra = "console=hvc0"\nmemory = 512\nvcpus = 1\n'
                       f'disk = ["format=raw, vdev=xvdb, access=rw, target={img}"]\n'
                       f'vif = ["bridge={BRIDGE}, netns={NETNS}, vifname={PYXEN_VIF}"]\n')
        t0 = time.monotonic()
        r = cli(rd, "create", "-q", str(cfg))
        if r.returncode != 0:
            raise RuntimeError(f"pyxen create: {r.stderr.strip()}")
        shell = ConsoleShell(DOMAIN, run_dir=rd)
        shell.wait_for(PROMPT, 300)
        boot = time.monotonic() - t0
        # the known pyxen fault (the first re-exec'd busybox process after boot
        # sometimes faults on its TLS): settle() retries and returns the faults
        faults = shell.settle(60)
        dompid = json.loads(next((rd / "domains").glob("*.json")).read_text())["pid"]
        client = Client(rd, timeout=30)
        cpu: dict = {}

        def sample():
            vcpu = sum(v["cpu_time"] for v in client.call("vcpu_list", dom=DOMAIN))
            return (proc_cpu(daemon.pid), proc_cpu(dompid), vcpu, proc_cpu(dompid, guest=True),
                    time.monotonic())

        def note(key, f):
            a = sample()
            out = f()
            b = sample()
            old = cpu.get(key, (0.0,) * len(a))
            cpu[key] = tuple(o + y - x for o, x, y in zip(old, a, b))     # summed over reps
            return out
        res = suite(guest_ops("pyxen", shell.run, "/dev/xvdb", g.busybox, sz), img, sz, sha, note)
        res["boot"] = boot
        res["faults"] = faults
        res["dmesg"] = [ln for ln in shell.run("dmesg", timeout=60).splitlines()
                        if COMPLAINT.search(ln) and not BENIGN.search(ln)]
        return res, cpu
    finally:
        for c in (shell, client):
            if c is not None:
                c.close()
        cli(rd, "destroy", DOMAIN)
        daemon.kill()
        daemon.wait()


COMPLAINT = re.compile(r"warn|error|fail|traceback|segfault|bug|oops|timed out|unable", re.I)
BENIGN = re.compile(r"Fast TSC calibration failed")


def complaints(rd: Path) -> list[str]:
    """What pyxend, the domain process and the guest kernel complained about
    during the run (a benchmark that only prints figures would hide bugs)."""
    rx, benign = COMPLAINT, BENIGN
    out = []
    for f in [rd / "pyxend.err"] + sorted((rd / "log").glob("*.log")):
        try:
            lines = [ln for ln in f.read_text(errors="replace").splitlines()
                     if rx.search(ln) and not benign.search(ln)]
        except OSError:
            continue
        if lines:
            out.append(f"{f.name}: {len(lines)} line(s) worth a look:")
            out += ["    " + ln.strip()[:200] for ln in lines[:10]]
    return out


# --- QEMU TCG ------------------------------------------------------------------------------------
def start_qemu(kernel: Path, initrd: Path, img: Path) -> Qemu:
    """virtio-blk on the image, virtio-net on a TAP device (put on the bridge
    in the run's namespace by qemu_run)."""
    return Qemu(kernel, initrd, 512, [
        "-drive", f"file={img},if=virtio,format=raw,cache=none",
        "-netdev", f"tap,id=n0,ifname={QEMU_TAP},script=no,downscript=no",
        "-device", "virtio-net-pci,netdev=n0"])


def qemu_run(kernel: Path, initrd: Path, img: Path, busybox: Path, sz: Sizes, sha: str) -> dict:
    from pyroute2 import IPRoute
    t0 = time.monotonic()
    q = start_qemu(kernel, initrd, img)
    try:
        with IPRoute() as ip:
            for _ in range(100):
                tap = ip.link_lookup(ifname=QEMU_TAP)
                if tap:
                    break
                if q.p.poll() is not None:
                    q.wait_for("never", 0)
                time.sleep(0.1)
            else:
                raise RuntimeError(f"qemu did not create {QEMU_TAP}")
            # into the run's namespace (QEMU's file descriptor stays valid), off the host's
            ip.link("set", index=tap[0], net_ns_fd=NETNS)
        with IPRoute(netns=NETNS, flags=0) as ip:
            ip.link("set", index=ip.link_lookup(ifname=QEMU_TAP)[0],
                    master=ip.link_lookup(ifname=BRIDGE)[0], state="up")
        q.wait_for(PROMPT, 600)
        boot = time.monotonic() - t0
        q.run("stty -echo cols 4000; PS1=")
        res = suite(guest_ops("tcg", q.run, "/dev/vda", busybox, sz), img, sz, sha)
        res["boot"] = boot
        return res
    finally:
        q.close()


# --- the network namespace ------------------------------------------------------------------
def sweep_stale_netns() -> None:
    """Namespaces of earlier runs that were killed (their pid is gone)."""
    from pyroute2 import netns
    for name in netns.listnetns():
        m = re.fullmatch(r"pxb-(\d+)-[0-9a-f]+", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            try:
                netns.remove(name)
            except OSError:
                pass


def netns_up() -> None:
    """The run's namespace, with the bridge and the host-side address in it."""
    from pyroute2 import IPRoute, netns
    sweep_stale_netns()
    netns.create(NETNS)
    try:
        with IPRoute(netns=NETNS, flags=0) as ip:
            ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
            ip.link("add", ifname=BRIDGE, kind="bridge")
            idx = ip.link_lookup(ifname=BRIDGE)[0]
            ip.addr("add", index=idx, address=BRIDGE_IP, prefixlen=24)
            ip.link("set", index=idx, state="up")
    except BaseException:
        netns_down()
        raise


def netns_down() -> None:
    """Delete the namespace: the bridge, its address and the TAP devices in it go
    with it (and QEMU's TAP if it never got there)."""
    from pyroute2 import IPRoute, netns
    try:
        if NETNS in netns.listnetns():
            netns.remove(NETNS)
    except OSError as e:
        print(f"could not delete network namespace {NETNS}: {e}", file=sys.stderr)
    with IPRoute() as ip:
        for i in ip.link_lookup(ifname=QEMU_TAP):
            try:
                ip.link("del", index=i)
            except Exception as e:
                print(f"could not delete {QEMU_TAP}: {e}", file=sys.stderr)


# --- report --------------------------------------------------------------------------------------
ROWS = (("write", "disk seq write {d} MiB, bs=1M, fsync", "MB/s", "{:.1f}"),
        ("read", "disk seq read {d} MiB, bs=1M, cold", "MB/s", "{:.1f}"),
        ("randread", "disk 4 KiB random read, O_DIRECT", "IOPS", "{:.0f}"),
        ("tcp", "TCP guest->host {n} MiB", "MB/s", "{:.1f}"),
        ("ping", "ping guest->host, average", "ms", "{:.3f}"),
        ("ping_in", "ping host->guest, average", "ms", "{:.3f}"))


def report(sz: Sizes, p: dict | None, h: dict, q: dict | None, p_why: str | None,
           q_why: str | None, cpu: dict) -> None:
    def fmt(res, key, f):
        return f.format(res[key]) if res and key in res else "-"

    def ratio(a, b, key):
        return f"{a[key] / b[key]:.3f}" if a and b and key in a and key in b and b[key] else "-"
    head = ("operation", "unit", "pyxen", "host", "QEMU TCG", "pyxen/host", "pyxen/TCG")
    print(f"\n{head[0]:<40} {head[1]:>5} {head[2]:>10} {head[3]:>10} {head[4]:>10} "
          f"{head[5]:>10} {head[6]:>10}")
    for key, label, unit, f in ROWS:
        label = label.format(d=sz.disk_mib, n=sz.net_mib)
        print(f"{label:<40} {unit:>5} {fmt(p, key, f):>10} {fmt(h, key, f):>10} "
              f"{fmt(q, key, f):>10} {ratio(p, h, key):>10} {ratio(p, q, key):>10}")
    print("(ratios are of the figures: above 1 is better for MB/s and IOPS, worse for ms; the "
          "host's TCP and ping baselines are loopback; host->guest ping is answered by the guest "
          "kernel alone)")
    if p_why:
        print(f"pyxen: FAILED: {p_why}")
    if q_why:
        print(f"QEMU TCG: not measured: {q_why}")
    sender = "   ".join(f"{n} {r['tcp_sender']:.1f}" for n, r in (("pyxen", p), ("host", h),
                                                                     ("TCG", q)) if r)
    print(f"TCP as the sender's clock sees it (MB/s): {sender}")
    if sz.reps > 1:
        print(f"figures above are medians of {sz.reps} runs; all runs:")
        for key in ("write", "read", "tcp"):
            runs = "   ".join(f"{n} " + " ".join(f"{x:.0f}" for x in r["samples"][key])
                             for n, r in (("pyxen", p), ("host", h), ("TCG", q)) if r)
            print(f"  {key:<6} {runs}")
    if p and p.get("faults"):
        print(f"pyxen: the known first-command fault hit {len(p['faults'])} time(s) after boot: "
              f"{p['faults'][0]}")
    boots = "   ".join(f"{n} {r['boot']:.1f} s" for n, r in (("pyxen", p), ("QEMU TCG", q)) if r)
    print(f"boot to shell with the devices: {boots}")
    if cpu:
        print("host CPU seconds during the pyxen operations (all runs): pyxend (the backend "
              "threads, xenstored), the domain process (its vCPU thread: guest code, traps and "
              "hypercalls; other threads: event-channel pump, timers), wall time:")
        for key, (d, g, v, gt, w) in cpu.items():
            print(f"  {key:<10} pyxend {d:6.2f}   domain {g:6.2f} (vCPU {v:6.2f}, of which "
                  f"in guest mode {gt:6.2f})   wall {w:6.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (64 MiB disk, 32 MiB "
                    "TCP, 3 s random reads, 10 pings)")
    ap.add_argument("--no-qemu", action="store_true", help="skip QEMU TCG")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    sz = Sizes(args.quick)
    # a kill runs the finally clauses too (the namespace is deleted) - in this
    # process only: pyroute2 opens a socket in the namespace from a forked
    # child and SIGTERMs it when done, and a child that ran this handler would
    # unwind the parent's stack as its own: destroy the domain, delete the
    # work directory (the run failed that way in its fourth TCP round)
    main_pid = os.getpid()

    def on_term(*_):
        if os.getpid() != main_pid:
            os._exit(143)
        sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)
    if os.geteuid() != 0:
        print("bench/devices.py needs root (a network namespace, TAP devices, drop_caches)")
        return 1
    g = prepare_linux()
    mods = kernel_modules_dir(g.kernel)
    tmp = Path(tempfile.mkdtemp(prefix="pxb-devices-"))
    started = time.monotonic()
    try:
        devio = tmp / "devio"
        sh("gcc", "-static", "-O2", "-Wall", "-o", devio, ROOT / "bench" / "devio.c")
        bins = {"bin/devio": devio.read_bytes()}
        p_initrd = tmp / "pyxen-initrd.gz"
        p_initrd.write_bytes(build_initramfs(g.busybox, extra_files=module_files(mods),
                                             extra_binaries=bins))
        img = tmp / "disk.img"
        with open(img, "wb") as f:
            f.truncate(sz.disk_mib * BLOCK)
        sha = expected_sha256(sz.net_mib)

        q_why = None
        q_initrd = None
        if args.no_qemu:
            q_why = "--no-qemu"
        elif shutil.which("qemu-system-x86_64") is None:
            q_why = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        else:
            try:
                q_initrd = tmp / "qemu-initrd.gz"
                q_initrd.write_bytes(build_initramfs(g.busybox, extra_files=virtio_module_files(
                    mods), extra_binaries=bins))
            except FileNotFoundError as e:
                q_why = f"the kernel's virtio modules: {e}"

        print(f"load average before: {Path('/proc/loadavg').read_text().strip()}")
        print(f"sizes: disk {sz.disk_mib} MiB, random reads {sz.rand_secs} s, TCP {sz.net_mib} "
              f"MiB, {sz.pings} pings; work directory {tmp}", flush=True)
        print("host ...", flush=True)
        h = suite(host_ops(devio, g.busybox, img, sz), img, sz, sha)
        netns_up()
        try:
            print("pyxen ...", flush=True)
            p, cpu, p_why = None, {}, None
            try:
                p, cpu = pyxen_run(tmp, g, p_initrd, img, sz, sha)
            except Exception as e:
                p_why = f"{type(e).__name__}: {e} (logs in {tmp / 'run'})"
                args.keep = True
            q = None
            if q_initrd is not None:
                print("QEMU TCG ...", flush=True)
                try:
                    q = qemu_run(g.kernel, q_initrd, img, g.busybox, sz, sha)
                except Exception as e:
                    q_why = f"{type(e).__name__}: {e}"
        finally:
            netns_down()
        report(sz, p, h, q, p_why, q_why, cpu)
        for line in complaints(tmp / "run"):
            print(line)
        if p and p["dmesg"]:
            print(f"pyxen guest dmesg: {len(p['dmesg'])} line(s) worth a look:")
            for line in p["dmesg"][:10]:
                print("   ", line[:200])
        print(f"(run time {time.monotonic() - started:.0f} s; load average after: "
              f"{Path('/proc/loadavg').read_text().strip()})")
        if p_why:
            return 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
