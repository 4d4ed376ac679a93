/*
 * badinput: event-channel and vCPU hypercalls with bad arguments get
 * Xen's errno:
 *  - binding past the channel limit: ports 1..max_port may be allocated,
 *    where max_port is max_event_channels (xl's default 1023; the command
 *    line's max_port= says what the domain was given) or the ABI's last
 *    port (4095 for 2-level), whichever is lower; then -ENOSPC, with both
 *    ABIs; after closing, ports can be allocated again;
 *  - send on a closed port, on a never-allocated port, on port 0 and on
 *    ports beyond the limit: -EINVAL; unmask/close of a closed port: -EINVAL;
 *  - other domains' channels: bind_interdomain to a missing domain -ESRCH,
 *    to our own port reserved for dom0 -EINVAL, alloc_unbound / status /
 *    reset for dom0 -EPERM; bind_pirq -EPERM;
 *  - bind_virq: bad VIRQ -EINVAL, global VIRQ on vCPU 1 -EINVAL, missing
 *    vCPU -ENOENT, twice -EEXIST; bind_ipi / bind_vcpu to a missing vCPU -ENOENT;
 *  - VCPUOP_initialise of an up vCPU: -EEXIST; a context whose cr3 is not
 *    ours, is a writable data page, or whose rip is not canonical: -EINVAL
 *    (and the vCPU stays uninitialised: VCPUOP_up -EINVAL);
 *  - VCPUOP_up / is_up / initialise of a vCPU that does not exist: -ENOENT.
 */
#include "events.h"

#define EPERM 1
#define ENOENT 2
#define ESRCH 3
#define EFAULT 14
#define EEXIST 17
#define EINVAL 22
#define ENOSPC 28

static char ctx[5168] __aligned(16);
static char stack[8192] __aligned(16);
static volatile int ran;
static uint16_t alloc_ports[NR_EVENT_PORTS];
static char garbage_page[4096] __aligned(4096);

static void idle(unsigned int me) { ran = 1; (void)me; }

struct alloc_unbound_args { uint16_t dom, remote; uint32_t port; };
struct bind_interdomain_args { uint16_t remote_dom, pad; uint32_t remote_port, local_port; };
struct status_args { uint16_t dom, pad; uint32_t port, status, vcpu, u[2]; };

