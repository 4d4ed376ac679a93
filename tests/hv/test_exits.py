"""The vCPU's exit handling as values (PVVcpu.handle_exit -> exits.Exit),
fed with recorded exits on a fake KVM: no /dev/kvm. A real Domain (heap,
memory manager, hypercall table, event channels) around vCPUs whose KVM
side is a FakeKvcpu: a run_struct in ordinary memory and sregs kept in
Python. Also the per-vCPU page-table replay lists under SMP (threads)."""
from __future__ import annotations

import struct
import sys
import threading
import time

import pytest

from pyxen.hv import layout as L
from pyxen.hv.abi import HC
from pyxen.hv.domain import Domain
from pyxen.hv.exits import Exit
from pyxen.hv.hypercalls import Hypercall, build_table
from pyxen.kvm import ioctls as KI
from pyxen.kvm import structs as KS


class FakeKvcpu:
    """What PVVcpu needs of a KVM vCPU, without KVM."""

    def __init__(self, vcpu_id: int):
        self.id = vcpu_id
        self.run_struct = KS.Run()
        self._sregs = KS.Sregs()
        self.kicks = 0
        self.recorded: list[int] = []        # exit reasons run() returns

    def set_cpuid(self, entries):
        pass

    def set_msrs(self, values):
        pass

    def get_sregs(self):
        rs = self.run_struct
        if rs.kvm_dirty_regs & KI.KVM_SYNC_X86_SREGS:   # as KVM_RUN would take them
            self._sregs = KS.Sregs.from_buffer_copy(rs.s.regs.sregs)
            rs.kvm_dirty_regs &= ~KI.KVM_SYNC_X86_SREGS
        return KS.Sregs.from_buffer_copy(self._sregs)

    def set_sregs(self, s):
        self._sregs = KS.Sregs.from_buffer_copy(s)

    def get_regs(self):
        return KS.Regs.from_buffer_copy(self.run_struct.s.regs.regs)

    def set_regs(self, r):
        self.run_struct.s.regs.regs = r

    def kick(self):
        self.kicks += 1

    def tsc_khz(self):
        return 2_000_000

    def run(self):
        return self.recorded.pop(0)


class FakeVm:
    def add_memory(self, *a, **k):
        pass

    def create_vcpu(self, vcpu_id):
        return FakeKvcpu(vcpu_id)

    def close(self):
        pass


class FakeKvm:
    def create_vm(self):
        return FakeVm()

    def supported_cpuid(self):
        return []


@pytest.fixture
def dom():
    d = Domain(name="exits", memory_mb=8, vcpus=2, kvm=FakeKvm())
    d.mm.track_writes(len(d.vcpus))
    for v in d.vcpus:
        v.pv.kernel_l4 = 0x10             # a frame; no walk needs it valid
        v.pv.online = True
        s = v.fetch_sregs()
        s.cs.selector, s.ss.selector = 0xE033, 0xE02B     # FLAT_KERNEL_CS / SS
        v.kvcpu.set_sregs(s)
    try:
        yield d
    finally:
        d.timers.stop()
        d.close()


def record_io(v, port: int, **regs) -> int:
    """Put a recorded I/O exit in the vCPU's run_struct; returns the reason."""
    rs = v.run_struct
    rs.exit_reason = KI.KVM_EXIT_IO
    rs.exit.io.port = port
    rs.exit.io.direction = KI.KVM_EXIT_IO_OUT
    rs.s.regs.sregs = v.kvcpu.get_sregs()       # KVM stores them at every exit
    for name, val in regs.items():
        setattr(rs.s.regs.regs, name, val)
    return KI.KVM_EXIT_IO


