"""vm_assist and the debug registers (Xen's common/domain.c, arch/x86/pv/misc-hypercalls.c)."""
from __future__ import annotations

from ..abi import (HC, EINVAL, EPERM, VMASST_CMD_enable, VMASST_CMD_disable,
                   VMASST_TYPE_writable_pagetables, VMASST_TYPE_pae_extended_cr3,
                   VMASST_TYPE_architectural_iopl, VMASST_TYPE_runstate_update_flag,
                   VMASST_TYPE_m2p_strict, VMASST_TYPE_4gb_segments,
                   VMASST_TYPE_4gb_segments_notify, HYPERVISOR_VIRT_END)

# the assists a 64-bit PV guest may turn on here
VALID_ASSISTS = {VMASST_TYPE_4gb_segments, VMASST_TYPE_4gb_segments_notify,
                 VMASST_TYPE_writable_pagetables, VMASST_TYPE_pae_extended_cr3,
                 VMASST_TYPE_architectural_iopl, VMASST_TYPE_runstate_update_flag,
                 VMASST_TYPE_m2p_strict}


def vm_assist(vcpu, cmd, atype, *_):
    dom = vcpu.domain
    if atype not in VALID_ASSISTS:
        return -EINVAL
    if atype == VMASST_TYPE_writable_pagetables and not dom.supports_writable_pagetables:
        return -EINVAL
    if cmd == VMASST_CMD_enable:
        dom.vm_assist |= 1 << atype
    elif cmd == VMASST_CMD_disable:
        dom.vm_assist &= ~(1 << atype)
    else:
        return -EINVAL
    for v in dom.vcpus:                 # architectural_iopl changes what cli/sti do
        v.sync_fast_flags()
    return 0


# --- debug registers (Xen's set_debugreg / x86emul_read_dr) -----------------------------
DR6_DEFAULT = 0xFFFF0FF0
DR6_WRITABLE = 0xE00F             # B0-B3, BD, BS, BT
DR7_DEFAULT = 0x400
DR7_WRITABLE = 0xFFFF23FF          # L/G enables, LE/GE, RTM, GD, RW/LEN fields
DR7_GD = 1 << 13
DR7_ACTIVE_MASK = 0xFF             # L0-3 / G0-3
DR_IO = 2                          # RW encoding of an I/O breakpoint
CR4_DE = 1 << 3
ENODEV = 19


def _guest_cr4(vcpu) -> int:
    em = getattr(vcpu.domain, "emulator", None)
    return em.vstate(vcpu).cr4 if em is not None else 0


def _breakpoint_addr_ok(va: int) -> bool:
    """Xen's __addr_ok for a 64-bit PV guest: the lower half, or above Xen's hole."""
    return va < 1 << 47 or va >= HYPERVISOR_VIRT_END


def set_debugreg(vcpu, reg, value, *_):
    """Xen's set_debugreg: -ENODEV is #UD for a mov, -EINVAL/-EPERM #GP.
    Breakpoints are armed in the vCPU's real debug registers (I/O
    breakpoints are kept aside: a PV guest's port accesses are emulated)."""
    pv = vcpu.pv
    value &= (1 << 64) - 1
    if reg in (4, 5):
        if _guest_cr4(vcpu) & CR4_DE:
            return -ENODEV
        reg += 2
    if reg < 4:
        if not _breakpoint_addr_ok(value):
            return -EPERM
    elif reg == 6:
        if value >> 32:
            return -EINVAL
        value = (value & DR6_WRITABLE) | DR6_DEFAULT     # RTM (bit 16) stays reserved-1
    elif reg == 7:
        if value >> 32:
            return -EINVAL
        value = (value & DR7_WRITABLE) | DR7_DEFAULT
        if value & DR7_GD:
            return -EPERM
        emul = 0
        if value & DR7_ACTIVE_MASK:
            for n in range(4):
                if (value >> (16 + 4 * n)) & 3 == DR_IO:
                    if not _guest_cr4(vcpu) & CR4_DE:
                        return -EPERM
                    emul |= value & (3 << (2 * n))
        pv.dr7_emul = emul
        value &= ~emul
    else:
        return -ENODEV
    old = pv.debugreg[reg]
    pv.debugreg[reg] = value
    if value != old and reg != 6:
        _arm(vcpu)
    return 0


def _arm(vcpu) -> None:
    d = vcpu.pv.debugreg
    try:
        vcpu.kvcpu.set_debugregs(d[0:4], d[6], d[7])
    except OSError as e:
        vcpu.domain.trace(vcpu.id, "dr", f"KVM_SET_DEBUGREGS failed: {e}")


def get_debugreg(vcpu, reg, *_):
    pv = vcpu.pv
    if reg in (4, 5):
        if _guest_cr4(vcpu) & CR4_DE:
            return -ENODEV
        reg += 2
    if reg < 4 or reg == 6:
        return pv.debugreg[reg]
    if reg == 7:
        return pv.debugreg[7] | pv.dr7_emul
    return -ENODEV


def debug_exception(vcpu) -> None:
    """A #DB reached pyxen: the guest's %dr6 takes the hardware's status bits."""
    try:
        dr6 = vcpu.kvcpu.get_debugregs().dr6
    except OSError:
        return
    pv = vcpu.pv
    # merge in positive polarity (Xen's x86_merge_dr6): B0-3, BD, BS, BT set; RTM clears
    hit = (dr6 & 0xE00F)
    cur = pv.debugreg[6]
    cur = (cur & ~0xF) | hit if hit & 0xF else cur | hit
    if not dr6 & 0x10000:
        cur &= ~0x10000
    pv.debugreg[6] = cur & 0xFFFFFFFF


HANDLERS = {HC.vm_assist: vm_assist, HC.set_debugreg: set_debugreg,
            HC.get_debugreg: get_debugreg}
