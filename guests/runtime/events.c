/* Event channels, time and per-vCPU identity for the pyxen mini-OS.
 * The 2-level ABI lives here; the FIFO consumer is in events_fifo.c and is
 * chosen at run time ("abi=fifo" on the command line). */
#include "events.h"

volatile unsigned long event_count[NR_EVENT_PORTS];
volatile unsigned long upcalls[MAX_GUEST_VCPUS];
bool evtchn_fifo;
void (*event_hook)(unsigned int port);
extern char event_entry[], failsafe_entry[];

struct callback_register_args { uint16_t type, flags; uint32_t pad; unsigned long address; };

unsigned int smp_id(void)
{
    unsigned long id;
    asm volatile("movq %%gs:0, %0" : "=r"(id));
    return (unsigned int)id;
}

static unsigned long percpu_id[MAX_GUEST_VCPUS];

void set_smp_id(unsigned int id)
{
    percpu_id[id] = id;
    HYPERVISOR_set_segment_base(SEGBASE_GS_KERNEL, (unsigned long)&percpu_id[id]);
}

struct vcpu_info *this_vcpu_info(void)
{
    return &shared_info->vcpu_info[smp_id()];
}

unsigned int events_test_start(void)
{
    check(traps_init() == 0, "traps_init");
    set_smp_id(0);
    int erc = events_init();
    check(erc == 0, "events_init (%s): %d", evtchn_fifo ? "fifo" : "2-level", erc);
    return smp_nr_vcpus();
}

int events_init(void)
{
    static volatile int abi_chosen;
    int rc = map_shared_info();
    if (rc)
        return rc;
    if (!abi_chosen) {
        char abi[8];
        evtchn_fifo = cmdline_get("abi", abi, sizeof(abi)) && !strcmp(abi, "fifo");
        abi_chosen = 1;
    }
    if (evtchn_fifo) {
        rc = fifo_init_vcpu(smp_id());
        if (rc)
            return rc;
    }
    struct callback_register_args cb = { CALLBACKTYPE_event, 0, 0, (unsigned long)event_entry };
    rc = HYPERVISOR_callback_op(CALLBACKOP_register, &cb);
    if (rc)
        return rc;
    struct callback_register_args fs = { CALLBACKTYPE_failsafe, 0, 0, (unsigned long)failsafe_entry };
    return HYPERVISOR_callback_op(CALLBACKOP_register, &fs);
}

void event_dispatch(void)
{
    struct vcpu_info *vi = this_vcpu_info();
    unsigned int me = smp_id();
    upcalls[me]++;
    vi->evtchn_upcall_pending = 0;
    if (evtchn_fifo) {
        fifo_dispatch(me);
        return;
    }
    uint64_t sel = __atomic_exchange_n(&vi->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
    while (sel) {
        unsigned int w = __builtin_ctzll(sel);
        sel &= sel - 1;
        uint64_t bits = shared_info->evtchn_pending[w] & ~shared_info->evtchn_mask[w];
        while (bits) {
            unsigned int b = __builtin_ctzll(bits);
            bits &= bits - 1;
            uint64_t old = __atomic_fetch_and(&shared_info->evtchn_pending[w], ~(1ULL << b),
                                              __ATOMIC_SEQ_CST);
            if (!(old & (1ULL << b)))
                continue;           /* someone else took it (evtchn_clear) */
            event_count[w * 64 + b]++;
            if (event_hook)
                event_hook(w * 64 + b);
        }
    }
}

void local_events_disable(void)
{
    this_vcpu_info()->evtchn_upcall_mask = 1;
    barrier();
}

void local_events_enable(void)
{
    struct vcpu_info *vi = this_vcpu_info();
    barrier();
    vi->evtchn_upcall_mask = 0;
    barrier();
    if (vi->evtchn_upcall_pending)
        HYPERVISOR_xen_version(0, 0);   /* any hypercall lets Xen deliver the upcall */
}

struct bind_virq_args { uint32_t virq, vcpu, port; };
struct bind_ipi_args { uint32_t vcpu, port; };
struct alloc_unbound_args { uint16_t dom, remote; uint32_t port; };
struct bind_interdomain_args { uint16_t remote_dom; uint16_t pad; uint32_t remote_port, local_port; };
struct port_args { uint32_t port; };
struct status_args { uint16_t dom; uint16_t pad; uint32_t port, status, vcpu; uint32_t u[2]; };

long evtchn_bind_virq(uint32_t virq, uint32_t vcpu)
{
    struct bind_virq_args a = { virq, vcpu, 0 };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_virq, &a);
    return rc ? rc : (long)a.port;
}