def test_hypercall_exit_resumes_with_rax_set(dom):
    v = dom.vcpus[0]
    # xen_version(XENVER_version): 4.17 -> (4 << 16) | 17
    ex = v.handle_exit(record_io(v, L.PORT_HYPERCALL, rax=HC.xen_version, rdi=0, rip=0x1000))
    assert ex == Exit.RESUME
    assert v.regs.rax == (4 << 16) | 17
    assert v.run_struct.kvm_dirty_regs & KI.KVM_SYNC_X86_REGS
    assert v.exits == 1


def test_unknown_hypercall_is_enosys(dom):
    v = dom.vcpus[0]
    ex = v.handle_exit(record_io(v, L.PORT_HYPERCALL, rax=63, rip=0x1000))
    assert ex == Exit.RESUME
    assert v.regs.rax == (-38) & (1 << 64) - 1


def test_iret_returns_returned_and_keeps_the_frames_rax(dom):
    v = dom.vcpus[0]
    rsp = 0x8000
    # the frame: rax, r11, rcx, flags, rip, cs (RPL 0: kernel mode), rflags, rsp, ss
    frame = struct.pack("<9Q", 0x1234, 0, 0, 0, 0x401000, 0xE030, 0x202, 0x7000, 0xE02B)
    reads = []

    def read_struct(va, st):
        reads.append(va)
        return st.unpack(frame)
    v.mem.read_struct = read_struct
    ex = v.handle_exit(record_io(v, L.PORT_HYPERCALL, rax=HC.iret, rsp=rsp, rip=0x1000))
    assert ex == Exit.RETURNED
    assert reads == [rsp]
    r = v.regs
    assert (r.rax, r.rip, r.rsp) == (0x1234, 0x401000, 0x7000)   # not iret's result


def test_multicall_ending_in_iret_returns_returned(dom):
    v = dom.vcpus[0]
    entries = struct.pack("<QQ6Q", HC.xen_version, 0, 0, 0, 0, 0, 0, 0) + \
        struct.pack("<QQ6Q", HC.iret, 0, 0, 0, 0, 0, 0, 0)
    frame = struct.pack("<9Q", 0x55, 0, 0, 0, 0x402000, 0xE030, 0x202, 0x7000, 0xE02B)
    written = {}
    v.mem.read = lambda va, n: entries[va - 0x9000:va - 0x9000 + n]
    v.mem.write = lambda va, data: written.__setitem__(va, data)
    v.mem.read_struct = lambda va, st: st.unpack(frame)
    ex = v.handle_exit(record_io(v, L.PORT_HYPERCALL, rax=HC.multicall, rdi=0x9000, rsi=2,
                                 rip=0x1000))
    assert ex == Exit.RETURNED
    assert v.regs.rax == 0x55 and v.regs.rip == 0x402000
    assert struct.unpack("<Q", written[0x9000 + 8])[0] == (4 << 16) | 17
    assert struct.unpack("<Q", written[0x9040 + 8])[0] == 0x55


def test_hypercall_from_user_mode_is_a_gp(dom):
    v = dom.vcpus[0]
    v.pv.kernel_mode = False
    got = []
    v.inject_trap = lambda *a: got.append(a)
    ex = v.handle_exit(record_io(v, L.PORT_HYPERCALL, rax=HC.xen_version, rip=0x1002))
    assert ex == Exit.RESUME
    assert got and got[0][:3] == (13, 0, 0x1000)


def test_nm_delivery_clears_the_virtual_ts(dom):
    """Xen's do_device_not_available: the #NM it delivers to the guest
    clears the guest's virtual CR0.TS. (This host's PVM raises no #NM for
    CR0.TS, so only a recorded exit shows it here.)"""
    v = dom.vcpus[0]
    v.set_cr0_ts(True)
    heap = dom.heap
    rsp = heap.stack_top(v.id) - 7 * 8
    struct.pack_into("<7Q", heap.mm, heap.stack_offset(v.id, rsp),
                     7, 0, 0x401000, 0xE033, 0x202, 0x7000, 0xE02B)
    got = []
    v.inject_trap = lambda *a: got.append(a)
    ex = v.handle_exit(record_io(v, L.PORT_TRAP, rsp=rsp))
    assert ex == Exit.RESUME and got and got[0][:3] == (7, None, 0x401000)
    assert not v.pv.cr0_ts and not v.fetch_sregs().cr0 & 8


