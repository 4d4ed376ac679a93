/*
 * timer: VCPUOP_set_periodic_timer with a 1 ms period on every vCPU.
 *
 * Each vCPU counts VIRQ_TIMER events for 2 s of system time, blocking
 * between ticks, in CHUNKS stretches; before each stretch and after the
 * last one it measures how late this host wakes it from a 1 ms single-shot
 * timer (set_timer_op, then block: the path a periodic tick takes too), so
 * that the lateness is measured under the same load as the count.  In the
 * middle of one stretch a single-shot timer raises the same VIRQ at most
 * once; it must not disturb the periodic timer.
 *
 * vCPU 0 prints one "timer:" line per vCPU with what was measured; the test
 * (tests/hv/test_events.py) judges the count against Xen's semantics: a
 * tick comes no sooner than one period after the previous one, and missed
 * periods are not delivered one by one, so the count is about
 * elapsed / (period + lateness).
 */
#include "events.h"

#define MS 1000000ULL
#define PERIOD (1 * MS)
#define RUN_MS 2000
#define CHUNKS 8
#define CAL_PER_CHUNK 25

struct lateness {
    unsigned long n, sum_ns, sumsq_us2, max_ns;
};

static volatile unsigned long ticks[MAX_GUEST_VCPUS];
static volatile uint64_t elapsed_ns[MAX_GUEST_VCPUS];
static struct lateness lateness[MAX_GUEST_VCPUS];
static volatile int done[MAX_GUEST_VCPUS];

/* Sleep one period on a single-shot timer, CAL_PER_CHUNK times; record how late we woke. */
static void measure_lateness(struct lateness *l)
{
    for (unsigned int i = 0; i < CAL_PER_CHUNK; i++) {
        uint64_t deadline = xen_system_time() + PERIOD;
        uint64_t now;
        HYPERVISOR_set_timer_op(deadline);
        while ((now = xen_system_time()) < deadline) {
            sched_block();
            local_events_disable();
        }
        unsigned long late = now - deadline, us = late / 1000;
        l->n++;
        l->sum_ns += late;
        l->sumsq_us2 += us * us;
        if (late > l->max_ns)
            l->max_ns = late;
    }
    HYPERVISOR_set_timer_op(0);
    local_events_enable();               /* take a timer event still pending */
    local_events_disable();
}

static void count_ticks(unsigned int me)
{
    long port = timer_port();
    if (port <= 0) {
        done[me] = -1;
        return;
    }
    local_events_disable();
    for (unsigned int c = 0; c < CHUNKS; c++) {
        measure_lateness(&lateness[me]);
        unsigned long base = event_count[port];
        uint64_t start = xen_system_time();
        uint64_t end = start + RUN_MS * MS / CHUNKS;
        if (vcpu_set_periodic(me, PERIOD)) {
            done[me] = -2;
            return;
        }
        /* a single-shot timer in the middle: it raises the same VIRQ once */
        if (c == CHUNKS / 2)
            HYPERVISOR_set_timer_op(start + RUN_MS * MS / CHUNKS / 2 + MS / 2);
        while (xen_system_time() < end) {
            sched_block();
            local_events_disable();
        }
        vcpu_stop_periodic(me);
        uint64_t stop = xen_system_time();
        ticks[me] += event_count[port] - base;
        elapsed_ns[me] += stop - start;
    }
    measure_lateness(&lateness[me]);
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
    uint64_t end = xen_system_time() + 20000 * MS;
    for (unsigned int i = 1; i < n; i++)
        while (!done[i] && xen_system_time() < end)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    for (unsigned int i = 0; i < n; i++) {
        check(done[i] == 1, "vcpu%u finished (state %d)", i, done[i]);
        struct lateness *l = &lateness[i];
        printk("timer: vcpu%u period %lu ns, %u stretches: %lu ticks in %lu ns; wake-up lateness "
               "n=%lu sum=%lu ns sumsq=%lu us2 max=%lu ns\n",
               i, (unsigned long)PERIOD, CHUNKS, ticks[i], (unsigned long)elapsed_ns[i],
               l->n, l->sum_ns, l->sumsq_us2, l->max_ns);
    }
    test_finish();
}
