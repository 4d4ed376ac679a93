/*
 * smp: every other vCPU (1..n-1) is brought up with VCPUOP_initialise +
 * VCPUOP_up; an IPI wakes it from SCHEDOP_block; it takes its own timer;
 * it goes down with VCPUOP_down and comes back with VCPUOP_up, twice.
 * Then vCPU 1 takes vCPU 0 down and brings it up again.
 * Needs 2 or more vCPUs (4 tested).
 */
#include "events.h"

#define MS 1000000ULL

static char ctx[5168] __aligned(16);
static char stacks[MAX_GUEST_VCPUS][16384] __aligned(16);
static long ipi[MAX_GUEST_VCPUS];
static volatile long started[MAX_GUEST_VCPUS], got_ipi[MAX_GUEST_VCPUS];
static volatile long timer_ok[MAX_GUEST_VCPUS], resumed[MAX_GUEST_VCPUS];
static volatile long down0_req, down0_seen, vcpu0_steps;

void ap_main(unsigned long id)
{
    set_smp_id(id);
    traps_init_this_vcpu();
    events_init();
    started[id] = 1;
    wait_event_count(ipi[id], 1, 0);
    got_ipi[id] = 1;
    long t = timer_port();
    uint64_t deadline = xen_system_time() + 5 * MS;
    HYPERVISOR_set_timer_op(deadline);
    bool fired = t > 0 && wait_event_count(t, 1, 0);
    timer_ok[id] = fired && xen_system_time() >= deadline ? 1 : -1;
    HYPERVISOR_vcpu_op(VCPUOP_down, id, 0);
    resumed[id] = 1;
    HYPERVISOR_vcpu_op(VCPUOP_down, id, 0);
    resumed[id] = 2;
    if (id == 1) {
        /* take vCPU 0 down from here, and bring it up again */
        while (!down0_req)
            cpu_relax();
        HYPERVISOR_vcpu_op(VCPUOP_down, 0, 0);
        uint64_t until = xen_system_time() + 20 * MS;
        while (xen_system_time() < until)
            cpu_relax();
        down0_seen = HYPERVISOR_vcpu_op(VCPUOP_is_up, 0, 0) == 0 ? 1 : -1;
        HYPERVISOR_vcpu_op(VCPUOP_up, 0, 0);
    }
    HYPERVISOR_vcpu_op(VCPUOP_down, id, 0);
    for (;;)
        sched_block();
}

asm(".text\n.globl ap_entry\nap_entry:\n  call ap_main\n  ud2\n");
extern char ap_entry[];

static bool wait_for(volatile long *flag, long want, uint64_t ms)
{
    uint64_t end = xen_system_time() + ms * MS;
    while (*flag != want && xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    return *flag == want;
}

static bool wait_down(unsigned int id)
{
    uint64_t end = xen_system_time() + 2000 * MS;
    while (HYPERVISOR_vcpu_op(VCPUOP_is_up, id, 0) == 1 && xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    return HYPERVISOR_vcpu_op(VCPUOP_is_up, id, 0) == 0;
}

void test_main(void)
{
    unsigned int n = events_test_start();
    if (n < 2)
        test_skip("needs 2 vCPUs");
    printk("%u vCPUs\n", n);
    check(HYPERVISOR_vcpu_op(VCPUOP_is_up, 7, 0) == -2, "vcpu7 does not exist (-ENOENT)");
    for (unsigned int i = 1; i < n; i++) {
        check(HYPERVISOR_vcpu_op(VCPUOP_is_up, i, 0) == 0, "vcpu%u starts down", i);
        ipi[i] = evtchn_bind_ipi(i);
        check(ipi[i] > 0, "IPI port for vcpu%u: %ld", i, ipi[i]);
        check(HYPERVISOR_vcpu_op(VCPUOP_up, i, 0) == -22, "up vcpu%u before initialise -> -EINVAL", i);
        smp_fill_context(ctx, (void (*)(void))ap_entry, i, stacks[i] + sizeof(stacks[i]) - 8);
        check(HYPERVISOR_vcpu_op(VCPUOP_initialise, i, ctx) == 0, "initialise vcpu%u", i);
        check(HYPERVISOR_vcpu_op(VCPUOP_up, i, 0) == 0, "up vcpu%u", i);
        check(HYPERVISOR_vcpu_op(VCPUOP_is_up, i, 0) == 1, "vcpu%u is up", i);
    }
    for (unsigned int i = 1; i < n; i++)
        check(wait_for(&started[i], 1, 2000), "vcpu%u runs its own code", i);
    for (unsigned int i = 1; i < n; i++)
        check(evtchn_notify(ipi[i]) == 0, "send IPI to vcpu%u", i);
    for (unsigned int i = 1; i < n; i++) {
        check(wait_for(&got_ipi[i], 1, 2000), "vcpu%u woke from block on its IPI", i);
        check(wait_for(&timer_ok[i], 1, 2000), "vcpu%u got its own timer event", i);
    }
    for (int round = 1; round <= 2; round++) {
        for (unsigned int i = 1; i < n; i++)
            check(wait_down(i), "vcpu%u went down (round %d)", i, round);
        for (unsigned int i = 1; i < n; i++)
            check(HYPERVISOR_vcpu_op(VCPUOP_up, i, 0) == 0, "up vcpu%u again", i);
        for (unsigned int i = 1; i < n; i++)
            check(wait_for(&resumed[i], round, 2000), "vcpu%u resumed after VCPUOP_down (round %d)", i, round);
    }
    /* vcpu1 takes this vCPU down and up again: it stops, then goes on (once) */
    down0_req = 1;
    uint64_t t0 = xen_system_time();
    while (!down0_seen && xen_system_time() < t0 + 2000 * MS) {
        vcpu0_steps++;
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    }
    check(down0_seen == 1, "vcpu1 saw vcpu0 down (%ld)", down0_seen);
    check(xen_system_time() - t0 >= 19 * MS, "vcpu0 stood still while down");
    for (int i = 0; i < 50; i++)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    check(HYPERVISOR_vcpu_op(VCPUOP_is_up, 0, 0) == 1, "vcpu0 is up again");
    test_finish();
}
