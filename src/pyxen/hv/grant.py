"""Grant tables, v1 and v2 (Xen's common/grant_table.c).

The shared entries live in pyxen's heap (frames the guest maps through the
list setup_table returns). GTF_reading / GTF_writing are set and cleared
with real compare-and-swap on the shared memory, because the granting
guest's vCPUs may be revoking the same entry at that moment.

`map_ref()` / `unmap()` are the dom0 side: a backend service maps a page a
guest granted to it. `GrantTable` works on the domain's memory only, so
another process holding the domain's memfds can do the same.
"""
from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

from .. import _atomic as A
from . import layout as L

GTF_permit_access, GTF_accept_transfer, GTF_transitive, GTF_type_mask = 1, 2, 3, 3
GTF_readonly, GTF_reading, GTF_writing, GTF_sub_page = 1 << 2, 1 << 3, 1 << 4, 1 << 8
GNTST_okay, GNTST_general_error, GNTST_bad_domain, GNTST_bad_gntref = 0, -1, -2, -3
GNTST_bad_handle, GNTST_bad_virt_addr, GNTST_permission_denied = -4, -5, -8
GNTST_bad_page, GNTST_bad_copy_arg = -9, -10
MAX_FRAMES = 64
MAX_STATUS_FRAMES = (MAX_FRAMES * 256 * 2 + 4095) // 4096


