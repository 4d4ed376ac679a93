"""A pyxen.hv.mm.MemoryManager on plain memory, without KVM or a real
xenheap: what the page-table unit tests build on."""
from __future__ import annotations

import logging
import struct

from pyxen.hv import layout as L
from pyxen.hv import mm as M

NR = 64                                 # guest frames
RO = L.PTE_P | L.PTE_US | L.PTE_A
RW = RO | L.PTE_RW


class FakeHeap:
    shared_info_gpa = L.XEN_GPA
    directmap_l4 = {258: 0x123000 | L.PTE_P}
    l4_entry = 0x456000 | L.PTE_P | L.PTE_US
    l4_entry_user = 0x457000 | L.PTE_P | L.PTE_US

    def contains(self, gpa):
        return False


def plain_mm(nr: int = NR) -> M.MemoryManager:
    ram = memoryview(bytearray(nr * L.PAGE_SIZE))
    return M.MemoryManager(ram, nr, FakeHeap(), logging.getLogger("t"))


def put(mm, mfn, idx, val):
    """Write an entry behind pyxen's back (as the guest writes a frame that
    is no page table)."""
    struct.pack_into("<Q", mm.ram, mfn * L.PAGE_SIZE + idx * 8, val)
