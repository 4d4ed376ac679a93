"""The dom0 side of grant tables: a backend maps a page a guest granted it,
with the in-use flags updated atomically in the guest-visible entry."""
from __future__ import annotations

import struct

import pytest

from pyxen.hv.domain import Domain
from pyxen.hv.grant import (GrantError, GTF_permit_access, GTF_readonly, GTF_reading,
                            GTF_writing, GNTST_permission_denied, GNTST_bad_gntref)
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
    assert e.value.status == GNTST_permission_denied
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
    from pyxen.build.elf import load_kernel
    out = bytearray()
    dom = Domain(name="g0", memory_mb=16, kvm=kvm, console=out.extend)
    try:
        dom.build(load_kernel(guest_elf("grant_dom0")))
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
        dom.close()
    assert "Test result: SUCCESS" in out.decode(), out.decode()
