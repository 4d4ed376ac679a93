"""memory_op: reservations, the memory map and the M2P location (Xen's
common/memory.c and arch/x86/x86_64/mm.c)."""
from __future__ import annotations

import ctypes
import struct

from .. import abi
from .. import layout as L
from ..abi import (HC, XENMEM_increase_reservation, XENMEM_decrease_reservation,
                   XENMEM_populate_physmap, EFAULT, EINVAL, ENOSYS, EPERM, DOMID_SELF, XENMEM_memory_map,
                   XENMEM_current_reservation, XENMEM_maximum_reservation,
                   XENMEM_maximum_ram_page, XENMEM_machphys_mapping, XENMEM_machphys_mfn_list,
                   XENMEM_maximum_gpfn, XENMEM_get_vnumainfo, EOPNOTSUPP)
from ..guestmem import GuestFault

MEMOP_CMD_MASK = 0x3F  # Xen's (xen/hypercall.h): bits 6.. carry a continuation start extent
E820_RAM = 1
_E820 = struct.Struct("<QQI")   # Xen's packed struct e820entry (addr, size, type): not public
_DOMID = struct.Struct("<H")    # current/maximum_reservation, maximum_gpfn: a domid_t
_PFN = struct.Struct("<Q")      # an xen_pfn_t of an extent list
_MEMMAP = abi.checked_struct("<I4xQ", abi.XenMemoryMap, "nr_entries buffer")
_MEMMAP_NR = abi.checked_struct("<I", abi.XenMemoryMap, "nr_entries")
_MACHPHYS = abi.checked_struct("<QQQ", abi.XenMachphysMapping, "v_start v_end max_mfn")
# read up to the end of nr_extents (20 bytes: the tail padding is not read)
_MFN_LIST = abi.checked_struct("<I4xQI", abi.XenMachphysMfnList,
                               "max_extents extent_start nr_extents")
_MFN_LIST_NR = abi.XenMachphysMfnList.nr_extents.offset
_U32 = struct.Struct("<I")
_RESV = abi.checked_struct("<QQIIH", abi.XenMemoryReservation,       # up to its tail padding
                           "extent_start nr_extents extent_order mem_flags domid")
assert (_DOMID.size, _PFN.size) == (ctypes.sizeof(abi.domid_t), ctypes.sizeof(abi.xen_pfn_t))
assert abi.XenMachphysMfnList.nr_extents.size == _U32.size


def memory_op(vcpu, cmd, arg, *_):
    dom = vcpu.domain
    mem = vcpu.mem
    cmd &= MEMOP_CMD_MASK
    try:
        if cmd in (XENMEM_current_reservation, XENMEM_maximum_reservation, XENMEM_maximum_gpfn):
            (domid,) = _DOMID.unpack(mem.read(arg, _DOMID.size))
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
            nr_entries, buf = _MEMMAP.unpack(mem.read(arg, _MEMMAP.size))
            if nr_entries < 1:
                return -EINVAL
            mem.write(buf, _E820.pack(0, dom.nr_pages * L.PAGE_SIZE, E820_RAM))
            mem.write(arg, _MEMMAP_NR.pack(1))
            return 0
        if cmd == XENMEM_machphys_mapping:
            end = L.M2P_VIRT_START + dom.heap.m2p_pages * L.PAGE_SIZE
            mem.write(arg, _MACHPHYS.pack(L.M2P_VIRT_START, end, dom.nr_pages - 1))
            return 0
        if cmd == XENMEM_machphys_mfn_list:
            max_extents, extents, _nr = _MFN_LIST.unpack(mem.read(arg, _MFN_LIST.size))
            # the M2P is mapped with 4 KiB pages: report its frames at 2 MiB steps
            chunks = (dom.heap.m2p_pages + 511) // 512
            n = min(max_extents, chunks)
            frames = [(dom.heap.gpa(dom.heap.m2p_first + i * 512)) >> 12 for i in range(n)]
            if n:
                mem.write(extents, struct.pack(f"<{n}Q", *frames))      # xen_pfn_t[n]
            mem.write(arg + _MFN_LIST_NR, _U32.pack(n))
            return 0
        if cmd in (XENMEM_increase_reservation, XENMEM_decrease_reservation,
                   XENMEM_populate_physmap):
            return _reservation(vcpu, cmd, arg)
        if cmd == XENMEM_get_vnumainfo:
            return -EOPNOTSUPP
    except GuestFault:
        return -EFAULT
    return -ENOSYS


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
        (frame,) = _PFN.unpack(mem.read(start + _PFN.size * i, _PFN.size))
        if cmd == XENMEM_decrease_reservation:
            if not dom.release_frame(frame):
                break
        else:
            mfn = dom.claim_frame(frame if cmd == XENMEM_populate_physmap else None)
            if mfn is None:
                break
            mem.write(start + _PFN.size * i, _PFN.pack(mfn))
        done += 1
    return done


HANDLERS = {HC.memory_op: memory_op}
