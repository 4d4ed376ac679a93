"""Guest time: Xen's system time, the per-vCPU pvclock (vcpu_time_info), the
shared wallclock, and timers that raise VIRQ_TIMER (Xen's common/time.c,
arch/x86/time.c and the vCPU timers of common/sched/core.c)."""
from __future__ import annotations

import heapq
import threading
import time

from .. import _atomic as A
from .guestmem import GuestFault

SECOND = 1_000_000_000
MAX_WAIT = 3600.0                  # seconds the timer thread sleeps at most in one wait
PVCLOCK_TSC_STABLE = 1


def time_scale(tsc_hz: int) -> tuple[int, int]:
    """(mul, shift) with ns = ((tsc << shift or >> -shift) * mul) >> 32,
    computed the way Xen's set_time_scale does."""
    shift = 0
    tps = tsc_hz
    while tps > 2 * SECOND:
        tps >>= 1
        shift -= 1
    while tps <= SECOND:
        tps <<= 1
        shift += 1
    mul = (SECOND << 32) // tps
    return mul, shift


class Clock:
    """Domain system time: ns since the domain started, defined by the TSC.

    The guest computes its time from vcpu_time_info as
    system_time + scale(rdtsc - tsc_timestamp). pyxen publishes one fixed
    (tsc_timestamp, system_time, mul, shift) for the whole life of the
    domain, the same on every vCPU, and reads its own time with the very
    same integer formula: so guest and hypervisor agree to the nanosecond,
    and time can go backwards neither on one vCPU nor across vCPUs (the
    host TSC is constant and synchronised; guests read it natively).
    Re-pairing the TSC with the host's clock at each update, as before,
    made the readings of two vCPUs disagree by up to microseconds."""

    def __init__(self, tsc_khz: int):
        self.tsc_hz = tsc_khz * 1000
        self.mul, self.shift = time_scale(self.tsc_hz)
        self.tsc0 = A.rdtsc()

    def scale(self, delta: int) -> int:
        """TSC ticks -> ns, exactly as the guest's pvclock code does it."""
        delta = delta << self.shift if self.shift >= 0 else delta >> -self.shift
        return (delta * self.mul) >> 32

    def now(self) -> int:
        return self.scale(A.rdtsc() - self.tsc0)

    def update_vcpu_time(self, vi) -> None:
        """Write the (fixed) vcpu_time_info with Xen's odd/even version protocol."""
        t = vi.time
        t.version = (t.version + 1) | 1
        t.tsc_timestamp = self.tsc0
        t.system_time = 0
        t.tsc_to_system_mul = self.mul
        t.tsc_shift = self.shift
        t.flags = PVCLOCK_TSC_STABLE
        t.version = t.version + 1

    def update_wallclock(self, shared) -> None:
        boot_wall = time.time_ns() - self.now()
        shared.wc_version = (shared.wc_version + 1) | 1
        sec, nsec = divmod(boot_wall, SECOND)
        shared.wc_sec = sec & 0xFFFFFFFF
        shared.wc_sec_hi = sec >> 32
        shared.wc_nsec = nsec
        shared.wc_version = shared.wc_version + 1


def precise_sleeps() -> None:
    """Ask Linux not to add its default 50 us of timer slack to this
    thread's sleeps (prctl PR_SET_TIMERSLACK, 1 ns): timer deadlines are
    met as closely as the host allows."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class TimerService:
    """One thread per domain that fires timers at their deadlines (domain
    system time, ns): each vCPU's (set: fire(vcpu id) on expiry) and any
    other keyed one-shot (arm: its own callback, called with its key)."""

    def __init__(self, clock: Clock, fire):
        self.clock = clock
        self.fire = fire
        self.cond = threading.Condition()
        self.heap: list[tuple[int, int, object]] = []   # (deadline, seq, key)
        self.current: dict = {}                         # key -> (seq, callback) of its live timer
        self.seq = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="pyxen-timers", daemon=True)
        self.thread.start()

    def set(self, vcpu_id: int, deadline: int | None) -> None:
        """A vCPU's next timer deadline (None: none)."""
        self.arm(vcpu_id, deadline, self.fire)

    def arm(self, key, deadline: int | None, callback) -> None:
        """callback(key) at deadline, replacing key's earlier one (None: cancel it)."""
        with self.cond:
            self.seq += 1
            top = self.heap[0] if self.heap else None
            if self.current.pop(key, None) is not None:
                # one entry per key: a stale one would wake the thread for nothing
                self.heap = [e for e in self.heap if e[2] != key]
                heapq.heapify(self.heap)
            if deadline is not None:
                self.current[key] = (self.seq, callback)
                heapq.heappush(self.heap, (deadline, self.seq, key))
            if (self.heap[0] if self.heap else None) != top:
                self.cond.notify()                   # the thread's next wake-up changed

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def _run(self) -> None:
        precise_sleeps()
        with self.cond:
            while not self.stopped:
                now = self.clock.now()
                while self.heap and self.heap[0][0] <= now:
                    _, seq, key = heapq.heappop(self.heap)
                    live = self.current.get(key)
                    if live is not None and live[0] == seq:
                        del self.current[key]
                        self.cond.release()
                        try:
                            live[1](key)
                        finally:
                            self.cond.acquire()
                if self.heap:
                    # a guest may ask for any 64-bit deadline (set_timer_op,
                    # VCPUOP_set_*_timer); waits longer than an hour are
                    # cut short, they would overflow the host's time_t
                    self.cond.wait(min((self.heap[0][0] - now) / SECOND, MAX_WAIT))
                else:
                    self.cond.wait()


