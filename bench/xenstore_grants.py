#!/usr/bin/env python3
"""XenStore and grant-table throughput.

  xenstore   operations per second and median / p99 latency for read, write,
             directory and transaction (start+write+commit), over the Unix socket
             (what the xenstore-* tools use) and over a ring page served by
             RingTransport (the guest path, without the guest's exits).
             Debian's C xenstored cannot run here for comparison: it needs
             Xen's /dev/xen devices.
  grants     dom0 grant map+unmap per second, and MB/s copied through mappings
             of 4 KiB granted pages.
"""
from __future__ import annotations

import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pyxen.dom0.xenstore.server import XenStoreServer   # noqa: E402
from pyxen.dom0.xenstore.ring import RingTransport      # noqa: E402

HDR = struct.Struct("<IIII")
READ, WRITE, DIRECTORY, TX_START, TX_END = 2, 11, 1, 6, 7


class SocketClient:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""
        self.rid = 0

    def req(self, t, payload, tx=0):
        self.rid += 1
        self.s.sendall(HDR.pack(t, self.rid, tx, len(payload)) + payload)
        while True:
            if len(self.buf) >= 16:
                _t, _r, _x, n = HDR.unpack_from(self.buf)
                if len(self.buf) >= 16 + n:
                    p = self.buf[16:16 + n]
                    self.buf = self.buf[16 + n:]
                    return p
            self.buf += self.s.recv(65536)


class RingClient:
    """The guest side of a xenstore ring page, driving RingTransport directly."""

    def __init__(self, store):
        self.page = bytearray(4096)
        self.t = RingTransport(store, 0, self.page, lambda: None, privileged=True)
        self.rid = 0
        self.rx = b""

    def _u32(self, off):
        return int.from_bytes(self.page[off:off + 4], "little")

    def _set(self, off, v):
        self.page[off:off + 4] = (v & 0xFFFFFFFF).to_bytes(4, "little")

    def req(self, t, payload, tx=0):
        self.rid += 1
        msg = HDR.pack(t, self.rid, tx, len(payload)) + payload
        prod = self._u32(2052)
        for i, b in enumerate(msg):
            self.page[(prod + i) % 1024] = b
        self._set(2052, prod + len(msg))
        self.t.kick()
        cons, rprod = self._u32(2056), self._u32(2060)
        out = bytes(self.page[1024 + (cons + i) % 1024] for i in range((rprod - cons) & 0xFFFFFFFF))
        self._set(2056, rprod)
        return out[16:]


def measure(client, n=2000):
    res = {}
    client.req(WRITE, b"/bench/key\0" + b"v" * 32)
    for name, fn in (
        ("read", lambda i: client.req(READ, b"/bench/key\0")),
        ("write", lambda i: client.req(WRITE, b"/bench/key\0" + str(i).encode())),
        ("directory", lambda i: client.req(DIRECTORY, b"/bench\0")),
        ("transaction", lambda i: (lambda tx: (client.req(WRITE, b"/bench/t\0x", tx),
                                               client.req(TX_END, b"T\0", tx)))(
            int(client.req(TX_START, b"\0").rstrip(b"\0")))),
    ):
        lat = []
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            lat.append(time.perf_counter() - t)
        lat.sort()
        res[name] = (len(lat) / sum(lat), statistics.median(lat) * 1e6, lat[int(len(lat) * 0.99)] * 1e6)
    return res


def bench_grants(n=3000):
    from pyxen.kvm import Kvm
    from pyxen.hv.domain import Domain
    from pyxen.hv import layout as L
    dom = Domain(name="g", memory_mb=64, kvm=Kvm())
    try:
        gt = dom.grants
        gt.grow(2)
        for ref in range(8, 8 + 256):
            struct.pack_into("<HHI", dom.heap.mm, gt.frames[0] * L.PAGE_SIZE + ref * 8, 1, 0,
                             1000 + ref)
        t = time.perf_counter()
        for i in range(n):
            h, v = gt.map_ref(8 + i % 256, mapper=0)
            gt.unmap(h)
        maps = n / (time.perf_counter() - t)
        buf = bytes(4096)
        t = time.perf_counter()
        for i in range(n):
            h, v = gt.map_ref(8 + i % 256, mapper=0)
            v[:] = buf
            gt.unmap(h)
        mbps = n * 4096 / (time.perf_counter() - t) / 1e6
        return maps, mbps
    finally:
        dom.close()


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        sock = str(Path(d) / "xs.sock")
        srv = XenStoreServer(socket_path=sock, state_file=None)
        srv.start()
        try:
            for label, client in (("socket", SocketClient(sock)), ("ring", RingClient(srv.store))):
                for op, (ops, med, p99) in measure(client).items():
                    print(f"xenstore {label:6} {op:12} {ops:9.0f} ops/s   median {med:7.1f} us"
                          f"   p99 {p99:7.1f} us")
        finally:
            srv.stop()
    maps, mbps = bench_grants()
    print(f"grants   dom0 map+unmap {maps:9.0f} /s   copy through mappings {mbps:7.1f} MB/s "
          "(4 KiB pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
