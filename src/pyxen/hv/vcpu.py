"""A PV vCPU: Xen's per-vCPU guest state on top of a KVM vCPU, its run loop,
and the ways into the hypervisor (hypercall port, exception stubs, syscall).

Guest kernel and guest user both run at CPL3. pyxen tracks which one is
current (like Xen's TF_kernel_mode) and switches page tables and GS bases
when the guest changes mode.
"""
from __future__ import annotations

import collections
import ctypes
import struct
import threading
from dataclasses import dataclass, field

from ..kvm import ioctls as KI
from ..kvm import structs as KS
from . import layout as L
from . import cpu as C
from .abi import (FLAT_KERNEL_CS, FLAT_KERNEL_SS, FIRST_RESERVED_GDT_ENTRY, TRAP_NAMES,
                  VMASST_TYPE_architectural_iopl,
                  VGCF_in_syscall, CALLBACKF_mask_events, HYPERCALLS, HC,
                  VCPUOP_set_singleshot_timer,
                  VGCF_in_kernel, HYPERVISOR_VIRT_END, USER_REGS_GPRS, VcpuGuestContext)
from .exits import Exit
from .guestmem import GuestMemoryAccess, GuestFault
from .time import precise_sleeps, VcpuTimer
from .xenheap import (APPLY_FLUSH_STUB, APPLY_IRET_STUB, BP_FAST_STUB, FAST_CLI_OK,
                       FAST_KERNEL_CPL0, FAST_MUST_EXIT, GP_FAST_READ,
                       GP_FAST_STUB, LSTAR_INT3_RET, STACK_DATA_KERNEL_SP, STACK_DATA_KERNEL_SS,
                       STACK_DATA_INT3_RIP, SYSCALL_BACK, SINGLESHOT_READS, IRET_WRITES, TSLOT_NO_ANSWER,
                       fast_stub_tail)

_FRAME = struct.Struct("<7Q")      # CPL0 stub frame: vector, error, rip, cs, rflags, rsp, ss
_IRET = struct.Struct("<9Q")       # rax, r11, rcx, flags, rip, cs, rflags, rsp, ss
_PAIR = struct.Struct("<QQ")
_SLOT = struct.Struct("<Q")
_CPU_FRAME = struct.Struct("<5Q")   # what the CPU pushes entering CPL0: rip, cs, rflags, rsp, ss
# pyxen's CPL0 stubs that go back to the guest with iretq instead of an exit
# (xenheap.FAST_RETURN): where each starts and ends, and its return's jnz
_FAST_STUBS = tuple((L.priv(off), L.priv(off) + len(code), L.priv(off) + fast_stub_tail(code))
                    for off, code in ((L.GP_FAST_OFF, GP_FAST_STUB), (L.BP_FAST_OFF, BP_FAST_STUB),
                                      (L.APPLY_IRET_OFF, APPLY_IRET_STUB),
                                      (L.APPLY_FLUSH_OFF, APPLY_FLUSH_STUB)))
# The instructions that raise a soft exception through a DPL-3 gate of
# pyxen's IDT: int3, int $3, int $4 (other `int n` meet a DPL-0 gate: #GP).
# KVM's vcpu events never report a soft exception it has yet to deliver (it
# expects to meet the instruction again, its rip not yet advanced), but
# under PVM the rip is already past it: a kick during the delivery leaves
# the vCPU just past the instruction with the exception owed unseen, and
# would deliver it at whatever rip pyxen then set (PVVcpu.may_redirect).
_SOFT_EXCEPTION_TAILS = (b"\xcd\x03", b"\xcd\x04")
_SYSCALL_STUBS = L.priv(L.SYSCALL_STUBS_OFF)
REKICK_NS = 500_000         # PVVcpu.rekick_soon: a run pyxen let go on ends by then
# PVVcpu.publish_timer_floor: after a single-shot timer fired, deadlines
# further ahead are answered by the LSTAR stub (a later exit arms them)
TIMER_FLOOR_NS = 500_000
_SINGLESHOT_READS = frozenset(L.priv(L.SYSCALL_STUBS_OFF) + a for a in SINGLESHOT_READS)
_IRET_WRITES = frozenset(L.priv(L.SYSCALL_STUBS_OFF) + a for a in IRET_WRITES)
SEGMENT_CACHE = 64                  # segments a vCPU keeps built (PVVcpu.segment)
NMI_VECTOR = 2                      # where an NMI goes in the virtual IDT (and CALLBACKTYPE_nmi)


def _flat(selector: int, code: bool, dpl: int = 3) -> bytes:
    seg = KS.Segment()
    C.flat_segment(seg, selector, code, dpl=dpl)
    return bytes(seg)


# the segments `segment` gives the flat kernel selectors (set_return's fast path)
_FLAT_KERNEL_CS = _flat(FLAT_KERNEL_CS, True)
_FLAT_KERNEL_SS = _flat(FLAT_KERNEL_SS, False)
# pyxen's own CPL0 segments, which the page-table replay stub runs with
_HYP_CS_SEG = _flat(L.HYP_CS, True, dpl=0)
_HYP_SS_SEG = _flat(L.HYP_DS, False, dpl=0)
_REPLAY_FRAME = struct.Struct("<9Q")
_PORT_KINDS = {L.PORT_HYPERCALL: "hypercall port", L.PORT_TRAP: "trap",
               L.PORT_SYSCALL: "syscall", L.PORT_SYSCALL32: "syscall32",
               L.PORT_STUB_EXIT: "fast stub asked to exit",
               **{p: "direct port I/O" for p in L.PORTS_DIRECT}}


class GuestCrash(Exception):
    """The guest broke the rules; the domain is crashed with this message."""


def check_guest_context(ctx: bytes) -> int:
    """The address checks Xen's arch_set_info_guest() makes on a 64-bit PV
    context before it changes anything: rip, rsp, kernel_sp, the segment
    bases and the LDT base (when there is an LDT) canonical; every trap
    handler and the event/failsafe/syscall callbacks as set_trap_table and
    set_callbacks accept them (canonical, and in pyxen not in the
    hypervisor hole); the LDT base below the hole or above it
    (__addr_ok), page aligned, at most 8192 entries; at most 16 GDT frames;
    a vCPU started in user mode needs a user L4. 0 or -EINVAL."""
    from .abi import EINVAL
    from .hypercalls.traps import guest_code_address
    c = VcpuGuestContext.from_buffer_copy(ctx)
    bases = (c.fs_base, c.gs_base_kernel, c.gs_base_user)
    callbacks = (c.event_callback_eip, c.failsafe_callback_eip, c.syscall_callback_eip)
    if not all(L.canonical(a) for a in (c.user_regs.rip, c.user_regs.rsp, c.kernel_sp, *bases)):
        return -EINVAL
    if c.ldt_ents and not L.canonical(c.ldt_base):
        return -EINVAL
    if not all(guest_code_address(a) for a in callbacks):
        return -EINVAL
    if not all(guest_code_address(t.address) for t in c.trap_ctxt):
        return -EINVAL
    if not (c.ldt_base < 1 << 47 or c.ldt_base >= HYPERVISOR_VIRT_END):
        return -EINVAL
    if c.ldt_base & 0xFFF or c.ldt_ents > 8192:
        return -EINVAL
    if (c.gdt_ents + 511) // 512 > 16:
        return -EINVAL
    if not c.flags & VGCF_in_kernel and not c.ctrlreg[1]:
        return -EINVAL
    return 0


@dataclass
class TrapEntry:
    flags: int
    cs: int
    address: int


@dataclass
class Callback:
    address: int = 0
    flags: int = 0


