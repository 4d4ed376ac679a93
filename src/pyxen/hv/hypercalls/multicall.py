"""multicall: a batch of hypercalls in one trap (Xen's common/multicall.c)."""
from __future__ import annotations

import struct

from ..abi import HC, EFAULT, EINVAL
from ..guestmem import GuestFault

_ENTRY = struct.Struct("<Q Q 6Q")   # op, result, args[6]
MAX_CALLS = 4096
MASK = (1 << 64) - 1


def multicall(vcpu, call_list, nr_calls, *_):
    dom = vcpu.domain
    if nr_calls > MAX_CALLS:
        return -EINVAL
    for i in range(nr_calls):
        va = call_list + 64 * i
        try:
            op, _res, a1, a2, a3, a4, a5, _a6 = _ENTRY.unpack(vcpu.mem.read(va, 64))
        except GuestFault:
            return -EFAULT
        if op == HC.multicall or op == HC.iret:
            ret = -EINVAL
        else:
            ret = dom.hypercall(vcpu, op, a1, a2, a3, a4, a5, nested=True)
        try:
            vcpu.mem.write(va + 8, struct.pack("<Q", ret & MASK))
        except GuestFault:
            return -EFAULT
        if dom.stopped:
            break
    return 0


HANDLERS = {HC.multicall: multicall}
