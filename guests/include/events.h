/*
 * events.h - event channels, time and vCPU control for the pyxen mini-OS.
 * Numbers and layouts from Xen's public event_channel.h, vcpu.h, sched.h
 * (pyxen's own definitions).
 */
#ifndef PYXEN_GUEST_EVENTS_H
#define PYXEN_GUEST_EVENTS_H

#include "minios.h"
#include "hypercall.h"

#define __HYPERVISOR_set_timer_op 15

#define EVTCHNOP_bind_interdomain 0
#define EVTCHNOP_bind_virq        1
#define EVTCHNOP_bind_pirq        2
#define EVTCHNOP_close            3
#define EVTCHNOP_status           5
#define EVTCHNOP_alloc_unbound    6
#define EVTCHNOP_bind_ipi         7
#define EVTCHNOP_bind_vcpu        8
#define EVTCHNOP_unmask           9
#define EVTCHNOP_reset           10
#define EVTCHNOP_init_control    11
#define EVTCHNOP_expand_array    12
#define EVTCHNOP_set_priority    13

#define EVTCHNSTAT_closed      0
#define EVTCHNSTAT_unbound     1
#define EVTCHNSTAT_interdomain 2
#define EVTCHNSTAT_virq        4
#define EVTCHNSTAT_ipi         5

#define VIRQ_TIMER 0
#define VIRQ_DEBUG 1
#define VIRQ_CONSOLE 2

#define VCPUOP_initialise  0
#define VCPUOP_up          1
#define VCPUOP_down        2
#define VCPUOP_is_up       3
#define VCPUOP_get_runstate_info 4
#define VCPUOP_register_runstate_memory_area 5
#define VCPUOP_set_periodic_timer 6
#define VCPUOP_stop_periodic_timer 7
#define VCPUOP_set_singleshot_timer 8
#define VCPUOP_stop_singleshot_timer 9
#define VCPUOP_send_nmi    11

#define RUNSTATE_running  0
#define RUNSTATE_runnable 1
#define RUNSTATE_blocked  2
#define RUNSTATE_offline  3

#define NR_EVENT_PORTS 4096
#define MAX_GUEST_VCPUS 4

struct runstate_info {
    int32_t state;
    uint32_t pad;
    uint64_t state_entry_time;
    uint64_t time[4];
};

struct poll_args {
    uint32_t *ports;
    uint32_t nr_ports;
    uint32_t pad;
    uint64_t timeout;
};

static inline long HYPERVISOR_vcpu_op(unsigned int cmd, unsigned int vcpu, void *arg)
{ return _HYPERCALL(__HYPERVISOR_vcpu_op, cmd, vcpu, arg, 0, 0); }

static inline long HYPERVISOR_set_timer_op(uint64_t deadline)
{ return _HYPERCALL(__HYPERVISOR_set_timer_op, deadline, 0, 0, 0, 0); }

#define VCPU_SSHOTTMR_future 1

struct vcpu_set_periodic_timer { uint64_t period_ns; };
struct vcpu_set_singleshot_timer { uint64_t timeout_abs_ns; uint32_t flags; uint32_t pad; };

/* per-vCPU state the event code keeps (indexed by vCPU id) */
extern volatile unsigned long event_count[NR_EVENT_PORTS];
extern volatile unsigned long upcalls[MAX_GUEST_VCPUS];

/*
 * Event ABI: 2-level by default; the FIFO ABI when the command line says
 * "abi=fifo" (runtime/events_fifo.c).  Everything below works with either.
 */
extern bool evtchn_fifo;
/* Called for every port the upcall handler finds pending (after it cleared
 * the pending bit and counted the port in event_count[]), on the vCPU that
 * took the upcall, events masked. */
extern void (*event_hook)(unsigned int port);

int events_init(void);                /* callbacks (+ FIFO control block) for this vCPU; events stay masked */
unsigned int smp_id(void);            /* this vCPU's id (kernel %gs base) */
void set_smp_id(unsigned int id);
/* the usual start of an events test on vCPU 0: traps_init, events_init (both
 * check()ed, printing which ABI), returns the number of vCPUs */
unsigned int events_test_start(void);
struct vcpu_info *this_vcpu_info(void);
void local_events_enable(void);       /* unmask; take pending upcalls now */
void local_events_disable(void);
long evtchn_bind_virq(uint32_t virq, uint32_t vcpu);   /* port or -errno */
long evtchn_bind_ipi(uint32_t vcpu);
long evtchn_alloc_unbound(uint16_t remote);
long evtchn_bind_interdomain(uint16_t remote, uint32_t port);
long evtchn_close(uint32_t port);
long evtchn_unmask(uint32_t port);
long evtchn_status(uint32_t port, uint32_t *status, uint32_t *vcpu);
void evtchn_mask(uint32_t port);
uint64_t xen_system_time(void);       /* ns, from this vCPU's pvclock */
long sched_block(void);
long sched_poll(uint32_t *ports, unsigned int n, uint64_t deadline);
bool evtchn_is_pending(uint32_t port);
bool evtchn_is_masked(uint32_t port);
void evtchn_clear(uint32_t port);     /* clear a pending port without handling it */
/* Block until event_count[port] >= want (events masked around the check, so
 * no wake-up is lost) or system time passes deadline (0 = none; it uses
 * set_timer_op, so the caller's own single-shot timer is replaced).
 * Returns true if the count was reached. Leaves events enabled. */
/* This vCPU's VIRQ_TIMER port, bound on first use. */
long timer_port(void);
bool wait_event_count(uint32_t port, unsigned long want, uint64_t deadline);
long vcpu_set_periodic(unsigned int vcpu, uint64_t period_ns);
long vcpu_stop_periodic(unsigned int vcpu);

/* FIFO ABI (runtime/events_fifo.c) */
int fifo_init_vcpu(unsigned int vcpu);
void fifo_dispatch(unsigned int vcpu);
bool fifo_is_pending(uint32_t port);
bool fifo_is_masked(uint32_t port);
void fifo_mask(uint32_t port);
bool fifo_clear(uint32_t port);       /* true if it was pending */

/* SMP (runtime/vcpus.c): vCPU ids 0..n-1 exist */
unsigned int smp_nr_vcpus(void);
/* Initialise and bring up vCPU id on its own stack: it sets its id, trap
 * table and event callbacks (events_init), then runs fn(id) with events
 * masked; when fn returns the vCPU takes itself down. 0 or -errno. */
long smp_start_vcpu(unsigned int id, void (*fn)(unsigned int));
/* Fill a vcpu_guest_context (5168 bytes) that starts at entry(rdi=arg) on stack. */
void smp_fill_context(void *ctx, void (*entry)(void), unsigned long rdi, void *stack_top);
static inline void cpu_relax(void) { asm volatile("pause" ::: "memory"); }

#endif
