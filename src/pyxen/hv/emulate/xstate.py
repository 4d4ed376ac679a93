"""The XSAVE part of a PV guest's CPU policy: which XCR0 bits it may set,
leaf 0xd, and Xen's rules for its xsetbv (Xen's xen/arch/x86/xstate.c
valid_xcr0/handle_xsetbv/xstate_*_size and cpu-policy.c recalculate_xstate).

What Xen offers a PV guest (cpufeatureset.h, 'A' = every guest by default):
x87, SSE, YMM (AVX) and the AVX-512 trio (opmask, ZMM_Hi256, Hi16_ZMM) when
the CPU has them and Xen itself runs them (they are in its XCR0); XSAVEOPT,
XSAVEC and XGETBV1 as the hardware has them. Not to PV guests: MPX (HVM
only), PKRU (PKU is HVM only), AMX tiles and XFD (not offered at all),
XSAVES and every supervisor (XSS) state.

The inputs are the host's CPUID and the XCR0 in force (`from_host`), so a
recorded CPUID dump serves as well as the real CPU.

pyxen runs on PVM, which leaves the host's XCR0 in force while the guest
runs and never traps xgetbv, XSAVE* or XRSTOR*. The guest's XCR0 is
therefore bookkeeping (it sizes leaf 0xd EBX, as Xen's v->arch.xcr0 does);
what the guest's instructions really do follows from the SDM with
RFBM = EDX:EAX & host XCR0 (see docs/design.md, "FPU state").
"""
from __future__ import annotations

from dataclasses import dataclass, field

X87, SSE, YMM = 1 << 0, 1 << 1, 1 << 2
BNDREGS, BNDCSR = 1 << 3, 1 << 4
OPMASK, ZMM_HI256, HI16_ZMM = 1 << 5, 1 << 6, 1 << 7
PKRU = 1 << 9
TILECFG, TILEDATA = 1 << 17, 1 << 18
FP_SSE = X87 | SSE
AVX512 = OPMASK | ZMM_HI256 | HI16_ZMM
LEGACY_SIZE = 512 + 64            # legacy region + XSAVE header (Xen's XSTATE_AREA_MIN_SIZE)

# CPUID bits that decide the offer
LEAF1_XSAVE, LEAF1_OSXSAVE, LEAF1_AVX = 1 << 26, 1 << 27, 1 << 28      # leaf 1 ECX
LEAF7_AVX512F = 1 << 16                                                # leaf 7.0 EBX
XSAVEOPT, XSAVEC, XGETBV1, XSAVES, XFD = 1, 2, 4, 8, 16                # leaf 0xd.1 EAX
PV_D1_FLAGS = XSAVEOPT | XSAVEC | XGETBV1                              # what Xen gives PV
COMP_SUPERVISOR, COMP_ALIGN64, COMP_XFD = 1, 2, 4                       # leaf 0xd.i ECX


def valid_xcr0(xcr0: int) -> bool:
    """Xen's valid_xcr0: the architectural dependencies between XCR0 bits."""
    if not xcr0 & X87:
        return False
    if xcr0 & YMM and not xcr0 & SSE:
        return False
    if xcr0 & AVX512:
        if not xcr0 & YMM or xcr0 & AVX512 != AVX512:
            return False
    if bool(xcr0 & BNDREGS) != bool(xcr0 & BNDCSR):
        return False
    if bool(xcr0 & TILECFG) != bool(xcr0 & TILEDATA):
        return False
    return True


def _bits(mask: int):
    i = 0
    while mask >> i:
        if mask >> i & 1:
            yield i
        i += 1


@dataclass(frozen=True)
class Component:
    size: int            # leaf 0xd.i EAX
    offset: int          # EBX: standard-format offset
    align64: bool        # ECX bit 1: 64-byte aligned in the compacted format


