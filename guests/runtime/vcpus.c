/*
 * Secondary vCPUs for the pyxen mini-OS: VCPUOP_initialise + VCPUOP_up with
 * a vcpu_guest_context (x86-64 layout of Xen's arch-x86/xen-x86_64.h).
 */
#include "events.h"

#define CTX_SIZE        5168
#define CTX_FLAGS       512
#define CTX_USER_REGS   520      /* r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi */
#define CTX_RDI         (CTX_USER_REGS + 14 * 8)
#define CTX_RIP         (CTX_USER_REGS + 128)
#define CTX_CS          (CTX_USER_REGS + 136)
#define CTX_RFLAGS      (CTX_USER_REGS + 144)
#define CTX_RSP         (CTX_USER_REGS + 152)
#define CTX_SS          (CTX_USER_REGS + 160)
#define CTX_KERNEL_SS   4968
#define CTX_KERNEL_SP   4976
#define CTX_CTRLREG     4984
#define VGCF_in_kernel  (1 << 2)
#define STACK_SIZE      16384

static char stacks[MAX_GUEST_VCPUS][STACK_SIZE] __aligned(16);
static char start_ctx[CTX_SIZE] __aligned(16);
static void (*start_fn[MAX_GUEST_VCPUS])(unsigned int);

static void put64(char *ctx, unsigned long off, uint64_t v) { memcpy(ctx + off, &v, 8); }

void smp_fill_context(void *c, void (*entry)(void), unsigned long rdi, void *stack_top)
{
    char *ctx = c;
    memset(ctx, 0, CTX_SIZE);
    put64(ctx, CTX_FLAGS, VGCF_in_kernel);
    put64(ctx, CTX_RDI, rdi);
    put64(ctx, CTX_RIP, (unsigned long)entry);
    put64(ctx, CTX_CS, FLAT_KERNEL_CS);
    put64(ctx, CTX_RFLAGS, 0x200);
    put64(ctx, CTX_RSP, (unsigned long)stack_top);
    put64(ctx, CTX_SS, FLAT_KERNEL_SS);
    put64(ctx, CTX_KERNEL_SS, FLAT_KERNEL_SS);
    put64(ctx, CTX_KERNEL_SP, (unsigned long)stack_top);
    put64(ctx, CTX_CTRLREG + 3 * 8, current_l4_mfn() << 12);
}

unsigned int smp_nr_vcpus(void)
{
    unsigned int n = 1;
    while (n < MAX_GUEST_VCPUS && HYPERVISOR_vcpu_op(VCPUOP_is_up, n, 0) >= 0)
        n++;
    return n;
}

void smp_vcpu_main(unsigned long id)
{
    set_smp_id((unsigned int)id);
    traps_init_this_vcpu();
    if (events_init())
        printk("vcpu%lu: events_init failed\n", id);
    start_fn[id]((unsigned int)id);
    for (;;)
        HYPERVISOR_vcpu_op(VCPUOP_down, (unsigned int)id, 0);
}

/* the stack is 16-byte aligned minus 8, as after a call */
asm(".text\n.globl smp_vcpu_entry\nsmp_vcpu_entry:\n  call smp_vcpu_main\n  ud2\n");
extern char smp_vcpu_entry[];

long smp_start_vcpu(unsigned int id, void (*fn)(unsigned int))
{
    if (id == 0 || id >= MAX_GUEST_VCPUS)
        return -22;
    start_fn[id] = fn;
    smp_fill_context(start_ctx, (void (*)(void))smp_vcpu_entry, id, stacks[id] + STACK_SIZE - 8);
    long rc = HYPERVISOR_vcpu_op(VCPUOP_initialise, id, start_ctx);
    if (rc)
        return rc;
    return HYPERVISOR_vcpu_op(VCPUOP_up, id, 0);
}
