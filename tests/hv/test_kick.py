"""Kicks (signals that end KVM_RUN, sent for events, the cap watchdog and
shutdown) may come at any moment, also while pyxen replays page-table
writes through its CPL0 stub."""
from __future__ import annotations

import threading
import time

from pyxen.hv.domain import Domain
import guest_helpers
from pyxen.toolstack.builder import close_domain


def test_guest_survives_a_flood_of_kicks(kvm, guest_elf):
    dom, out = guest_helpers.build(kvm, guest_elf("pagetables"), name="kick")
    stop = threading.Event()

    def kicker():
        while not stop.is_set():
            dom.vcpus[0].kvcpu.kick()
            time.sleep(0.00002)
    try:
        t = threading.Thread(target=kicker, daemon=True)
        t.start()
        result = dom.run()
    finally:
        stop.set()
        close_domain(dom)
    assert result.reason == "poweroff", result.message
    assert "Test result: SUCCESS" in out.text


def test_event_for_a_masked_vcpu_still_kicks_it(kvm):
    """Xen's vcpu_kick() ignores the upcall mask: the guest may have just
    unmasked (a plain store, not yet visible) and read no pending flag."""
    dom = Domain(name="kick2", memory_mb=16, kvm=kvm)
    try:
        v = dom.vcpus[0]
        kicks = []
        v.kvcpu.kick = lambda: kicks.append(1)
        v.vcpu_info.evtchn_upcall_mask = 1
        v.thread_ident = -1                      # raised from another thread
        dom.events.mark_pending(v)
        assert kicks and v.wake.is_set()
    finally:
        dom.timers.stop()
        dom.close()
