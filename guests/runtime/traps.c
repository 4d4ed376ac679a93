/*
 * traps.c - shared info mapping, virtual IDT and exception dispatch.
 */
#include "minios.h"

struct shared_info *shared_info;
struct vcpu_info *vcpu_info0;
bool (*trap_hook)(struct trap_regs *regs, uint64_t cr2);
volatile struct fault_info last_fault;

/*
 * The shared info page is not part of the guest's memory map: start_info
 * gives its machine address.  Map it over a page-aligned .bss page, whose
 * L1 entry is guaranteed to exist (the page was mapped by the bootstrap
 * page tables); the original frame of that page simply goes unused.
 */
static char shared_info_area[4096] __page_aligned_bss;

int map_shared_info(void)
{
    if (shared_info)
        return 0;
    unsigned long mfn = start_info->shared_info >> PAGE_SHIFT;
    int rc = remap_page(shared_info_area, mfn, PTE_KERN_RW);
    if (rc)
        return rc;
    shared_info = (struct shared_info *)shared_info_area;
    vcpu_info0 = &shared_info->vcpu_info[0];
    return 0;
}

/* Entry points in entry.S */
#define DECLARE_ENTRY(v) extern char trap_entry_##v[]
DECLARE_ENTRY(0); DECLARE_ENTRY(1); DECLARE_ENTRY(3); DECLARE_ENTRY(4);
DECLARE_ENTRY(5); DECLARE_ENTRY(6); DECLARE_ENTRY(7); DECLARE_ENTRY(8);
DECLARE_ENTRY(10); DECLARE_ENTRY(11); DECLARE_ENTRY(12); DECLARE_ENTRY(13);
DECLARE_ENTRY(14); DECLARE_ENTRY(16); DECLARE_ENTRY(17); DECLARE_ENTRY(18);
DECLARE_ENTRY(19);

/* DPL 3 for int3/into so that the instructions work from any mode. */
#define TRAP(v, dpl) { .vector = (v), .flags = (dpl), .cs = FLAT_KERNEL_CS, \
                       .address = (unsigned long)trap_entry_##v }
static struct trap_info trap_table[] = {
    TRAP(0, 0),  TRAP(1, 0),  TRAP(3, 3),  TRAP(4, 3),  TRAP(5, 0),
    TRAP(6, 0),  TRAP(7, 0),  TRAP(8, 0),  TRAP(10, 0), TRAP(11, 0),
    TRAP(12, 0), TRAP(13, 0), TRAP(14, 0), TRAP(16, 0), TRAP(17, 0),
    TRAP(18, 0), TRAP(19, 0),
    { 0, 0, 0, 0, 0 },   /* terminator: address 0 */
};

int traps_init_this_vcpu(void)
{
    return (int)HYPERVISOR_set_trap_table(trap_table);
}

int traps_init(void)
{
    static bool done;
    if (done)
        return 0;
    int rc = map_shared_info();
    if (rc) {
        printk("traps_init: mapping shared_info failed: %d\n", rc);
        return rc;
    }
    rc = (int)HYPERVISOR_set_trap_table(trap_table);
    if (rc)
        printk("traps_init: set_trap_table failed: %d\n", rc);
    else
        done = true;
    return rc;
}

const char *trap_name(unsigned int v)
{
    static const char *const names[] = {
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#09",
        "#TS", "#NP", "#SS", "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM",
    };
    if (v == TRAP_SYSCALL)
        return "syscall";
    return v < ARRAY_SIZE(names) ? names[v] : "#??";
}

struct extable_entry {
    unsigned long insn, fixup;
};
extern const struct extable_entry __ex_table_start[], __ex_table_end[];

static unsigned long extable_lookup(unsigned long rip)
{
    for (const struct extable_entry *e = __ex_table_start; e < __ex_table_end; e++)
        if (e->insn == rip)
            return e->fixup;
    return 0;
}

void trap_dispatch(struct trap_regs *regs)
{
    /* Xen stores the #PF address in vcpu_info before delivering #PF. */
    uint64_t cr2 = 0;
    if (regs->vector == X86_EXC_PF && vcpu_info0)
        cr2 = vcpu_info0->arch.cr2;

    if (trap_hook && trap_hook(regs, cr2))
        return;

    unsigned long fixup = extable_lookup(regs->rip);
    if (fixup && (regs->cs & 3) == 0) {
        last_fault.vector = regs->vector;
        last_fault.error_code = regs->error_code;
        last_fault.rip = regs->rip;
        last_fault.cr2 = cr2;
        last_fault.cs = regs->cs;
        regs->rip = fixup;
        return;
    }

    printk("Unexpected %s (vector %lu) err=%#lx rip=%p cs=%#lx rflags=%#lx rsp=%p ss=%#lx cr2=%p\n",
           trap_name((unsigned int)regs->vector), regs->vector, regs->error_code,
           (void *)regs->rip, regs->cs, regs->rflags, (void *)regs->rsp, regs->ss,
           (void *)cr2);
    printk("  rax=%#lx rbx=%#lx rcx=%#lx rdx=%#lx rsi=%#lx rdi=%#lx\n",
           regs->rax, regs->rbx, regs->rcx, regs->rdx, regs->rsi, regs->rdi);
    char reason[64];
    snprintf(reason, sizeof(reason), "unexpected %s at %p",
             trap_name((unsigned int)regs->vector), (void *)regs->rip);
    test_error(reason);
}
