"""Two of pyxen's shortcuts around guest page tables (issue 15), on plain
memory without KVM.

The translation cache of GuestMemoryAccess: a hypercall argument read after
the guest changed its tables - an entry rewritten, a table unpinned and
written as ordinary memory, another vCPU's update - sees the new mapping,
never the cached one.

Which writes pyxen replays through the guest for KVM's shadow paging
(mm.note_write, PVVcpu.replay_pt_writes): an entry that was present is
replayed, an entry of a page table that was not present is not (KVM holds
no shadow entry for it: bench/kvm_floor pf), a plain page's is, whatever it
held."""
from __future__ import annotations


import pytest

from pyxen.hv import layout as L
from pyxen.hv import mm as M
from pyxen.hv.guestmem import GuestFault, GuestMemoryAccess

from mm_helpers import RO, RW, plain_mm, put


@pytest.fixture
def mm():
    return plain_mm()


def fill(mm, mfn, byte):
    mm.ram[mfn << 12:(mfn + 1) << 12] = bytes([byte]) * L.PAGE_SIZE


def tree(mm):
    """L4 10 -> L3 11 -> L2 12 -> L1 13: va 0 maps frame 20 (rw), va
    0x1000 frame 21 (ro); frames 20-23 hold their number in every byte."""
    for f in range(20, 24):
        fill(mm, f, f)
    put(mm, 13, 0, (20 << 12) | RW)
    put(mm, 13, 1, (21 << 12) | RO)
    put(mm, 12, 0, (13 << 12) | RW)
    put(mm, 11, 0, (12 << 12) | RW)
    put(mm, 10, 0, (11 << 12) | RW)
    mm.pin(10, 4)


def test_entry_rewritten_through_pyxen_is_seen(mm):
    tree(mm)
    mem = GuestMemoryAccess(mm, lambda: 10)
    assert mem.read(0x10, 4) == bytes([20]) * 4       # cached now
    assert mem.read(0x1008, 8) == bytes([21]) * 8
    with pytest.raises(GuestFault):
        mem.write(0x1000, b"x")                         # read-only page
    mm.update_entry((13 << 12) + 0, (22 << 12) | RW)
    assert mem.read(0x10, 4) == bytes([22]) * 4
    mm.update_entry((13 << 12) + 8, (23 << 12) | RW)    # now writable
    mem.write(0x1000, b"y")
    assert mm.ram[23 << 12] == ord("y")
    mm.update_entry((13 << 12) + 0, 0)                  # unmapped
    with pytest.raises(GuestFault):
        mem.read(0x10, 4)


def test_table_unpinned_and_rewritten_as_memory_is_seen(mm):
    """Once a table has no type the guest writes it directly (no
    write_entry): dropping the type must drop what was cached through it."""
    tree(mm)
    mem = GuestMemoryAccess(mm, lambda: 10)
    assert mem.read(0, 1) == bytes([20])
    mm.unpin(10)
    put(mm, 13, 0, (23 << 12) | RW)                     # a plain guest write
    mm.pin(10, 4)
    assert mem.read(0, 1) == bytes([23])


def test_another_vcpus_cache_follows_an_update(mm):
    tree(mm)
    a = GuestMemoryAccess(mm, lambda: 10)
    b = GuestMemoryAccess(mm, lambda: 10)
    assert a.read(0, 1) == b.read(0, 1) == bytes([20])
    mm.update_entry((13 << 12) + 0, (21 << 12) | RO)
    assert b.read(0, 1) == bytes([21])
    with pytest.raises(GuestFault):
        b.write(0, b"z")


def test_unrelated_table_writes_keep_the_cache(mm):
    """Writes to a table no cached walk used (the common case: Linux's
    text_poke, process page tables) leave the cache as it is."""
    tree(mm)
    mem = GuestMemoryAccess(mm, lambda: 10)
    mem.read(0, 1)
    gen = mm.tlb_gen
    mm.get_type(30, 1)                                  # another L1
    mm.update_entry((30 << 12) + 0, (22 << 12) | RW)
    assert mm.tlb_gen == gen
    assert mem.read(0, 1) == bytes([20])
    mm.update_entry((12 << 12) + 1 * 8, (30 << 12) | RW)   # hooked in: L2 12 changes
    assert mm.tlb_gen != gen
    assert mem.read(0x200000, 1) == bytes([22])


def tracking(mm):
    """mm remembering its writes for replay, from vCPU 0 (of 2)."""
    mm.track_writes(2)
    mm.bind_writer(0)
    return mm


def test_not_present_entries_of_tables_are_not_replayed(mm):
    tracking(mm)
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
    tracking(mm)
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
    tracking(mm)
    mm.update_entry((30 << 12) + 8, 1234)               # untyped: a plain write
    assert mm.take_writes(0) == [(30 << 12) + 8]
    mm.get_type(31, 7)                                  # writable
    mm.update_entry((31 << 12), 5)
    assert mm.take_writes(0) == [31 << 12]


def test_a_walk_that_raced_a_change_is_not_used(mm, monkeypatch):
    """Another thread changes a table while this lookup walks it, and a third
    lookup (another thread on the same vCPU's memory) catches up with the new
    generation before this one stores its result: that result is not used."""
    tree(mm)
    mem = GuestMemoryAccess(mm, lambda: 10)
    real = M.MemoryManager.walk_page
    raced = []

    def walk_then_race(self, l4, va):
        w = real(self, l4, va)
        if not raced:
            raced.append(va)
            self.update_entry((13 << 12) + 0, (22 << 12) | RW)     # the other thread
            mem.read(0x1000, 1)                                     # the third lookup
        return w

    monkeypatch.setattr(M.MemoryManager, "walk_page", walk_then_race)
    assert mem.read(0, 1) == bytes([20])        # walked before the change: that is fine
    assert mem.read(0, 1) == bytes([22])        # but not cached past it


def test_writes_check_every_page_they_touch_and_log_them_dirty(mm):
    """A write within one page and one across two go through the same
    checks: a write that reaches the read-only page faults there (as Xen's
    copy_to_guest stops), and a write that lands marks its frame in the
    dirty log (migration's)."""
    tree(mm)
    mm.dirty = bytearray(mm.nr_pages)
    mem = GuestMemoryAccess(mm, lambda: 10)
    mem.write(0x10, b"zz")
    assert mm.ram[(20 << 12) + 0x10:(20 << 12) + 0x12] == b"zz" and mm.dirty[20] == 1
    with pytest.raises(GuestFault):
        mem.write(0xFFC, b"abcdefgh")                   # into the read-only page
    with pytest.raises(GuestFault):
        mem.write(0x1FF0, b"x")                         # read-only, within one page
    assert mm.dirty[21] == 0 and mm.ram[21 << 12] == 21
