"""event_channel_op. pyxen's first cut knows the two channels every domU is
born with (console and XenStore, both to dom0); the full event-channel ABI
(2-level and FIFO, VIRQs, IPIs, inter-domain) is the events work."""
from __future__ import annotations

import struct

from ..abi import HC, EFAULT, EINVAL, ENOSYS, EVTCHNOP_send
from ..guestmem import GuestFault


def event_channel_op(vcpu, cmd, arg, *_):
    dom = vcpu.domain
    if cmd == EVTCHNOP_send:
        try:
            (port,) = struct.unpack("<I", vcpu.mem.read(arg, 4))
        except GuestFault:
            return -EFAULT
        return dom.evtchn_send(vcpu, port)
    return -ENOSYS


HANDLERS = {HC.event_channel_op: event_channel_op}
