"""mmu_update, update_va_mapping, mmuext_op: PV page-table management
(Xen's arch/x86/mm.c)."""
from __future__ import annotations

import ctypes
import struct

from .. import layout as L
from ..abi import (HC, EFAULT, EINVAL, ENOSYS, ESRCH, EPERM, DOMID_SELF,
                   MMU_NORMAL_PT_UPDATE, MMU_MACHPHYS_UPDATE, MMU_PT_UPDATE_PRESERVE_AD,
                   MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE,
                   MMUEXT_NEW_BASEPTR, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL,
                   MMUEXT_TLB_FLUSH_MULTI, MMUEXT_INVLPG_MULTI, MMUEXT_TLB_FLUSH_ALL,
                   MMUEXT_INVLPG_ALL, MMUEXT_FLUSH_CACHE, MMUEXT_SET_LDT,
                   MMUEXT_NEW_USER_BASEPTR, MMUEXT_CLEAR_PAGE, MMUEXT_COPY_PAGE,
                   MMUEXT_FLUSH_CACHE_GLOBAL, MMUEXT_MARK_SUPER, MMUEXT_UNMARK_SUPER,
                   UVMF_FLUSHTYPE_MASK, UVMF_ALL, EOPNOTSUPP, HYPERVISOR_VIRT_START,
                   HYPERVISOR_VIRT_END, MmuUpdate, MmuextOp)
from ..guestmem import GuestFault
from ..mm import PageTableError, PGT_L1, PGT_WRITABLE

_UPD = struct.Struct("<QQ")
_EXT = struct.Struct("<IIQQ")      # cmd, pad, arg1 (mfn / linear_addr), arg2 (nr_ents / vcpumask / src_mfn)
assert _UPD.size == ctypes.sizeof(MmuUpdate) and _EXT.size == ctypes.sizeof(MmuextOp)
MAX_BATCH = 4096


def _check_dom(vcpu, domid) -> int:
    if domid not in (DOMID_SELF, vcpu.domain.domid):
        return -ESRCH if domid < DOMID_SELF else -EPERM
    return 0


def _report_done(vcpu, pdone, n) -> int:
    if pdone:
        try:
            vcpu.mem.write(pdone, struct.pack("<I", n))
        except GuestFault:
            return -EFAULT
    return 0


def _read_batch(vcpu, va, count, domid, size):
    """The common prologue of mmu_update / mmuext_op: (raw bytes, None) or (None, -errno)."""
    rc = _check_dom(vcpu, domid & 0xFFFF)
    if rc:
        return None, rc
    if count > MAX_BATCH:
        return None, -EINVAL
    try:
        return vcpu.mem.read(va, size * count), 0
    except GuestFault:
        return None, -EFAULT


def mmu_update(vcpu, ureqs, count, pdone, domid, *_):
    dom = vcpu.domain
    count &= 0xFFFFFFFF
    raw, rc = _read_batch(vcpu, ureqs, count, domid, 16)
    if raw is None:
        return rc
    mm = dom.mm
    done = 0
    rc = 0
    for i in range(count):
        ptr, val = _UPD.unpack_from(raw, 16 * i)
        kind = ptr & 3
        ptr &= ~3
        try:
            if kind in (MMU_NORMAL_PT_UPDATE, MMU_PT_UPDATE_PRESERVE_AD):
                mm.update_entry(ptr, val, preserve_ad=kind == MMU_PT_UPDATE_PRESERVE_AD)
            elif kind == MMU_MACHPHYS_UPDATE:
                mfn = ptr >> 12
                if not mm.owns(mfn):
                    raise PageTableError(EINVAL, f"machphys update of mfn {mfn:#x}")
                dom.heap.set_m2p(mfn, val)
            else:
                raise PageTableError(ENOSYS, f"mmu_update kind {kind}")
        except PageTableError as e:
            dom.log_guest_error(vcpu, f"mmu_update: {e}")
            rc = -e.errno
            break
        done += 1
    r = _report_done(vcpu, pdone, done)
    return rc or r


def _l1_slot(vcpu, va):
    """Machine address of the L1 entry that maps va in the current tables,
    if that entry is in an L1 table (Xen's __do_update_va_mapping checks the
    type: with linear page tables the walk can end in a higher-level table)."""
    mm = vcpu.domain.mm
    table = vcpu._cr3_mfn()
    for shift in (39, 30, 21):
        e = mm.read_entry(table, (va >> shift) & 511)
        if not e & L.PTE_P or (shift != 39 and e & L.PTE_PSE):
            return None
        table = (e & L.PTE_ADDR_MASK) >> 12
        if not mm.owns(table):
            return None
    if mm.tcount[table] == 0 or mm.ptype[table] != PGT_L1:
        return None
    return (table << 12) | (((va >> 12) & 511) * 8)