@dataclass
class PVState:
    kernel_mode: bool = True
    kernel_l4: int = 0                 # mfn
    user_l4: int = 0                   # mfn, 0 = none
    trap_table: dict[int, TrapEntry] = field(default_factory=dict)
    callbacks: dict[int, Callback] = field(default_factory=dict)
    # kernel_ss, kernel_sp: properties below. No fs_base: the FS base is the
    # vCPU's own (sregs fs.base), which BP_FAST_STUB writes with wrmsr
    gs_base_kernel: int = 0
    gs_base_user: int = 0
    iopl: int = 0
    gdt_frames: list[int] = field(default_factory=list)
    gdt_entries: int = 0
    ldt_base: int = 0
    ldt_entries: int = 0
    # %dr0-3, (4, 5 unused), %dr6, %dr7 as the guest set them (Xen's v->arch.dr*)
    debugreg: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0, 0, 0xFFFF0FF0, 0x400])
    dr7_emul: int = 0                  # enable bits of I/O breakpoints (Xen's pv.dr7_emul)
    cr0_ts: bool = False
    online: bool = False
    # (heap mmap, offset of the vCPU's CPL0 stack data): where kernel_ss and
    # kernel_sp live once bound, because pyxen's #BP stub stores them for a
    # stack_switch made with `syscall` (xenheap.BP_FAST_STUB)
    stack_data: tuple | None = field(default=None, repr=False, compare=False)
    _kernel_ss: int = field(default=FLAT_KERNEL_SS, repr=False)
    _kernel_sp: int = field(default=0, repr=False)

    def bind_stack_data(self, mm, off: int) -> None:
        ss, sp = self.kernel_ss, self.kernel_sp
        self.stack_data = (mm, off)
        self.kernel_ss, self.kernel_sp = ss, sp

    def _slot(self, which: int, value: int | None = None) -> int | None:
        mm, off = self.stack_data
        if value is None:
            return _SLOT.unpack_from(mm, off + which)[0]
        _SLOT.pack_into(mm, off + which, value)
        return None

    @property
    def kernel_ss(self) -> int:
        return self._kernel_ss if self.stack_data is None else self._slot(STACK_DATA_KERNEL_SS)

    @kernel_ss.setter
    def kernel_ss(self, value: int) -> None:
        if self.stack_data is None:
            self._kernel_ss = value
        else:
            self._slot(STACK_DATA_KERNEL_SS, value)

    @property
    def kernel_sp(self) -> int:
        return self._kernel_sp if self.stack_data is None else self._slot(STACK_DATA_KERNEL_SP)

    @kernel_sp.setter
    def kernel_sp(self, value: int) -> None:
        if self.stack_data is None:
            self._kernel_sp = value
        else:
            self._slot(STACK_DATA_KERNEL_SP, value)


