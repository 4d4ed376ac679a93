"""Limits Xen has (issue 13), attacked from a guest: each mini-OS guest
here tries to take more than Xen would give it and checks Xen's answer."""
from __future__ import annotations

import re
import time

import pytest

import guest_helpers

ABIS = ["2l", "fifo"]


def run_guest(kvm, elf, *, vcpus=1, cmdline="", abi="2l", timeout=120.0, memory_mb=32, **cfg):
    """Boot a guest, return (result, console text); cfg: more DomainConfig
    fields (max_event_channels=...). A watchdog destroys the domain after
    `timeout` seconds so a hang fails the test."""
    if abi == "fifo":
        cmdline = f"{cmdline} abi=fifo".strip()
    return guest_helpers.boot(kvm, elf, cmdline=cmdline, vcpus=vcpus, memory_mb=memory_mb,
                              timeout=timeout, name="lim", **cfg)


def assert_success(result, console):
    lines = re.findall(r"^Test result: .*$", console, re.M)
    assert lines == ["Test result: SUCCESS"], console[-3000:] + "\n" + result.message
    assert result.reason == "poweroff", result.message


# --- VCPUOP_initialise ----------------------------------------------------------------------
def test_vcpu_initialise_checks_context_addresses(kvm, guest_elf):
    assert_success(*run_guest(kvm, guest_elf("vcpuctx"), vcpus=2))


# --- console_io (Xen's debug-build answer, bounded) ------------------------------------------
def test_console_io_flood_is_rate_limited(kvm, guest_elf):
    """A guest writing 2 MB through console_io as fast as it can gets 0 for
    every write, but at most BURST + RATE x (its run time) bytes reach the
    hypervisor log; escape sequences are stripped; reading is -EPERM."""
    import pyxen.hv.hypercalls.console as C
    burst, rate = getattr(C, "BURST", 256 * 1024), getattr(C, "RATE", 4096)
    t0 = time.monotonic()
    result, out = run_guest(kvm, guest_elf("conflood"), cmdline="mode=io lines=20000")
    elapsed = time.monotonic() - t0
    assert_success(result, out)
    written = int(re.search(r"conflood: wrote \d+ lines, (\d+) bytes", out).group(1))
    lines = out.splitlines()
    passed = sum(len(l) + 1 for l in lines if l.startswith("flood ") or set(l) == {"b"})
    assert written > 2_000_000
    assert passed <= burst + rate * elapsed + 4096, (passed, elapsed)
    assert passed < written
    assert re.search(r"^\(console_io: \d+ lines suppressed\)$", out, re.M)
    assert "\x1b" not in out and "\x07" not in out and "[2Jescaped" in out
    assert max(len(l) for l in lines) < 200            # Xen's DOMAIN_PBUF_SIZE


def test_console_ring_reads_are_rate_limited(kvm, guest_elf):
    """A guest that signals its console ring after every line is read at
    most 30 times per 200 ms (xenconsoled's allowance); it waits for room
    and no line is lost."""
    allowance, period = 30, 0.2                         # xenconsoled's
    n = 3000
    calls = [0]

    def sink(data):
        calls[0] += 1
    with guest_helpers.domain(kvm, guest_elf("conflood"), cmdline=f"mode=ring lines={n}",
                              name="lim", sink=sink) as (dom, out):
        backend = dom.dom0.console
        t0 = time.monotonic()
        result = guest_helpers.run(dom, 120)
        elapsed = time.monotonic() - t0
        reads = backend.reads
    text = out.text
    assert_success(result, text)
    got = [int(m) for m in re.findall(r"^ring (\d{6}) y+$", text, re.M)]
    assert got == list(range(n)), "lines lost or reordered"
    assert reads <= allowance * (elapsed / period + 2), (reads, elapsed)
    assert calls[0] <= reads


# --- event channels -----------------------------------------------------------------------
@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("max_evtchn", [None, 300])
def test_event_channel_limit(kvm, guest_elf, abi, max_evtchn):
    """Binding ports until the domain's limit (xl's default 1023, or
    max_event_channels) ends with -ENOSPC at exactly that port, with either
    ABI (FIFO's 2^17 ports do not lift it)."""
    kw = {} if max_evtchn is None else {"max_event_channels": max_evtchn}
    cmdline = "" if max_evtchn is None else f"max_port={max_evtchn}"
    assert_success(*run_guest(kvm, guest_elf("badinput"), abi=abi, cmdline=cmdline, **kw))


def test_event_channel_limit_above_the_2l_abi(kvm, guest_elf):
    """max_event_channels above 4095: the 2-level ABI still ends at 4095."""
    assert_success(*run_guest(kvm, guest_elf("badinput"), cmdline="max_port=4095",
                              max_event_channels=5000))


def _fake_channels(max_port):
    """EventChannels on plain memory, FIFO ABI (no KVM)."""
    import ctypes
    from pyxen.hv import events as E
    from pyxen.hv.abi import SharedInfo

    class Vcpu:
        def __init__(self, info):
            self.id = 0
            self.vcpu_info_addr = ctypes.addressof(info.vcpu_info[0])

        def notify_event(self):
            pass

    class Dom:
        domid = 1
        connect_remote_port = None

        def __init__(self):
            self.shared = SharedInfo()
            self.vcpus = [Vcpu(self.shared)]

        def wake_pollers(self, port):
            pass
    dom = Dom()
    try:
        ev = E.EventChannels(dom, max_port=max_port)
    except TypeError:                   # a pyxen without the limit: the table is the ABI's
        ev = E.EventChannels(dom)
    ev.shared = ctypes.addressof(dom.shared)
    dom.keep = [(ctypes.c_uint32 * 18)()]
    assert ev.init_control(0, ctypes.addressof(dom.keep[0])) == 0
    return ev


def test_port_allocation_is_not_a_scan():
    """Allocating a port costs the same with 20,000 ports in use as with a
    few (Xen's bucket allocation; pyxen: a heap of free ports), and gives
    the lowest free port, as Xen's get_free_port."""
    ev = _fake_channels((1 << 17) - 1)

    def batch(k):
        t = time.thread_time()
        for _ in range(k):
            assert ev.alloc_unbound(0) > 0
        return time.thread_time() - t
    first = min(batch(1000) for _ in range(3))
    while len(ev.ports) < 20_000:
        batch(1000)
    # free a block high up and take it again: each allocation finds the
    # lowest free port among 20,000
    for p in range(18_000, 19_000):
        assert ev.close(p) == 0
    t = time.thread_time()
    for p in range(18_000, 19_000):
        assert ev.alloc_unbound(0) == p
    late = time.thread_time() - t
    assert late < 5 * first + 0.05, (first, late)
    assert ev.close(7) == 0 and ev.close(5) == 0
    assert ev.alloc_unbound(0) == 5 and ev.alloc_unbound(0) == 7
    assert ev.alloc_unbound(0) == len(ev.ports) - 1


def test_port_limit_answers_enospc():
    from pyxen.hv.abi import ENOSPC
    ev = _fake_channels(10)
    assert [ev.alloc_unbound(0) for _ in range(10)] == list(range(1, 11))
    assert ev.alloc_unbound(0) == -ENOSPC
    assert ev.bind_ipi(0) == -ENOSPC
    assert ev.close(4) == 0 and ev.bind_ipi(0) == 4
