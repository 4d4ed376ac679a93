"""grant_table_op (Xen's common/grant_table.c). The table itself is
pyxen.hv.grant; this module is the guest ABI."""
from __future__ import annotations

import struct

from .. import layout as L
from ..abi import HC, EFAULT, EINVAL, ENOSYS, EPERM, ESRCH, EOPNOTSUPP, DOMID_SELF
from ..grant import (GrantError, GNTST_okay, GNTST_general_error, GNTST_bad_domain,
                     GNTST_bad_handle, GNTST_bad_virt_addr, GNTST_bad_copy_arg, MAX_FRAMES,
                     Mapping)
from ..guestmem import GuestFault
from ..mm import PageTableError

GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref, GNTTABOP_setup_table = 0, 1, 2
GNTTABOP_dump_table, GNTTABOP_transfer, GNTTABOP_copy, GNTTABOP_query_size = 3, 4, 5, 6
GNTTABOP_unmap_and_replace, GNTTABOP_set_version, GNTTABOP_get_status_frames = 7, 8, 9
GNTTABOP_get_version = 10
GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly = 1, 2, 4
GNTMAP_application_map, GNTMAP_contains_pte = 8, 16
GNTCOPY_source_gref, GNTCOPY_dest_gref = 1, 2
MAX_OPS = 1024


def _self(dom, domid: int) -> bool:
    return domid in (DOMID_SELF, dom.domid)


def _status(mem, va: int, off: int, status: int) -> None:
    mem.write(va + off, struct.pack("<h", status))


def grant_table_op(vcpu, cmd, uop, count, *_):
    dom = vcpu.domain
    gt = dom.grants
    mem = vcpu.mem
    if count > MAX_OPS:
        return -EINVAL
    try:
        if cmd == GNTTABOP_setup_table:
            for i in range(count):
                va = uop + 24 * i
                d, nr, _st, flist = struct.unpack("<H2xIh6xQ", mem.read(va, 24))
                if not _self(dom, d):
                    _status(mem, va, 8, GNTST_bad_domain)
                    continue
                if nr > MAX_FRAMES:
                    _status(mem, va, 8, GNTST_general_error)
                    continue
                gt.grow(nr)
                mfns = gt.frame_mfns()[:nr]
                if nr:
                    mem.write(flist, struct.pack(f"<{nr}Q", *mfns))
                _status(mem, va, 8, GNTST_okay)
            return 0
        if cmd == GNTTABOP_query_size:
            for i in range(count):
                va = uop + 16 * i
                (d,) = struct.unpack("<H", mem.read(va, 2))
                if not _self(dom, d):
                    _status(mem, va, 12, GNTST_bad_domain)
                    continue
                mem.write(va + 4, struct.pack("<IIh", len(gt.frames), MAX_FRAMES, GNTST_okay))
            return 0
        if cmd == GNTTABOP_set_version:
            (ver,) = struct.unpack("<I", mem.read(uop, 4))
            try:
                gt.set_version(ver)
            except GrantError as e:
                return e.status
            mem.write(uop, struct.pack("<I", gt.version))
            return 0
        if cmd == GNTTABOP_get_version:
            (d,) = struct.unpack("<H", mem.read(uop, 2))
            if not _self(dom, d):
                return -ESRCH
            mem.write(uop + 4, struct.pack("<I", gt.version))
            return 0
        if cmd == GNTTABOP_get_status_frames:
            nr, d, _st, flist = struct.unpack("<IHhQ", mem.read(uop, 16))
            if not _self(dom, d):
                _status(mem, uop, 6, GNTST_bad_domain)
                return 0
            if gt.version != 2 or nr > len(gt.status_frames):
                _status(mem, uop, 6, GNTST_general_error)
                return 0
            if nr:
                mem.write(flist, struct.pack(f"<{nr}Q", *gt.status_mfns()[:nr]))
            _status(mem, uop, 6, GNTST_okay)
            return 0
        if cmd == GNTTABOP_map_grant_ref:
            for i in range(count):
                _map_one(vcpu, uop + 32 * i)
            return 0
        if cmd == GNTTABOP_unmap_grant_ref:
            for i in range(count):
                _unmap_one(vcpu, uop + 24 * i)
            return 0
        if cmd == GNTTABOP_copy:
            for i in range(count):
                _copy_one(vcpu, uop + 40 * i)
            return 0
        if cmd == GNTTABOP_transfer:
            return -EOPNOTSUPP       # page transfer is disabled, as in Xen without gnttab_transfer
        if cmd in (GNTTABOP_dump_table, GNTTABOP_unmap_and_replace):
            return -ENOSYS
    except GuestFault:
        return -EFAULT
    return -ENOSYS


