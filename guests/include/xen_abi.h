/*
 * xen_abi.h - the subset of the Xen x86-64 PV guest ABI used by the pyxen
 * mini-OS test guests.
 *
 * Written for pyxen.  The numbers and structure layouts are interface facts
 * of Xen's public ABI; they were taken from the Xen public headers shipped in
 * Debian's libxen-dev (xen.h, arch-x86/xen.h, arch-x86/xen-x86_64.h, sched.h,
 * event_channel.h, callback.h, memory.h, version.h, elfnote.h, io/console.h)
 * and cross-checked against the behaviour of the Xen hypervisor sources.
 * guests/check_abi.py compares every layout below against those headers.
 *
 * Usable from C and from GNU assembler (structures are hidden from .S files).
 */
#ifndef PYXEN_GUEST_XEN_ABI_H
#define PYXEN_GUEST_XEN_ABI_H

/* ------------------------------------------------------------------ */
/* Hypercall numbers.  A hypercall is "call hypercall_page + 32 * nr"  */
/* with arguments in rdi, rsi, rdx, r10, r8 and the result in rax.     */
/* ------------------------------------------------------------------ */
#define __HYPERVISOR_set_trap_table        0
#define __HYPERVISOR_mmu_update            1
#define __HYPERVISOR_stack_switch          3
#define __HYPERVISOR_memory_op            12
#define __HYPERVISOR_multicall            13
#define __HYPERVISOR_update_va_mapping    14
#define __HYPERVISOR_xen_version          17
#define __HYPERVISOR_console_io           18
#define __HYPERVISOR_vm_assist            21
#define __HYPERVISOR_iret                 23
#define __HYPERVISOR_vcpu_op              24
#define __HYPERVISOR_set_segment_base     25
#define __HYPERVISOR_mmuext_op            26
#define __HYPERVISOR_sched_op             29
#define __HYPERVISOR_callback_op          30
#define __HYPERVISOR_event_channel_op     32

#define HYPERCALL_STUB_SIZE   32   /* bytes per entry in the hypercall page */

/* ------------------------------------------------------------------ */
/* Segment selectors of the 64-bit PV ABI (in Xen's reserved GDT part) */
/* ------------------------------------------------------------------ */
#define FLAT_RING3_CS32   0xe023
#define FLAT_RING3_CS64   0xe033
#define FLAT_RING3_DS32   0xe02b
#define FLAT_RING3_SS64   0xe02b
#define FLAT_KERNEL_CS    FLAT_RING3_CS64   /* guest kernel runs in ring 3 */
#define FLAT_KERNEL_SS    FLAT_RING3_SS64
#define FLAT_KERNEL_DS    0x0000            /* null data selector in long mode */
#define FLAT_USER_CS      FLAT_RING3_CS64
#define FLAT_USER_SS      FLAT_RING3_SS64
/*
 * In a bounce frame for an event interrupting guest *kernel* mode, Xen
 * clears the RPL of the saved CS (0xe033 -> 0xe030); an iret-hypercall
 * frame whose CS has RPL 3 means "return to guest user mode".
 */
#define FRAME_KERNEL_CS   (FLAT_KERNEL_CS & ~3)   /* 0xe030 */

/* Virtual address space reserved for the hypervisor (L4 slots 256..271). */
#define HYPERVISOR_VIRT_START   0xffff800000000000UL
#define HYPERVISOR_VIRT_END     0xffff880000000000UL
#define MACH2PHYS_VIRT_START    0xffff800000000000UL  /* default M2P address */
#define L4_XEN_SLOT_FIRST       256
#define L4_XEN_SLOT_LAST        271

/* Flag in the iret hypercall frame: return as if from SYSCALL (bit 8). */
#define VGCF_in_syscall         (1UL << 8)

