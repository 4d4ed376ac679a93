"""A frontend written in Python for backend tests: it plays the guest's side
of a PV device on a real (not running) pyxen domain — grant entries in its
grant table, rings in its RAM, an unbound event channel for dom0, its
XenStore nodes — so tests can send the backend any request, including
broken ones a hostile guest could send."""
from __future__ import annotations

import struct
import time

from pyxen.dom0.backends import xenbus
from pyxen.hv import layout as L
from pyxen.hv.grant import GTF_permit_access, GTF_readonly

RING_FRAME = 0x40          # guest frames used by the fake frontend
DATA_FRAME = 0x100


class Frontend:
    def __init__(self, dom, xs, kind: str, devid: int):
        self.dom = dom
        self.xs = xs
        self.kind = kind
        self.devid = devid
        self.fe = xenbus.frontend_path(kind, dom.domid, devid)
        self.be = xenbus.backend_path(kind, dom.domid, devid)
        self.client = xs.store.new_client(dom.domid, False)
        if not dom.grants.frames:
            dom.grants.grow(4)
        self.next_ref = 8

    # --- grants and memory --------------------------------------------------------------------
    def grant(self, frame: int, readonly: bool = False, domid: int = 0) -> int:
        ref = self.next_ref
        self.next_ref += 1
        gt = self.dom.grants
        off = gt.frames[ref // 512] * L.PAGE_SIZE + (ref % 512) * 8
        flags = GTF_permit_access | (GTF_readonly if readonly else 0)
        struct.pack_into("<HHI", self.dom.heap.mm, off, flags, domid, frame)
        return ref

    def page(self, frame: int) -> memoryview:
        return self.dom.ram.view[frame * 4096:(frame + 1) * 4096]

    # --- XenStore -------------------------------------------------------------------------------------
    def write(self, values: dict) -> None:
        with self.xs.access() as store:
            for k, v in values.items():
                store.write(self.client, f"{self.fe}/{k}", str(v).encode())

    def read_be(self, key: str) -> str | None:
        try:
            with self.xs.lock:
                return self.xs.store.read(self.client, f"{self.be}/{key}").decode()
        except Exception:
            return None

    def wait_be_state(self, state: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.read_be("state") == str(state):
                return
            time.sleep(0.01)
        raise AssertionError(f"backend state {self.read_be('state')}, wanted {state}; "
                             f"error: {self.read_be('error')}")

    # --- rings ------------------------------------------------------------------------------------------
    def init_ring(self, frame: int) -> int:
        p = self.page(frame)
        p[:] = bytes(4096)
        struct.pack_into("<IIII", p, 0, 0, 1, 0, 1)      # SHARED_RING_INIT
        return self.grant(frame)

    def alloc_port(self) -> int:
        return self.dom.events.alloc_unbound(0)

    def notify(self, port: int) -> None:
        """EVTCHNOP_send on the frontend's port."""
        ch = self.dom.events.ports[port]
        assert ch.remote is not None, "port not bound by the backend"
        ch.remote.notify()


class RingWriter:
    """The frontend's side of one shared ring."""

    def __init__(self, fe: Frontend, frame: int, slot: int):
        self.fe = fe
        self.p = fe.page(frame)
        self.slot = slot
        n = (4096 - 64) // slot
        self.size = 1 << (n.bit_length() - 1)
        self.req_prod = 0
        self.rsp_cons = 0

    def push(self, req: bytes, port: int, publish: bool = True) -> None:
        off = 64 + (self.req_prod % self.size) * self.slot
        self.p[off:off + len(req)] = req
        self.req_prod += 1
        if publish:
            struct.pack_into("<I", self.p, 0, self.req_prod)
            self.fe.notify(port)

    def responses(self, n: int, timeout: float = 10.0) -> list[bytes]:
        end = time.monotonic() + timeout
        out = []
        while len(out) < n:
            rsp_prod = struct.unpack_from("<I", self.p, 8)[0]
            while self.rsp_cons != rsp_prod and len(out) < n:
                off = 64 + (self.rsp_cons % self.size) * self.slot
                out.append(bytes(self.p[off:off + self.slot]))
                self.rsp_cons += 1
            if len(out) < n:
                if time.monotonic() > end:
                    raise AssertionError(f"got {len(out)} of {n} responses")
                time.sleep(0.002)
        return out
