"""xen/include/public/io/blkif.h: block ring requests and responses."""
from __future__ import annotations

from ._types import Struct, Union, u8, u16, u32, u64, i16, grant_ref_t

_HEADER = "xen/io/blkif.h"

BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER = 0, 1, 2
BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT = 3, 5, 6
BLKIF_MAX_SEGMENTS_PER_REQUEST = 11
BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8
BLKIF_DISCARD_SECURE = 1
BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY = -2, -1, 0
blkif_vdev_t, blkif_sector_t = u16, u64


class BlkifRequestSegment(Struct):
    _c_type_ = "struct blkif_request_segment"
    _fields_ = [("gref", grant_ref_t), ("first_sect", u8), ("last_sect", u8), ("_pad", u16)]


class BlkifRequest(Struct):
    _c_type_ = "struct blkif_request"
    _fields_ = [("operation", u8), ("nr_segments", u8), ("handle", blkif_vdev_t),
                ("_pad", u32), ("id", u64), ("sector_number", blkif_sector_t),
                ("seg", BlkifRequestSegment * BLKIF_MAX_SEGMENTS_PER_REQUEST)]


class BlkifRequestDiscard(Struct):
    _c_type_ = "struct blkif_request_discard"
    _fields_ = [("operation", u8), ("flag", u8), ("handle", blkif_vdev_t), ("_pad", u32),
                ("id", u64), ("sector_number", blkif_sector_t), ("nr_sectors", u64)]


class BlkifRequestIndirect(Struct):
    _c_type_ = "struct blkif_request_indirect"
    _fields_ = [("operation", u8), ("indirect_op", u8), ("nr_segments", u16), ("_pad0", u32),
                ("id", u64), ("sector_number", blkif_sector_t), ("handle", blkif_vdev_t),
                ("_pad1", u16),
                ("indirect_grefs", grant_ref_t * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST),
                ("_pad2", u32)]


class BlkifResponse(Struct):
    _c_type_ = "struct blkif_response"
    _fields_ = [("id", u64), ("operation", u8), ("_pad0", u8), ("status", i16), ("_pad1", u32)]


class BlkifSringEntry(Union):
    _c_type_ = "union blkif_sring_entry"
    _fields_ = [("req", BlkifRequest), ("rsp", BlkifResponse)]
