/*
 * ipi: IPI ping-pong between two vCPUs, 10^4 round trips (count=N): vCPU0
 * sends to vCPU1's IPI port and blocks until vCPU1 answers on vCPU0's.
 * With 4 vCPUs, vCPU2 and vCPU3 play their own match at the same time.
 * Every round trip must arrive exactly once. Needs 2 or more vCPUs.
 */
#include "events.h"

#define MS 1000000ULL

static long port_of[MAX_GUEST_VCPUS];        /* IPI port that raises vCPU i */
static unsigned long rounds;
static volatile int done[MAX_GUEST_VCPUS];
static volatile uint64_t elapsed[MAX_GUEST_VCPUS];

static void ping(unsigned int me, unsigned int peer)
{
    uint64_t t0 = xen_system_time();
    for (unsigned long i = 1; i <= rounds; i++) {
        evtchn_notify(port_of[peer]);
        wait_event_count(port_of[me], i, 0);
    }
    elapsed[me] = xen_system_time() - t0;
}

static void pong(unsigned int me, unsigned int peer)
{
    for (unsigned long i = 1; i <= rounds; i++) {
        wait_event_count(port_of[me], i, 0);
        evtchn_notify(port_of[peer]);
    }
}

static void player(unsigned int me)
{
    if (me & 1)
        pong(me, me - 1);
    else
        ping(me, me + 1);
    done[me] = 1;
}

void test_main(void)
{
    unsigned int n = events_test_start() & ~1u;
    rounds = cmdline_get_ulong("count", 10000);
    if (n < 2)
        test_skip("needs 2 vCPUs");
    for (unsigned int i = 0; i < n; i++) {
        port_of[i] = evtchn_bind_ipi(i);
        check(port_of[i] > 0, "IPI port for vcpu%u: %ld", i, port_of[i]);
    }
    for (unsigned int i = 1; i < n; i++)
        check(smp_start_vcpu(i, player) == 0, "start vcpu%u", i);
    player(0);
    uint64_t end = xen_system_time() + 60000 * MS;    /* generous: a loaded host */
    for (unsigned int i = 1; i < n; i++)
        while (!done[i] && xen_system_time() < end)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    for (unsigned int i = 0; i < n; i++) {
        check(done[i], "vcpu%u finished", i);
        check(event_count[port_of[i]] == rounds, "vcpu%u received %lu of %lu IPIs", i,
              event_count[port_of[i]], rounds);
    }
    for (unsigned int i = 0; i < n; i += 2)
        printk("vcpu%u<->vcpu%u: %lu round trips, %lu us each\n", i, i + 1, rounds,
               (unsigned long)(elapsed[i] / rounds / 1000));
    test_finish();
}