def test_bad_exits_crash(dom):
    v = dom.vcpus[0]
    ex = v.handle_exit(record_io(v, 0x80))
    assert ex.kind == "crash" and "port 0x80" in ex.message
    assert v.handle_exit(KI.KVM_EXIT_SHUTDOWN).kind == "crash"
    assert "stub halted" in v.handle_exit(KI.KVM_EXIT_HLT).message
    assert v.handle_exit(12345).kind == "crash"


def test_no_upcall_over_an_exception_a_kick_left_pending(dom):
    """A kick may end KVM_RUN between the guest raising an exception and KVM
    delivering it: the upcall must wait, or the exception would be delivered
    at the callback's rip. KVM hands the pending events over in the run page
    (KVM_SYNC_X86_EVENTS), as the kick left them."""
    v = dom.vcpus[0]
    v.pv.callbacks[0] = type("Cb", (), {"address": 0xFFFF800000001000, "flags": 0})()
    v.run_struct.s.regs.sregs = v.fetch_sregs()     # the guest kernel's CS, as KVM leaves it
    assert v.run_struct.kvm_valid_regs & KI.KVM_SYNC_X86_EVENTS
    for field in ("exception_pending", "exception_injected", "interrupt_injected"):
        v.handle_exit(-1)
        setattr(v.run_struct.s.regs.events, field, 1)
        assert not v.may_redirect(), field
        setattr(v.run_struct.s.regs.events, field, 0)
    v.handle_exit(-1)
    assert v.may_redirect()


def _user_desc(base: int, code: bool = True, dpl: int = 3) -> int:
    """An 8-byte 64-bit GDT descriptor (present, limit 0xfffff, 4 KiB granular)."""
    access = (1 << 7) | (dpl << 5) | (1 << 4) | (0xB if code else 0x3)
    flags = 0xA if code else 0xC             # G + L, or G + D/B
    return (0xFFFF | ((base & 0xFFFFFF) << 16) | (access << 40) | (0xF << 48)
            | (flags << 52) | ((base >> 24) << 56))


def test_returns_load_the_segment_the_descriptor_names_now(dom):
    """iret to a selector of the guest's own GDT (Linux's __USER_CS/__USER_DS):
    the segment comes from the descriptor as it is at that return (pyxen
    keeps built segments per descriptor value, not per selector), a
    descriptor that cannot be loaded there crashes the guest, and what pyxen
    keeps stays bounded however many descriptors a guest cycles through."""
    from pyxen.hv.vcpu import GuestCrash, SEGMENT_CACHE
    v = dom.vcpus[0]
    gdt = {0x33: _user_desc(0x1000), 0x2B: _user_desc(0, code=False)}
    v.descriptor = lambda sel: gdt.get(sel)
    v.set_return(0x400000, 0x7000, 0x202, 0x33, 0x2B)
    s = v.fetch_sregs()
    assert (s.cs.selector, s.cs.base, s.cs.l, s.cs.dpl, s.ss.selector, s.ss.db) == \
        (0x33, 0x1000, 1, 3, 0x2B, 1)
    gdt[0x33] = _user_desc(0x2000)
    v.set_return(0x400000, 0x7000, 0x202, 0x33, 0x2B)
    assert v.fetch_sregs().cs.base == 0x2000
    gdt[0x33] = _user_desc(0x2000, code=False)           # a data segment as CS
    with pytest.raises(GuestCrash):
        v.set_return(0x400000, 0x7000, 0x202, 0x33, 0x2B)
    gdt[0x33] = _user_desc(0x2000, dpl=0)                # not usable from CPL3
    with pytest.raises(GuestCrash):
        v.set_return(0x400000, 0x7000, 0x202, 0x33, 0x2B)
    for i in range(4 * SEGMENT_CACHE):
        gdt[0x33] = _user_desc(0x1000 * i)
        v.set_return(0x400000, 0x7000, 0x202, 0x33, 0x2B)
        assert v.fetch_sregs().cs.base == 0x1000 * i
    assert len(v._segments) <= SEGMENT_CACHE


