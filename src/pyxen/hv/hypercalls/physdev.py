"""physdev_op: the queries and settings a domU may make (Xen's arch/x86/physdev.c)."""
from __future__ import annotations

import struct

from ..abi import (HC, EFAULT, EINVAL, ENOSYS, EPERM, PHYSDEVOP_set_iopl,
                   PHYSDEVOP_set_iobitmap, PHYSDEVOP_irq_status_query, PHYSDEVOP_eoi,
                   PHYSDEVOP_map_pirq, PHYSDEVOP_unmap_pirq, PHYSDEVOP_pirq_eoi_gmfn_v1,
                   PHYSDEVOP_pirq_eoi_gmfn_v2, PHYSDEVOP_get_free_pirq, PHYSDEVOP_setup_gsi,
                   PHYSDEVOP_apic_read, PHYSDEVOP_apic_write)
from ..guestmem import GuestFault


def physdev_op(vcpu, cmd, arg, *_):
    try:
        if cmd == PHYSDEVOP_set_iopl:
            (iopl,) = struct.unpack("<I", vcpu.mem.read(arg, 4))
            if iopl > 3:
                return -EINVAL
            vcpu.pv.iopl = iopl
            vcpu.sync_fast_flags()
            return 0
        if cmd == PHYSDEVOP_set_iobitmap:
            bitmap, nr_ports = struct.unpack("<QI", vcpu.mem.read(arg, 12))
            if nr_ports > 65536:
                return -EINVAL
            vcpu.pv.iobitmap = (bitmap, nr_ports)
            return 0
        if cmd == PHYSDEVOP_irq_status_query:
            (irq,) = struct.unpack("<I", vcpu.mem.read(arg, 4))
            vcpu.mem.write(arg + 4, struct.pack("<I", 0))
            return 0 if irq < 256 else -EINVAL
        if cmd in (PHYSDEVOP_eoi, PHYSDEVOP_pirq_eoi_gmfn_v1, PHYSDEVOP_pirq_eoi_gmfn_v2):
            return -EINVAL if cmd == PHYSDEVOP_eoi else 0
        if cmd in (PHYSDEVOP_map_pirq, PHYSDEVOP_unmap_pirq, PHYSDEVOP_get_free_pirq,
                   PHYSDEVOP_setup_gsi, PHYSDEVOP_apic_read, PHYSDEVOP_apic_write):
            return -EPERM    # physical interrupts and APICs belong to dom0
    except GuestFault:
        return -EFAULT
    return -ENOSYS


HANDLERS = {HC.physdev_op: physdev_op}
