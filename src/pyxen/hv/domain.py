"""A PV domain: its KVM VM, memory, vCPUs, and the hypervisor services the
hypercalls use (shutdown, console, tracing). One Domain per domain process."""
from __future__ import annotations

import ctypes
import logging
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass

from ..kvm import Kvm, GuestMemory
from . import layout as L
from .abi import (HYPERCALLS, SharedInfo, VcpuInfo, ENOSYS, EINVAL, ENXIO, ESRCH, SHUTDOWN_NAMES,
                  SHUTDOWN_crash, SHUTDOWN_suspend, RUNSTATE_blocked, RUNSTATE_running)
from .hypercalls import build_table, ARG_MASKS
from .mm import MemoryManager, PageTableError, PGT_WRITABLE
from .vcpu import PVVcpu, GuestCrash
from .exits import Exit
from .xenheap import XenHeap
from .events import EventChannels, DEFAULT_MAX_PORT
from .time import Clock, TimerService
from .hypercalls.version import XEN_MAJOR, XEN_MINOR
from .sched import DomainScheduler, thread_cpu_seconds
from .grant import GrantTable
from .dom0link import Dom0Link

MASK64 = (1 << 64) - 1


_LIBC = ctypes.CDLL(None, use_errno=True)


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Give a range of a memfd back to the host (FALLOC_FL_PUNCH_HOLE)."""
    _LIBC.fallocate(fd, 3, ctypes.c_long(offset), ctypes.c_long(length))


@dataclass
class SuspendRecord:
    """A guest's SCHEDOP_shutdown(SHUTDOWN_suspend) the toolstack waited for."""
    vcpu: int                   # the vCPU whose hypercall returns on resume
    start_info_mfn: int         # the hypercall's third argument, checked to be the guest's


@dataclass
class RestoredLayout:
    """What a restored domain's services need of its memory (a built one
    has build_pv's BootLayout)."""
    start_info_pfn: int
    store_pfn: int
    console_pfn: int


@dataclass
class DomainResult:
    reason: str                 # poweroff, reboot, suspend, crash, watchdog, soft_reset, destroyed
    code: int | None = None
    message: str = ""


