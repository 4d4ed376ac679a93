/*
 * storm: 10^5 event sends (count=N) across 8 IPI channels per vCPU, sent
 * in multicall batches, each channel bound to some vCPU (its own or
 * another). A channel is sent on again only once its previous event was
 * delivered (a send while still pending coalesces, in both ABIs, so it
 * could not be counted), which keeps every channel busy all the time. The
 * upcall handler counts each pending -> delivered transition: no
 * notification may be lost (every send is delivered exactly once) and
 * none may be spurious (a delivery with no send outstanding).
 */
#include "events.h"

#define MS 1000000ULL
#define PER_VCPU 8
#define MAX_PORTS (PER_VCPU * MAX_GUEST_VCPUS)

struct multicall_entry { uint64_t op, result, args[6]; };

static long ports[MAX_PORTS];
static volatile uint8_t in_flight[NR_EVENT_PORTS];
static volatile unsigned long delivered[MAX_GUEST_VCPUS], spurious[MAX_GUEST_VCPUS];
static volatile unsigned long sent[MAX_GUEST_VCPUS], batches[MAX_GUEST_VCPUS];
static volatile int done[MAX_GUEST_VCPUS];
static unsigned long quota;
static unsigned int nr;

static void on_event(unsigned int port)
{
    unsigned int me = smp_id();
    if (__atomic_exchange_n(&in_flight[port], 0, __ATOMIC_SEQ_CST))
        delivered[me]++;
    else
        spurious[me]++;
}

static void storm(unsigned int me)
{
    static struct multicall_entry calls[MAX_GUEST_VCPUS][PER_VCPU];
    static struct evtchn_send args[MAX_GUEST_VCPUS][PER_VCPU];
    long *mine = &ports[me * PER_VCPU];
    unsigned long n = 0;
    uint64_t end = xen_system_time() + 20000 * MS;
    local_events_enable();
    while (xen_system_time() < end) {
        unsigned int k = 0;
        for (unsigned int j = 0; j < PER_VCPU && n < quota; j++) {
            if (in_flight[mine[j]])
                continue;
            in_flight[mine[j]] = 1;
            args[me][k].port = (uint32_t)mine[j];
            calls[me][k].op = __HYPERVISOR_event_channel_op;
            calls[me][k].args[0] = EVTCHNOP_send;
            calls[me][k].args[1] = (unsigned long)&args[me][k];
            k++;
            n++;
        }
        if (k) {
            _HYPERCALL(__HYPERVISOR_multicall, calls[me], k, 0, 0, 0);
            batches[me]++;
            for (unsigned int i = 0; i < k; i++)
                if (calls[me][i].result)
                    spurious[me] += 1000000;     /* a send failed: make it loud */
        } else {
            bool idle = n >= quota;
            for (unsigned int j = 0; j < PER_VCPU; j++)
                idle = idle && !in_flight[mine[j]];
            if (idle)
                break;
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);   /* upcalls arrive on the way back */
        }
    }
    sent[me] = n;
    done[me] = 1;
    /* keep taking events for the others until everybody is done */
    for (unsigned int i = 0; i < nr; i++)
        while (!done[i] && xen_system_time() < end + 1000 * MS)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
}

void test_main(void)
{
    nr = events_test_start();
    unsigned long total = cmdline_get_ulong("count", 100000);
    quota = total / nr;
    event_hook = on_event;
    for (unsigned int s = 0; s < nr; s++)
        for (unsigned int j = 0; j < PER_VCPU; j++) {
            long p = evtchn_bind_ipi((s + j) % nr);
            ports[s * PER_VCPU + j] = p;
            if (p <= 0)
                check(false, "bind_ipi: %ld", p);
        }
    for (unsigned int i = 1; i < nr; i++)
        check(smp_start_vcpu(i, storm) == 0, "start vcpu%u", i);
    uint64_t t0 = xen_system_time();
    storm(0);
    uint64_t took = xen_system_time() - t0;
    unsigned long s = 0, dl = 0, sp = 0, b = 0, up = 0, stuck = 0;
    for (unsigned int i = 0; i < nr; i++) {
        s += sent[i];
        dl += delivered[i];
        sp += spurious[i];
        b += batches[i];
        up += upcalls[i];
        check(done[i], "vcpu%u finished", i);
    }
    for (unsigned int i = 0; i < nr * PER_VCPU; i++)
        stuck += in_flight[ports[i]];
    printk("%lu sends in %lu batches, %lu upcalls, %lu ms\n", s, b, up, (unsigned long)(took / MS));
    check(s == quota * nr, "sent %lu events (want %lu)", s, quota * nr);
    check(dl == s && !stuck, "delivered %lu of %lu sends (%lu still outstanding): none lost", dl, s, stuck);
    check(sp == 0, "%lu spurious notifications", sp);
    test_finish();
}
