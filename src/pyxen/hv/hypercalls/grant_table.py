"""grant_table_op (Xen's common/grant_table.c, and arch/x86/pv/grant_table.c
for the mappings a PV guest makes of grants in its own page tables). The
table itself is pyxen.hv.grant; this module is the guest ABI.

A domain maps grants of its own (other domains' tables are not reachable
from a domain process; domain 0 grants nothing, see grant.EmptyGrantTable).
A host mapping's PTE is written as Xen writes it, into an L1 table in use,
named by linear address or (GNTMAP_contains_pte) by the machine address of
the entry; the grant holds the frame's writable type reference, and an unmap
only takes the mapping (and gives the reference back) when the entry there
still maps the frame with the grant's presence and writability.
"""
from __future__ import annotations

import ctypes
import struct
from types import SimpleNamespace

from .. import layout as L
from .. import abi
from ..abi import (HC, EFAULT, EINVAL, ENOSYS, EPERM, ESRCH, EOPNOTSUPP, EILSEQ, DOMID_SELF,
                   HYPERVISOR_VIRT_END, GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref,
                   GNTTABOP_setup_table, GNTTABOP_transfer, GNTTABOP_copy,
                   GNTTABOP_query_size, GNTTABOP_unmap_and_replace, GNTTABOP_set_version,
                   GNTTABOP_get_status_frames, GNTTABOP_get_version, GNTTABOP_swap_grant_ref,
                   GNTTABOP_cache_flush, GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly,
                   GNTMAP_contains_pte, GNTMAP_guest_avail0,
                   GNTCOPY_source_gref, GNTCOPY_dest_gref, GNTTAB_CACHE_CLEAN,
                   GNTTAB_CACHE_INVAL)
from ..grant import (GrantError, GNTST_okay, GNTST_general_error, GNTST_bad_domain,
                     GNTST_bad_gntref, GNTST_bad_handle, GNTST_bad_virt_addr, GNTST_bad_dev_addr,
                     GNTST_permission_denied, GNTST_bad_page, GNTST_bad_copy_arg, GNTST_eagain,
                     GNTST_no_space, GNTPIN_hstw, GNTPIN_hstr, GNTPIN_devw, GNTPIN_devr,
                     DOM0_TABLE, INITIAL_FRAMES)
from ..guestmem import GuestFault
from ..mm import PageTableError, PGT_L1, PGT_WRITABLE

GNTTABOP_CMD_MASK = 0xFFF        # the bits above carry cache_flush's continuation
MAX_OPS = 1024                   # pyxen has no hypercall continuations: batches are bounded

_MAP = struct.Struct("<QIIHhIQ")       # host_addr flags ref dom | status handle dev_bus_addr
_UNMAP = struct.Struct("<QQIh2x")      # host_addr dev_bus_addr handle | status
_REPLACE = struct.Struct("<QQIh2x")    # host_addr new_addr handle | status
_SETUP = struct.Struct("<H2xIh6xQ")    # dom nr_frames | status | frame_list
_QUERY = struct.Struct("<H2xIIh2x")    # dom | nr_frames max_nr_frames status
_STATUS = struct.Struct("<IHhQ")       # nr_frames dom | status | frame_list
_VERSION = struct.Struct("<H2xI")      # dom | version
_SWAP = struct.Struct("<IIh2x")        # ref_a ref_b | status
_COPY = struct.Struct("<QHH4xQHH4xHHh2x")
_CACHE = struct.Struct("<QHHI")        # dev_bus_addr/ref offset length op
_STATUS16 = struct.Struct("<h")
for _s, _c in ((_MAP, abi.GnttabMapGrantRef), (_UNMAP, abi.GnttabUnmapGrantRef),
               (_REPLACE, abi.GnttabUnmapAndReplace), (_SETUP, abi.GnttabSetupTable),
               (_QUERY, abi.GnttabQuerySize), (_STATUS, abi.GnttabGetStatusFrames),
               (_VERSION, abi.GnttabGetVersion), (_SWAP, abi.GnttabSwapGrantRef),
               (_COPY, abi.GnttabCopy), (_CACHE, abi.GnttabCacheFlush)):
    assert _s.size == ctypes.sizeof(_c), _c


