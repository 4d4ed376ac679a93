"""memory_op: reservations, the memory map and the M2P location (Xen's
common/memory.c and arch/x86/x86_64/mm.c)."""
from __future__ import annotations

import struct

from .. import layout as L
from ..abi import (HC, XENMEM_increase_reservation, XENMEM_decrease_reservation,
                   XENMEM_populate_physmap, EFAULT, EINVAL, ENOSYS, EPERM, DOMID_SELF, XENMEM_memory_map,
                   XENMEM_current_reservation, XENMEM_maximum_reservation,
                   XENMEM_maximum_ram_page, XENMEM_machphys_mapping, XENMEM_machphys_mfn_list,
                   XENMEM_maximum_gpfn, XENMEM_get_vnumainfo, EOPNOTSUPP)
from ..guestmem import GuestFault

E820_RAM = 1


def memory_op(vcpu, cmd, arg, *_):
    dom = vcpu.domain
    mem = vcpu.mem
    cmd &= 0x3F  # Xen's MEMOP_CMD_MASK: bits 6.. carry a continuation start extent
    try:
        if cmd in (XENMEM_current_reservation, XENMEM_maximum_reservation, XENMEM_maximum_gpfn):
            (domid,) = struct.unpack("<H", mem.read(arg, 2))
            if domid not in (DOMID_SELF, dom.domid):
                return -EPERM
            if cmd == XENMEM_current_reservation:
                return dom.nr_present
            if cmd == XENMEM_maximum_reservation:
                return dom.max_pages
            return dom.nr_pages - 1
        if cmd == XENMEM_maximum_ram_page:
            return dom.nr_pages - 1
        if cmd == XENMEM_memory_map:
            nr_entries, buf = struct.unpack("<I4xQ", mem.read(arg, 16))
            if nr_entries < 1:
                return -EINVAL
            mem.write(buf, struct.pack("<QQI", 0, dom.nr_pages * L.PAGE_SIZE, E820_RAM))
            mem.write(arg, struct.pack("<I", 1))
            return 0
        if cmd == XENMEM_machphys_mapping:
            end = L.M2P_VIRT_START + dom.heap.m2p_pages * L.PAGE_SIZE
            mem.write(arg, struct.pack("<QQQ", L.M2P_VIRT_START, end, dom.nr_pages - 1))
            return 0
        if cmd == XENMEM_machphys_mfn_list:
            max_extents, extents, _nr = struct.unpack("<I4xQI", mem.read(arg, 20))
            # the M2P is mapped with 4 KiB pages: report its frames at 2 MiB steps
            chunks = (dom.heap.m2p_pages + 511) // 512
            n = min(max_extents, chunks)
            frames = [(dom.heap.gpa(dom.heap.m2p_first + i * 512)) >> 12 for i in range(n)]
            if n:
                mem.write(extents, struct.pack(f"<{n}Q", *frames))
            mem.write(arg + 16, struct.pack("<I", n))
            return 0
        if cmd in (XENMEM_increase_reservation, XENMEM_decrease_reservation,
                   XENMEM_populate_physmap):
            return _reservation(vcpu, cmd, arg)
        if cmd == XENMEM_get_vnumainfo:
            return -EOPNOTSUPP
    except GuestFault:
        return -EFAULT
    return -ENOSYS




_RESV = struct.Struct("<QQIIH")      # extent_start, nr_extents, extent_order, mem_flags, domid


def _reservation(vcpu, cmd, arg) -> int:
    """Ballooning: give frames back to the host (decrease_reservation) or get
    them again (increase_reservation / populate_physmap). Returns the number
    of extents done, like Xen."""
    dom = vcpu.domain
    mem = vcpu.mem
    start, nr, order, _flags, domid = _RESV.unpack(mem.read(arg, _RESV.size))
    if domid not in (DOMID_SELF, dom.domid):
        return -EPERM
    if order != 0:
        return -EINVAL          # superpage extents are not offered
    if nr > 1 << 20:
        return -EINVAL
    done = 0
    for i in range(nr):
        (frame,) = struct.unpack("<Q", mem.read(start + 8 * i, 8))
        if cmd == XENMEM_decrease_reservation:
            if not dom.release_frame(frame):
                break
        else:
            mfn = dom.claim_frame(frame if cmd == XENMEM_populate_physmap else None)
            if mfn is None:
                break
            mem.write(start + 8 * i, struct.pack("<Q", mfn))
        done += 1
    return done


HANDLERS = {HC.memory_op: memory_op}
