"""pyxen's own mini-OS guests (guests/*.c) on real KVM: each checks one
behaviour of the PV ABI and ends with a `Test result:` line."""
from __future__ import annotations

import io
import re

import pytest

import guest_helpers

GUESTS = ["hello", "console_ring", "traps", "pagetables", "usermode", "nmi"]


def boot(kvm, elf, cmdline="", memory_mb=32, trace=None):
    return guest_helpers.boot(kvm, elf, cmdline=cmdline, memory_mb=memory_mb, trace=trace)


@pytest.mark.parametrize("name", GUESTS)
def test_guest_succeeds(kvm, guest_elf, name):
    result, console = boot(kvm, guest_elf(name))
    lines = re.findall(r"^Test result: .*$", console, re.M)
    assert lines == ["Test result: SUCCESS"], console + "\n" + result.message
    assert result.reason == "poweroff", result.message


def test_absent_vcpu_op_stack_switch_and_cli_cost_no_exit(kvm, guest_elf):
    """In-guest answers (issue 15): vcpu_op on a vCPU the domain lacks,
    made with `syscall` in guest kernel mode (Linux asks VCPUOP_is_up of
    8,192 possible CPUs at boot), is -ENOENT from pyxen's LSTAR stub;
    stack_switch and set_segment_base(SEGBASE_FS) made with `syscall`
    (Linux's, at context switches) are done by the #BP stub the LSTAR stub
    enters; cli/sti where the guest's
    IOPL allows them are stepped over by the #GP stub. The usermode guest
    checks the answers, that user mode then enters the kernel on the stack
    it switched to, and that the same system calls from guest user mode
    still reach its kernel; here, that they cost no exit: the guest makes 65
    absent-vCPU calls and 2 present ones, one stack_switch through the
    hypercall page and one with `syscall`, two FS bases with `syscall` (one
    non-canonical: pyxen's -EINVAL), and the privop guest's 400
    cli/sti with IOPL 1 are not among its #GP exits."""
    with guest_helpers.domain(kvm, guest_elf("usermode")) as (dom, out):
        result = guest_helpers.run(dom, 120)
        vcpu_ops = dom.hypercall_counts.get(24, 0)
        stack_switches = dom.hypercall_counts.get(3, 0)
        segment_bases = dom.hypercall_counts.get(25, 0)
        breakpoints = dom.vcpus[0].trap_vectors[3]
    guest_helpers.assert_success(result, out.text)
    assert 2 <= vcpu_ops < 20, vcpu_ops
    assert stack_switches == 1 and breakpoints == 0, (stack_switches, breakpoints)
    # three through the hypercall page and the non-canonical FS base (pyxen's -EINVAL)
    assert segment_bases == 4, segment_bases
    with guest_helpers.domain(kvm, guest_elf("privop")) as (dom, out):
        result = guest_helpers.run(dom, 120)
        gp = dom.vcpus[0].trap_vectors[13]
    guest_helpers.assert_success(result, out.text)
    assert gp < 200, gp


def test_iret_to_kernel_mode_via_syscall_costs_no_exit(kvm, guest_elf):
    """The fastpaths guest makes 20,000 irets with `syscall` back to kernel
    mode, as Linux returns from every event upcall: the LSTAR stub answers
    them (registers and stack from the frame, the upcall mask from its IF,
    which the guest checks). The 200 that find an event pending with events
    unmasked reach pyxen, which must deliver it, and so does one onto an
    unmapped stack (the stub's writes under it fault; Xen writes nothing
    there, and neither does pyxen's own iret); no other does."""
    with guest_helpers.domain(kvm, guest_elf("fastpaths"), cmdline="only=iret") as (dom, out):
        result = guest_helpers.run(dom, 120)
        irets = dom.hypercall_counts.get(23, 0)
    guest_helpers.assert_success(result, out.text)
    assert irets == 201, irets


def test_trace_sees_the_hypercalls_the_stubs_would_answer(kvm, guest_elf):
    """With --trace, pyxen's syscall stubs answer nothing in the guest:
    each of the fastpaths guest's 20,001 irets made with `syscall` reaches
    pyxen and shows in the trace, as Xen's tracing sees every hypercall,
    and the guest's checks still pass."""
    trace = io.StringIO()
    with guest_helpers.domain(kvm, guest_elf("fastpaths"), cmdline="only=iret",
                              trace=trace) as (dom, out):
        result = guest_helpers.run(dom, 120)
        irets = dom.hypercall_counts.get(23, 0)
    guest_helpers.assert_success(result, out.text)
    assert irets == 20001, irets
    assert trace.getvalue().count(" hypercall iret(") == 20001


