/*
 * smp: a second vCPU brought up with VCPUOP_initialise + VCPUOP_up; an IPI
 * wakes it from SCHEDOP_block; it takes its own timer; it goes down with
 * VCPUOP_down and comes back with VCPUOP_up. Needs vcpus=2.
 */
#include "events.h"

#define MS 1000000ULL

static char ctx[5168] __aligned(16);
static char ap_stack[16384] __aligned(16);
static volatile long ipi1, ap_started, ap_got_ipi, ap_timer, ap_resumed;

static void put64(unsigned long off, uint64_t v) { memcpy(ctx + off, &v, 8); }

void ap_main(void)
{
    set_smp_id(1);
    traps_init();
    events_init();
    ap_started = 1;
    local_events_enable();
    while (!event_count[ipi1])
        sched_block();
    ap_got_ipi = 1;
    long t = evtchn_bind_virq(VIRQ_TIMER, 1);
    HYPERVISOR_set_timer_op(xen_system_time() + 5 * MS);
    while (t > 0 && !event_count[t])
        sched_block();
    ap_timer = t > 0 ? 1 : -1;
    HYPERVISOR_vcpu_op(VCPUOP_down, 1, 0);
    ap_resumed = 1;
    HYPERVISOR_vcpu_op(VCPUOP_down, 1, 0);
    for (;;)
        sched_block();
}

asm(".text\n.globl ap_entry\nap_entry:\n  call ap_main\n  ud2\n");
extern char ap_entry[];

static bool wait_for(volatile long *flag, uint64_t ms)
{
    uint64_t end = xen_system_time() + ms * MS;
    while (!*flag && xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    return *flag != 0;
}

void test_main(void)
{
    check(traps_init() == 0, "traps_init");
    set_smp_id(0);
    check(events_init() == 0, "events_init");
    check(HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0) == 0, "vcpu1 starts down");
    check(HYPERVISOR_vcpu_op(VCPUOP_is_up, 7, 0) == -2, "vcpu7 does not exist (-ENOENT)");
    ipi1 = evtchn_bind_ipi(1);
    check(ipi1 > 0, "IPI port for vcpu1: %ld", ipi1);

    put64(512, 1 << 2);                                   /* VGCF_in_kernel */
    put64(520 + 128, (unsigned long)ap_entry);            /* rip */
    put64(520 + 136, FLAT_KERNEL_CS);
    put64(520 + 144, 0x200);                              /* rflags */
    put64(520 + 152, (unsigned long)(ap_stack + sizeof(ap_stack) - 8));
    put64(520 + 160, FLAT_KERNEL_SS);
    put64(4968, FLAT_KERNEL_SS);                          /* kernel_ss */
    put64(4976, (unsigned long)(ap_stack + sizeof(ap_stack) - 8));
    put64(4984 + 3 * 8, current_l4_mfn() << 12);          /* ctrlreg[3] */
    check(HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0) == -22, "up before initialise -> -EINVAL");
    check(HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ctx) == 0, "initialise vcpu1");
    check(HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0) == 0, "up vcpu1");
    check(HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0) == 1, "vcpu1 is up");
    check(wait_for(&ap_started, 2000), "vcpu1 runs its own code");
    check(evtchn_notify(ipi1) == 0, "send IPI");
    check(wait_for(&ap_got_ipi, 2000), "vcpu1 woke from block on the IPI");
    check(wait_for(&ap_timer, 2000) && ap_timer == 1, "vcpu1 got its own timer event");
    uint64_t end = xen_system_time() + 2000 * MS;
    while (HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0) == 1 && xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    check(HYPERVISOR_vcpu_op(VCPUOP_is_up, 1, 0) == 0, "vcpu1 went down");
    check(HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0) == 0, "up vcpu1 again");
    check(wait_for(&ap_resumed, 2000), "vcpu1 resumed after VCPUOP_down");
    test_finish();
}
