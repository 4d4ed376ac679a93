#!/usr/bin/env python3
"""Debian Linux on pyxen, against QEMU with TCG (pure emulation) in the same run.

  boot     create -> shell prompt: pyxen vs qemu-system-x86_64 -accel tcg, same kernel
           and initramfs, same prompt
  loop     a busybox sh arithmetic loop and a static C loop in the guest's user space:
           pyxen vs native (the same binaries on the host) vs TCG; the C loop's exits,
           and what starting it costs (`sh -c true`), so its own speed shows
  syscalls 20,000 getppid() calls and dd bs=512 through a pipe: pyxen vs native vs TCG,
           with the exits each costs
  exits    exits per boot by kind (hypercall port or syscall, trap vector, direct
           port I/O, kick) and hypercalls by number: the figures to drive down
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pyxen.build.linux_guest import prepare_linux, build_initramfs   # noqa: E402
from pyxen.hv.abi import HYPERCALLS                                     # noqa: E402
from pyxen.toolstack.guestshell import GuestShell, PROMPT               # noqa: E402
from qemu_console import Qemu                                           # noqa: E402

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int c, char **v) {
    unsigned long n = strtoul(v[1], 0, 0), x = 1;
    for (unsigned long i = 0; i < n; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    printf("%lu\n", x & 0xff);
    return 0;
}
"""
SH_LOOP = "i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done"
GETPPID_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int c, char **v) {
    unsigned long n = strtoul(v[1], 0, 0), x = 0;
    for (unsigned long i = 0; i < n; i++) x += syscall(SYS_getppid);
    printf("%lu\n", x & 1);
    return 0;
}
"""
GETPPID_N = 20000
DD_N = 10000                    # 512-byte blocks through a pipe
SYSCALL_LOADS = {"getppid": f"/bin/getppid {GETPPID_N}",
                 "dd pipe": f"dd if=/dev/zero bs=512 count={DD_N} 2>/dev/null | cat >/dev/null"}


class Images:
    def __init__(self, kernel, initrd):
        self.kernel, self.initrd = kernel, initrd


def timed_cmd(shell_run, cmd):
    """Wall time of cmd inside the guest, measured by the guest's own clock
    (busybox `time`)."""
    out = shell_run(f"time sh -c '{cmd}' 2>&1 >/dev/null")
    m = re.search(r"real\s+(\d+)m\s*([\d.]+)s", out)
    if not m:
        raise RuntimeError(f"no timing in {out!r}")
    return int(m.group(1)) * 60 + float(m.group(2))


C_PAIRS = 3                     # C loop: native and pyxen runs, interleaved


def native_c(loop_bin, c_loops):
    t = time.monotonic()
    subprocess.run([str(loop_bin), str(c_loops)], check=True, capture_output=True)
    return time.monotonic() - t


def pyxen_run(images, c_loops, loop_bin):
    t0 = time.monotonic()
    s = GuestShell(images)
    s.wait_for(PROMPT, timeout=300)
    boot = time.monotonic() - t0
    counts = dict(s.dom.hypercall_counts)
    exits = sum(v.exits for v in s.dom.vcpus)
    kinds, vectors = Counter(), Counter()
    for v in s.dom.vcpus:
        kinds.update(v.exit_kinds)
        vectors.update(v.trap_vectors)
    counts = (counts, kinds, vectors)
    s.quiet()
    sh = timed_cmd(s.run, SH_LOOP)

    def exits_now():
        return sum(v.exits for v in s.dom.vcpus)
    # the host is shared and its speed drifts: the native loop runs right
    # before each guest run (the guest idles at its prompt meanwhile), and
    # each pair gives one ratio
    pairs, loop_exits = [], 0
    for _ in range(C_PAIRS):
        n = native_c(loop_bin, c_loops)
        e0 = exits_now()
        pairs.append((n, timed_cmd(s.run, f"/bin/loop {c_loops}")))
        loop_exits += exits_now() - e0
    e1 = exits_now()
    start = timed_cmd(s.run, "true")        # the same shell start with no work
    e2 = exits_now()
    c = (pairs, loop_exits // C_PAIRS, start, e2 - e1)
    loads = {}
    for name, cmd in SYSCALL_LOADS.items():
        before = sum(v.exits for v in s.dom.vcpus)
        t = timed_cmd(s.run, cmd)
        loads[name] = (t, sum(v.exits for v in s.dom.vcpus) - before)
    s.close()
    return boot, sh, c, counts, exits, loads


def qemu_run(images, c_loops, tmp):
    t0 = time.monotonic()
    q = Qemu(images.kernel, images.initrd)
    q.wait_for(PROMPT)
    boot = time.monotonic() - t0
    q.run("stty -echo cols 4000; PS1=")
    sh = timed_cmd(q.run, SH_LOOP)
    c = timed_cmd(q.run, f"/bin/loop {c_loops}")
    loads = {name: timed_cmd(q.run, cmd) for name, cmd in SYSCALL_LOADS.items()}
    q.close()
    return boot, sh, c, loads


def native_run(busybox, loop_bin, getppid_bin, c_loops):
    t = time.monotonic()
    subprocess.run([str(busybox), "sh", "-c", SH_LOOP], check=True)
    sh = time.monotonic() - t
    c = native_c(loop_bin, c_loops)
    loads = {}
    for name, cmd in SYSCALL_LOADS.items():
        cmd = cmd.replace("/bin/getppid", str(getppid_bin))
        t = time.monotonic()
        subprocess.run([str(busybox), "sh", "-c", cmd], check=True, capture_output=True)
        loads[name] = time.monotonic() - t
    return sh, c, loads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--c-loops", type=int, default=2_000_000_000)
    ap.add_argument("--no-qemu", action="store_true")
    args = ap.parse_args()
    g = prepare_linux()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "loop.c").write_text(LOOP_C)
        loop_bin = tmp / "loop"
        subprocess.run(["gcc", "-O2", "-static", "-o", str(loop_bin), str(tmp / "loop.c")],
                       check=True)
        (tmp / "getppid.c").write_text(GETPPID_C)
        getppid_bin = tmp / "getppid"
        subprocess.run(["gcc", "-O2", "-static", "-o", str(getppid_bin),
                        str(tmp / "getppid.c")], check=True)
        initrd = tmp / "bench-initrd.gz"
        initrd.write_bytes(build_initramfs(g.busybox, extra_files={}, extra_binaries={
            "bin/loop": loop_bin.read_bytes(), "bin/getppid": getppid_bin.read_bytes()}))
        images = Images(g.kernel, initrd)
        n_sh, n_c, n_loads = native_run(g.busybox, loop_bin, getppid_bin, args.c_loops)
        p_boot, p_sh, p_c, counts, exits, p_loads = pyxen_run(images, args.c_loops, loop_bin)
        print(f"boot to shell   pyxen {p_boot:6.2f} s", end="")
        if not args.no_qemu:
            q_boot, q_sh, q_c, q_loads = qemu_run(images, args.c_loops, tmp)
            print(f"   QEMU TCG {q_boot:6.2f} s   pyxen/TCG {p_boot / q_boot:5.2f}x time "
                  f"(target < 1)")
        else:
            print()
        print(f"sh loop         pyxen {p_sh:6.3f} s   native {n_sh:6.3f} s   "
              f"ratio {n_sh / p_sh:5.2f}x native (target >= 0.9)", end="")
        print(f"   TCG {q_sh:6.3f} s" if not args.no_qemu else "")
        pairs, c_exits, p_start, start_exits = p_c
        pairs = sorted(pairs, key=lambda np: np[0] / np[1])
        ratios = [n / p for n, p in pairs]
        n_c2, p_c = pairs[len(pairs) // 2]              # the median pair
        mid = n_c2 / p_c
        print(f"C loop          pyxen {p_c:6.3f} s   native {n_c2:6.3f} s   "
              f"ratio {mid:5.2f}x native (target >= 0.95; median of {len(pairs)} interleaved "
              f"pairs: {', '.join(f'{r:.2f}' for r in ratios)})", end="")
        print(f"   TCG {q_c:6.3f} s ({n_c / q_c:5.2f}x native)" if not args.no_qemu else "")
        own = p_c - p_start
        print(f"  C loop: {c_exits} exits; `sh -c true` alone {p_start:5.3f} s and {start_exits} "
              f"exits (starting the shell and a program), so the loop's own {own:6.3f} s = "
              f"{n_c2 / own:5.2f}x native with {(c_exits - start_exits) / own:4.0f} exits/s "
              f"(timer ticks: a kick, set_singleshot_timer and iret each)")
        for name, (t, n) in p_loads.items():
            count = GETPPID_N if name == "getppid" else DD_N
            print(f"{name:<15} pyxen {t:6.3f} s   native {n_loads[name]:6.3f} s   "
                  f"ratio {n_loads[name] / t:6.3f}x native", end="")
            if not args.no_qemu:
                print(f"   TCG {q_loads[name]:6.3f} s   pyxen/TCG {t / q_loads[name]:5.2f}x time",
                      end="")
            print(f"   exits {n} ({n / count:.1f} per {'call' if name == 'getppid' else 'block'})")
        counts, kinds, vectors = counts
        print(f"exits to pyxen during boot: {exits} ({exits / 100000:4.2f}x the target of "
              f"100,000; 205,582 before issue 15)")
        print("exits during boot, by kind:")
        for kind, n in kinds.most_common():
            print(f"  {kind:<24} {n:8d}")
        print("traps (exits through the IDT stub) during boot, by vector:")
        for vec, n in vectors.most_common():
            print(f"  {vec:<24} {n:8d}")
        print("hypercalls during boot, by kind:")
        for nr, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"  {HYPERCALLS.get(nr, nr):<24} {n:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