CATCHUP_NS = 100_000_000           # periodic ticks further behind than this are dropped


class VcpuTimer:
    """One vCPU's timers (Xen's v->singleshot_timer and v->periodic_timer,
    common/sched/core.c) and its pvclock: owned by the vCPU as `v.timer`.

    Deadlines are in domain system time (ns). The domain's TimerService
    fires them, except while the vCPU is blocked: then its own thread
    waits for them (Domain.block, to_block())."""

    def __init__(self, vcpu):
        self.vcpu = vcpu
        self.singleshot_ns = 0          # deadline in domain system time, 0 = none
        self.periodic_ns = 0
        self.periodic_next = 0          # the next tick, in phase
        self.periodic_fire = 0          # when it is armed (earlier while catching up)
        self.periodic_owed = 0          # ticks due but not yet delivered
        self.in_block = False           # Domain.block waits for the timer itself
        self.singleshots_fired = 0      # how many single-shot deadlines expired (PVVcpu.publish_timer_floor)
        self.lock = threading.Lock()    # the timer thread and hypercalls both re-arm

    def update_time(self) -> None:
        """Refresh the vCPU's pvclock, and its copy in the guest's own time
        area (the vDSO reads that one) when it registered one."""
        v = self.vcpu
        vi = v.vcpu_info
        if vi is None:
            return
        v.domain.clock.update_vcpu_time(vi)
        if v.time_area and v.pv.kernel_l4:
            raw = bytes(vi.time)
            try:
                v.kmem.write(v.time_area, raw[:4] + b"\0" * 4)
                v.kmem.write(v.time_area, raw)
            except GuestFault:
                v.time_area = 0

    def _deadline(self) -> int:
        d = [x for x in (self.singleshot_ns, self.periodic_ns and self.periodic_fire) if x]
        return min(d) if d else 0

    def rearm(self) -> None:
        """Point the timer service at the vCPU's next deadline (the earlier
        of the single-shot and periodic timers). Call with self.lock held."""
        v = self.vcpu
        if self.in_block:
            v.wake.set()                    # the blocked thread re-reads its deadline
            return
        v.domain.timers.set(v.id, self._deadline() or None)

    def to_block(self, blocking: bool) -> None:
        """While the vCPU is blocked its own thread waits for its timer
        (Domain.block); the timer thread takes it over again afterwards."""
        with self.lock:
            self.in_block = blocking
            if blocking:
                self.vcpu.domain.timers.set(self.vcpu.id, None)
            else:
                self.rearm()

    def next_deadline(self) -> int:
        """The earliest armed timer deadline (system time ns), 0 if none."""
        with self.lock:
            return self._deadline()

    def set_singleshot(self, deadline: int) -> None:
        """set_timer_op / VCPUOP_set_singleshot_timer (0 cancels)."""
        with self.lock:
            self.singleshot_ns = deadline
            self.rearm()

    def set_periodic(self, period: int) -> None:
        """VCPUOP_set_periodic_timer (0 stops): first tick one period from now."""
        with self.lock:
            self.periodic_ns = period
            self.periodic_next = self.vcpu.domain.clock.now() + period if period else 0
            self.periodic_fire = self.periodic_next
            self.periodic_owed = 0
            self.rearm()

    def expired(self, tick_pending=lambda: False) -> bool:
        """The timer service reached the vCPU's deadline: retire the timers
        that are due, re-arm, and say whether VIRQ_TIMER must be raised.

        The periodic timer keeps its phase (ticks at start + k*period). A
        tick that finds the previous one still pending (tick_pending()), or
        that pyxen raised late, would merge with it and be lost; it is owed
        instead and delivered once the guest has taken the previous one,
        at up to four times the rate (like KVM re-injects missed periodic
        interrupts), so a guest that counts ticks stays right. At most
        CATCHUP_NS worth of ticks is owed; a guest that never takes its
        ticks costs no more wake-ups than the period itself."""
        with self.lock:
            now = self.vcpu.domain.clock.now()
            due = False
            if self.singleshot_ns and self.singleshot_ns <= now:
                self.singleshot_ns = 0
                self.singleshots_fired += 1
                due = True
            period = self.periodic_ns
            if period and self.periodic_fire <= now:
                if self.periodic_next <= now:
                    missed = (now - self.periodic_next) // period + 1
                    self.periodic_next += missed * period
                    self.periodic_owed = min(self.periodic_owed + missed, CATCHUP_NS // period)
                if self.periodic_owed and not (due or tick_pending()):
                    self.periodic_owed -= 1
                    due = True
                    if self.periodic_owed:
                        self.periodic_fire = min(self.periodic_next, now + period // 4)
                    else:
                        self.periodic_fire = self.periodic_next
                else:
                    self.periodic_fire = self.periodic_next
            self.rearm()
            return due
