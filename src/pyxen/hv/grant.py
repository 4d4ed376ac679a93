"""Grant tables, v1 and v2 (Xen's common/grant_table.c).

The shared entries live in pyxen's heap (frames the guest maps through the
list setup_table returns); with v2 the status words live in separate status
frames, given to the guest while the table is at v2 and taken back (only
when no page table maps them any more) when it returns to v1.

What is in use is kept as Xen keeps it, in an active entry per reference:
four pin counts (host/device, writable/read-only), the mapping domain and the
frame, fixed when the first pin is taken. GTF_reading / GTF_writing are set
and cleared with real atomics on the shared memory, because the granting
guest's vCPUs may be revoking the same entry at that moment; once an entry is
pinned only the active entry counts, so a guest rewriting a pinned entry
changes nothing.

`map_ref()` / `unmap()` are the dom0 side: a backend service maps a page a
guest granted to it. `GrantTable` works on the domain's memory only, so
another process holding the domain's memfds can do the same. A domain's own
mappings of grants (GNTTABOP_map_grant_ref) are tracked by handle in its
`maptrack`, as in Xen.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from array import array
from dataclasses import dataclass

from .. import _atomic as A
from . import abi
from . import layout as L
from .abi import (GTF_invalid, GTF_permit_access, GTF_accept_transfer,  # noqa: F401
                  GTF_transitive, GTF_type_mask, GTF_readonly, GTF_reading, GTF_writing,
                  GTF_sub_page, GTF_PWT, GTF_PCD, GTF_PAT, GNTST_okay, GNTST_general_error,
                  GNTST_bad_domain, GNTST_bad_gntref, GNTST_bad_handle, GNTST_bad_virt_addr,
                  GNTST_bad_dev_addr, GNTST_no_device_space, GNTST_permission_denied,
                  GNTST_bad_page, GNTST_bad_copy_arg, GNTST_address_too_big, GNTST_eagain,
                  GNTST_no_space, GNTTAB_NR_RESERVED_ENTRIES, EINVAL, ENOSYS, EBUSY, ERANGE)

# an active entry's pin: four 8-bit counts, as in Xen
GNTPIN_hstw, GNTPIN_hstr, GNTPIN_devw, GNTPIN_devr = 1, 1 << 8, 1 << 16, 1 << 24
GNTPIN_write_mask = 0xFF | (0xFF << 16)         # any writable pin (host or device)

# the shared entries (grant_entry_v1, union grant_entry_v2) and v2's status
# words (grant_status_t), laid out as abi.grant_table has them
V1_SIZE = ctypes.sizeof(abi.GrantEntryV1)                   # 8
V2_SIZE = ctypes.sizeof(abi.GrantEntryV2FullPage)           # 16, the union
STATUS_SIZE = ctypes.sizeof(abi.grant_status_t)             # 2
V1_PER_FRAME, V2_PER_FRAME = L.PAGE_SIZE // V1_SIZE, L.PAGE_SIZE // V2_SIZE
STATUS_PER_FRAME = L.PAGE_SIZE // STATUS_SIZE
_V1 = abi.checked_struct("<HHI", abi.GrantEntryV1, "flags domid frame")
_V2 = abi.checked_struct("<HHHHQ", abi.GrantEntryV2SubPage,
                         "hdr.flags hdr.domid page_off length frame")
_V2_FULL = abi.checked_struct("<HH4xQ", abi.GrantEntryV2FullPage, "hdr.flags hdr.domid frame")
_V2_SUB = abi.checked_struct("<4xHH", abi.GrantEntryV2SubPage, "page_off length")
_V2_TRANS = abi.checked_struct("<4xH2xI", abi.GrantEntryV2Transitive, "trans_domid gref")
_STATUS = struct.Struct("<H")
_V1_FRAME = abi.GrantEntryV1.frame.offset                   # a u32
_V2_FRAME = abi.GrantEntryV2FullPage.frame.offset           # a u64, sub-page grants' too
assert (_V1.size, _V2.size, _V2_FULL.size, _STATUS.size) == (V1_SIZE, V2_SIZE, V2_SIZE, STATUS_SIZE)
assert _V2_FRAME == abi.GrantEntryV2SubPage.frame.offset
# the header (flags, domid) is read as one u32 at the entry's start: flags
# its low 16 bits, domid its high 16 (abi.GrantEntryHeader, v1's alike);
# the status words, and v1's flags, are read as an array of u16
abi.checked_struct("<HH", abi.GrantEntryHeader, "flags domid")
abi.checked_struct("<HH", abi.GrantEntryV1, "flags domid")
abi.checked_struct("<HH", abi.GrantEntryV2FullPage, "hdr.flags hdr.domid")
# the bit numbers of the in-use flags, set and cleared as atomic bit operations
_INUSE_BITS = tuple(f.bit_length() - 1 for f in (GTF_reading, GTF_writing))     # 3, 4

INITIAL_FRAMES = 1               # every table has at least this many (Xen's x86 value)
MAX_FRAMES = 64                  # Xen's default gnttab_max_frames
MAX_STATUS_FRAMES = (MAX_FRAMES * V2_PER_FRAME + STATUS_PER_FRAME - 1) // STATUS_PER_FRAME
MAPTRACK_PER_FRAME = L.PAGE_SIZE // 16   # Xen's struct grant_mapping (not in the public ABI)
MAX_MAPTRACK_FRAMES = 1024       # Xen's default gnttab_max_maptrack_frames

_U32 = ctypes.c_uint32
_U64 = ctypes.c_uint64


class GrantError(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status = status


@dataclass
class Active:
    """Xen's active grant entry."""
    pin: int = 0
    domid: int = 0          # the domain the pins belong to
    mfn: int = 0
    start: int = 0          # sub-page grants (copy only)
    length: int = L.PAGE_SIZE
    sub_page: bool = False


