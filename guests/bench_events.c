/*
 * bench_events: figures for bench/events.py (not a pass/fail test).
 * Needs 2 vCPUs. Prints lines "<name>_ns median=<ns> p99=<ns> n=<n>":
 *  - event_latency_blocked: rdtsc before EVTCHNOP_send on vCPU0 -> rdtsc in
 *    the upcall handler on vCPU1, which was blocked in SCHEDOP_block;
 *  - event_latency_running: the same while vCPU1 spins in the guest (the
 *    hypervisor must kick it out of KVM_RUN);
 *  - ipi_round_trip: vCPU0 -> vCPU1 -> vCPU0, both blocking;
 *  - timer_deviation: single-shot deadline (1-5 ms ahead) -> system time
 *    in the VIRQ_TIMER handler.
 * Then "idle begin", every vCPU blocks for idle_ms= (default 3000) with
 * only vCPU0's timer armed, "idle end".
 */
#include "events.h"

#define MS 1000000ULL
#define N 2000
#define NT 300

static long port1, port0, tport;
static volatile uint64_t t_handler;
static volatile int mode;          /* vCPU1: 0 yield, 1 block, 2 spin, 3 pong, 4 block (idle) */
static uint64_t samples[N];

static void on_event(unsigned int port)
{
    if (port == port1 || port == tport)
        t_handler = rdtsc_ordered();
}

static uint64_t cycles_to_ns(uint64_t c)
{
    struct vcpu_time_info *t = &this_vcpu_info()->time;
    if (t->tsc_shift >= 0)
        c <<= t->tsc_shift;
    else
        c >>= -t->tsc_shift;
    return (uint64_t)(((unsigned __int128)c * t->tsc_to_system_mul) >> 32);
}

static void report(const char *name, uint64_t *v, unsigned int n)
{
    for (unsigned int i = 1; i < n; i++) {          /* insertion sort */
        uint64_t x = v[i];
        unsigned int j = i;
        while (j && v[j - 1] > x) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
    printk("%s_ns median=%lu p99=%lu n=%u\n", name, (unsigned long)v[n / 2],
           (unsigned long)v[(n * 99) / 100], n);
}

static volatile int ap_mode = -1;   /* the mode vCPU1 is in */

static void ap(unsigned int me)
{
    unsigned long seen = 0;
    int cur = -1;
    for (;;) {
        int m = mode;
        if (m != cur) {
            cur = m;
            seen = event_count[port1];
            ap_mode = m;
        }
        if (m == 1 || m == 3) {
            wait_event_count(port1, seen + 1, 0);
            seen++;
            if (m == 3 && mode == 3)
                evtchn_notify(port0);
        } else if (m == 2) {
            local_events_enable();
            while (event_count[port1] == seen && mode == 2)
                cpu_relax();
            seen = event_count[port1];
        } else if (m == 4) {
            local_events_disable();
            while (mode == 4) {
                sched_block();                     /* no timer: only an event wakes it */
                local_events_disable();
            }
            local_events_enable();
        } else {
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
        }
    }
    (void)me;
}

/* Switch vCPU1 to mode m through mode 0, so that no event of one phase is
 * taken for one of the next (vCPU1 may be blocked: an extra event wakes it). */
static void set_mode(int m)
{
    mode = 0;
    evtchn_notify(port1);
    while (ap_mode != 0)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    mode = m;
    if (m == 4)
        return;                /* vCPU1 blocks at once: do not wait for it */
    while (ap_mode != m)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
}

static void settle(void)
{
    uint64_t until = xen_system_time() + 200000;      /* 0.2 ms */
    while (xen_system_time() < until)
        cpu_relax();
}

static void latency(const char *name, int m)
{
    set_mode(m);
    for (unsigned int i = 0; i < N; i++) {
        settle();
        t_handler = 0;
        uint64_t t0 = rdtsc_ordered();
        evtchn_notify(port1);
        while (!t_handler)               /* the handler stores it after counting */
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
        samples[i] = cycles_to_ns(t_handler - t0);
    }
    report(name, samples, N);
}

void test_main(void)
{
    check(traps_init() == 0, "traps_init");
    set_smp_id(0);
    int erc = events_init();
    check(erc == 0, "events_init: %d", erc);
    if (smp_nr_vcpus() < 2)
        test_skip("needs 2 vCPUs");
    port1 = evtchn_bind_ipi(1);
    port0 = evtchn_bind_ipi(0);
    tport = timer_port();
    event_hook = on_event;
    check(smp_start_vcpu(1, ap) == 0, "start vcpu1");
    while (ap_mode != 0)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);

    latency("event_latency_blocked", 1);
    latency("event_latency_running", 2);

    set_mode(3);
    for (unsigned int i = 0; i < N; i++) {
        settle();
        unsigned long want = event_count[port0] + 1;
        uint64_t t0 = rdtsc_ordered();
        evtchn_notify(port1);
        wait_event_count(port0, want, 0);
        samples[i] = cycles_to_ns(rdtsc_ordered() - t0);
    }
    report("ipi_round_trip", samples, N);

    set_mode(4);                               /* vCPU1 blocked from here on */
    uint64_t rnd = 88172645463325252ULL;
    for (unsigned int i = 0; i < NT; i++) {
        rnd ^= rnd << 13; rnd ^= rnd >> 7; rnd ^= rnd << 17;
        local_events_disable();
        unsigned long want = event_count[tport] + 1;
        uint64_t deadline = xen_system_time() + 1 * MS + rnd % (4 * MS);
        HYPERVISOR_set_timer_op(deadline);
        while (event_count[tport] < want) {
            sched_block();
            local_events_disable();
        }
        local_events_enable();
        /* t_handler is a TSC value: turn it into system time */
        struct vcpu_time_info *t = &this_vcpu_info()->time;
        uint64_t fired = t->system_time + cycles_to_ns(t_handler - t->tsc_timestamp);
        samples[i] = fired > deadline ? fired - deadline : 0;
    }
    report("timer_deviation", samples, NT);

    uint64_t idle = cmdline_get_ulong("idle_ms", 3000);
    settle();
    printk("idle begin\n");
    local_events_disable();
    unsigned long want = event_count[tport] + 1;
    HYPERVISOR_set_timer_op(xen_system_time() + idle * MS);
    while (event_count[tport] < want) {
        sched_block();
        local_events_disable();
    }
    printk("idle end\n");
    local_events_enable();
    test_finish();
}
