#!/usr/bin/env python3
"""pyxen benchmarks: each figure is printed with the baseline measured in the
same run, as a ratio.

  hypercall   µs per xen_version hypercall from a PV guest kernel, against the
              C floor: a bare KVM I/O-exit round trip from CPL3 (kvm_floor.c);
              then where one exit's time goes (KVM_RUN, decode and register
              sync, the handler, the run loop's resume; a KVM_RUN loop with no
              pyxen work; the handling warm)
  answers     µs per hypercall pyxen answers inside the guest: at CPL3 (the
              LSTAR stub's iret) and at CPL0 (the #BP stub's stack_switch,
              emulated by KVM instruction by instruction), against the same
              calls exiting to pyxen; what one CPL0 instruction costs here
              (whether an answer written as CPL0 code would pay on this host)
  compute     a CPU-bound loop in the PV guest kernel, against the same loop
              run natively on the host
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from pyxen.toolstack.builder import LocalServices, build_domain, close_domain  # noqa: E402
from pyxen.toolstack.domconfig import DomainConfig  # noqa: E402

NOTES = r"""
.section .note.Xen,"a",@note
.macro NOTE type, data:vararg
  .balign 4
  .long 4, 2f-1f, \type
  .asciz "Xen"
  .balign 4
1: \data
2: .balign 4
.endm
NOTE 6, .asciz "bench"
NOTE 5, .asciz "xen-3.0"
NOTE 8, .asciz "generic"
NOTE 3, .quad 0xffffffff80000000
NOTE 4, .quad 0xffffffff80000000
NOTE 1, .quad _start
NOTE 2, .quad hypercall_page
"""

GUEST = NOTES + r"""
.text
.globl _start
_start:
    mov $LOOPS_HC, %rbx
1:  test %rbx, %rbx
    jz 2f
    xor %edi, %edi
    xor %esi, %esi
    call hypercall_page + 17*32      /* xen_version(XENVER_version) */
    dec %rbx
    jmp 1b
2:  mov $LOOPS_CPU, %rcx
3:  dec %rcx
    jnz 3b
    lea reason(%rip), %rsi
    mov $2, %edi
    call hypercall_page + 29*32      /* sched_op(shutdown, poweroff) */
    ud2
.balign 4096
hypercall_page: .fill 4096,1,0
.data
reason: .long 0
"""

NATIVE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int c, char **v) {
    unsigned long n = strtoul(v[1], 0, 0);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    __asm__ volatile("1: dec %0; jnz 1b" : "+r"(n));
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
"""


def build_guest(tmp: Path, hc: int, cpu: int) -> Path:
    src = tmp / f"g_{hc}_{cpu}.S"
    src.write_text(GUEST.replace("LOOPS_HC", str(hc)).replace("LOOPS_CPU", str(cpu)))
    out = tmp / f"g_{hc}_{cpu}.elf"
    subprocess.run(["gcc", "-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none",
                    "-Wl,-Ttext=0xffffffff80001000",
                    "-Wl,--section-start=.note.Xen=0xffffffff80000800", "-o", str(out), str(src)],
                   check=True)
    return out


def run_guest(elf: Path, trace=None, **cfg) -> float:
    """Seconds the guest runs until it powers off (cfg: DomainConfig keys
    beyond the 16 MiB default; trace: Domain's trace file)."""
    conf = DomainConfig(name="bench", kernel=str(elf), **{"memory": 16, **cfg})
    dom = build_domain(conf, LocalServices(devices=False), trace=trace)
    try:
        t = time.perf_counter()
        res = dom.run()
        dt = time.perf_counter() - t
    finally:
        close_domain(dom)
    if res.reason != "poweroff":
        raise SystemExit(f"bench guest {elf.name} ({cfg}) did not power off: {res}")
    return dt


