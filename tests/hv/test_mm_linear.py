"""Linear (recursive) page tables in pyxen.hv.mm on plain memory, without
KVM: Xen 4.17's rules (read-only only, same level, a table either holds
linear entries or is mapped by them, type references held and dropped)."""
from __future__ import annotations


import pytest

from pyxen.hv import layout as L
from pyxen.hv import mm as M

from mm_helpers import RO, RW, FakeHeap, plain_mm, put


@pytest.fixture
def mm():
    return plain_mm()


def pte(mfn, flags=RO):
    return (mfn << 12) | flags


def upd(mm, mfn, idx, val):
    mm.update_entry((mfn << 12) + idx * 8, val)


def tree(mm, l4, l3, l2, l1, data):
    """A minimal L4 -> L3 -> L2 -> L1 -> data chain, pinned as an L4."""
    put(mm, l1, 0, pte(data, RW))
    put(mm, l2, 0, pte(l1, RW))
    put(mm, l3, 0, pte(l2, RW))
    put(mm, l4, 0, pte(l3, RW))
    mm.pin(l4, 4)


def refs_clear(mm):
    return not any(mm.tcount) and not any(mm.linear)


def test_self_map_takes_no_reference_and_must_be_read_only(mm):
    tree(mm, 10, 11, 12, 13, 14)
    with pytest.raises(M.PageTableError) as e:
        upd(mm, 10, 5, pte(10, RW))
    assert e.value.errno == 22 and "read-only" in str(e.value)
    upd(mm, 10, 5, pte(10))
    assert mm.tcount[10] == 1 and mm.linear[10] == 0
    assert mm.read_entry(10, 5) & L.PTE_US
    # a change of RW alone goes through full validation: refused, unchanged
    with pytest.raises(M.PageTableError):
        upd(mm, 10, 5, pte(10, RW))
    with pytest.raises(M.PageTableError):
        mm.update_entry((10 << 12) + 5 * 8, pte(10, RW | L.PTE_D), preserve_ad=True)
    assert not mm.read_entry(10, 5) & L.PTE_RW
    upd(mm, 10, 5, pte(10) | L.PTE_D)            # flags only: fine
    # the walk goes through it: slot 5 shows the L4 as a page
    va = (5 << 39) | (5 << 30) | (5 << 21) | (5 << 12)
    gpa, writable, user = mm.walk(10, va)
    assert gpa == 10 << 12 and not writable and user
    mm.unpin(10)
    assert refs_clear(mm)


def test_self_map_present_when_the_table_is_validated(mm):
    put(mm, 10, 7, pte(10))
    tree(mm, 10, 11, 12, 13, 14)
    assert mm.tcount[10] == 1 and mm.ptype[10] == M.PGT_L4
    mm.unpin(10)
    assert refs_clear(mm)
    put(mm, 20, 7, pte(20, RW))                  # writable: the table is refused
    with pytest.raises(M.PageTableError):
        mm.pin(20, 4)
    assert refs_clear(mm) and mm.ptype[20] == M.PGT_NONE


def test_linear_entry_to_another_table_holds_a_type_reference(mm):
    tree(mm, 10, 11, 12, 13, 14)
    tree(mm, 20, 21, 22, 23, 24)
    upd(mm, 10, 3, pte(20))
    assert mm.tcount[20] == 2 and mm.linear[10] == 1 and mm.linear[20] == -1
    mm.unpin(20)                                 # still held by the linear entry
    assert mm.tcount[20] == 1 and mm.ptype[20] == M.PGT_L4
    with pytest.raises(M.PageTableError):
        mm.get_type(20, M.PGT_WRITABLE)
    upd(mm, 10, 3, 0)
    assert mm.tcount[20] == 0 and mm.linear[10] == 0 and mm.linear[20] == 0
    assert mm.tcount[21] == 0                    # 20's own tree was released
    mm.get_type(20, M.PGT_WRITABLE)
    mm.put_type(20)
    mm.unpin(10)
    assert refs_clear(mm)


def test_a_table_is_used_one_way_only(mm):
    tree(mm, 10, 11, 12, 13, 14)
    tree(mm, 20, 21, 22, 23, 24)
    tree(mm, 30, 31, 32, 33, 34)
    upd(mm, 10, 3, pte(20))                      # 10 holds, 20 is mapped
    with pytest.raises(M.PageTableError):
        upd(mm, 20, 3, pte(30))                  # 20 is mapped: may not hold
    with pytest.raises(M.PageTableError):
        upd(mm, 30, 3, pte(10))                  # 10 holds: may not be mapped
    upd(mm, 30, 3, pte(20))                      # 20 mapped twice: fine
    assert mm.linear[20] == -2 and mm.tcount[20] == 3
    upd(mm, 20, 9, pte(20))                      # a self-map is not counted
    for t, i in ((10, 3), (30, 3), (20, 9)):
        upd(mm, t, i, 0)
    for t in (10, 20, 30):
        mm.unpin(t)
    assert refs_clear(mm)


def test_linear_target_must_be_a_validated_table_of_the_same_level(mm):
    tree(mm, 10, 11, 12, 13, 14)
    # an L3 entry to an L2: normal; an L3 entry to another L3: linear
    upd(mm, 11, 1, pte(12))
    put(mm, 41, 0, 0)
    mm.pin(41, 3)
    upd(mm, 11, 2, pte(41))
    assert mm.linear[11] == 1 and mm.linear[41] == -1
    # an L3 entry to an L4 or an L1: neither the level below nor its own
    for target in (10, 13):
        with pytest.raises(M.PageTableError) as e:
            upd(mm, 11, 3, pte(target))
        assert e.value.errno == 22
    # an L2 entry mapping an untyped page validates it as an L1 (the
    # normal meaning is tried first)
    upd(mm, 12, 5, pte(50))
    assert mm.ptype[50] == M.PGT_L1
    upd(mm, 12, 5, 0)
    upd(mm, 11, 2, 0)
    upd(mm, 11, 1, 0)
    mm.unpin(41)
    mm.unpin(10)
    assert refs_clear(mm)


def test_failed_validation_rolls_linear_counts_back(mm):
    tree(mm, 20, 21, 22, 23, 24)
    put(mm, 10, 1, pte(20))                      # linear to 20
    put(mm, 10, 2, pte(10))                      # self
    put(mm, 10, 3, pte(60) | (1 << 55))          # reserved bit: refused
    with pytest.raises(M.PageTableError):
        mm.pin(10, 4)
    assert mm.tcount[20] == 1 and mm.linear[20] == 0 and mm.linear[10] == 0
    put(mm, 10, 3, 0)
    mm.pin(10, 4)
    assert mm.linear[10] == 1 and mm.tcount[20] == 2
    mm.unpin(10)
    mm.unpin(20)
    assert refs_clear(mm)


def test_hypervisor_slots_stay_out_of_reach(mm):
    tree(mm, 10, 11, 12, 13, 14)
    with pytest.raises(M.PageTableError):
        upd(mm, 10, L.PYXEN_L4_SLOT, pte(10))
    assert mm.read_entry(10, L.PYXEN_L4_SLOT) == FakeHeap.l4_entry
    mm.unpin(10)