def _addr_ok(va: int) -> bool:
    """Xen's access_ok for a 64-bit PV guest: outside the hypervisor's range."""
    return va < 1 << 47 or va >= HYPERVISOR_VIRT_END


def _array_ok(va: int, count: int, size: int) -> bool:
    return _addr_ok(va) and (va + count * size <= 1 << 47 or va >= HYPERVISOR_VIRT_END)


def _by_id(dom, domid: int):
    """The grant table of domain `domid` for map/unmap, which look domains
    up by id only (DOMID_SELF names none), or None."""
    if domid == dom.domid:
        return dom.grants
    if domid == 0:
        return DOM0_TABLE
    return None


def _target(dom, domid: int) -> int:
    """Xen's lookup by any id plus its default XSM target check, for the ops
    a domain may only make on itself: GNTST_okay, or why not."""
    if domid in (DOMID_SELF, dom.domid):
        return GNTST_okay
    if domid == 0:
        return GNTST_permission_denied       # domain 0 exists: not ours to ask about
    return GNTST_bad_domain


def grant_table_op(vcpu, cmd, uop, count, *_):
    dom = vcpu.domain
    gt = dom.grants
    mem = vcpu.mem
    cmd &= 0xFFFFFFFF
    count &= 0xFFFFFFFF
    if count >= 1 << 31:
        return -EINVAL
    opaque = cmd & ~GNTTABOP_CMD_MASK
    cmd &= GNTTABOP_CMD_MASK
    if opaque and cmd != GNTTABOP_cache_flush:
        return -EINVAL
    if not gt.frames:
        gt.grow(INITIAL_FRAMES)           # Xen gives every table its first frame at creation
    batch = {GNTTABOP_map_grant_ref: 32, GNTTABOP_unmap_grant_ref: 24,
             GNTTABOP_unmap_and_replace: 24, GNTTABOP_copy: 40, GNTTABOP_swap_grant_ref: 12,
             GNTTABOP_cache_flush: 16, GNTTABOP_transfer: 24}
    try:
        if cmd in batch:
            if not _array_ok(uop, count, batch[cmd]):
                return -EFAULT
            if count > MAX_OPS:
                return -EINVAL
        if cmd == GNTTABOP_map_grant_ref:
            for i in range(count):
                va = uop + 32 * i
                op = SimpleNamespace(**dict(zip(
                    ("host_addr", "flags", "ref", "dom", "status", "handle", "dev_bus_addr"),
                    _MAP.unpack(mem.read(va, 32)))))
                _map_one(vcpu, op)
                mem.write(va, _MAP.pack(op.host_addr, op.flags, op.ref, op.dom, op.status,
                                        op.handle, op.dev_bus_addr))
            return 0
        if cmd in (GNTTABOP_unmap_grant_ref, GNTTABOP_unmap_and_replace):
            return _unmap_batch(vcpu, cmd, uop, count)
        if cmd == GNTTABOP_setup_table:
            return _setup_table(vcpu, uop, count)
        if cmd == GNTTABOP_query_size:
            if count != 1:
                return -EINVAL
            d, nr, mx, _st = _QUERY.unpack(mem.read(uop, 16))
            st = _target(dom, d)
            if st == GNTST_okay:
                nr, mx = len(gt.frames), gt.max_frames
            mem.write(uop, _QUERY.pack(d, nr, mx, st))
            return 0
        if cmd == GNTTABOP_set_version:
            (ver,) = struct.unpack("<I", mem.read(uop, 4))
            rc = gt.set_version(ver)
            mem.write(uop, struct.pack("<I", gt.version))
            return rc
        if cmd == GNTTABOP_get_status_frames:
            return _get_status_frames(vcpu, uop, count)
        if cmd == GNTTABOP_get_version:
            d, _v = _VERSION.unpack(mem.read(uop, 8))
            st = _target(dom, d)
            if st == GNTST_bad_domain:
                return -ESRCH
            if st != GNTST_okay:
                return -EPERM
            mem.write(uop + 4, struct.pack("<I", gt.version))
            return 0
        if cmd == GNTTABOP_copy:
            for i in range(count):
                va = uop + 40 * i
                status = _copy_one(vcpu, _COPY.unpack(mem.read(va, 40)))
                mem.write(va + 36, _STATUS16.pack(status))
            return 0
        if cmd == GNTTABOP_swap_grant_ref:
            for i in range(count):
                va = uop + 12 * i
                a, b, _st = _SWAP.unpack(mem.read(va, 12))
                mem.write(va + 8, _STATUS16.pack(_swap(gt, a, b)))
            return 0
        if cmd == GNTTABOP_cache_flush:
            for i in range(count):
                # the continuation only ever concerns the first operation
                rc = _cache_flush(dom, _CACHE.unpack(mem.read(uop + 16 * i, 16)),
                                  opaque if i == 0 else 0)
                if rc < 0:
                    return rc
            return 0
        if cmd == GNTTABOP_transfer:
            return -EOPNOTSUPP       # page transfer is disabled, as in Xen without gnttab_transfer
    except GuestFault:
        return -EFAULT
    return -ENOSYS                   # dump_table and unknown operations


