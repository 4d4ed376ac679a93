"""Raw CPUID dumps of real CPUs, for tests of the PV CPU policy that need no
particular host, and an independent statement of what Xen offers a PV
guest's XSAVE on such a CPU.

Dump format (one file per CPU): comment lines start with '#', the first
one says `XCR0=<hex>` (the XCR0 in force on that host, 0 without OSXSAVE);
then "leaf sub: eax ebx ecx edx" in hex. Leaves a dump leaves out read as
zeros.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
DUMPS = sorted(p.stem for p in HERE.glob("*.txt"))

# leaves whose subleaf counts (ECX is an input)
INDEXED = {4, 7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1D, 0x1F, 0x20, 0x23, 0x24,
           0x8000001D, 0x80000020, 0x80000026}


@dataclass
class Dump:
    name: str
    xcr0: int
    regs: dict[tuple[int, int], tuple[int, int, int, int]]

    def cpuid(self, leaf: int, sub: int = 0) -> tuple[int, int, int, int]:
        """CPUID as the dumped CPU answers it (what pyxen._atomic.host_cpuid gives)."""
        return self.regs.get((leaf, sub if leaf in INDEXED else 0), (0, 0, 0, 0))

    @property
    def host(self):
        """The `host` argument of CpuidPolicy.from_kvm."""
        return (self.cpuid, self.xcr0)

    def kvm_entries(self):
        """The dump as a KVM_GET_SUPPORTED_CPUID table (a KVM that passes the
        CPU through; PVM's table here is much smaller)."""
        return [SimpleNamespace(function=f, index=i, flags=1 if f in INDEXED else 0,
                                eax=r[0], ebx=r[1], ecx=r[2], edx=r[3])
                for (f, i), r in sorted(self.regs.items())]


def load(name: str) -> Dump:
    regs, xcr0 = {}, None
    for line in (HERE / f"{name}.txt").read_text().splitlines():
        if line.startswith("#"):
            m = re.search(r"XCR0=([0-9a-fA-F]+)", line)
            if m:
                xcr0 = int(m.group(1), 16)
            continue
        if line.strip():
            leaf, sub, a, b, c, d = (int(x, 16) for x in line.replace(":", " ").split())
            regs[(leaf, sub)] = (a, b, c, d)
    assert xcr0 is not None, f"{name}: no XCR0= in the header"
    return Dump(name, xcr0, regs)


@dataclass
class Expected:
    """What Xen's PV policy offers on a CPU, written from Xen's rules
    (cpufeatureset.h 'A' features, recalculate_xstate, valid_xcr0), not
    from pyxen's code."""
    xsave: bool
    avx: bool
    avx512: bool
    max_xcr0: int        # leaf 0xd sub 0 EDX:EAX
    max_size: int        # leaf 0xd sub 0 ECX
    d1: int              # leaf 0xd sub 1 EAX
    valid: list[int]     # every XCR0 xsetbv accepts


def expected(cpuid, xcr0: int) -> Expected:
    top = cpuid(0, 0)[0]
    c1 = cpuid(1, 0)[2]
    xsave = top >= 0xD and bool(c1 >> 26 & 1) and xcr0 & 3 == 3
    avx = xsave and bool(c1 >> 28 & 1) and bool(xcr0 & 4)
    avx512 = avx and top >= 7 and bool(cpuid(7, 0)[1] >> 16 & 1) and xcr0 & 0xE0 == 0xE0
    if not xsave:
        return Expected(False, False, False, 0, 0, 0, [])
    top_xcr0 = 3 | (4 if avx else 0) | (0xE0 if avx512 else 0)
    size = 576
    for i in range(2, 8):
        if top_xcr0 >> i & 1:
            a, b, _, _ = cpuid(0xD, i)
            size = max(size, a + b)
    valid = [1, 3] + ([7] if avx else []) + ([0xE7] if avx512 else [])
    return Expected(True, avx, avx512, top_xcr0, size, cpuid(0xD, 1)[0] & 7, valid)


def std_size(cpuid, xcr0: int) -> int:
    """The standard-format size the dumped hardware gives for an XCR0."""
    size = 576
    for i in range(2, 63):
        if xcr0 >> i & 1:
            a, b, _, _ = cpuid(0xD, i)
            size = max(size, a + b)
    return size


def compacted_size(cpuid, xcr0: int) -> int:
    size = 576
    for i in range(2, 63):
        if xcr0 >> i & 1:
            a, _, c, _ = cpuid(0xD, i)
            if c & 2:
                size = (size + 63) & ~63
            size += a
    return size
