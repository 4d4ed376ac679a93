/*
 * user.c - a minimal guest-user-mode facility shared by the usermode and
 * bench_compute guests.
 *
 * 64-bit PV kernels and their user processes both run in ring 3; Xen keeps
 * a "guest kernel mode" flag per vCPU and two page-table bases:
 *  - the kernel L4 (MMUEXT_NEW_BASEPTR, initially the bootstrap L4),
 *  - the user L4 (MMUEXT_NEW_USER_BASEPTR), loaded while in user mode.
 * HYPERVISOR_iret with an RPL-3 CS switches to user mode (and to the user
 * L4); a user SYSCALL enters the registered syscall callback in kernel mode
 * on the stack registered with stack_switch; a user exception enters the
 * trap table handler on that same stack.
 *
 * Here the user L4 is a pinned copy of the kernel L4's guest slots, so the
 * whole image (code, data, user stack) is visible in user mode.
 */
#include "minios.h"

long user_enter(unsigned long rip, unsigned long rsp, unsigned long arg,
                unsigned long rflags);
void __noreturn user_leave(long code);
void syscall_dispatch(struct trap_regs *regs);
extern char syscall_entry[];
extern char user_exit_trampoline[];

volatile uint64_t user_reports[USER_NR_REPORTS];
volatile uint64_t user_syscall_count;
volatile struct trap_regs user_last_syscall;
bool (*syscall_hook)(struct trap_regs *regs);

/* Stack for user->kernel transitions (syscall callback, user traps). */
static char kernel_entry_stack[16384] __aligned(16);
static char user_stack[16384] __aligned(16);
static unsigned long user_l4_mfn;

/* Returning from the user function lands here: exit(return value). */
asm(".pushsection .text\n"
    ".globl user_exit_trampoline\n"
    "user_exit_trampoline:\n"
    "    movq %rax, %rdi\n"
    "    movl $0, %eax\n"          /* SYS_EXIT */
    "    syscall\n"
    "    ud2\n"
    ".popsection\n");
_Static_assert(SYS_EXIT == 0, "user_exit_trampoline hard-codes SYS_EXIT");

int user_init(void)
{
    static bool done;
    long rc;

    if (done)
        return 0;
    if (traps_init() || mm_init())
        return -1;

    /* 1. User L4: guest-owned slots copied from the kernel L4. */
    unsigned long pfn = alloc_pfn();
    if (!pfn) {
        printk("user_init: out of free pages\n");
        return -1;
    }
    uint64_t *l4 = pfn_to_virt(pfn);
    const uint64_t *kl4 = mfn_to_virt(current_l4_mfn());
    if (!kl4) {
        printk("user_init: kernel L4 not mapped\n");
        return -1;
    }
    for (unsigned int i = 0; i < PT_ENTRIES; i++)
        if (i < L4_XEN_SLOT_FIRST || i > L4_XEN_SLOT_LAST)
            l4[i] = kl4[i];
    if ((rc = make_page_readonly(l4))) {
        printk("user_init: making the user L4 read-only failed: %ld\n", rc);
        return -1;
    }
    user_l4_mfn = pfn_to_mfn(pfn);
    if ((rc = mmuext_simple(MMUEXT_PIN_L4_TABLE, user_l4_mfn, 0))) {
        printk("user_init: MMUEXT_PIN_L4_TABLE failed: %ld\n", rc);
        return -1;
    }
    if ((rc = mmuext_simple(MMUEXT_NEW_USER_BASEPTR, user_l4_mfn, 0))) {
        printk("user_init: MMUEXT_NEW_USER_BASEPTR failed: %ld\n", rc);
        return -1;
    }

    /* 2. Kernel stack for entries from user mode (the PV "TSS.rsp0"). */
    rc = HYPERVISOR_stack_switch(FLAT_KERNEL_SS,
                                 (unsigned long)kernel_entry_stack + sizeof(kernel_entry_stack));
    if (rc) {
        printk("user_init: stack_switch failed: %ld\n", rc);
        return -1;
    }

    /* 3. Syscall callback, entered with events masked. */
    struct callback_register cb = {
        .type = CALLBACKTYPE_syscall,
        .flags = CALLBACKF_mask_events,
        .address = (unsigned long)syscall_entry,
    };
    if ((rc = HYPERVISOR_callback_op(CALLBACKOP_register, &cb))) {
        printk("user_init: registering the syscall callback failed: %ld\n", rc);
        return -1;
    }
    printk("user mode ready: user L4 mfn %#lx, kernel entry stack %p\n",
           user_l4_mfn, (void *)(kernel_entry_stack + sizeof(kernel_entry_stack)));
    done = true;
    return 0;
}

long user_run(void (*fn)(unsigned long), unsigned long arg)
{
    /* Fake return address so that returning from fn() exits the task;
     * rsp % 16 == 8 at fn entry, as after a call. */
    unsigned long *sp = (unsigned long *)(user_stack + sizeof(user_stack)) - 1;
    *sp = (unsigned long)user_exit_trampoline;
    /* rflags.IF = 0: the iret hypercall keeps event upcalls masked. */
    return user_enter((unsigned long)fn, (unsigned long)sp, arg, X86_EFLAGS_FIXED);
}

void syscall_dispatch(struct trap_regs *r)
{
    user_syscall_count++;
    memcpy((void *)&user_last_syscall, r, sizeof(*r));

    if (syscall_hook && syscall_hook(r))
        return;

    switch (r->rax) {
    case SYS_EXIT:
        user_leave((long)r->rdi);
    case SYS_ADD:
        r->rax = r->rdi + r->rsi + r->rdx + r->r10 + r->r8 + r->r9;
        break;
    case SYS_REPORT:
        if (r->rdi < USER_NR_REPORTS) {
            user_reports[r->rdi] = r->rsi;
            r->rax = 0;
        } else {
            r->rax = (uint64_t)-XEN_EINVAL;
        }
        break;
    case SYS_NOP:
        r->rax = 0;
        break;
    case SYS_GETMAGIC:
        r->rax = USER_SYSCALL_MAGIC;
        break;
    default:
        r->rax = (uint64_t)-XEN_ENOSYS;
        break;
    }
}