@dataclass(frozen=True)
class XstatePolicy:
    """XSAVE as offered to a PV guest. `max_xcr0` is Xen's xcr0_max (leaf 0xd
    sub 0 EDX:EAX); `components` are the hardware's layout of the offered
    components past SSE; `d1` is leaf 0xd sub 1 EAX (XSAVEOPT/XSAVEC/XGETBV1
    as the hardware has them, never XSAVES/XFD); `host_xcr0` is the XCR0 the
    guest's code really runs with (PVM keeps the host's)."""
    max_xcr0: int
    host_xcr0: int
    components: dict[int, Component] = field(default_factory=dict)
    d1: int = 0

    @classmethod
    def from_host(cls, cpuid, xcr0: int) -> XstatePolicy | None:
        """cpuid: (leaf, sub) -> (eax, ebx, ecx, edx) of the host CPU; xcr0: the
        XCR0 in force (0 when the host has no OSXSAVE). None: no XSAVE to offer
        (the CPU lacks it, or the host OS does not run it with x87|SSE)."""
        if cpuid(0, 0)[0] < 0xD or xcr0 & FP_SSE != FP_SSE:
            return None
        ecx1 = cpuid(1, 0)[2]
        if not ecx1 & LEAF1_XSAVE:
            return None
        offer = FP_SSE
        if ecx1 & LEAF1_AVX and xcr0 & YMM:
            offer |= YMM
            if cpuid(0, 0)[0] >= 7 and cpuid(7, 0)[1] & LEAF7_AVX512F and xcr0 & AVX512 == AVX512:
                offer |= AVX512
        comps: dict[int, Component] = {}
        for i in _bits(offer & ~FP_SSE):
            a, b, c, _ = cpuid(0xD, i)
            comps[i] = Component(a, b, bool(c & COMP_ALIGN64))
        # a component the hardware does not describe is not offered (nor what needs it)
        def described(i):
            return comps[i].size > 0 and comps[i].offset >= LEGACY_SIZE
        if offer & YMM and not described(2):
            offer &= ~(YMM | AVX512)
        if offer & AVX512 and not all(described(i) for i in _bits(AVX512)):
            offer &= ~AVX512
        comps = {i: c for i, c in comps.items() if offer >> i & 1}
        d1 = cpuid(0xD, 1)[0] & PV_D1_FLAGS
        return cls(max_xcr0=offer, host_xcr0=xcr0, components=comps, d1=d1)

    # --- Xen's rules -----------------------------------------------------------------
    def xsetbv_ok(self, xcr0: int) -> bool:
        """Xen's handle_xsetbv for XCR0: only offered bits, and a valid combination."""
        return not xcr0 & ~self.max_xcr0 and valid_xcr0(xcr0)

    def valid_values(self) -> list[int]:
        """Every XCR0 a guest may set (for tests and logs)."""
        out, sub = [], self.max_xcr0
        while True:                      # every subset of max_xcr0
            if valid_xcr0(sub):
                out.append(sub)
            if not sub:
                return sorted(out)
            sub = (sub - 1) & self.max_xcr0

    # --- sizes ---------------------------------------------------------------------------
    def uncompressed_size(self, xcr0: int) -> int:
        """Bytes of a standard-format XSAVE area for these components
        (Xen's xstate_uncompressed_size; x87|SSE alone is 576)."""
        size = LEGACY_SIZE
        for i in _bits(xcr0 & ~FP_SSE):
            c = self.components[i]
            size = max(size, c.offset + c.size)
        return size

    def compressed_size(self, xcr0: int) -> int:
        """Bytes of a compacted-format area (XSAVEC) for these components
        (Xen's xstate_compressed_size, without XSS states: PV has none)."""
        size = LEGACY_SIZE
        for i in _bits(xcr0 & ~FP_SSE):
            c = self.components[i]
            if c.align64:
                size = (size + 63) & ~63
            size += c.size
        return size

    # --- leaf 0xd ----------------------------------------------------------------------------
    def leaf(self, sub: int, xcr0: int = 0) -> tuple[int, int, int, int]:
        """CPUID 0xd as the guest sees it with `xcr0` set (0: never set, which
        runs as x87|SSE - Xen's XCR0 for a fresh vCPU; Xen 4.17 reads EBX
        from hardware with that XCR0 loaded, i.e. 576). Sub 1 EBX is the
        compacted size of the vCPU's XCR0 when XSAVEC is offered, as current
        Xen gives it (Linux >= 5.19 sizes its XSAVEC buffers from it)."""
        cur = (xcr0 or FP_SSE) & self.max_xcr0
        if sub == 0:
            top = self.max_xcr0
            return (top & 0xFFFFFFFF, self.uncompressed_size(cur),
                    self.uncompressed_size(top), top >> 32)
        if sub == 1:
            ebx = self.compressed_size(cur) if self.d1 & XSAVEC else 0
            return (self.d1, ebx, 0, 0)
        c = self.components.get(sub) if sub < 63 else None
        if c is None:
            return (0, 0, 0, 0)
        ecx = COMP_ALIGN64 if c.align64 and self.d1 & XSAVEC else 0
        return (c.size, c.offset, ecx, 0)