class GrantError(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status = status


@dataclass
class Mapping:
    handle: int
    ref: int
    mapper: int
    readonly: bool
    mfn: int
    va: int = 0          # guest virtual address when mapped into the guest itself


class GrantTable:
    def __init__(self, domain):
        self.dom = domain
        self.version = 1
        self.frames: list[int] = []          # heap page indexes of the shared frames
        self.status_frames: list[int] = []   # v2 only
        self.lock = threading.Lock()
        self.maps: dict[int, Mapping] = {}
        self.next_handle = 1
        self.pins: dict[int, list[int]] = {} # ref -> [readers, writers]

    # --- table geometry ----------------------------------------------------------
    def per_frame(self) -> int:
        return 512 if self.version == 1 else 256

    def nr_entries(self) -> int:
        return len(self.frames) * self.per_frame()

    def grow(self, nr_frames: int) -> None:
        heap = self.dom.heap
        while len(self.frames) < nr_frames:
            page = heap.alloc()
            self.frames.append(page)
            self.dom.mm.shared_rw.add(heap.gpa(page) >> 12)
        if self.version == 2:
            need = (self.nr_entries() * 2 + 4095) // 4096
            while len(self.status_frames) < need:
                page = heap.alloc()
                self.status_frames.append(page)
                self.dom.mm.shared_ro.add(heap.gpa(page) >> 12)

    def frame_mfns(self) -> list[int]:
        return [self.dom.heap.gpa(p) >> 12 for p in self.frames]

    def status_mfns(self) -> list[int]:
        return [self.dom.heap.gpa(p) >> 12 for p in self.status_frames]

    def _entry_addr(self, ref: int) -> int:
        size = 8 if self.version == 1 else 16
        page = self.frames[ref // self.per_frame()]
        return self.dom.heap.mem.addr + page * L.PAGE_SIZE + (ref % self.per_frame()) * size

    def _status_addr(self, ref: int) -> int:
        page = self.status_frames[ref // 2048]
        return self.dom.heap.mem.addr + page * L.PAGE_SIZE + (ref % 2048) * 2

    def set_version(self, version: int) -> None:
        if version not in (1, 2):
            raise GrantError(-22, "grant table version must be 1 or 2")
        if version == self.version:
            return
        if self.maps or any(r or w for r, w in self.pins.values()):
            raise GrantError(-16, "grants are in use")
        nr = len(self.frames)
        for p in self.frames:
            self.dom.heap.mm[p * L.PAGE_SIZE:(p + 1) * L.PAGE_SIZE] = bytes(L.PAGE_SIZE)
        self.version = version
        self.grow(nr)

    # --- reading entries --------------------------------------------------------
    def read_entry(self, ref: int) -> tuple[int, int, int, int, int]:
        """(flags, domid, frame, page_off, length) of a grant entry."""
        import ctypes
        raw = ctypes.string_at(self._entry_addr(ref), 8 if self.version == 1 else 16)
        if self.version == 1:
            flags, domid, frame = struct.unpack("<HHI", raw)
            return flags, domid, frame, 0, L.PAGE_SIZE
        flags, domid, off, length, frame = struct.unpack("<HHHHQ", raw)
        if flags & GTF_sub_page:
            return flags, domid, frame, off, length
        return flags, domid, frame, 0, L.PAGE_SIZE

    # --- acquiring and releasing (the flag protocol) ---------------------------------
    def acquire(self, ref: int, mapper: int, readonly: bool) -> tuple[int, int, int]:
        """Check the entry grants `mapper` access and mark it in use (reading /
        writing), atomically against the guest. Returns (mfn, offset, length)."""
        if ref >= self.nr_entries():
            raise GrantError(GNTST_bad_gntref, f"grant reference {ref} out of range")
        flags, domid, frame, off, length = self.read_entry(ref)
        if flags & GTF_type_mask != GTF_permit_access:
            raise GrantError(GNTST_general_error, f"grant {ref} is not a permit-access grant")
        if domid != mapper:
            raise GrantError(GNTST_permission_denied, f"grant {ref} is for domain {domid}, not {mapper}")
        if not readonly and flags & GTF_readonly:
            raise GrantError(GNTST_permission_denied, f"grant {ref} is read-only")
        if not self.dom.mm.owns(frame):
            raise GrantError(GNTST_bad_page, f"grant {ref} names frame {frame:#x}, not the granter's")
        if off + length > L.PAGE_SIZE:
            raise GrantError(GNTST_general_error, f"grant {ref}: bad sub-page")
        inuse = GTF_reading if readonly else GTF_writing | GTF_reading
        if self.version == 1:
            addr = self._entry_addr(ref)
            while True:
                cur = A.cmpxchg16(addr, flags, flags | inuse)
                if cur == flags:
                    break
                # the guest changed the flags under us: re-check them
                if cur & GTF_type_mask != GTF_permit_access or (not readonly and cur & GTF_readonly):
                    raise GrantError(GNTST_general_error, f"grant {ref} revoked while mapping")
                flags = cur
        else:
            sa = self._status_addr(ref)
            A.set_bit(sa & ~7, (sa & 7) * 8 + (3 if readonly else 4))
            if not readonly:
                A.set_bit(sa & ~7, (sa & 7) * 8 + 3)
            # re-check the entry after publishing our use (Xen's v2 ordering)
            f2, d2, fr2, _, _ = self.read_entry(ref)
            if f2 & GTF_type_mask != GTF_permit_access or d2 != mapper or fr2 != frame:
                self._clear(ref, not readonly, True)
                raise GrantError(GNTST_general_error, f"grant {ref} revoked while mapping")
        pin = self.pins.setdefault(ref, [0, 0])
        pin[0 if readonly else 1] += 1
        return frame, off, length

    def release(self, ref: int, readonly: bool) -> None:
        pin = self.pins.get(ref)
        if pin is None:
            return
        pin[0 if readonly else 1] -= 1
        clear_w = pin[1] == 0 and not readonly
        clear_r = pin[0] == 0 and pin[1] == 0
        if pin == [0, 0]:
            del self.pins[ref]
        self._clear(ref, clear_w, clear_r)

    def _clear(self, ref: int, writing: bool, reading: bool) -> None:
        if self.version == 1:
            addr = self._entry_addr(ref)
            base, shift = addr & ~7, (addr & 7) * 8
            if writing:
                A.clear_bit(base, shift + 4)
            if reading:
                A.clear_bit(base, shift + 3)
        else:
            sa = self._status_addr(ref)
            if writing:
                A.clear_bit(sa & ~7, (sa & 7) * 8 + 4)
            if reading:
                A.clear_bit(sa & ~7, (sa & 7) * 8 + 3)

    # --- dom0 side -------------------------------------------------------------------
    def map_ref(self, ref: int, mapper: int = 0, readonly: bool = False) -> tuple[int, memoryview]:
        """Map a granted page for a dom0 service. Returns (handle, view)."""
        with self.lock:
            mfn, off, length = self.acquire(ref, mapper, readonly)
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