# --- map ------------------------------------------------------------------------------
def _map_one(vcpu, op) -> None:
    dom = vcpu.domain
    flags = op.flags
    ro = bool(flags & GNTMAP_readonly)
    pin = 0
    if flags & GNTMAP_device_map:
        pin += GNTPIN_devr if ro else GNTPIN_devw
    if flags & GNTMAP_host_map:
        pin += GNTPIN_hstr if ro else GNTPIN_hstw
    if not pin:
        op.status = GNTST_bad_gntref
        return
    rgt = _by_id(dom, op.dom)
    if rgt is None:
        op.status = GNTST_bad_domain
        return
    lgt = dom.grants
    handle = lgt.maptrack.get()
    if handle is None:
        op.status = GNTST_no_space
        return
    try:
        mfn, _off, _len = rgt.acquire(op.ref, dom.domid, ro, pin)
    except GrantError as e:
        dom.log_guest_error(vcpu, f"grant map: {e}")
        lgt.maptrack.put(handle)
        op.status = e.status
        return
    # the frame is the granter's, that is this domain's own (rgt is dom.grants)
    mm = dom.mm
    typed = 0
    status = GNTST_okay
    try:
        if flags & GNTMAP_device_map and not ro:
            mm.get_type(mfn, PGT_WRITABLE)
            typed += 1
        if flags & GNTMAP_host_map:
            if not ro:
                mm.get_type(mfn, PGT_WRITABLE)
                typed += 1
            status = _create_host_mapping(vcpu, op.host_addr, mfn, flags)
    except PageTableError as e:
        dom.log_guest_error(vcpu, f"grant map: could not pin frame {mfn:#x}: {e}")
        status = GNTST_general_error
    if status != GNTST_okay:
        for _ in range(typed):
            mm.put_type(mfn)
        rgt.release(op.ref, ro, pin)
        lgt.maptrack.put(handle)
        op.status = status
        return
    lgt.maptrack.set(handle, op.ref, flags, op.dom)
    op.dev_bus_addr = mfn << 12
    op.handle = handle
    op.status = GNTST_okay


def _pte_flags(flags: int) -> int:
    """The PTE Xen builds for a host mapping (a 64-bit PV guest's kernel and
    user both run in ring 3: the user bit is always on)."""
    pte = L.PTE_P | L.PTE_A | L.PTE_D | L.PTE_NX | L.PTE_US
    if not flags & GNTMAP_readonly:
        pte |= L.PTE_RW
    return pte | (((flags >> GNTMAP_guest_avail0) & 7) << 9)


def _l1e_of(vcpu, va: int) -> int | None:
    """Machine address of the entry of an L1 table in use that maps linear
    address va in the current page tables (Xen's map_guest_l1e plus the
    type check its callers make)."""
    if not _addr_ok(va) or not L.canonical(va):
        return None
    from .mmu import _l1_slot
    ptr = _l1_slot(vcpu, va)
    if ptr is None or not _is_l1(vcpu.domain.mm, ptr):
        return None
    return ptr


def _is_l1(mm, ptr: int) -> bool:
    mfn = ptr >> 12
    return mm.owns(mfn) and mm.tcount[mfn] > 0 and mm.ptype[mfn] == PGT_L1


