"""vCPU timers (set_timer_op / single-shot and periodic; time.VcpuTimer,
a vCPU's `timer`) on the domain's timer service, observed through the
VIRQ_TIMER sends they cause."""
from __future__ import annotations

import time

import pytest

from pyxen.hv.domain import Domain

MS = 1_000_000


@pytest.fixture
def dom(kvm):
    d = Domain(name="timers", memory_mb=16, kvm=kvm)
    d.fired = []
    d.events.send_virq = lambda virq, vcpu=0: d.fired.append((d.clock.now(), virq, vcpu))
    yield d
    d.timers.stop()
    d.close()


def test_singleshot_fires_once(dom):
    v = dom.vcpus[0].timer
    deadline = dom.clock.now() + 5 * MS
    v.set_singleshot(deadline)
    time.sleep(0.05)
    assert len(dom.fired) == 1, dom.fired
    assert dom.fired[0][0] >= deadline
    assert v.singleshot_ns == 0


def test_singleshot_in_the_past_fires_at_once(dom):
    dom.vcpus[0].timer.set_singleshot(1)
    time.sleep(0.02)
    assert len(dom.fired) == 1


def test_singleshot_cancel(dom):
    v = dom.vcpus[0].timer
    v.set_singleshot(dom.clock.now() + 10 * MS)
    v.set_singleshot(0)
    time.sleep(0.03)
    assert dom.fired == []


def test_singleshot_does_not_shift_the_periodic_timer(dom):
    """A single-shot expiry must not advance the periodic timer: ticks stay
    at start + k*period."""
    v = dom.vcpus[0].timer
    period = 20 * MS
    v.set_periodic(period)
    start = v.periodic_next - period
    v.set_singleshot(start + 10 * MS)
    time.sleep(0.075)
    v.set_periodic(0)
    times = [t - start for t, _, _ in dom.fired]
    # single-shot at 10 ms, ticks at 20, 40, 60 ms
    assert len(times) == 4, times
    for got, want in zip(times, (10, 20, 40, 60)):
        assert want * MS <= got < (want + 8) * MS, times


def test_periodic_catches_up_missed_ticks_in_phase(dom):
    """pyxen 5 ms late on a 1 ms period: the 5 missed ticks still come,
    faster, and the ticks after them are back at start + k*period."""
    v = dom.vcpus[0].timer
    with v.lock:
        v.periodic_ns = 2 * MS
        v.periodic_next = v.periodic_fire = dom.clock.now() - 9 * MS   # 5 ticks missed
        v.rearm()
        phase = v.periodic_next % v.periodic_ns
    time.sleep(0.03)
    with v.lock:
        nxt = v.periodic_next
    v.set_periodic(0)
    assert 5 + 10 <= len(dom.fired) <= 5 + 16, len(dom.fired)
    gaps = [b[0] - a[0] for a, b in zip(dom.fired, dom.fired[1:])]
    assert min(gaps[:4]) < 1 * MS            # the catch-up runs faster than the period
    assert nxt % (2 * MS) == phase


def test_periodic_far_behind_drops_ticks_but_keeps_phase(dom):
    v = dom.vcpus[0].timer
    with v.lock:
        v.periodic_ns = 10 * MS
        v.periodic_next = v.periodic_fire = dom.clock.now() - 500 * MS
        phase = v.periodic_next % v.periodic_ns
    assert v.expired()
    assert v.periodic_next > dom.clock.now()
    assert v.periodic_next % v.periodic_ns == phase
    v.set_periodic(0)


def test_pvclock_is_fixed_and_matches_pyxen_time(dom):
    """Every vCPU gets the same time parameters, and the guest's formula
    gives pyxen's own clock."""
    from pyxen import _atomic as A
    dom.clock.update_vcpu_time(dom.vcpus[0].vcpu_info)
    t = dom.vcpus[0].vcpu_info.time
    first = (t.tsc_timestamp, t.system_time, t.tsc_to_system_mul, t.tsc_shift)
    time.sleep(0.01)
    dom.clock.update_vcpu_time(dom.vcpus[0].vcpu_info)
    assert (t.tsc_timestamp, t.system_time, t.tsc_to_system_mul, t.tsc_shift) == first
    assert t.version % 2 == 0

    def guest_time():
        d = A.rdtsc() - t.tsc_timestamp
        d = d << t.tsc_shift if t.tsc_shift >= 0 else d >> -t.tsc_shift
        return t.system_time + ((d * t.tsc_to_system_mul) >> 32)
    a = dom.clock.now()
    g = guest_time()
    b = dom.clock.now()
    assert a <= g <= b
    # and it runs at the host's rate
    h0, g0 = time.monotonic_ns(), guest_time()
    time.sleep(0.2)
    h1, g1 = time.monotonic_ns(), guest_time()
    assert abs((g1 - g0) - (h1 - h0)) < 2_000_000


def test_periodic_tick_owed_while_the_last_one_is_pending(dom):
    """Ticks that come while the guest has not taken the previous one are
    not merged into it: they are delivered once it is taken."""
    v = dom.vcpus[0].timer
    state = {"pending": True}
    dom.events.virq_pending = lambda virq, vid: state["pending"]
    v.set_periodic(2 * MS)
    start = v.periodic_next - 2 * MS
    time.sleep(0.011)
    assert dom.fired == []                       # the guest never took a tick
    state["pending"] = False
    time.sleep(0.02)
    with v.lock:
        ticks_due = (dom.clock.now() - start) // (2 * MS)
    v.set_periodic(0)
    assert ticks_due - 2 <= len(dom.fired) <= ticks_due, (len(dom.fired), ticks_due)


def test_timer_service_hands_a_blocked_vcpu_its_own_timer(dom):
    """While a vCPU blocks, its own thread waits for its timer and the timer
    thread leaves it alone; afterwards the timer thread has it again."""
    v = dom.vcpus[0].timer
    v.set_singleshot(dom.clock.now() + 50 * MS)
    v.to_block(True)
    assert 0 not in dom.timers.current
    assert v.next_deadline() > 0
    v.to_block(False)
    assert 0 in dom.timers.current
    v.set_singleshot(0)
