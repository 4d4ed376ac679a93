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

/* per-vCPU state the event code keeps (indexed by vCPU id) */
extern volatile unsigned long event_count[NR_EVENT_PORTS];
extern volatile unsigned long upcalls[MAX_GUEST_VCPUS];

int events_init(void);                /* callbacks for this vCPU; events stay masked */
unsigned int smp_id(void);            /* this vCPU's id (kernel %gs base) */
void set_smp_id(unsigned int id);
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

#endif
