"""Credit-scheduler parameters for one domain, enforced on the host.

weight (1..65535, default 256) shares host CPU among busy domains: it sets
the host nice value of the domain's vCPU threads (CFS weights grow ~1.25x
per nice step, so weight w maps to nice -log1.25(w/256)).
cap (0 = none, else percent of one host CPU, as xl sched-credit -c) limits
the domain: a watchdog measures the vCPU threads' CPU time every period and
makes vCPUs that ran over the budget sit out the rest of the period.
Hard affinity (xl.cfg cpus=, xl vcpu-pin) is the host CPU set of a vCPU's
thread: kept per vCPU and applied when its thread starts, so a vCPU the
guest has not brought up yet can be pinned too.
When pyxend has the domain process in a cgroup (toolstack/cgroups.py), the
kernel enforces weight and cap (cpu.weight/cpu.max or cpu.shares/CFS quota):
`external` is set, and this only records them, with no nice values and no
watchdog. The domain's cpupool's CPUs (`pool_cpus`) bound every vCPU's hard
affinity (a cpuset does that too when there are cgroups).
"""
from __future__ import annotations

import math
import os
import threading
import time

PERIOD = 0.02       # seconds


def thread_cpu_seconds(tid: int) -> float:
    """CPU time (user + system, which includes time in the guest) of one host thread."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def weight_to_nice(weight: int) -> int:
    return max(-20, min(19, -round(math.log(weight / 256) / math.log(1.25))))


class DomainScheduler:
    def __init__(self, domain):
        self.dom = domain
        self.weight = 256
        self.cap = 0
        self.throttle_until = 0.0
        self._thread = None
        self._stop = threading.Event()
        self._orig_nice: dict[int, int] = {}
        self.affinity: dict[int, frozenset[int]] = {}     # vCPU id -> host CPUs (hard)
        self.external = False       # the kernel enforces weight and cap (a cgroup)
        self.pool_cpus: frozenset[int] | None = None        # the cpupool's CPUs

    def _allowed(self, vcpu_id: int):
        """The CPUs a vCPU's thread is given: its hard affinity within the pool."""
        cpus = self.affinity.get(vcpu_id)
        if self.pool_cpus:
            cpus = (cpus & self.pool_cpus if cpus else None) or self.pool_cpus
        return cpus

    def set_pool(self, cpus, moved: bool = False) -> None:
        """The domain's cpupool has these CPUs now. A domain moved to another
        pool loses its hard affinity, as Xen's sched_move_domain sets it to all."""
        self.pool_cpus = frozenset(cpus) or None
        if moved:
            self.affinity.clear()
        for v in self.dom.vcpus:
            if v.native_tid:
                try:
                    os.sched_setaffinity(v.native_tid, self._allowed(v.id) or
                                         range(os.cpu_count() or 1))
                except OSError:
                    pass

    def vcpu_started(self, vcpu) -> None:
        """A vCPU's thread runs (vcpu.native_tid is set): give it the
        domain's weight and the vCPU's hard affinity."""
        self.apply_weight(vcpu.native_tid)
        cpus = self._allowed(vcpu.id)
        if cpus:
            os.sched_setaffinity(vcpu.native_tid, cpus)

    def pin(self, vcpu, cpus) -> list[int]:
        """Set a vCPU's hard affinity (now, if its thread runs, else when it
        starts); the host CPUs it has, sorted. ValueError when no CPU of
        `cpus` is one this process may run on."""
        cpus = frozenset(cpus)
        if not cpus & (self.pool_cpus or os.sched_getaffinity(0)):
            raise ValueError("no CPU of the map is one the domain may run on")
        self.affinity[vcpu.id] = cpus
        if vcpu.native_tid:
            os.sched_setaffinity(vcpu.native_tid, self._allowed(vcpu.id))
        return self.hard_affinity(vcpu)

    def hard_affinity(self, vcpu) -> list[int]:
        """What vcpu-list shows as the vCPU's hard affinity."""
        if vcpu.native_tid:
            try:
                return sorted(os.sched_getaffinity(vcpu.native_tid))
            except OSError:
                pass
        mine = os.sched_getaffinity(0)
        return sorted(self.affinity.get(vcpu.id, mine) & mine)

    def set_params(self, weight: int | None = None, cap: int | None = None,
                   external: bool | None = None) -> None:
        if external is not None and external != self.external:
            self.external = external
            if external:            # a cgroup does it now: give back nice, no watchdog
                self._restore_nice()
        if weight is not None:
            if not 1 <= weight <= 65535:
                raise ValueError("weight must be 1..65535")
            self.weight = weight
            self.apply_weight()
        if cap is not None:
            if cap < 0:
                raise ValueError("cap must be >= 0")
            self.cap = cap
            if cap and self._thread is None and not self.external:
                self._thread = threading.Thread(target=self._enforce, daemon=True,
                                                name=f"d{self.dom.domid}-cap")
                self._thread.start()

    def apply_weight(self, tid: int | None = None) -> None:
        if self.external:
            return
        nice = weight_to_nice(self.weight)
        tids = [tid] if tid else [v.native_tid for v in self.dom.vcpus if v.native_tid]
        for t in tids:
            try:
                self._orig_nice.setdefault(t, os.getpriority(os.PRIO_PROCESS, t))
                os.setpriority(os.PRIO_PROCESS, t, nice)
            except OSError:
                pass

    def _cpu_time(self) -> float:
        return sum(thread_cpu_seconds(v.native_tid) for v in self.dom.vcpus if v.native_tid)

    def _enforce(self) -> None:
        last = self._cpu_time()
        window_start = time.monotonic()
        window = 10 * PERIOD        # CPU accounting has clock-tick resolution
        while not self._stop.wait(PERIOD) and not self.dom.stopped:
            if not self.cap or self.external:
                self.throttle_until = 0.0
                continue
            now = time.monotonic()
            used = self._cpu_time() - last
            budget = (now - window_start) * self.cap / 100
            if used > budget:
                # sit out until the average is back under the cap
                self.throttle_until = now + (used - budget) * 100 / self.cap
                for v in self.dom.vcpus:
                    v.kvcpu.kick()
            if now - window_start > window:
                last, window_start = self._cpu_time(), now

    def wait_if_throttled(self) -> None:
        delay = self.throttle_until - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, 0.5))

    def stop(self) -> None:
        """Stop enforcing; give the threads back their own nice values (vCPU 0
        runs on the caller's thread)."""
        self._stop.set()
        self._restore_nice()

    def _restore_nice(self) -> None:
        for t, n in self._orig_nice.items():
            try:
                os.setpriority(os.PRIO_PROCESS, t, n)
            except OSError:
                pass
        self._orig_nice.clear()
