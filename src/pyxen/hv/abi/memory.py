"""xen/include/public/memory.h: memory_op."""
from __future__ import annotations

from ._types import Struct, u32, xen_ulong_t, domid_t, handle

_HEADER = "xen/memory.h"

XENMEM_increase_reservation, XENMEM_decrease_reservation = 0, 1
XENMEM_maximum_ram_page, XENMEM_current_reservation = 2, 3
XENMEM_maximum_reservation, XENMEM_machphys_mfn_list = 4, 5
XENMEM_populate_physmap, XENMEM_add_to_physmap = 6, 7
XENMEM_memory_map, XENMEM_machine_memory_map = 9, 10
XENMEM_exchange, XENMEM_machphys_mapping = 11, 12
XENMEM_set_memory_map, XENMEM_maximum_gpfn = 13, 14
XENMEM_remove_from_physmap = 15
XENMEM_get_vnumainfo = 26


class XenMemoryReservation(Struct):
    _c_type_ = "struct xen_memory_reservation"
    _fields_ = [("extent_start", handle), ("nr_extents", xen_ulong_t), ("extent_order", u32),
                ("mem_flags", u32), ("domid", domid_t), ("_pad", domid_t * 3)]


class XenMemoryMap(Struct):
    _c_type_ = "struct xen_memory_map"
    _fields_ = [("nr_entries", u32), ("_pad", u32), ("buffer", handle)]


class XenMachphysMapping(Struct):
    _c_type_ = "struct xen_machphys_mapping"
    _fields_ = [("v_start", xen_ulong_t), ("v_end", xen_ulong_t), ("max_mfn", xen_ulong_t)]


class XenMachphysMfnList(Struct):
    _c_type_ = "struct xen_machphys_mfn_list"
    _fields_ = [("max_extents", u32), ("_pad0", u32), ("extent_start", handle),
                ("nr_extents", u32), ("_pad1", u32)]