@dataclass
class Mapping:
    """A dom0-side mapping (map_ref)."""
    handle: int
    ref: int
    mapper: int
    readonly: bool
    mfn: int


@dataclass
class MapEntry:
    """One of a domain's own grant mappings (Xen's struct grant_mapping)."""
    ref: int
    flags: int              # GNTMAP_* still mapped
    domid: int              # the granting domain


class MapTrack:
    """A domain's grant mapping handles (Xen's maptrack): small integers from
    0, freed ones reused in the order they were freed, grown a frame's worth
    (MAPTRACK_PER_FRAME) at a time up to max_frames (xl.cfg
    max_maptrack_frames; Xen's default 1024, 262,144 handles). A map past
    that is refused with GNTST_no_space, as Xen's. Kept in flat arrays, 12
    bytes a handle (Xen's struct grant_mapping is 16), so a full maptrack
    costs about what it costs Xen."""

    def __init__(self, max_frames: int = MAX_MAPTRACK_FRAMES):
        self.max_frames = max_frames
        self.ref = array("I")
        self.flags = array("H")             # GNTMAP_* still mapped; 0: free
        self.domid = array("H")
        self.next = array("i")              # free list links, -1 ends it
        self.head = self.tail = -1

    @property
    def limit(self) -> int:
        return self.max_frames * MAPTRACK_PER_FRAME

    def __len__(self) -> int:
        return len(self.ref)

    def get(self) -> int | None:
        """A free handle (its entry is set with set()), or None at the limit."""
        if self.head < 0:
            n = len(self.ref)
            if n + MAPTRACK_PER_FRAME > self.limit:
                return None
            zeros = bytes(4 * MAPTRACK_PER_FRAME)
            self.ref.frombytes(zeros)
            self.flags.frombytes(zeros[:2 * MAPTRACK_PER_FRAME])
            self.domid.frombytes(zeros[:2 * MAPTRACK_PER_FRAME])
            self.next.extend(range(n + 1, n + MAPTRACK_PER_FRAME + 1))
            self.next[-1] = -1
            self.head, self.tail = n, n + MAPTRACK_PER_FRAME - 1
        h = self.head
        self.head = self.next[h]
        if self.head < 0:
            self.tail = -1
        return h

    def set(self, handle: int, ref: int, flags: int, domid: int) -> None:
        # Xen keeps the GNTMAP_* bits in 16 bits too
        self.ref[handle], self.flags[handle], self.domid[handle] = ref, flags & 0xFFFF, domid

    def put(self, handle: int) -> None:
        self.flags[handle] = 0
        self.next[handle] = -1
        if self.tail >= 0:
            self.next[self.tail] = handle
        else:
            self.head = handle
        self.tail = handle

    def lookup(self, handle: int) -> MapEntry | None:
        """The mapping a handle names (a copy), or None if it names none."""
        if 0 <= handle < len(self.ref) and self.flags[handle]:
            return MapEntry(self.ref[handle], self.flags[handle], self.domid[handle])
        return None

    def in_use(self) -> int:
        return sum(1 for f in self.flags if f)