class Domain:
    def __init__(self, *, name: str, memory_mb: int, vcpus: int = 1, domid: int = 1,
                 kvm: Kvm | None = None, console=None, trace=None, maxmem_mb: int | None = None,
                 supports_writable_pagetables: bool = False, uuid: uuidlib.UUID | None = None,
                 max_event_channels: int = DEFAULT_MAX_PORT, dom0: Dom0Link | None = None,
                 max_maptrack_frames: int | None = None):
        if vcpus < 1 or vcpus > L.MAX_VCPUS:
            raise ValueError(f"vcpus={vcpus}: pyxen supports 1..{L.MAX_VCPUS}")
        self.name = name
        self.domid = domid
        self.uuid = uuid or uuidlib.uuid4()
        self.log = logging.getLogger(f"pyxen.dom{domid}")
        self.kvm = kvm or Kvm()
        self.nr_pages = memory_mb * 256
        self.nr_present = self.nr_pages      # frames the guest holds now (balloon)
        self.max_pages = (maxmem_mb or memory_mb) * 256
        self.vm = self.kvm.create_vm()
        self.ram = GuestMemory(self.nr_pages * L.PAGE_SIZE, name=f"pyxen-dom{domid}")
        self.heap = XenHeap(self.nr_pages, vcpus, (XEN_MAJOR << 16) | XEN_MINOR)
        self.heap.build_directmaps(self.nr_pages * L.PAGE_SIZE)
        self.vm.add_memory(L.RAM_SLOT, 0, self.ram)
        self.vm.add_memory(L.XEN_SLOT, L.XEN_GPA, self.heap.mem)
        self.mm = MemoryManager(self.ram.view, self.nr_pages, self.heap, self.log)
        self.shared_info = SharedInfo.from_buffer(self.heap.mm, self.heap.shared_info_off)
        for i in range(len(self.shared_info.vcpu_info)):
            self.shared_info.vcpu_info[i].evtchn_upcall_mask = 1
        self.shared_info.arch.max_pfn = self.nr_pages
        self.cpuid_entries = self.kvm.supported_cpuid()
        self.supports_writable_pagetables = supports_writable_pagetables
        # instruction emulation hooks (writable page tables on #PF, privileged
        # operations on #GP, forced-emulation CPUID on #UD); each returns True
        # when it handled the trap and set the vCPU's return state
        self.emulate = None          # (vcpu, vec, err, rip, cs, rflags, rsp, ss) -> bool
        self.emulate_pf = None       # (vcpu, err, cr2, rip, cs, rflags, rsp, ss) -> bool
        self.vm_assist = 0
        self.hypercalls = build_table()
        # the highest port the guest may allocate (xl.cfg max_event_channels)
        self.events = EventChannels(self, max_port=max_event_channels)
        self.events.shared = self.heap.mem.addr + self.heap.shared_info_off
        self.dom0 = dom0 or Dom0Link()    # dom0's services for this domain (dom0link.py)
        self.vcpus = [PVVcpu(self, i) for i in range(vcpus)]
        self.clock = Clock(self.vcpus[0].kvcpu.tsc_khz())
        self.clock.update_wallclock(self.shared_info)
        for v in self.vcpus:
            v.timer.update_time()
        self.timers = TimerService(self.clock, self._timer_fired)
        self.lock = threading.RLock()      # the domain's hypervisor lock (like Xen's domain lock)
        self.sched = DomainScheduler(self)
        self.grants = GrantTable(self)
        if max_maptrack_frames is not None:          # xl.cfg max_maptrack_frames
            self.grants.maptrack.max_frames = max_maptrack_frames
        self.paused = False
        self.run_gate = threading.Event()      # set while the domain may run
        self.run_gate.set()
        self.console = console or (lambda data: None)
        self._trace = trace           # a writable text file, or None
        self.stopped = False
        self.result: DomainResult | None = None
        self.shutdown_code: int | None = None
        self._enosys_seen: set[tuple[int, int]] = set()
        self.layout = None
        # suspend (save, checkpoint): while on_suspend is set, a guest's
        # SHUTDOWN_suspend pauses the domain (SuspendRecord) and calls it,
        # instead of ending the domain
        self.on_suspend = None
        self.suspend_cancel = False     # the kernel's SUSPEND_CANCEL ELF note
        self.suspended: SuspendRecord | None = None
        self.suspending = False         # blocked vCPUs leave their hypercalls
        self.start_time = time.monotonic()
        self.hypercall_counts: dict[int, int] = {}

    # --- building ------------------------------------------------------------
    def build(self, image, *, ramdisk: bytes | None = None, cmdline: str = "") -> None:
        """Start-of-day state for `image` (Xen's domain builder), with the
        instruction emulator hooked in: a PV guest needs it (the hypercall
        page MSR, privileged instructions, writable page tables)."""
        from ..build.x86_64 import build_pv
        from . import emulate
        emulate.install(self, image)
        self.suspend_cancel = bool(getattr(image, "suspend_cancel", False))
        # the two channels every domU is born with, both to dom0 services
        self.store_port = self.events.bind_to_remote(0, self.dom0.notify_store)
        self.console_port = self.events.bind_to_remote(0, self.dom0.notify_console)
        for p in (self.store_port, self.console_port):
            self.events.ports[p].consumer = True
        lay = build_pv(self.ram.mm, self.nr_pages, image, ramdisk=ramdisk, cmdline=cmdline,
                       shared_info_maddr=self.heap.shared_info_gpa,
                       hypercall_port=L.PORT_HYPERCALL, store_evtchn=self.store_port,
                       console_evtchn=self.console_port, set_m2p=self.heap.set_m2p)
        self.layout = lay
        self.mm.pin(lay.l4_pfn, 4)
        # xenstored and xenconsoled keep the two ring frames mapped writable
        # for the domain's life; on Xen their foreign mappings hold writable
        # type references, so the guest can never make them page tables
        for pfn in (lay.store_pfn, lay.console_pfn):
            self.mm.get_type(pfn, PGT_WRITABLE)
        self.console_off = lay.console_pfn * L.PAGE_SIZE
        self.vcpus[0].start(lay.entry, lay.stack_top, lay.start_info_va, lay.l4_pfn)
        self.mm.get_type(lay.l4_pfn, 4)     # the reference held by vCPU 0's baseptr
        self.mm.track_writes(len(self.vcpus))   # from now on page-table writes are replayed

    def restore(self, state: dict, load_memory) -> None:
        """The state of a saved domain instead of a start-of-day build
        (hv/savestate.py): load_memory(self) fills RAM and the present
        frames, then the page tables the guest had pinned are validated
        again, start_info gets the new channels, the vCPUs their state.
        RestoreError when the saved state does not fit or validate."""
        from . import emulate, savestate
        savestate.check_header(state, self)
        emulate.install(self)
        self.vm_assist = savestate.checked_int(state.get("vm_assist", 0), 0, 0xFFFFFFFF)
        self.suspend_cancel = bool(state.get("suspend_cancel"))
        self.store_port = self.events.bind_to_remote(0, self.dom0.notify_store)
        self.console_port = self.events.bind_to_remote(0, self.dom0.notify_console)
        for p in (self.store_port, self.console_port):
            self.events.ports[p].consumer = True
        load_memory(self)
        mm = self.mm
        self.heap.set_m2p_identity(mm.present)
        self.nr_present = self.nr_pages - mm.present.count(0)
        si = self.shared_info
        arch = savestate.unb64(state["shared_arch"], ctypes.sizeof(si.arch))
        ctypes.memmove(ctypes.addressof(si.arch), arch, len(arch))
        for i in range(len(si.evtchn_mask)):        # every port masked, as Xen's restore
            si.evtchn_mask[i] = (1 << 64) - 1
        savestate.restore_time(self, state)
        si_pfn, store, console = savestate.localise_start_info(self, state)
        for pfn in (store, console):
            try:
                mm.get_type(pfn, PGT_WRITABLE)
            except PageTableError as e:
                raise savestate.RestoreError(f"ring frame {pfn:#x}: {e}") from None
        savestate.restore_pins(self, state)
        for v, st in zip(self.vcpus, state["vcpus"]):
            savestate.restore_vcpu(self, v, st)
        if not self.vcpus[0].initialised:
            raise savestate.RestoreError("vCPU 0 has no saved state")
        self.layout = RestoredLayout(si_pfn, store, console)
        self.console_off = console * L.PAGE_SIZE
        self.mm.track_writes(len(self.vcpus))
        for v in self.vcpus[1:]:
            if v.pv.online:
                self.vcpu_up(v)

    # --- suspend -----------------------------------------------------------------
    def suspend(self, vcpu, start_info_mfn: int) -> None:
        """SCHEDOP_shutdown(SHUTDOWN_suspend): with nobody waiting for it
        (on_suspend unset) a shutdown like any other; otherwise the domain is
        paused with every vCPU out of its hypercalls (a blocked one returns
        0, as Xen's SCHEDOP_block does when woken) and on_suspend called."""
        hook = self.on_suspend
        if hook is None or (self.shutdown_code is not None and
                            self.shutdown_code != SHUTDOWN_suspend):
            self.shutdown(SHUTDOWN_suspend, vcpu)
            return
        self.trace(vcpu.id, "shutdown", "suspend")
        if self.suspended is not None:
            return                  # another vCPU's suspend got there first
        self.suspended = SuspendRecord(vcpu.id, start_info_mfn)
        self.suspending = True
        self.pause()
        hook()

    def wait_parked(self, timeout: float) -> bool:
        """Wait until every vCPU thread of a paused domain waits at the run
        gate (its registers are then the guest's to read)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stopped:
                return False
            if all(v.parked or v.thread_ident is None for v in self.vcpus):
                return True
            for v in self.vcpus:
                v.wake.set()
            time.sleep(0.005)
        return False

    def resume_suspended(self, cancelled: bool) -> None:
        """After a save with -c (xc_domain_resume): the suspend hypercall
        returns 1 (cancelled: the guest resumes in the same domain, which
        only a SUSPEND_CANCEL kernel understands) or 0. The caller unpauses."""
        rec = self.suspended
        self.suspended = None
        self.suspending = False
        if rec is not None and cancelled:
            self.vcpus[rec.vcpu].set_guest_rax(1)

    # --- running -------------------------------------------------------------
    def run(self) -> DomainResult:
        """Run vCPU 0 on this thread (others run on their own threads once the
        guest brings them up) until the domain stops."""
        try:
            self.vcpus[0].run()
        finally:
            self.stopped = True
            for v in self.vcpus[1:]:
                v.wake.set()
                v.kvcpu.kick()
            for v in self.vcpus[1:]:
                if v.thread is not None:
                    v.thread.join(5)
            self.timers.stop()
            self.sched.stop()
            self.dom0.domain_stopped()
        if self.result is None:
            self.result = DomainResult("destroyed")
        return self.result

    def pause(self) -> None:
        """Stop all vCPUs (xl pause); they keep their state."""
        self.paused = True
        self.run_gate.clear()
        me = threading.get_ident()
        for v in self.vcpus:
            v.wake.set()
            if v.thread_ident != me:
                v.kvcpu.kick()

    def unpause(self) -> None:
        if self.suspended is not None:
            # being saved: its memory and vCPUs must not change until the
            # toolstack resumes it (resume_suspended) or destroys it
            self.log.info("domain %s is suspended: it stays paused", self.name)
            return
        self.paused = False
        self.run_gate.set()

    def info(self) -> dict:
        """What `xl list` / `vcpu-list` show: state letters, CPU time, vCPUs."""
        vcpus = []
        for v in self.vcpus:
            state = {0: "running", 1: "runnable", 2: "blocked", 3: "offline"}[v.runstate]
            vcpus.append({"id": v.id, "online": v.pv.online, "state": state,
                          "cpu_time": thread_cpu_seconds(v.native_tid) if v.native_tid else 0.0,
                          "affinity": self.sched.hard_affinity(v)})
        running = any(x["state"] == "running" and x["online"] for x in vcpus)
        return {"name": self.name, "domid": self.domid, "uuid": str(self.uuid),
                "memory_kb": self.nr_pages * 4, "max_memory_kb": self.max_pages * 4,
                "vcpus": vcpus, "online_vcpus": sum(1 for x in vcpus if x["online"]),
                "running": running and not self.paused, "blocked": not running and not self.paused,
                "paused": self.paused, "cpu_time": sum(x["cpu_time"] for x in vcpus),
                "suspended": self.suspended is not None,
                "uptime": time.monotonic() - self.start_time,
                "weight": self.sched.weight, "cap": self.sched.cap}

    def destroy(self) -> None:
        if not self.stopped:
            self.result = self.result or DomainResult("destroyed")
            self._stop_all()

    def close(self) -> None:
        self.timers.stop()
        self._close_memory()

    def _close_memory(self) -> None:
        """Free the VM and the guest memory. Views into the memory (shared_info,
        vcpu_info) are dropped first, so the mappings can really go."""
        for v in self.vcpus:
            v.vcpu_info = None
        self.shared_info = None
        self.mm.ram = None
        self.vm.close()
        self.heap.mem.close()
        self.ram.close()

    def shutdown(self, reason: int, vcpu=None) -> None:
        if self.shutdown_code is not None:      # latched by SCHEDOP_shutdown_code (Xen's rule)
            reason = self.shutdown_code
        name = SHUTDOWN_NAMES.get(reason, str(reason))
        self.trace(vcpu.id if vcpu else -1, "shutdown", name)
        message = ""
        if reason == SHUTDOWN_crash:        # a guest panic: show what it said last
            self.dom0.notify_console()
            message = self.dom0.console_tail()
        self.result = DomainResult(name, reason, message)
        self._stop_all()

    def crash(self, vcpu, message: str) -> None:
        report = vcpu.crash_report() if vcpu is not None else ""
        self.log.error("domain %s crashed: %s\n%s", self.name, message, report)
        self.trace(vcpu.id if vcpu else -1, "crash", message)
        self.result = DomainResult("crash", None, f"{message}\n{report}".rstrip())
        self._stop_all()

    def _stop_all(self) -> None:
        self.stopped = True
        self.run_gate.set()
        me = threading.get_ident()
        for v in self.vcpus:
            v.wake.set()
            if v.thread_ident != me:
                v.kvcpu.kick()

    # --- hypercalls ------------------------------------------------------------
    def hypercall(self, vcpu, nr, a1, a2, a3, a4, a5, nested: bool = False) -> int | Exit:
        """Dispatch one hypercall (or one multicall entry, nested) by the
        table: under the domain lock or not as its entry declares
        (hypercalls.Hypercall). The result as a 64-bit value, or
        Exit.RETURNED after an iret (the registers are the frame's)."""
        entry = self.hypercalls.get(nr)
        # counted by number; numbers that are no hypercall together (-1): a
        # guest trying every 64-bit number must not grow this dict
        key = nr if nr < 64 else -1
        self.hypercall_counts[key] = self.hypercall_counts.get(key, 0) + 1
        m = ARG_MASKS.get(nr)
        if m is not None:       # int / unsigned int / domid_t arguments, as Xen reads them
            a1, a2, a3, a4, a5 = a1 & m[0], a2 & m[1], a3 & m[2], a4 & m[3], a5 & m[4]
        if entry is None:
            ret = -ENOSYS
        else:
            try:
                if entry.locked:
                    with self.lock:
                        ret = entry.handler(vcpu, a1, a2, a3, a4, a5)
                else:
                    ret = entry.handler(vcpu, a1, a2, a3, a4, a5)
            except GuestCrash:
                raise
            except Exception as e:          # a bug in pyxen must not take the host down
                self.log.exception("hypercall %s failed inside pyxen", HYPERCALLS.get(nr, nr))
                raise GuestCrash(f"internal error in hypercall {HYPERCALLS.get(nr, nr)}: {e}")
        if ret == -ENOSYS:
            key = (nr, a1 if nr in (17, 24, 29, 30, 32, 33, 12, 26) else -1)
            # logged once per (hypercall, sub-op), for the first few only: a
            # guest trying every number must not grow this set or the log
            if key not in self._enosys_seen and len(self._enosys_seen) < 64:
                self._enosys_seen.add(key)
                self.log.warning("unimplemented hypercall %s (sub-op %s): -ENOSYS%s",
                                 HYPERCALLS.get(nr, nr), key[1] if key[1] >= 0 else "-",
                                 "; no more are logged" if len(self._enosys_seen) == 64 else "")
        if self._trace is not None:
            self.trace(vcpu.id, "hypercall",
                       f"{HYPERCALLS.get(nr, nr)}({a1:#x}, {a2:#x}, {a3:#x}) = {ret}")
        vcpu.last_hypercalls.append(nr)
        if isinstance(ret, Exit):
            return ret
        return ret & MASK64

    @property
    def traced(self) -> bool:
        """Whether --trace records this domain: then pyxen's syscall stubs
        answer nothing in the guest (PVVcpu.sync_fast_flags), so every
        hypercall reaches pyxen and the trace, as Xen's tracing sees them."""
        return self._trace is not None

    def trace(self, vcpu_id: int, kind: str, msg: str) -> None:
        if self._trace is not None:
            t = time.monotonic() - self.start_time
            self._trace.write(f"{t:12.6f} d{self.domid}v{vcpu_id} {kind} {msg}\n")

    def log_guest_error(self, vcpu, msg: str) -> None:
        self.log.info("d%dv%d: %s", self.domid, vcpu.id, msg)
        self.trace(vcpu.id, "error", msg)

    def flush_tlbs(self, vcpu, all_vcpus: bool = False) -> None:
        """A guest TLB flush (MMUEXT_TLB_FLUSH_*, INVLPG_*, update_va_mapping's
        flush flags). KVM's shadow paging may keep page-table pages unsynced
        until the guest flushes, so each vCPU concerned reloads CR3 (through a
        CPL0 stub) before it runs guest code again; other vCPUs are kicked,
        and replay the entries this vCPU wrote but has not replayed yet
        before they flush (it may not have resumed, so not replayed, when
        they do)."""
        vcpu.flush_pending = True
        if all_vcpus:
            self.mm.publish_writes(vcpu.id)
            for v in self.vcpus:
                if v is not vcpu and v.pv.online:
                    v.flush_pending = True
                    v.kvcpu.kick()

    def send_trigger(self, trigger: str, vcpu_id: int) -> int:
        """XEN_DOMCTL_sendtrigger (the toolstack's `trigger`): 0 or -errno,
        as Xen answers for a PV domain: an NMI raised on the vCPU (Xen's
        nmi_pending and vcpu_kick); the power and sleep buttons are an HVM
        domain's (-EINVAL); reset and init are no domctl trigger on x86
        (-ENOSYS)."""
        if not 0 <= vcpu_id < len(self.vcpus):
            return -ESRCH
        if trigger == "nmi":
            self.vcpus[vcpu_id].raise_nmi()
            return 0
        if trigger in ("power", "sleep"):
            return -EINVAL
        return -ENOSYS

    def block(self, vcpu, poll) -> int:
        """SCHEDOP_block (poll None): enable event delivery and sleep until an
        event is pending. SCHEDOP_poll: sleep until one of the ports is pending
        or the (system-time) timeout passes. A blocked vCPU uses no host CPU."""
        if self.mm.has_writes(vcpu.id):
            # entries written earlier in this multicall: whichever vCPU runs
            # next replays them, not only this one once it wakes
            with self.lock:
                self.mm.publish_writes(vcpu.id)
        vi = vcpu.vcpu_info
        if poll is None:
            vi.evtchn_upcall_mask = 0
            ports, deadline = (), 0
        else:
            ports, deadline = poll
        vcpu.set_runstate(RUNSTATE_blocked)
        vcpu.poll_ports = set(ports)
        vcpu.timer.to_block(True)
        try:
            while not self.stopped and not self.suspending:
                vcpu.wake.clear()
                if vcpu.nmi_pending:
                    return 0            # Xen's vcpu_kick unblocks for an NMI
                if poll is None:
                    if vi.evtchn_upcall_pending:
                        return 0
                elif any(self.events.is_pending(p) for p in ports):
                    return 0
                timeout = None
                now = self.clock.now()
                if deadline:
                    left = deadline - now
                    if left <= 0:
                        return 0
                    timeout = left / 1e9
                # The vCPU's own timer: fire it from this thread when it is
                # due (one wake-up instead of a hop through the timer thread).
                own = vcpu.timer.next_deadline()
                if own:
                    if own <= now:
                        self._timer_fired(vcpu.id)
                        continue
                    left = (own - now) / 1e9
                    timeout = left if timeout is None else min(timeout, left)
                # deadlines are any 64-bit value the guest chose: a wait past
                # the host's time_t overflows (the loop waits again)
                vcpu.wake.wait(None if timeout is None else min(timeout, 3600.0))
            return 0
        finally:
            vcpu.timer.to_block(False)
            vcpu.poll_ports = set()
            vcpu.set_runstate(RUNSTATE_running)

    def vcpu_up(self, v) -> None:
        """VCPUOP_up: start (or restart) a vCPU's thread."""
        v.pv.online = True
        v.set_runstate(RUNSTATE_running)
        v.timer.update_time()
        if v.thread is None and v.thread_ident is None:
            # first start (vCPU 0 runs on the caller of Domain.run, its
            # loop already exists: it only needs waking)
            v.thread = threading.Thread(target=self._vcpu_thread, args=(v,),
                                        name=f"d{self.domid}v{v.id}", daemon=True)
            v.thread.start()
        else:
            v.wake.set()

    def _vcpu_thread(self, v) -> None:
        try:
            v.run()
        except Exception as e:        # never let a vCPU thread die silently
            self.log.exception("vcpu %d failed", v.id)
            self.crash(v, f"internal error on vcpu {v.id}: {e}")

    def wake_pollers(self, port: int) -> None:
        for v in self.vcpus:
            if port in v.poll_ports:
                v.wake.set()

    def _timer_fired(self, vcpu_id: int) -> None:
        v = self.vcpus[vcpu_id]
        if v.timer.expired(lambda: self.events.virq_pending(0, vcpu_id)):
            self.events.send_virq(0, vcpu_id)

    def release_frame(self, mfn: int) -> bool:
        """XENMEM_decrease_reservation of one frame: the guest gives it back;
        its host memory is freed (hole punched in the memfd)."""
        mm = self.mm
        if not mm.owns(mfn) or mm.tcount[mfn] or mm.pinned[mfn] or \
                (mm.frefs is not None and mm.frefs.writers(mfn)):
            return False
        mm.present[mfn] = 0
        self.nr_present -= 1
        self.heap.set_m2p(mfn, (1 << 64) - 1)
        punch_hole(self.ram.fd, mfn << 12, 4096)
        return True

    def claim_frame(self, want: int | None) -> int | None:
        """A frame back from the host (populate_physmap / increase_reservation);
        pfn == mfn where possible."""
        mm = self.mm
        if self.nr_present >= self.max_pages:
            return None
        if want is None or not (0 <= want < mm.nr_pages) or mm.present[want]:
            want = mm.present.find(0)
            if want < 0:
                return None
        mm.present[want] = 1
        self.nr_present += 1
        self.ram.mm[want << 12:(want + 1) << 12] = bytes(4096)
        mm.mark_dirty(want)
        self.heap.set_m2p(want, want)
        return want

    def register_vcpu_info(self, vcpu, mfn: int, offset: int, caller=None) -> int:
        """VCPUOP_register_vcpu_info (Xen's map_vcpu_info): pyxen writes the
        vCPU's event flags, time and cr2 there from now on, so it takes a
        writable type reference on the frame and keeps it (a page table or
        descriptor page is refused with -EINVAL, and the frame cannot become
        one)."""
        if offset > L.PAGE_SIZE - 64 or offset & 7:
            return -ENXIO
        if vcpu.vcpu_info_moved:
            return -EINVAL                 # Xen allows it once per vCPU
        if caller is not None and vcpu is not caller and vcpu.pv.online:
            return -EINVAL                 # only for itself or a vCPU that is down
        try:
            self.mm.get_type(mfn, PGT_WRITABLE)
        except PageTableError as e:
            self.log.info("d%d: vcpu_info frame %#x refused: %s", self.domid, mfn, e)
            return -EINVAL
        old = vcpu.vcpu_info
        new = VcpuInfo.from_buffer(self.ram.mm, (mfn << 12) + offset)
        ctypes.memmove(ctypes.addressof(new), ctypes.addressof(old), 64)
        vcpu.vcpu_info = new
        vcpu.vcpu_info_addr = self.ram.addr + (mfn << 12) + offset
        vcpu.vcpu_info_moved = True
        with self.lock:
            self.mm.note_write(self.heap.set_vcpu_info(vcpu.id, (mfn << 12) + offset))
        vcpu.flush_pending = True           # no stale mapping of the old place
        # events that were pending stay visible to the guest at the new place
        new.evtchn_upcall_pending = 1
        vcpu.timer.update_time()
        return 0

    # --- dom0 ------------------------------------------------------------------
    def console_write(self, data: bytes, source: str = "console_io") -> None:
        """HYPERVISOR_console_io output: the hypervisor's console (pyxen dmesg)."""
        self.console(data)

    def connect_remote_port(self, remote_dom: int, remote_port: int, local_port: int):
        return self.dom0.connect_remote(remote_dom, remote_port, local_port)