def test_singleshot_timer_via_syscall_answered_in_the_guest(kvm, guest_elf):
    """VCPUOP_set_singleshot_timer made with `syscall` in guest kernel mode
    (Linux's, in every timer tick): the fastpaths guest (only=timer) checks
    Xen's semantics (-EFAULT, -ETIME, a second deadline replacing the
    first, a deadline set before a spin with no exit still firing, 300
    deadlines 1 ms out each firing once, never early); most of those calls
    never reach pyxen: the LSTAR stub leaves the deadline for the vCPU's
    next exit."""
    with guest_helpers.domain(kvm, guest_elf("fastpaths"), cmdline="only=timer") as (dom, out):
        result = guest_helpers.run(dom, 120)
        vcpu_ops = dom.hypercall_counts.get(24, 0)
    guest_helpers.assert_success(result, out.text)
    assert vcpu_ops < 150, vcpu_ops


@pytest.mark.parametrize("guest,cmdline", [("privop", "clisti=40000"), ("fastpaths", "")])
def test_pauses_never_park_a_vcpu_inside_pyxens_cpl0_stubs(kvm, guest_elf, guest, cmdline):
    """The privop guest's cli/sti loop (clisti=) spends most of its time in
    pyxen's #GP stub at CPL0, the fastpaths guest (20,000 rounds of
    stack_switch and an FS base made with `syscall`) in its #BP stub; both
    answer and return to the guest without an exit. This test pauses and
    unpauses the guest meanwhile: every pause finds the vCPU at CPL3, in
    the guest's code or pyxen's LSTAR stub (which runs at CPL3 here), never
    in pyxen's CPL0 state, which no save could restore (the stub is told to
    exit, and pyxen does its return: PVVcpu.must_run_on). Some pauses land
    in the stub, and the guest's checks all pass."""
    import threading
    import time
    from pyxen.hv import layout as L
    with guest_helpers.domain(kvm, guest_elf(guest), cmdline=cmdline) as (dom, out):
        holder = {}
        t = threading.Thread(target=lambda: holder.setdefault("r", guest_helpers.run(dom, 120)))
        t.start()
        seen = []
        while t.is_alive() and len(seen) < 300:
            dom.pause()
            if dom.wait_parked(10):
                regs, sregs = dom.vcpus[0].guest_registers()
                seen.append((sregs.cs.selector, regs.rip))
            dom.unpause()
            time.sleep(0.003)               # the guest runs on between pauses
        t.join(120)
        stub_exits = dom.vcpus[0].exit_kinds["fast stub asked to exit"]
    guest_helpers.assert_success(holder["r"], out.text)
    assert len(seen) > 20, "the guest ended too soon"
    cpl0_code = [(L.priv(L.STUBS_OFF), L.priv(L.STUBS_OFF) + L.PAGE_SIZE),
                 (L.priv(L.APPLY_OFF), L.priv(L.APPLY_OFF) + L.PAGE_SIZE)]
    at_cpl0 = [(hex(cs), hex(rip)) for cs, rip in seen
               if cs & 3 == 0 or any(a <= rip < b for a, b in cpl0_code)]
    assert not at_cpl0, at_cpl0[:5]
    assert stub_exits > 0, f"no pause of {len(seen)} landed in the stub"


@pytest.mark.parametrize("guest,cmdline", [("traps", "int3s=20000"), ("fastpaths", "")])
def test_kicks_with_a_flush_owed_never_move_a_vcpu_under_an_owed_int3(kvm, guest_elf, guest,
                                                                     cmdline):
    """A kick that ends KVM_RUN while PVM delivers an int3's #BP leaves the
    vCPU just past the int3 with the #BP still owed and no event to show
    it: a page-table replay stub (or an upcall) put in then would get the
    #BP at its own rip, a crash at CPL0. The traps guest takes 20,000 int3s
    of its own, the fastpaths guest makes 40,000 calls through the LSTAR
    stub's int3, while vCPU 0 is kicked every 0.3 ms with a TLB flush owed;
    every int3 reaches its handler once, and the guest finishes."""
    import threading
    import time
    with guest_helpers.domain(kvm, guest_elf(guest), cmdline=cmdline) as (dom, out):
        holder = {}
        t = threading.Thread(target=lambda: holder.setdefault("r", guest_helpers.run(dom, 120)))
        t.start()
        v = dom.vcpus[0]
        kicks = 0
        while t.is_alive():
            v.flush_pending = True
            v.kvcpu.kick()
            kicks += 1
            time.sleep(0.0003)
        t.join()
    guest_helpers.assert_success(holder["r"], out.text)
    assert kicks > 100, kicks


