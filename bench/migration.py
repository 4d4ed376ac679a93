#!/usr/bin/env python3
"""Live migration: pyxen's (two pyxend instances on this host, through the
second one's relocation server) against QEMU's own (a TCG guest moved between
two QEMU processes over TCP on loopback), in the same run, with the same
Debian kernel and busybox initramfs, for several memory sizes, the guest idle
and the guest dirtying memory (a loop rewriting a 64 MiB file in its RAM).

  total     the migrate command from start to the target running
  downtime  the guest stopped: pyxen from the source's suspend to the
            target's unpause (the sender's figure); QEMU's own
            query-migrate "downtime"
  rounds    pre-copy rounds (pyxen); QEMU's dirty-sync count
  sent      MiB on the wire

Timings are not asserted anywhere; they depend on the host (and on what else
it runs). Ratios are pyxen/QEMU of the same run.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from daemon_helpers import cli, start_daemon, wait_until     # noqa: E402
from pyxen.build.linux_guest import prepare_linux            # noqa: E402
from pyxen.toolstack.guestshell import PROMPT, ConsoleShell  # noqa: E402
from qemu_console import Qemu                                # noqa: E402

DIRTIER = ("(while true; do dd if=/dev/zero of=/tmp/dirty bs=1M count=64 2>/dev/null; "
           "done) &")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pyxen_migrate(rd1: Path, rd2: Path, img, tmp: Path, mem: int, dirty: bool) -> dict:
    name = f"mig{mem}{'d' if dirty else ''}"
    cfg = tmp / f"{name}.cfg"
    cfg.write_text(f'name = "{name}"\nkernel = "{img.kernel}"\nramdisk = "{img.initrd}"\n'
                   f'extra = "console=hvc0"\nmemory = {mem}\nvcpus = 1\n')
    r = cli(rd1, "create", str(cfg))
    if r.returncode:
        raise RuntimeError(r.stderr)
    s = ConsoleShell(name, run_dir=rd1)
    try:
        s.settle()
        if dirty:
            s.type(DIRTIER + "\r")
            time.sleep(2)
    finally:
        s.close()
    port = (rd2 / "relocation.port").read_text().strip()
    t0 = time.monotonic()
    r = cli(rd1, "migrate", name, f"tcp://127.0.0.1:{port}", timeout=900)
    total = time.monotonic() - t0
    if r.returncode:
        raise RuntimeError(r.stderr)
    m = re.search(r"Migration successful: (\d+) rounds .*?, ([\d.]+) MiB sent, total "
                  r"([\d.]+) s, downtime (\d+) ms", r.stderr)
    phases = re.search(r"^downtime: (.*)$", r.stderr, re.M).group(1)
    cli(rd2, "destroy", name)
    return {"total": total, "downtime": int(m.group(4)) / 1000, "rounds": int(m.group(1)),
            "sent": float(m.group(2)), "phases": phases}


def qmp(path: str):
    from pyxen.toolstack.qmp import QmpClient
    return QmpClient(path, timeout=30)


def qemu_migrate(img, tmp: Path, mem: int, dirty: bool) -> dict:
    port = free_port()
    src_q, dst_q = str(tmp / "src.qmp"), str(tmp / "dst.qmp")
    src = Qemu(img.kernel, img.initrd, mem, extra=("-qmp", f"unix:{src_q},server=on,wait=off"))
    dst = Qemu(img.kernel, img.initrd, mem, extra=("-qmp", f"unix:{dst_q},server=on,wait=off",
                                                   "-incoming", f"tcp:127.0.0.1:{port}"))
    try:
        src.wait_for(PROMPT, timeout=300)
        if dirty:
            src.p.stdin.write((DIRTIER + "\n").encode())
            src.p.stdin.flush()
            time.sleep(2)
        c = qmp(src_q)
        t0 = time.monotonic()
        c.command("migrate", uri=f"tcp:127.0.0.1:{port}")
        while True:
            info = c.command("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        total = time.monotonic() - t0
        if info["status"] != "completed":
            raise RuntimeError(f"QEMU migration {info['status']}: {info}")
        d = qmp(dst_q)
        wait_until(lambda: d.command("query-status").get("status") == "running", timeout=60)
        ram = info.get("ram", {})
        return {"total": total, "downtime": info.get("downtime", 0) / 1000,
                "rounds": ram.get("dirty-sync-count", 0),
                "sent": ram.get("transferred", 0) / 2**20}
    finally:
        src.close()
        dst.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256,1024,2048", help="guest memory sizes, MiB")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if not args.no_qemu and shutil.which("qemu-system-x86_64") is None:
        print("qemu-system-x86_64 is missing (apt-get install qemu-system-x86)")
        return 1
    img = prepare_linux()
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyxen-bench-mig-") as t:
        tmp = Path(t)
        rd1, rd2 = tmp / "run1", tmp / "run2"
        rd1.mkdir()
        rd2.mkdir()
        (rd2 / "pyxend.state").write_text(json.dumps({"next_domid": 101}))
        procs = [start_daemon(rd1, args=("--mem-limit", "8192")),
                 start_daemon(rd2, args=("--mem-limit", "8192", "--relocation-port", "0",
                                         "--relocation-hosts-allow", r"^127\.0\.0\.1$"))]
        try:
            for mem in sizes:
                for dirty in (False, True):
                    row = {"mem": mem, "dirty": dirty,
                           "pyxen": pyxen_migrate(rd1, rd2, img, tmp, mem, dirty)}
                    if not args.no_qemu:
                        row["qemu"] = qemu_migrate(img, tmp, mem, dirty)
                    rows.append(row)
                    _print_row(row)
        finally:
            for p in procs:
                p.kill()
                p.wait()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _print_row(row: dict) -> None:
    p = row["pyxen"]
    head = f"{row['mem']:5d} MiB {'dirtying' if row['dirty'] else 'idle    '}"
    line = (f"{head}  pyxen total {p['total']:6.2f} s downtime {p['downtime'] * 1000:6.0f} ms "
            f"rounds {p['rounds']:2d} sent {p['sent']:7.1f} MiB")
    q = row.get("qemu")
    if q:
        line += (f" | QEMU TCG total {q['total']:6.2f} s downtime {q['downtime'] * 1000:6.0f} ms"
                 f" syncs {q['rounds']:2d} sent {q['sent']:7.1f} MiB | pyxen/QEMU total "
                 f"{p['total'] / q['total']:5.2f}x downtime "
                 f"{p['downtime'] / max(q['downtime'], 1e-3):5.2f}x")
    print(line, flush=True)
    print(f"{'':20s}pyxen's downtime: {p['phases']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
