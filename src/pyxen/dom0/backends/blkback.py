"""blkback: the backend of Xen's block device protocol (public/io/blkif.h).

Features offered to the frontend (Linux's xen-blkfront uses all of them):
flush-cache and barrier (real fdatasync), discard (punch hole / BLKDISCARD),
persistent grants (kept mapped for the life of the connection), indirect
descriptors (up to MAX_INDIRECT_SEGMENTS per request) and multi-queue (one
ring and event channel per queue, each served by a thread of its own).

A bad request gets BLKIF_RSP_ERROR (or EOPNOTSUPP) and the ring carries on;
a ring whose indexes are impossible shuts the device down (xenbus error
node, state Closing). Neither touches other devices or domains."""
from __future__ import annotations

import logging
import os
import select
import struct
import threading

from ...hv.grant import GrantError
from .image import SECTOR
from .ring import BackRing, RingError
from .xenbus import XenbusBackend, DeviceError

log = logging.getLogger("pyxen.blkback")

OP_READ, OP_WRITE, OP_WRITE_BARRIER, OP_FLUSH, OP_DISCARD, OP_INDIRECT = 0, 1, 2, 3, 5, 6
OP_NAMES = {0: "read", 1: "write", 2: "write-barrier", 3: "flush", 5: "discard", 6: "indirect"}
RSP_OKAY, RSP_ERROR, RSP_EOPNOTSUPP = 0, -1, -2
VDISK_CDROM, VDISK_REMOVABLE, VDISK_READONLY = 1, 2, 4
SLOT = 112                                  # sizeof(blkif_request), x86_64 ABI
MAX_SEGMENTS = 11
MAX_INDIRECT_SEGMENTS = 256                  # what we offer (Linux asks for up to 32 by default)
SEGS_PER_INDIRECT_PAGE = 512
MAX_QUEUES = 4
MAX_PERSISTENT = 1056                        # per ring, as Linux's blkback

_REQ = struct.Struct("<BBHxxxxQQ")            # operation, nr_segments, handle, id, sector
_SEG = struct.Struct("<IBBxx")                # gref, first_sect, last_sect
_DISCARD = struct.Struct("<BBHxxxxQQQ")       # operation, flag, handle, id, sector, nr_sectors
_INDIRECT = struct.Struct("<BBHxxxxQQHxx8I")  # operation, indirect_op, nr_segments, id, sector,
                                              # handle, indirect_grefs[8]
_RSP = struct.Struct("<QBxh")                 # id, operation, status


class BadRequest(Exception):
    def __init__(self, msg: str, status: int = RSP_ERROR):
        super().__init__(msg)
        self.status = status


