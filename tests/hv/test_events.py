"""Events, time and SMP on real KVM: the mini-OS programs of issue 3, each
run with 1, 2 and 4 vCPUs where it applies and with both event-channel
ABIs (the runtime picks FIFO when the command line says abi=fifo)."""
from __future__ import annotations

import math
import os
import re

import pytest

import guest_helpers

ABIS = ["2l", "fifo"]


def run_guest(kvm, elf, *, vcpus=1, cmdline="", abi="2l", timeout=60.0, memory_mb=32):
    """Boot a guest, return (result, console). A watchdog destroys the domain
    after `timeout` seconds so a lost wake-up fails the test instead of hanging it."""
    if abi == "fifo":
        cmdline = f"{cmdline} abi=fifo".strip()
    return guest_helpers.boot(kvm, elf, cmdline=cmdline, vcpus=vcpus, memory_mb=memory_mb,
                              timeout=timeout, name="ev")


def assert_success(result, console):
    lines = re.findall(r"^Test result: .*$", console, re.M)
    assert lines == ["Test result: SUCCESS"], console + "\n" + result.message
    assert result.reason == "poweroff", result.message


TIMER_LINE = re.compile(
    r"^timer: vcpu(\d+) period (\d+) ns, (\d+) stretches: (\d+) ticks in (\d+) ns; "
    r"wake-up lateness n=(\d+) sum=(\d+) ns sumsq=(\d+) us2 max=(\d+) ns$", re.M)


def lateness_bound_ns(n: int, sum_ns: int, sumsq_us2: int) -> float:
    """Upper 3-sigma confidence bound of the mean wake-up lateness (ns) from
    n samples given as their sum (ns) and sum of squares (us^2)."""
    mean = sum_ns / n
    var_us2 = max(sumsq_us2 / n - (mean / 1000) ** 2, 0.0)
    return mean + 3 * math.sqrt(var_us2 / n) * 1000


def periodic_tick_bounds(period: int, elapsed: int, stretches: int, lateness: float) -> tuple[int, int]:
    """How many VIRQ_TIMER ticks Xen's VCPUOP_set_periodic_timer allows in
    `elapsed` ns of system time, the timer armed `stretches` times.

    Xen (vcpu_periodic_timer_work in common/sched/core.c) sends a tick once
    a period has passed since the last one *was sent*, and counts the next
    period from then: ticks never come closer than one period, and a tick
    that fires late, or that finds the previous one still pending, is not
    made up later. So each interval between counted ticks is the period
    plus at most how late the tick fired plus how late the guest took it,
    which is what the guest's wake-up lateness from a single-shot timer
    measures. At most elapsed/period ticks, plus, per arming, the tick Xen
    sends at once, plus the guest's own single-shot timer; at least
    elapsed/(period + lateness), less a partial period at either end of
    every stretch."""
    low = math.floor(elapsed / (period + lateness)) - 2 * stretches
    high = elapsed // period + stretches + 1
    return low, high


@pytest.mark.parametrize("abi", ABIS)
@pytest.mark.parametrize("vcpus", [1, 2, 4])
def test_periodic_timer_1khz(kvm, guest_elf, vcpus, abi):
    """Every vCPU counts its 1 ms VIRQ_TIMER ticks for 2 s of its own system
    time; the count must fit Xen's semantics for the time the guest saw and
    the wake-up lateness it measured on this host meanwhile (a loaded or slow
    host gives fewer ticks, as Xen would; never more than one per period)."""
    result, console = run_guest(kvm, guest_elf("timer"), vcpus=vcpus, abi=abi)
    assert_success(result, console)
    lines = TIMER_LINE.findall(console)
    assert sorted(int(m[0]) for m in lines) == list(range(vcpus)), console
    load = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0))
    for m in lines:
        cpu, period, stretches, ticks, elapsed, n, sum_ns, sumsq, max_ns = (int(x) for x in m)
        lateness = lateness_bound_ns(n, sum_ns, sumsq)
        low, high = periodic_tick_bounds(period, elapsed, stretches, lateness)
        assert low <= ticks <= high, (
            f"vcpu{cpu} counted {ticks} ticks of {period / 1e6:g} ms in {elapsed / 1e6:.1f} ms of system "
            f"time, want {low}..{high}: wake-up lateness {lateness / 1e3:.0f} us (3-sigma bound of the "
            f"mean {sum_ns / n / 1e3:.0f} us of {n}, max {max_ns / 1e3:.0f} us), {vcpus} vCPUs on "
            f"{cores} host cores, load {load:.1f}")


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
