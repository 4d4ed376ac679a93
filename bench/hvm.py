#!/usr/bin/env python3
"""The same Debian Linux as a PV domain under pyxen and as an HVM domain
(QEMU; TCG on this host, whose KVM is PVM), both under one private pyxend:
the article's paravirtualization-versus-emulation comparison, measured.

  boot      create -> the busybox shell prompt on the domain's console
  sh loop   a busybox sh arithmetic loop (user-space CPU work)
  syscalls  dd bs=512 of 10,000 blocks through a pipe (system calls)

Prints each figure for PV and HVM and the ratio HVM/PV. Timings are not
asserted anywhere; they depend on the host.
"""
from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from pyxen.build.linux_guest import prepare_linux            # noqa: E402
from daemon_helpers import cli, env_for, start_daemon       # noqa: E402

PROMPT = b"pyxen:/# "
LOADS = {"sh loop": "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done",
         "syscalls": "dd if=/dev/zero bs=512 count=10000 2>/dev/null | cat >/dev/null"}


class Console:
    """pyxen create -c in a pty: the domain's console from its first line."""

    def __init__(self, rd: Path, cfg: Path):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ.update(env_for(rd))
            os.execv(sys.executable, [sys.executable, "-m", "pyxen.cli", "create", "-c", str(cfg)])
        self.out = b""

    def until(self, marker: bytes, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while marker not in self.out:
            if time.monotonic() > end:
                raise TimeoutError(f"no {marker!r}: {self.out[-500:]!r}")
            if select.select([self.fd], [], [], 0.2)[0]:
                self.out += os.read(self.fd, 65536)

    def run(self, command: str) -> float:
        """Seconds the guest's busybox `time` measures for command."""
        self.out = b""
        os.write(self.fd, f"time sh -c '{command}'; echo DONE-$((40+2))\r".encode())
        self.until(b"DONE-42")
        m = re.search(rb"real\s+(\d+)m\s*([\d.]+)s", self.out)
        if m is None:
            raise ValueError(f"no time in {self.out[-300:]!r}")
        return int(m.group(1)) * 60 + float(m.group(2))

    def close(self) -> None:
        os.write(self.fd, b"\x1d")
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def measure(rd: Path, cfg: Path, name: str) -> dict:
    t0 = time.monotonic()
    c = Console(rd, cfg)
    try:
        c.until(PROMPT)
        out = {"boot": time.monotonic() - t0}
        for what, command in LOADS.items():
            out[what] = c.run(command)
    finally:
        c.close()
        cli(rd, "destroy", name)
    return out


def main() -> int:
    if shutil.which("qemu-system-x86_64") is None:
        print("qemu-system-x86_64 is missing (apt-get install qemu-system-x86)")
        return 1
    img = prepare_linux()
    common = (f'memory = 256\nvcpus = 1\nkernel = "{img.kernel}"\n'
              f'ramdisk = "{img.initrd}"\n')
    with tempfile.TemporaryDirectory(prefix="pyxen-bench-hvm-") as tmp:
        rd = Path(tmp) / "run"
        rd.mkdir()
        pv = Path(tmp) / "pv.cfg"
        pv.write_text(common + 'name = "bench-pv"\nextra = "console=hvc0"\n')
        hvm = Path(tmp) / "hvm.cfg"
        hvm.write_text(common + 'name = "bench-hvm"\ntype = "hvm"\nextra = "console=ttyS0"\n'
                       'serial = "pty"\n')
        daemon = start_daemon(rd)
        try:
            res_pv = measure(rd, pv, "bench-pv")
            res_hvm = measure(rd, hvm, "bench-hvm")
        finally:
            daemon.terminate()
            daemon.wait()
    from pyxen.toolstack.hvm import detect_accel
    print(f"Debian Linux, PV under pyxen vs HVM under QEMU ({detect_accel()[0]}), 1 vCPU, 256 MiB")
    print(f"{'':10} {'PV (s)':>9} {'HVM (s)':>9} {'HVM/PV':>8}")
    for k in res_pv:
        print(f"{k:10} {res_pv[k]:9.2f} {res_hvm[k]:9.2f} {res_hvm[k] / res_pv[k]:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
