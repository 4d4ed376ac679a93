"""Runs the hypercall fuzzer (guests/fuzz.c) and judges what it saw.

One run is one domain (2 vCPUs, built as `pyxen create` builds it: builder.build_domain,
instruction emulation, console backend, in-process xenstored) in a child
process, so that a pyxen crash, a hang or a leak cannot take the caller down
and the child's memory can be measured. The run fails when:

- the domain did not end with poweroff and "Test result: SUCCESS" (the fuzzer
  only crashes itself on purpose for what it sees of its own integrity);
- pyxen logged an internal error or a Python traceback (the hypervisor turns
  exceptions in hypercalls and emulation into a domain crash saying "internal
  error"; that must never happen);
- it did not finish within its timeout (a hang);
- the domain process's memory kept growing (RSS in the second half of the
  run more than LEAK_MB above the first half's peak) or went past RSS_LIMIT_MB;
- a hypercall returned something Xen could not: a negative value outside
  Xen's errno list (xen/include/public/errno.h), an errno not in the small
  table of plausible ones for that hypercall (ERRNOS), or a positive value
  where Xen returns only 0 or -errno (POSITIVE);
- the page tables the domain left behind hold an entry pyxen's own rules
  would refuse (audit_mm).

`./dev fuzz SECONDS [SEED]` runs domains one after another (seeds SEED,
SEED+1, ...; 100k calls per vCPU each) until SECONDS are used up, and prints
calls/s, the distinct (hypercall, sub-op, result) paths hit and the seed of
every run that failed.

    python tests/hv/fuzz_driver.py SECONDS [SEED]        # what ./dev fuzz runs
    python tests/hv/fuzz_driver.py --once SEED CALLS     # one run, its report
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Xen's errno values (xen/include/public/errno.h of Xen 4.17)
XEN_ERRNOS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23, 24,
              28, 30, 31, 33, 34, 35, 36, 37, 38, 39, 61, 62, 74, 75, 84, 85, 88, 90, 95, 98, 99,
              105, 106, 107, 110, 111}

EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO, E2BIG = 1, 2, 3, 4, 5, 6, 7
EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST, EXDEV, ENODEV = 11, 12, 13, 14, 16, 17, 18, 19
EINVAL, ENOSPC, ERANGE, ENOSYS, ENODATA, ETIME, EILSEQ = 22, 28, 34, 38, 61, 62, 84
EOPNOTSUPP, ENOBUFS = 95, 105

# The errnos Xen 4.17 can give a 64-bit PV domU for each hypercall (from its
# sources; generous where a path is deep, never an errno Xen has no path to).
_COMMON = {EINVAL, EFAULT, ENOSYS, EPERM}
ERRNOS: dict[int, set[int]] = {
    0: {EFAULT, EINVAL},                                       # set_trap_table
    1: {EINVAL, EFAULT, ESRCH, EPERM, ENOMEM, EBUSY, ENOSYS, EOPNOTSUPP, EEXIST, EAGAIN},
    2: {EINVAL, EFAULT, EBUSY},                                # set_gdt
    3: set(),                                                  # stack_switch
    4: {EINVAL},                                               # set_callbacks
    5: set(),                                                  # fpu_taskswitch
    6: {ENOSYS, EINVAL, EFAULT},                               # sched_op_compat
    7: {EPERM, EACCES, EFAULT},                                # platform_op
    8: {EPERM, EINVAL, ENODEV},                                # set_debugreg
    10: {EINVAL, EBUSY},                                       # update_descriptor
    12: {EINVAL, EFAULT, EPERM, ESRCH, ENOSYS, EOPNOTSUPP, ENOMEM, EBUSY, ENOENT, EACCES,
         EXDEV, E2BIG, ENODEV, EAGAIN, ENXIO},                 # memory_op
    13: {EFAULT, EINVAL},                                      # multicall
    14: {EINVAL, EFAULT, EPERM, EBUSY, ENOMEM},                # update_va_mapping
    15: {EINVAL},                                              # set_timer_op
    16: {EINVAL, EFAULT, EPERM, ESRCH, ENOENT, ENOSPC, EEXIST, EBUSY, ENOSYS, EOPNOTSUPP,
         ENOMEM, EACCES, EAGAIN},                              # event_channel_op_compat
    17: {EFAULT, ENOSYS, EINVAL, EPERM, ENODATA, ENOBUFS},     # xen_version
    18: {EINVAL, EFAULT, ENOSYS, EPERM},                       # console_io
    19: {EINVAL, EFAULT, EPERM, ENOSYS, ESRCH, ENOENT, EEXIST, EBUSY, ENOSPC, ENODEV,
         EOPNOTSUPP, ENXIO},                                   # physdev_op_compat
    20: {EINVAL, EFAULT, ENOSYS, EOPNOTSUPP, EPERM, ESRCH, EBUSY, ERANGE, EAGAIN, ENOMEM,
         EILSEQ, ENOSPC},                                      # grant_table_op
    21: {EINVAL, ENOSYS},                                      # vm_assist
    22: {EINVAL, EFAULT, EPERM, EBUSY, ENOMEM, ESRCH},         # update_va_mapping_otherdomain
    24: {EINVAL, EFAULT, ENOENT, EEXIST, ENOSYS, EPERM, ETIME, EBUSY, EOPNOTSUPP, ENOMEM,
         ENXIO},                                               # vcpu_op
    25: {EINVAL, EFAULT},                                      # set_segment_base
    26: {EINVAL, EFAULT, ESRCH, EPERM, ENOSYS, EOPNOTSUPP, EBUSY, ENOMEM, EEXIST, EAGAIN},
    27: {ENOSYS, EPERM, EFAULT, EINVAL},                       # xsm_op
    28: {ENOSYS, EINVAL, EBUSY, EPERM},                        # nmi_op
    29: {EINVAL, EFAULT, EPERM, ENOSYS, ESRCH, ENOSPC},        # sched_op
    30: {EINVAL, EFAULT, ENOSYS},                              # callback_op
    31: {ENOSYS, EPERM, EINVAL, EFAULT},                       # xenoprof_op
    32: {EINVAL, EFAULT, EPERM, ESRCH, ENOENT, ENOSPC, EEXIST, EBUSY, ENOSYS, EOPNOTSUPP,
         ENOMEM, EACCES, EAGAIN},                              # event_channel_op
    33: {EINVAL, EFAULT, EPERM, ENOSYS, ESRCH, ENOENT, EEXIST, EBUSY, ENOSPC, ENODEV,
         EOPNOTSUPP, ENXIO},                                   # physdev_op
    34: {ENOSYS, EINVAL, EPERM, EFAULT, ESRCH, EOPNOTSUPP},    # hvm_op
    35: {EPERM, EACCES, EFAULT},                               # sysctl
    36: {EPERM, EACCES, EFAULT},                               # domctl
    37: {EPERM, ENOSYS, EINVAL, EFAULT},                       # kexec_op
    38: {ENOSYS, EOPNOTSUPP},                                  # tmem_op
    39: {ENOSYS, EOPNOTSUPP, EPERM},                           # argo_op
    40: {EOPNOTSUPP, ENOSYS, EINVAL, EFAULT, EPERM},           # xenpmu_op
    41: {EPERM, ESRCH, EFAULT, EINVAL, ENOSYS, E2BIG},         # dm_op
    42: {EPERM, ENOSYS, EINVAL, EFAULT, ENOENT, EACCES, ENOBUFS},   # hypfs_op
    48: {EPERM, ENOSYS, EINVAL, EFAULT},                       # mca
    49: {EPERM, ENOSYS, EFAULT},                               # paging_domctl_cont
}
# every other number (11, 43-47, 50-127 and anything through syscall): -ENOSYS
NOT_A_HYPERCALL = {ENOSYS}

# (hypercall, sub-op) that may return a positive value in Xen; sub None: any
POSITIVE = {
    (9, None),                               # get_debugreg: the register
    (12, 0), (12, 1), (12, 2), (12, 3), (12, 4), (12, 6), (12, 14),   # extents done, sizes
    (17, 0), (17, 7), (17, 10),              # xen_version: version, page size, build-id length
    (18, 1),                                 # console_io read (dom0)
    (24, 3),                                 # vcpu_op is_up
    (29, 6),                                 # watchdog id
}

# Operations Xen 4.17 has for a 64-bit PV domU where pyxen answers -ENOSYS
# (a difference the fuzzer shows, not a failure: `./dev fuzz` lists those it
# hit). (hypercall, sub-op or None for all): what Xen does instead.
XEN_HAS = {
    (6, 0): "sched_op_compat SCHEDOP_yield (Xen: 0)",
    (12, 7): "XENMEM_add_to_physmap", (12, 11): "XENMEM_exchange",
    (12, 13): "XENMEM_set_memory_map (Xen: -EPERM)", (12, 15): "XENMEM_remove_from_physmap",
    (12, 16): "XENMEM_set_pod_target (Xen: -EPERM)", (12, 17): "XENMEM_get_pod_target (Xen: -EPERM)",
    (12, 23): "XENMEM_add_to_physmap_batch", (12, 24): "XENMEM_claim_pages (Xen: -EPERM)",
    (12, 27): "XENMEM_reserved_device_memory_map", (12, 28): "XENMEM_acquire_resource",
    (16, None): "event_channel_op_compat (Xen: event_channel_op on the copied op)",
    (19, None): "physdev_op_compat (Xen: physdev_op on the copied op)",
    (20, 3): "GNTTABOP_dump_table (Xen: 0, dumps to its console)",
    (24, 11): "VCPUOP_send_nmi (Xen: 0, an NMI to the vCPU)",
    (28, 0): "XENNMI_register_callback", (28, 1): "XENNMI_unregister_callback",
    (29, 6): "SCHEDOP_watchdog", (37, None): "kexec_op (Xen: -EPERM for a domU)",
    (42, None): "hypfs_op (Xen: -EPERM for a domU)", (48, None): "mca (Xen: -EPERM for a domU)",
}


def xen_has(paths) -> list[str]:
    """The XEN_HAS operations these paths got -ENOSYS for."""
    out = set()
    for p in paths:
        if p.res != "-38":
            continue
        what = XEN_HAS.get((p.nr, p.sub)) or XEN_HAS.get((p.nr, None))
        if what and (p.nr, None) in XEN_HAS and p.nr in (16, 19) and (p.sub is None or p.sub > 13):
            continue                      # compat ops: only the sub-ops Xen knows count
        if what:
            sub = "*" if (p.nr, None) in XEN_HAS else "-" if p.sub is None else p.sub
            out.add(f"{NAMES.get(p.nr, p.nr)}({p.nr}).{sub}: {what}")
    return sorted(out)


LEAK_MB = 48          # RSS the second half of a run may add to the first half's peak
RSS_LIMIT_MB = 700    # a domain process of a 64 MiB guest is far below this
DEFAULT_MEMORY_MB = 64
NAMES = {0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch",
         4: "set_callbacks", 5: "fpu_taskswitch", 6: "sched_op_compat", 7: "platform_op",
         8: "set_debugreg", 9: "get_debugreg", 10: "update_descriptor", 12: "memory_op",
         13: "multicall", 14: "update_va_mapping", 15: "set_timer_op",
         16: "event_channel_op_compat", 17: "xen_version", 18: "console_io",
         19: "physdev_op_compat", 20: "grant_table_op", 21: "vm_assist",
         22: "update_va_mapping_otherdomain", 23: "iret", 24: "vcpu_op", 25: "set_segment_base",
         26: "mmuext_op", 27: "xsm_op", 28: "nmi_op", 29: "sched_op", 30: "callback_op",
         31: "xenoprof_op", 32: "event_channel_op", 33: "physdev_op", 34: "hvm_op",
         35: "sysctl", 36: "domctl", 37: "kexec_op", 38: "tmem_op", 39: "argo_op",
         40: "xenpmu_op", 41: "dm_op", 42: "hypfs_op", 128: "syscall>=128",
         129: "grant-op-status", 130: "port-io", 48: "mca", 49: "paging_domctl_cont"}

_TOKEN = re.compile(r"(\d+)\.(-|x|\d+)(h?)=(0|\+|g|i|-\d+)x(\d+)")


@dataclass(frozen=True)
class Path_:
    nr: int
    sub: int | None        # None: no sub-op; 64: 64 or more
    hi: bool               # the int command had garbage in bits 32-63
    res: str               # "0", "+", "g", "i" or "-errno"

    def __str__(self) -> str:
        sub = "-" if self.sub is None else str(self.sub)
        return f"{NAMES.get(self.nr, self.nr)}({self.nr}).{sub}{'h' if self.hi else ''} -> {self.res}"


def parse_paths(console: str) -> dict[Path_, int]:
    paths: dict[Path_, int] = {}
    for line in console.splitlines():
        if not line.startswith("paths:"):
            continue
        for m in _TOKEN.finditer(line):
            nr, sub, hi, res, count = m.groups()
            key = Path_(int(nr), None if sub == "-" else 64 if sub == "x" else int(sub),
                        hi == "h", res)
            paths[key] = paths.get(key, 0) + int(count)
    return paths


def judge_result(p: Path_) -> str | None:
    """Why Xen could not have returned this, or None."""
    if p.res in ("0", "i"):
        return None
    if p.nr == 130:                           # port I/O: returned, or trapped ("g")
        return None
    if p.nr == 129:                           # a grant operation's GNTST_* status
        return None if p.res.startswith("-") and -13 <= int(p.res) < 0 else "no GNTST_* status"
    if p.nr == 9:
        return None                           # a debug register's value is anything
    if p.res == "g":
        return "a negative value that is no errno"
    if p.res == "+":
        if p.nr == 12 and p.hi:
            return None                       # memory_op with a start extent returns it
        if (p.nr, p.sub) in POSITIVE or (p.nr, None) in POSITIVE:
            return None
        return "a positive value where Xen returns 0 or -errno"
    e = -int(p.res)
    if e not in XEN_ERRNOS:
        return f"-{e} is not one of Xen's errnos"
    allowed = ERRNOS.get(p.nr, NOT_A_HYPERCALL) if p.nr < 128 else NOT_A_HYPERCALL
    if e not in allowed:
        return f"-{e} is not an errno Xen gives for this hypercall"
    return None


@dataclass
class FuzzRun:
    seed: int
    calls: int
    console: str = ""
    log: str = ""
    reason: str = ""
    message: str = ""
    returncode: int | None = None
    timed_out: bool = False
    elapsed: float = 0.0
    rss: list[tuple[float, int]] = field(default_factory=list)    # (seconds, KiB)
    audit: list[str] = field(default_factory=list)
    paths: dict[Path_, int] = field(default_factory=dict)

    @property
    def total_calls(self) -> int:
        m = re.search(r"^summary: .*? calls=(\d+)", self.console, re.M)
        return int(m.group(1)) if m else 0

    def problems(self) -> list[str]:
        out = []
        if self.timed_out:
            out.append(f"no end after {self.elapsed:.0f} s (a hang); last console lines:\n"
                       + "\n".join(self.console.splitlines()[-5:]))
        if self.returncode not in (0, None) and not self.timed_out:
            out.append(f"the domain process exited with {self.returncode}")
        if self.reason and self.reason != "poweroff":
            out.append(f"the domain ended with {self.reason}: {self.message}")
        results = re.findall(r"^Test result: .*$", self.console, re.M)
        if results != ["Test result: SUCCESS"] and not self.timed_out:
            # with what the fuzzer printed about it
            said = [l for l in self.console.splitlines()
                    if l.startswith(("fuzz: text", "fuzz: unexpected", "  call:", "  r8=",
                                     "Unexpected", "  rax="))]
            out.append(f"the fuzzer reported {results or 'nothing'}"
                       + "".join("\n    " + l for l in said[:24]))
        for needle in ("internal error", "Traceback", "Exception in thread"):
            for text, where in ((self.log, "pyxen's log"), (self.message, "the crash message"),
                                (self.console, "the console")):
                if needle in text:
                    i = text.index(needle)
                    out.append(f"{needle!r} in {where}:\n{text[max(0, i - 200):i + 1500]}")
                    break
        out += self.rss_problems()
        out += [f"page tables: {a}" for a in self.audit]
        for p, n in sorted(self.paths.items(), key=lambda kv: (kv[0].nr, str(kv[0]))):
            why = judge_result(p)
            if why:
                out.append(f"{p} ({n}x): {why}")
        return out

    def rss_problems(self) -> list[str]:
        if not self.rss:
            return []
        peak = max(k for _, k in self.rss) // 1024
        out = []
        if peak > RSS_LIMIT_MB:
            out.append(f"the domain process reached {peak} MiB RSS (limit {RSS_LIMIT_MB})")
        if len(self.rss) >= 8:
            half = len(self.rss) // 2
            first = max(k for _, k in self.rss[:half]) // 1024
            second = max(k for _, k in self.rss[half:]) // 1024
            if second > first + LEAK_MB:
                out.append(f"the domain process kept growing: {first} MiB peak in the first half "
                           f"of the run, {second} MiB in the second")
        return out


# --- the child: one domain ------------------------------------------------------------
def audit_mm(dom) -> list[str]:
    """Entries of the domain's validated page tables that pyxen's own rules
    would refuse (a hypercall that wrote past validation)."""
    from pyxen.hv import layout as L
    from pyxen.hv.mm import L1_BAD, L2_BAD, L4_BAD, PGT_WRITABLE
    mm = dom.mm
    out = []
    for mfn in range(mm.nr_pages):
        count, t = mm.tcount[mfn], mm.ptype[mfn]
        if count < 0:
            out.append(f"frame {mfn:#x}: type count {count}")
        if count <= 0 or not 1 <= t <= 4:
            continue
        for i, e in enumerate(mm.entries(mfn)):
            if not e & L.PTE_P or (t == 4 and L.RESERVED_L4_FIRST <= i <= L.RESERVED_L4_LAST):
                continue
            target = (e & L.PTE_ADDR_MASK) >> 12
            where = f"L{t} {mfn:#x}[{i}] = {e:#x}"
            if t == 1:
                if e & L1_BAD:
                    out.append(f"{where}: reserved bits")
                elif target in mm.shared_rw:
                    pass
                elif target in mm.shared_ro:
                    if e & L.PTE_RW:
                        out.append(f"{where}: writable mapping of a read-only frame")
                elif not 0 <= target < mm.nr_pages:
                    out.append(f"{where}: maps a frame that is not the domain's")
                elif e & L.PTE_RW and not (mm.ptype[target] == PGT_WRITABLE
                                           and mm.tcount[target] > 0):
                    out.append(f"{where}: writable mapping of a frame typed "
                               f"{mm.ptype[target]} (count {mm.tcount[target]})")
                continue
            if e & (L4_BAD if t == 4 else L2_BAD):
                out.append(f"{where}: reserved bits")
            elif not 0 <= target < mm.nr_pages or not mm.present[target]:
                out.append(f"{where}: maps a frame that is not the domain's")
            elif mm.tcount[target] <= 0 or mm.ptype[target] not in (t - 1, t):
                out.append(f"{where}: maps a frame typed {mm.ptype[target]} "
                           f"(count {mm.tcount[target]}) as a table")
            elif mm.ptype[target] == t and e & L.PTE_RW:
                out.append(f"{where}: writable linear page-table entry")
        if len(out) > 20:
            out.append("...")
            break
    return out


def child_main(elf: str, cmdline: str, memory: int, vcpus: int, trace: str | None) -> int:
    """Run one fuzz domain; console to stdout, pyxen's log to stderr, then one
    line 'FUZZ-RESULT {json}'."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(ROOT / "src"))
    from pyxen.toolstack.domconfig import DomainConfig
    from pyxen.toolstack.builder import LocalServices, build_domain, close_domain

    out = sys.stdout.buffer

    def console(data: bytes) -> None:
        out.write(data)
        out.flush()

    cfg = DomainConfig(name="fuzz", kernel=elf, cmdline=cmdline, memory=memory, vcpus=vcpus)
    tracef = open(trace, "w") if trace else None
    dom = build_domain(cfg, LocalServices(console), console_io=console, trace=tracef)
    result = {"reason": "", "message": "", "audit": []}
    try:
        r = dom.run()
        result["reason"], result["message"] = r.reason, r.message
        try:
            result["audit"] = audit_mm(dom)
        except Exception:
            result["audit"] = ["audit failed: " + traceback.format_exc()]
    finally:
        close_domain(dom)
        if tracef:
            tracef.close()
    out.write(b"\nFUZZ-RESULT " + json.dumps(result).encode() + b"\n")
    out.flush()
    return 0


