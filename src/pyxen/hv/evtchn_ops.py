"""The interface of an event-channel ABI: Xen's struct evtchn_port_ops
(xen/include/xen/event.h). pyxen.hv.events keeps the port table and its
state machine (allocate, bind, close, send) and leaves everything the
guest sees of an event (pending and mask bits, queues) to the domain's
current ABI object: evtchn_2l.TwoLevel (Xen's event_2l.c) from the start,
evtchn_fifo.Fifo (event_fifo.c) from the first EVTCHNOP_init_control
until EVTCHNOP_reset.

Every operation is called with the domain's channel lock
(EventChannels.lock) held, as Xen calls its hooks with a lock that keeps
the channel from changing state; is_pending and is_masked may also be
called without it (they only read).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from .abi import ENOSYS, EOPNOTSUPP


class PortOps(ABC):
    #: one past the highest port this ABI can address
    max_ports: int = 0

    def __init__(self, ev):
        self.ev = ev                  # the domain's EventChannels

    # --- Xen's evtchn_port_ops ---------------------------------------------------
    @abstractmethod
    def set_pending(self, port: int, ch, vcpu) -> None:
        """Make `port` (channel `ch`, notifying `vcpu`) pending, wake the
        vCPUs polling it, and mark the upcall pending when it is newly
        visible to the guest."""

    @abstractmethod
    def clear_pending(self, port: int) -> None:
        """The port was closed: forget that it was pending."""

    @abstractmethod
    def unmask(self, port: int, ch, vcpu) -> None:
        """EVTCHNOP_unmask: clear the mask and deliver the event if it is
        pending."""

    @abstractmethod
    def is_pending(self, port: int) -> bool:
        ...

    @abstractmethod
    def is_masked(self, port: int) -> bool:
        ...

    def set_priority(self, port: int, priority: int) -> int:
        """EVTCHNOP_set_priority (Xen: -ENOSYS for an ABI without priorities)."""
        return -ENOSYS

    # --- the FIFO ABI's control structures (-EOPNOTSUPP elsewhere, as in Xen) ----
    def has_control_block(self, vcpu_id: int) -> bool:
        return False

    def can_expand(self) -> int:
        """0 when EVTCHNOP_expand_array may add a page, else the error."""
        return -EOPNOTSUPP

    def expand_array(self, page_addr: int, frame: int | None) -> int:
        return -EOPNOTSUPP

    def reset(self, two_level: "PortOps") -> list[int]:
        """EVTCHNOP_reset switches the domain to `two_level` (a fresh 2-level
        ABI): hand over the pending state of the ports still bound and
        return the guest frames whose references this ABI held."""
        return []