/* ------------------------------------------------------------------ */
/* Page table entries                                                  */
/* ------------------------------------------------------------------ */
#define PAGE_SHIFT        12
#define PAGE_SIZE         4096UL
#define _PAGE_PRESENT     0x001UL
#define _PAGE_RW          0x002UL
#define _PAGE_USER        0x004UL
#define _PAGE_PWT         0x008UL
#define _PAGE_PCD         0x010UL
#define _PAGE_ACCESSED    0x020UL
#define _PAGE_DIRTY       0x040UL
#define _PAGE_PSE         0x080UL
#define _PAGE_GLOBAL      0x100UL
#define _PAGE_NX          (1UL << 63)
#define PTE_ADDR_MASK     0x000ffffffffff000UL
/* Kernel mappings need _PAGE_USER: a 64-bit PV kernel executes in ring 3. */
#define PTE_KERN_RW  (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY)
#define PTE_KERN_RO  (_PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED)
#define PT_ENTRIES        512

/* mmu_update: the low 2 bits of 'ptr' select the command. */
#define MMU_NORMAL_PT_UPDATE       0
#define MMU_MACHPHYS_UPDATE        1
#define MMU_PT_UPDATE_PRESERVE_AD  2

/* mmuext_op commands */
#define MMUEXT_PIN_L1_TABLE        0
#define MMUEXT_PIN_L2_TABLE        1
#define MMUEXT_PIN_L3_TABLE        2
#define MMUEXT_PIN_L4_TABLE        3
#define MMUEXT_UNPIN_TABLE         4
#define MMUEXT_NEW_BASEPTR         5
#define MMUEXT_TLB_FLUSH_LOCAL     6
#define MMUEXT_INVLPG_LOCAL        7
#define MMUEXT_TLB_FLUSH_ALL      10
#define MMUEXT_INVLPG_ALL         11
#define MMUEXT_NEW_USER_BASEPTR   15
#define MMUEXT_CLEAR_PAGE         16
#define MMUEXT_COPY_PAGE          17

/* update_va_mapping flags */
#define UVMF_NONE          0UL
#define UVMF_TLB_FLUSH     1UL
#define UVMF_INVLPG        2UL
#define UVMF_LOCAL         0UL
#define UVMF_ALL           4UL

#define DOMID_SELF         0x7ff0U

/* console_io */
#define CONSOLEIO_write    0
#define CONSOLEIO_read     1

/* sched_op */
#define SCHEDOP_yield          0
#define SCHEDOP_block          1
#define SCHEDOP_shutdown       2
#define SCHEDOP_poll           3
#define SCHEDOP_shutdown_code  5

#define SHUTDOWN_poweroff   0
#define SHUTDOWN_reboot     1
#define SHUTDOWN_suspend    2
#define SHUTDOWN_crash      3
#define SHUTDOWN_watchdog   4
#define SHUTDOWN_soft_reset 5

/* event_channel_op */
#define EVTCHNOP_send       4

/* callback_op */
#define CALLBACKOP_register     0
#define CALLBACKOP_unregister   1
#define CALLBACKTYPE_event      0
#define CALLBACKTYPE_failsafe   1
#define CALLBACKTYPE_syscall    2
#define CALLBACKTYPE_nmi        4
#define CALLBACKF_mask_events   (1U << 0)

/* set_segment_base */
#define SEGBASE_FS          0
#define SEGBASE_GS_USER     1
#define SEGBASE_GS_KERNEL   2
#define SEGBASE_GS_USER_SEL 3

/* memory_op */
#define XENMEM_machphys_mapping  12

/* xen_version */
#define XENVER_version       0
#define XENVER_extraversion  1
#define XENVER_get_features  6
#define XENVER_guest_handle  8

/* trap_info.flags */
#define TI_DPL_MASK       3
#define TI_CLEAR_EVENTS   4   /* mask events (set upcall mask) on entry */

/* start_info.flags */
#define SIF_PRIVILEGED      (1U << 0)
#define SIF_INITDOMAIN      (1U << 1)
#define SIF_MOD_START_PFN   (1U << 3)
#define SIF_VIRT_P2M_4TOOLS (1U << 4)

/* Xen ELF note types (owner name "Xen") */
#define XEN_ELFNOTE_ENTRY              1
#define XEN_ELFNOTE_HYPERCALL_PAGE     2
#define XEN_ELFNOTE_VIRT_BASE          3
#define XEN_ELFNOTE_PADDR_OFFSET       4
#define XEN_ELFNOTE_XEN_VERSION        5
#define XEN_ELFNOTE_GUEST_OS           6
#define XEN_ELFNOTE_GUEST_VERSION      7
#define XEN_ELFNOTE_LOADER             8
#define XEN_ELFNOTE_FEATURES          10
#define XEN_ELFNOTE_SUPPORTED_FEATURES 17

