"""xen/include/public/physdev.h: physdev_op commands."""
from __future__ import annotations

from ._types import Struct, u32

_HEADER = "xen/physdev.h"

PHYSDEVOP_eoi, PHYSDEVOP_irq_status_query, PHYSDEVOP_set_iopl = 12, 5, 6
PHYSDEVOP_set_iobitmap, PHYSDEVOP_apic_read, PHYSDEVOP_apic_write = 7, 8, 9
PHYSDEVOP_map_pirq, PHYSDEVOP_unmap_pirq = 13, 14
PHYSDEVOP_pirq_eoi_gmfn_v1, PHYSDEVOP_pirq_eoi_gmfn_v2 = 17, 28
PHYSDEVOP_get_free_pirq, PHYSDEVOP_setup_gsi = 23, 21


class PhysdevSetIopl(Struct):
    _c_type_ = "struct physdev_set_iopl"
    _fields_ = [("iopl", u32)]


class PhysdevEoi(Struct):
    _c_type_ = "struct physdev_eoi"
    _fields_ = [("irq", u32)]
