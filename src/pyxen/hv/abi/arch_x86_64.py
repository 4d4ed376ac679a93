"""xen/include/public/arch-x86/xen.h and arch-x86/xen-x86_64.h (reached
through xen.h): flat selectors, the hypervisor hole, the M2P address,
trap_info, cpu_user_regs, vcpu_guest_context, arch_shared_info."""
from __future__ import annotations

import ctypes

from ._types import Struct, u8, u16, u32, u64, char, ulong, xen_pfn_t

_HEADER = "xen/xen.h"

FLAT_RING3_CS32 = 0xE023
FLAT_RING3_CS64 = 0xE033
FLAT_RING3_DS32 = 0xE02B
FLAT_RING3_SS64 = 0xE02B
FLAT_KERNEL_CS = FLAT_USER_CS = FLAT_RING3_CS64
FLAT_KERNEL_SS = FLAT_USER_SS = FLAT_RING3_SS64
FIRST_RESERVED_GDT_PAGE = 14
FIRST_RESERVED_GDT_ENTRY = FIRST_RESERVED_GDT_PAGE * 512
XEN_LEGACY_MAX_VCPUS = 32

# the hypervisor's part of the address space (PML4 slots 256-271): never the
# guest's; the read-only M2P table sits at its start
HYPERVISOR_VIRT_START = 0xFFFF800000000000
HYPERVISOR_VIRT_END = 0xFFFF880000000000
MACH2PHYS_VIRT_START = 0xFFFF800000000000
MACH2PHYS_VIRT_END = 0xFFFF804000000000

SEGBASE_FS, SEGBASE_GS_USER, SEGBASE_GS_KERNEL, SEGBASE_GS_USER_SEL = 0, 1, 2, 3
VGCF_i387_valid = 1 << 0
VGCF_in_kernel = 1 << 2
VGCF_failsafe_disables_events = 1 << 3
VGCF_syscall_disables_events = 1 << 4
VGCF_online = 1 << 5
VGCF_in_syscall = 1 << 8

# x86 exception vectors that push an error code, and their names (pyxen's own)
ERRCODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
TRAP_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
              8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF",
              17: "#AC", 18: "#MC", 19: "#XM", 20: "#VE", 21: "#CP"}


class TrapInfo(Struct):
    _c_type_ = "struct trap_info"
    _fields_ = [("vector", u8), ("flags", u8), ("cs", u16), ("_pad", u32), ("address", ulong)]


# the general-purpose registers in cpu_user_regs order
USER_REGS_GPRS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
                  "rax", "rcx", "rdx", "rsi", "rdi")


class CpuUserRegs(Struct):
    _c_type_ = "struct cpu_user_regs"
    _fields_ = ([(r, u64) for r in USER_REGS_GPRS]
                + [("error_code", u32), ("entry_vector", u32), ("rip", u64),
                   ("cs", u16), ("_pad0", u16), ("saved_upcall_mask", u8), ("_pad1", u8 * 3),
                   ("rflags", u64), ("rsp", u64)]
                + [x for s in ("ss", "es", "ds", "fs", "gs") for x in ((s, u16), (f"_p{s}", u16 * 3))])


class VcpuGuestContext(Struct):
    _c_type_ = "struct vcpu_guest_context"
    _fields_ = [("fpu_ctxt", char * 512), ("flags", ulong), ("user_regs", CpuUserRegs),
                ("trap_ctxt", TrapInfo * 256), ("ldt_base", ulong), ("ldt_ents", ulong),
                ("gdt_frames", ulong * 16), ("gdt_ents", ulong),
                ("kernel_ss", ulong), ("kernel_sp", ulong),
                ("ctrlreg", ulong * 8), ("debugreg", ulong * 8),
                ("event_callback_eip", ulong), ("failsafe_callback_eip", ulong),
                ("syscall_callback_eip", ulong), ("vm_assist", ulong),
                ("fs_base", u64), ("gs_base_kernel", u64), ("gs_base_user", u64)]


class ArchSharedInfo(Struct):
    _c_type_ = "struct arch_shared_info"
    _fields_ = [("max_pfn", ulong), ("pfn_to_mfn_frame_list_list", xen_pfn_t),
                ("nmi_reason", ulong), ("p2m_cr3", ulong), ("p2m_vaddr", ulong),
                ("p2m_generation", ulong)]


for _cls, _size in ((TrapInfo, 16), (CpuUserRegs, 200), (VcpuGuestContext, 5168)):
    assert ctypes.sizeof(_cls) == _size, (_cls, ctypes.sizeof(_cls))
