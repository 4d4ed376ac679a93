"""sysctl, domctl and platform_op: the control domain's hypercalls
(Xen's common/sysctl.c, common/domctl.c, arch/x86/platform_hypercall.c).

pyxen's guests are never the control or hardware domain (the toolstack in
dom0 is pyxend, outside the guest), so these answer a domU as Xen's default
XSM policy does: the operation is read, a wrong interface version is
-EACCES (the way guests probe the version, e.g. XTF), and anything else is
-EPERM — whatever the sub-op, also ones Xen was built without (livepatch).
"""
from __future__ import annotations

import struct

from ..abi import HC, EACCES, EFAULT, EPERM
from ..guestmem import GuestFault

# xen/include/public/{sysctl,domctl,platform}.h of Xen 4.17
XEN_SYSCTL_INTERFACE_VERSION = 0x00000015
XEN_DOMCTL_INTERFACE_VERSION = 0x00000015
XENPF_INTERFACE_VERSION = 0x03000001

_CMD_VERSION = struct.Struct("<II")     # uint32 cmd; uint32 interface_version


def _control_op(vcpu, arg: int, version: int) -> int:
    try:
        _cmd, iv = _CMD_VERSION.unpack(vcpu.mem.read(arg, _CMD_VERSION.size))
    except GuestFault:
        return -EFAULT
    if iv != version:
        return -EACCES
    return -EPERM


def sysctl(vcpu, arg, *_):
    return _control_op(vcpu, arg, XEN_SYSCTL_INTERFACE_VERSION)


def domctl(vcpu, arg, *_):
    return _control_op(vcpu, arg, XEN_DOMCTL_INTERFACE_VERSION)


def platform_op(vcpu, arg, *_):
    # Xen checks the hardware domain before reading the operation
    return -EPERM


HANDLERS = {HC.sysctl: sysctl, HC.domctl: domctl, HC.platform_op: platform_op}
