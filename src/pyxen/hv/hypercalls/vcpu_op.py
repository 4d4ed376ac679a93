"""vcpu_op: per-vCPU operations (Xen's common/domain.c do_vcpu_op and
arch/x86/domain.c): bringing vCPUs up and down, timers, runstate, vcpu_info."""
from __future__ import annotations

import ctypes

from .. import abi
from .. import layout as L
from ..abi import (HC, EFAULT, EINVAL, ENOENT, ENOSYS, EEXIST, EALREADY_, ETIME_,
                   VCPUOP_initialise, VCPUOP_up, VCPUOP_down, VCPUOP_is_up,
                   VCPUOP_get_runstate_info, VCPUOP_register_runstate_memory_area,
                   VCPUOP_set_periodic_timer, VCPUOP_stop_periodic_timer,
                   VCPUOP_set_singleshot_timer, VCPUOP_stop_singleshot_timer,
                   VCPUOP_register_vcpu_info, VCPUOP_get_physid,
                   VCPUOP_register_vcpu_time_memory_area, VCPUOP_send_nmi,
                   VCPU_SSHOTTMR_future, RUNSTATE_offline)
from ..guestmem import GuestFault

MIN_PERIOD_NS = 1_000_000          # Xen refuses periods under 1 ms
GUEST_CONTEXT_SIZE = ctypes.sizeof(abi.VcpuGuestContext)      # 5168
_VCPU_INFO = abi.checked_struct("<QI", abi.VcpuRegisterVcpuInfo, "mfn offset")
_SINGLESHOT = abi.checked_struct("<QI", abi.VcpuSetSingleshotTimer, "timeout_abs_ns flags")
_PERIODIC = abi.checked_struct("<Q", abi.VcpuSetPeriodicTimer, "period_ns")
_RUNSTATE_AREA = abi.checked_struct("<Q", abi.VcpuRegisterRunstateMemoryArea, "addr")
_TIME_AREA = abi.checked_struct("<Q", abi.VcpuRegisterTimeMemoryArea, "addr")


def vcpu_op(vcpu, cmd, vcpuid, arg, *_):
    dom = vcpu.domain
    if vcpuid >= len(dom.vcpus):
        return -ENOENT
    target = dom.vcpus[vcpuid]
    mem = vcpu.mem
    try:
        if cmd == VCPUOP_is_up:
            return 1 if target.pv.online else 0
        if cmd == VCPUOP_initialise:
            if target.initialised:
                return -EEXIST      # Xen: once initialised (even if down), only VCPUOP_up
            ctx = mem.read(arg, GUEST_CONTEXT_SIZE)
            return target.initialise(ctx)
        if cmd == VCPUOP_up:
            if not target.initialised:
                return -EINVAL
            if not target.pv.online:        # Xen: up of a running vCPU does nothing
                dom.vcpu_up(target)
            return 0
        if cmd == VCPUOP_down:
            if target is not vcpu and target.pv.online:
                target.pv.online = False
                target.set_runstate(RUNSTATE_offline)
                target.kvcpu.kick()
                return 0
            if target is vcpu:
                vcpu.pv.online = False
                vcpu.set_runstate(RUNSTATE_offline)
                return 0
            return 0
        if cmd == VCPUOP_register_vcpu_info:
            mfn, offset = _VCPU_INFO.unpack(mem.read(arg, _VCPU_INFO.size))
            return dom.register_vcpu_info(target, mfn, offset, caller=vcpu)
        if cmd == VCPUOP_set_singleshot_timer:
            if target is not vcpu:
                return -EINVAL
            deadline, flags = _SINGLESHOT.unpack(mem.read(arg, _SINGLESHOT.size))
            if flags & VCPU_SSHOTTMR_future and deadline < dom.clock.now():
                return -ETIME_
            vcpu.timer.set_singleshot(deadline or 1)
            return 0
        if cmd == VCPUOP_stop_singleshot_timer:
            if target is not vcpu:
                return -EINVAL
            vcpu.timer.set_singleshot(0)
            return 0
        if cmd == VCPUOP_set_periodic_timer:
            (period,) = _PERIODIC.unpack(mem.read(arg, _PERIODIC.size))
            if period < MIN_PERIOD_NS:
                return -EINVAL
            target.timer.set_periodic(period)
            return 0
        if cmd == VCPUOP_stop_periodic_timer:
            target.timer.set_periodic(0)
            return 0
        if cmd == VCPUOP_register_runstate_memory_area:
            (va,) = _RUNSTATE_AREA.unpack(mem.read(arg, _RUNSTATE_AREA.size))
            if va and not L.canonical(va):
                return -EINVAL
            target.runstate_area = va
            if va and target is vcpu:
                vcpu.write_runstate(va)
            return 0
        if cmd == VCPUOP_get_runstate_info:
            mem.write(arg, target.runstate_bytes())
            return 0
        if cmd == VCPUOP_get_physid:
            return -EINVAL             # only for dom0
        if cmd == VCPUOP_register_vcpu_time_memory_area:
            (va,) = _TIME_AREA.unpack(mem.read(arg, _TIME_AREA.size))
            if va and (not L.canonical(va) or va & 7):
                return -EINVAL
            target.time_area = va
            if va:
                target.timer.update_time()
            return 0
        if cmd == VCPUOP_send_nmi:
            if arg:
                return -EINVAL          # Xen: the argument must be NULL
            target.raise_nmi()
            return 0
    except GuestFault:
        return -EFAULT
    return -ENOSYS


HANDLERS = {HC.vcpu_op: vcpu_op}
