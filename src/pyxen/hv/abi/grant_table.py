"""xen/include/public/grant_table.h: grant entries and grant_table_op."""
from __future__ import annotations

from ._types import Struct, u16, u32, u64, i16, domid_t, grant_ref_t, grant_handle_t, handle

_HEADER = "xen/grant_table.h"

GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref, GNTTABOP_setup_table = 0, 1, 2
GNTTABOP_dump_table, GNTTABOP_transfer, GNTTABOP_copy, GNTTABOP_query_size = 3, 4, 5, 6
GNTTABOP_unmap_and_replace, GNTTABOP_set_version, GNTTABOP_get_status_frames = 7, 8, 9
GNTTABOP_get_version, GNTTABOP_swap_grant_ref, GNTTABOP_cache_flush = 10, 11, 12
GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly = 1, 2, 4
GNTMAP_application_map, GNTMAP_contains_pte = 8, 16
GNTMAP_guest_avail0 = 16         # flags bits 16.. go to the PTE's available bits
GNTCOPY_source_gref, GNTCOPY_dest_gref = 1, 2
GNTTAB_CACHE_CLEAN, GNTTAB_CACHE_INVAL, GNTTAB_CACHE_SOURCE_GREF = 1, 2, 1 << 31
GNTTAB_NR_RESERVED_ENTRIES = 8   # kept across set_version (toolstack grants)

# grant entry flags (the in-use bits GTF_reading/writing are in the status
# word at v2)
GTF_invalid, GTF_permit_access, GTF_accept_transfer, GTF_transitive = 0, 1, 2, 3
GTF_type_mask = 3
GTF_readonly, GTF_reading, GTF_writing, GTF_sub_page = 1 << 2, 1 << 3, 1 << 4, 1 << 8
GTF_PWT, GTF_PCD, GTF_PAT = 1 << 5, 1 << 6, 1 << 7
GTF_transfer_committed, GTF_transfer_completed = 1 << 2, 1 << 3

# grant_table_op status codes
GNTST_okay, GNTST_general_error, GNTST_bad_domain, GNTST_bad_gntref = 0, -1, -2, -3
GNTST_bad_handle, GNTST_bad_virt_addr, GNTST_bad_dev_addr = -4, -5, -6
GNTST_no_device_space, GNTST_permission_denied, GNTST_bad_page = -7, -8, -9
GNTST_bad_copy_arg, GNTST_address_too_big, GNTST_eagain, GNTST_no_space = -10, -11, -12, -13


class GrantEntryV1(Struct):
    _c_type_ = "struct grant_entry_v1"
    _fields_ = [("flags", u16), ("domid", domid_t), ("frame", u32)]


class GrantEntryHeader(Struct):
    _c_type_ = "struct grant_entry_header"
    _fields_ = [("flags", u16), ("domid", domid_t)]


class GrantEntryV2FullPage(Struct):
    _c_type_ = "union grant_entry_v2"        # the full_page arm
    _c_names_ = {"hdr": "full_page.hdr", "frame": "full_page.frame"}
    _fields_ = [("hdr", GrantEntryHeader), ("_pad0", u32), ("frame", u64)]


class GrantEntryV2SubPage(Struct):
    _c_type_ = "union grant_entry_v2"        # the sub_page arm
    _c_names_ = {"hdr": "sub_page.hdr", "page_off": "sub_page.page_off",
                 "length": "sub_page.length", "frame": "sub_page.frame"}
    _fields_ = [("hdr", GrantEntryHeader), ("page_off", u16), ("length", u16), ("frame", u64)]


class GrantEntryV2Transitive(Struct):
    _c_type_ = "union grant_entry_v2"        # the transitive arm (16 bytes with the spacer)
    _c_names_ = {"hdr": "transitive.hdr", "trans_domid": "transitive.trans_domid",
                 "gref": "transitive.gref"}
    _fields_ = [("hdr", GrantEntryHeader), ("trans_domid", domid_t), ("_pad0", u16),
                ("gref", grant_ref_t), ("_spacer", u32)]


class GnttabMapGrantRef(Struct):
    _c_type_ = "struct gnttab_map_grant_ref"
    _fields_ = [("host_addr", u64), ("flags", u32), ("ref", grant_ref_t), ("dom", domid_t),
                ("status", i16), ("handle", grant_handle_t), ("dev_bus_addr", u64)]


class GnttabUnmapGrantRef(Struct):
    _c_type_ = "struct gnttab_unmap_grant_ref"
    _fields_ = [("host_addr", u64), ("dev_bus_addr", u64), ("handle", grant_handle_t),
                ("status", i16), ("_pad", u16)]


class GnttabUnmapAndReplace(Struct):
    _c_type_ = "struct gnttab_unmap_and_replace"
    _fields_ = [("host_addr", u64), ("new_addr", u64), ("handle", grant_handle_t),
                ("status", i16), ("_pad", u16)]


class GnttabSetupTable(Struct):
    _c_type_ = "struct gnttab_setup_table"
    _fields_ = [("dom", domid_t), ("_pad0", u16), ("nr_frames", u32), ("status", i16),
                ("_pad1", u16 * 3), ("frame_list", handle)]


class GnttabQuerySize(Struct):
    _c_type_ = "struct gnttab_query_size"
    _fields_ = [("dom", domid_t), ("_pad0", u16), ("nr_frames", u32), ("max_nr_frames", u32),
                ("status", i16), ("_pad1", u16)]


class GnttabGetStatusFrames(Struct):
    _c_type_ = "struct gnttab_get_status_frames"
    _fields_ = [("nr_frames", u32), ("dom", domid_t), ("status", i16), ("frame_list", handle)]


class GnttabSetVersion(Struct):
    _c_type_ = "struct gnttab_set_version"
    _fields_ = [("version", u32)]


class GnttabGetVersion(Struct):
    _c_type_ = "struct gnttab_get_version"
    _fields_ = [("dom", domid_t), ("pad", u16), ("version", u32)]


class GnttabSwapGrantRef(Struct):
    _c_type_ = "struct gnttab_swap_grant_ref"
    _fields_ = [("ref_a", grant_ref_t), ("ref_b", grant_ref_t), ("status", i16), ("_pad", u16)]


class GnttabCopyPtr(Struct):
    _c_type_ = "struct gnttab_copy_ptr"
    _c_names_ = {"u": "u.gmfn"}
    _fields_ = [("u", u64), ("domid", domid_t), ("offset", u16), ("_pad", u32)]


class GnttabCopy(Struct):
    _c_type_ = "struct gnttab_copy"
    _fields_ = [("source", GnttabCopyPtr), ("dest", GnttabCopyPtr), ("len", u16),
                ("flags", u16), ("status", i16), ("_pad", u16)]


class GnttabCacheFlush(Struct):
    _c_type_ = "struct gnttab_cache_flush"
    _c_names_ = {"a": "a.dev_bus_addr"}
    _fields_ = [("a", u64), ("offset", u16), ("length", u16), ("op", u32)]
