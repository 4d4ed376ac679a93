"""blkback: the backend of Xen's block device protocol (public/io/blkif.h).

Features offered to the frontend (Linux's xen-blkfront uses all of them):
flush-cache and barrier (real fdatasync), discard (punch hole / BLKDISCARD),
persistent grants (kept mapped for the life of the connection), indirect
descriptors (up to MAX_INDIRECT_SEGMENTS per request) and multi-queue (one
ring and event channel per queue, each served by a thread of its own).
Requests are served one at a time, except on an image that keeps several in
flight (qemu-nbd through libnbd, `nbd.py`): the reads and writes taken from a
ring together are submitted together, and a flush, barrier or discard waits
for those before it (`_handle_batch`).

A bad request gets BLKIF_RSP_ERROR (or EOPNOTSUPP) and the ring carries on;
a ring whose indexes are impossible shuts the device down (xenbus error
node, state Closing). Neither touches other devices or domains."""
from __future__ import annotations

import ctypes
import logging
import struct

from ...hv import abi
from ...hv.grant import GrantError
from .image import SECTOR
from .ring import BackRing, QueueWorker
from .xenbus import XenbusBackend, DeviceError

log = logging.getLogger("pyxen.blkback")

OP_READ, OP_WRITE, OP_WRITE_BARRIER = abi.BLKIF_OP_READ, abi.BLKIF_OP_WRITE, abi.BLKIF_OP_WRITE_BARRIER
OP_FLUSH, OP_DISCARD, OP_INDIRECT = abi.BLKIF_OP_FLUSH_DISKCACHE, abi.BLKIF_OP_DISCARD, abi.BLKIF_OP_INDIRECT
OP_NAMES = {0: "read", 1: "write", 2: "write-barrier", 3: "flush", 5: "discard", 6: "indirect"}
RSP_OKAY, RSP_ERROR, RSP_EOPNOTSUPP = abi.BLKIF_RSP_OKAY, abi.BLKIF_RSP_ERROR, abi.BLKIF_RSP_EOPNOTSUPP
VDISK_CDROM, VDISK_REMOVABLE, VDISK_READONLY = 1, 2, 4
SLOT = ctypes.sizeof(abi.BlkifSringEntry)    # 112: a request or a response
MAX_SEGMENTS = abi.BLKIF_MAX_SEGMENTS_PER_REQUEST
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
SEG_OFF = abi.BlkifRequest.seg.offset        # 24: the segments follow the _REQ header
assert _REQ.size == SEG_OFF and _SEG.size == ctypes.sizeof(abi.BlkifRequestSegment)
assert _DISCARD.size == ctypes.sizeof(abi.BlkifRequestDiscard)
assert _INDIRECT.size == abi.BlkifRequestIndirect._pad2.offset
assert _RSP.size == abi.BlkifResponse._pad1.offset


class BadRequest(Exception):
    def __init__(self, msg: str, status: int = RSP_ERROR):
        super().__init__(msg)
        self.status = status