def test_kick_resumes_and_shutdown_stops(dom):
    v = dom.vcpus[0]
    assert v.handle_exit(-1) == Exit.RESUME and v.kicked
    # SCHEDOP_shutdown(poweroff): the domain stops
    v.mem.read = lambda va, n: struct.pack("<I", 0)
    ex = v.handle_exit(record_io(v, L.PORT_HYPERCALL, rax=HC.sched_op, rdi=2, rsi=0x5000,
                                 rip=0x1000))
    assert ex == Exit.STOPPED
    assert dom.result.reason == "poweroff"


def test_run_loop_acts_on_the_values(dom):
    """The loop itself, with recorded exits: a hypercall, then a bad port."""
    v = dom.vcpus[1]
    v.vcpu_info.evtchn_upcall_mask = 1
    reasons = iter([(L.PORT_HYPERCALL, HC.xen_version), (0x99, 0)])

    def run():
        port, nr = next(reasons)
        return record_io(v, port, rax=nr, rdi=0, rip=0x1000)
    v.kvcpu.run = run
    v.run()
    assert dom.stopped and dom.result.reason == "crash"
    assert "port 0x99" in dom.result.message
    assert v.exits == 2


def test_table_policy():
    t = build_table()
    assert all(isinstance(e, Hypercall) for e in t.values())
    assert t[HC.sched_op].may_block and not t[HC.sched_op].locked
    assert not t[HC.iret].locked and not t[HC.iret].may_block
    assert not t[HC.multicall].locked
    assert t[HC.mmu_update].locked and not t[HC.mmu_update].may_block
    with pytest.raises(AssertionError):
        Hypercall(99, lambda *a: 0, locked=True, may_block=True)


def test_dispatch_honours_the_lock_policy(dom):
    v = dom.vcpus[0]
    held = {}

    def probe(name):
        def fn(vcpu, *a):
            # RLock: _is_owned() says whether this thread holds it
            held[name] = dom.lock._is_owned()
            return 0
        return fn
    dom.hypercalls[60] = Hypercall(60, probe("locked"))
    dom.hypercalls[61] = Hypercall(61, probe("unlocked"), locked=False, may_block=True)
    dom.hypercall(v, 60, 0, 0, 0, 0, 0)
    dom.hypercall(v, 61, 0, 0, 0, 0, 0)
    assert held == {"locked": True, "unlocked": False}
    # a multicall holds no lock itself: each entry is dispatched with its own
    entries = struct.pack("<QQ6Q", 60, 0, 0, 0, 0, 0, 0, 0) + \
        struct.pack("<QQ6Q", 61, 0, 0, 0, 0, 0, 0, 0)
    v.mem.read = lambda va, n: entries[va - 0x9000:va - 0x9000 + n]
    v.mem.write = lambda va, data: None
    held.clear()
    assert dom.hypercall(v, HC.multicall, 0x9000, 2, 0, 0, 0) == 0
    assert held == {"locked": True, "unlocked": False}


def _stub_list(dom, v) -> set[int]:
    """The direct-map addresses the vCPU's replay stub is set to write."""
    heap = dom.heap
    off = heap.apply_lists[v.id] * L.PAGE_SIZE
    n = v.regs.rcx
    return {struct.unpack_from("<Q", heap.mm, off + 16 * i)[0] for i in range(n)}