def _entry_ptr(vcpu, addr: int, flags: int) -> int | None:
    """The L1 entry a host mapping's address names: a machine address with
    GNTMAP_contains_pte (aligned, in an L1 table of this domain), else a
    linear address."""
    if flags & GNTMAP_contains_pte:
        if addr & 7 or not _is_l1(vcpu.domain.mm, addr):
            return None
        return addr
    return _l1e_of(vcpu, addr)


def _write_l1e(mm, ptr: int, val: int) -> None:
    mm.write_entry(ptr >> 12, (ptr & 0xFFF) >> 3, val)


def _read_l1e(mm, ptr: int) -> int:
    return mm.read_entry(ptr >> 12, (ptr & 0xFFF) >> 3)


def _drop_l1e(mm, ptr: int, val: int) -> None:
    """Let go of a PTE no longer in any table, dropping the references it
    held: put back where it was and removed the usual way."""
    if val & L.PTE_P:
        _write_l1e(mm, ptr, val)
        mm.update_entry(ptr, 0)


def _create_host_mapping(vcpu, addr: int, mfn: int, flags: int) -> int:
    mm = vcpu.domain.mm
    ptr = _entry_ptr(vcpu, addr, flags)
    if ptr is None:
        vcpu.domain.log_guest_error(vcpu, f"grant map: no L1 entry at {addr:#x}")
        return GNTST_general_error
    mm.update_entry(ptr, 0)          # whatever was there goes, with its references
    _write_l1e(mm, ptr, (mfn << 12) | _pte_flags(flags))
    return GNTST_okay


def _replace_host_mapping(vcpu, addr: int, mfn: int, new_addr: int, flags: int) -> int:
    """Take the PTE at addr if it still maps the grant, leaving nothing there,
    or (unmap_and_replace) the PTE moved from linear address new_addr."""
    dom = vcpu.domain
    mm = dom.mm
    stolen = None
    if flags & GNTMAP_contains_pte:
        if new_addr:
            return GNTST_general_error       # replace is only for linear addresses
    elif new_addr:
        sptr = _l1e_of(vcpu, new_addr)
        if sptr is None:
            dom.log_guest_error(vcpu, f"grant unmap_and_replace: no L1 entry at {new_addr:#x}")
            return GNTST_general_error
        stolen = (sptr, _read_l1e(mm, sptr))
        _write_l1e(mm, sptr, 0)
    ptr = _entry_ptr(vcpu, addr, flags)
    ok = ptr is not None
    if ok:
        old = _read_l1e(mm, ptr)
        want = _pte_flags(flags)
        ok = ((old & L.PTE_ADDR_MASK) >> 12 == mfn
              and not (old ^ want) & (L.PTE_P | L.PTE_RW))
        if not ok:
            dom.log_guest_error(vcpu, f"grant unmap: PTE {old:#x} at {addr:#x} does not map "
                                f"the grant ({(mfn << 12) | want:#x})")
    if not ok:
        if stolen is not None:
            _drop_l1e(mm, *stolen)
        return GNTST_general_error
    _write_l1e(mm, ptr, stolen[1] if stolen is not None else 0)
    return GNTST_okay


# --- unmap / unmap_and_replace --------------------------------------------------------------
def _unmap_batch(vcpu, cmd, uop, count) -> int:
    dom = vcpu.domain
    mem = vcpu.mem
    done = []
    try:
        for i in range(count):
            va = uop + 24 * i
            if cmd == GNTTABOP_unmap_grant_ref:
                host_addr, dev_bus_addr, handle, _st = _UNMAP.unpack(mem.read(va, 24))
                new_addr = 0
            else:
                host_addr, new_addr, handle, _st = _REPLACE.unpack(mem.read(va, 24))
                dev_bus_addr = 0
            status, work = _unmap_common(vcpu, host_addr, dev_bus_addr, new_addr, handle)
            if work is not None:
                done.append(work)
            mem.write(va + 20, _STATUS16.pack(status))
    finally:
        # as Xen: TLBs are flushed before the frames are given back
        dom.flush_tlbs(vcpu, all_vcpus=True)
        for work in done:
            _unmap_complete(dom, *work)
    return 0