class BlkRing(QueueWorker):
    """One queue: a ring, its event channel, its persistent grants."""

    def __init__(self, dev: "BlkBackend", index: int, ring_ref: int, port: int):
        handle, view = dev.guest.grants.map_ref(ring_ref, 0, False)
        self.ring = BackRing(view, SLOT, f"{dev} queue {index}")
        self.persistent: dict[int, tuple[int, memoryview]] = {}
        self.stats = {"rd_req": 0, "wr_req": 0, "rd_sect": 0, "wr_sect": 0, "f_req": 0,
                      "ds_req": 0, "errors": 0}
        super().__init__(dev, index, port, [(handle, view)])

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
    def work(self) -> list[int]:
        ring = self.ring
        aio = getattr(self.dev.image, "aio", False)
        while True:
            n = ring.unconsumed()
            if aio and n > 1:
                for rsp in self._handle_batch([ring.take() for _ in range(n)]):
                    ring.put(rsp)
            else:
                for _ in range(n):
                    ring.put(self._handle(ring.take()))
            if ring.push():
                self.evt.notify()
            if not ring.final_check():
                return []

    def _handle(self, raw: bytes) -> bytes:
        op = raw[0]
        try:
            self._do(op, raw)
            status = RSP_OKAY
        except (BadRequest, GrantError, OSError) as e:
            status = self._failed(op, e)
        return self._rsp(raw, status)

    @staticmethod
    def _rsp(raw: bytes, status: int) -> bytes:
        # an indirect request is answered with the operation it carried (as Linux's blkback)
        op = raw[0]
        return _RSP.pack(_REQ.unpack_from(raw)[3], raw[1] if op == OP_INDIRECT else op, status)

    def _failed(self, op: int, e: Exception) -> int:
        self.stats["errors"] += 1
        if isinstance(e, BadRequest):
            self.dev.complain(f"{OP_NAMES.get(op, op)} request failed: {e}")
            return e.status
        if isinstance(e, GrantError):
            self.dev.complain(f"{OP_NAMES.get(op, op)} request: {e}")
        else:
            self.dev.complain(f"{OP_NAMES.get(op, op)} request: I/O error: {e}")
        return RSP_ERROR

    def _handle_batch(self, raws: list[bytes]) -> list[bytes]:
        """Requests taken from the ring together, for an image that keeps
        several in flight (qemu-nbd through libnbd): reads and writes are all
        submitted, then waited for. Anything else (flush, barrier, discard)
        first waits for every request submitted before it, so a flush covers
        the writes that precede it on the ring, as with one at a time."""
        img = self.dev.image
        rsps: list = [None] * len(raws)
        pending: list = []            # (index, op, cmd, bufs, held, write, sectors)

        def drain():
            for i, op, cmd, bufs, held, write, total in pending:
                try:
                    img.wait(cmd)
                    status = RSP_OKAY
                    self._count(write, total)
                except OSError as e:
                    status = self._failed(op, e)
                finally:
                    self._release(bufs, held)
                rsps[i] = self._rsp(raws[i], status)
            pending.clear()

        try:
            for i, raw in enumerate(raws):
                op = raw[0]
                bufs, held = [], []
                try:
                    rw = self._rw_of(op, raw)
                    if rw is None:              # flush, barrier, discard, malformed...
                        drain()
                        rsps[i] = self._handle(raw)
                        continue
                    write, sector, total = self._prepare(*rw, bufs, held)
                    cmd = img.submit(write, bufs, sector * SECTOR)
                except (BadRequest, GrantError, OSError) as e:
                    self._release(bufs, held)
                    rsps[i] = self._rsp(raw, self._failed(op, e))
                    continue
                pending.append((i, op, cmd, bufs, held, write, total))
        finally:
            drain()
        return rsps

    def _rw_of(self, op: int, raw: bytes):
        """(write, sector, segments) of a plain read or write (direct or
        indirect); None for anything else."""
        if op in (OP_READ, OP_WRITE):
            _, nseg, _, _, sector = _REQ.unpack_from(raw)
            if not 1 <= nseg <= MAX_SEGMENTS:
                return None
            return (op == OP_WRITE, sector,
                    [_SEG.unpack_from(raw, SEG_OFF + _SEG.size * i) for i in range(nseg)])
        if op == OP_INDIRECT and raw[1] in (OP_READ, OP_WRITE):
            _, iop, nseg, _, sector, _, *grefs = _INDIRECT.unpack_from(raw)
            if not 1 <= nseg <= MAX_INDIRECT_SEGMENTS:
                return None
            return iop == OP_WRITE, sector, self._indirect_segs(nseg, grefs)
        return None

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
            segs = [_SEG.unpack_from(raw, SEG_OFF + _SEG.size * i) for i in range(nseg)]
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
            self._rw(iop == OP_WRITE, sector, self._indirect_segs(nseg, grefs))
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

    def _indirect_segs(self, nseg: int, grefs) -> list:
        segs = []
        held: list = []
        try:
            for p in range((nseg + SEGS_PER_INDIRECT_PAGE - 1) // SEGS_PER_INDIRECT_PAGE):
                page = bytes(self._map(grefs[p], False, held))
                k = min(SEGS_PER_INDIRECT_PAGE, nseg - p * SEGS_PER_INDIRECT_PAGE)
                segs += [_SEG.unpack_from(page, _SEG.size * i) for i in range(k)]
        finally:
            self._unmap_all(held)
        return segs

    def _prepare(self, write: bool, sector: int, segs, bufs: list, held: list):
        """Map a read's or write's pages into bufs (the caller releases them
        with held, also on error); (write, sector, sectors)."""
        dev = self.dev
        if write and dev.readonly:
            raise BadRequest("write to a read-only disk")
        total = 0
        for gref, first, last in segs:
            if first > last or last >= 4096 // SECTOR:
                raise BadRequest(f"bad segment sectors {first}..{last}")
            page = self._map(gref, not write, held)
            bufs.append(page[first * SECTOR:(last + 1) * SECTOR])
            total += last - first + 1
        if sector + total > dev.image.sectors:
            raise BadRequest(f"sectors {sector}+{total} beyond the disk end "
                             f"({dev.image.sectors} sectors)")
        return write, sector, total

    def _count(self, write: bool, total: int) -> None:
        k = "wr" if write else "rd"
        self.stats[k + "_req"] += 1
        self.stats[k + "_sect"] += total

    def _release(self, bufs: list, held: list) -> None:
        for b in bufs:
            b.release()
        bufs.clear()
        self._unmap_all(held)

    def _rw(self, write: bool, sector: int, segs) -> None:
        bufs: list = []
        held: list = []
        try:
            self._prepare(write, sector, segs, bufs, held)
            if write:
                self.dev.image.writev(bufs, sector * SECTOR)
            else:
                self.dev.image.readv(bufs, sector * SECTOR)
            self._count(write, sum(len(b) for b in bufs) // SECTOR)
        finally:
            self._release(bufs, held)

    def release(self) -> None:
        grants = self.dev.guest.grants
        for h, view in self.persistent.values():
            view.release()
            try:
                grants.unmap(h)
            except GrantError:
                pass
        self.persistent.clear()


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
        paths = self.queue_paths("ring-ref", MAX_QUEUES)
        self.persistent = self.read_fe_int("feature-persistent", 0) == 1
        self.open_queues(paths, lambda i, q: BlkRing(self, i, self.read_fe_int(q + "ring-ref"),
                                                     self.read_fe_int(q + "event-channel")))
        self.write_be({"sectors": self.image.sectors, "info": self.info(),
                       "sector-size": SECTOR})
        log.info("%s connected: %d queue(s), persistent grants %s", self, len(self.queues),
                 "on" if self.persistent else "off")

    def teardown(self) -> None:
        self.image.close()