def test_replay_lists_are_per_vcpu_under_smp(dom):
    """Two vCPUs write page-table entries (under the domain lock, as every
    writer does) and replay before they resume, at the same time. Each
    one's replay must hold every entry it wrote since its last replay: with
    one list for the domain (mm.pending, before), the other vCPU's replay
    took them, and the writer resumed with KVM not told."""
    mm = dom.mm
    rounds = 400
    failures = []
    start = threading.Barrier(2)

    def vcpu_thread(v, base_frame):
        if hasattr(mm, "bind_writer"):
            mm.bind_writer(v.id)
        start.wait()
        for i in range(rounds):
            wrote = set()
            with dom.lock:
                for k in range(4):
                    idx = (i * 4 + k) % 512
                    mm.write_entry(base_frame, idx, (i << 12) | 1)
                    wrote.add(dom.heap.directmap_va((base_frame << 12) + idx * 8))
            # the rest of the exit (result, trace, may_redirect's ioctl) lets
            # the other vCPU's thread run before this one replays
            time.sleep(0)
            v.in_replay = False
            v.replay_pt_writes()
            missing = wrote - _stub_list(dom, v)
            if missing:
                failures.append((v.id, i, len(missing)))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        ts = [threading.Thread(target=vcpu_thread, args=(v, 0x100 + v.id)) for v in dom.vcpus]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not failures, f"{len(failures)} replays missed the vCPU's own writes: {failures[:5]}"


def test_remote_flush_and_block_hand_writes_over(dom):
    """A write one vCPU has not replayed yet reaches the others' lists when
    it flushes their TLBs or blocks; a write from a thread that runs no
    vCPU goes to every list."""
    mm = dom.mm
    v0, v1 = dom.vcpus
    done = threading.Event()

    def as_vcpu0():
        mm.bind_writer(0)
        with dom.lock:
            mm.write_entry(0x100, 1, 0x1001)
            dom.flush_tlbs(v0, all_vcpus=True)
        done.set()
    t = threading.Thread(target=as_vcpu0)
    t.start()
    t.join()
    assert mm.take_writes(1) == [(0x100 << 12) + 8] and v1.flush_pending
    assert mm.take_writes(0) == [(0x100 << 12) + 8]
    mm.write_entry(0x100, 2, 0x2001)               # this thread runs no vCPU
    assert mm.take_writes(0) == mm.take_writes(1) == [(0x100 << 12) + 16]


