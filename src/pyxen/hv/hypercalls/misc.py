"""vm_assist and the debug registers (Xen's common/domain.c, arch/x86/pv/misc-hypercalls.c)."""
from __future__ import annotations

from ..abi import (HC, EINVAL, EPERM, VMASST_CMD_enable, VMASST_CMD_disable,
                   VMASST_TYPE_writable_pagetables, VMASST_TYPE_pae_extended_cr3,
                   VMASST_TYPE_architectural_iopl, VMASST_TYPE_runstate_update_flag,
                   VMASST_TYPE_m2p_strict, VMASST_TYPE_4gb_segments,
                   VMASST_TYPE_4gb_segments_notify)

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
        return 0
    if cmd == VMASST_CMD_disable:
        dom.vm_assist &= ~(1 << atype)
        return 0
    return -EINVAL


DR7_RESERVED_ONE = 0x400
DR7_GD = 1 << 13


def set_debugreg(vcpu, reg, value, *_):
    """Debug registers are kept per vCPU as Xen keeps them; breakpoints are not
    armed in hardware on this host (the values are stored and read back)."""
    if reg > 7 or reg in (4, 5):
        return -EINVAL
    if reg < 4:
        if value >= 0x00007FFFFFFFF000 and value < 0xFFFF880000000000:
            return -EPERM
    elif reg == 6:
        value = (value & 0xE00F) | 0xFFFF0FF0
    elif reg == 7:
        if value & DR7_GD:
            return -EPERM
        value |= DR7_RESERVED_ONE
    vcpu.pv.debugreg[reg] = value
    return 0


def get_debugreg(vcpu, reg, *_):
    if reg > 7 or reg in (4, 5):
        return -EINVAL
    v = vcpu.pv.debugreg[reg]
    if reg == 6 and v == 0:
        v = 0xFFFF0FF0
    if reg == 7 and v == 0:
        v = DR7_RESERVED_ONE
    return v


HANDLERS = {HC.vm_assist: vm_assist, HC.set_debugreg: set_debugreg,
            HC.get_debugreg: get_debugreg}