class PVVcpu:
    def __init__(self, domain, vcpu_id: int):
        self.domain = domain
        self.id = vcpu_id
        self.kvcpu = domain.vm.create_vcpu(vcpu_id)
        self.kvcpu.set_cpuid(domain.cpuid_entries)
        self.run_struct = self.kvcpu.run_struct
        self.pv = PVState()
        self.mem = GuestMemoryAccess(domain.mm, self._cr3_mfn)
        # kernel view, whatever mode the vCPU is in (for areas the guest
        # registered with kernel addresses)
        self.kmem = GuestMemoryAccess(domain.mm, lambda: self.pv.kernel_l4)
        self.time_area = 0          # VCPUOP_register_vcpu_time_memory_area
        if vcpu_id >= 32:
            raise ValueError("vCPUs beyond 32 need VCPUOP_register_vcpu_info before boot")
        self.vcpu_info = domain.shared_info.vcpu_info[vcpu_id]
        self.vcpu_info_addr = ctypes.addressof(self.vcpu_info)
        self.vcpu_info_moved = False
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.thread_ident: int | None = None
        self.poll_ports: set[int] = set()
        self.timer = VcpuTimer(self)    # single-shot and periodic timers, pvclock (time.py)
        self.runstate = 3 if vcpu_id else 0
        self.runstate_entry = 0
        self.runstate_time = [0, 0, 0, 0]
        self.runstate_area = 0          # guest virtual address, 0 = not registered
        self.initialised = vcpu_id == 0
        self.native_tid = 0
        self.kicked = False
        self._soft_checked = -1         # the rip may_owe_soft_exception looked at since the exit
        self._soft_owed = False
        self._rekick_asked = False      # rekick_soon's timer runs for this exit
        self._must_exit_asked = False   # FAST_MUST_EXIT is set in the flags byte
        self.in_replay = False
        # while in_replay: the guest's registers after the stub (regs, sregs)
        # and where its rax waits on the CPL0 stack (heap offset)
        self.replay_target: tuple[KS.Regs, KS.Sregs, int] | None = None
        self.parked = False             # waiting at the domain's run gate (paused)
        self.io_owed = False            # an IN KVM completes on the next KVM_RUN
        self.flush_pending = False
        self.exits = 0
        # exits by kind ("hypercall port", "hypercall via syscall", "syscall" from
        # user mode, "trap", "direct port I/O", "kick", ...) and traps by
        # vector: bench/linux_boot.py prints them per boot
        self.exit_kinds: collections.Counter = collections.Counter()
        self.trap_vectors: collections.Counter = collections.Counter()
        self.last_hypercalls = collections.deque(maxlen=16)   # numbers, for crash reports
        self.sregs = KS.Sregs()
        self._sregs_valid = False
        self._segments: dict[tuple[int, int | None, bool], KS.Segment] = {}
        heap = domain.heap
        self.kvcpu.set_msrs(C.initial_msrs(heap.lstar(vcpu_id), heap.cstar))
        s = self.kvcpu.get_sregs()
        C.initial_sregs(s, vcpu_id, heap.gdt_base(vcpu_id), heap.tss_base(vcpu_id), 0)
        self.sregs = s
        # KVM copies regs, sregs and the pending events into the run page at
        # every exit: reading them there costs no KVM_GET_SREGS or
        # KVM_GET_VCPU_EVENTS ioctl, each of which loads and puts the vCPU
        # (~25 us on a nested host; bench/README.md, sregs_resume)
        self.run_struct.kvm_valid_regs = \
            KI.KVM_SYNC_X86_REGS | KI.KVM_SYNC_X86_SREGS | KI.KVM_SYNC_X86_EVENTS
        self._sregs_in_run = False          # the run page's sregs are the vCPU's
        self._fast_flags_off = heap.fast_flags_offset(vcpu_id)
        self.pv.bind_stack_data(heap.mm, self._fast_flags_off)
        _SLOT.pack_into(heap.mm, self._fast_flags_off + STACK_DATA_INT3_RIP,
                        L.priv(L.SYSCALL_STUBS_OFF) + LSTAR_INT3_RET)
        # the singleshot slot (xenheap.syscall_common's `single`): the floor
        # pyxen publishes before each run, the deadline the stub leaves
        self._tslot = heap.tslot(vcpu_id)
        self._floor_published = TSLOT_NO_ANSWER
        self._floor_at = 0                  # the kick armed at the floor (ns)
        self._floor_fired = 0               # timer.singleshots_fired when it was set
        self.nmi_pending = False            # raise_nmi, deliver_nmi (Xen's v->nmi_pending)
        self.nmi_masked = False             # an NMI handler runs until its iret
        # where the replay stub's iretq frame goes: the top of the CPL0 stack
        # (virtual address, heap offset)
        base = heap.stack_top(vcpu_id) - _REPLAY_FRAME.size
        self._replay_frame = (base, heap.stack_offset(vcpu_id, base))

    # --- events, timers, runstate ------------------------------------------------
    def take_answered_singleshot(self) -> None:
        """After a run with a floor published (handle_exit: the stub answers
        nothing under TSLOT_NO_ANSWER, so most exits skip this): withdraw
        it, so a vCPU that blocks or parks now is not kicked at it
        (publish_timer_floor sets it again), and arm the single-shot
        deadline the LSTAR stub answered in the guest, if any (Xen's
        VCPUOP_set_singleshot_timer: it replaces the one armed). Only this
        vCPU's thread, with the vCPU out of KVM_RUN: the stub that writes it
        runs on this vCPU."""
        mm = self.domain.heap.mm
        _SLOT.pack_into(mm, self._tslot, TSLOT_NO_ANSWER)
        self._floor_published = TSLOT_NO_ANSWER
        want = _SLOT.unpack_from(mm, self._tslot + 8)[0]
        if want:
            _SLOT.pack_into(mm, self._tslot + 8, 0)
            self.domain.trace(self.id, "hypercall", f"vcpu_op set_singleshot_timer {want} "
                              f"(answered in the guest)")
            self.timer.set_singleshot(want)

    def publish_timer_floor(self) -> None:
        """Before each run: the earliest deadline the LSTAR stub may answer
        without an exit. With a single-shot timer armed, none (the timer
        thread fires that one; a new deadline must replace it first). Once
        one has fired (the guest sets its next in the handler: Linux's
        tick), TIMER_FLOOR_NS from then, with a kick at that floor in case
        the guest runs on without an exit until then: pyxen has looked at
        the slot by every deadline the stub accepts. Otherwise none: a
        guest that runs with no timer armed is not kicked for nothing."""
        t = self.timer
        if t.singleshot_ns:
            floor = TSLOT_NO_ANSWER
        else:
            dom = self.domain
            now = dom.clock.now()
            if t.singleshots_fired != self._floor_fired:
                self._floor_fired = t.singleshots_fired
                self._floor_at = now + TIMER_FLOOR_NS
                dom.timers.arm(("floor", self.id, self._floor_at), self._floor_at,
                               self._floor_reached)
            floor = self._floor_at if self._floor_at > now else TSLOT_NO_ANSWER
        if floor != self._floor_published:
            _SLOT.pack_into(self.domain.heap.mm, self._tslot, floor)
            self._floor_published = floor

    def _floor_reached(self, key) -> None:
        """The timer thread, at a floor publish_timer_floor set: if the vCPU
        still runs with it, end that run (its exit takes what the stub
        answered)."""
        at = key[2]
        if not self.domain.stopped and \
                _SLOT.unpack_from(self.domain.heap.mm, self._tslot)[0] == at:
            self.kvcpu.kick()

    def notify_event(self) -> None:
        """An event became pending for this vCPU: wake it if blocked, and make a
        running vCPU leave the guest so it takes the upcall promptly.

        Kicked whatever the upcall mask says, as Xen's vcpu_kick(): a guest
        unmasks with a plain store and then reads evtchn_upcall_pending
        (Linux's xen_irq_enable, no fence), so a mask of 1 read here may be
        stale and the guest may already have missed the pending flag."""
        self.wake.set()
        if threading.get_ident() != self.thread_ident:
            self.kvcpu.kick()

    def may_redirect(self) -> bool:
        """Whether pyxen may move the vCPU elsewhere now (an upcall, a replay
        stub): not while one of its CPL0 stubs runs, nor, after a kick, while
        KVM holds an exception it has not delivered yet (a #PF the guest just
        raised would otherwise be delivered at the new rip). Leaves the current
        sregs in self.sregs."""
        if self.in_replay:
            return False
        if self.fetch_sregs().cs.selector & 3 == 0:
            return False
        if _SYSCALL_STUBS <= self.regs.rip < _SYSCALL_STUBS + L.PAGE_SIZE:
            # in a syscall stub, which reads its own vCPU's PERCPU entry:
            # after an upcall here the guest could resume the task on another
            # vCPU, which would run this stub with this vCPU's mode and
            # vcpu_info (docs/design.md). The stub exits or returns within a
            # few instructions.
            self.rekick_soon()
            return False
        if self.kicked:
            ev = self.run_struct.s.regs.events     # as the kick left them (KVM_SYNC_X86_EVENTS)
            if ev.exception_pending or ev.exception_injected or ev.nmi_pending \
                    or ev.nmi_injected or ev.interrupt_injected:
                return False
            if self.may_owe_soft_exception():
                return False
        return True

    def may_owe_soft_exception(self) -> bool:
        """After a kick, at CPL3: whether the vCPU stands just past an int3,
        `int $3` or `int $4` whose delivery KVM may still owe, and shows in
        no event (_SOFT_EXCEPTION_TAILS). Could be a false alarm (a 0xcc
        byte ending another instruction, Linux's int3 padding before a
        function): then pyxen only acts a little later (rekick_soon, once
        per exit)."""
        rip = self.regs.rip
        if self._soft_checked == rip:
            return self._soft_owed
        try:
            owed = self.mem.read(rip - 1, 1) == b"\xcc" \
                or self.mem.read(rip - 2, 2) in _SOFT_EXCEPTION_TAILS
        except GuestFault:
            owed = False
        self._soft_checked, self._soft_owed = rip, owed
        if owed:
            self.rekick_soon()
        return owed

    def rekick_soon(self) -> None:
        """End the vCPU's next run shortly (REKICK_NS), once per exit: pyxen
        lets it run on to leave a syscall stub or to take an exception KVM
        may owe, and nothing else might end that run soon. The domain's
        timer thread kicks (a re-kick the next exit finds still armed is
        cancelled: that run ended by itself)."""
        if self._rekick_asked:
            return
        self._rekick_asked = True
        dom = self.domain
        dom.timers.arm(("rekick", self.id), dom.clock.now() + REKICK_NS, self._rekick)

    def _rekick(self, _key) -> None:
        if not self.domain.stopped:
            self.kvcpu.kick()

    def must_run_on(self) -> bool:
        """Whether the vCPU must run on to its next exit before pyxen acts
        with the guest's own state: a pause (a vCPU parks only in a state a
        save can restore: never at CPL0, never with an exception KVM owes
        unseen) or an upcall that became due. A CPL0 stub that returns to
        the guest without an exit (xenheap.FAST_RETURN: the #GP stub's
        cli/sti, the #BP stub's answers, a page-table replay's return) is
        told to exit instead; at
        its return's last two instructions, where that comes too late,
        pyxen does the iretq now (finish_fast_stub) and the answer is
        False. Every other CPL0 stub ends in an exit."""
        if self.in_replay:
            return False                    # not started: guest_registers has its target
        if self.fetch_sregs().cs.selector & 3:
            return self.kicked and self.may_owe_soft_exception()
        rip = self.regs.rip
        for start, end, jnz in _FAST_STUBS:
            if start <= rip < end:
                if rip == jnz or rip == jnz + 2:
                    self.finish_fast_stub()
                    return False
                self.domain.heap.mm[self._fast_flags_off] |= FAST_MUST_EXIT
                self._must_exit_asked = True
                return True
        return True                         # an exception stub: it exits at once

    def finish_fast_stub(self) -> None:
        """Return from a fast CPL0 stub as its iretq would: the guest's
        registers are all back, the CPU's frame is at %rsp."""
        heap = self.domain.heap
        heap.mm[self._fast_flags_off] &= ~FAST_MUST_EXIT
        self._must_exit_asked = False
        rip, cs, rflags, rsp, ss = _CPU_FRAME.unpack_from(
            heap.mm, heap.stack_offset(self.id, self.regs.rsp))
        self.set_return(rip, rsp, rflags, cs, ss)

    def _redirect_ok(self) -> bool:
        """may_redirect, after finishing a fast stub a kick left at its last
        two instructions; otherwise the stub is told to exit (must_run_on)."""
        if self.may_redirect():
            return True
        return not self.must_run_on() and self.may_redirect()

    def raise_nmi(self) -> None:
        """An NMI for this vCPU (VCPUOP_send_nmi, the toolstack's NMI
        trigger): Xen's nmi_pending and vcpu_kick, which also ends a block.
        deliver_nmi puts it in before the guest runs on."""
        self.nmi_pending = True
        self.notify_event()

    def deliver_nmi(self) -> None:
        """Xen's process_nmi, before any event upcall: a pending NMI not
        masked goes to the NMI vector of the guest's virtual IDT (where its
        NMI callback is registered) as a bounce frame, and NMIs stay masked
        until the guest's next iret (async_exception_cleanup; the iret
        answer in the guest is off meanwhile). With no handler the NMI is
        lost, as on Xen."""
        if not self._redirect_ok():
            return                  # on a later way back to the guest
        self.nmi_pending = False
        t = self.pv.trap_table.get(NMI_VECTOR)
        if t is None or not t.address:
            return
        self.nmi_masked = True
        self.sync_fast_flags()
        r = self.regs
        s = self.sregs
        self.domain.trace(self.id, "trap", f"NMI rip={r.rip:#x}")
        self.bounce(t.address, r.rip, s.cs.selector, r.rflags, r.rsp, s.ss.selector, None,
                    bool(t.flags & 4))

    def deliver_event_upcall(self) -> None:
        cb = self.pv.callbacks.get(0)
        if cb is None or not cb.address or not self._redirect_ok():
            return                  # the upcall goes in on a later way back to the guest
        r = self.regs
        s = self.sregs
        self.domain.trace(self.id, "upcall", f"rip={r.rip:#x}")
        self.bounce(cb.address, r.rip, s.cs.selector, r.rflags, r.rsp, s.ss.selector, None, True)

    def set_runstate(self, state: int) -> None:
        now = self.domain.clock.now()
        self.runstate_time[self.runstate] += now - self.runstate_entry
        self.runstate, self.runstate_entry = state, now
        if self.runstate_area:
            self.write_runstate(self.runstate_area)

    def runstate_bytes(self) -> bytes:
        now = self.domain.clock.now()
        times = list(self.runstate_time)
        times[self.runstate] += now - self.runstate_entry
        return struct.pack("<iIQ4Q", self.runstate, 0, self.runstate_entry, *times)

    def write_runstate(self, va: int) -> None:
        try:
            self.mem.write(va, self.runstate_bytes())
        except GuestFault:
            pass     # Xen also ignores an unmapped runstate area

    # --- state helpers -------------------------------------------------------
    def iopl_ok(self) -> bool:
        """Xen's iopl_ok: the virtual IOPL covers the guest's current mode
        (kernel mode counts as CPL 1, or 0 with VMASST_architectural_iopl)."""
        if self.pv.kernel_mode:
            cpl = 0 if self.domain.vm_assist & (1 << VMASST_TYPE_architectural_iopl) else 1
        else:
            cpl = 3
        return cpl <= self.pv.iopl

    def sync_fast_flags(self) -> None:
        """Tell pyxen's in-guest stubs what they may answer: the #GP stub
        (xenheap.GP_FAST_STUB) whether cli/sti are no-ops now, the syscall
        stubs (xenheap.lstar_stub, syscall_common) and the #BP stub
        (BP_FAST_STUB) whether a `syscall` is a hypercall (guest kernel
        mode), and what the iret and xen_version answers need (the virtual
        IOPL, vm_assist, the event callback: XenHeap.set_fast_state). After
        any change of one of these (toggle_mode, set_iopl, vm_assist, the
        event callback), and when the vCPU's thread starts (a new or
        restored vCPU): not on a page-table switch, which changes none."""
        heap = self.domain.heap
        heap.mm[self._fast_flags_off] = (FAST_MUST_EXIT if self._must_exit_asked else 0) \
            | (FAST_CLI_OK if self.iopl_ok() else 0) \
            | (FAST_KERNEL_CPL0 if self.pv.kernel_mode else 0)
        cb = self.pv.callbacks.get(0)
        # traced: the syscall stubs take the vCPU for user mode and exit
        # (pyxen, which knows the mode, makes the hypercall and traces it)
        heap.set_fast_state(self.id, self.pv.kernel_mode and not self.domain.traced,
                            not self.domain.vm_assist & (1 << VMASST_TYPE_architectural_iopl)
                            and not self.nmi_masked,
                            self.pv.iopl, cb.address if cb is not None else 0)

    def _cr3_mfn(self) -> int:
        return self.pv.kernel_l4 if self.pv.kernel_mode else (self.pv.user_l4 or self.pv.kernel_l4)

    @property
    def regs(self) -> KS.Regs:
        return self.run_struct.s.regs.regs

    def regs_changed(self) -> None:
        self.run_struct.kvm_dirty_regs |= KI.KVM_SYNC_X86_REGS

    def fetch_sregs(self) -> KS.Sregs:
        """The vCPU's segment and control registers (a copy pyxen may change
        and hand back with sregs_changed): from the run page after an exit,
        by ioctl when pyxen set them directly since."""
        if not self._sregs_valid:
            if self._sregs_in_run:
                self.sregs = KS.Sregs.from_buffer_copy(self.run_struct.s.regs.sregs)
            else:
                self.sregs = self.kvcpu.get_sregs()
            self._sregs_valid = True
        return self.sregs

    def sregs_changed(self) -> None:
        self.run_struct.s.regs.sregs = self.sregs
        self.run_struct.kvm_dirty_regs |= KI.KVM_SYNC_X86_SREGS

    def start(self, rip: int, rsp: int, rsi: int, l4_mfn: int) -> None:
        """Initial state of a freshly built PV guest (like Xen's domain builder)."""
        self.pv.kernel_l4 = l4_mfn
        self.pv.kernel_sp = rsp
        self.pv.kernel_mode = True
        self.pv.online = True
        self._sregs_valid = True            # self.sregs: the initial state from __init__
        self.load_cr3(commit=False)
        self.kvcpu.set_sregs(self.sregs)
        self._sregs_valid = self._sregs_in_run = False
        r = KS.Regs()
        r.rip, r.rsp, r.rsi = rip, rsp, rsi
        r.rflags = C.RFLAGS_IF | C.RFLAGS_RESERVED1
        self.kvcpu.set_regs(r)
        if self.vcpu_info is not None:
            self.vcpu_info.evtchn_upcall_mask = 1

    def initialise(self, ctx: bytes) -> int:
        """VCPUOP_initialise: load a vcpu_guest_context (x86-64 layout) into this
        offline vCPU, validating it like Xen's arch_set_info_guest."""
        from .hypercalls.descriptors import install_gdt
        from .abi import EINVAL
        dom = self.domain
        mm = dom.mm
        rc = check_guest_context(ctx)
        if rc:
            return rc                   # refused before anything changed
        c = VcpuGuestContext.from_buffer_copy(ctx)
        ur = c.user_regs
        gdt_ents = c.gdt_ents
        l4 = c.ctrlreg[3] >> 12
        if not mm.owns(l4) or gdt_ents > 7168:
            return -EINVAL
        from .mm import PageTableError
        try:
            with dom.lock:
                mm.get_type(l4, 4)
                self.give_l4_view(l4, user=False)
        except PageTableError as e:
            return -e.errno
        old = self.pv.kernel_l4
        pv = self.pv
        pv.kernel_l4, pv.user_l4 = l4, 0
        if old:
            mm.put_type(old)
        pv.kernel_mode = True
        pv.iopl = (ur.rflags >> 12) & 3         # Xen takes the virtual IOPL from eflags
        pv.kernel_ss, pv.kernel_sp = c.kernel_ss, c.kernel_sp
        pv.gs_base_kernel, pv.gs_base_user = c.gs_base_kernel, c.gs_base_user
        pv.ldt_base, pv.ldt_entries = (c.ldt_base, c.ldt_ents) if c.ldt_ents else (0, 0)
        pv.trap_table.clear()
        for t in c.trap_ctxt:
            if t.address:
                pv.trap_table[t.vector] = TrapEntry(t.flags, t.cs, t.address)
        for t, a in ((0, c.event_callback_eip), (1, c.failsafe_callback_eip),
                     (2, c.syscall_callback_eip)):
            if a:
                pv.callbacks[t] = Callback(a, 0)
        with dom.lock:
            rc = install_gdt(self, c.gdt_frames[:(gdt_ents + 511) // 512], gdt_ents)
        if rc:
            return rc
        r = KS.Regs()
        for name in USER_REGS_GPRS:
            setattr(r, name, getattr(ur, name))
        r.rip, r.rsp = ur.rip, ur.rsp
        r.rflags = (ur.rflags & ~(C.RFLAGS_IOPL3)) | C.RFLAGS_IF | 2
        self.kvcpu.set_regs(r)
        s = self.kvcpu.get_sregs()
        C.initial_sregs(s, self.id, dom.heap.gdt_base(self.id), dom.heap.tss_base(self.id),
                        l4 << 12)
        s.fs.base, s.gs.base = c.fs_base, c.gs_base_kernel
        self.kvcpu.set_sregs(s)
        self._sregs_valid = self._sregs_in_run = False
        self.vcpu_info.evtchn_upcall_mask = 1
        self.initialised = True
        self.sync_fast_flags()
        return 0

    # --- segments -------------------------------------------------------------
    def descriptor(self, selector: int) -> int | None:
        """The 8-byte descriptor a selector names in this vCPU's GDT (or LDT)."""
        idx = selector >> 3
        if selector & 4:
            if idx >= self.pv.ldt_entries:
                return None
            try:
                return self.mem.read_u64(self.pv.ldt_base + idx * 8)
            except GuestFault:
                return None
        if idx >= FIRST_RESERVED_GDT_ENTRY:
            off = idx * 8 - FIRST_RESERVED_GDT_ENTRY * 8
            heap = self.domain.heap
            page_off = heap.stack_offset(self.id, heap.gdt_base(self.id) + 14 * 4096 + off)
            return struct.unpack_from("<Q", heap.mm, page_off)[0]
        if idx >= self.pv.gdt_entries or idx == 0:
            return None
        frame = self.pv.gdt_frames[idx // 512]
        return self.domain.mm.read_entry(frame, idx % 512)

    def segment(self, selector: int, code: bool) -> KS.Segment | None:
        """The segment cs (code=True) or ss gets on a return to the guest with
        this selector, from the descriptor the selector names now; None if
        the selector is unusable there. Kept per (selector, descriptor)
        (a few, per vCPU): a return copies the object (`s.cs = seg`) instead
        of building the segment field by field, ~28 ctypes writes, on every
        iret and bounce. The object is shared and never changed."""
        if selector & 3 != 3:
            return None
        flat = selector in (FLAT_KERNEL_CS, FLAT_KERNEL_SS)
        desc = 0 if flat else self.descriptor(selector)
        key = (selector, desc, code)
        seg = self._segments.get(key)
        if seg is None:
            seg = self._make_segment(selector, code, desc, flat)
            if seg is None:
                return None
            if len(self._segments) >= SEGMENT_CACHE:
                self._segments.clear()
            self._segments[key] = seg
        return seg

    @staticmethod
    def _make_segment(selector: int, code: bool, desc: int | None,
                      flat: bool) -> KS.Segment | None:
        seg = KS.Segment()
        if flat or selector == 0xE023:
            C.flat_segment(seg, selector, code and selector == FLAT_KERNEL_CS)
            if selector == 0xE023:
                C.segment_from_descriptor(seg, selector, desc)
            return seg
        if desc is None or not (desc >> 47) & 1 or ((desc >> 45) & 3) != 3:
            return None
        is_code = bool((desc >> 43) & 1)
        if code != is_code or not (desc >> 44) & 1:
            return None
        C.segment_from_descriptor(seg, selector, desc)
        return seg

    # --- mode switches --------------------------------------------------------
    def toggle_mode(self) -> None:
        """Switch between guest kernel and guest user mode (Xen's toggle_guest_mode):
        page tables and the GS base swap."""
        s = self.fetch_sregs()
        pv = self.pv
        if pv.kernel_mode:
            pv.gs_base_kernel = s.gs.base
            s.gs.base = pv.gs_base_user
        else:
            pv.gs_base_user = s.gs.base
            s.gs.base = pv.gs_base_kernel
        pv.kernel_mode = not pv.kernel_mode
        self.sync_fast_flags()              # the stubs follow the mode
        self.load_cr3(commit=False)         # set_return commits the sregs

    def load_cr3(self, commit: bool = True) -> None:
        """Point the vCPU's CR3 at the L4 of its current guest mode: the one
        place the hardware page-table base follows pyxen's (kernel_l4,
        user_l4, kernel_mode). commit=False leaves the sregs for the caller
        to commit (set_return does)."""
        s = self.fetch_sregs()
        s.cr3 = self._cr3_mfn() << 12
        if commit:
            self.sregs_changed()

    def switch_baseptr(self, mfn: int, user: bool = False) -> None:
        """A new kernel (or, user=True, user) page-table base: Xen's
        new_guest_cr3 for MMUEXT_NEW_BASEPTR and mov to %cr3, and
        MMUEXT_NEW_USER_BASEPTR (mfn 0: none). Takes an L4 type reference on
        the new table (validating it; PageTableError if refused, nothing
        changed), drops the old one's, and reloads CR3 when the table
        switched is the one in use (a reload of the same table too: the
        guest's flush). Call with the domain lock held."""
        pv = self.pv
        mm = self.domain.mm
        old = pv.user_l4 if user else pv.kernel_l4
        if mfn != old:
            if mfn:
                mm.get_type(mfn, 4)             # PGT_L4
            if user:
                pv.user_l4 = mfn
            else:
                pv.kernel_l4 = mfn
            if old:
                mm.put_type(old)
        if mfn:
            self.give_l4_view(mfn, user)
        if user != pv.kernel_mode:
            self.load_cr3()

    def give_l4_view(self, mfn: int, user: bool) -> None:
        """The view of pyxen's slot (mm.set_l4_view) for an L4 that becomes
        this vCPU's kernel or user page-table base: a table some vCPU runs
        guest kernel mode on keeps the kernel's, where the syscall stubs
        find the vcpu_info windows. Call with the domain lock held."""
        if not user or all(v.pv.kernel_l4 != mfn for v in self.domain.vcpus):
            self.domain.mm.set_l4_view(mfn, user)

    def set_cr0_ts(self, ts: bool) -> None:
        """The guest's virtual CR0.TS (fpu_taskswitch, clts, mov to %cr0),
        mirrored into the vCPU's CR0 so the next FPU use raises #NM, which
        reaches the guest as any exception (handle_trap) and, as on Xen,
        clears TS as it is delivered."""
        self.pv.cr0_ts = ts
        s = self.fetch_sregs()
        s.cr0 = (s.cr0 | C.CR0_TS) if ts else (s.cr0 & ~C.CR0_TS)
        self.sregs_changed()

    def set_return(self, rip: int, rsp: int, rflags: int, cs: int, ss: int) -> None:
        """Resume the guest at CPL3 with these values (after any exit).

        Fast path (issue 15): a return to the flat kernel CS/SS when the run
        page already holds exactly those segments (a hypercall through
        `syscall` in guest kernel mode: ~70 % of the set_returns of a Linux
        boot) and nothing fetched the sregs during this exit changes only
        the registers: no sregs copied out and back, no KVM_SET_SREGS work
        on the next entry."""
        if not self._sregs_valid and self._sregs_in_run and (cs | 3) == FLAT_KERNEL_CS \
                and (ss | 3) == FLAT_KERNEL_SS:
            rs = self.run_struct.s.regs.sregs
            if bytes(rs.cs) == _FLAT_KERNEL_CS and bytes(rs.ss) == _FLAT_KERNEL_SS:
                r = self.regs
                r.rip, r.rsp = rip, rsp
                r.rflags = (rflags & ~(C.RFLAGS_IOPL3 | 0x20000 | C.RFLAGS_NT)) | C.RFLAGS_IF | 2
                self.run_struct.kvm_dirty_regs |= KI.KVM_SYNC_X86_REGS
                return
        s = self.fetch_sregs()
        seg = self.segment(cs | 3, True)
        if seg is None:
            raise GuestCrash(f"return to an unusable code selector {cs:#x}")
        s.cs = seg
        seg = self.segment(ss | 3, False)
        if seg is None:
            raise GuestCrash(f"return to an unusable stack selector {ss:#x}")
        s.ss = seg
        r = self.regs
        r.rip, r.rsp = rip, rsp
        r.rflags = (rflags & ~(C.RFLAGS_IOPL3 | 0x20000 | C.RFLAGS_NT)) | C.RFLAGS_IF | 2
        self.regs_changed()
        self.sregs_changed()

    # --- bounce frames ----------------------------------------------------------
    def guest_rflags(self, rflags: int) -> int:
        """RFLAGS as the guest should see them: IF mirrors the event mask,
        IOPL is the virtual IOPL."""
        rflags &= ~(C.RFLAGS_IF | C.RFLAGS_IOPL3)
        vi = self.vcpu_info
        if vi is None or not vi.evtchn_upcall_mask:
            rflags |= C.RFLAGS_IF
        return rflags | (self.pv.iopl << 12)

    def bounce(self, handler: int, rip: int, cs: int, rflags: int, rsp: int, ss: int,
               error: int | None, mask_events: bool) -> None:
        """Deliver an exception/callback to the guest kernel with Xen's 64-bit
        frame: rcx, r11, [error], rip, cs, rflags, rsp, ss (lowest first)."""
        self.settle_io()
        if handler == 0:
            raise GuestCrash("no handler registered")
        vi = self.vcpu_info
        saved_mask = vi.evtchn_upcall_mask if vi is not None else 0
        from_user = not self.pv.kernel_mode
        if from_user:
            if not self.pv.kernel_sp:
                raise GuestCrash("trap from user mode but no kernel stack (stack_switch)")
            self.toggle_mode()
            stack = self.pv.kernel_sp
        else:
            stack = rsp
            cs &= ~3           # the guest kernel sees its own CS at RPL 0
        stack &= ~0xF
        r = self.regs
        words = [r.rcx, r.r11]
        if error is not None:
            words.append(error)
        words += [rip, cs | (saved_mask << 32), self.guest_rflags(rflags), rsp, ss]
        frame = struct.pack(f"<{len(words)}Q", *words)
        base = stack - len(frame)
        try:
            self.mem.write(base, frame)
        except GuestFault as f:
            raise GuestCrash(f"cannot write the bounce frame on the guest kernel stack at "
                             f"{base:#x}: {f}") from None
        if mask_events and vi is not None:
            vi.evtchn_upcall_mask = 1
        self.set_return(handler, base, rflags & ~(C.RFLAGS_TF | 0x10000 | C.RFLAGS_NT),
                        FLAT_KERNEL_CS, FLAT_KERNEL_SS)

    def inject_trap(self, vector: int, error: int | None, rip: int, cs: int, rflags: int,
                    rsp: int, ss: int) -> None:
        t = self.pv.trap_table.get(vector)
        name = TRAP_NAMES.get(vector, f"vector {vector}")
        if t is None or t.address == 0:
            raise GuestCrash(f"{name} at rip {rip:#x} (error {error}) with no handler "
                             "in the guest's trap table")
        self.domain.trace(self.id, "trap", f"{name} rip={rip:#x} err={error}")
        self.bounce(t.address, rip, cs, rflags, rsp, ss, error, bool(t.flags & 4))

    def software_interrupt(self, n: int, insn_len: int, gp_error: int, rip: int, cs: int,
                           rflags: int, rsp: int, ss: int) -> None:
        """`int $n` at rip that the hardware did not deliver (this host's IDT
        and PVM refuse it: a #GP through a DPL 0 gate, or a #UD): Xen's
        rule for a software interrupt. The guest's trap-table entry for n
        takes it when its DPL allows the current guest mode (kernel mode
        counts as ring 0, user as 3), resuming after the instruction;
        otherwise the guest gets #GP(gp_error) (Xen's n*8+2) at the
        instruction. int3 and into are exceptions (#BP, #UD in 64-bit
        mode) and reach the guest by inject_trap like any other."""
        t = self.pv.trap_table.get(n)
        if t is not None and t.address and (t.flags & 3) >= (0 if self.pv.kernel_mode else 3):
            self.domain.trace(self.id, "trap", f"int {n:#x} rip={rip:#x}")
            self.bounce(t.address, rip + insn_len, cs, rflags, rsp, ss, None, bool(t.flags & 4))
            return
        self.inject_trap(13, gp_error, rip, cs, rflags, rsp, ss)

    # --- exits -----------------------------------------------------------------
    def handle_trap(self) -> Exit:
        """An exception the guest raised, through pyxen's IDT stub (its frame
        on the CPL0 stack): emulated, or bounced to the guest's handler."""
        r = self.regs
        heap = self.domain.heap
        vec, err, rip, cs, rflags, rsp, ss = _FRAME.unpack_from(
            heap.mm, heap.stack_offset(self.id, r.rsp))
        self.trap_vectors[vec] += 1
        self._sregs_valid = False
        if vec == 14 and rip == _SYSCALL_STUBS + SYSCALL_BACK and self.pv.kernel_mode:
            # an answer's return pushes r11 for its popfq, on a stack the
            # guest cannot write there: pyxen returns as Xen's sysret does,
            # which touches no memory (rax is the answer)
            self.set_return(r.rcx, rsp, r.r11, FLAT_KERNEL_CS, FLAT_KERNEL_SS)
            return Exit.RESUME
        if vec == 14 and rip in _SINGLESHOT_READS and self.pv.kernel_mode:
            # the singleshot answer reading the guest's argument: the
            # hypercall it is, made by pyxen (its read gives -EFAULT)
            r.rax, r.rdi, r.rsp = HC.vcpu_op, VCPUOP_set_singleshot_timer, rsp
            return self.handle_syscall()
        if vec == 14 and rip in _IRET_WRITES and self.pv.kernel_mode:
            # the iret answer writing under the target stack, which Xen's
            # iret never touches: the iret, made by pyxen from the frame
            # still at rsp (it writes nothing there)
            r.rax, r.rsp = HC.iret, rsp
            return self.handle_syscall()
        if vec in (12, 13, 14) and _SYSCALL_STUBS <= rip < _SYSCALL_STUBS + L.PAGE_SIZE \
                and self.pv.kernel_mode:
            # the syscall stubs' answers read and write the guest's stack
            # (xenheap.syscall_common): an iret frame they cannot read, or
            # an upcall frame xen_version's cannot write, crashes the
            # domain, as Xen's do_iret and create_bounce_frame do
            raise GuestCrash(f"{TRAP_NAMES.get(vec, vec)} in pyxen's syscall stub at {rip:#x} "
                             f"(guest rsp {rsp:#x}, cr2 {self.fetch_sregs().cr2:#x}): an iret "
                             f"frame it cannot read or an upcall frame it cannot write")
        if cs & 3 == 0:
            cr2 = self.fetch_sregs().cr2
            if vec == 14 and rip == L.priv(L.GP_FAST_OFF) + GP_FAST_READ:
                # the #GP stub reading the instruction the guest just ran: only
                # the guest unmapping its own code under it gets here
                raise GuestCrash(f"the guest's code at {r.rax:#x} was unmapped while pyxen read "
                                 f"the instruction that raised #GP there (cr2 {cr2:#x})")
            # a fault in pyxen's own CPL0 code: a hypervisor bug, not the guest's
            raise GuestCrash(f"pyxen fault at CPL0: vector {vec} error {err:#x} rip {rip:#x} "
                             f"cr2 {cr2:#x} (registers: rsi={r.rsi:#x} rdi={r.rdi:#x} "
                             f"rcx={r.rcx:#x})")
        if vec == 14:
            # the hardware always sees ring 3; Xen reports the guest's mode
            if self.pv.kernel_mode:
                err &= ~4
            cr2 = self.fetch_sregs().cr2
            self.domain.trace(self.id, "pf", f"cr2={cr2:#x} err={err:#x} rip={rip:#x}")
            if self.domain.emulate_pf is not None and \
                    self.domain.emulate_pf(self, err, cr2, rip, cs, rflags, rsp, ss):
                return Exit.RESUME
            if self.vcpu_info is not None:
                self.vcpu_info.cr2 = cr2
        if vec == 13 and err & 2 and (err >> 3) < 256:
            # `int $n` through a gate the hardware refused (DPL 0)
            self.software_interrupt(err >> 3, 2, err, rip, cs, rflags, rsp, ss)
            return Exit.RESUME
        if vec == 6:
            # on this host `int $n` (n != 3) raises #UD whatever the gate
            try:
                insn = self.mem.read(rip, 2)
            except GuestFault:
                insn = b""
            if len(insn) == 2 and insn[0] == 0xCD:
                n = insn[1]
                self.software_interrupt(n, 2, (n << 3) | 2, rip, cs, rflags, rsp, ss)
                return Exit.RESUME
        if vec == 1:
            from .hypercalls.misc import debug_exception
            debug_exception(self)
        if vec < 32:
            has_err = vec in (8, 10, 11, 12, 13, 14, 17, 21, 29, 30)
            if self.domain.emulate is not None and vec in (6, 12, 13) and \
                    self.domain.emulate(self, vec, err, rip, cs, rflags, rsp, ss):
                return Exit.RESUME
            self.inject_trap(vec, err if has_err else None, rip, cs, rflags, rsp, ss)
            if vec == 7 and self.pv.cr0_ts:
                # Xen's do_device_not_available: the #NM that reaches the
                # guest clears its virtual CR0.TS
                self.set_cr0_ts(False)
            return Exit.RESUME
        raise GuestCrash(f"unexpected interrupt vector {vec}")

    def handle_hypercall(self) -> Exit:
        """`out $0xe0` from the hypercall page: rax is the number, rdi, rsi,
        rdx, r10, r8 the arguments; the result goes to rax. From guest user
        mode it is a #GP at the instruction, as Xen's."""
        r = self.regs
        if not self.pv.kernel_mode:
            s = self.fetch_sregs()
            self.inject_trap(13, 0, r.rip - 2, s.cs.selector, r.rflags, r.rsp, s.ss.selector)
            return Exit.RESUME
        ret = self.domain.hypercall(self, r.rax, r.rdi, r.rsi, r.rdx, r.r10, r.r8)
        if isinstance(ret, Exit):       # iret: the registers are the frame's
            return ret
        r.rax = ret
        self.regs_changed()
        return Exit.RESUME

    def handle_direct_io(self) -> Exit:
        """An in/out (string forms too) to one of L.PORTS_DIRECT, which exit
        without a #GP: answered as the #GP path answers it (Xen's
        guest_io_okay, guest_io_read/write: emulate.Emulator.port_io), or a
        #GP(0) at the instruction when the guest may not use the port."""
        io = self.run_struct.exit.io
        port, size, count = io.port, io.size, io.count
        is_in = io.direction == KI.KVM_EXIT_IO_IN
        em = self.domain.emulator
        if em is None or not em.port_allowed(self, port, size):
            return self.refuse_port_io(port)
        data = self.kvcpu.io_data()
        for i in range(count):
            chunk = data[i * size:(i + 1) * size]
            if is_in:
                chunk[:] = em.port_read(port, size).to_bytes(size, "little")
            else:
                em.port_write(port, size, int.from_bytes(chunk, "little"))
        self.io_owed = is_in
        return Exit.RESUME

    def settle_io(self) -> None:
        """An IN that exited directly (handle_direct_io) is retired by KVM
        on the next KVM_RUN, which would undo a redirect of rip: before
        pyxen sends the vCPU elsewhere (a bounce, the replay stub), KVM
        completes it."""
        if self.io_owed:
            self.io_owed = False
            self.kvcpu.complete_pending()

    def refuse_port_io(self, port: int) -> Exit:
        """An in/out (or string form) that exited to pyxen on a port the
        guest may not use (pyxen's own ports in the wrong form or mode, a
        direct port without I/O privilege): Xen has no such port or refuses
        it, with #GP(0) at the instruction. KVM still owes the instruction
        its completion (it would store an IN's data and retire it on the
        next KVM_RUN, whatever pyxen set meanwhile), so it is completed
        without running the guest and its effect on the registers undone;
        an INS has stored all-ones bytes, which Xen would not have. Where
        the instruction starts (Emulator.io_insn_start): rip at the exit
        when the completion retired it (KVM's fast PIO path) or when rip is
        at a string form (KVM repeats it), else the OUT that ends at rip
        (KVM's emulator retires an OUT before exiting)."""
        saved = KS.Regs.from_buffer_copy(self.regs)
        try:
            self.kvcpu.complete_pending()
        except OSError as e:
            raise GuestCrash(f"I/O to port {port:#x} could not be completed: {e}") from None
        start = saved.rip
        if self.regs.rip == saved.rip:
            em = self.domain.emulator
            start = em.io_insn_start(self, saved.rip) if em is not None else None
            if start is None:
                raise GuestCrash(f"I/O to port {port:#x} ending at {saved.rip:#x}: "
                                 "no instruction found")
        ctypes.memmove(ctypes.addressof(self.regs), ctypes.addressof(saved), ctypes.sizeof(saved))
        self.regs_changed()
        self._sregs_valid = False
        s = self.fetch_sregs()
        self.domain.trace(self.id, "trap", f"I/O port {port:#x} at {start:#x}: #GP")
        self.inject_trap(13, 0, start, s.cs.selector, saved.rflags, saved.rsp, s.ss.selector)
        return Exit.RESUME

    def handle_syscall(self) -> Exit:
        """`syscall` (through the LSTAR/CSTAR stub): a hypercall in guest
        kernel mode, the guest's syscall callback in user mode."""
        r = self.regs
        rip, rflags = r.rcx, r.r11
        self._sregs_valid = False
        if self.pv.kernel_mode:
            # a `syscall` in guest kernel mode is a hypercall (rax = number)
            ret = self.domain.hypercall(self, r.rax, r.rdi, r.rsi, r.rdx, r.r10, r.r8)
            if isinstance(ret, Exit):   # iret: the registers are the frame's
                return ret
            r.rax = ret
            self.set_return(rip, r.rsp, rflags, FLAT_KERNEL_CS, FLAT_KERNEL_SS)
            return Exit.RESUME
        cb = self.pv.callbacks.get(2)
        if cb is None or cb.address == 0:
            # no syscall callback: Xen raises #UD at the syscall instruction
            self.inject_trap(6, None, rip - 2, FLAT_KERNEL_CS | 3, rflags, r.rsp, FLAT_KERNEL_SS)
            return Exit.RESUME
        self.domain.trace(self.id, "syscall", f"rax={r.rax:#x} rip={rip:#x}")
        # like Xen, the frame names the flat user selectors: the hardware
        # no longer knows which code selector the user ran with
        self.bounce(cb.address, rip, FLAT_KERNEL_CS, rflags, r.rsp, FLAT_KERNEL_SS, None,
                    bool(cb.flags & CALLBACKF_mask_events))
        return Exit.RESUME

    def do_iret(self) -> Exit:
        """HYPERVISOR_iret: the guest's return from an exception, callback or
        syscall; may switch to guest user mode."""
        r = self.regs
        try:
            rax, r11, rcx, flags, rip, cs, rflags, rsp, ss = self.mem.read_struct(r.rsp, _IRET)
        except GuestFault:
            raise GuestCrash(f"iret with an unreadable frame at {r.rsp:#x}") from None
        if (cs & 3) == 3:
            if self.pv.kernel_mode:
                if not self.pv.user_l4:
                    raise GuestCrash("iret to user mode without a user page table")
                self.toggle_mode()
        elif not self.pv.kernel_mode:
            raise GuestCrash("iret to kernel mode from user mode")
        if self.domain.vm_assist & (1 << VMASST_TYPE_architectural_iopl):
            self.pv.iopl = (rflags >> 12) & 3      # Xen: the frame's IOPL becomes the virtual IOPL
            self.sync_fast_flags()
        if self.nmi_masked:
            self.nmi_masked = False             # Xen's async_exception_cleanup
            self.sync_fast_flags()
        r.rax = rax
        if flags & VGCF_in_syscall:
            r.rcx, r.r11 = rip, rflags
        else:
            r.rcx, r.r11 = rcx, r11
        vi = self.vcpu_info
        if vi is not None:
            vi.evtchn_upcall_mask = 0 if rflags & C.RFLAGS_IF else 1
        self.set_return(rip, rsp, rflags, (cs & 0xFFFF) | 3, (ss & 0xFFFF) | 3)
        return Exit.RETURNED

    def replay_pt_writes(self) -> None:
        """Make KVM see page-table entries pyxen changed in memory.

        KVM's shadow paging here never notices guest page tables written from
        the host side (bench/README.md, probe f), so the entries written since
        the last exit are written again, with the same values, by an emulated
        CPL0 stub through pyxen's direct map. The stub then returns straight
        to where the guest was meant to resume (iretq), so this costs no extra
        exit: the next KVM_RUN of the run loop runs it.

        The entries are this vCPU's own writes (mm.note_write) and those
        other vCPUs handed it (mm.publish_writes: their remote TLB flushes,
        their blocking with writes unreplayed), taken with their values
        under the domain lock, which every writer holds: a vCPU replays its
        writes before it runs guest code again, so no guest code acts on a
        write KVM has not seen."""
        self.settle_io()
        mm = self.domain.mm
        heap = self.domain.heap
        with self.domain.lock:
            gpas = mm.take_writes(self.id)
            values = [mm.read_q(g) for g in gpas]
        target = KS.Regs.from_buffer_copy(self.regs)
        target_s = KS.Sregs.from_buffer_copy(self.fetch_sregs())
        list_off = heap.apply_lists[self.id] * L.PAGE_SIZE
        list_va = L.priv(L.APPLY_LIST_OFF) + self.id * L.APPLY_LIST_STRIDE
        stub_s = KS.Sregs.from_buffer_copy(target_s)
        stub_s.cs = KS.Segment.from_buffer_copy(_HYP_CS_SEG)
        stub_s.ss = KS.Segment.from_buffer_copy(_HYP_SS_SEG)
        pairs = list(zip(gpas, values))
        chunks = [pairs[i:i + L.APPLY_MAX] for i in range(0, len(pairs), L.APPLY_MAX)]
        r = self.regs
        for n, chunk in enumerate(chunks):
            data = b"".join(_PAIR.pack(heap.directmap_va(g), v) for g, v in chunk)
            heap.mm[list_off:list_off + len(data)] = data
            r.rsi, r.rcx, r.rflags = list_va, len(chunk), 2
            self.run_struct.s.regs.sregs = stub_s
            self.run_struct.kvm_dirty_regs |= KI.KVM_SYNC_X86_REGS | KI.KVM_SYNC_X86_SREGS
            if n == len(chunks) - 1:
                break
            # more than one list's worth: replay this one and come back
            r.rip, r.rsp = L.priv(L.APPLY_OFF), heap.stack_top(self.id)
            reason = self.kvcpu.run()
            while reason == -1:
                # a kick ended KVM_RUN before or inside the stub: KVM applied
                # and stored the registers, so running again resumes the stub
                reason = self.kvcpu.run()
            if reason != KI.KVM_EXIT_IO or self.run_struct.exit.io.port != L.PORT_APPLY:
                raise GuestCrash(f"page-table replay stub failed (exit {reason})")
        if not chunks:                      # only a TLB flush to do
            r.rsi, r.rcx, r.rflags = list_va, 0, 2
            self.run_struct.s.regs.sregs = stub_s
            self.run_struct.kvm_dirty_regs |= KI.KVM_SYNC_X86_REGS | KI.KVM_SYNC_X86_SREGS
        # the last list: the guest's rdi, rsi, rcx, rax and its iretq frame go on
        # the CPL0 stack; every other register is already the guest's
        base, off = self._replay_frame
        _REPLAY_FRAME.pack_into(heap.mm, off, target.rdi, target.rsi, target.rcx, target.rax,
                                target.rip, target_s.cs.selector, target.rflags,
                                target.rsp, target_s.ss.selector)
        if len(chunks) > 1:
            # the earlier lists' stub runs changed them (one list: untouched)
            for name in ("rbx", "rdx", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
                         "r15"):
                setattr(r, name, getattr(target, name))
        stub = L.APPLY_FLUSH_OFF if self.flush_pending else L.APPLY_IRET_OFF
        self.flush_pending = False
        r.rip, r.rsp = L.priv(stub), base
        self.sregs = target_s               # what the guest runs with after the iretq
        self._sregs_valid = True
        self.in_replay = True
        self.replay_target = (target, target_s, off + 24)     # guest_registers copies

    def guest_registers(self) -> tuple[KS.Regs, KS.Sregs]:
        """Copies of the registers the guest resumes with, for a parked (or
        never run) vCPU: the run page's (which hold what pyxen changed since
        the exit), or, while a replay stub is owed, the guest's own behind
        it (the stub only replays writes a fresh VM does not need)."""
        if self.in_replay and self.replay_target is not None:
            r, s, _ = self.replay_target
            return KS.Regs.from_buffer_copy(r), KS.Sregs.from_buffer_copy(s)
        return KS.Regs.from_buffer_copy(self.regs), KS.Sregs.from_buffer_copy(self.fetch_sregs())

    def set_guest_rax(self, value: int) -> None:
        """Give a parked vCPU's guest another rax (a hypercall's result),
        behind a replay stub too."""
        if self.in_replay and self.replay_target is not None:
            r, _, off = self.replay_target
            r.rax = value
            struct.pack_into("<Q", self.domain.heap.mm, off, value)
            return
        self.regs.rax = value
        self.regs_changed()

    def crash_report(self) -> str:
        try:
            r = self.kvcpu.get_regs()
            s = self.kvcpu.get_sregs()
        except OSError:
            return f"vcpu{self.id}: registers unavailable"
        names = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                 "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
        lines = [f"vcpu{self.id} ({'kernel' if self.pv.kernel_mode else 'user'} mode) "
                 f"cs={s.cs.selector:#x} ss={s.ss.selector:#x} cr3={s.cr3:#x} cr2={s.cr2:#x}"]
        for i in range(0, len(names), 4):
            lines.append("  " + "  ".join(f"{n:>6}={getattr(r, n):016x}" for n in names[i:i + 4]))
        if self.last_hypercalls:
            lines.append("  last hypercalls: " + ", ".join(
                HYPERCALLS.get(nr, str(nr)) for nr in list(self.last_hypercalls)[-8:]))
        return "\n".join(lines)

    # --- the loop --------------------------------------------------------------
    def handle_exit(self, reason: int) -> Exit:
        """Handle one exit of KVM_RUN: reason is its exit reason (-1: ended by
        a kick), the exit data and registers are in run_struct. Does what
        the exit asks, then what is owed before the guest runs again (the
        page-table replay, with an upcall first if one is due), and says
        what the loop is to do (exits.Exit). Needs no /dev/kvm: a recorded
        exit in a fake vCPU's run_struct works the same
        (tests/hv/test_exits.py)."""
        self.in_replay = False
        self.io_owed = False            # KVM_RUN completed what the last exit owed
        self.kicked = reason == -1
        self._soft_checked = -1
        if self._rekick_asked:              # the run it was to end has ended
            self._rekick_asked = False
            self.domain.timers.arm(("rekick", self.id), None, None)
        self.exits += 1
        self._sregs_valid = False
        self._sregs_in_run = True
        if self._must_exit_asked:                   # asked for one run only
            self._must_exit_asked = False
            self.domain.heap.mm[self._fast_flags_off] &= ~FAST_MUST_EXIT
        if self._floor_published != TSLOT_NO_ANSWER:
            self.take_answered_singleshot()
        try:
            ex = self._dispatch_exit(reason)
            if ex is None:
                return Exit.RESUME      # (a hypercall from user mode: nothing owed)
            self.owed_work()
        except GuestCrash as e:
            return Exit.crash(str(e))
        if self.domain.stopped:
            return Exit.STOPPED
        return ex

    def owed_work(self) -> None:
        """What must happen before guest code runs again: the page-table
        replay of this vCPU's writes and the TLB flush asked of it (with the
        upcall first, if one is due, so the stub returns into it)."""
        if (self.flush_pending or self.domain.mm.has_writes(self.id)) and self._redirect_ok():
            if self.nmi_pending and not self.nmi_masked:
                self.deliver_nmi()              # before the stub takes over, as the upcall
            vi = self.vcpu_info
            if vi.evtchn_upcall_pending and not vi.evtchn_upcall_mask:
                self.deliver_event_upcall()     # before the stub takes over
            self.replay_pt_writes()

    def _dispatch_exit(self, reason: int) -> Exit | None:
        if reason == KI.KVM_EXIT_IO:
            io = self.run_struct.exit.io
            port = io.port
            kind = _PORT_KINDS.get(port, "other I/O")
            if kind == "syscall" and self.pv.kernel_mode:
                kind = "hypercall via syscall"
            self.exit_kinds[kind] += 1
            if port in L.PORTS_DIRECT:
                return self.handle_direct_io()
            if io.direction == KI.KVM_EXIT_IO_IN:
                return self.refuse_port_io(port)
            if port == L.PORT_HYPERCALL:
                if not self.pv.kernel_mode:
                    self.handle_hypercall()         # the #GP
                    return None
                return self.handle_hypercall()
            if port == L.PORT_TRAP:
                return self.handle_trap()
            if port == L.PORT_SYSCALL or port == L.PORT_SYSCALL32:
                return self.handle_syscall()
            if port == L.PORT_STUB_EXIT and self.fetch_sregs().cs.selector & 3 == 0:
                self.finish_fast_stub()             # as pyxen asked (must_run_on)
                return Exit.RESUME
            raise GuestCrash(f"unexpected I/O exit on port {port:#x}")
        self.exit_kinds["kick" if reason == -1 else KI.EXIT_NAMES.get(reason, "other")] += 1
        if reason == -1:
            return Exit.RESUME          # kicked: only the pending work
        if reason == KI.KVM_EXIT_SHUTDOWN:
            raise GuestCrash("triple fault (the CPU could not deliver an exception)")
        if reason == KI.KVM_EXIT_INTERNAL_ERROR:
            ie = self.run_struct.exit.internal
            data = " ".join(f"{ie.data[i]:#x}" for i in range(min(ie.ndata, 16)))
            raise GuestCrash(f"KVM internal error {ie.suberror} ({data})")
        if reason == KI.KVM_EXIT_HLT:
            raise GuestCrash("hypervisor stub halted (unexpected return into a stub)")
        raise GuestCrash(f"unexpected KVM exit {KI.EXIT_NAMES.get(reason, reason)}")

    def run(self) -> None:
        """Run this vCPU until the domain shuts down or crashes."""
        dom = self.domain
        kvcpu = self.kvcpu
        self.thread_ident = threading.get_ident()
        dom.mm.bind_writer(self.id)        # its page-table writes are its to replay
        self.native_tid = threading.get_native_id()
        self.sync_fast_flags()             # a restored or new vCPU: its mode and IOPL
        precise_sleeps()                   # blocked vCPUs wake at their own timer deadlines
        dom.sched.vcpu_started(self)        # its weight and hard affinity
        sched = dom.sched
        rs = self.run_struct
        while not dom.stopped:
            # A kick made while this thread was out of KVM_RUN (handling the
            # last exit, blocked, parked) left immediate_exit set: the next
            # KVM_RUN would return at once, an exit only to find the work
            # the kick asked for - ~2,600 of a Linux boot's exits (issue 15).
            # Every kicker sets its request first and kicks after, so cleared
            # here, each request is looked at below before KVM_RUN; a kick
            # from now on ends that KVM_RUN as before.
            kicked = rs.immediate_exit
            if kicked:
                rs.immediate_exit = 0
                if dom.stopped:
                    return
            if dom.paused and not self.must_run_on():
                self.settle_io()            # nothing owed to KVM while parked
                self.parked = True
                dom.run_gate.wait()
                self.parked = False
                continue
            if sched.throttle_until:
                sched.wait_if_throttled()
            if not self.pv.online:
                self.wake.wait()
                self.wake.clear()
                continue
            vi = self.vcpu_info
            try:
                if self.nmi_pending and not self.nmi_masked:
                    self.deliver_nmi()
                if vi.evtchn_upcall_pending and not vi.evtchn_upcall_mask:
                    self.deliver_event_upcall()
                if kicked:
                    self.owed_work()            # a remote TLB flush, writes handed over
            except GuestCrash as e:
                dom.crash(self, str(e))
                return
            self.publish_timer_floor()
            ex = self.handle_exit(kvcpu.run())
            if ex.kind == "crash":
                dom.crash(self, ex.message)
                return
            if ex.kind == "stopped":
                return
            # RESUME, RETURNED: run the guest again
