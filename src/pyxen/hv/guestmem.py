"""Copying to and from a guest's virtual memory (Xen's copy_{to,from}_guest).

Addresses are translated through the page tables the vCPU runs on; a missing
mapping, a write to a read-only page, or an address in the hypervisor hole
is a fault, reported as GuestFault (the hypercall then returns -EFAULT)."""
from __future__ import annotations

import struct

from . import layout as L
from .abi import HYPERVISOR_VIRT_START, HYPERVISOR_VIRT_END


class GuestFault(Exception):
    def __init__(self, va: int, write: bool):
        super().__init__(f"guest {'write to' if write else 'read of'} {va:#x} faulted")
        self.va = va
        self.write = write


def _in_hole(va: int) -> bool:
    return HYPERVISOR_VIRT_START <= va < HYPERVISOR_VIRT_END or not L.canonical(va)


class GuestMemoryAccess:
    """Virtual-address access for one vCPU, through its current L4."""

    def __init__(self, mm, cr3_mfn_getter):
        self.mm = mm
        self._cr3 = cr3_mfn_getter
        self.ram = mm.ram
        # (L4, virtual page) -> (guest-physical page, writable, user, the
        # mm.tlb_gen its walk started under) of walks that stayed in the
        # guest's RAM (mm.walk_page). A guest changes its tables only
        # through pyxen (write_entry) or after they stop being tables
        # (put_type); both move the generation when a cached walk read the
        # table, and an entry is used only under the generation its walk
        # started in: a walk that raced a change is never used.
        self._tlb: dict[tuple[int, int], tuple[int, bool, bool, int]] = {}
        self._gen = -1

    def _page(self, l4: int, va: int) -> tuple[int, bool, bool, int] | None:
        """(guest-physical address of va's page, writable, user, the
        mm.tlb_gen its walk started under) through the tables rooted at l4,
        or None if unmapped."""
        gen = self.mm.tlb_gen
        tlb = self._tlb
        if gen != self._gen:
            tlb.clear()
            self._gen = gen
        key = (l4, va >> 12)
        t = tlb.get(key)
        if t is not None and t[3] == gen:
            return t
        w = self.mm.walk_page(l4, va)
        if w is None:
            return None
        t = (w[0], w[1], w[2], gen)
        if w[3]:
            if len(tlb) >= 1024:
                tlb.clear()
            tlb[key] = t
        return t

    def _chunks(self, va: int, n: int, write: bool):
        l4 = self._cr3()
        end = va + n
        while va < end:
            if _in_hole(va) or _in_hole(end - 1):
                raise GuestFault(va, write)
            t = self._page(l4, va)
            if t is None:
                raise GuestFault(va, write)
            gpa, rw, us, _ = t
            gpa |= va & 0xFFF
            if (write and not rw) or not us:
                raise GuestFault(va, write)
            if gpa >= self.mm.nr_pages << 12:
                heap = self.mm.heap
                mfn = gpa >> 12
                if not (mfn in self.mm.shared_rw
                        or (not write and (mfn in self.mm.shared_ro or heap.is_m2p(gpa)))):
                    raise GuestFault(va, write)
                take = min(end - va, 0x1000 - (va & 0xFFF))
                yield ("heap", gpa - L.XEN_GPA, take)
                va += take
                continue
            take = min(end - va, 0x1000 - (va & 0xFFF))
            yield ("ram", gpa, take)
            va += take

    def _ram_in_one_page(self, va: int, n: int, write: bool) -> int | None:
        """The guest-physical address of va when va..va+n-1 lies within one
        page of the guest's RAM it may access so (the common case: a
        hypercall's argument, a bounce frame); else None, and the caller
        takes _chunks, which checks and reports each page."""
        off = va & 0xFFF
        if off + n > 0x1000 or _in_hole(va):
            return None
        t = self._page(self._cr3(), va)
        if t is None or not t[2] or (write and not t[1]) or t[0] >= self.mm.nr_pages << 12:
            return None
        return t[0] | off

    def read(self, va: int, n: int) -> bytes:
        if n == 0:
            return b""
        gpa = self._ram_in_one_page(va, n, False)
        if gpa is not None:
            return bytes(self.ram[gpa:gpa + n])
        parts = []
        for where, off, take in self._chunks(va, n, False):
            buf = self.ram if where == "ram" else self.mm.heap.mm
            parts.append(bytes(buf[off:off + take]))
        return b"".join(parts)

    def write(self, va: int, data: bytes) -> None:
        n = len(data)
        gpa = self._ram_in_one_page(va, n, True) if n else None
        if gpa is not None:
            self.ram[gpa:gpa + n] = data
            self.mm.mark_dirty(gpa >> 12)           # log-dirty (migration) only
            return
        pos = 0
        for where, off, take in self._chunks(va, n, True):
            if where == "ram":
                self.ram[off:off + take] = data[pos:pos + take]
                self.mm.mark_dirty(off >> 12)
            else:
                self.mm.heap.mm[off:off + take] = data[pos:pos + take]
            pos += take

    def read_struct(self, va: int, fmt: struct.Struct) -> tuple:
        return fmt.unpack(self.read(va, fmt.size))

    def read_u64(self, va: int) -> int:
        return struct.unpack("<Q", self.read(va, 8))[0]

    def write_u64(self, va: int, value: int) -> None:
        self.write(va, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def read_cstring(self, va: int, limit: int) -> bytes:
        data = self.read(va, limit)
        return data.split(b"\0", 1)[0]