# --- the parent: one run -------------------------------------------------------------
def _rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fuzz_elf() -> str:
    sys.path.insert(0, str(ROOT / "guests"))
    import build as guest_build
    return str(guest_build.build_guest("fuzz"))


def run(seed: int, calls: int, *, seconds: int = 0, timeout: float = 300, vcpus: int = 2,
        memory: int = DEFAULT_MEMORY_MB, progress: int = 0, trace: str | None = None,
        elf: str | None = None, echo=None, extra: str = "") -> FuzzRun:
    """One fuzz domain: `calls` per vCPU (or `seconds`), killed after `timeout`."""
    elf = elf or fuzz_elf()
    progress = progress or max(calls // 4, 1000)
    cmdline = f"seed={seed} calls={calls} seconds={seconds} progress={progress} domid=1 {extra}"
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", elf, cmdline,
            str(memory), str(vcpus)] + ([trace] if trace else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    fr = FuzzRun(seed=seed, calls=calls)
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []

    def pump(stream, chunks, tee):
        for line in iter(stream.readline, b""):
            chunks.append(line)
            if tee is not None:
                tee(line.decode(errors="replace"))

    threads = [threading.Thread(target=pump, args=(p.stdout, out_chunks, echo), daemon=True),
               threading.Thread(target=pump, args=(p.stderr, err_chunks, None), daemon=True)]
    for t in threads:
        t.start()
    while p.poll() is None:
        now = time.monotonic() - t0
        k = _rss_kib(p.pid)
        if k:
            fr.rss.append((now, k))
        if now > timeout:
            fr.timed_out = True
            p.kill()
            break
        time.sleep(0.5)
    p.wait()
    for t in threads:
        t.join(5)
    fr.elapsed = time.monotonic() - t0
    fr.returncode = p.returncode
    fr.console = b"".join(out_chunks).decode(errors="replace")
    fr.log = b"".join(err_chunks).decode(errors="replace")
    m = re.search(r"^FUZZ-RESULT (.*)$", fr.console, re.M)
    if m:
        res = json.loads(m.group(1))
        fr.reason, fr.message, fr.audit = res["reason"], res["message"], res["audit"]
    fr.paths = parse_paths(fr.console)
    return fr


def report(fr: FuzzRun) -> str:
    probs = fr.problems()
    head = (f"seed {fr.seed}: {fr.total_calls} calls in {fr.elapsed:.1f} s, "
            f"{len(fr.paths)} distinct paths, domain {fr.reason or '?'}, "
            f"peak RSS {max((k for _, k in fr.rss), default=0) // 1024} MiB")
    if not probs:
        return head + ": ok"
    return head + f": FAILED ({len(probs)} problems)\n" + "\n".join("  - " + p for p in probs)


# --- ./dev fuzz ----------------------------------------------------------------------
def long_run(seconds: float, seed: int | None, calls: int = 100_000) -> int:
    seed = seed if seed is not None else random.randrange(1, 1 << 31)
    elf = fuzz_elf()
    t_end = time.monotonic() + seconds
    all_paths: dict[Path_, int] = {}
    total = 0
    busy = 0.0
    failed: list[int] = []
    n = 0
    print(f"fuzz: {seconds:.0f} s from seed {seed}, {calls} calls per vCPU per domain", flush=True)
    while True:
        left = t_end - time.monotonic()
        if left < 5:
            break
        s = seed + n
        n += 1
        fr = run(s, calls, seconds=int(max(left - 5, 5)), timeout=left + 120, elf=elf)
        total += fr.total_calls
        busy += fr.elapsed
        for p, c in fr.paths.items():
            all_paths[p] = all_paths.get(p, 0) + c
        print(report(fr), flush=True)
        if fr.problems():
            failed.append(s)
        rate = total / busy if busy else 0.0
        print(f"fuzz: so far {total} calls, {rate:.0f} calls/s, {len(all_paths)} distinct "
              f"(hypercall, sub-op, result) paths, failed seeds: {failed or 'none'}", flush=True)
    rate = total / busy if busy else 0.0
    past = {p for p in all_paths if p.res != "-38"}
    print(f"fuzz: done: {n} domains, {total} calls in {busy:.0f} s ({rate:.0f} calls/s), "
          f"{len(all_paths)} distinct (hypercall, sub-op, result) paths ({len(past)} of them "
          f"past -ENOSYS), {len({(p.nr, p.sub, p.hi) for p in all_paths})} distinct "
          f"(hypercall, sub-op)")
    has = xen_has(all_paths)
    if has:
        print(f"fuzz: -ENOSYS where Xen has the operation ({len(has)}, not counted as failures):")
        for line in has:
            print(f"  {line}")
    print(f"fuzz: failed seeds: {' '.join(map(str, failed)) if failed else 'none'}")
    return 1 if failed else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        elf, cmdline, memory, vcpus = argv[1], argv[2], int(argv[3]), int(argv[4])
        return child_main(elf, cmdline, memory, vcpus, argv[5] if len(argv) > 5 else None)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seconds", nargs="?", type=float, default=600)
    ap.add_argument("seed", nargs="?", type=int)
    ap.add_argument("--calls", type=int, default=100_000, help="calls per vCPU per domain")
    ap.add_argument("--once", action="store_true", help="one domain, SEED and --calls, then its report")
    ap.add_argument("--trace", help="with --once: pyxen's per-hypercall trace into this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the guest's console")
    ap.add_argument("--args", default="", help="with --once: more of the guest's command line, "
                    "e.g. only=1,26 (these hypercalls only) or skip=13")
    a = ap.parse_args(argv)
    if a.once:
        seed = a.seed if a.seed is not None else random.randrange(1, 1 << 31)
        fr = run(seed, a.calls, timeout=max(a.seconds, 60), trace=a.trace, extra=a.args,
                 echo=(lambda s: print(s, end="", flush=True)) if a.verbose else None)
        print(report(fr))
        return 1 if fr.problems() else 0
    return long_run(a.seconds, a.seed, a.calls)


if __name__ == "__main__":
    sys.exit(main())