def _map_one(vcpu, va) -> None:
    """Map a grant of this domain into its own address space (grants of
    other domains need the domain processes linked by pyxend)."""
    dom = vcpu.domain
    mem = vcpu.mem
    host_addr, flags, ref, d = struct.unpack("<QIIH", mem.read(va, 18))
    if not _self(dom, d):
        _status(mem, va, 18, GNTST_bad_domain)
        return
    if not flags & GNTMAP_host_map or flags & GNTMAP_device_map:
        _status(mem, va, 18, GNTST_general_error)
        return
    readonly = bool(flags & GNTMAP_readonly)
    gt = dom.grants
    try:
        with gt.lock:
            mfn, _off, _len = gt.acquire(ref, dom.domid, readonly)
    except GrantError as e:
        _status(mem, va, 18, e.status)
        return
    from .mmu import _l1_slot
    pte_flags = L.PTE_P | L.PTE_US | L.PTE_A | (0 if readonly else L.PTE_RW | L.PTE_D)
    if flags & GNTMAP_contains_pte:
        ptr = host_addr
    else:
        ptr = _l1_slot(vcpu, host_addr)
    try:
        if ptr is None:
            raise PageTableError(EINVAL, "no L1 table for the address")
        dom.mm.update_entry(ptr, (mfn << 12) | pte_flags)
    except PageTableError:
        gt.release(ref, readonly)
        _status(mem, va, 18, GNTST_bad_virt_addr)
        return
    with gt.lock:
        h = gt.next_handle
        gt.next_handle += 1
        gt.maps[h] = Mapping(h, ref, dom.domid, readonly, mfn, va=ptr)
    mem.write(va + 18, struct.pack("<hIQ", GNTST_okay, h, 0))


def _unmap_one(vcpu, va) -> None:
    dom = vcpu.domain
    mem = vcpu.mem
    host_addr, _dev, handle = struct.unpack("<QQI", mem.read(va, 20))
    gt = dom.grants
    with gt.lock:
        m = gt.maps.get(handle)
        if m is None or m.va == 0:
            _status(mem, va, 20, GNTST_bad_handle)
            return
        del gt.maps[handle]
    try:
        dom.mm.update_entry(m.va, 0)
    except PageTableError:
        pass
    with gt.lock:
        gt.release(m.ref, m.readonly)
    _status(mem, va, 20, GNTST_okay)


def _copy_one(vcpu, va) -> None:
    dom = vcpu.domain
    mem = vcpu.mem
    raw = mem.read(va, 40)
    s_u, s_dom, s_off = struct.unpack_from("<QHH", raw, 0)
    d_u, d_dom, d_off = struct.unpack_from("<QHH", raw, 16)
    length, flags = struct.unpack_from("<HH", raw, 32)
    gt = dom.grants
    if not _self(dom, s_dom) or not _self(dom, d_dom):
        _status(mem, va, 36, GNTST_bad_domain)
        return
    if s_off + length > L.PAGE_SIZE or d_off + length > L.PAGE_SIZE:
        _status(mem, va, 36, GNTST_bad_copy_arg)
        return
    held = []
    try:
        with gt.lock:
            if flags & GNTCOPY_source_gref:
                smfn, _, _ = gt.acquire(s_u & 0xFFFFFFFF, dom.domid, True)
                held.append((s_u & 0xFFFFFFFF, True))
            else:
                smfn = s_u
            if flags & GNTCOPY_dest_gref:
                dmfn, _, _ = gt.acquire(d_u & 0xFFFFFFFF, dom.domid, False)
                held.append((d_u & 0xFFFFFFFF, False))
            else:
                dmfn = d_u
        if not dom.mm.owns(smfn) or not dom.mm.owns(dmfn):
            raise GrantError(GNTST_bad_copy_arg, "copy frame is not this domain's")
        ram = dom.ram.view
        src = (smfn << 12) + s_off
        dst = (dmfn << 12) + d_off
        ram[dst:dst + length] = ram[src:src + length]
        status = GNTST_okay
    except GrantError as e:
        status = e.status
    finally:
        with gt.lock:
            for ref, ro in held:
                gt.release(ref, ro)
    _status(mem, va, 36, status)


HANDLERS = {HC.grant_table_op: grant_table_op}
