"""The CPUID a PV guest sees through the forced-emulation prefix
(`ud2; .ascii "xen"; cpuid`), like Xen's guest_cpuid() for a PV domain.

The starting point is KVM_GET_SUPPORTED_CPUID (what this host's KVM can
give a vCPU). From it pyxen builds Xen's *default PV policy*:

* feature words are masked with the set Xen marks 'A' ("all guests,
  available by default") in public/arch-x86/cpufeatureset.h (Xen 4.17,
  the version pyxen reports); everything marked S/H/s/h/a or unmarked is
  hidden: VMX, SVM, MONITOR/MWAIT, MONITORX, x2APIC, TSC-deadline, PCID,
  INVPCID, PKU/OSPKE, SMEP, SMAP, UMIP, VME, PSE, PSE36, PGE, MTRR, DS,
  DTES64, DSCPL, SMX, EIST, TM1/TM2, PBE, xTPR, PDCM, DCA, 1 GiB pages,
  TSC_ADJUST, XSAVES, MPX, SGX, PQM/PQE, PROC_TRACE, CET, invariant TSC,
  TOPOEXT, IBS, LWP, SKINIT, WDT, OSVW, NODEID_MSR, EXTAPIC, CR8_LEGACY,
  WBNOINVD, AMD_PPIN, HYBRID, MOVDIRI/MOVDIR64B/ENQCMD, ...;
* XSAVE (xstate.py): XSAVE, AVX and AVX512F - the bits that decide which
  state a guest kernel must save - come from the host CPU (the `host`
  argument: its CPUID and the XCR0 in force, or a recorded dump), not from
  KVM's table: guest user space reads CPUID natively here (PVM does not
  trap it) and uses AVX/AVX-512 in the host's XCR0, which PVM leaves in
  force while the guest runs, so the guest kernel must be told about that
  state (with FXSAVE only, a memcpy interrupted by a task switch lost its
  data: the old "TLS fault"). Leaf 0xd is Xen's PV one: max XCR0 =
  x87|SSE|YMM|AVX-512 as far as the host has and runs them (no MPX, PKRU,
  AMX), sub 0 EBX and sub 1 EBX follow the vCPU's XCR0 (guest_leaf),
  XSAVEOPT/XSAVEC/XGETBV1 as the hardware has them, no XSAVES/XFD.
  OSXSAVE is clear in the policy and added per vCPU as Xen's guest_cpuid
  does for PV (guest_leaf). Without host information (unit tests) XSAVE
  and what needs it are hidden;
* pyxen's own deviations, because it cannot back them:
  - speculation-control MSRs are not virtualised: IBRSB, STIBP, SSBD,
    INTEL_PSFD, IBPB (PRED_CMD) and ARCH_CAPS are hidden;
* HYPERVISOR is set; leaf 1 EBX's initial APIC ID is 0; family/model keep
  their bits minus the processor type; leaves 5 (MONITOR), 6 (thermal),
  8, 0xa (vPMU: off), 0xb (topology) and 0xc are empty; Intel hides 3 and
  9, AMD 2, 3, 4, 9 and 0xa; the extended leaves follow Xen's
  recalculate_misc (vendor string, 0x80000001 EAX/EBX, 0x80000006-8);
  the AMD-only extended leaves past 0x80000008 other than 0x80000021
  are empty; max basic leaf <= 0xd, leaf 7 subleaves <= 2.
* 0x40000000-0x40000005 are Xen's hypervisor leaves
  (cpuid_hypervisor_leaves): signature "XenVMMXenVMM", version, one
  hypercall page with MSR 0x40000000 and MMU_PT_UPDATE_PRESERVE_AD, the
  TSC leaf (native TSC mode, the vCPU's tsc_khz and its tsc->ns scale) and
  the PV leaf 5 (machine address width). 0x40000100.. mirror Xen's
  "idx > limit" rule (zeros).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .xstate import XstatePolicy, YMM, AVX512

# feature word -> (leaf, subleaf, register)
WORDS = {
    0: (0x1, 0, "edx"), 1: (0x1, 0, "ecx"), 2: (0x80000001, 0, "edx"),
    3: (0x80000001, 0, "ecx"), 4: (0xD, 1, "eax"), 5: (0x7, 0, "ebx"),
    6: (0x7, 0, "ecx"), 7: (0x80000007, 0, "edx"), 8: (0x80000008, 0, "ebx"),
    9: (0x7, 0, "edx"), 10: (0x7, 1, "eax"), 11: (0x80000021, 0, "eax"),
    12: (0x7, 1, "ebx"), 13: (0x7, 2, "edx"), 14: (0x7, 1, "ecx"),
    15: (0x7, 1, "edx"), 18: (0x80000021, 0, "ecx"),
}

# Xen 4.17 cpufeatureset.h: the bits annotated 'A' (default for all guests)
PV_DEFAULT = {
    0: {"FPU": 0, "DE": 2, "TSC": 4, "MSR": 5, "PAE": 6, "MCE": 7, "CX8": 8, "APIC": 9,
        "SEP": 11, "MCA": 14, "CMOV": 15, "PAT": 16, "CLFLUSH": 19, "ACPI": 22, "MMX": 23,
        "FXSR": 24, "SSE": 25, "SSE2": 26, "SS": 27, "HTT": 28},
    1: {"SSE3": 0, "PCLMULQDQ": 1, "SSSE3": 9, "FMA": 12, "CX16": 13, "SSE4_1": 19,
        "SSE4_2": 20, "MOVBE": 22, "POPCNT": 23, "AESNI": 25, "XSAVE": 26, "AVX": 28,
        "F16C": 29, "RDRAND": 30, "HYPERVISOR": 31},
    2: {"SYSCALL": 11, "NX": 20, "MMXEXT": 22, "FFXSR": 25, "RDTSCP": 27, "LM": 29,
        "3DNOWEXT": 30, "3DNOW": 31},
    3: {"LAHF_LM": 0, "CMP_LEGACY": 1, "ABM": 5, "SSE4A": 6, "MISALIGNSSE": 7,
        "3DNOWPREFETCH": 8, "XOP": 11, "FMA4": 16, "TBM": 21, "DBEXT": 26},
    4: {"XSAVEOPT": 0, "XSAVEC": 1, "XGETBV1": 2},
    5: {"FSGSBASE": 0, "BMI1": 3, "AVX2": 5, "BMI2": 8, "ERMS": 9, "RTM": 11,
        "AVX512F": 16, "AVX512DQ": 17, "RDSEED": 18, "ADX": 19, "AVX512_IFMA": 21,
        "CLFLUSHOPT": 23, "CLWB": 24, "AVX512PF": 26, "AVX512ER": 27, "AVX512CD": 28,
        "SHA": 29, "AVX512BW": 30, "AVX512VL": 31},
    6: {"PREFETCHWT1": 0, "AVX512_VBMI": 1, "AVX512_VBMI2": 6, "GFNI": 8, "VAES": 9,
        "VPCLMULQDQ": 10, "AVX512_VNNI": 11, "AVX512_BITALG": 12, "AVX512_VPOPCNTDQ": 14,
        "RDPID": 22, "CLDEMOTE": 25},
    7: {},
    8: {"CLZERO": 0, "RSTR_FP_ERR_PTRS": 2, "IBPB": 12, "SSB_NO": 26, "BTC_NO": 29,
        "IBPB_RET": 30},
    9: {"AVX512_4VNNIW": 2, "AVX512_4FMAPS": 3, "FSRM": 4, "MD_CLEAR": 10, "SERIALIZE": 14,
        "IBRSB": 26, "STIBP": 27, "ARCH_CAPS": 29, "SSBD": 31},
    10: {"AVX_VNNI": 4, "AVX512_BF16": 5, "FZRM": 10, "FSRS": 11, "FSRCS": 12},
    11: {"LFENCE_DISPATCH": 2, "VERW_CLEAR": 5, "NSCB": 6, "SBPB": 27, "IBPB_BRTYPE": 28,
         "SRSO_NO": 29, "SRSO_US_NO": 30},
    12: {}, 13: {"INTEL_PSFD": 0, "MCDT_NO": 5}, 14: {}, 15: {},
    18: {"TSA_SQ_NO": 1, "TSA_L1_NO": 2},
}

# what pyxen cannot back (see the module docstring), with what depends on it
PYXEN_HIDDEN = {"IBRSB", "STIBP", "SSBD", "INTEL_PSFD", "IBPB", "ARCH_CAPS",
                "IBPB_RET", "SBPB", "IBPB_BRTYPE"}
DEPENDENTS = {   # a subset of Xen's gen-cpuid.py deep dependencies
    "XSAVE": ["XSAVEOPT", "XSAVEC", "XGETBV1", "AVX"],
    "AVX": ["FMA", "FMA4", "F16C", "AVX2", "XOP", "AVX_VNNI", "VAES", "VPCLMULQDQ"],
    "AVX2": ["AVX512F"],
    "AVX512F": ["AVX512DQ", "AVX512_IFMA", "AVX512PF", "AVX512ER", "AVX512CD", "AVX512BW",
                "AVX512VL", "AVX512_VBMI", "AVX512_VBMI2", "AVX512_VNNI", "AVX512_BITALG",
                "AVX512_VPOPCNTDQ", "AVX512_4VNNIW", "AVX512_4FMAPS", "AVX512_BF16"],
}

_NAMES = {name: (w, b) for w, bits in PV_DEFAULT.items() for name, b in bits.items()}


def hidden_features(extra=()) -> set[str]:
    out, todo = set(), list(PYXEN_HIDDEN) + list(extra)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(DEPENDENTS.get(n, ()))
    return out


def feature_masks(extra_hidden=()) -> dict[int, int]:
    """Per feature word, the bits a PV guest may see."""
    gone = hidden_features(extra_hidden)
    masks = {}
    for w, bits in PV_DEFAULT.items():
        masks[w] = sum(1 << b for n, b in bits.items() if n not in gone)
    return masks


def bit(name: str) -> tuple[int, int]:
    return _NAMES[name]


# leaf 1 EDX bits Intel also reports in 0x80000001 EDX (AMD duplicates them)
COMMON_1D = 0x0183F3FF

XEN_SIGNATURE = (0x566E6558, 0x65584D4D, 0x4D4D566E)   # "XenVMMXenVMM"
XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD = 1
XEN_LEAVES = 5                                         # XEN_CPUID_MAX_NUM_LEAVES
MAX_BASIC = 0xD
OSXSAVE_BIT = 27
# the bits that follow the XSAVE policy rather than KVM's table
XSAVE_ECX, AVX_ECX = 1 << 26, 1 << 28         # leaf 1 ECX
AVX512F_EBX = 1 << 16                         # leaf 7 EBX (opmask, ZMM_Hi256, Hi16_ZMM)
MAX_FEAT_SUBLEAF = 2
REGS = ("eax", "ebx", "ecx", "edx")


def time_scale(hz: int) -> tuple[int, int]:
    """Xen's set_time_scale: (mul_frac, shift) with ns = ((tsc << shift) * mul_frac) >> 32
    (a negative shift shifts right)."""
    tps, shift = hz, 0
    while tps > 2_000_000_000:
        tps >>= 1
        shift -= 1
    while tps <= 1_000_000_000:
        tps <<= 1
        shift += 1
    return (1_000_000_000 << 32) // tps, shift


@dataclass
class CpuidPolicy:
    """The PV policy built once per domain from KVM's supported CPUID."""
    raw: dict[tuple[int, int], tuple[int, int, int, int]]
    vendor: str
    xen_version: tuple[int, int] = (4, 17)
    tsc_khz: int = 0
    maxphys_bits: int = 36
    masks: dict[int, int] = field(default_factory=feature_masks)
    indexed: set[int] = field(default_factory=set)    # leaves with subleaves
    xstate: XstatePolicy | None = None                 # XSAVE on offer (None: hidden)

    @classmethod
    def from_kvm(cls, entries, *, xen_version=(4, 17), tsc_khz=0, nr_pages=0, host=None):
        """entries: KVM's supported CPUID. host: the real CPU as a function
        (leaf, sub) -> regs and the XCR0 in force (pyxen._atomic.host_cpuid /
        host_xcr0, or a recorded dump), for the XSAVE part."""
        raw: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        indexed = set()
        for e in entries:
            if e.flags & 1:                # KVM_CPUID_FLAG_SIGNIFCANT_INDEX
                indexed.add(e.function)
                raw[(e.function, e.index)] = (e.eax, e.ebx, e.ecx, e.edx)
            else:
                raw[(e.function, 0)] = (e.eax, e.ebx, e.ecx, e.edx)
        v = raw.get((0, 0), (0, 0, 0, 0))
        vendor = (v[1].to_bytes(4, "little") + v[3].to_bytes(4, "little")
                  + v[2].to_bytes(4, "little")).decode("latin-1")
        bits = max(1, (max(nr_pages, 1) - 1).bit_length()) + 12
        xstate = XstatePolicy.from_host(*host) if host is not None else None
        # XSAVE, AVX, AVX512F exactly as the XSAVE policy offers them
        offer = xstate.max_xcr0 if xstate else 0
        a, b, c, d = raw.get((1, 0), (0, 0, 0, 0))
        c &= ~(XSAVE_ECX | AVX_ECX)
        c |= (XSAVE_ECX if xstate else 0) | (AVX_ECX if offer & YMM else 0)
        raw[(1, 0)] = (a, b, c, d)
        a, b, c, d = raw.get((7, 0), (0, 0, 0, 0))
        raw[(7, 0)] = (a, (b & ~AVX512F_EBX) | (AVX512F_EBX if offer & AVX512 else 0), c, d)
        indexed.add(7)
        extra = ("XSAVE",) if not xstate else ("AVX",) if not offer & YMM else \
            ("AVX512F",) if not offer & AVX512 else ()
        return cls(raw=raw, vendor=vendor, xen_version=xen_version, tsc_khz=tsc_khz,
                   maxphys_bits=bits, indexed=indexed, masks=feature_masks(extra),
                   xstate=xstate)

    @property
    def amd(self) -> bool:
        return self.vendor in ("AuthenticAMD", "HygonGenuine")

    def _raw(self, leaf: int, sub: int = 0) -> list[int]:
        """KVM's value; the subleaf only counts for leaves that have them."""
        key = (leaf, sub if leaf in self.indexed else 0)
        return list(self.raw.get(key, (0, 0, 0, 0)))

    def _word(self, regs: list[int], leaf: int, sub: int) -> list[int]:
        for w, (l, s, r) in WORDS.items():
            if l == leaf and s == sub:
                i = REGS.index(r)
                regs[i] &= self.masks.get(w, 0)
        return regs

    def max_basic(self) -> int:
        top = self._raw(0)[0]
        return MAX_BASIC if self.xstate is not None else min(top, MAX_BASIC)

    def max_extended(self) -> int:
        top = self._raw(0x80000000)[0]
        return min(top, 0x80000021 if self.amd else 0x80000008)

    def has(self, name: str) -> bool:
        w, b = bit(name)
        leaf, sub, reg = WORDS[w]
        return bool(self.leaf(leaf, sub)[REGS.index(reg)] >> b & 1)

    def leaf(self, leaf: int, sub: int = 0) -> tuple[int, int, int, int]:
        """CPUID(leaf, sub) in the domain's policy (Xen's guest_cpuid before
        its per-vCPU adjustments: OSXSAVE clear, leaf 0xd EBX for a vCPU that
        has not set XCR0)."""
        leaf &= 0xFFFFFFFF
        sub &= 0xFFFFFFFF
        if leaf == 0xD and self.xstate is not None and leaf <= self.max_basic():
            return self.xstate.leaf(sub)
        if leaf <= 0xFFFF:
            return tuple(self._basic(leaf, sub))
        if 0x40000000 <= leaf <= 0x400001FF:
            return tuple(self._xen(leaf & 0xFF if leaf < 0x40000100 else 0x100, sub))
        if 0x80000000 <= leaf <= 0x8000FFFF:
            return tuple(self._extended(leaf, sub))
        return (0, 0, 0, 0)

    def guest_leaf(self, leaf: int, sub: int = 0, *, xcr0: int = 0, cr4_osxsave: bool = False,
                   kernel: bool = True, forced: bool = True) -> tuple[int, int, int, int]:
        """CPUID as one vCPU sees it (Xen's guest_cpuid for a PV vCPU):
        leaf 1 OSXSAVE is the guest's CR4.OSXSAVE, or - Xen's PV quirk, part
        of the ABI since Linux relies on it - set for the kernel asking
        through the forced-emulation prefix when XSAVE is offered; leaf 0xd
        sub 0/1 EBX are the area sizes for the vCPU's XCR0 (xcr0; 0 = never set)."""
        leaf &= 0xFFFFFFFF
        sub &= 0xFFFFFFFF
        r = self.leaf(leaf, sub)
        if leaf == 1 and (cr4_osxsave or (self.xstate is not None and forced and kernel)):
            return (r[0], r[1], r[2] | 1 << OSXSAVE_BIT, r[3])
        if leaf == 0xD and sub in (0, 1) and any(r):
            return self.xstate.leaf(sub, xcr0)
        return r

    # --- basic leaves ------------------------------------------------------------
    def _basic(self, leaf: int, sub: int) -> list[int]:
        z = [0, 0, 0, 0]
        if leaf > self.max_basic():
            return z
        if leaf == 0:
            r = self._raw(0)
            r[0] = self.max_basic()
            return r
        if leaf == 1:
            r = self._word(self._raw(1), 1, 0)
            r[0] &= 0x0FFF0FFF                      # no processor type
            r[1] &= 0x00FFFFFF                      # APIC ID: dynamic, 0 for PV
            r[2] &= ~(1 << OSXSAVE_BIT)             # per vCPU (guest_leaf)
            r[2] |= 1 << 31                         # HYPERVISOR
            return r
        if leaf in (5, 6, 8, 0xA, 0xB, 0xC, 0xD):
            return z                                # MONITOR, power, vPMU, topology, XSAVE
        if leaf == 3 or leaf == 9:
            return z                                # PSN, DCA
        if leaf == 2:
            return z if self.amd else self._raw(2)
        if leaf == 4:
            if self.amd:
                return z
            r = self._raw(4, sub)
            if 1 <= (r[0] & 0x1F) <= 3:
                r[0] &= 0xFFFFC3FF
                r[3] &= 0x7
                return r
            return z
        if leaf == 7:
            top = min(self._raw(7, 0)[0], MAX_FEAT_SUBLEAF)
            if sub > top:
                return z
            r = self._raw(7, sub)
            if sub == 0:
                r[0] = top
            elif sub == 2:
                r = [0, 0, 0, r[3]]
            return self._word(r, 7, sub)
        return self._raw(leaf, sub)

    # --- extended leaves ---------------------------------------------------------------
    def _extended(self, leaf: int, sub: int) -> list[int]:
        z = [0, 0, 0, 0]
        if leaf > self.max_extended():
            return z
        amd = self.amd
        if leaf == 0x80000000:
            r = self._raw(leaf)
            r[0] = self.max_extended()
            if amd:
                b = self._raw(0)
                r[1], r[2], r[3] = b[1], b[2], b[3]
            else:
                r[1] = r[2] = r[3] = 0
            return r
        if leaf == 0x80000001:
            r = self._word(self._raw(leaf), 0x80000001, 0)
            if amd:
                r[1] &= 0xFF00FFFF
                r[3] |= self._basic(1, 0)[3] & COMMON_1D
            else:
                r[0] = r[1] = 0
                r[3] &= ~COMMON_1D
            return r
        if 0x80000002 <= leaf <= 0x80000004:
            return self._raw(leaf)                    # brand string
        if leaf == 0x80000005:
            return self._raw(leaf) if amd else z
        if leaf == 0x80000006:
            r = self._raw(leaf)
            if not amd:
                r[0] = r[1] = r[3] = 0
            return r
        if leaf == 0x80000007:
            r = self._word(self._raw(leaf), 0x80000007, 0)
            r[0] = r[1] = r[2] = 0
            return r
        if leaf == 0x80000008:
            r = self._word(self._raw(leaf), 0x80000008, 0)
            r[0] &= 0xFFFF
            r[2] = r[2] & 0x3F0FF if amd else 0
            r[3] = 0
            return r
        if leaf == 0x80000021:
            r = self._raw(leaf)
            r[1] = 0
            r[3] = 0
            return self._word(r, 0x80000021, 0)
        return z

    # --- Xen's leaves ----------------------------------------------------------------------
    def _xen(self, idx: int, sub: int) -> list[int]:
        z = [0, 0, 0, 0]
        if idx > XEN_LEAVES:
            return z
        if idx == 0:
            return [0x40000000 + XEN_LEAVES, *XEN_SIGNATURE]
        if idx == 1:
            major, minor = self.xen_version
            return [(major << 16) | minor, 0, 0, 0]
        if idx == 2:
            return [1, 0x40000000, XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD, 0]
        if idx == 3:
            if sub == 0:
                itsc = (self._raw(0x80000007)[3] >> 8) & 1
                rdtscp = self.has("RDTSCP")
                return [(itsc << 1) | (int(rdtscp) << 2), 0, self.tsc_khz, 0]
            if sub == 1:
                if not self.tsc_khz:
                    return z
                mul, shift = time_scale(self.tsc_khz * 1000)
                return [0, 0, mul, shift & 0xFFFFFFFF]
            if sub == 2:
                return [self.tsc_khz, 0, 0, 0]
            return z
        if idx == 5 and sub == 0:
            return [0, self.maxphys_bits, 0, 0]
        return z                                     # 4: HVM only