def anatomy(elf: Path, calls: int, bare_elf: Path) -> dict:
    """Where one hypercall exit's time goes, measured in place (issue 15):

    run      the KVM_RUN ioctl: ctypes, PVM's world switch both ways, the
             guest's few instructions, the exit (the C floor does the same
             with no Python around it)
    decode   handle_exit up to the handler and back: exit reason and port,
             the register views, the checks for owed work (page-table
             replay, upcall) after it
    handler  Domain.hypercall: the table, the lock, the handler, the result
    resume   the run loop between handle_exit and the next KVM_RUN
    bare     KVM_RUN of the same vCPU in a loop whose "handler" only sets rax
             (what an exit costs this process with no pyxen work at all)
    warm     handle_exit run again in a loop without KVM_RUN in between
             (pyxen's handling when caches and predictors are warm)
    sync     fetch_sregs + sregs_changed (the run page's sregs copied out
             and marked dirty, as a syscall bounce does), warm

    bench/kvm_floor.c's `cold` probe then says why in place and warm differ:
    what one exit leaves cold in the host process, per code line and per
    data line run or read first after it."""
    from pyxen.kvm import ioctls as KI
    from pyxen.hv import layout as L
    cfg = DomainConfig(name="bench", kernel=str(elf), memory=16)
    dom = build_domain(cfg, LocalServices(devices=False))
    v = dom.vcpus[0]
    run, handle, hypercall = v.kvcpu.run, v.handle_exit, dom.hypercall
    acc = {"run": 0.0, "handle": 0.0, "handler": 0.0, "n": 0}
    pc = time.perf_counter

    def timed_run():
        t = pc()
        r = run()
        acc["run"] += pc() - t
        return r

    def timed_handle(reason):
        t = pc()
        ex = handle(reason)
        acc["handle"] += pc() - t
        acc["n"] += 1
        return ex

    def timed_hypercall(*a, **k):
        t = pc()
        ret = hypercall(*a, **k)
        acc["handler"] += pc() - t
        return ret
    v.kvcpu.run, v.handle_exit, dom.hypercall = timed_run, timed_handle, timed_hypercall
    try:
        t = pc()
        dom.run()
        total = pc() - t
        del v.kvcpu.run
        v.handle_exit = handle
        del dom.hypercall
        n = min(calls, 20000)
        # sregs out of the run page and back, warm
        t = pc()
        for _ in range(n):
            v._sregs_valid = False
            v.fetch_sregs()
            v.sregs_changed()
        sync = (pc() - t) / n
        v.run_struct.kvm_dirty_regs = 0
        # the same exit handled warm: a recorded hypercall exit, no KVM_RUN between
        dom.stopped = False
        v.run_struct.exit.io.port = L.PORT_HYPERCALL
        v.run_struct.exit.io.direction = KI.KVM_EXIT_IO_OUT
        r = v.regs
        t = pc()
        for _ in range(n):
            r.rax, r.rdi = 17, 0
            handle(KI.KVM_EXIT_IO)
        warm = (pc() - t) / n
    finally:
        close_domain(dom)
    k = acc["n"]
    bare = bare_exits(bare_elf, min(calls, 20000))
    return {"run": acc["run"] / k, "decode": (acc["handle"] - acc["handler"]) / k,
            "handler": acc["handler"] / k, "handle": acc["handle"] / k, "warm": warm,
            "resume": (total - acc["run"] - acc["handle"]) / k, "bare": bare, "sync": sync}


def bare_exits(elf: Path, n: int) -> float:
    """Seconds per KVM_RUN of a pyxen vCPU whose exits are answered by the
    least Python possible (rax = 0, regs marked dirty): the guest's
    hypercall loop (elf makes at least n + 100 calls), run from a thread as
    pyxen's vCPUs are."""
    import threading
    from pyxen.kvm import ioctls as KI
    from pyxen.hv import layout as L
    cfg = DomainConfig(name="bench", kernel=str(elf), memory=16)
    dom = build_domain(cfg, LocalServices(devices=False))
    v = dom.vcpus[0]
    out = {}

    def body():
        kv, rs = v.kvcpu, v.run_struct
        regs = rs.s.regs.regs
        v.thread_ident = threading.get_ident()
        dom.mm.bind_writer(v.id)
        for _ in range(100):                 # through pyxen first: the guest set up
            v.handle_exit(kv.run())
        run, pc = kv.run, time.perf_counter
        t = pc()
        for _ in range(n):
            if run() != KI.KVM_EXIT_IO or rs.exit.io.port != L.PORT_HYPERCALL:
                raise SystemExit("bare exit loop: not the hypercall exit")
            regs.rax = 0
            rs.kvm_dirty_regs |= KI.KVM_SYNC_X86_REGS
        out["t"] = (pc() - t) / n
    try:
        th = threading.Thread(target=body)
        th.start()
        th.join()
    finally:
        close_domain(dom)
    return out["t"]


FASTPATH_ROUNDS, FASTPATH_PENDING = 20000, 200     # guests/fastpaths.c: ROUNDS, ROUNDS / PENDING_EVERY
BP_STACK_SWITCH_INSNS = 22          # xenheap.BP_FAST_STUB's stack_switch path, int3 to iretq


