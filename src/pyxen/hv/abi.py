"""Numbers and layouts of Xen's public x86-64 PV ABI, as pyxen's own definitions.

Values come from Xen's public headers (libxen-dev: xen.h, sched.h, memory.h,
vcpu.h, callback.h, event_channel.h, version.h, features.h, physdev.h,
arch-x86/xen-x86_64.h); tests compare the layouts against those headers.
"""
from __future__ import annotations

import ctypes
import errno as _errno

# --- hypercall numbers ---------------------------------------------------
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
NR_HYPERCALLS = 64

# --- errno values as Xen returns them (negated) ---------------------------
EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO, E2BIG = 1, 2, 3, 4, 5, 6, 7
EBADF, EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST = 9, 11, 12, 13, 14, 16, 17
EXDEV, ENODEV, EINVAL, ENOSPC, ERANGE, ENOSYS, EOPNOTSUPP = 18, 19, 22, 28, 34, 38, 95
ETIME_, EALREADY_ = 62, 114
assert EINVAL == _errno.EINVAL and ENOSYS == _errno.ENOSYS and EFAULT == _errno.EFAULT

# --- segment selectors -----------------------------------------------------
FLAT_RING3_CS32 = 0xE023
FLAT_RING3_CS64 = 0xE033
FLAT_RING3_DS32 = 0xE02B
FLAT_RING3_SS64 = 0xE02B
FLAT_KERNEL_CS = FLAT_USER_CS = FLAT_RING3_CS64
FLAT_KERNEL_SS = FLAT_USER_SS = FLAT_RING3_SS64
FIRST_RESERVED_GDT_PAGE = 14
FIRST_RESERVED_GDT_ENTRY = FIRST_RESERVED_GDT_PAGE * 512
HYPERVISOR_VIRT_START = 0xFFFF800000000000
HYPERVISOR_VIRT_END = 0xFFFF880000000000

# --- sched_op ---------------------------------------------------------------
SCHEDOP_yield, SCHEDOP_block, SCHEDOP_shutdown, SCHEDOP_poll = 0, 1, 2, 3
SCHEDOP_remote_shutdown, SCHEDOP_shutdown_code, SCHEDOP_watchdog = 4, 5, 6
SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend = 0, 1, 2
SHUTDOWN_crash, SHUTDOWN_watchdog, SHUTDOWN_soft_reset = 3, 4, 5
SHUTDOWN_NAMES = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog",
                  5: "soft_reset"}

# --- console_io / xen_version / vm_assist -----------------------------------
CONSOLEIO_write, CONSOLEIO_read = 0, 1
XENVER_version, XENVER_extraversion, XENVER_compile_info, XENVER_capabilities = 0, 1, 2, 3
XENVER_changeset, XENVER_platform_parameters, XENVER_get_features = 4, 5, 6
XENVER_pagesize, XENVER_guest_handle, XENVER_commandline, XENVER_build_id = 7, 8, 9, 10
VMASST_CMD_enable, VMASST_CMD_disable = 0, 1
VMASST_TYPE_4gb_segments, VMASST_TYPE_4gb_segments_notify = 0, 1
VMASST_TYPE_writable_pagetables, VMASST_TYPE_pae_extended_cr3 = 2, 3
VMASST_TYPE_architectural_iopl, VMASST_TYPE_runstate_update_flag = 4, 5
VMASST_TYPE_m2p_strict = 32

XENFEAT_writable_page_tables = 0
XENFEAT_writable_descriptor_tables = 1
XENFEAT_auto_translated_physmap = 2
XENFEAT_supervisor_mode_kernel = 3
XENFEAT_pae_pgdir_above_4gb = 4
XENFEAT_mmu_pt_update_preserve_ad = 5
XENFEAT_highmem_assist = 6
XENFEAT_gnttab_map_avail_bits = 7

# --- mmu --------------------------------------------------------------------
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
DOMID_SELF, DOMID_IO, DOMID_XEN, DOMID_INVALID = 0x7FF0, 0x7FF1, 0x7FF2, 0x7FF4
INVALID_MFN = (1 << 64) - 1

# --- callbacks ----------------------------------------------------------------
CALLBACKTYPE_event, CALLBACKTYPE_failsafe, CALLBACKTYPE_syscall = 0, 1, 2
CALLBACKTYPE_sysenter_deprecated, CALLBACKTYPE_nmi, CALLBACKTYPE_sysenter = 3, 4, 5
CALLBACKTYPE_syscall32 = 7
CALLBACKOP_register, CALLBACKOP_unregister = 0, 1
CALLBACKF_mask_events = 1 << 0
SEGBASE_FS, SEGBASE_GS_USER, SEGBASE_GS_KERNEL, SEGBASE_GS_USER_SEL = 0, 1, 2, 3
VGCF_in_syscall = 1 << 8
VGCF_failsafe_disables_events = 1 << 3
VGCF_syscall_disables_events = 1 << 4

# --- memory_op --------------------------------------------------------------
XENMEM_increase_reservation, XENMEM_decrease_reservation = 0, 1
XENMEM_maximum_ram_page, XENMEM_current_reservation = 2, 3
XENMEM_maximum_reservation, XENMEM_machphys_mfn_list = 4, 5
XENMEM_populate_physmap, XENMEM_add_to_physmap = 6, 7
XENMEM_memory_map, XENMEM_machine_memory_map = 9, 10
XENMEM_exchange, XENMEM_machphys_mapping = 11, 12
XENMEM_set_memory_map, XENMEM_maximum_gpfn = 13, 14
XENMEM_remove_from_physmap = 15
XENMEM_get_vnumainfo = 26