def update_va_mapping(vcpu, va, val, flags, *_):
    dom = vcpu.domain
    if not L.canonical(va) or HYPERVISOR_VIRT_START <= va < HYPERVISOR_VIRT_END:
        return -EINVAL
    ptr = _l1_slot(vcpu, va)
    if ptr is None:
        return -EINVAL
    try:
        dom.mm.update_entry(ptr, val)
    except PageTableError as e:
        dom.log_guest_error(vcpu, f"update_va_mapping {va:#x}: {e}")
        return -e.errno
    if flags & UVMF_FLUSHTYPE_MASK:
        dom.flush_tlbs(vcpu, all_vcpus=bool(flags & UVMF_ALL) or (flags & ~7) != 0)
    return 0


def mmuext_op(vcpu, uops, count, pdone, domid, *_):
    dom = vcpu.domain
    count &= 0xFFFFFFFF
    raw, rc = _read_batch(vcpu, uops, count, domid, 24)
    if raw is None:
        return rc
    done = 0
    rc = 0
    for i in range(count):
        cmd, _pad, arg1, arg2 = _EXT.unpack_from(raw, 24 * i)
        try:
            rc = _one_ext(vcpu, cmd, arg1, arg2)
        except PageTableError as e:
            dom.log_guest_error(vcpu, f"mmuext_op {cmd}: {e}")
            rc = -e.errno
        except GuestFault:
            rc = -EFAULT
        if rc:
            break
        done += 1
    r = _report_done(vcpu, pdone, done)
    return rc or r


def _one_ext(vcpu, cmd, arg1, arg2) -> int:
    dom = vcpu.domain
    mm = dom.mm
    pv = vcpu.pv
    if MMUEXT_PIN_L1_TABLE <= cmd <= MMUEXT_PIN_L4_TABLE:
        mm.pin(arg1, cmd - MMUEXT_PIN_L1_TABLE + 1)
        return 0
    if cmd == MMUEXT_UNPIN_TABLE:
        mm.unpin(arg1)
        return 0
    if cmd == MMUEXT_NEW_BASEPTR:
        if not pv.kernel_mode:
            return -EINVAL
        vcpu.switch_baseptr(arg1)           # PageTableError: the op's -errno
        return 0
    if cmd == MMUEXT_NEW_USER_BASEPTR:
        vcpu.switch_baseptr(arg1, user=True)
        return 0
    if cmd in (MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_TLB_FLUSH_MULTI, MMUEXT_TLB_FLUSH_ALL,
               MMUEXT_INVLPG_LOCAL, MMUEXT_INVLPG_MULTI, MMUEXT_INVLPG_ALL):
        dom.flush_tlbs(vcpu, all_vcpus=cmd not in (MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL))
        return 0
    if cmd in (MMUEXT_FLUSH_CACHE, MMUEXT_FLUSH_CACHE_GLOBAL):
        return -EPERM     # needs a privileged domain in Xen
    if cmd == MMUEXT_SET_LDT:
        base, ents = arg1, arg2 & 0xFFFFFFFF
        if ents > 8192 or base & 0xFFF or (ents and not L.canonical(base)):
            return -EINVAL
        pv.ldt_base, pv.ldt_entries = base, ents
        return 0
    if cmd == MMUEXT_CLEAR_PAGE:
        if not mm.owns(arg1) or (mm.tcount[arg1] and mm.ptype[arg1] != PGT_WRITABLE):
            return -EINVAL
        mm.ram[arg1 << 12:(arg1 + 1) << 12] = bytes(L.PAGE_SIZE)
        mm.mark_dirty(arg1)
        return 0
    if cmd == MMUEXT_COPY_PAGE:
        dst, src = arg1, arg2
        if not mm.owns(dst) or not mm.owns(src) or \
                (mm.tcount[dst] and mm.ptype[dst] != PGT_WRITABLE):
            return -EINVAL
        mm.ram[dst << 12:(dst + 1) << 12] = mm.ram[src << 12:(src + 1) << 12]
        mm.mark_dirty(dst)
        return 0
    if cmd in (MMUEXT_MARK_SUPER, MMUEXT_UNMARK_SUPER):
        return -EOPNOTSUPP
    return -ENOSYS




def update_va_mapping_otherdomain(vcpu, va, val, flags, domid, *_):
    """Xen's do_update_va_mapping_otherdomain: update_va_mapping with the
    frame owned by `domid` (get_pg_owner). DOMID_SELF is this domain; its own
    id, DOMID_XEN and domains that do not exist are -ESRCH; a domU may not map
    another domain's frames (XSM: -EPERM), nor I/O space (DOMID_IO)."""
    domid &= 0xFFFF                     # domid_t
    if domid == DOMID_SELF:
        return update_va_mapping(vcpu, va, val, flags)
    if domid == 0 or domid == 0x7FF1:   # domain 0, DOMID_IO
        return -EPERM
    return -ESRCH


HANDLERS = {HC.mmu_update: mmu_update, HC.update_va_mapping: update_va_mapping,
            HC.mmuext_op: mmuext_op, HC.update_va_mapping_otherdomain: update_va_mapping_otherdomain}
