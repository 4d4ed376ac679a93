"""The 2-level event-channel ABI (Xen's common/event_2l.c): a pending and a
mask bitmap in shared_info, and a selector word per vCPU in its vcpu_info.
"""
from __future__ import annotations

from .. import _atomic as A
from .evtchn_ops import PortOps

NR_2L = 64 * 64
SHARED_PENDING_OFF, SHARED_MASK_OFF = 2048, 2560


class TwoLevel(PortOps):
    max_ports = NR_2L

    def set_pending(self, port: int, ch, vcpu) -> None:
        ev = self.ev
        shared = ev.shared
        if A.set_bit(shared + SHARED_PENDING_OFF, port):
            return
        ev.dom.wake_pollers(port)
        if not A.test_bit(shared + SHARED_MASK_OFF, port) and \
                not A.set_bit(vcpu.vcpu_info_addr + 8, port // 64):
            ev.mark_pending(vcpu)

    def set_pending_bit(self, port: int) -> None:
        """Only the pending bit, no upcall (a port carried over from FIFO)."""
        A.set_bit(self.ev.shared + SHARED_PENDING_OFF, port)

    def clear_pending(self, port: int) -> None:
        A.clear_bit(self.ev.shared + SHARED_PENDING_OFF, port)

    def unmask(self, port: int, ch, vcpu) -> None:
        shared = self.ev.shared
        if A.clear_bit(shared + SHARED_MASK_OFF, port) and \
                A.test_bit(shared + SHARED_PENDING_OFF, port) and \
                not A.set_bit(vcpu.vcpu_info_addr + 8, port // 64):
            self.ev.mark_pending(vcpu)

    def is_pending(self, port: int) -> bool:
        return A.test_bit(self.ev.shared + SHARED_PENDING_OFF, port)

    def is_masked(self, port: int) -> bool:
        return A.test_bit(self.ev.shared + SHARED_MASK_OFF, port)