# --- vcpu_op ------------------------------------------------------------------
VCPUOP_initialise, VCPUOP_up, VCPUOP_down, VCPUOP_is_up = 0, 1, 2, 3
VCPUOP_get_runstate_info, VCPUOP_register_runstate_memory_area = 4, 5
VCPUOP_set_periodic_timer, VCPUOP_stop_periodic_timer = 6, 7
VCPUOP_set_singleshot_timer, VCPUOP_stop_singleshot_timer = 8, 9
VCPUOP_register_vcpu_info, VCPUOP_send_nmi, VCPUOP_get_physid = 10, 11, 12
VCPUOP_register_vcpu_time_memory_area = 13

# --- physdev_op ------------------------------------------------------------
PHYSDEVOP_eoi, PHYSDEVOP_irq_status_query, PHYSDEVOP_set_iopl = 12, 5, 6
PHYSDEVOP_set_iobitmap, PHYSDEVOP_apic_read, PHYSDEVOP_apic_write = 7, 8, 9
PHYSDEVOP_map_pirq, PHYSDEVOP_unmap_pirq = 13, 14
PHYSDEVOP_pirq_eoi_gmfn_v1, PHYSDEVOP_pirq_eoi_gmfn_v2 = 17, 28
PHYSDEVOP_get_free_pirq, PHYSDEVOP_setup_gsi = 23, 21

# --- event channels ---------------------------------------------------------
EVTCHNOP_bind_interdomain, EVTCHNOP_bind_virq, EVTCHNOP_bind_pirq = 0, 1, 2
EVTCHNOP_close, EVTCHNOP_send, EVTCHNOP_status, EVTCHNOP_alloc_unbound = 3, 4, 5, 6
EVTCHNOP_bind_ipi, EVTCHNOP_bind_vcpu, EVTCHNOP_unmask, EVTCHNOP_reset = 7, 8, 9, 10
EVTCHNOP_init_control, EVTCHNOP_expand_array, EVTCHNOP_set_priority = 11, 12, 13

# --- start_info flags ---------------------------------------------------------
SIF_PRIVILEGED, SIF_INITDOMAIN, SIF_MULTIBOOT_MOD = 1, 2, 4
SIF_MOD_START_PFN, SIF_VIRT_P2M_4TOOLS = 8, 16
START_INFO_MAGIC = b"xen-3.0-x86_64"

LEGACY_MAX_VCPUS = 32

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class StartInfo(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_char * 32), ("nr_pages", u64), ("shared_info", u64),
                ("flags", u32), ("_pad0", u32), ("store_mfn", u64), ("store_evtchn", u32),
                ("_pad1", u32), ("console_mfn", u64), ("console_evtchn", u32), ("_pad2", u32),
                ("pt_base", u64), ("nr_pt_frames", u64), ("mfn_list", u64),
                ("mod_start", u64), ("mod_len", u64), ("cmd_line", ctypes.c_char * 1024),
                ("first_p2m_pfn", u64), ("nr_p2m_frames", u64)]


class VcpuTimeInfo(ctypes.Structure):
    _fields_ = [("version", u32), ("pad0", u32), ("tsc_timestamp", u64), ("system_time", u64),
                ("tsc_to_system_mul", u32), ("tsc_shift", ctypes.c_int8), ("flags", u8),
                ("pad1", u8 * 2)]


class VcpuInfo(ctypes.Structure):
    _fields_ = [("evtchn_upcall_pending", u8), ("evtchn_upcall_mask", u8), ("_pad", u8 * 6),
                ("evtchn_pending_sel", u64), ("cr2", u64), ("pad_arch", u64),
                ("time", VcpuTimeInfo)]


class ArchSharedInfo(ctypes.Structure):
    _fields_ = [("max_pfn", u64), ("pfn_to_mfn_frame_list_list", u64), ("nmi_reason", u64),
                ("p2m_cr3", u64), ("p2m_vaddr", u64), ("p2m_generation", u64)]


class SharedInfo(ctypes.Structure):
    _fields_ = [("vcpu_info", VcpuInfo * LEGACY_MAX_VCPUS), ("evtchn_pending", u64 * 64),
                ("evtchn_mask", u64 * 64), ("wc_version", u32), ("wc_sec", u32),
                ("wc_nsec", u32), ("wc_sec_hi", u32), ("arch", ArchSharedInfo)]


class TrapInfo(ctypes.Structure):
    _fields_ = [("vector", u8), ("flags", u8), ("cs", u16), ("_pad", u32), ("address", u64)]


for _cls, _size in ((StartInfo, 1168), (VcpuInfo, 64), (SharedInfo, 3136), (TrapInfo, 16),
                    (VcpuTimeInfo, 32)):
    assert ctypes.sizeof(_cls) == _size, (_cls, ctypes.sizeof(_cls))

# x86 exception vectors that push an error code
ERRCODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
TRAP_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
              8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF",
              17: "#AC", 18: "#MC", 19: "#XM", 20: "#VE", 21: "#CP"}
