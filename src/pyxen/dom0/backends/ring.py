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
from abc import ABC, abstractmethod
import logging
import os
import select
import struct
import threading

from ... import _atomic as A
from ...hv.abi import SringHeader

log = logging.getLogger("pyxen.backend")

HEADER = ctypes.sizeof(SringHeader)            # 64
PAGE = 4096
M32 = 0xFFFFFFFF
_HDR = struct.Struct("<IIII")                   # req_prod, req_event, rsp_prod, rsp_event
_REQ_EVENT, _RSP_PROD = SringHeader.req_event.offset, SringHeader.rsp_prod.offset
assert _HDR.size == SringHeader.pvt.offset and (_REQ_EVENT, _RSP_PROD) == (4, 8)


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
        A.store32(self.addr + _RSP_PROD, new)  # a full barrier, then read rsp_event
        return ((new - self.rsp_event()) & M32) < ((new - old) & M32)

    def final_check(self) -> bool:
        """RING_FINAL_CHECK_FOR_REQUESTS: ask to be notified of the next request,
        then look once more; True when there is more to do."""
        if self.unconsumed():
            return True
        A.store32(self.addr + _REQ_EVENT, (self.req_cons + 1) & M32)
        return self.unconsumed() > 0


class QueueWorker(ABC):
    """One queue of a device: a thread that calls `work()` whenever the
    frontend's event channel fires (and on the fds `work()` returns), until
    the device is closed or the guest is gone. A RingError (or an I/O error)
    takes the whole device down through `dev.ring_failed`."""

    def __init__(self, dev, index: int, port: int, rings: list[tuple[int, memoryview]]):
        """rings: (grant handle, view) of the pages mapped for this queue,
        released when the queue closes (also when binding the port fails)."""
        self.dev = dev
        self.index = index
        self.mapped = rings
        try:
            self.evt = dev.guest.bind(port)
        except OSError:
            self._unmap()
            from .xenbus import DeviceError
            raise DeviceError(f"event channel {port} of queue {index} is not unbound for dom0")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name=f"{dev.kind}-{dev.domid}-{dev.devid}-q{index}")

    def start(self) -> None:
        self.thread.start()

    @abstractmethod
    def work(self) -> list[int]:
        """Serve the rings; returns more fds to wait on (besides the event channel)."""

    def _serve(self) -> None:
        try:
            while not self.stop.is_set():
                fds = [self.evt.fd] + self.work()
                r, _, _ = select.select(fds, [], [], 0.5)
                if self.evt.fd in r:
                    self.evt.consume()
                elif not r and not self.dev.guest.alive():    # only when idle: it costs
                    return
        except RingError as e:
            if not self.stop.is_set():
                self.dev.ring_failed(str(e))
        except (OSError, ValueError) as e:
            if not self.stop.is_set():
                log.exception("%s queue %d", self.dev, self.index)
                self.dev.ring_failed(f"queue {self.index}: {e}")

    def release(self) -> None:
        """Drop what the subclass keeps mapped (before the rings go)."""

    def _unmap(self) -> None:
        grants = self.dev.guest.grants
        for h, view in self.mapped:
            view.release()
            try:
                grants.unmap(h)
            except Exception:
                pass
        self.mapped = []

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            if self.evt.fd >= 0:
                os.eventfd_write(self.evt.fd, 1)
            self.thread.join(5)
        self.release()
        self._unmap()
        self.evt.close()