def _unmap_common(vcpu, host_addr, dev_bus_addr, new_addr, handle):
    """Take the mappings the op names; returns (status, what to give back)."""
    dom = vcpu.domain
    lgt = dom.grants
    m = lgt.maptrack.lookup(handle)
    if m is None:
        return GNTST_bad_handle, None
    rgt = _by_id(dom, m.domid)
    if rgt is not dom.grants or m.ref >= rgt.nr_entries() or m.ref not in rgt.active:
        return GNTST_bad_handle, None
    mfn = rgt.active[m.ref].mfn
    flags = m.flags
    if dev_bus_addr and flags & GNTMAP_device_map and dev_bus_addr != mfn << 12:
        return GNTST_bad_dev_addr, None
    done = 0
    status = GNTST_okay
    if host_addr and flags & GNTMAP_host_map:
        status = _replace_host_mapping(vcpu, host_addr, mfn, new_addr, flags)
        if status == GNTST_okay:
            m.flags &= ~GNTMAP_host_map
            done |= GNTMAP_host_map | (flags & GNTMAP_readonly)
    if status == GNTST_okay and dev_bus_addr and flags & GNTMAP_device_map:
        m.flags &= ~GNTMAP_device_map
        done |= GNTMAP_device_map | (flags & GNTMAP_readonly)
    if not m.flags & (GNTMAP_device_map | GNTMAP_host_map):
        lgt.maptrack.put(handle)
    elif done:
        lgt.maptrack.set(handle, m.ref, m.flags, m.domid)
    return status, ((rgt, m.ref, mfn, done) if done else None)


def _unmap_complete(dom, rgt, ref, mfn, done) -> None:
    ro = bool(done & GNTMAP_readonly)
    for kind, pin in ((GNTMAP_device_map, GNTPIN_devr if ro else GNTPIN_devw),
                      (GNTMAP_host_map, GNTPIN_hstr if ro else GNTPIN_hstw)):
        if done & kind:
            if not ro:
                dom.mm.put_type(mfn)
            rgt.release(ref, ro, pin)


# --- table setup and queries ------------------------------------------------------------------
def _copy_frame_list(mem, flist: int, mfns) -> int:
    """Write frame numbers to the guest's list: GNTST_okay, or
    GNTST_bad_virt_addr if any entry could not be written."""
    status = GNTST_okay
    for i, mfn in enumerate(mfns):
        try:
            mem.write(flist + 8 * i, struct.pack("<Q", mfn))
        except GuestFault:
            status = GNTST_bad_virt_addr
    return status


def _setup_table(vcpu, uop, count) -> int:
    dom = vcpu.domain
    gt = dom.grants
    mem = vcpu.mem
    if count != 1:
        return -EINVAL
    d, nr, _st, flist = _SETUP.unpack(mem.read(uop, 24))
    if not _array_ok(flist, nr, 8):
        return -EFAULT
    status = _target(dom, d)
    if status == GNTST_okay:
        if nr > gt.max_frames:
            status = GNTST_general_error
        else:
            gt.grow(nr)
            status = _copy_frame_list(mem, flist, gt.frame_mfns()[:nr])
    mem.write(uop + 8, _STATUS16.pack(status))
    return 0


def _get_status_frames(vcpu, uop, count) -> int:
    dom = vcpu.domain
    gt = dom.grants
    mem = vcpu.mem
    if count != 1:
        return -EINVAL
    nr, d, _st, flist = _STATUS.unpack(mem.read(uop, 16))
    if not _array_ok(flist, nr, 8):
        return -EFAULT
    status = _target(dom, d)
    if status == GNTST_okay:
        if nr > len(gt.status_frames):
            status = GNTST_general_error
        else:
            status = _copy_frame_list(mem, flist, gt.status_mfns()[:nr])
    mem.write(uop + 6, _STATUS16.pack(status))
    return 0


def _swap(gt, a: int, b: int) -> int:
    """GNTTABOP_swap_grant_ref: exchange two unused entries of the own table."""
    import ctypes
    with gt.lock:
        n = gt.nr_entries()
        if a >= n or b >= n:
            return GNTST_bad_gntref
        if a == b:
            return GNTST_okay
        if gt._in_use(a) or gt._in_use(b):
            return GNTST_eagain
        size = 8 if gt.version == 1 else 16
        ea, eb = gt._entry_addr(a), gt._entry_addr(b)
        da, db = ctypes.string_at(ea, size), ctypes.string_at(eb, size)
        ctypes.memmove(ea, db, size)
        ctypes.memmove(eb, da, size)
        if gt.version == 2:
            sa, sb = gt._status_addr(a), gt._status_addr(b)
            xa, xb = ctypes.string_at(sa, 2), ctypes.string_at(sb, 2)
            ctypes.memmove(sa, xb, 2)
            ctypes.memmove(sb, xa, 2)
    return GNTST_okay