long evtchn_bind_ipi(uint32_t vcpu)
{
    struct bind_ipi_args a = { vcpu, 0 };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_ipi, &a);
    return rc ? rc : (long)a.port;
}

long evtchn_alloc_unbound(uint16_t remote)
{
    struct alloc_unbound_args a = { DOMID_SELF, remote, 0 };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &a);
    return rc ? rc : (long)a.port;
}

long evtchn_bind_interdomain(uint16_t remote, uint32_t port)
{
    struct bind_interdomain_args a = { remote, 0, port, 0 };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_interdomain, &a);
    return rc ? rc : (long)a.local_port;
}

long evtchn_close(uint32_t port)
{
    struct port_args a = { port };
    return HYPERVISOR_event_channel_op(EVTCHNOP_close, &a);
}

long evtchn_unmask(uint32_t port)
{
    struct port_args a = { port };
    return HYPERVISOR_event_channel_op(EVTCHNOP_unmask, &a);
}

void evtchn_mask(uint32_t port)
{
    if (evtchn_fifo) {
        fifo_mask(port);
        return;
    }
    __atomic_fetch_or(&shared_info->evtchn_mask[port / 64], 1ULL << (port % 64), __ATOMIC_SEQ_CST);
}


long evtchn_status(uint32_t port, uint32_t *status, uint32_t *vcpu)
{
    struct status_args a = { DOMID_SELF, 0, port, 0, 0, {0, 0} };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_status, &a);
    if (!rc) {
        *status = a.status;
        *vcpu = a.vcpu;
    }
    return rc;
}

uint64_t xen_system_time(void)
{
    struct vcpu_time_info *t = &this_vcpu_info()->time;
    uint32_t version;
    uint64_t ns;
    do {
        version = t->version;
        barrier();
        uint64_t delta = rdtsc_ordered() - t->tsc_timestamp;
        if (t->tsc_shift >= 0)
            delta <<= t->tsc_shift;
        else
            delta >>= -t->tsc_shift;
        ns = t->system_time + (uint64_t)(((unsigned __int128)delta * t->tsc_to_system_mul) >> 32);
        barrier();
    } while ((version & 1) || version != t->version);
    return ns;
}

long sched_block(void)
{
    return HYPERVISOR_sched_op(SCHEDOP_block, 0);
}

long sched_poll(uint32_t *ports, unsigned int n, uint64_t deadline)
{
    struct poll_args a = { ports, n, 0, deadline };
    return HYPERVISOR_sched_op(SCHEDOP_poll, &a);
}

bool evtchn_is_pending(uint32_t port)
{
    if (evtchn_fifo)
        return fifo_is_pending(port);
    return (shared_info->evtchn_pending[port / 64] >> (port % 64)) & 1;
}

bool evtchn_is_masked(uint32_t port)
{
    if (evtchn_fifo)
        return fifo_is_masked(port);
    return (shared_info->evtchn_mask[port / 64] >> (port % 64)) & 1;
}

void evtchn_clear(uint32_t port)
{
    if (evtchn_fifo) {
        fifo_clear(port);
        return;
    }
    __atomic_fetch_and(&shared_info->evtchn_pending[port / 64], ~(1ULL << (port % 64)),
                       __ATOMIC_SEQ_CST);
}

long timer_port(void)
{
    static long ports[MAX_GUEST_VCPUS];
    unsigned int me = smp_id();
    if (ports[me] <= 0)
        ports[me] = evtchn_bind_virq(VIRQ_TIMER, me);
    return ports[me];
}

bool wait_event_count(uint32_t port, unsigned long want, uint64_t deadline)
{
    bool armed = false;
    if (deadline && timer_port() <= 0)
        return false;
    for (;;) {
        local_events_disable();
        if (event_count[port] >= want)
            break;
        if (deadline) {
            if (xen_system_time() >= deadline)
                break;
            if (!armed) {
                HYPERVISOR_set_timer_op(deadline);
                armed = true;
            }
        }
        sched_block();                 /* re-enables events atomically with the sleep */
    }
    if (armed)
        HYPERVISOR_set_timer_op(0);
    local_events_enable();
    return event_count[port] >= want;
}

long vcpu_set_periodic(unsigned int vcpu, uint64_t period_ns)
{
    struct vcpu_set_periodic_timer t = { period_ns };
    return HYPERVISOR_vcpu_op(VCPUOP_set_periodic_timer, vcpu, &t);
}

long vcpu_stop_periodic(unsigned int vcpu)
{
    return HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, vcpu, 0);
}
