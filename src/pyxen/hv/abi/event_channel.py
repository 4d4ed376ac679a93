"""xen/include/public/event_channel.h: event_channel_op."""
from __future__ import annotations

from ._types import Struct, u8, u32, u64, domid_t, evtchn_port_t

_HEADER = "xen/event_channel.h"

EVTCHNOP_bind_interdomain, EVTCHNOP_bind_virq, EVTCHNOP_bind_pirq = 0, 1, 2
EVTCHNOP_close, EVTCHNOP_send, EVTCHNOP_status, EVTCHNOP_alloc_unbound = 3, 4, 5, 6
EVTCHNOP_bind_ipi, EVTCHNOP_bind_vcpu, EVTCHNOP_unmask, EVTCHNOP_reset = 7, 8, 9, 10
EVTCHNOP_init_control, EVTCHNOP_expand_array, EVTCHNOP_set_priority = 11, 12, 13
EVTCHNSTAT_closed, EVTCHNSTAT_unbound, EVTCHNSTAT_interdomain = 0, 1, 2
EVTCHNSTAT_pirq, EVTCHNSTAT_virq, EVTCHNSTAT_ipi = 3, 4, 5


class EvtchnAllocUnbound(Struct):
    _c_type_ = "struct evtchn_alloc_unbound"
    _fields_ = [("dom", domid_t), ("remote_dom", domid_t), ("port", evtchn_port_t)]


class EvtchnBindInterdomain(Struct):
    _c_type_ = "struct evtchn_bind_interdomain"
    _fields_ = [("remote_dom", domid_t), ("_pad", domid_t), ("remote_port", evtchn_port_t),
                ("local_port", evtchn_port_t)]


class EvtchnBindVirq(Struct):
    _c_type_ = "struct evtchn_bind_virq"
    _fields_ = [("virq", u32), ("vcpu", u32), ("port", evtchn_port_t)]


class EvtchnBindVcpu(Struct):
    _c_type_ = "struct evtchn_bind_vcpu"
    _fields_ = [("port", evtchn_port_t), ("vcpu", u32)]


class EvtchnInitControl(Struct):
    _c_type_ = "struct evtchn_init_control"
    _fields_ = [("control_gfn", u64), ("offset", u32), ("vcpu", u32), ("link_bits", u8),
                ("_pad", u8 * 7)]
