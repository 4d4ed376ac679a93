"""Xen's shared I/O rings (public/io/ring.h) seen from the backend side.

A ring is one granted page: a 64-byte header (req_prod, req_event, rsp_prod,
rsp_event, padding) and then a power-of-two number of slots, each as large as
the larger of a request and a response. The frontend produces requests and
consumes responses; the backend the other way round. Indexes are free-running
32-bit counters.

The frontend is not trusted: a producer index that claims more requests than
the ring holds is a `RingError`, and every request is copied out of the shared
page once before it is looked at."""
from __future__ import annotations

import ctypes
import struct

from ... import _atomic as A

HEADER = 64
PAGE = 4096
M32 = 0xFFFFFFFF
_HDR = struct.Struct("<IIII")


class RingError(Exception):
    """The frontend broke the ring protocol (the device must be shut down)."""


def ring_size(slot_size: int, pages: int = 1) -> int:
    n = (PAGE * pages - HEADER) // slot_size
    size = 1
    while size * 2 <= n:
        size *= 2
    return size


class BackRing:
    def __init__(self, page: memoryview, slot_size: int, name: str = "ring"):
        if len(page) < PAGE:
            raise ValueError("a ring needs a whole page")
        self.page = page
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(page)) if not page.readonly else 0
        self.slot = slot_size
        self.size = ring_size(slot_size)
        self.name = name
        self.req_cons = self.rsp_prod_pvt = _HDR.unpack_from(page, 0)[2]

    # --- header fields -------------------------------------------------------------------
    def req_prod(self) -> int:
        return _HDR.unpack_from(self.page, 0)[0]

    def rsp_event(self) -> int:
        return _HDR.unpack_from(self.page, 0)[3]

    def unconsumed(self) -> int:
        """Requests the frontend has published that we have not taken."""
        n = (self.req_prod() - self.req_cons) & M32
        if n > self.size:
            raise RingError(f"{self.name}: frontend claims {n} requests on a ring of {self.size}")
        # requests must not overrun responses we have not produced yet
        if (self.req_cons - self.rsp_prod_pvt) & M32 > self.size:
            raise RingError(f"{self.name}: request/response indexes out of step")
        return n

    def take(self) -> bytes:
        """Copy out the next request (read once, then parsed from the copy)."""
        off = HEADER + (self.req_cons % self.size) * self.slot
        self.req_cons = (self.req_cons + 1) & M32
        return bytes(self.page[off:off + self.slot])

    def peek(self, ahead: int = 0) -> bytes:
        off = HEADER + ((self.req_cons + ahead) % self.size) * self.slot
        return bytes(self.page[off:off + self.slot])

    def put(self, rsp: bytes) -> None:
        off = HEADER + (self.rsp_prod_pvt % self.size) * self.slot
        self.page[off:off + len(rsp)] = rsp
        self.rsp_prod_pvt = (self.rsp_prod_pvt + 1) & M32

    def push(self) -> bool:
        """Publish the responses written so far; True when the frontend asked
        to be notified about them (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY)."""
        old = _HDR.unpack_from(self.page, 0)[2]
        new = self.rsp_prod_pvt
        if old == new:
            return False
        A.store32(self.addr + 8, new)          # a full barrier, then read rsp_event
        return ((new - self.rsp_event()) & M32) < ((new - old) & M32)

    def final_check(self) -> bool:
        """RING_FINAL_CHECK_FOR_REQUESTS: ask to be notified of the next request,
        then look once more; True when there is more to do."""
        if self.unconsumed():
            return True
        A.store32(self.addr + 4, (self.req_cons + 1) & M32)
        return self.unconsumed() > 0
