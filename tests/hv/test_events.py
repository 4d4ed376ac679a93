"""Events, time and SMP on real KVM: the mini-OS programs of issue 3, each
run with 1, 2 and 4 vCPUs where it applies and with both event-channel
ABIs (the runtime picks FIFO when the command line says abi=fifo)."""
from __future__ import annotations

import re
import threading
import time

import pytest

from pyxen.build.elf import load_kernel
from pyxen.hv.domain import Domain

ABIS = ["2l", "fifo"]


def run_guest(kvm, elf, *, vcpus=1, cmdline="", abi="2l", timeout=60.0, memory_mb=32):
    """Boot a guest, return (result, console). A watchdog destroys the domain
    after `timeout` seconds so a lost wake-up fails the test instead of hanging it."""
    out = bytearray()
    if abi == "fifo":
        cmdline = f"{cmdline} abi=fifo".strip()
    dom = Domain(name="ev", memory_mb=memory_mb, vcpus=vcpus, kvm=kvm, console=out.extend)
    timer = threading.Timer(timeout, dom.destroy)
    timer.daemon = True
    try:
        dom.build(load_kernel(elf), cmdline=cmdline)
        timer.start()
        result = dom.run()
    finally:
        timer.cancel()
        dom.close()
    return result, out.decode(errors="replace")


def assert_success(result, console):
    lines = re.findall(r"^Test result: .*$", console, re.M)
    assert lines == ["Test result: SUCCESS"], console + "\n" + result.message
    assert result.reason == "poweroff", result.message


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_periodic_timer_1khz(kvm, guest_elf, vcpus, abi):
    assert_success(*run_guest(kvm, guest_elf("timer"), vcpus=vcpus, abi=abi))


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_pvclock_monotonic(kvm, guest_elf, vcpus, abi):
    assert_success(*run_guest(kvm, guest_elf("pvclock"), vcpus=vcpus, abi=abi))


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("vcpus", [2, 4])
def test_ipi_ping_pong(kvm, guest_elf, vcpus, abi):
    assert_success(*run_guest(kvm, guest_elf("ipi"), vcpus=vcpus, abi=abi))


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_block_with_timeout(kvm, guest_elf, vcpus, abi):
    assert_success(*run_guest(kvm, guest_elf("block"), vcpus=vcpus, abi=abi))


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("vcpus", [1, 2])
def test_poll_several_ports(kvm, guest_elf, vcpus, abi):
    assert_success(*run_guest(kvm, guest_elf("poll"), vcpus=vcpus, abi=abi))


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_event_storm(kvm, guest_elf, vcpus, abi):
    assert_success(*run_guest(kvm, guest_elf("storm"), vcpus=vcpus, abi=abi))


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("vcpus", [2, 4])
def test_vcpu_down_and_up(kvm, guest_elf, vcpus, abi):
    assert_success(*run_guest(kvm, guest_elf("smp"), vcpus=vcpus, abi=abi))


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("vcpus", [1, 2])
def test_bad_input_errnos(kvm, guest_elf, vcpus, abi):
    assert_success(*run_guest(kvm, guest_elf("badinput"), vcpus=vcpus, abi=abi))
