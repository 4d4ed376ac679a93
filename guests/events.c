/*
 * events: event channels, upcalls, timers, blocking, polling and time.
 * VIRQ_TIMER + set_timer_op + SCHEDOP_block; loopback inter-domain channel;
 * IPI to self; masking and EVTCHNOP_unmask; close; status; poll with a
 * timeout; bind_pirq refused; wallclock and runstate.
 */
#include "events.h"

#define MS 1000000ULL

static struct runstate_info runstate;

static bool wait_count(uint32_t port, unsigned long want, uint64_t ms)
{
    uint64_t end = xen_system_time() + ms * MS;
    while (event_count[port] < want && xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    return event_count[port] >= want;
}

void test_main(void)
{
    uint32_t st, vc;
    check(traps_init() == 0, "traps_init");
    set_smp_id(0);
    check(events_init() == 0, "registering the event callback");

    /* time: pvclock advances and the wallclock is plausible */
    uint64_t t0 = xen_system_time();
    uint64_t wc = shared_info->wc_sec | ((uint64_t)shared_info->wc_sec_hi << 32);
    printk("system time %lu ns, wallclock boot %lu s\n", (unsigned long)t0, (unsigned long)wc);
    check(wc > 1577836800UL, "wallclock seconds %lu look like a real date", (unsigned long)wc);
    check(vcpu_info0->time.version % 2 == 0, "pvclock version even");

    /* runstate area */
    check(HYPERVISOR_vcpu_op(VCPUOP_register_runstate_memory_area, 0, &(unsigned long){(unsigned long)&runstate}) == 0,
          "register runstate area");

    /* timer: VIRQ_TIMER, singleshot via set_timer_op, block */
    long tport = evtchn_bind_virq(VIRQ_TIMER, 0);
    check(tport > 0, "bind VIRQ_TIMER -> %ld", tport);
    check(evtchn_bind_virq(VIRQ_TIMER, 0) < 0, "binding VIRQ_TIMER twice is refused");
    uint64_t start = xen_system_time();
    check(HYPERVISOR_set_timer_op(start + 20 * MS) == 0, "set_timer_op");
    while (event_count[tport] == 0 && xen_system_time() < start + 2000 * MS)
        sched_block();                       /* block enables event delivery */
    uint64_t waited = xen_system_time() - start;
    check(event_count[tport] == 1, "timer event delivered once (%lu)", event_count[tport]);
    check(waited >= 19 * MS && waited < 1000 * MS, "timer fired after %lu us (want ~20 ms)",
          (unsigned long)(waited / 1000));
    check(upcalls[0] >= 1, "event callback ran (%lu upcalls)", upcalls[0]);
    check(runstate.time[RUNSTATE_blocked] >= 10 * MS, "runstate counts %lu us blocked",
          (unsigned long)(runstate.time[RUNSTATE_blocked] / 1000));

    /* vcpu_op singleshot timer */
    struct { uint64_t deadline; uint32_t flags; uint32_t pad; } ss = { xen_system_time() + 5 * MS, 0, 0 };
    check(HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, 0, &ss) == 0, "set_singleshot_timer");
    check(wait_count(tport, 2, 1000), "singleshot timer fired");
    ss.deadline = 1; ss.flags = 1;  /* VCPU_SSHOTTMR_future, in the past */
    check(HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, 0, &ss) == -62, "past deadline -> -ETIME");

    /* loopback inter-domain channel */
    long a = evtchn_alloc_unbound(DOMID_SELF);
    check(a > 0, "alloc_unbound -> %ld", a);
    check(evtchn_status(a, &st, &vc) == 0 && st == EVTCHNSTAT_unbound, "status unbound (%u)", st);
    long b = evtchn_bind_interdomain(DOMID_SELF, a);
    check(b > 0 && b != a, "bind_interdomain -> %ld", b);
    check(evtchn_status(a, &st, &vc) == 0 && st == EVTCHNSTAT_interdomain, "status interdomain (%u)", st);
    unsigned long before = event_count[a];
    check(evtchn_notify(b) == 0, "send on b");
    check(wait_count(a, before + 1, 1000), "send on b raises a");
    before = event_count[b];
    check(evtchn_notify(a) == 0, "send on a");
    check(wait_count(b, before + 1, 1000), "send on a raises b");

    /* IPI to self, masking and unmask */
    long ipi = evtchn_bind_ipi(0);
    check(ipi > 0, "bind_ipi -> %ld", ipi);
    check(evtchn_status(ipi, &st, &vc) == 0 && st == EVTCHNSTAT_ipi, "status ipi (%u)", st);
    evtchn_mask(ipi);
    evtchn_notify(ipi);
    for (int i = 0; i < 5; i++)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    check(event_count[ipi] == 0, "masked IPI not delivered");
    check(shared_info->evtchn_pending[ipi / 64] & (1ULL << (ipi % 64)), "masked IPI is pending");
    check(evtchn_unmask(ipi) == 0, "unmask");
    check(wait_count(ipi, 1, 1000), "IPI delivered after unmask");

    /* poll on a masked, idle port: returns at the timeout */
    evtchn_mask(a);
    uint32_t pp = a;
    uint64_t p0 = xen_system_time();
    check(sched_poll(&pp, 1, p0 + 20 * MS) == 0, "poll");
    uint64_t pw = xen_system_time() - p0;
    check(pw >= 19 * MS && pw < 1000 * MS, "poll timed out after %lu us", (unsigned long)(pw / 1000));
    /* poll wakes when the polled (masked) port becomes pending */
    evtchn_notify(b);
    check(sched_poll(&pp, 1, xen_system_time() + 1000 * MS) == 0, "poll on a pending port returns");

    /* close, and refusals */
    check(evtchn_close(ipi) == 0, "close ipi");
    check(evtchn_notify(ipi) == -22, "send on a closed port -> -EINVAL");
    check(evtchn_status(ipi, &st, &vc) == 0 && st == EVTCHNSTAT_closed, "status closed");
    struct { uint32_t pirq, flags, port; } bp = { 1, 0, 0 };
    check(HYPERVISOR_event_channel_op(EVTCHNOP_bind_pirq, &bp) == -1, "bind_pirq refused (-EPERM)");
    check(evtchn_bind_virq(99, 0) == -22, "bad VIRQ -> -EINVAL");
    test_finish();
}