def in_guest_answers(repeats: int = 2) -> dict:
    """Seconds per hypercall answered inside the guest, by where pyxen's
    answer runs, and per the same call through an exit (issue 15): the
    fastpaths guest (guests/fastpaths.c) makes FASTPATH_ROUNDS of one kind,
    timed against a run that makes none (`only=none`); traced, the same
    calls all exit (Domain.traced). `iret`: back to kernel mode, answered by
    the LSTAR stub at CPL3 (FASTPATH_PENDING of them find an event pending
    and exit anyway: taken out at the traced cost). `stack`: stack_switch,
    answered by the CPL0 #BP stub, whose instructions KVM emulates one by
    one under PVM. Each figure is the best of `repeats` runs."""
    import io
    sys.path.insert(0, str(ROOT / "guests"))
    import build as guest_build
    elf = guest_build.build_guest("fastpaths")

    def timed(only: str, traced: bool) -> float:
        return min(run_guest(elf, io.StringIO() if traced else None,
                             cmdline=f"only={only}", memory=32) for _ in range(repeats))
    base, base_t = timed("none", False), timed("none", True)
    exit_iret = (timed("iret", True) - base_t) / FASTPATH_ROUNDS
    exit_stack = (timed("stack", True) - base_t) / FASTPATH_ROUNDS
    cpl3 = (timed("iret", False) - base - FASTPATH_PENDING * exit_iret) \
        / (FASTPATH_ROUNDS - FASTPATH_PENDING)
    cpl0 = (timed("stack", False) - base) / FASTPATH_ROUNDS
    return {"cpl3": cpl3, "cpl0": cpl0, "exit_iret": exit_iret, "exit_stack": exit_stack}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--loops", type=int, default=2_000_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        floor_bin = tmp / "kvm_floor"
        subprocess.run(["gcc", "-O2", "-o", str(floor_bin), str(HERE / "kvm_floor.c")], check=True)
        native_src = tmp / "native.c"
        native_src.write_text(NATIVE)
        subprocess.run(["gcc", "-O2", "-o", str(tmp / "native"), str(native_src)], check=True)

        out = subprocess.run([str(floor_bin), "exit", str(args.calls)], check=True,
                             capture_output=True, text=True).stdout
        floor_us = float(out.split("exit_us=")[1].split()[0])
        base = run_guest(build_guest(tmp, 0, 1))
        with_calls = run_guest(build_guest(tmp, args.calls, 1))
        hc_us = (with_calls - base) / args.calls * 1e6
        print(f"hypercall   pyxen {hc_us:8.2f} us/call   C KVM exit floor {floor_us:8.2f} us   "
              f"ratio {hc_us / floor_us:5.2f}x floor (target <= 1.3x)")
        a = anatomy(build_guest(tmp, args.calls, 1), args.calls,
                    build_guest(tmp, min(args.calls, 20000) + 1000, 1))
        us = {k: x * 1e6 for k, x in a.items()}
        total = us["run"] + us["handle"] + us["resume"]
        print(f"  one exit, in place ({total:6.2f} us, {total / floor_us:4.2f}x floor): "
              f"KVM_RUN {us['run']:6.2f} us ({us['run'] / floor_us:4.2f}x floor)"
              f" + decode/sync/owed work {us['decode']:5.2f} + handler {us['handler']:5.2f}"
              f" + resume (run loop) {us['resume']:5.2f} us")
        print(f"  KVM_RUN with no pyxen work between exits (rax=0 only) {us['bare']:6.2f} us/exit: "
              f"{us['bare'] / floor_us:4.2f}x floor: what this process pays for an exit before "
              f"any of pyxen's Python")
        print(f"  warm (same exit again, no KVM_RUN between): handle_exit {us['warm']:5.2f} us "
              f"(in place {us['handle']:5.2f}: {us['handle'] - us['warm']:5.2f} us are caches and "
              f"predictors cold after the world switch); sregs from the run page and back "
              f"{us['sync']:5.2f} us")

        cold = subprocess.run([str(floor_bin), "cold", "2000"], check=True,
                              capture_output=True, text=True).stdout
        code_ns = float(cold.split("code_pages=256 ")[1].split("per_page_extra_ns=")[1].split()[0])
        data_ns = float(cold.split("chase_pages=256 ")[1].split("per_page_extra_ns=")[1].split()[0])
        lost_us = us["handle"] - us["warm"]
        print(f"  what an exit leaves cold (kvm_floor cold, C): a code line first run after it "
              f"{code_ns:5.1f} ns more than warm, a data line {data_ns:4.1f} ns; pyxen's handling "
              f"in place loses {lost_us:5.2f} us to it: ~{lost_us * 1000 / code_ns:4.0f} code lines "
              f"(the floor of any Python handler here: the interpreter walks hundreds of lines "
              f"per exit)")

        ans = {k: x * 1e6 for k, x in in_guest_answers().items()}
        per_insn = (ans["cpl0"] - ans["cpl3"]) / BP_STACK_SWITCH_INSNS
        print(f"answers     in the guest (fastpaths guest, {FASTPATH_ROUNDS} calls each): iret to "
              f"kernel mode by the LSTAR stub at CPL3 {ans['cpl3']:6.2f} us/call, stack_switch by "
              f"the CPL0 #BP stub {ans['cpl0']:6.2f} us/call; the same calls through an exit to "
              f"pyxen (a traced domain) {ans['exit_iret']:6.2f} / {ans['exit_stack']:6.2f} us/call "
              f"({ans['exit_stack'] / floor_us:4.2f}x floor)")
        print(f"  CPL0 code here: ~{per_insn:4.2f} us per instruction (the #BP stub's "
              f"{BP_STACK_SWITCH_INSNS}, each emulated by KVM), so a CPL0 path of N instructions "
              f"pays against an exit only while N < ~{ans['exit_stack'] / max(per_insn, 1e-3):4.0f}")

        native = float(subprocess.run([str(tmp / "native"), str(args.loops)], check=True,
                                      capture_output=True, text=True).stdout)
        guest = run_guest(build_guest(tmp, 0, args.loops)) - base
        print(f"compute     pyxen guest kernel {guest:6.3f} s   native {native:6.3f} s   "
              f"ratio {native / guest:5.2f}x native speed (target >= 0.95x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
