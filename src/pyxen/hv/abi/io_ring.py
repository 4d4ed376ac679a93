"""xen/include/public/io/ring.h: the shared-ring header every split
driver's ring page starts with (DEFINE_RING_TYPES' __name##_sring)."""
from __future__ import annotations

import ctypes

from ._types import Struct, u8, u32

_HEADER = "xen/io/blkif.h"           # ring.h needs a ring type to show a layout


class SringHeader(Struct):
    """The 64 bytes before the ring entries (checked against blkif_sring)."""
    _c_type_ = "struct blkif_sring"
    _c_size_ = "offsetof(struct blkif_sring, ring)"
    _c_names_ = {"pvt": "pvt.pvt_pad"}
    _fields_ = [("req_prod", u32), ("req_event", u32), ("rsp_prod", u32), ("rsp_event", u32),
                ("pvt", u8 * 4), ("_pad", u8 * 44)]


SRING_HEADER_SIZE = ctypes.sizeof(SringHeader)


def ring_entries(entry_size: int, page_size: int = 4096) -> int:
    """__RD32: the largest power of two of entries that fits the page after the header."""
    n = (page_size - SRING_HEADER_SIZE) // entry_size
    return 1 << (n.bit_length() - 1) if n else 0
