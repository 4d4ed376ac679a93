/*
 * vcpuctx: VCPUOP_initialise checks the addresses in the context it is
 * given as set_trap_table / set_callbacks check theirs (Xen's
 * arch_set_info_guest): a good context with one field made bad is refused
 * with -EINVAL and leaves the vCPU uninitialised (VCPUOP_up -EINVAL):
 *  - a trap handler that is not canonical, or in the hypervisor hole
 *    (0xffff800000000000 - 0xffff87ffffffffff; pyxen's set_trap_table
 *    refuses those too);
 *  - an event, failsafe or syscall callback likewise;
 *  - rip, rsp, kernel_sp, fs_base, gs_base_kernel, gs_base_user not canonical;
 *  - an LDT base that is not canonical, in the hole, or not page aligned;
 *    more than 8192 LDT entries; more than 16 GDT frames;
 *  - a vCPU started in user mode without a user L4 (ctrlreg[1] = 0).
 * Then a good context (with a trap handler just above the hole) brings the
 * vCPU up and it runs. Needs 2 vCPUs.
 */
#include "events.h"

#define EINVAL 22

#define CTX_SIZE      5168
#define CTX_FLAGS     512
#define CTX_RIP       (520 + 128)
#define CTX_RSP       (520 + 152)
#define CTX_TRAPS     720          /* 256 x { u8 vector, u8 flags, u16 cs, pad, u64 address } */
#define CTX_LDT_BASE  4816
#define CTX_LDT_ENTS  4824
#define CTX_GDT_ENTS  4960
#define CTX_KERNEL_SP 4976
#define CTX_CTRLREG   4984
#define CTX_EVENT_CB  5112
#define CTX_FAILSAFE_CB 5120
#define CTX_SYSCALL_CB  5128
#define CTX_FS_BASE   5144
#define CTX_GS_KERNEL 5152
#define CTX_GS_USER   5160

#define NONCANON   0x0000800000000000ULL
#define HOLE_START 0xffff800000000000ULL
#define HOLE_LAST  0xffff87fffffff000ULL
#define HOLE_END   0xffff880000000000ULL

static char ctx[CTX_SIZE] __aligned(16);
static char stack[8192] __aligned(16);
static volatile int ran;

static void ap_entry(void)
{
    ran = 1;
    for (;;)
        HYPERVISOR_vcpu_op(VCPUOP_down, 1, 0);
}

static void fresh(void)
{
    smp_fill_context(ctx, ap_entry, 0, stack + sizeof(stack) - 8);
}

static void put64(unsigned long off, uint64_t v) { memcpy(ctx + off, &v, 8); }

static void set_trap(unsigned int slot, uint8_t vector, uint64_t address)
{
    char *t = ctx + CTX_TRAPS + 16 * slot;
    t[0] = (char)vector;
    t[1] = 0;
    uint16_t cs = FLAT_KERNEL_CS;
    memcpy(t + 2, &cs, 2);
    memcpy(t + 8, &address, 8);
}

static void refused(const char *what)
{
    long rc = HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ctx);
    check(rc == -EINVAL, "%s -> %ld (want -EINVAL)", what, rc);
    rc = HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0);
    check(rc == -EINVAL, "  vcpu1 still uninitialised: up -> %ld", rc);
}

void test_main(void)
{
    unsigned int n = events_test_start();
    if (n < 2)
        test_skip("needs 2 vCPUs");

    static const struct { const char *what; unsigned long off; uint64_t v; } one[] = {
        { "rip not canonical", CTX_RIP, NONCANON },
        { "rsp not canonical", CTX_RSP, NONCANON },
        { "kernel_sp not canonical", CTX_KERNEL_SP, 0x0001000000000000ULL },
        { "fs_base not canonical", CTX_FS_BASE, NONCANON },
        { "gs_base_kernel not canonical", CTX_GS_KERNEL, 0xfff0000000000000ULL - 1 },
        { "gs_base_user not canonical", CTX_GS_USER, NONCANON + 0x1000 },
        { "event callback not canonical", CTX_EVENT_CB, NONCANON },
        { "event callback in the hypervisor hole", CTX_EVENT_CB, HOLE_START },
        { "failsafe callback in the hypervisor hole", CTX_FAILSAFE_CB, HOLE_LAST },
        { "failsafe callback not canonical", CTX_FAILSAFE_CB, 0x00ff000000000000ULL },
        { "syscall callback in the hypervisor hole", CTX_SYSCALL_CB, HOLE_START + 0x100000 },
        { "syscall callback not canonical", CTX_SYSCALL_CB, NONCANON },
        { "17 GDT frames", CTX_GDT_ENTS, 16 * 512 + 1 },
    };
    for (unsigned int i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
        fresh();
        put64(one[i].off, one[i].v);
        refused(one[i].what);
    }

    static const struct { const char *what; unsigned int slot; uint8_t vec; uint64_t a; } traps[] = {
        { "#PF handler not canonical", 0, 14, NONCANON },
        { "#BP handler in the hypervisor hole", 1, 3, HOLE_START },
        { "vector 0x80 handler at the hole's last page", 200, 0x80, HOLE_LAST },
        { "last trap slot not canonical", 255, 255, 0x8000000000000000ULL - 0x1000 },
    };
    for (unsigned int i = 0; i < sizeof(traps) / sizeof(traps[0]); i++) {
        fresh();
        set_trap(traps[i].slot, traps[i].vec, traps[i].a);
        refused(traps[i].what);
    }

    fresh();
    put64(CTX_LDT_ENTS, 1);
    put64(CTX_LDT_BASE, NONCANON);
    refused("LDT base not canonical");
    fresh();
    put64(CTX_LDT_ENTS, 1);
    put64(CTX_LDT_BASE, HOLE_START);
    refused("LDT base in the hypervisor hole");
    fresh();
    put64(CTX_LDT_BASE, HOLE_START + 0x2000);        /* no entries: still not __addr_ok */
    refused("LDT base in the hole, no entries");
    fresh();
    put64(CTX_LDT_ENTS, 1);
    put64(CTX_LDT_BASE, (unsigned long)stack + 8);
    refused("LDT base not page aligned");
    fresh();
    put64(CTX_LDT_ENTS, 8193);
    refused("8193 LDT entries");
    fresh();
    put64(CTX_FLAGS, 0);                             /* user mode */
    put64(CTX_CTRLREG + 8, 0);
    refused("user mode without a user L4");

    /* a good context: handlers anywhere outside the hole are fine */
    fresh();
    set_trap(0, 14, HOLE_END);
    set_trap(1, 3, 0x00007ffffffff000ULL);
    put64(CTX_EVENT_CB, HOLE_END + 0x1000);
    long rc = HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ctx);
    check(rc == 0, "a good context (handlers above the hole and in the lower half) -> %ld", rc);
    check(HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0) == 0, "vcpu1 up");
    uint64_t end = xen_system_time() + 5000000000ULL;
    while (!ran && xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    check(ran, "vcpu1 ran");
    test_finish();
}
