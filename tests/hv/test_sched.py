"""Credit-scheduler parameters enforced on the host."""
from __future__ import annotations

import os
import threading
import time

from pyxen.hv.sched import weight_to_nice
import guest_helpers
from pyxen.toolstack.builder import close_domain


def test_weight_maps_to_nice():
    assert weight_to_nice(256) == 0
    assert weight_to_nice(512) < 0 < weight_to_nice(128)
    assert weight_to_nice(65535) == -20 or weight_to_nice(65535) >= -20


def run_spin(kvm, elf, ms, cap=0, weight=None):
    dom, out = guest_helpers.build(kvm, elf, name="spin", memory_mb=16, cmdline=f"ms={ms}")
    try:
        dom.sched.set_params(weight=weight, cap=cap)
        t0 = time.monotonic()
        c0 = time.process_time()
        res = dom.run()
        wall = time.monotonic() - t0
        cpu = time.process_time() - c0
    finally:
        close_domain(dom)
    assert "Test result: SUCCESS" in out.text, out.text + res.message
    return wall, cpu


def test_cap_limits_host_cpu(kvm, guest_elf):
    elf = guest_elf("spin")
    wall, cpu = run_spin(kvm, elf, 1500, cap=20)
    # uncapped the guest would use ~100% of a CPU for 1.5 s
    assert cpu / wall < 0.6, f"capped at 20% the domain used {cpu / wall:.0%} of a CPU"


def test_weight_sets_nice_of_vcpu_threads(kvm, guest_elf):
    elf = guest_elf("spin")
    seen = {}
    dom, out = guest_helpers.build(kvm, elf, name="w", memory_mb=16, cmdline="ms=300")
    try:
        dom.sched.set_params(weight=64)

        def probe():
            time.sleep(0.15)
            tid = dom.vcpus[0].native_tid
            seen["nice"] = os.getpriority(os.PRIO_PROCESS, tid)
        t = threading.Thread(target=probe)
        t.start()
        dom.run()
        t.join()
    finally:
        close_domain(dom)
    assert seen["nice"] == weight_to_nice(64) > 0


def test_hard_affinity_reaches_vcpus_started_later(kvm, guest_elf):
    """cpus= / vcpu-pin of a vCPU whose thread has not started: the thread
    gets that affinity the moment it starts (vCPU 1 of the smp guest is
    brought up by vCPU 0 with VCPUOP_up)."""
    dom, out = guest_helpers.build(kvm, guest_elf("smp"), name="pin", vcpus=2,
                                   cpus=["all", "0"])
    seen = {}
    started = dom.sched.vcpu_started

    def spy(vcpu):
        started(vcpu)
        seen[vcpu.id] = os.sched_getaffinity(vcpu.native_tid)
    dom.sched.vcpu_started = spy
    try:
        assert dom.sched.hard_affinity(dom.vcpus[1]) == [0]
        res = guest_helpers.run(dom, 60)
    finally:
        close_domain(dom)
    assert "Test result: SUCCESS" in out.text, out.text + res.message
    assert seen == {0: os.sched_getaffinity(0), 1: {0}}
