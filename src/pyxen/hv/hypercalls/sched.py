"""sched_op: yield, block, shutdown, poll (Xen's common/sched/core.c)."""
from __future__ import annotations

import os
import struct

from .. import abi
from ..abi import (HC, EFAULT, EINVAL, EPERM, ENOSYS, SCHEDOP_yield, SCHEDOP_block,
                   SCHEDOP_shutdown, SCHEDOP_poll, SCHEDOP_remote_shutdown,
                   SCHEDOP_shutdown_code, SCHEDOP_watchdog, SHUTDOWN_soft_reset,
                   SHUTDOWN_suspend)
from ..guestmem import GuestFault
from . import Hypercall

_SHUTDOWN = abi.checked_struct("<I", abi.SchedShutdown, "reason")   # shutdown_code's too
_POLL = abi.checked_struct("<QI4xQ", abi.SchedPoll, "ports nr_ports timeout")
_PORT = abi.checked_struct("<I", abi.EvtchnSend, "port")            # an evtchn_port_t


def sched_op(vcpu, cmd, arg, a3=0, *_):
    dom = vcpu.domain
    if cmd == SCHEDOP_yield:
        os.sched_yield()
        return 0
    if cmd == SCHEDOP_block:
        return dom.block(vcpu, None)
    if cmd in (SCHEDOP_shutdown, SCHEDOP_shutdown_code):
        try:
            (reason,) = _SHUTDOWN.unpack(vcpu.mem.read(arg, _SHUTDOWN.size))
        except GuestFault:
            return -EFAULT
        if reason > SHUTDOWN_soft_reset:
            return -EINVAL
        if cmd == SCHEDOP_shutdown_code:
            dom.shutdown_code = reason
            return 0
        if reason == SHUTDOWN_suspend:
            # the third argument names the guest's start_info frame (Linux's
            # HYPERVISOR_suspend); restore checks it again before using it
            dom.suspend(vcpu, a3)
            return 0
        dom.shutdown(reason, vcpu)
        return 0
    if cmd == SCHEDOP_poll:
        try:
            ports_ptr, nr_ports, timeout = _POLL.unpack(vcpu.mem.read(arg, _POLL.size))
        except GuestFault:
            return -EFAULT
        if nr_ports > 128:
            return -EINVAL
        try:
            ports = struct.unpack(f"<{nr_ports}I",
                                  vcpu.mem.read(ports_ptr, _PORT.size * nr_ports))
        except GuestFault:
            return -EFAULT
        valid = len(dom.events.ports)
        if any(p >= valid for p in ports):
            return -EINVAL      # Xen's port_is_valid(); also keeps the bitmap reads in bounds
        return dom.block(vcpu, (ports, timeout))
    if cmd == SCHEDOP_remote_shutdown:
        return -EPERM        # only a privileged domain may shut down others
    if cmd == SCHEDOP_watchdog:
        return -ENOSYS
    return -ENOSYS


def set_timer_op(vcpu, timeout, *_):
    """Set (or with 0, cancel) this vCPU's single-shot timer, in system time ns."""
    vcpu.timer.set_singleshot(timeout)
    return 0


# sched_op sleeps in block and poll: never under the domain lock
HANDLERS = {HC.sched_op: Hypercall(HC.sched_op, sched_op, locked=False, may_block=True),
            HC.set_timer_op: set_timer_op}
