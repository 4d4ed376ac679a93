"""The FIFO event-channel ABI (Xen's common/event_fifo.c): an event word
per port in guest pages the guest hands over (EVTCHNOP_expand_array), and
per vCPU a control block (EVTCHNOP_init_control) with a queue per
priority, events linked through their words.

The event words are updated with real atomic instructions (pyxen._atomic):
the guest's vCPUs change them at the same time.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .. import _atomic as A
from .abi import (EINVAL, ENOSPC, EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED,
                  EVTCHN_FIFO_MASKED, EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING,
                  EVTCHN_FIFO_PRIORITY_DEFAULT, EvtchnFifoControlBlock)
from .evtchn_ops import PortOps

NR_FIFO = EVTCHN_FIFO_NR_CHANNELS
FIFO_PENDING, FIFO_MASKED = EVTCHN_FIFO_PENDING, EVTCHN_FIFO_MASKED
FIFO_LINKED, FIFO_BUSY = EVTCHN_FIFO_LINKED, EVTCHN_FIFO_BUSY
FIFO_LINK_MASK = EVTCHN_FIFO_LINK_MASK
PRIORITY_DEFAULT = EVTCHN_FIFO_PRIORITY_DEFAULT
FIFO_CONTROL_BLOCK_SIZE = ctypes.sizeof(EvtchnFifoControlBlock)
FIFO_MAX_ARRAY_PAGES = NR_FIFO // 1024


@dataclass
class FifoQueue:
    head_addr: int = 0    # host address of control_block.head[prio]
    tail: int = 0


def ctypes_read(addr: int, n: int) -> bytes:
    return ctypes.string_at(addr, n)


class Fifo(PortOps):
    max_ports = NR_FIFO

    def __init__(self, ev):
        super().__init__(ev)
        self.pages: list[int] = []                   # host addresses of event array pages
        self.ctl: dict[int, int] = {}                # vcpu -> host address of control block
        self.queues: dict[int, list[FifoQueue]] = {}
        # port -> the queue its event was last linked on (Xen keeps it in
        # struct evtchn, which outlives a close: a port closed as the tail
        # of a queue and bound again must not be linked onto itself)
        self.last_queue: dict[int, FifoQueue] = {}
        # guest frames under the FIFO structures, whose (writable type)
        # references the hypercall layer took and drops again on reset
        self.frames: list[int] = []

    def word(self, port: int) -> int | None:
        """Host address of the port's event word, None before its page exists."""
        page = port // 1024
        if page >= len(self.pages):
            return None
        return self.pages[page] + (port % 1024) * 4

    # --- control block and event array ---------------------------------------------
    def has_control_block(self, vcpu_id: int) -> bool:
        return vcpu_id in self.ctl

    def init_control(self, vcpu_id: int, ctl_addr: int, frame: int | None) -> int:
        if vcpu_id in self.ctl:
            return -EINVAL
        self.ctl[vcpu_id] = ctl_addr
        self.queues[vcpu_id] = [FifoQueue(ctl_addr + 8 + 4 * q) for q in range(16)]
        if frame is not None:
            self.frames.append(frame)
        return 0

    def can_expand(self) -> int:
        return -ENOSPC if len(self.pages) >= FIFO_MAX_ARRAY_PAGES else 0

    def expand_array(self, page_addr: int, frame: int | None) -> int:
        rc = self.can_expand()
        if rc:
            return rc
        self.pages.append(page_addr)
        if frame is not None:
            self.frames.append(frame)
        # ports already in use whose words just appeared start masked, as in Xen
        ev = self.ev
        first = (len(self.pages) - 1) * 1024
        for port in range(first, min(first + 1024, len(ev.ports))):
            ch = ev.get(port)
            if ch is not None:
                w = self.word(port)
                A.set_bit(w & ~7, (w & 4) * 8 + FIFO_MASKED)
                if ch.fifo_pending:
                    ch.fifo_pending = False
                    A.set_bit(w & ~7, (w & 4) * 8 + FIFO_PENDING)
        return 0

    def reset(self, two_level: PortOps) -> list[int]:
        # pyxen's own ports stay bound: keep their pending state, as
        # Xen's setup_ports() does when it switches the other way
        ev = self.ev
        for p in range(1, len(ev.ports)):
            ch = ev.ports[p]
            if ev.get(p) is not None and p < two_level.max_ports and (ch.fifo_pending or self.is_pending(p)):
                two_level.set_pending_bit(p)
            ch.fifo_pending, ch.priority = False, PRIORITY_DEFAULT
        frames = self.frames
        self.pages, self.ctl, self.queues, self.frames = [], {}, {}, []
        self.last_queue = {}
        return frames

    # --- Xen's evtchn_port_ops ---------------------------------------------------
    def set_pending(self, port: int, ch, vcpu, already_pending: bool = False) -> None:
        w = self.word(port)
        if w is None:
            ch.fifo_pending = True          # delivered when its event word appears
            return
        base, bit = w & ~7, (w & 4) * 8
        if not already_pending:
            A.set_bit(base, bit + FIFO_PENDING)
            self.ev.dom.wake_pollers(port)
        queues = self.queues.get(ch.vcpu)
        if queues is None:
            # no control block for that vCPU: like Xen, leave the event
            # pending but unlinked (EVTCHNOP_unmask links it later)
            return
        if A.test_bit(base, bit + FIFO_MASKED) or A.set_bit(base, bit + FIFO_LINKED):
            return
        # The event is linked again, so the guest has consumed it: if it was
        # the tail of the queue it was last on, that queue is empty now and
        # its tail must not be used (Xen: "old_q->tail = 0"); otherwise the
        # event would be linked onto itself and never be seen again.
        old_q = self.last_queue.get(port)
        if old_q is not None and old_q.tail == port:
            old_q.tail = 0
        q = queues[ch.priority]
        self.last_queue[port] = q
        linked = False
        if q.tail:
            tw = self.word(q.tail)
            while tw is not None:
                old = int.from_bytes(bytes((ctypes_read(tw, 4))), "little")
                if not (old >> FIFO_LINKED) & 1:
                    break
                new = (old & ~FIFO_LINK_MASK) | port
                if A.cmpxchg32(tw, old, new) == old:
                    linked = True
                    break
        if not linked:
            A.store32(q.head_addr, port)
        q.tail = port
        # READY only for a new head (Xen's "only set READY for new heads"):
        # a READY bit left by an event linked onto a tail the guest has
        # already consumed would send the guest to a stale HEAD
        if not linked and not A.set_bit(self.ctl[ch.vcpu], ch.priority):
            self.ev.mark_pending(vcpu)

    def clear_pending(self, port: int) -> None:
        """A closed port's PENDING bit is cleared, as Xen's
        evtchn_fifo_clear_pending (it stays linked: the guest unlinks and
        skips events that are not pending). Left set, the port's next user
        would get a stale event the moment it unmasks: Linux BUG()s in the
        spinlock kicker's handler when a CPU it took offline comes back."""
        w = self.word(port)
        if w is not None:
            A.clear_bit(w & ~7, (w & 4) * 8 + FIFO_PENDING)

    def unmask(self, port: int, ch, vcpu) -> None:
        w = self.word(port)
        if w is None:
            return
        base, bit = w & ~7, (w & 4) * 8
        A.clear_bit(base, bit + FIFO_MASKED)
        if A.test_bit(base, bit + FIFO_PENDING):
            self.set_pending(port, ch, vcpu, already_pending=True)

    def is_pending(self, port: int) -> bool:
        w = self.word(port)
        return bool(w and A.test_bit(w & ~7, (w & 4) * 8 + FIFO_PENDING))

    def is_masked(self, port: int) -> bool:
        """As Xen: a port without an event word counts as masked."""
        w = self.word(port)
        return not w or A.test_bit(w & ~7, (w & 4) * 8 + FIFO_MASKED)

    def set_priority(self, port: int, priority: int) -> int:
        if priority > 15:
            return -EINVAL
        ch = self.ev.get(port)
        if ch is None:
            return -EINVAL
        ch.priority = priority
        return 0
