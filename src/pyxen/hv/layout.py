"""Where pyxen puts its own things, in guest-physical and guest-virtual space.

Guest RAM is KVM slot 0 at guest-physical 0, and pyxen's PV guests see
machine frame == KVM guest frame, with an identity p2m (mfn == pfn).
pyxen's private memory ("xen heap": reserved page tables, exit stubs, IDT,
GDTs, TSSs, CPL0 stacks, the M2P table, shared_info) is KVM slot 1 at
XEN_GPA. Its frames are above every guest frame, so the guest can never map
them: the page-table validator only accepts the guest's own frames.

Virtual layout inside Xen's reserved hole (PML4 slots 256-271), avoiding
slot 256, which this machine's KVM cannot map (DESIGN.md section 2):
  slot 257  0xffff808000000000  M2P table, read-only to the guest (1 GiB)
            0xffff808040000000  pyxen private area, supervisor-only but for
                                the syscall stubs (read/execute) and, in
                                guest kernel mode only, the vcpu_info windows
"""
from __future__ import annotations

PAGE_SIZE = 4096
PAGE_SHIFT = 12

XEN_GPA = 0x80_0000_0000          # 512 GiB: start of pyxen's private memory slot
XEN_SLOT, RAM_SLOT = 1, 0

RESERVED_L4_FIRST, RESERVED_L4_LAST = 256, 271   # Xen's hole: never guest slots
PYXEN_L4_SLOT = 257
M2P_VIRT_START = 0xFFFF808000000000
M2P_VIRT_SIZE = 1 << 30
PRIV_VIRT = 0xFFFF808040000000

# CPL0-only windows onto guest RAM and onto the xen heap (2 MiB pages):
# pyxen's page-table writes are replayed through them by an emulated CPL0
# stub, because KVM here does not notice guest page tables changed behind
# its back (bench/README.md, probe f)
DIRECTMAP_RAM = 0xFFFF810000000000      # slot 258: gpa 0.. (RAM)
DIRECTMAP_HEAP = 0xFFFF818000000000     # slot 259: XEN_GPA..
APPLY_OFF = 0x3000        # the replay stub
APPLY_IRET_OFF = 0x3800   # the replay stub that returns straight to the guest
APPLY_FLUSH_OFF = 0x3C00  # the same with a TLB flush (CR3 reload) before returning
GP_FAST_OFF = 0x3400      # the #GP stub: cli/sti answered in the guest, the rest exits
BP_FAST_OFF = 0x3600      # the #BP stub: stack_switch, FS base from the LSTAR stub; the rest exits
APPLY_LIST_OFF = 0x600000  # per vCPU: the replay list, (va, value) pairs
APPLY_LIST_PAGES = 16
APPLY_LIST_STRIDE = APPLY_LIST_PAGES * 0x1000
APPLY_MAX = APPLY_LIST_PAGES * 256
PORT_APPLY = 0xE4

MAX_VCPUS = 32

# private area, offsets from PRIV_VIRT
STUBS_OFF = 0x0000        # 256 exception stubs (16 bytes each): one page
SYSCALL_STUBS_OFF = 0x1000
IDT_OFF = 0x2000
GDT_OFF = 0x100000        # one 64 KiB GDT per vCPU
GDT_SIZE = 0x10000
TSS_OFF = 0x400000        # 3 pages per vCPU (TSS + I/O bitmap)
TSS_STRIDE = 0x4000
TSS_IOMAP_OFF = 0x68
TSS_LIMIT = TSS_IOMAP_OFF + 8192
STACK_OFF = 0x500000      # CPL0 exception stack, 2 pages per vCPU
STACK_SIZE = 0x2000
# per vCPU: its vcpu_info's page, writable for the syscall stubs. A 2 MiB
# region of its own: only the kernel view of slot PYXEN_L4_SLOT maps it
# (XenHeap.l4_entry_user leaves it out), so guest user mode cannot reach
# the guest kernel's vcpu_info (nor the page around it)
VCPU_INFO_MAP_OFF = 0x800000
# after the windows, in the same kernel-only region: the syscall stubs'
# PERCPU entries (the vcpu_info window's address, IOPL, the guest's event
# callback), read-only, which user mode has no business reading
KPERCPU_OFF = VCPU_INFO_MAP_OFF + MAX_VCPUS * PAGE_SIZE
# and the singleshot slots the LSTAR stub writes in guest kernel mode
# (xenheap.syscall_common's `single`), writable there
TSLOTS_OFF = KPERCPU_OFF + PAGE_SIZE
PRIV_SIZE = 0xA00000

# I/O ports used by the exit stubs and the hypercall page
PORT_HYPERCALL = 0xE0     # out from the hypercall page (guest kernel, CPL3)
PORT_TRAP = 0xE1          # out from an IDT stub (CPL0)
PORT_SYSCALL = 0xE2       # out from the LSTAR stub (CPL0)
PORT_SYSCALL32 = 0xE3     # out from the CSTAR stub (CPL0)
PORT_STUB_EXIT = 0xE5     # out from a returning CPL0 stub pyxen asked to exit (PVVcpu.must_run_on)
# ports of the emulated platform the TSS's I/O bitmap lets exit straight to
# pyxen (KVM_EXIT_IO) instead of raising #GP into a CPL0 stub: PIT channel 2,
# which Linux reads ~100,000 times in a row while it calibrates its TSC
# (quick_pit_calibrate). pyxen answers them as the #GP path would.
PORTS_DIRECT = (0x42,)

# hypervisor's own selectors (CPL0), in the reserved GDT page
HYP_CS = 0xE008
HYP_DS = 0xE010
TSS_SEL = 0xE040

# page-table entry bits
PTE_P, PTE_RW, PTE_US, PTE_PWT, PTE_PCD = 1, 2, 4, 8, 0x10
PTE_A, PTE_D, PTE_PSE, PTE_G = 0x20, 0x40, 0x80, 0x100
PTE_NX = 1 << 63
PTE_ADDR_MASK = 0x000FFFFFFFFFF000


def l4_index(va: int) -> int:
    return (va >> 39) & 511


def canonical(va: int) -> bool:
    top = va >> 47
    return top == 0 or top == 0x1FFFF


def priv(off: int) -> int:
    return PRIV_VIRT + off
