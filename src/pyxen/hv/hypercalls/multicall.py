"""multicall: a batch of hypercalls in one trap (Xen's common/multicall.c
with x86's pv_do_multicall_call)."""
from __future__ import annotations

import struct

from .. import abi
from ..abi import HC, EFAULT, EINVAL
from ..exits import Exit
from ..guestmem import GuestFault
from . import Hypercall

_ENTRY = abi.checked_struct("<QQ6Q", abi.MulticallEntry, "op result args")
_RESULT = abi.MulticallEntry.result.offset
_ULONG = struct.Struct("<Q")        # the result, an xen_ulong_t
assert abi.MulticallEntry.result.size == _ULONG.size
MAX_CALLS = 4096
MASK = (1 << 64) - 1


def multicall(vcpu, call_list, nr_calls, *_):
    """Each entry's result is written back as its call ends. Like Xen, the
    batch ends at an __HYPERVISOR_iret: the iret has switched to the frame's
    context (perhaps guest user mode), so nothing after it may run with the
    kernel's rights (XSA-213). The multicall then returns what the iret
    returned, the frame's rax, which the guest resumes with (as
    Exit.RETURNED: the vCPU's registers are the frame's). A nested
    multicall is refused (-EINVAL) and the batch goes on.

    The multicall itself holds no lock: each entry is dispatched by
    Domain.hypercall with its own table policy, so an entry that blocks
    (SCHEDOP_block/poll) sleeps without the domain lock and the batch goes
    on once it is woken, as on Xen (where the blocked vCPU's multicall is
    preempted and continued)."""
    dom = vcpu.domain
    nr_calls &= 0xFFFFFFFF
    if nr_calls > MAX_CALLS:
        return -EINVAL
    for i in range(nr_calls):
        va = call_list + _ENTRY.size * i
        try:
            op, _res, a1, a2, a3, a4, a5, _a6 = _ENTRY.unpack(vcpu.mem.read(va, _ENTRY.size))
        except GuestFault:
            return -EFAULT
        if op == HC.multicall:
            ret = -EINVAL               # Xen: "Multicall reentry is disallowed"
        else:
            ret = dom.hypercall(vcpu, op, a1, a2, a3, a4, a5, nested=True)
        if op == HC.iret:
            # Xen's do_iret returns the frame's rax (the register the guest
            # resumes with); the result is written back on a best-effort basis
            try:
                vcpu.mem.write(va + _RESULT, _ULONG.pack(vcpu.regs.rax & MASK))
            except GuestFault:
                pass
            return Exit.RETURNED
        try:
            vcpu.mem.write(va + _RESULT, _ULONG.pack(ret & MASK))
        except GuestFault:
            return -EFAULT
        if dom.stopped or not vcpu.pv.kernel_mode:
            break       # (only an iret leaves kernel mode; Xen would preempt here)
    return 0


# no lock of its own: every entry is dispatched with its own policy
HANDLERS = {HC.multicall: Hypercall(HC.multicall, multicall, locked=False, may_block=True)}
