"""xen/include/public/xen.h: hypercall numbers, mmu_update / mmuext_op,
vm_assist, domain ids, vcpu_info, shared_info and start_info."""
from __future__ import annotations

import ctypes

from ._types import Struct, u8, u32, u64, i8, char, ulong, xen_pfn_t, xen_ulong_t
from .arch_x86_64 import ArchSharedInfo, XEN_LEGACY_MAX_VCPUS

_HEADER = "xen/xen.h"

# hypercall numbers (Xen's __HYPERVISOR_<name>)
HYPERCALLS = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch",
    4: "set_callbacks", 5: "fpu_taskswitch", 6: "sched_op_compat", 7: "platform_op",
    8: "set_debugreg", 9: "get_debugreg", 10: "update_descriptor", 12: "memory_op",
    13: "multicall", 14: "update_va_mapping", 15: "set_timer_op",
    16: "event_channel_op_compat", 17: "xen_version", 18: "console_io",
    19: "physdev_op_compat", 20: "grant_table_op", 21: "vm_assist",
    22: "update_va_mapping_otherdomain", 23: "iret", 24: "vcpu_op",
    25: "set_segment_base", 26: "mmuext_op", 27: "xsm_op", 28: "nmi_op", 29: "sched_op",
    30: "callback_op", 31: "xenoprof_op", 32: "event_channel_op", 33: "physdev_op",
    34: "hvm_op", 35: "sysctl", 36: "domctl", 37: "kexec_op", 38: "tmem_op",
    39: "argo_op", 40: "xenpmu_op", 41: "dm_op", 42: "hypfs_op",
}
HC = type("HC", (), {name: nr for nr, name in HYPERCALLS.items()})
NR_HYPERCALLS = 64                 # pyxen's dispatch table size

CONSOLEIO_write, CONSOLEIO_read = 0, 1

VMASST_CMD_enable, VMASST_CMD_disable = 0, 1
VMASST_TYPE_4gb_segments, VMASST_TYPE_4gb_segments_notify = 0, 1
VMASST_TYPE_writable_pagetables, VMASST_TYPE_pae_extended_cr3 = 2, 3
VMASST_TYPE_architectural_iopl, VMASST_TYPE_runstate_update_flag = 4, 5
VMASST_TYPE_m2p_strict = 32

MMU_NORMAL_PT_UPDATE, MMU_MACHPHYS_UPDATE = 0, 1
MMU_PT_UPDATE_PRESERVE_AD, MMU_PT_UPDATE_NO_TRANSLATE = 2, 3
MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_PIN_L3_TABLE = 0, 1, 2
MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE, MMUEXT_NEW_BASEPTR = 3, 4, 5
MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL, MMUEXT_TLB_FLUSH_MULTI = 6, 7, 8
MMUEXT_INVLPG_MULTI, MMUEXT_TLB_FLUSH_ALL, MMUEXT_INVLPG_ALL = 9, 10, 11
MMUEXT_FLUSH_CACHE, MMUEXT_SET_LDT, MMUEXT_NEW_USER_BASEPTR = 12, 13, 15
MMUEXT_CLEAR_PAGE, MMUEXT_COPY_PAGE, MMUEXT_FLUSH_CACHE_GLOBAL = 16, 17, 18
MMUEXT_MARK_SUPER, MMUEXT_UNMARK_SUPER = 19, 20
UVMF_NONE, UVMF_TLB_FLUSH, UVMF_INVLPG, UVMF_FLUSHTYPE_MASK = 0, 1, 2, 3
UVMF_ALL = 4

DOMID_FIRST_RESERVED = 0x7FF0

# virtual IRQs; the per-vCPU ones (the rest are global: bound to vCPU 0)
VIRQ_TIMER, VIRQ_DEBUG, VIRQ_XENOPROF, VIRQ_XENPMU = 0, 1, 7, 13
NR_VIRQS = 24
DOMID_SELF, DOMID_IO, DOMID_XEN, DOMID_INVALID = 0x7FF0, 0x7FF1, 0x7FF2, 0x7FF4
INVALID_MFN = (1 << 64) - 1

SIF_PRIVILEGED, SIF_INITDOMAIN, SIF_MULTIBOOT_MOD = 1, 2, 4
SIF_MOD_START_PFN, SIF_VIRT_P2M_4TOOLS = 8, 16
START_INFO_MAGIC = b"xen-3.0-x86_64"
MAX_GUEST_CMDLINE = 1024
LEGACY_MAX_VCPUS = XEN_LEGACY_MAX_VCPUS


class MmuUpdate(Struct):
    _c_type_ = "struct mmu_update"
    _fields_ = [("ptr", u64), ("val", u64)]


class MmuextOp(Struct):
    _c_type_ = "struct mmuext_op"
    _c_names_ = {"arg1": "arg1.mfn", "arg2": "arg2.src_mfn"}
    _fields_ = [("cmd", u32), ("_pad", u32), ("arg1", xen_pfn_t), ("arg2", xen_pfn_t)]


class MulticallEntry(Struct):
    _c_type_ = "struct multicall_entry"
    _fields_ = [("op", xen_ulong_t), ("result", xen_ulong_t), ("args", xen_ulong_t * 6)]


class VcpuTimeInfo(Struct):
    _c_type_ = "struct vcpu_time_info"
    _fields_ = [("version", u32), ("pad0", u32), ("tsc_timestamp", u64), ("system_time", u64),
                ("tsc_to_system_mul", u32), ("tsc_shift", i8), ("flags", u8),
                ("pad1", u8 * 2)]


class VcpuInfo(Struct):
    _c_type_ = "struct vcpu_info"
    _c_names_ = {"cr2": "arch.cr2", "pad_arch": "arch.pad"}
    _fields_ = [("evtchn_upcall_pending", u8), ("evtchn_upcall_mask", u8), ("_pad", u8 * 6),
                ("evtchn_pending_sel", xen_ulong_t), ("cr2", ulong), ("pad_arch", ulong),
                ("time", VcpuTimeInfo)]


class SharedInfo(Struct):
    _c_type_ = "struct shared_info"
    _fields_ = [("vcpu_info", VcpuInfo * XEN_LEGACY_MAX_VCPUS),
                ("evtchn_pending", xen_ulong_t * 64), ("evtchn_mask", xen_ulong_t * 64),
                ("wc_version", u32), ("wc_sec", u32), ("wc_nsec", u32), ("wc_sec_hi", u32),
                ("arch", ArchSharedInfo)]


class StartInfo(Struct):
    """start_info for a domU: the console union's domU arm, flattened."""
    _c_type_ = "struct start_info"
    _c_names_ = {"console_mfn": "console.domU.mfn", "console_evtchn": "console.domU.evtchn"}
    _fields_ = [("magic", char * 32), ("nr_pages", ulong), ("shared_info", ulong),
                ("flags", u32), ("_pad0", u32), ("store_mfn", xen_pfn_t), ("store_evtchn", u32),
                ("_pad1", u32), ("console_mfn", xen_pfn_t), ("console_evtchn", u32),
                ("_pad2", u32), ("pt_base", ulong), ("nr_pt_frames", ulong),
                ("mfn_list", ulong), ("mod_start", ulong), ("mod_len", ulong),
                ("cmd_line", char * MAX_GUEST_CMDLINE),
                ("first_p2m_pfn", ulong), ("nr_p2m_frames", ulong)]


for _cls, _size in ((StartInfo, 1168), (VcpuInfo, 64), (SharedInfo, 3136), (VcpuTimeInfo, 32)):
    assert ctypes.sizeof(_cls) == _size, (_cls, ctypes.sizeof(_cls))