def _cache_flush(dom, op, opaque: int) -> int:
    """GNTTABOP_cache_flush on x86: range checks, then nothing to do for a
    frame of this domain (invalidating without cleaning is not offered)."""
    addr, offset, length, what = op
    if offset >= L.PAGE_SIZE or length > L.PAGE_SIZE or offset + length > L.PAGE_SIZE \
            or what & ~(GNTTAB_CACHE_INVAL | GNTTAB_CACHE_CLEAN):
        return -EINVAL
    if length == 0 or what == 0:
        return 0 if not opaque else -EILSEQ
    mfn = addr >> 12
    mm = dom.mm
    if not (mm.owns(mfn) or mfn in mm.shared_rw or mfn in mm.shared_ro):
        # not a frame of this domain: a free one or pyxen's own has no grant
        # table to look in; anything else is no frame at all
        inside = 0 <= mfn < mm.nr_pages or dom.heap.contains(mfn << 12)
        return -EPERM if inside else -EINVAL
    if what == GNTTAB_CACHE_INVAL:
        return -EOPNOTSUPP
    return 0


# --- copy -----------------------------------------------------------------------------------
def _copy_one(vcpu, op) -> int:
    """One GNTTABOP_copy (Xen's gnttab_copy_one); returns its status."""
    dom = vcpu.domain
    s_u, s_dom, s_off, d_u, d_dom, d_off, length, flags, _st = op
    for domid, is_gref in ((s_dom, flags & GNTCOPY_source_gref), (d_dom, flags & GNTCOPY_dest_gref)):
        if domid != DOMID_SELF and not is_gref:
            return GNTST_permission_denied       # only DOMID_SELF may name a frame
        if domid not in (DOMID_SELF, dom.domid, 0):
            return GNTST_bad_domain
    held = []
    typed = None
    try:
        src = _claim(vcpu, s_u, s_dom, flags & GNTCOPY_source_gref, True, held)
        dst = _claim(vcpu, d_u, d_dom, flags & GNTCOPY_dest_gref, False, held)
        try:
            dom.mm.get_type(dst[0], PGT_WRITABLE)
        except PageTableError as e:
            raise GrantError(GNTST_general_error, f"copy: frame {dst[0]:#x} is not writable: {e}")
        typed = dst[0]
        if s_off + length > L.PAGE_SIZE or d_off + length > L.PAGE_SIZE:
            return GNTST_bad_copy_arg
        for (mfn, start, size), off in ((src, s_off), (dst, d_off)):
            if off < start or off + length > start + size:
                return GNTST_general_error
        ram = dom.ram.view
        a, b = (src[0] << 12) + s_off, (dst[0] << 12) + d_off
        ram[b:b + length] = ram[a:a + length]
        dom.mm.mark_dirty(dst[0])
        return GNTST_okay
    except GrantError as e:
        dom.log_guest_error(vcpu, f"grant copy: {e}")
        return e.status
    finally:
        if typed is not None:
            dom.mm.put_type(typed)
        for table, ref, ro in held:
            table.release(ref, ro)


def _claim(vcpu, u: int, domid: int, is_gref: int, readonly: bool, held: list):
    """(mfn, start, length) of one side of a copy."""
    dom = vcpu.domain
    if is_gref:
        ref = u & 0xFFFFFFFF
        table = dom.grants if domid in (DOMID_SELF, dom.domid) else DOM0_TABLE
        res = table.acquire(ref, dom.domid, readonly, mapflag=False)
        held.append((table, ref, readonly))
        return res
    if not dom.mm.owns(u):
        raise GrantError(GNTST_bad_page, f"copy: frame {u:#x} is not this domain's")
    return u, 0, L.PAGE_SIZE


HANDLERS = {HC.grant_table_op: grant_table_op}