class BlkRing:
    """One queue: a ring, its event channel, its persistent grants."""

    def __init__(self, dev: "BlkBackend", index: int, ring_ref: int, port: int):
        self.dev = dev
        self.index = index
        guest = dev.guest
        self.handle, view = guest.grants.map_ref(ring_ref, 0, False)
        self.ring = BackRing(view, SLOT, f"{dev} queue {index}")
        try:
            self.evt = guest.bind(port)
        except OSError:
            guest.grants.unmap(self.handle)
            raise DeviceError(f"event channel {port} of queue {index} is not unbound for dom0")
        self.persistent: dict[int, tuple[int, memoryview]] = {}
        self.stop = threading.Event()
        self.stats = {"rd_req": 0, "wr_req": 0, "rd_sect": 0, "wr_sect": 0, "f_req": 0,
                      "ds_req": 0, "errors": 0}
        self.thread = threading.Thread(target=self._serve, daemon=True,
                                       name=f"blkback-{dev.domid}-{dev.devid}-{index}")

    # --- grants ------------------------------------------------------------------------------------
    def _map(self, ref: int, writable: bool, held: list) -> memoryview:
        """The granted page; persistent grants stay mapped (read-write)."""
        if self.dev.persistent:
            got = self.persistent.get(ref)
            if got is not None:
                return got[1]
            if len(self.persistent) < MAX_PERSISTENT:
                try:
                    h, view = self.dev.guest.grants.map_ref(ref, 0, False)
                except GrantError:
                    pass            # a read-only grant: mapped for this request only
                else:
                    self.persistent[ref] = (h, view)
                    return view
        h, view = self.dev.guest.grants.map_ref(ref, 0, not writable)
        held.append(h)
        return view

    def _unmap_all(self, held: list) -> None:
        for h in held:
            try:
                self.dev.guest.grants.unmap(h)
            except GrantError:
                pass
        held.clear()

    # --- serving -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        ring, evt = self.ring, self.evt
        try:
            while not self.stop.is_set():
                while True:
                    n = ring.unconsumed()
                    for _ in range(n):
                        ring.put(self._handle(ring.take()))
                    if ring.push():
                        evt.notify()
                    if not ring.final_check():
                        break
                r, _, _ = select.select([evt.fd], [], [], 0.5)
                if r:
                    evt.consume()
                if not self.dev.guest.alive():
                    return
        except RingError as e:
            if not self.stop.is_set():
                self.dev.ring_failed(str(e))
        except (OSError, ValueError) as e:
            if not self.stop.is_set():
                log.exception("%s queue %d", self.dev, self.index)
                self.dev.ring_failed(f"queue {self.index}: {e}")

    def _handle(self, raw: bytes) -> bytes:
        op = raw[0]
        req_id = _REQ.unpack_from(raw)[3]
        # an indirect request is answered with the operation it carried (as Linux's blkback)
        rsp_op = raw[1] if op == OP_INDIRECT else op
        try:
            self._do(op, raw)
            status = RSP_OKAY
        except BadRequest as e:
            status = e.status
            self.stats["errors"] += 1
            self.dev.complain(f"{OP_NAMES.get(op, op)} request failed: {e}")
        except GrantError as e:
            status = RSP_ERROR
            self.stats["errors"] += 1
            self.dev.complain(f"{OP_NAMES.get(op, op)} request: {e}")
        except OSError as e:
            status = RSP_ERROR
            self.stats["errors"] += 1
            self.dev.complain(f"{OP_NAMES.get(op, op)} request: I/O error: {e}")
        return _RSP.pack(req_id, rsp_op, status)

    def _do(self, op: int, raw: bytes) -> None:
        dev = self.dev
        img = dev.image
        if op in (OP_READ, OP_WRITE, OP_WRITE_BARRIER):
            _, nseg, _, _, sector = _REQ.unpack_from(raw)
            if op == OP_WRITE_BARRIER and nseg == 0:
                img.flush()
                self.stats["f_req"] += 1
                return
            if not 1 <= nseg <= MAX_SEGMENTS:
                raise BadRequest(f"{nseg} segments (1..{MAX_SEGMENTS} allowed)")
            segs = [_SEG.unpack_from(raw, 24 + 8 * i) for i in range(nseg)]
            self._rw(op != OP_READ, sector, segs)
            if op == OP_WRITE_BARRIER:
                img.flush()
            return
        if op == OP_INDIRECT:
            _, iop, nseg, _, sector, _, *grefs = _INDIRECT.unpack_from(raw)
            if iop not in (OP_READ, OP_WRITE):
                raise BadRequest(f"indirect operation {iop}")
            if not 1 <= nseg <= MAX_INDIRECT_SEGMENTS:
                raise BadRequest(f"{nseg} indirect segments (1..{MAX_INDIRECT_SEGMENTS} allowed)")
            segs = []
            held: list = []
            try:
                for p in range((nseg + SEGS_PER_INDIRECT_PAGE - 1) // SEGS_PER_INDIRECT_PAGE):
                    page = bytes(self._map(grefs[p], False, held))
                    k = min(SEGS_PER_INDIRECT_PAGE, nseg - p * SEGS_PER_INDIRECT_PAGE)
                    segs += [_SEG.unpack_from(page, 8 * i) for i in range(k)]
            finally:
                self._unmap_all(held)
            self._rw(iop == OP_WRITE, sector, segs)
            return
        if op == OP_FLUSH:
            img.flush()
            self.stats["f_req"] += 1
            return
        if op == OP_DISCARD:
            _, _flag, _, _, sector, nr = _DISCARD.unpack_from(raw)
            if not dev.discard:
                raise BadRequest("discard is not enabled", RSP_EOPNOTSUPP)
            if dev.readonly:
                raise BadRequest("discard on a read-only disk")
            if sector + nr > img.sectors or nr > img.sectors:
                raise BadRequest(f"discard of sectors {sector}+{nr} beyond the disk end")
            img.discard(sector * SECTOR, nr * SECTOR)
            self.stats["ds_req"] += 1
            return
        raise BadRequest(f"unknown operation {op}", RSP_EOPNOTSUPP)

    def _rw(self, write: bool, sector: int, segs) -> None:
        dev = self.dev
        if write and dev.readonly:
            raise BadRequest("write to a read-only disk")
        bufs = []
        held: list = []
        total = 0
        try:
            for gref, first, last in segs:
                if first > last or last >= 4096 // SECTOR:
                    raise BadRequest(f"bad segment sectors {first}..{last}")
                page = self._map(gref, not write, held)
                bufs.append(page[first * SECTOR:(last + 1) * SECTOR])
                total += last - first + 1
            if sector + total > dev.image.sectors:
                raise BadRequest(f"sectors {sector}+{total} beyond the disk end "
                                 f"({dev.image.sectors} sectors)")
            if write:
                dev.image.writev(bufs, sector * SECTOR)
                self.stats["wr_req"] += 1
                self.stats["wr_sect"] += total
            else:
                dev.image.readv(bufs, sector * SECTOR)
                self.stats["rd_req"] += 1
                self.stats["rd_sect"] += total
        finally:
            for b in bufs:
                b.release()
            self._unmap_all(held)

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            if self.evt.fd >= 0:
                os.eventfd_write(self.evt.fd, 1)
            self.thread.join(5)
        grants = self.dev.guest.grants
        for h, view in self.persistent.values():
            view.release()
            try:
                grants.unmap(h)
            except GrantError:
                pass
        self.persistent.clear()
        self.ring.page.release()
        try:
            grants.unmap(self.handle)
        except GrantError:
            pass
        self.evt.close()


class BlkBackend(XenbusBackend):
    kind = "vbd"

    def __init__(self, xs, guest, devid: int, image, *, vdev: str, readonly: bool,
                 cdrom: bool = False, discard: bool = True):
        super().__init__(xs, guest, devid)
        self.image = image
        self.vdev = vdev
        self.readonly = readonly
        self.cdrom = cdrom
        self.discard = discard and not readonly
        self.persistent = False
        self.rings: list[BlkRing] = []
        self.complaints = 0

    def complain(self, msg: str) -> None:
        self.complaints += 1
        if self.complaints <= 20:
            log.warning("%s: %s", self, msg)

    def setup(self) -> None:
        feats = {"feature-flush-cache": 1, "feature-barrier": 1,
                 "feature-persistent": 1,
                 "feature-max-indirect-segments": MAX_INDIRECT_SEGMENTS,
                 "multi-queue-max-queues": MAX_QUEUES,
                 "sector-size": SECTOR, "physical-sector-size": SECTOR,
                 "sectors": self.image.sectors, "info": self.info()}
        if self.discard:
            feats.update({"feature-discard": 1, "discard-granularity": 4096,
                          "discard-alignment": 0, "discard-secure": 0})
        self.write_be(feats)

    def info(self) -> int:
        return (VDISK_READONLY if self.readonly else 0) | (VDISK_CDROM if self.cdrom else 0)

    def connect(self) -> None:
        proto = self.read_fe("protocol", "x86_64-abi")
        if proto != "x86_64-abi":
            raise DeviceError(f"frontend ring protocol {proto!r}: only x86_64-abi is served")
        if self.read_fe_int("ring-page-order", 0) != 0:
            raise DeviceError("multi-page rings were not offered")
        nq = self.read_fe_int("multi-queue-num-queues", 0)
        if nq > MAX_QUEUES:
            raise DeviceError(f"frontend asks for {nq} queues, {MAX_QUEUES} offered")
        self.persistent = self.read_fe_int("feature-persistent", 0) == 1
        queues = self.queue_paths(nq, "ring-ref")
        rings = []
        try:
            for i, q in enumerate(queues):
                ref = self.read_fe_int(q + "ring-ref")
                port = self.read_fe_int(q + "event-channel")
                try:
                    rings.append(BlkRing(self, i, ref, port))
                except GrantError as e:
                    raise DeviceError(f"queue {i}: cannot map ring-ref {ref}: {e}") from None
        except DeviceError:
            for r in rings:
                r.close()
            raise
        self.rings = rings
        self.write_be({"sectors": self.image.sectors, "info": self.info(),
                       "sector-size": SECTOR})
        for r in rings:
            r.start()
        log.info("%s connected: %d queue(s), persistent grants %s", self, len(rings),
                 "on" if self.persistent else "off")

    def disconnect(self) -> None:
        rings, self.rings = self.rings, []
        for r in rings:
            r.close()

    def teardown(self) -> None:
        self.image.close()

    def stats(self) -> dict:
        out: dict = {}
        for r in self.rings:
            for k, v in r.stats.items():
                out[k] = out.get(k, 0) + v
        return out
