#!/usr/bin/env python3
"""pyxen benchmarks: each figure is printed with the baseline measured in the
same run, as a ratio.

  hypercall   µs per xen_version hypercall from a PV guest kernel, against the
              C floor: a bare KVM I/O-exit round trip from CPL3 (kvm_floor.c);
              then where one exit's time goes (KVM_RUN, pyxen's handling in
              place and warm, the run loop)
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


def run_guest(elf: Path) -> float:
    cfg = DomainConfig(name="bench", kernel=str(elf), memory=16)
    dom = build_domain(cfg, LocalServices(devices=False))
    try:
        t = time.perf_counter()
        res = dom.run()
        dt = time.perf_counter() - t
    finally:
        close_domain(dom)
    if res.reason != "poweroff":
        raise SystemExit(f"bench guest did not power off: {res}")
    return dt


def anatomy(elf: Path, calls: int) -> dict:
    """Where one hypercall exit's time goes, measured in place: the KVM_RUN
    ioctl (guest entry, the guest's few instructions, the exit: PVM's part
    plus ctypes), pyxen's handling of the exit as it runs right after it
    (handle_exit), and the same handling run again warm, in a loop without
    KVM_RUN in between (what the Python costs when caches and branch
    predictors are not cold from the world switch)."""
    from pyxen.kvm import ioctls as KI
    from pyxen.hv import layout as L
    cfg = DomainConfig(name="bench", kernel=str(elf), memory=16)
    dom = build_domain(cfg, LocalServices(devices=False))
    v = dom.vcpus[0]
    run, handle = v.kvcpu.run, v.handle_exit
    acc = {"run": 0.0, "handle": 0.0, "n": 0}

    def timed_run():
        t = time.perf_counter()
        r = run()
        acc["run"] += time.perf_counter() - t
        return r

    def timed_handle(reason):
        t = time.perf_counter()
        ex = handle(reason)
        acc["handle"] += time.perf_counter() - t
        acc["n"] += 1
        return ex
    v.kvcpu.run, v.handle_exit = timed_run, timed_handle
    try:
        t = time.perf_counter()
        dom.run()
        total = time.perf_counter() - t
        # the same exit handled warm: a recorded hypercall exit, no KVM_RUN between
        del v.kvcpu.run
        v.handle_exit = handle
        dom.stopped = False
        v.run_struct.exit.io.port = L.PORT_HYPERCALL
        v.run_struct.exit.io.direction = KI.KVM_EXIT_IO_OUT
        r = v.regs
        n = min(calls, 20000)
        t = time.perf_counter()
        for _ in range(n):
            r.rax, r.rdi = 17, 0
            handle(KI.KVM_EXIT_IO)
        warm = (time.perf_counter() - t) / n
    finally:
        close_domain(dom)
    k = acc["n"]
    return {"run": acc["run"] / k, "handle": acc["handle"] / k, "warm": warm,
            "loop": (total - acc["run"] - acc["handle"]) / k}


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
        a = anatomy(build_guest(tmp, args.calls, 1), args.calls)
        us = {k: x * 1e6 for k, x in a.items()}
        print(f"  one exit, in place: KVM_RUN {us['run']:6.2f} us ({us['run'] / floor_us:4.2f}x floor)"
              f" + handle_exit {us['handle']:6.2f} us + run loop {us['loop']:5.2f} us")
        print(f"  handle_exit warm (same exit, no KVM_RUN between) {us['warm']:5.2f} us: "
              f"{us['handle'] - us['warm']:5.2f} us of each exit's handling is cold caches and "
              f"predictors after the world switch")

        native = float(subprocess.run([str(tmp / "native"), str(args.loops)], check=True,
                                      capture_output=True, text=True).stdout)
        guest = run_guest(build_guest(tmp, 0, args.loops)) - base
        print(f"compute     pyxen guest kernel {guest:6.3f} s   native {native:6.3f} s   "
              f"ratio {native / guest:5.2f}x native speed (target >= 0.95x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
