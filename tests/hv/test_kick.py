"""Kicks (signals that end KVM_RUN, sent for events, the cap watchdog and
shutdown) may come at any moment, also while pyxen replays page-table
writes through its CPL0 stub."""
from __future__ import annotations

import threading
import time

from pyxen.build.elf import load_kernel
from pyxen.hv.domain import Domain


def test_guest_survives_a_flood_of_kicks(kvm, guest_elf):
    out = bytearray()
    dom = Domain(name="kick", memory_mb=32, kvm=kvm, console=out.extend)
    stop = threading.Event()

    def kicker():
        while not stop.is_set():
            dom.vcpus[0].kvm.kick()
            time.sleep(0.00002)
    try:
        dom.build(load_kernel(guest_elf("pagetables")))
        t = threading.Thread(target=kicker, daemon=True)
        t.start()
        result = dom.run()
    finally:
        stop.set()
        dom.close()
    assert result.reason == "poweroff", result.message
    assert "Test result: SUCCESS" in out.decode()