void test_main(void)
{
    unsigned int n = events_test_start();

    /* the channel limit */
    long max_port = (long)cmdline_get_ulong("max_port", 1023);
    if (!evtchn_fifo && max_port > NR_EVENT_PORTS - 1)
        max_port = NR_EVENT_PORTS - 1;
    if (max_port <= NR_EVENT_PORTS - 1) {
        unsigned int got = 0;
        long rc, highest = 0;
        while ((rc = evtchn_bind_ipi(0)) > 0) {
            alloc_ports[got++] = (uint16_t)rc;
            if (rc > highest)
                highest = rc;
            if (got == NR_EVENT_PORTS)
                break;
        }
        check(rc == -ENOSPC, "allocating until the limit ends with -ENOSPC (%ld)", rc);
        check(highest == max_port, "highest port %ld (want %ld)", highest, max_port);
        check(evtchn_alloc_unbound(DOMID_SELF) == -ENOSPC, "alloc_unbound when full -> -ENOSPC");
        check(evtchn_bind_virq(VIRQ_TIMER, 0) == -ENOSPC, "bind_virq when full -> -ENOSPC");
        long closed = 0;
        for (unsigned int i = 0; i < got; i++)
            closed += evtchn_close(alloc_ports[i]) == 0;
        check(closed == got, "closed all %u ports", got);
        long again = evtchn_bind_ipi(0);
        check(again > 0, "a port can be allocated again after closing (%ld)", again);
        evtchn_close(again);
    } else {
        printk("max_port %ld: not exhausted here\n", max_port);
    }

    /* sends */
    long p = evtchn_bind_ipi(0);
    check(p > 0, "bind_ipi %ld", p);
    check(evtchn_close(p) == 0, "close %ld", p);
    check(evtchn_notify(p) == -EINVAL, "send on a closed port -> -EINVAL");
    check(evtchn_unmask(p) == -EINVAL, "unmask a closed port -> -EINVAL");
    check(evtchn_close(p) == -EINVAL, "close a closed port -> -EINVAL");
    check(evtchn_notify(0) == -EINVAL, "send on port 0 -> -EINVAL");
    check(evtchn_notify(3000) == -EINVAL, "send on a port never allocated -> -EINVAL");
    check(evtchn_notify(NR_EVENT_PORTS) == -EINVAL, "send on port 4096 -> -EINVAL");
    check(evtchn_notify(0xffffffffu) == -EINVAL, "send on port 0xffffffff -> -EINVAL");

    /* other domains' channels */
    struct bind_interdomain_args bi = { 0x7000, 0, 1, 0 };
    check(HYPERVISOR_event_channel_op(EVTCHNOP_bind_interdomain, &bi) == -ESRCH,
          "bind_interdomain to a domain that does not exist -> -ESRCH");
    long for_dom0 = evtchn_alloc_unbound(0);
    check(for_dom0 > 0, "alloc_unbound for dom0: %ld", for_dom0);
    check(evtchn_bind_interdomain(DOMID_SELF, (uint32_t)for_dom0) == -EINVAL,
          "binding our own port that waits for dom0 -> -EINVAL");
    check(evtchn_notify((uint32_t)for_dom0) == 0, "send on an unbound port does nothing (0)");
    struct alloc_unbound_args au = { 0, DOMID_SELF, 0 };
    check(HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &au) == -EPERM,
          "alloc_unbound on behalf of dom0 -> -EPERM");
    struct status_args st = { 0, 0, 1, 0, 0, {0, 0} };
    check(HYPERVISOR_event_channel_op(EVTCHNOP_status, &st) == -EPERM, "status of dom0's port -> -EPERM");
    uint16_t rdom = 0;
    check(HYPERVISOR_event_channel_op(10 /* EVTCHNOP_reset */, &rdom) == -EPERM, "reset dom0 -> -EPERM");
    struct { uint32_t pirq, flags, port; } bp = { 1, 0, 0 };
    check(HYPERVISOR_event_channel_op(EVTCHNOP_bind_pirq, &bp) == -EPERM, "bind_pirq -> -EPERM");
    check(HYPERVISOR_event_channel_op(EVTCHNOP_status, (void *)0x10) == -EFAULT, "unreadable argument -> -EFAULT");

    /* VIRQs and vCPUs of channels */
    check(evtchn_bind_virq(24, 0) == -EINVAL, "VIRQ 24 -> -EINVAL");
    check(evtchn_bind_virq(VIRQ_CONSOLE, 1) == -EINVAL, "global VIRQ_CONSOLE on vcpu1 -> -EINVAL");
    /* VIRQ_DEBUG is per-vCPU (Xen's virq_is_global()), so only the vCPU is wrong */
    check(evtchn_bind_virq(VIRQ_DEBUG, n) == -ENOENT, "per-vCPU VIRQ_DEBUG on vcpu%u (missing) -> -ENOENT", n);
    if (n > 1) {
        long d = evtchn_bind_virq(VIRQ_DEBUG, 1);
        check(d > 0, "per-vCPU VIRQ_DEBUG on vcpu1 -> a port (%ld)", d);
        if (d > 0)
            evtchn_close(d);
    }
    check(evtchn_bind_virq(VIRQ_TIMER, 31) == -ENOENT, "VIRQ_TIMER on a missing vcpu -> -ENOENT");
    long t = evtchn_bind_virq(VIRQ_TIMER, 0);
    check(t > 0 && evtchn_bind_virq(VIRQ_TIMER, 0) == -EEXIST, "VIRQ_TIMER twice -> -EEXIST");
    check(evtchn_bind_ipi(31) == -ENOENT, "bind_ipi to a missing vcpu -> -ENOENT");
    long u = evtchn_alloc_unbound(DOMID_SELF);
    struct { uint32_t port, vcpu; } bv = { (uint32_t)u, 31 };
    check(HYPERVISOR_event_channel_op(EVTCHNOP_bind_vcpu, &bv) == -ENOENT, "bind_vcpu to a missing vcpu -> -ENOENT");

    /* vCPU bring-up */
    smp_fill_context(ctx, (void (*)(void))idle, 0, stack + sizeof(stack) - 8);
    check(HYPERVISOR_vcpu_op(VCPUOP_initialise, 0, ctx) == -EEXIST, "initialise vcpu0 (up) -> -EEXIST");
    check(HYPERVISOR_vcpu_op(VCPUOP_up, 0, 0) == 0, "up vcpu0, which is up: nothing to do (0)");
    for (int i = 0; i < 20; i++)                 /* still one vcpu0 running here */
        check(HYPERVISOR_vcpu_op(VCPUOP_is_up, 0, 0) == 1, "vcpu0 is up");
    check(HYPERVISOR_vcpu_op(VCPUOP_up, 31, 0) == -ENOENT, "up vcpu31 -> -ENOENT");
    check(HYPERVISOR_vcpu_op(VCPUOP_up, n, 0) == -ENOENT, "up vcpu%u (one past the last) -> -ENOENT", n);
    check(HYPERVISOR_vcpu_op(VCPUOP_is_up, n, 0) == -ENOENT, "is_up vcpu%u -> -ENOENT", n);
    check(HYPERVISOR_vcpu_op(VCPUOP_initialise, n, ctx) == -ENOENT, "initialise vcpu%u -> -ENOENT", n);
    if (n > 1) {
        uint64_t good_cr3;
        memcpy(&good_cr3, ctx + 4984 + 24, 8);
        uint64_t bad = (uint64_t)(nr_pages + 0x1000) << 12;      /* not our frame */
        memcpy(ctx + 4984 + 24, &bad, 8);
        check(HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ctx) == -EINVAL, "cr3 not ours -> -EINVAL");
        bad = (uint64_t)virt_to_mfn(garbage_page) << 12;        /* a writable data page */
        memset(garbage_page, 0xa5, sizeof(garbage_page));
        memcpy(ctx + 4984 + 24, &bad, 8);
        check(HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ctx) == -EINVAL, "cr3 a writable data page -> -EINVAL");
        memcpy(ctx + 4984 + 24, &good_cr3, 8);
        uint64_t rip = 0x8000000000000000ULL;
        memcpy(ctx + 520 + 128, &rip, 8);
        check(HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ctx) == -EINVAL, "non-canonical rip -> -EINVAL");
        check(HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0) == -EINVAL, "vcpu1 still uninitialised: up -> -EINVAL");
        check(smp_start_vcpu(1, idle) == 0, "a good context brings vcpu1 up");
        uint64_t end = xen_system_time() + 2000000000ULL;
        while (!ran && xen_system_time() < end)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
        check(ran, "vcpu1 ran");
        check(HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ctx) == -EEXIST, "initialise vcpu1 again -> -EEXIST");
    }
    test_finish();
}
