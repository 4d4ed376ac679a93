"""vcpu_op: per-vCPU operations (Xen's common/domain.c do_vcpu_op).
Timers, runstate and bringing up secondary vCPUs come with the events/SMP work."""
from __future__ import annotations

import struct

from ..abi import (HC, EFAULT, EINVAL, ENOENT, ENOSYS, EEXIST, VCPUOP_is_up,
                   VCPUOP_register_vcpu_info, VCPUOP_get_physid)
from ..guestmem import GuestFault


def vcpu_op(vcpu, cmd, vcpuid, arg, *_):
    dom = vcpu.domain
    if vcpuid >= len(dom.vcpus):
        return -ENOENT
    target = dom.vcpus[vcpuid]
    if cmd == VCPUOP_is_up:
        return 1 if target.pv.online else 0
    if cmd == VCPUOP_register_vcpu_info:
        try:
            mfn, offset = struct.unpack("<QI", vcpu.mem.read(arg, 12))
        except GuestFault:
            return -EFAULT
        return dom.register_vcpu_info(target, mfn, offset)
    if cmd == VCPUOP_get_physid:
        return -EINVAL
    return -ENOSYS


HANDLERS = {HC.vcpu_op: vcpu_op}
