"""Guest time: Xen's system time, the per-vCPU pvclock (vcpu_time_info), the
shared wallclock, and timers that raise VIRQ_TIMER (Xen's common/time.c,
arch/x86/time.c and the vCPU timers of common/sched/core.c)."""
from __future__ import annotations

import heapq
import threading
import time

from .. import _atomic as A

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
    """One thread per domain that fires vCPU timers at their deadlines
    (domain system time, ns). fire(vcpu) is called on expiry."""

    def __init__(self, clock: Clock, fire):
        self.clock = clock
        self.fire = fire
        self.cond = threading.Condition()
        self.heap: list[tuple[int, int, int]] = []   # (deadline, seq, vcpu id)
        self.current: dict[int, int] = {}            # vcpu id -> seq of its live timer
        self.seq = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="pyxen-timers", daemon=True)
        self.thread.start()

    def set(self, vcpu_id: int, deadline: int | None) -> None:
        with self.cond:
            self.seq += 1
            top = self.heap[0] if self.heap else None
            if self.current.pop(vcpu_id, None) is not None:
                # one entry per vCPU: a stale one would wake the thread for nothing
                self.heap = [e for e in self.heap if e[2] != vcpu_id]
                heapq.heapify(self.heap)
            if deadline is not None:
                self.current[vcpu_id] = self.seq
                heapq.heappush(self.heap, (deadline, self.seq, vcpu_id))
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
                    _, seq, vid = heapq.heappop(self.heap)
                    if self.current.get(vid) == seq:
                        del self.current[vid]
                        self.cond.release()
                        try:
                            self.fire(vid)
                        finally:
                            self.cond.acquire()
                if self.heap:
                    # a guest may ask for any 64-bit deadline (set_timer_op,
                    # VCPUOP_set_*_timer); waits longer than an hour are
                    # cut short, they would overflow the host's time_t
                    self.cond.wait(min((self.heap[0][0] - now) / SECOND, MAX_WAIT))
                else:
                    self.cond.wait()
