"""abi.checked_struct: a struct format is accepted only if it unpacks the
named fields of the ctypes structure at their offsets, sizes and signedness;
and the formats pyxen's grant table, memory_op and xenstore use are Xen's."""
from __future__ import annotations

import pytest

from pyxen.hv import abi


def test_matching_formats_are_accepted():
    s = abi.checked_struct("<HHI", abi.GrantEntryV1, "flags domid frame")
    assert s.size == 8
    assert abi.checked_struct("<4xH2xI", abi.GrantEntryV2Transitive, "trans_domid gref").size == 12
    assert abi.checked_struct("<HHHHQ", abi.GrantEntryV2SubPage,
                              "hdr.flags hdr.domid page_off length frame").size == 16
    assert abi.checked_struct("<QQ6Q", abi.MulticallEntry, "op result args").size == 64


@pytest.mark.parametrize("fmt, names", [
    ("<HHH", "flags domid frame"),         # frame is a u32
    ("<HhI", "flags domid frame"),         # domid is unsigned
    ("<HH", "flags domid frame"),          # too few items
    ("<HxxI", "flags domid frame"),        # domid skipped
    ("<IHH", "frame flags domid"),         # out of order
    ("=HHI", "flags domid frame"),         # not '<'
])
def test_mismatches_are_refused(fmt, names):
    with pytest.raises(ValueError):
        abi.checked_struct(fmt, abi.GrantEntryV1, names)


def test_unknown_field_is_refused():
    with pytest.raises(ValueError):
        abi.checked_struct("<H", abi.GrantEntryV1, "nope")


def test_users_take_their_layouts_from_abi():
    from pyxen.dom0.xenstore import protocol
    from pyxen.hv import grant
    from pyxen.hv.hypercalls import memory
    assert protocol.HEADER_SIZE == 16 and protocol.PAYLOAD_MAX == abi.XENSTORE_PAYLOAD_MAX
    assert protocol.XS_DIRECTORY_PART == abi.XS_DIRECTORY_PART == 22
    assert (grant.V1_PER_FRAME, grant.V2_PER_FRAME, grant.STATUS_PER_FRAME) == (512, 256, 2048)
    assert grant.GNTTAB_NR_RESERVED_ENTRIES == 8 and grant._INUSE_BITS == (3, 4)
    assert (memory._RESV.size, memory._MFN_LIST.size, memory._MFN_LIST_NR) == (26, 20, 16)