def test_a_fast_cpl0_stub_a_kick_interrupted_finishes_before_pyxen_acts(dom):
    """A kick can end KVM_RUN inside one of pyxen's CPL0 stubs that return to
    the guest without an exit (the #GP stub's cli/sti, a page-table replay's
    return). Before a pause parks the vCPU or an upcall goes in, the stub
    must finish: pyxen sets its must-exit flag (the stub then exits instead
    of returning, and pyxen does its iretq from the CPU's frame), or, at the
    stub's last two instructions, does the iretq itself. The flag holds for
    one run only."""
    from pyxen.hv.xenheap import (APPLY_FLUSH_STUB, FAST_MUST_EXIT, GP_FAST_STUB,
                                  fast_stub_tail)
    v = dom.vcpus[0]
    heap = dom.heap
    v.pv.callbacks[0] = type("Cb", (), {"address": 0xFFFF800000001000, "flags": 0})()
    frames = []
    v.mem.write = lambda va, data: frames.append((va, data))
    top = heap.stack_top(0)
    gdt = {0xE033: _user_desc(0), 0xE02B: _user_desc(0, code=False)}
    v.descriptor = lambda sel: gdt.get(sel)

    def kicked_at(rip, rsp):
        s = v.kvcpu.get_sregs()
        s.cs.selector, s.ss.selector = L.HYP_CS, L.HYP_DS
        v.kvcpu.set_sregs(s)
        v.run_struct.s.regs.sregs = s
        v.run_struct.s.regs.regs.rip, v.run_struct.s.regs.regs.rsp = rip, rsp
        # what the CPU pushed entering CPL0 from the guest at 0x401000
        struct.pack_into("<5Q", heap.mm, heap.stack_offset(0, top - 40), 0x401000, 0xE033,
                         0x246, 0x7000, 0xE02B)
        assert v.handle_exit(-1) == Exit.RESUME

    def flag():
        return heap.mm[heap.fast_flags_offset(0)] & FAST_MUST_EXIT

    gp_read = L.priv(L.GP_FAST_OFF) + 0x22          # mid-stub: reading the guest's opcode
    kicked_at(gp_read, top - 56)
    assert v.must_run_on() and flag()                # run on: the stub exits instead
    v.sync_fast_flags()                              # a mode change keeps the request
    assert flag()
    v.vcpu_info.evtchn_upcall_mask = 0
    v.vcpu_info.evtchn_upcall_pending = 1
    v.deliver_event_upcall()
    assert not frames                                   # nothing delivered at CPL0
    assert v.handle_exit(-1) == Exit.RESUME and not flag()     # one run only
    # the stub's exit, as asked: its registers are the guest's, the frame at %rsp
    v.must_run_on()
    tail = L.priv(L.GP_FAST_OFF) + fast_stub_tail(GP_FAST_STUB)
    ex = v.handle_exit(record_io(v, L.PORT_STUB_EXIT, rip=tail + 6, rsp=top - 40))
    assert ex == Exit.RESUME and not flag()
    assert (v.regs.rip, v.regs.rsp, v.fetch_sregs().cs.selector) == (0x401000, 0x7000, 0xE033)
    assert not v.must_run_on()                           # at CPL3: a pause may park
    v.deliver_event_upcall()
    assert v.regs.rip == 0xFFFF800000001000 and len(frames) == 1
    assert struct.unpack_from("<Q", frames[0][1], 16)[0] == 0x401000   # rcx, r11, rip...

    # at the tail's jnz or iretq, too late for the flag: pyxen does the iretq
    for off in (0, 2):
        kicked_at(L.priv(L.APPLY_FLUSH_OFF) + fast_stub_tail(APPLY_FLUSH_STUB) + off, top - 40)
        assert not v.must_run_on() and not flag()
        assert (v.regs.rip, v.regs.rsp, v.fetch_sregs().ss.selector) == (0x401000, 0x7000, 0xE02B)
    # the stub exit port from guest code (CPL3) is no request of pyxen's
    s = v.fetch_sregs()
    s.cs.selector = 0xE033
    v.sregs_changed()
    assert v.handle_exit(record_io(v, L.PORT_STUB_EXIT, rip=0x401000)).kind == "crash"