class EmptyGrantTable:
    """The grant table of a domain that grants nothing a domU can reach
    through pyxen: domain 0, whose services (pyxend and its backends) map
    guests' grants but never grant pages themselves. Like every table on Xen
    it has its initial frame of v1 entries, all unused."""
    version = 1

    def nr_entries(self) -> int:
        return INITIAL_FRAMES * V1_PER_FRAME

    def acquire(self, ref: int, mapper: int, readonly: bool, pin_incr: int | None = None,
                mapflag: bool = True):
        if ref >= self.nr_entries():
            raise GrantError(GNTST_bad_gntref, f"grant reference {ref} out of range")
        raise GrantError(GNTST_general_error, f"grant {ref} of domain 0 grants nothing "
                         f"to domain {mapper}")


DOM0_TABLE = EmptyGrantTable()


class GrantTable:
    def __init__(self, domain, max_frames: int = MAX_FRAMES,
                 max_maptrack_frames: int = MAX_MAPTRACK_FRAMES):
        self.dom = domain
        self.version = 1
        self.max_version = 2
        self.max_frames = max_frames
        self.frames: list[int] = []          # heap page indexes of the shared frames
        self.status_frames: list[int] = []   # v2 only
        self._spare_status: list[int] = []   # status pages taken back at v1, for reuse
        self.lock = threading.RLock()
        self.active: dict[int, Active] = {}
        self.maps: dict[int, Mapping] = {}   # dom0 side
        self.next_handle = 1
        self.maptrack = MapTrack(max_maptrack_frames)   # this domain's own mappings of grants

    # --- table geometry ----------------------------------------------------------
    def per_frame(self) -> int:
        return V1_PER_FRAME if self.version == 1 else V2_PER_FRAME

    def nr_entries(self) -> int:
        return len(self.frames) * self.per_frame()

    @staticmethod
    def status_frames_for(nr_frames: int) -> int:
        return (nr_frames * V2_PER_FRAME + STATUS_PER_FRAME - 1) // STATUS_PER_FRAME

    def grow(self, nr_frames: int) -> None:
        heap = self.dom.heap
        with self.lock:
            while len(self.frames) < nr_frames:
                page = heap.alloc()
                self.frames.append(page)
                self.dom.mm.shared_rw.add(heap.gpa(page) >> 12)
            if self.version == 2:
                self._populate_status()

    def frame_mfns(self) -> list[int]:
        return [self.dom.heap.gpa(p) >> 12 for p in self.frames]

    def status_mfns(self) -> list[int]:
        return [self.dom.heap.gpa(p) >> 12 for p in self.status_frames]

    def _page_addr(self, page: int) -> int:
        return self.dom.heap.mem.addr + page * L.PAGE_SIZE

    def _entry_addr(self, ref: int) -> int:
        if self.version == 1:
            per, size = V1_PER_FRAME, V1_SIZE
        else:
            per, size = V2_PER_FRAME, V2_SIZE
        return self._page_addr(self.frames[ref // per]) + (ref % per) * size

    def _status_addr(self, ref: int) -> int:
        return self._page_addr(self.status_frames[ref // STATUS_PER_FRAME]) \
            + (ref % STATUS_PER_FRAME) * STATUS_SIZE

    def _header(self, ref: int) -> tuple[int, int]:
        """(flags, domid) of an entry, read in one go as Xen does."""
        raw = _U32.from_address(self._entry_addr(ref)).value
        return raw & 0xFFFF, raw >> 16

    # --- reading entries --------------------------------------------------------
    def read_entry(self, ref: int) -> tuple[int, int, int, int, int]:
        """(flags, domid, frame, page_off, length) of a grant entry."""
        if self.version == 1:
            flags, domid, frame = _V1.unpack(ctypes.string_at(self._entry_addr(ref), V1_SIZE))
            return flags, domid, frame, 0, L.PAGE_SIZE
        flags, domid, off, length, frame = _V2.unpack(ctypes.string_at(self._entry_addr(ref),
                                                                        V2_SIZE))
        if flags & GTF_sub_page:
            return flags, domid, frame, off, length
        return flags, domid, frame, 0, L.PAGE_SIZE

    def granted_writable(self) -> set[int]:
        """The frames the domain grants another domain write access to now
        (a backend may write them whenever it likes: a netfront's posted
        receive buffers, a blkfront's read buffers)."""
        out = set()
        for ref in range(self.nr_entries()):
            flags, _domid, frame, _off, _len = self.read_entry(ref)
            if flags & GTF_type_mask == GTF_permit_access and not flags & GTF_readonly:
                out.add(frame)
        return out

    # --- the in-use flags ---------------------------------------------------------
    def _set_status(self, ref: int, act: Active, readonly: bool, mapflag: bool,
                    ldomid: int) -> None:
        """Check the entry lets `ldomid` in and mark it reading (and writing),
        atomically against the guest (Xen's _set_status)."""
        mask = GTF_type_mask | (GTF_sub_page if mapflag else 0)
        addr = self._entry_addr(ref)
        if self.version == 1:
            raw = _U32.from_address(addr).value
            for _ in range(5):          # a guest racing us forever is refused
                flags, domid = raw & 0xFFFF, raw >> 16
                if not act.pin and ((flags & mask) != GTF_permit_access or domid != ldomid):
                    raise GrantError(GNTST_general_error, f"grant {ref}: bad flags {flags:#x} "
                                     f"or domain {domid} (expected {ldomid})")
                new = flags | GTF_reading
                if not readonly:
                    if flags & GTF_readonly:
                        raise GrantError(GNTST_general_error,
                                         f"grant {ref} is read-only: cannot pin it writable")
                    new |= GTF_writing
                prev = A.cmpxchg32(addr, raw, (raw & 0xFFFF0000) | new)
                if prev == raw:
                    return
                raw = prev
            raise GrantError(GNTST_general_error, f"grant {ref}: shared entry is unstable")

        def refused(flags: int, domid: int) -> bool:
            return (((flags & mask) != GTF_permit_access
                     and (mapflag or (flags & mask) != GTF_transitive))
                    or domid != ldomid)

        flags, domid = self._header(ref)
        if not act.pin and refused(flags, domid):
            raise GrantError(GNTST_general_error, f"grant {ref}: bad flags {flags:#x} "
                             f"or domain {domid} (expected {ldomid})")
        if not readonly and flags & GTF_readonly:
            raise GrantError(GNTST_general_error, f"grant {ref} is read-only: cannot pin it writable")
        self._set_flags(ref, GTF_reading if readonly else GTF_reading | GTF_writing)
        # the status is visible before the entry is checked again
        flags, domid = self._header(ref)
        if not act.pin:
            if refused(flags, domid) or (not readonly and flags & GTF_readonly):
                self._clear_flags(ref, GTF_reading | GTF_writing)
                raise GrantError(GNTST_general_error, f"grant {ref} changed while being pinned")
        elif flags & GTF_readonly:
            self._clear_flags(ref, GTF_writing)
            raise GrantError(GNTST_general_error, f"grant {ref} became read-only")

    def _flag_word(self, ref: int) -> tuple[int, int]:
        """(8-aligned address, bit offset) of the flags an entry's use shows in."""
        a = self._entry_addr(ref) if self.version == 1 else self._status_addr(ref)
        return a & ~7, (a & 7) * 8

    def _set_flags(self, ref: int, bits: int) -> None:
        base, shift = self._flag_word(ref)
        for b in _INUSE_BITS:
            if bits & (1 << b):
                A.set_bit(base, shift + b)

    def _clear_flags(self, ref: int, bits: int) -> None:
        if ref >= self.nr_entries():
            return                  # a reserved pin across a version change is covered
        base, shift = self._flag_word(ref)
        for b in _INUSE_BITS:
            if bits & (1 << b):
                A.clear_bit(base, shift + b)

    def _reduce_status(self, ref: int, act: Active, readonly: bool) -> None:
        """Drop the in-use flags the remaining pins no longer need."""
        bits = 0 if act.pin else GTF_reading
        if not readonly and not act.pin & GNTPIN_write_mask:
            bits |= GTF_writing
        if bits:
            self._clear_flags(ref, bits)

    # --- pinning (map and copy) ----------------------------------------------------------
    def acquire(self, ref: int, mapper: int, readonly: bool, pin_incr: int | None = None,
                mapflag: bool = True) -> tuple[int, int, int]:
        """Pin grant `ref` for domain `mapper` (Xen's map_grant_ref pinning, or
        with mapflag=False acquire_grant_for_copy, which also takes sub-page
        grants). Returns (mfn, offset, length)."""
        if pin_incr is None:
            pin_incr = GNTPIN_hstr if readonly else GNTPIN_hstw
        with self.lock:
            if ref >= self.nr_entries():
                raise GrantError(GNTST_bad_gntref, f"grant reference {ref} out of range")
            act = self.active.get(ref) or Active()
            if act.pin and (act.domid != mapper or act.pin & (pin_incr << 7)
                            or (mapflag and act.sub_page)):
                raise GrantError(GNTST_general_error, f"grant {ref} is in use by domain "
                                 f"{act.domid}, or its pin count would overflow")
            if not act.pin or (not readonly and not act.pin & GNTPIN_write_mask):
                if not mapflag and self.version == 2 \
                        and self._header(ref)[0] & GTF_type_mask == GTF_transitive:
                    self._transitive(ref, act, readonly, mapper)      # raises
                self._set_status(ref, act, readonly, mapflag, mapper)
                # a map upgrading a pinned entry to writable keeps the pinned
                # frame; a copy checks the entry still names it
                if not act.pin or not mapflag:
                    try:
                        frame, start, length, sub = self._frame_of(ref, mapflag)
                        if not self.dom.mm.owns(frame):
                            raise GrantError(GNTST_bad_page, f"grant {ref} names frame "
                                             f"{frame:#x}, not the granter's")
                        if act.pin and (frame != act.mfn or (act.sub_page and (
                                not sub or (start, length) != (act.start, act.length)))):
                            raise GrantError(GNTST_general_error,
                                             f"grant {ref} changed while in use")
                    except GrantError:
                        self._reduce_status(ref, act, readonly)
                        raise
                    if not act.pin:
                        act = Active(0, mapper, frame, start, length, sub)
            act.pin += pin_incr
            self.active[ref] = act
            return act.mfn, act.start, act.length

    def _frame_of(self, ref: int, mapflag: bool) -> tuple[int, int, int, bool]:
        """(frame, start, length, sub_page) an entry grants."""
        addr = self._entry_addr(ref)
        if self.version == 1:
            return _U32.from_address(addr + _V1_FRAME).value, 0, L.PAGE_SIZE, False
        frame = _U64.from_address(addr + _V2_FRAME).value
        flags = self._header(ref)[0]
        if not mapflag and flags & GTF_sub_page:
            off, length = _V2_SUB.unpack(ctypes.string_at(addr, _V2_SUB.size))
            return frame, off & 0x7FFF, length, True
        return frame, 0, L.PAGE_SIZE, False

    def _transitive(self, ref: int, act: Active, readonly: bool, mapper: int) -> None:
        """A v2 transitive grant (copy only): it names another domain's grant.
        pyxen reaches no other domain's table from here, and a grant naming
        its own domain is refused as in Xen; either way the copy fails."""
        self._set_status(ref, act, readonly, False, mapper)
        trans_domid, trans_gref = _V2_TRANS.unpack(ctypes.string_at(self._entry_addr(ref),
                                                                    _V2_TRANS.size))
        try:
            if trans_domid == getattr(self.dom, "domid", None):
                raise GrantError(GNTST_general_error, "transitive grants cannot be self-referential")
            if trans_domid == 0:
                DOM0_TABLE.acquire(trans_gref, getattr(self.dom, "domid", 0), readonly, mapflag=False)
            raise GrantError(GNTST_general_error,
                             f"transitive grant {ref} names domain {trans_domid}")
        except GrantError:
            self._reduce_status(ref, act, readonly)
            raise

    def release(self, ref: int, readonly: bool, pin_dec: int | None = None) -> None:
        """Give back a pin taken by acquire()."""
        if pin_dec is None:
            pin_dec = GNTPIN_hstr if readonly else GNTPIN_hstw
        with self.lock:
            act = self.active.get(ref)
            if act is None:
                return
            act.pin -= pin_dec
            self._reduce_status(ref, act, readonly)
            if not act.pin:
                del self.active[ref]

    # --- versions -------------------------------------------------------------------
    def _in_use(self, ref: int) -> bool:
        act = self.active.get(ref)
        return act is not None and act.pin != 0

    def _busy(self) -> bool:
        """Whether an entry past the reserved ones is in use. Pins held in
        this process are in `active`; a backend in pyxend's process shows its
        pins only as the in-use flags, so those count too."""
        if any(ref >= GNTTAB_NR_RESERVED_ENTRIES and act.pin for ref, act in self.active.items()):
            return True
        busy = GTF_reading | GTF_writing
        first = GNTTAB_NR_RESERVED_ENTRIES
        if self.version == 1:
            for i, page in enumerate(self.frames):
                words = memoryview(self.dom.heap.mm)[page * L.PAGE_SIZE:(page + 1) * L.PAGE_SIZE]
                flags = words.cast("H")[0::V1_SIZE // 2]          # each entry's flags
                if any(f & busy for f in flags[first if i == 0 else 0:]):
                    return True
            return False
        for i, page in enumerate(self.status_frames):
            words = memoryview(self.dom.heap.mm)[page * L.PAGE_SIZE:(page + 1) * L.PAGE_SIZE]
            if any(f & busy for f in words.cast("H")[first if i == 0 else 0:]):   # grant_status_t
                return True
        return False

    def _populate_status(self) -> None:
        heap = self.dom.heap
        need = self.status_frames_for(len(self.frames))
        while len(self.status_frames) < need:
            if self._spare_status:
                page = self._spare_status.pop()
                heap.mm[page * L.PAGE_SIZE:(page + 1) * L.PAGE_SIZE] = bytes(L.PAGE_SIZE)
            else:
                page = heap.alloc()
            self.status_frames.append(page)
            self.dom.mm.shared_rw.add(heap.gpa(page) >> 12)

    def _unpopulate_status(self) -> bool:
        """Take the status frames back from the guest: refused (False, nothing
        changed) while any page table of the guest still maps one."""
        mfns = set(self.status_mfns())
        if self._mapped(mfns):
            return False
        for mfn in mfns:
            self.dom.mm.shared_rw.discard(mfn)
        self._spare_status.extend(self.status_frames)
        self.status_frames = []
        return True

    def _mapped(self, mfns: set[int]) -> bool:
        """Whether a present entry of one of the guest's L1 tables in use maps
        one of `mfns` (each such entry is a reference on the frame in Xen)."""
        mm = self.dom.mm
        addrs = {m << 12 for m in mfns}
        ptype, tcount = mm.ptype, mm.tcount
        mfn = ptype.find(1)                 # PGT_L1
        while mfn >= 0:
            if tcount[mfn] > 0:
                for e in mm.entries(mfn):
                    if e & L.PTE_P and e & L.PTE_ADDR_MASK in addrs:
                        return True
            mfn = ptype.find(1, mfn + 1)
        return False

    def set_version(self, version: int) -> int:
        """GNTTABOP_set_version: 0 or -errno as Xen (the reserved entries are
        carried over; everything else must be unused)."""
        if version not in (1, 2):
            return -EINVAL
        if version == 2 and self.max_version < 2:
            return -ENOSYS
        if version == self.version:
            return 0
        with self.lock:
            if self._busy():
                return -EBUSY
            nres = min(GNTTAB_NR_RESERVED_ENTRIES, self.nr_entries())
            if self.version == 1:
                self._populate_status()
            else:
                for ref in range(nres):
                    flags, _domid, frame, _o, _l = self.read_entry(ref)
                    t = flags & GTF_type_mask
                    if (t == GTF_permit_access and frame >> 32) or t == GTF_transitive:
                        return -ERANGE
            reserved = []
            for ref in range(nres):
                addr = self._entry_addr(ref)
                if self.version == 1:
                    reserved.append(_V1.unpack(ctypes.string_at(addr, V1_SIZE)))
                    continue
                flags, domid = self._header(ref)
                if flags & GTF_type_mask == GTF_permit_access:
                    (status,) = _STATUS.unpack(ctypes.string_at(self._status_addr(ref),
                                                                STATUS_SIZE))
                    frame = _U64.from_address(addr + _V2_FRAME).value
                    reserved.append((flags | status, domid, frame))
                else:
                    reserved.append((0, 0, 0))
            if version == 1 and not self._unpopulate_status():
                return -EBUSY
            mm = self.dom.heap.mm
            for page in self.frames:
                mm[page * L.PAGE_SIZE:(page + 1) * L.PAGE_SIZE] = bytes(L.PAGE_SIZE)
            self.version = version
            for ref, (flags, domid, frame) in enumerate(reserved):
                addr = self._entry_addr(ref)
                if version == 1:
                    ctypes.memmove(addr, _V1.pack(flags, domid, frame & 0xFFFFFFFF), V1_SIZE)
                else:
                    inuse = flags & (GTF_reading | GTF_writing)
                    ctypes.memmove(self._status_addr(ref), _STATUS.pack(inuse), STATUS_SIZE)
                    ctypes.memmove(addr, _V2_FULL.pack(flags & ~inuse, domid, frame), V2_SIZE)
            return 0

    # --- dom0 side -------------------------------------------------------------------
    def map_ref(self, ref: int, mapper: int = 0, readonly: bool = False) -> tuple[int, memoryview]:
        """Map a granted page for a dom0 service. Returns (handle, view).
        A writable map holds a writable reference on the frame until unmap
        (Xen's map_grant_ref: get_page_type(PGT_writable_page)), so a page
        table or descriptor page is refused, and the frame cannot become
        one while dom0 may write it."""
        with self.lock:
            mfn, off, length = self.acquire(ref, mapper, readonly)
            frefs = getattr(self.dom.mm, "frefs", None)
            if not readonly and frefs is not None and not frefs.get_writable(mfn):
                self.release(ref, readonly)
                raise GrantError(GNTST_general_error, f"grant {ref}: frame {mfn:#x} is a page "
                                 "table or descriptor page, it cannot be mapped writable")
            h = self.next_handle
            self.next_handle += 1
            self.maps[h] = Mapping(h, ref, mapper, readonly, mfn)
        view = self.dom.ram.view[(mfn << 12) + off:(mfn << 12) + off + length]
        return h, view.toreadonly() if readonly else view

    def unmap(self, handle: int) -> None:
        with self.lock:
            m = self.maps.pop(handle, None)
            if m is None:
                raise GrantError(GNTST_bad_handle, f"no grant mapping with handle {handle}")
            self.release(m.ref, m.readonly)
            frefs = getattr(self.dom.mm, "frefs", None)
            if not m.readonly and frefs is not None:
                frefs.put_writable(m.mfn)
