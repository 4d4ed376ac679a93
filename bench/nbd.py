#!/usr/bin/env python3
"""NBD clients for blkback's non-raw images, measured in the same run against
the same qcow2 image served by qemu-nbd (started exactly as
`dom0/backends/nbd.py` starts it): pyxen's earlier hand-written client (one
request at a time under a lock) and libnbd's Python binding (Debian
python3-libnbd) with 1
and with DEPTH requests in flight: pyxen's QemuNbdImage (libnbd's
aio_pread/aio_pwrite, as blkback drives it: readv/writev for one request,
submit/wait for a batch taken from the ring). The hand-written client is
kept in bench/nbd_handwritten.py for this comparison.

Requests are issued as blkback issues them: the data is a list of 4 KiB
guest pages (memoryviews into one "guest RAM" bytearray, not contiguous), so
a 64 KiB request has 16 segments; libnbd, which has no scatter-gather, reads
into a bounce buffer that is then copied to the pages and writes from the
pages joined. DEPTH defaults to 32, a one-page blkif ring's worth.

Workloads: 64 KiB sequential writes (the image is filled first, so the reads
hit allocated clusters), 64 KiB sequential reads, 4 KiB random reads. Prints
ops/s and MiB/s per client and the ratio to the hand-written client; asserts
nothing about them.

  .venv/bin/python bench/nbd.py [--size MIB] [--seconds S] [--depth N]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


PAGE = 4096


class Guest:
    """Guest pages as blkback sees them (persistent grants: one memoryview a page)."""

    def __init__(self, pages: int = 512):
        self.ram = bytearray(os.urandom(pages * PAGE))
        mv = memoryview(self.ram)
        self.pages = [mv[i * PAGE:(i + 1) * PAGE] for i in range(pages)]
        self.rng = random.Random(1)

    def segs(self, n: int) -> list:
        return [self.pages[i] for i in self.rng.sample(range(len(self.pages)), n)]


def workloads(size: int):
    """(name, write?, request bytes, offset generator)."""
    rng = random.Random(2)

    def seq(step):
        off = 0
        while True:
            yield off
            off = (off + step) % size

    def rand(step):
        while True:
            yield rng.randrange(size // step) * step

    return [("64 KiB seq write", True, 65536, seq(65536)),
            ("64 KiB seq read", False, 65536, seq(65536)),
            ("4 KiB random read", False, 4096, rand(4096))]


# --- clients -----------------------------------------------------------------------------------
class Handwritten:
    """The hand-written client: one request at a time (what blkback does today)."""
    name = "hand-written, 1 in flight"

    def __init__(self, path):
        from nbd_handwritten import HandwrittenNbdImage
        self.img = HandwrittenNbdImage(path, "qcow2", False)

    def run(self, write, gen, nseg, guest, seconds):
        img, n, t0 = self.img, 0, time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(64):
                bufs = guest.segs(nseg)
                (img.writev if write else img.readv)(bufs, next(gen))
            n += 64
            if time.perf_counter() >= end:
                break
        if write:
            img.flush()
        return n, time.perf_counter() - t0

    def close(self):
        self.img.close()


class Libnbd:
    """pyxen's QemuNbdImage (libnbd): readv/writev with 1 in flight (what
    blkback does for a lone request), submit/wait with up to `depth` (what
    blkback does with the requests it takes from the ring together)."""

    def __init__(self, path, depth):
        from pyxen.dom0.backends.nbd import QemuNbdImage
        self.img = QemuNbdImage(path, "qcow2", False)
        self.depth = depth
        self.name = f"libnbd, {depth} in flight"

    def run(self, write, gen, nseg, guest, seconds):
        img, depth = self.img, self.depth
        n, t0 = 0, time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(64 // depth or 1):
                if depth == 1:
                    (img.writev if write else img.readv)(guest.segs(nseg), next(gen))
                else:
                    cmds = [img.submit(write, guest.segs(nseg), next(gen)) for _ in range(depth)]
                    for c in cmds:
                        img.wait(c)
                n += depth
            if time.perf_counter() >= end:
                break
        if write:
            img.flush()
        return n, time.perf_counter() - t0

    def close(self):
        self.img.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="image size, MiB")
    ap.add_argument("--seconds", type=float, default=1.0, help="per round, workload and client")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--depth", type=int, default=32, help="requests in flight for libnbd")
    a = ap.parse_args()
    if shutil.which("qemu-nbd") is None:
        sys.exit("bench/nbd.py: needs qemu-nbd (Debian qemu-utils)")
    size = a.size << 20
    tmp = tempfile.mkdtemp(prefix="pyxen-nbdbench-img-")
    path = os.path.join(tmp, "disk.qcow2")
    try:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(size)], check=True)
        guest = Guest()
        # fill the image once so every read hits an allocated cluster
        fill = Handwritten(path)
        for off in range(0, size, 65536):
            fill.img.writev(guest.segs(16), off)
        fill.img.flush()
        fill.close()
        makers = [lambda: Handwritten(path), lambda: Libnbd(path, 1),
                  lambda: Libnbd(path, a.depth)]
        print(f"qcow2 image {a.size} MiB through qemu-nbd (--cache writeback); {a.rounds} rounds "
              f"of {a.seconds:g} s per workload and client, the clients taking turns; median "
              f"ops/s, and the client process's CPU per request (user+sys, the qemu-nbd "
              f"server's not counted); host {os.uname().release}, {os.cpu_count()} CPUs, "
              f"load {os.getloadavg()[0]:.1f}")
        for wname, write, reqlen, gen in workloads(size):
            print(f"\n{wname}:")
            res = [[] for _ in makers]
            cpu = [[] for _ in makers]
            names = [None] * len(makers)
            for _ in range(a.rounds):
                for k, make in enumerate(makers):
                    c = make()
                    names[k] = c.name
                    try:
                        c.run(write, gen, reqlen // PAGE, guest, 0.2)            # warm up
                        t = os.times()
                        n, dt = c.run(write, gen, reqlen // PAGE, guest, a.seconds)
                        t2 = os.times()
                    finally:
                        c.close()
                    res[k].append(n / dt)
                    cpu[k].append((t2.user + t2.system - t.user - t.system) / n * 1e6)
            base = statistics.median(res[0])
            for k in range(len(makers)):
                ops = statistics.median(res[k])
                print(f"  {names[k]:28s} {ops:9.0f} ops/s {ops * reqlen / 2**20:8.1f} MiB/s"
                      f"   x{ops / base:.2f}   {statistics.median(cpu[k]):6.1f} us CPU/request"
                      f"   (rounds: {' '.join(f'{x:.0f}' for x in res[k])})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