def test_no_redirect_just_past_an_int3_a_kick_may_have_interrupted(dom):
    """KVM never reports a soft exception (int3, int $3, int $4) it has yet
    to deliver, and under PVM the rip is already past the instruction: a
    kick during the delivery leaves the vCPU there with the #BP owed unseen,
    which KVM would deliver at an upcall's rip. After a kick just past such
    an instruction the upcall and a pause wait for the next exit, and a
    second kick is on its way in case nothing was owed."""
    import pyxen.hv.vcpu as vcpu_mod
    v = dom.vcpus[0]
    v.pv.callbacks[0] = type("Cb", (), {"address": 0xFFFF800000001000, "flags": 0})()
    frames = []
    v.mem.write = lambda va, data: frames.append((va, data))
    code = {0x401000: b"\x90\xcc", 0x402000: b"\xcd\x03", 0x403000: b"\xcd\x04",
            0x404000: b"\x48\x90"}
    v.mem.read = lambda va, n: code[va & ~0xFFF][(va & 0xFFF):(va & 0xFFF) + n]
    v.run_struct.s.regs.sregs = v.fetch_sregs()
    v.vcpu_info.evtchn_upcall_mask = 0
    v.vcpu_info.evtchn_upcall_pending = 1
    for page in (0x401000, 0x402000, 0x403000):
        kicks = v.kvcpu.kicks
        v.run_struct.s.regs.regs.rip = page + 2
        v.handle_exit(-1)
        assert not v.may_redirect() and v.must_run_on()
        v.deliver_event_upcall()
        assert not frames
        time.sleep(vcpu_mod.REKICK_NS * 20 / 1e9)
        assert v.kvcpu.kicks == kicks + 1                # once, however often asked
    v.run_struct.s.regs.regs.rip = 0x404000 + 2
    v.handle_exit(-1)
    assert v.may_redirect() and not v.must_run_on()
    # after any other exit (here a hypercall's) nothing is owed at such a rip
    v.run_struct.s.regs.regs.rip = 0x401000 + 2
    v.handle_exit(record_io(v, L.PORT_HYPERCALL, rax=HC.xen_version, rip=0x401000 + 2))
    v.run_struct.s.regs.regs.rip = 0x401000 + 2
    assert v.may_redirect() and not v.must_run_on()
    v.deliver_event_upcall()
    assert v.regs.rip == 0xFFFF800000001000


def test_no_upcall_inside_a_syscall_stub(dom):
    """Each vCPU's LSTAR stub reads that vCPU's mode byte. An upcall put in
    while a vCPU runs one would let the guest resume the task on another
    vCPU, inside the first vCPU's stub, with the other's mode: a user
    sched_yield (system call 24) could then get vcpu_op's -ENOENT. So a kick
    that lands in the stubs page leaves the upcall for later (the stub
    exits or returns within a few instructions), with a second kick on its
    way."""
    import pyxen.hv.vcpu as vcpu_mod
    v = dom.vcpus[1]
    v.pv.callbacks[0] = type("Cb", (), {"address": 0xFFFF800000001000, "flags": 0})()
    frames = []
    v.mem.write = lambda va, data: frames.append((va, data))
    v.mem.read = lambda va, n: b"\x90" * n
    v.run_struct.s.regs.sregs = v.fetch_sregs()
    v.vcpu_info.evtchn_upcall_mask = 0
    v.vcpu_info.evtchn_upcall_pending = 1
    kicks = v.kvcpu.kicks
    v.run_struct.s.regs.regs.rip = dom.heap.lstar(1)
    v.handle_exit(-1)
    v.deliver_event_upcall()
    assert not frames and not v.may_redirect()
    time.sleep(vcpu_mod.REKICK_NS * 20 / 1e9)
    assert v.kvcpu.kicks == kicks + 1
    v.run_struct.s.regs.regs.rip = 0x401000
    v.handle_exit(-1)
    v.deliver_event_upcall()
    assert v.regs.rip == 0xFFFF800000001000 and len(frames) == 1


def test_a_rekick_still_armed_at_the_next_exit_is_cancelled(dom):
    """rekick_soon ends a run pyxen let go on; when that run ends by itself
    first, the next exit cancels the re-kick (it would only cost an exit),
    and asking again arms a new one."""
    import pyxen.hv.vcpu as vcpu_mod
    v = dom.vcpus[1]
    v.mem.read = lambda va, n: b"\x90" * n
    v.run_struct.s.regs.sregs = v.fetch_sregs()
    v.run_struct.s.regs.regs.rip = 0x401000
    kicks = v.kvcpu.kicks
    v.handle_exit(-1)
    v.rekick_soon()
    v.rekick_soon()                     # once per exit
    v.handle_exit(-1)                   # the run ended by itself
    time.sleep(vcpu_mod.REKICK_NS * 20 / 1e9)
    assert v.kvcpu.kicks == kicks
    v.rekick_soon()
    time.sleep(vcpu_mod.REKICK_NS * 20 / 1e9)
    assert v.kvcpu.kicks == kicks + 1
