/*
 * poll: SCHEDOP_poll on several (masked) ports.
 *  - nothing pending: returns at the timeout, not before;
 *  - one port already pending: returns at once;
 *  - a port raised by another thread while polling: returns when it is
 *    raised (1 vCPU: the VIRQ_TIMER port, raised by pyxen's timer thread;
 *    2+ vCPUs: each of 4 IPI ports bound to vCPU 1, raised by vCPU 1);
 *  - more than 128 ports, or a port beyond the ABI's limit: -EINVAL.
 */
#include "events.h"

#define MS 1000000ULL
#define NP 4

static long ports[NP];
static volatile long raise_req;        /* index+1 of the port vCPU 1 should raise */
static volatile int done;

static void raiser(unsigned int me)
{
    for (int k = 0; k < NP; k++) {
        while (raise_req != k + 1)
            cpu_relax();
        uint64_t until = xen_system_time() + 5 * MS;
        while (xen_system_time() < until)
            cpu_relax();
        evtchn_notify(ports[k]);
        raise_req = 0;
    }
    done = 1;
    (void)me;
}

static int pending_mask(void)
{
    int m = 0;
    for (int k = 0; k < NP; k++)
        if (evtchn_is_pending(ports[k]))
            m |= 1 << k;
    return m;
}

void test_main(void)
{
    unsigned int n = events_test_start();
    unsigned int target = n > 1 ? 1 : 0;
    uint32_t list[NP + 1];
    for (int k = 0; k < NP; k++) {
        ports[k] = evtchn_bind_ipi(target);
        check(ports[k] > 0, "IPI port %d bound to vcpu%u: %ld", k, target, ports[k]);
        evtchn_mask(ports[k]);
        list[k] = ports[k];
    }

    /* nothing pending: the timeout */
    uint64_t t0 = xen_system_time();
    check(sched_poll(list, NP, t0 + 20 * MS) == 0, "poll returns 0");
    uint64_t d = xen_system_time() - t0;
    check(d >= 20 * MS && d < 300 * MS, "idle poll returned after %lu us (timeout 20 ms)",
          (unsigned long)(d / 1000));
    check(pending_mask() == 0, "nothing pending");

    /* a timeout already past: at once */
    t0 = xen_system_time();
    check(sched_poll(list, NP, 1) == 0, "poll with a past timeout");
    check(xen_system_time() - t0 < 50 * MS, "past timeout returns at once");

    /* already pending */
    evtchn_notify(ports[2]);
    t0 = xen_system_time();
    check(sched_poll(list, NP, t0 + 1000 * MS) == 0, "poll with port 2 pending");
    d = xen_system_time() - t0;
    check(d < 100 * MS && pending_mask() == 4, "returned after %lu us with pending mask %#x",
          (unsigned long)(d / 1000), pending_mask());
    evtchn_clear(ports[2]);

    /* raised by another thread */
    if (n == 1) {
        long tp = timer_port();
        evtchn_mask(tp);
        list[NP] = tp;
        t0 = xen_system_time();
        HYPERVISOR_set_timer_op(t0 + 10 * MS);
        check(sched_poll(list, NP + 1, t0 + 1000 * MS) == 0, "poll on the ports + VIRQ_TIMER");
        d = xen_system_time() - t0;
        check(d >= 10 * MS && d < 500 * MS && evtchn_is_pending(tp),
              "woken by the timer port after %lu us", (unsigned long)(d / 1000));
        evtchn_clear(tp);
    } else {
        check(smp_start_vcpu(1, raiser) == 0, "start vcpu1");
        for (int k = 0; k < NP; k++) {
            raise_req = k + 1;
            t0 = xen_system_time();
            long rc = sched_poll(list, NP, t0 + 1000 * MS);
            d = xen_system_time() - t0;
            check(rc == 0 && d < 500 * MS && pending_mask() == (1 << k),
                  "poll woken by vcpu1 raising port %d after %lu us (pending %#x)", k,
                  (unsigned long)(d / 1000), pending_mask());
            while (raise_req)
                cpu_relax();
            evtchn_clear(ports[k]);
        }
    }

    /* bad input */
    static uint32_t many[129];
    check(sched_poll(many, 129, 1) == -22, "129 ports -> -EINVAL");
    uint32_t bad[2] = { (uint32_t)ports[0], 100000 };
    check(sched_poll(bad, 2, xen_system_time() + 10 * MS) == -22, "port 100000 -> -EINVAL");
    bad[1] = 0xffffffffu;
    check(sched_poll(bad, 2, xen_system_time() + 10 * MS) == -22, "port 0xffffffff -> -EINVAL");
    check(sched_poll((uint32_t *)0x10, 2, 1) == -14, "unreadable port list -> -EFAULT");
    test_finish();
}
