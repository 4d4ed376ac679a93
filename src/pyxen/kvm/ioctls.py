"""KVM ioctl numbers, computed from the structure layouts and checked against
the numbers the kernel headers define (linux/kvm.h)."""
from __future__ import annotations

import ctypes

from . import structs as S

_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr):
    return _ioc(_IOC_NONE, nr, 0)


def _ior(nr, t):
    return _ioc(_IOC_READ, nr, ctypes.sizeof(t))


def _iow(nr, t):
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(t))


def _iowr(nr, t):
    return _ioc(_IOC_READ | _IOC_WRITE, nr, ctypes.sizeof(t))


KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, S.CpuidHeader)
KVM_CREATE_VCPU = _io(0x41)
KVM_GET_DIRTY_LOG = _iow(0x42, S.DirtyLog)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, S.UserspaceMemoryRegion)
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, S.Regs)
KVM_SET_REGS = _iow(0x82, S.Regs)
KVM_GET_SREGS = _ior(0x83, S.Sregs)
KVM_SET_SREGS = _iow(0x84, S.Sregs)
KVM_GET_MSRS = _iowr(0x88, S.MsrsHeader)
KVM_SET_MSRS = _iow(0x89, S.MsrsHeader)
KVM_GET_FPU = _ior(0x8C, S.Fpu)
KVM_SET_FPU = _iow(0x8D, S.Fpu)
KVM_SET_CPUID2 = _iow(0x90, S.CpuidHeader)
KVM_GET_VCPU_EVENTS = _ior(0x9F, S.VcpuEvents)
KVM_SET_VCPU_EVENTS = _iow(0xA0, S.VcpuEvents)
KVM_GET_DEBUGREGS = _ior(0xA1, S.DebugRegs)
KVM_SET_DEBUGREGS = _iow(0xA2, S.DebugRegs)
KVM_GET_TSC_KHZ = _io(0xA3)
KVM_GET_XSAVE = _ior(0xA4, S.Xsave)
KVM_SET_XSAVE = _iow(0xA5, S.Xsave)

# The values linux/kvm.h defines on x86-64. A mismatch means a struct above
# has the wrong size, which would make the kernel reject (or misread) it.
KERNEL_VALUES = {
    "KVM_GET_API_VERSION": 0xAE00, "KVM_CREATE_VM": 0xAE01, "KVM_CHECK_EXTENSION": 0xAE03,
    "KVM_GET_VCPU_MMAP_SIZE": 0xAE04, "KVM_GET_SUPPORTED_CPUID": 0xC008AE05,
    "KVM_CREATE_VCPU": 0xAE41, "KVM_GET_DIRTY_LOG": 0x4010AE42,
    "KVM_SET_USER_MEMORY_REGION": 0x4020AE46, "KVM_RUN": 0xAE80,
    "KVM_GET_REGS": 0x8090AE81, "KVM_SET_REGS": 0x4090AE82, "KVM_GET_SREGS": 0x8138AE83,
    "KVM_SET_SREGS": 0x4138AE84, "KVM_GET_MSRS": 0xC008AE88, "KVM_SET_MSRS": 0x4008AE89,
    "KVM_GET_FPU": 0x81A0AE8C, "KVM_SET_FPU": 0x41A0AE8D, "KVM_SET_CPUID2": 0x4008AE90,
    "KVM_GET_VCPU_EVENTS": 0x8040AE9F, "KVM_SET_VCPU_EVENTS": 0x4040AEA0,
    "KVM_GET_TSC_KHZ": 0xAEA3, "KVM_GET_DEBUGREGS": 0x8080AEA1, "KVM_SET_DEBUGREGS": 0x4080AEA2,
    "KVM_GET_XSAVE": 0x9000AEA4, "KVM_SET_XSAVE": 0x5000AEA5,
}
for _name, _value in KERNEL_VALUES.items():
    if globals()[_name] != _value:  # pragma: no cover - layout bug
        raise ImportError(f"{_name}: computed {globals()[_name]:#x}, kernel has {_value:#x}")

# capabilities
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SYNC_REGS = 74
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_XEN_HVM = 38
KVM_CAP_GET_TSC_KHZ = 61

KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2

# exit reasons
EXIT_NAMES = {
    0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT", 6: "MMIO",
    7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 16: "NMI",
    17: "INTERNAL_ERROR", 24: "SYSTEM_EVENT",
}
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT = 0, 1