/* Error numbers returned (negated) by hypercalls */
#define XEN_EPERM    1
#define XEN_ENOENT   2
#define XEN_ESRCH    3
#define XEN_ENOMEM  12
#define XEN_EACCES  13
#define XEN_EFAULT  14
#define XEN_EBUSY   16
#define XEN_EEXIST  17
#define XEN_EINVAL  22
#define XEN_ENOSYS  38
#define XEN_EOPNOTSUPP 95

/* Exception vectors */
#define X86_EXC_DE   0
#define X86_EXC_DB   1
#define X86_EXC_NMI  2
#define X86_EXC_BP   3
#define X86_EXC_OF   4
#define X86_EXC_BR   5
#define X86_EXC_UD   6
#define X86_EXC_NM   7
#define X86_EXC_DF   8
#define X86_EXC_TS  10
#define X86_EXC_NP  11
#define X86_EXC_SS  12
#define X86_EXC_GP  13
#define X86_EXC_PF  14
#define X86_EXC_MF  16
#define X86_EXC_AC  17
#define X86_EXC_MC  18
#define X86_EXC_XM  19
/* Vectors whose bounce frame carries an error code. */
#define X86_EXC_HAVE_EC ((1U << 8) | (1U << 10) | (1U << 11) | (1U << 12) | \
                         (1U << 13) | (1U << 14) | (1U << 17) | (1U << 21) | \
                         (1U << 29) | (1U << 30))

/* Page-fault error code bits */
#define PFEC_PRESENT  0x01
#define PFEC_WRITE    0x02
#define PFEC_USER     0x04
#define PFEC_RSVD     0x08
#define PFEC_INSN     0x10

#define X86_EFLAGS_FIXED  0x002UL
#define X86_EFLAGS_IF     0x200UL

#ifndef __ASSEMBLER__
#include <stdint.h>

typedef uint32_t evtchn_port_t;

/* The page whose virtual address is in %rsi at kernel entry. */
struct start_info {
    char     magic[32];          /* "xen-3.0-x86_64" */
    uint64_t nr_pages;           /* pages allocated to the domain */
    uint64_t shared_info;        /* machine address of the shared info page */
    uint32_t flags;              /* SIF_* */
    uint32_t _pad0;
    uint64_t store_mfn;          /* xenstore ring frame */
    uint32_t store_evtchn;
    uint32_t _pad1;
    union {
        struct {
            uint64_t mfn;        /* console ring frame */
            uint32_t evtchn;     /* console event channel */
            uint32_t _pad;
        } domU;
        struct {
            uint32_t info_off;
            uint32_t info_size;
        } dom0;
    } console;
    uint64_t pt_base;            /* virtual address of the bootstrap L4 */
    uint64_t nr_pt_frames;       /* number of bootstrap page-table frames */
    uint64_t mfn_list;           /* virtual address of the p2m array */
    uint64_t mod_start;          /* initrd: virtual address (or pfn) */
    uint64_t mod_len;
    char     cmd_line[1024];
    uint64_t first_p2m_pfn;
    uint64_t nr_p2m_frames;
};

struct vcpu_time_info {
    uint32_t version;
    uint32_t _pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t tsc_to_system_mul;
    int8_t   tsc_shift;
    uint8_t  flags;
    uint8_t  _pad1[2];
};

struct vcpu_info {
    uint8_t  evtchn_upcall_pending;
    uint8_t  evtchn_upcall_mask;     /* nonzero: no event upcalls */
    uint8_t  _pad0[6];
    uint64_t evtchn_pending_sel;
    struct {
        uint64_t cr2;                /* faulting address of the last #PF */
        uint64_t _pad;
    } arch;
    struct vcpu_time_info time;
};

#define XEN_LEGACY_MAX_VCPUS 32

