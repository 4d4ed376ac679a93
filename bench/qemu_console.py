"""QEMU TCG with its serial console on a pipe: the emulation baseline the
benchmarks run in the same invocation (bench/linux_boot.py, bench/devices.py)."""
from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path


class Qemu:
    """qemu-system-x86_64 -accel tcg, booting a kernel + initramfs with the
    serial console on a pipe; `run()` types a shell command and returns its output."""

    def __init__(self, kernel: Path, initrd: Path, memory_mb: int = 256, extra=()):
        self.p = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-nographic",
             "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
             "-append", "console=ttyS0 quiet", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""

    def wait_for(self, pattern: str, timeout: float = 300, start: int = 0) -> None:
        end = time.monotonic() + timeout
        rx = re.compile(pattern.encode())
        while time.monotonic() < end:
            if rx.search(self.out, start):
                return
            if self.p.poll() is not None:
                raise RuntimeError(f"qemu exited ({self.p.returncode}): "
                                   + self.out[-2000:].decode(errors="replace"))
            r, _, _ = select.select([self.p.stdout], [], [], 0.5)
            if r:
                self.out += os.read(self.p.stdout.fileno(), 65536)
        raise RuntimeError("qemu: timed out waiting for " + pattern + "\n"
                           + self.out[-2000:].decode(errors="replace"))

    def run(self, cmd: str, timeout: float = 300) -> str:
        marker = f"__q{time.monotonic_ns()}__"
        start = len(self.out)
        self.p.stdin.write(f"{cmd}; echo {marker[:3]}''{marker[3:]}\n".encode())
        self.p.stdin.flush()
        self.wait_for("(?<!')" + re.escape(marker) + r"\r?\n", timeout, start)
        body = self.out[start:].decode(errors="replace")
        body = body[:body.rfind(marker)]
        typed = marker[:3] + "''" + marker[3:]
        if typed in body:
            body = body[body.rfind(typed) + len(typed):]
        return body.replace("\r", "").strip()

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
