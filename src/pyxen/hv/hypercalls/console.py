"""console_io: the hypervisor's own console (Xen's common/console.c)."""
from __future__ import annotations

from ..abi import HC, CONSOLEIO_write, CONSOLEIO_read, EFAULT, ENOSYS, EINVAL
from ..guestmem import GuestFault

MAX_WRITE = 16 * 1024


def console_io(vcpu, cmd, count, buf, *_):
    if cmd == CONSOLEIO_write:
        if count > MAX_WRITE or count < 0:
            return -EINVAL
        try:
            data = vcpu.mem.read(buf, count)
        except GuestFault:
            return -EFAULT
        vcpu.domain.console_write(data, source="console_io")
        return 0
    if cmd == CONSOLEIO_read:
        # domU has no access to the hypervisor's input (Xen: -EPERM for domU
        # unless privileged); nothing to read
        return 0
    return -ENOSYS


HANDLERS = {HC.console_io: console_io}