struct shared_info {
    struct vcpu_info vcpu_info[XEN_LEGACY_MAX_VCPUS];
    uint64_t evtchn_pending[64];
    uint64_t evtchn_mask[64];
    uint32_t wc_version;
    uint32_t wc_sec;
    uint32_t wc_nsec;
    uint32_t wc_sec_hi;
    struct {
        uint64_t max_pfn;
        uint64_t pfn_to_mfn_frame_list_list;
        uint64_t nmi_reason;
        uint64_t p2m_cr3;
        uint64_t p2m_vaddr;
        uint64_t p2m_generation;
    } arch;
};

/* One virtual IDT entry for set_trap_table; a zero address ends the list. */
struct trap_info {
    uint8_t  vector;
    uint8_t  flags;          /* TI_DPL_MASK | TI_CLEAR_EVENTS */
    uint16_t cs;
    uint32_t _pad;
    uint64_t address;
};

struct mmu_update {
    uint64_t ptr;            /* machine address of the entry | MMU_* command */
    uint64_t val;
};

struct mmuext_op {
    uint32_t cmd;
    uint32_t _pad;
    union {
        uint64_t mfn;
        uint64_t linear_addr;
    } arg1;
    union {
        uint32_t nr_ents;
        const void *vcpumask;
        uint64_t src_mfn;
    } arg2;
};

struct callback_register {
    uint16_t type;
    uint16_t flags;
    uint32_t _pad;
    uint64_t address;
};

struct sched_shutdown {
    uint32_t reason;
};

struct evtchn_send {
    evtchn_port_t port;
};

struct xen_machphys_mapping {
    uint64_t v_start, v_end;
    uint64_t max_mfn;
};

/* The console ring page shared with the console backend. */
struct xencons_ring {
    char     in[1024];
    char     out[2048];
    uint32_t in_cons, in_prod;
    uint32_t out_cons, out_prod;
};

/*
 * What HYPERVISOR_iret consumes, lowest address first.  The guest pushes
 * ss, rsp, rflags, cs, rip and flags and then *jumps* to the iret entry of
 * the hypercall page; that stub pushes rcx, r11 and rax itself (Xen's stub
 * is "push %rcx; push %r11; push %rax; mov $23,%eax; syscall").
 */
struct iret_context {
    uint64_t rax, r11, rcx, flags, rip, cs, rflags, rsp, ss;
};

#define XEN_ABI_CHECK(cond) _Static_assert(cond, #cond)
XEN_ABI_CHECK(sizeof(struct start_info) == 1168);
XEN_ABI_CHECK(__builtin_offsetof(struct start_info, console) == 72);
XEN_ABI_CHECK(__builtin_offsetof(struct start_info, pt_base) == 88);
XEN_ABI_CHECK(__builtin_offsetof(struct start_info, cmd_line) == 128);
XEN_ABI_CHECK(__builtin_offsetof(struct start_info, first_p2m_pfn) == 1152);
XEN_ABI_CHECK(sizeof(struct vcpu_time_info) == 32);
XEN_ABI_CHECK(sizeof(struct vcpu_info) == 64);
XEN_ABI_CHECK(__builtin_offsetof(struct vcpu_info, arch.cr2) == 16);
XEN_ABI_CHECK(__builtin_offsetof(struct shared_info, evtchn_pending) == 2048);
XEN_ABI_CHECK(__builtin_offsetof(struct shared_info, wc_version) == 3072);
XEN_ABI_CHECK(sizeof(struct shared_info) == 3136);
XEN_ABI_CHECK(sizeof(struct trap_info) == 16);
XEN_ABI_CHECK(sizeof(struct mmu_update) == 16);
XEN_ABI_CHECK(sizeof(struct mmuext_op) == 24);
XEN_ABI_CHECK(sizeof(struct callback_register) == 16);
XEN_ABI_CHECK(sizeof(struct xen_machphys_mapping) == 24);
XEN_ABI_CHECK(__builtin_offsetof(struct xencons_ring, out_cons) == 3080);
XEN_ABI_CHECK(sizeof(struct iret_context) == 72);

#endif /* !__ASSEMBLER__ */

#endif /* PYXEN_GUEST_XEN_ABI_H */
