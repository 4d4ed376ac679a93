"""xen/include/public/event_channel.h: event_channel_op."""
from __future__ import annotations

from ._types import Struct, Union, u8, u32, u64, domid_t, evtchn_port_t

_HEADER = "xen/event_channel.h"

EVTCHNOP_bind_interdomain, EVTCHNOP_bind_virq, EVTCHNOP_bind_pirq = 0, 1, 2
EVTCHNOP_close, EVTCHNOP_send, EVTCHNOP_status, EVTCHNOP_alloc_unbound = 3, 4, 5, 6
EVTCHNOP_bind_ipi, EVTCHNOP_bind_vcpu, EVTCHNOP_unmask, EVTCHNOP_reset = 7, 8, 9, 10
EVTCHNOP_init_control, EVTCHNOP_expand_array, EVTCHNOP_set_priority = 11, 12, 13
EVTCHNSTAT_closed, EVTCHNSTAT_unbound, EVTCHNSTAT_interdomain = 0, 1, 2
EVTCHNSTAT_pirq, EVTCHNSTAT_virq, EVTCHNSTAT_ipi = 3, 4, 5
EVTCHN_FIFO_LINK_BITS = 17
EVTCHN_FIFO_LINK_MASK = (1 << EVTCHN_FIFO_LINK_BITS) - 1
EVTCHN_FIFO_NR_CHANNELS = 1 << EVTCHN_FIFO_LINK_BITS
EVTCHN_FIFO_PENDING, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_BUSY = 31, 30, 29, 28
EVTCHN_FIFO_PRIORITY_MAX, EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MIN = 0, 7, 15
EVTCHN_FIFO_MAX_QUEUES = EVTCHN_FIFO_PRIORITY_MIN + 1


class EvtchnFifoControlBlock(Struct):
    _c_type_ = "struct evtchn_fifo_control_block"
    _fields_ = [("ready", u32), ("_rsvd", u32), ("head", u32 * EVTCHN_FIFO_MAX_QUEUES)]


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


class EvtchnBindIpi(Struct):
    _c_type_ = "struct evtchn_bind_ipi"
    _fields_ = [("vcpu", u32), ("port", evtchn_port_t)]


class EvtchnClose(Struct):
    _c_type_ = "struct evtchn_close"
    _fields_ = [("port", evtchn_port_t)]


class EvtchnSend(Struct):
    _c_type_ = "struct evtchn_send"
    _fields_ = [("port", evtchn_port_t)]


class EvtchnStatusInterdomain(Struct):
    _c_type_ = "__typeof__(((struct evtchn_status *)0)->u.interdomain)"
    _fields_ = [("dom", domid_t), ("_pad", domid_t), ("port", evtchn_port_t)]


class EvtchnStatusU(Union):
    _c_type_ = "__typeof__(((struct evtchn_status *)0)->u)"
    _c_names_ = {"unbound_dom": "unbound.dom"}
    _fields_ = [("unbound_dom", domid_t), ("interdomain", EvtchnStatusInterdomain),
                ("pirq", u32), ("virq", u32)]


class EvtchnStatus(Struct):
    _c_type_ = "struct evtchn_status"
    _fields_ = [("dom", domid_t), ("_pad", domid_t), ("port", evtchn_port_t),
                ("status", u32), ("vcpu", u32), ("u", EvtchnStatusU)]


class EvtchnBindVcpu(Struct):
    _c_type_ = "struct evtchn_bind_vcpu"
    _fields_ = [("port", evtchn_port_t), ("vcpu", u32)]


class EvtchnUnmask(Struct):
    _c_type_ = "struct evtchn_unmask"
    _fields_ = [("port", evtchn_port_t)]


class EvtchnReset(Struct):
    _c_type_ = "struct evtchn_reset"
    _fields_ = [("dom", domid_t)]


class EvtchnInitControl(Struct):
    _c_type_ = "struct evtchn_init_control"
    _fields_ = [("control_gfn", u64), ("offset", u32), ("vcpu", u32), ("link_bits", u8),
                ("_pad", u8 * 7)]


class EvtchnExpandArray(Struct):
    _c_type_ = "struct evtchn_expand_array"
    _fields_ = [("array_gfn", u64)]


class EvtchnSetPriority(Struct):
    _c_type_ = "struct evtchn_set_priority"
    _fields_ = [("port", evtchn_port_t), ("priority", u32)]
