/*
 * timer: VCPUOP_set_periodic_timer with a 1 ms period on every vCPU; over
 * 2 s of system time each vCPU blocks between ticks and must count
 * 2000 +/- 2% VIRQ_TIMER events. A single-shot timer (set_timer_op) at
 * the same time must not disturb the periodic count.
 */
#include "events.h"

#define MS 1000000ULL
#define RUN_MS 2000
#define WANT (RUN_MS)
#define SLACK (WANT / 50)

static volatile unsigned long ticks[MAX_GUEST_VCPUS];
static volatile uint64_t late_ns[MAX_GUEST_VCPUS];
static volatile int done[MAX_GUEST_VCPUS];

static void count_ticks(unsigned int me)
{
    long port = timer_port();
    if (port <= 0) {
        done[me] = -1;
        return;
    }
    local_events_disable();
    unsigned long base = event_count[port];
    uint64_t start = xen_system_time();
    uint64_t end = start + RUN_MS * MS;
    if (vcpu_set_periodic(me, 1 * MS)) {
        done[me] = -2;
        return;
    }
    /* a single-shot timer in the middle: it raises the same VIRQ once */
    HYPERVISOR_set_timer_op(start + 500 * MS + MS / 2);
    uint64_t now;
    while ((now = xen_system_time()) < end) {
        sched_block();
        local_events_disable();
    }
    vcpu_stop_periodic(me);
    ticks[me] = event_count[port] - base;
    late_ns[me] = now - end;
    local_events_enable();
    done[me] = 1;
}

void test_main(void)
{
    unsigned int n = events_test_start();
    printk("%u vCPUs\n", n);
    struct vcpu_set_periodic_timer bad = { 1000 };
    check(HYPERVISOR_vcpu_op(VCPUOP_set_periodic_timer, 0, &bad) == -22,
          "a period under 1 ms is refused (-EINVAL)");
    for (unsigned int i = 1; i < n; i++)
        check(smp_start_vcpu(i, count_ticks) == 0, "start vcpu%u", i);
    count_ticks(0);
    uint64_t end = xen_system_time() + 10000 * MS;
    for (unsigned int i = 1; i < n; i++)
        while (!done[i] && xen_system_time() < end)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    for (unsigned int i = 0; i < n; i++) {
        /* the single-shot adds at most one event (it may coalesce with a tick) */
        check(done[i] == 1 && ticks[i] + SLACK >= WANT && ticks[i] <= WANT + SLACK + 1,
              "vcpu%u counted %lu ticks in %u ms (want %u +/- %u; state %d, woke %lu us late)",
              i, ticks[i], RUN_MS, WANT, SLACK, done[i], (unsigned long)(late_ns[i] / 1000));
    }
    test_finish();
}
