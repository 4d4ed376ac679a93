"""Reproducer for the KNOWN BUG (README, closing notes): a freshly exec'd
busybox process in a Linux guest sometimes finds its TLS block empty and
segfaults in __ctype_init (ip 0x4a4d02, `mov %fs:-0x90,%rax` reads 0).

Not a benchmark: it boots the Debian guest, starts a CPU-bound shell loop in
the background (context switches make the fault frequent: ~20-35 % of
pipelines here, against ~1 in 5 boots for the first command without it), runs
`seq 1 100 | grep 7 | wc -l` N times and counts the faults.

    .venv/bin/python bench/repro_tls_fault.py [BOOTS] [RUNS]

FIXED 2026-11-26 (0 faults in 60 pipelines; before: 19 in 60). ROOT CAUSE:
the guest kernel context-switched
FPU state with FXSAVE (pyxen's PV CPUID policy hides XSAVE, and PVM's own
supported CPUID lacks it too; dmesg: "x87 FPU will use FXSAVE"), while guest
user space reads CPUID natively (PVM does not trap it), sees AVX/AVX-512 and
the host's XCR0 (0xe7; xgetbv in the guest says so) and uses them (glibc's
memcpy). A task switch in the guest then loses the upper halves of the
vector registers: a memcpy interrupted by a switch (or by a page fault that
sleeps) stores zeros. With GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,
-AVX512F,... in the guest the fault rate drops from ~30 % to ~3 %. Setting
XCR0 = x87|SSE for the vCPU (KVM_SET_XCRS with CR4.OSXSAVE) does not help:
PVM leaves the host's XCR0 in place while the guest runs. The fix: the
guest kernel is offered XSAVE with exactly the hardware's XCR0 (its CPUID
leaf 0xd and AVX/AVX-512 bits from the real CPU, xsetbv accepted only for
that value), so its task switches save the full state. Since issue 12 the
offer is Xen's PV XSAVE policy built from the host's CPUID, and xsetbv takes
what Xen would (docs/design.md, "FPU state").

Earlier measurements: at the ARCH_SET_FS hypercall the FS base is
right and the TCB self-pointer is at the base, but the .tdata word at
base-0x90, in the same page and written earlier by glibc's memcpy of the TLS
image, reads 0 in the frame the guest's page table maps; that PTE was written
(0 -> present) only a few ms before. So the memcpy landed in another frame:
a stale guest-virtual translation used before the guest's own #PF for that
page. Not the FS selector (always 0 here); not helped by CR3 reloads after
NEW_BASEPTR / NEW_USER_BASEPTR, on every return to user mode, or on pins;
zapping all KVM shadow pages at every L1 pin makes it more frequent.
"""
from __future__ import annotations

import sys

from pyxen.build.linux_guest import prepare_linux
from pyxen.toolstack.guestshell import GuestShell


def main() -> int:
    boots = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    g = prepare_linux()
    total = 0
    for b in range(boots):
        s = GuestShell(g)
        try:
            s.settle()
            s.type("(i=0; while true; do i=$((i+1)); done) &\r")
            faults = sum(s.run("seq 1 100 | grep 7 | wc -l", timeout=60) != "19"
                         for _ in range(runs))
            print(f"boot {b}: {faults} of {runs} pipelines faulted; guest dmesg: "
                  f"{s.run('dmesg | grep -c segfault')} segfault lines", flush=True)
            total += faults
        finally:
            s.close()
    print(f"total: {total} faults in {boots * runs} pipelines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