def test_guest_handle_is_the_configs_uuid(kvm, guest_elf):
    """XENVER_guest_handle gives the guest the uuid= of its config (as
    `pyxen list -v` shows it), not one of pyxen's own."""
    uuid = "5f3c2a10-9e8b-4d7c-a1b2-0123456789ab"
    result, console = guest_helpers.boot(kvm, guest_elf("hello"), uuid=uuid)
    assert f"guest handle = {uuid}" in console, console + result.message


def test_console_ring_output_reaches_the_console(kvm, guest_elf):
    _, console = boot(kvm, guest_elf("console_ring"))
    assert "console ring works" in console


@pytest.mark.parametrize("reason", ["poweroff", "reboot", "suspend", "crash", "watchdog"])
def test_shutdown_reasons(kvm, guest_elf, reason):
    result, console = boot(kvm, guest_elf("shutdown"), cmdline=f"reason={reason}")
    assert result.reason == reason, console


def test_trace_records_hypercalls_and_traps(kvm, guest_elf):
    trace = io.StringIO()
    boot(kvm, guest_elf("traps"), trace=trace)
    text = trace.getvalue()
    assert "hypercall set_trap_table" in text
    assert "trap #UD" in text and "trap #BP" in text and "pf cr2=" in text


def test_guest_without_trap_handler_is_crashed_with_diagnostics(kvm, tmp_path):
    """A trap with no handler crashes the domain (not pyxen) with the registers."""
    import subprocess
    src = tmp_path / "bad.S"
    src.write_text(NOTES + """
.text
.globl _start
_start:
    ud2
.balign 4096
hypercall_page: .fill 4096,1,0
""")
    elf = tmp_path / "bad.elf"
    subprocess.run(["gcc", "-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none",
                    "-Wl,-Ttext=0xffffffff80001000",
                    "-Wl,--section-start=.note.Xen=0xffffffff80000800", "-o", str(elf), str(src)],
                   check=True)
    result, _ = boot(kvm, elf)
    assert result.reason == "crash"
    assert "#UD" in result.message and "no handler" in result.message
    assert "rip=" in result.message


NOTES = """
.section .note.Xen,"a",@note
.macro NOTE type, data:vararg
  .balign 4
  .long 4, 2f-1f, \\type
  .asciz "Xen"
  .balign 4
1: \\data
2: .balign 4
.endm
NOTE 6, .asciz "test"
NOTE 5, .asciz "xen-3.0"
NOTE 8, .asciz "generic"
NOTE 3, .quad 0xffffffff80000000
NOTE 4, .quad 0xffffffff80000000
NOTE 1, .quad _start
NOTE 2, .quad hypercall_page
"""


def test_events_timers_and_time(kvm, guest_elf):
    result, console = boot(kvm, guest_elf("events"))
    assert re.findall(r"^Test result: .*$", console, re.M) == ["Test result: SUCCESS"], \
        console + "\n" + result.message


def test_smp_second_vcpu(kvm, guest_elf):
    result, console = guest_helpers.boot(kvm, guest_elf("smp"), vcpus=2)
    assert re.findall(r"^Test result: .*$", console, re.M) == ["Test result: SUCCESS"], \
        console + "\n" + result.message


def test_fifo_event_channels(kvm, guest_elf):
    result, console = boot(kvm, guest_elf("fifo"))
    assert re.findall(r"^Test result: .*$", console, re.M) == ["Test result: SUCCESS"], \
        console + "\n" + result.message


def test_grant_tables(kvm, guest_elf):
    result, console = boot(kvm, guest_elf("grants"), cmdline="domid=1")
    assert re.findall(r"^Test result: .*$", console, re.M) == ["Test result: SUCCESS"], \
        console + "\n" + result.message


def test_console_survives_a_full_disk(kvm, guest_elf):
    """Console logging to a full disk (here /dev/full) is dropped, the console is not."""
    from pyxen.dom0.console import ConsoleBackend
    page = bytearray(4096)
    seen = bytearray()
    cb = ConsoleBackend(memoryview(page), lambda: None, sink=seen.extend, log_path="/dev/full")
    msg = b"hello despite ENOSPC\n"
    page[1024:1024 + len(msg)] = msg
    page[3084:3088] = len(msg).to_bytes(4, "little")          # out_prod
    cb.on_notify()
    assert bytes(seen) == msg
    assert cb.log is None and "No space" in cb.log_error
    cb.close()
