"""The dom0 side of grant tables: a backend maps a page a guest granted it,
with the in-use flags updated atomically in the guest-visible entry."""
from __future__ import annotations

import struct

import pytest

from pyxen.hv.domain import Domain
from pyxen.hv.grant import (GrantError, GTF_permit_access, GTF_readonly, GTF_reading,
                            GTF_writing, GNTST_general_error, GNTST_bad_gntref)
from pyxen.hv import layout as L


@pytest.fixture
def dom(kvm):
    d = Domain(name="g", memory_mb=16, kvm=kvm)
    d.grants.grow(1)
    yield d
    d.close()


def grant(dom, ref, flags, domid, frame):
    gt = dom.grants
    off = gt.frames[0] * L.PAGE_SIZE + ref * 8
    struct.pack_into("<HHI", dom.heap.mm, off, flags, domid, frame)
    return off


def flags_of(dom, off):
    return struct.unpack_from("<H", dom.heap.mm, off)[0]


def test_backend_maps_granted_page_and_flags_track_use(dom):
    dom.ram.mm[0x5000:0x5004] = b"ring"
    off = grant(dom, 3, GTF_permit_access, 0, 5)
    h, view = dom.grants.map_ref(3, mapper=0)
    assert bytes(view[:4]) == b"ring"
    assert flags_of(dom, off) == GTF_permit_access | GTF_reading | GTF_writing
    view[4:8] = b"back"
    assert dom.ram.mm[0x5004:0x5008] == b"back"
    dom.grants.unmap(h)
    assert flags_of(dom, off) == GTF_permit_access


def test_readonly_grants_and_wrong_mapper_are_refused(dom):
    grant(dom, 4, GTF_permit_access | GTF_readonly, 0, 6)
    with pytest.raises(GrantError) as e:
        dom.grants.map_ref(4, mapper=0, readonly=False)
    assert e.value.status == GNTST_general_error          # as Xen: a r/o entry cannot be write-pinned
    h, view = dom.grants.map_ref(4, mapper=0, readonly=True)
    assert view.readonly
    dom.grants.unmap(h)
    grant(dom, 5, GTF_permit_access, 7, 6)
    with pytest.raises(GrantError):
        dom.grants.map_ref(5, mapper=0)
    with pytest.raises(GrantError) as e:
        dom.grants.map_ref(10_000, mapper=0)
    assert e.value.status == GNTST_bad_gntref


def test_grant_of_a_frame_the_guest_does_not_own(dom):
    grant(dom, 6, GTF_permit_access, 0, dom.nr_pages + 100)
    with pytest.raises(GrantError):
        dom.grants.map_ref(6, mapper=0)


def test_two_readers_keep_reading_until_the_last_unmaps(dom):
    off = grant(dom, 7, GTF_permit_access, 0, 8)
    h1, _ = dom.grants.map_ref(7, readonly=True)
    h2, _ = dom.grants.map_ref(7, readonly=True)
    dom.grants.unmap(h1)
    assert flags_of(dom, off) & GTF_reading
    dom.grants.unmap(h2)
    assert flags_of(dom, off) == GTF_permit_access


def test_running_guest_grants_a_page_that_dom0_maps(kvm, guest_elf):
    """A live guest grants a page to dom0; the dom0 side maps it, reads the
    guest's data, writes back, unmaps; the guest sees it all."""
    import threading
    import time
    import guest_helpers
    from pyxen.toolstack.builder import close_domain
    dom, out = guest_helpers.build(kvm, guest_elf("grant_dom0"), name="g0", memory_mb=16)
    try:
        t = threading.Thread(target=dom.run)
        t.start()
        end = time.monotonic() + 20
        while b"granted ref=12" not in out and time.monotonic() < end:
            time.sleep(0.05)
        h, view = dom.grants.map_ref(12, mapper=0)
        assert bytes(view[:10]) == b"guest data"
        view[:13] = b"dom0 was here"
        dom.grants.unmap(h)
        t.join(30)
    finally:
        close_domain(dom)
    assert "Test result: SUCCESS" in out.text, out.text


def test_a_pinned_entry_keeps_its_frame(dom):
    """Once in use, the entry is the active entry's: a guest rewriting the
    shared entry does not change what a second mapping gets (as Xen)."""
    dom.ram.mm[0x5000:0x5004] = b"five"
    dom.ram.mm[0x6000:0x6004] = b"six!"
    off = grant(dom, 9, GTF_permit_access, 0, 5)
    h1, _ = dom.grants.map_ref(9, mapper=0)
    struct.pack_into("<HHI", dom.heap.mm, off, GTF_permit_access | GTF_reading | GTF_writing, 0, 6)
    h2, view = dom.grants.map_ref(9, mapper=0)
    assert bytes(view[:4]) == b"five"
    dom.grants.unmap(h1)
    dom.grants.unmap(h2)
    assert flags_of(dom, off) == GTF_permit_access


def test_set_version_keeps_reserved_entries_and_refuses_while_in_use(dom):
    gt = dom.grants
    grant(dom, 1, GTF_permit_access, 0, 5)           # a toolstack-reserved entry
    grant(dom, 20, GTF_permit_access, 0, 6)
    h, _ = gt.map_ref(20, mapper=0)
    assert gt.set_version(2) == -16                   # -EBUSY: entry 20 is mapped
    gt.unmap(h)
    hr, _ = gt.map_ref(1, mapper=0)                   # reserved entries may stay in use
    assert gt.set_version(2) == 0 and gt.version == 2
    assert len(gt.status_frames) == 1
    flags, domid, frame, _, _ = gt.read_entry(1)
    assert (flags, domid, frame) == (GTF_permit_access, 0, 5)
    assert gt.read_entry(20)[0] == 0                  # the rest is cleared
    status = struct.unpack_from("<H", dom.heap.mm, gt.status_frames[0] * L.PAGE_SIZE + 2)[0]
    assert status == GTF_reading | GTF_writing        # the in-use bits moved to the status frame
    gt.unmap(hr)
    assert gt.set_version(1) == 0
    assert gt.read_entry(1)[:3] == (GTF_permit_access, 0, 5)
    assert gt.status_frames == []
    assert gt.set_version(3) == -22


def test_in_use_bits_of_a_backend_in_another_process_count(dom):
    """pyxend's backends pin in their own process: the domain sees their
    mappings as the in-use bits, and does not change version under them."""
    gt = dom.grants
    grant(dom, 30, GTF_permit_access | GTF_reading, 0, 5)
    assert gt.set_version(2) == -16
    grant(dom, 30, GTF_permit_access, 0, 5)
    assert gt.set_version(2) == 0
