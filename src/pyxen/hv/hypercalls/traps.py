"""Trap table, callbacks, stack switch, iret, segment bases, FPU switch
(Xen's arch/x86/pv/traps.c, callback.c, iret.c, misc-hypercalls.c)."""
from __future__ import annotations

import struct

from .. import layout as L
from ..abi import (HC, EFAULT, EINVAL, ENOSYS, CALLBACKOP_register, CALLBACKOP_unregister,
                   CALLBACKTYPE_event, CALLBACKTYPE_failsafe, CALLBACKTYPE_syscall,
                   CALLBACKTYPE_syscall32, CALLBACKTYPE_sysenter, CALLBACKTYPE_nmi,
                   CALLBACKF_mask_events, SEGBASE_FS, SEGBASE_GS_USER, SEGBASE_GS_KERNEL,
                   SEGBASE_GS_USER_SEL, TrapInfo, HYPERVISOR_VIRT_START, HYPERVISOR_VIRT_END,
                   FLAT_KERNEL_CS)
from ..guestmem import GuestFault
from ..vcpu import TrapEntry, Callback, NMI_VECTOR
from . import Hypercall

MAX_TRAPS = 256


def guest_code_address(addr: int) -> bool:
    """Where a trap handler or callback may be: canonical (Xen's check) and,
    in pyxen, not in Xen's hypervisor hole either (a handler there could
    never run: the guest cannot map slots 256-271)."""
    return L.canonical(addr) and not (HYPERVISOR_VIRT_START <= addr < HYPERVISOR_VIRT_END)


def set_trap_table(vcpu, traps, *_):
    """Install (or with a NULL pointer, clear) the virtual IDT: trap_info
    entries until one with address 0."""
    pv = vcpu.pv
    if traps == 0:
        pv.trap_table.clear()
        return 0
    entries = {}
    for i in range(MAX_TRAPS):
        try:
            t = TrapInfo.from_buffer_copy(vcpu.mem.read(traps + 16 * i, 16))
        except GuestFault:
            return -EFAULT
        if t.address == 0:
            break
        if not guest_code_address(t.address):
            return -EINVAL
        entries[t.vector] = TrapEntry(t.flags, t.cs, t.address)
    pv.trap_table.update(entries)
    return 0


def _set_callback(vcpu, cbtype, address, flags) -> int:
    if address and not guest_code_address(address):
        return -EINVAL
    if cbtype in (CALLBACKTYPE_event, CALLBACKTYPE_failsafe, CALLBACKTYPE_syscall,
                  CALLBACKTYPE_syscall32, CALLBACKTYPE_sysenter, CALLBACKTYPE_nmi):
        vcpu.pv.callbacks[cbtype] = Callback(address, flags)
        if cbtype == CALLBACKTYPE_nmi:
            # Xen's register_guest_nmi_callback: the NMI vector of the
            # virtual IDT, events masked on entry (TI_SET_IF)
            vcpu.pv.trap_table[NMI_VECTOR] = TrapEntry(4, FLAT_KERNEL_CS, address)
        if cbtype == CALLBACKTYPE_event:
            vcpu.sync_fast_flags()          # the syscall stubs deliver events to it too
        return 0
    return -ENOSYS if cbtype != 3 else -EINVAL


def set_callbacks(vcpu, event, failsafe, syscall, *_):
    for t, a in ((CALLBACKTYPE_event, event), (CALLBACKTYPE_failsafe, failsafe),
                 (CALLBACKTYPE_syscall, syscall)):
        rc = _set_callback(vcpu, t, a, 0)
        if rc:
            return rc
    return 0


def callback_op(vcpu, cmd, arg, *_):
    try:
        if cmd == CALLBACKOP_register:
            cbtype, flags, address = struct.unpack("<HH4xQ", vcpu.mem.read(arg, 16))
            return _set_callback(vcpu, cbtype, address, flags)
        if cmd == CALLBACKOP_unregister:
            (cbtype,) = struct.unpack("<H", vcpu.mem.read(arg, 2))
            if cbtype == CALLBACKTYPE_event or cbtype == CALLBACKTYPE_failsafe:
                return -EINVAL   # Xen refuses to unregister these
            vcpu.pv.callbacks.pop(cbtype, None)
            if cbtype == CALLBACKTYPE_nmi:
                vcpu.pv.trap_table.pop(NMI_VECTOR, None)    # unregister_guest_nmi_callback
            return 0
    except GuestFault:
        return -EFAULT
    return -ENOSYS


def stack_switch(vcpu, ss, esp, *_):
    """The guest kernel stack for traps from user mode. The selector's RPL is
    forced to 3, as Xen does for 64-bit PV (the kernel runs in ring 3)."""
    vcpu.pv.kernel_ss = (ss & 0xFFFF) | 3
    vcpu.pv.kernel_sp = esp
    return 0


def iret(vcpu, *_):
    """Returns Exit.RETURNED: the registers are the frame's from now on."""
    return vcpu.do_iret()


def set_segment_base(vcpu, which, base, *_):
    if not L.canonical(base):
        return -EINVAL
    s = vcpu.fetch_sregs()
    pv = vcpu.pv
    if which == SEGBASE_FS:
        s.fs.base = base            # (one made with `syscall`: BP_FAST_STUB's, no exit)
    elif which == SEGBASE_GS_USER:
        if pv.kernel_mode:
            pv.gs_base_user = base
        else:
            s.gs.base = base
        return 0 if pv.kernel_mode else _changed(vcpu)
    elif which == SEGBASE_GS_KERNEL:
        if pv.kernel_mode:
            s.gs.base = base
        pv.gs_base_kernel = base
    elif which == SEGBASE_GS_USER_SEL:
        # load the user %gs selector (the base comes from the descriptor)
        sel = base & 0xFFFF
        if sel == 0:
            pv.gs_base_user = 0
            return 0
        desc = vcpu.descriptor(sel)
        if desc is None or (sel & 3) != 3:
            return -EINVAL
        pv.gs_base_user = ((desc >> 16) & 0xFFFFFF) | (((desc >> 56) & 0xFF) << 24)
        return 0
    else:
        return -EINVAL
    return _changed(vcpu)


def _changed(vcpu) -> int:
    vcpu.sregs_changed()
    return 0


def fpu_taskswitch(vcpu, set_ts, *_):
    """Set/clear the guest's virtual CR0.TS; with TS set the next FPU use raises #NM."""
    vcpu.set_cr0_ts(bool(set_ts))
    return 0


HANDLERS = {HC.set_trap_table: set_trap_table, HC.set_callbacks: set_callbacks,
            HC.callback_op: callback_op, HC.stack_switch: stack_switch,
            # iret only touches its own vCPU: no domain lock
            HC.iret: Hypercall(HC.iret, iret, locked=False),
            HC.set_segment_base: set_segment_base, HC.fpu_taskswitch: fpu_taskswitch}
