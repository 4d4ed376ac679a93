/*
 * pvclock: every vCPU reads its own vcpu_time_info as fast as it can for
 * 1 s (with a 1 ms periodic timer running, so the hypervisor keeps
 * touching the time info) and compares each reading with the largest value
 * any vCPU has published before the read started: system time never goes
 * backwards, on one vCPU or across vCPUs. It also tracks the wallclock.
 */
#include "events.h"

#define MS 1000000ULL

static volatile uint64_t last;                  /* atomic max of all readings */
static volatile unsigned long reads[MAX_GUEST_VCPUS], back[MAX_GUEST_VCPUS];
static volatile unsigned long back_local[MAX_GUEST_VCPUS];
static volatile uint64_t worst[MAX_GUEST_VCPUS];
static volatile int done[MAX_GUEST_VCPUS];

static void hammer(unsigned int me)
{
    vcpu_set_periodic(me, 1 * MS);
    uint64_t end = xen_system_time() + 1000 * MS, prev = 0;
    unsigned long n = 0;
    for (;;) {
        uint64_t seen = __atomic_load_n(&last, __ATOMIC_SEQ_CST);
        uint64_t t = xen_system_time();          /* rdtsc after lfence: after the load */
        if (t < seen) {
            back[me]++;
            if (seen - t > worst[me])
                worst[me] = seen - t;
        }
        if (t < prev)
            back_local[me]++;
        prev = t;
        uint64_t cur = seen;
        while (cur < t && !__atomic_compare_exchange_n(&last, &cur, t, false,
                                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            ;
        n++;
        if ((n & 0xffff) == 0)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);   /* exits: let pyxen run */
        if (t >= end)
            break;
    }
    vcpu_stop_periodic(me);
    reads[me] = n;
    done[me] = 1;
}

void test_main(void)
{
    unsigned int n = events_test_start();
    struct vcpu_time_info *t = &this_vcpu_info()->time;
    check(t->tsc_to_system_mul != 0 && (t->version & 1) == 0, "vcpu_time_info is valid");
    for (unsigned int i = 1; i < n; i++)
        check(smp_start_vcpu(i, hammer) == 0, "start vcpu%u", i);
    hammer(0);
    uint64_t end = xen_system_time() + 10000 * MS;
    for (unsigned int i = 1; i < n; i++)
        while (!done[i] && xen_system_time() < end)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    for (unsigned int i = 0; i < n; i++) {
        check(done[i] && reads[i] > 1000, "vcpu%u made %lu readings", i, reads[i]);
        check(!back[i] && !back_local[i],
              "vcpu%u: time never went backwards (%lu behind another vCPU, worst %lu ns; %lu on its own)",
              i, back[i], (unsigned long)worst[i], back_local[i]);
    }
    test_finish();
}
