"""ctypes layouts of the KVM ABI (linux/kvm.h, asm/kvm.h for x86-64).

Every structure that travels through an ioctl has its size checked against the
size encoded in that ioctl's number (see ``ioctls.py``), so a wrong layout
fails at import time instead of corrupting a vCPU.
"""
from __future__ import annotations

import ctypes

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class Regs(ctypes.Structure):
    _fields_ = [(n, u64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
        "rip", "rflags")]


class Segment(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u32), ("selector", u16), ("type", u8),
                ("present", u8), ("dpl", u8), ("db", u8), ("s", u8), ("l", u8),
                ("g", u8), ("avl", u8), ("unusable", u8), ("padding", u8)]


class DTable(ctypes.Structure):
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


class Sregs(ctypes.Structure):
    _fields_ = [("cs", Segment), ("ds", Segment), ("es", Segment), ("fs", Segment),
                ("gs", Segment), ("ss", Segment), ("tr", Segment), ("ldt", Segment),
                ("gdt", DTable), ("idt", DTable),
                ("cr0", u64), ("cr2", u64), ("cr3", u64), ("cr4", u64), ("cr8", u64),
                ("efer", u64), ("apic_base", u64), ("interrupt_bitmap", u64 * 4)]


class Fpu(ctypes.Structure):
    _fields_ = [("fpr", u8 * 128), ("fcw", u16), ("fsw", u16), ("ftwx", u8),
                ("pad1", u8), ("last_opcode", u16), ("last_ip", u64), ("last_dp", u64),
                ("xmm", u8 * 256), ("mxcsr", u32), ("pad2", u32)]


class DebugRegs(ctypes.Structure):
    _fields_ = [("db", u64 * 4), ("dr6", u64), ("dr7", u64), ("flags", u64),
                ("reserved", u64 * 9)]


class Xsave(ctypes.Structure):
    """struct kvm_xsave: the vCPU's FPU/SSE/AVX state in the XSAVE layout."""
    _fields_ = [("region", u32 * 1024)]


class VcpuEvents(ctypes.Structure):
    _fields_ = [("exception_injected", u8), ("exception_nr", u8),
                ("exception_has_error_code", u8), ("exception_pending", u8),
                ("exception_error_code", u32),
                ("interrupt_injected", u8), ("interrupt_nr", u8), ("interrupt_soft", u8),
                ("interrupt_shadow", u8),
                ("nmi_injected", u8), ("nmi_pending", u8), ("nmi_masked", u8), ("nmi_pad", u8),
                ("sipi_vector", u32), ("flags", u32),
                ("smi", u8 * 4), ("triple_fault_pending", u8), ("reserved", u8 * 26),
                ("exception_has_payload", u8), ("exception_payload", u64)]


class SyncRegs(ctypes.Structure):
    _fields_ = [("regs", Regs), ("sregs", Sregs), ("events", VcpuEvents)]


class UserspaceMemoryRegion(ctypes.Structure):
    _fields_ = [("slot", u32), ("flags", u32), ("guest_phys_addr", u64),
                ("memory_size", u64), ("userspace_addr", u64)]


class DirtyLog(ctypes.Structure):
    _fields_ = [("slot", u32), ("padding1", u32), ("dirty_bitmap", u64)]


class CpuidEntry2(ctypes.Structure):
    _fields_ = [("function", u32), ("index", u32), ("flags", u32), ("eax", u32),
                ("ebx", u32), ("ecx", u32), ("edx", u32), ("padding", u32 * 3)]


class CpuidHeader(ctypes.Structure):
    _fields_ = [("nent", u32), ("padding", u32)]


def cpuid2_struct(n: int):
    """A kvm_cpuid2 with room for n entries."""
    class Cpuid2(ctypes.Structure):
        _fields_ = [("nent", u32), ("padding", u32), ("entries", CpuidEntry2 * n)]
    return Cpuid2()


class MsrEntry(ctypes.Structure):
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class MsrsHeader(ctypes.Structure):
    _fields_ = [("nmsrs", u32), ("pad", u32)]


def msrs_struct(n: int):
    class Msrs(ctypes.Structure):
        _fields_ = [("nmsrs", u32), ("pad", u32), ("entries", MsrEntry * n)]
    return Msrs()


class IoExit(ctypes.Structure):
    _fields_ = [("direction", u8), ("size", u8), ("port", u16), ("count", u32),
                ("data_offset", u64)]


class InternalExit(ctypes.Structure):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class FailEntryExit(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class ExitUnion(ctypes.Union):
    _fields_ = [("io", IoExit), ("internal", InternalExit),
                ("fail_entry", FailEntryExit), ("pad", ctypes.c_char * 256)]


class SyncUnion(ctypes.Union):
    _fields_ = [("regs", SyncRegs), ("padding", ctypes.c_char * 2048)]


class Run(ctypes.Structure):
    _fields_ = [("request_interrupt_window", u8), ("immediate_exit", u8),
                ("padding1", u8 * 6), ("exit_reason", u32),
                ("ready_for_interrupt_injection", u8), ("if_flag", u8), ("flags", u16),
                ("cr8", u64), ("apic_base", u64), ("exit", ExitUnion),
                ("kvm_valid_regs", u64), ("kvm_dirty_regs", u64), ("s", SyncUnion)]


# Sizes from the kernel's uapi headers (x86-64); checked against ioctl numbers too.
EXPECTED_SIZES = {
    Regs: 144, Sregs: 312, Segment: 24, Fpu: 416, VcpuEvents: 64, SyncRegs: 520,
    UserspaceMemoryRegion: 32, CpuidEntry2: 40, MsrEntry: 16, Run: 2352,
}
for _cls, _size in EXPECTED_SIZES.items():
    if ctypes.sizeof(_cls) != _size:  # pragma: no cover - layout bug
        raise ImportError(f"kvm struct {_cls.__name__} is {ctypes.sizeof(_cls)} bytes, "
                          f"the kernel's is {_size}")
assert Run.kvm_valid_regs.offset == 288 and Run.s.offset == 304 and Run.exit.offset == 32
