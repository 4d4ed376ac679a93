"""pyxen.kvm — the KVM layer. It knows nothing of Xen.

`Kvm` opens /dev/kvm; `Kvm.create_vm()` gives a `Vm` with memory slots and
vCPUs; `Vcpu.run()` enters the guest (through ctypes, so EINTR from a kick
reaches us instead of being retried by Python).
"""
from .system import Kvm, KvmError, KvmUnavailable, Vm, Vcpu, GuestMemory
from . import structs, ioctls

__all__ = ["Kvm", "KvmError", "KvmUnavailable", "Vm", "Vcpu", "GuestMemory", "structs", "ioctls"]
