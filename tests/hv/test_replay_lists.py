"""Which page-table writes pyxen replays through the guest for KVM's shadow
paging (mm.note_write, PVVcpu.replay_pt_writes), on plain memory: an entry
that was present is replayed, an entry of a page table that was not present
is not (KVM holds no shadow entry for it: bench/kvm_floor pf), a plain page's
is, whatever it held."""
from __future__ import annotations

import logging
import struct

import pytest

from pyxen.hv import layout as L
from pyxen.hv import mm as M

NR = 64
RW = L.PTE_P | L.PTE_US | L.PTE_A | L.PTE_RW


class FakeHeap:
    shared_info_gpa = L.XEN_GPA
    directmap_l4 = {}
    l4_entry = 0

    def contains(self, gpa):
        return False


@pytest.fixture
def mm():
    ram = memoryview(bytearray(NR * L.PAGE_SIZE))
    m = M.MemoryManager(ram, NR, FakeHeap(), logging.getLogger("t"))
    m.track_writes(2)
    m.bind_writer(0)
    return m


def test_not_present_entries_of_tables_are_not_replayed(mm):
    mm.get_type(13, 1)                                  # an L1
    slot = (13 << 12) + 5 * 8
    mm.update_entry(slot, (20 << 12) | RW)              # was not present
    assert mm.take_writes(0) == []
    mm.update_entry(slot, (21 << 12) | RW)              # present -> present
    assert mm.take_writes(0) == [slot]
    mm.update_entry(slot, 0)                            # present -> cleared
    assert mm.take_writes(0) == [slot]
    mm.update_entry(slot, (22 << 12) | RW)              # cleared -> present
    assert mm.take_writes(0) == []
    assert mm.take_writes(1) == []                      # nothing for the other vCPU


def test_a_cleared_entry_set_again_before_the_replay_is_replayed_with_its_value(mm):
    mm.get_type(13, 1)
    slot = (13 << 12) + 7 * 8
    mm.update_entry(slot, (20 << 12) | RW)
    mm.update_entry(slot, 0)
    mm.update_entry(slot, (21 << 12) | RW)
    assert mm.take_writes(0) == [slot]
    assert mm.read_q(slot) == (21 << 12) | RW | L.PTE_US


def test_plain_pages_are_replayed_whatever_they_held(mm):
    """A page that is no table now may still be shadowed by KVM from when it
    was one."""
    mm.update_entry((30 << 12) + 8, 1234)               # untyped: a plain write
    assert mm.take_writes(0) == [(30 << 12) + 8]
    struct.pack_into("<Q", mm.ram, (31 << 12), 0)
    mm.get_type(31, 7)                                  # writable
    mm.update_entry((31 << 12), 5)
    assert mm.take_writes(0) == [31 << 12]
