"""Instruction emulation for PV guests: what Xen does in arch/x86/pv/
ro-page-fault.c (writable page tables), emul-priv-op.c (privileged
instructions on #GP) and emul-inv-op.c (the forced-emulation prefix on #UD).

    Domain.build() calls emulate.install(dom, image) first: every built
    domain has the emulator.

install() hooks the Domain's emulate / emulate_pf and offers writable page
tables (domain.supports_writable_pagetables, which vm_assist checks).

When writable page tables are on: like Xen, the emulation runs only while
the domain has VMASST_TYPE_writable_pagetables. Like libxc's builder,
install() turns that assist on for a kernel whose FEATURES note names
writable_page_tables (required or supported), and when no image is given;
a guest can also switch it with the vm_assist hypercall (Linux enables it
itself in xen_pvmmu_arch_setup).

Modules: decode (capstone, register file, flags), ptwr, privop, cpuid, xstate, m2p
(loads from the ABI M2P address, which this host cannot map).
"""
from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field

from ..guestmem import GuestFault
from ..vcpu import GuestCrash
from . import decode, faultfix, m2p, privop, ptwr
from .cpuid import CpuidPolicy
from .decode import Decoder, RegFile
from .pit import Pit2

__all__ = ["install", "Emulator", "CpuidPolicy", "FORCED_EMULATION_PREFIX"]

FORCED_EMULATION_PREFIX = b"\x0f\x0bxen"     # ud2; .ascii "xen"
CPUID_OPCODE = b"\x0f\xa2"
VMASST_WRITABLE_PAGETABLES = 2

log = logging.getLogger("pyxen.emulate")


@dataclass
class VcpuState:
    cr4: int                 # the guest's view of CR4 (Xen's pv.ctrlreg[4])
    xcr0: int = 0            # the XCR0 the guest set (Xen's v->arch.xcr0; 0: never set)
    warned_unsaved: int = 0  # XCR0 bits already logged as not saved by the guest kernel


@dataclass
class IoState:
    cmos_idx: int = 0        # last write to port 0x70
    pci_cf8: int = 0         # last dword write to 0xcf8
    pit: Pit2 = field(default_factory=Pit2)    # PIT channel 2, ports 0x42, 0x43, 0x61


class Emulator:
    """Per-domain emulation state: decoder and its cache, the CPUID policy,
    the guest-visible CR4 of each vCPU, the latched I/O ports, counters."""

    def __init__(self, domain):
        self.domain = domain
        self.decoder = Decoder()
        self._policy: CpuidPolicy | None = None
        self._vstate: dict[int, VcpuState] = {}
        self.io = IoState()
        self.stats: Counter[str] = Counter()

    # --- state -------------------------------------------------------------------
    def policy(self, vcpu) -> CpuidPolicy:
        if self._policy is None:
            from ..hypercalls.version import XEN_MAJOR, XEN_MINOR
            try:
                khz = vcpu.kvcpu.tsc_khz()
            except OSError:
                khz = 0
            from ... import _atomic
            self._policy = CpuidPolicy.from_kvm(self.domain.cpuid_entries,
                                                host=(_atomic.host_cpuid, _atomic.host_xcr0()),
                                                xen_version=(XEN_MAJOR, XEN_MINOR),
                                                tsc_khz=khz, nr_pages=self.domain.nr_pages)
        return self._policy

    def vstate(self, vcpu) -> VcpuState:
        st = self._vstate.get(vcpu.id)
        if st is None:
            # Xen: ctrlreg[4] = pv_fixup_guest_cr4(v, 0) at vCPU creation
            st = VcpuState(cr4=vcpu.fetch_sregs().cr4 & privop.CR4_GUEST_VISIBLE)
            self._vstate[vcpu.id] = st
        return st

    # --- hooks (Domain.emulate / Domain.emulate_pf) -----------------------------------
    def locked(self):
        """The domain's hypervisor lock (held by hypercalls too): page-table
        state and vCPU state change under it, as in Xen under the page lock."""
        lock = getattr(self.domain, "lock", None)
        return lock if lock is not None else contextlib.nullcontext()

    def emulate_pf(self, vcpu, err, cr2, rip, cs, rflags, rsp, ss) -> bool:
        try:
            if m2p.in_range(cr2):
                return m2p.emulate_pf(self, vcpu, err, cr2, rip, cs, rflags, rsp, ss)
            with self.locked():
                return ptwr.emulate_pf(self, vcpu, err, cr2, rip, cs, rflags, rsp, ss)
        except GuestCrash:
            raise
        except Exception as e:             # a bug here must not take pyxen down
            log.exception("ptwr emulation failed at rip %#x", rip)
            raise GuestCrash(f"internal error emulating a page-table write at {rip:#x}: {e}")

    # --- port I/O that exits directly (layout.PORTS_DIRECT) -------------------------
    def port_allowed(self, vcpu, port: int, size: int) -> bool:
        return privop.guest_io_okay(vcpu, port, size)

    def port_read(self, port: int, size: int) -> int:
        self.stats["io"] += 1
        return privop.io_read(self, port, size)

    def port_write(self, port: int, size: int, data: int) -> None:
        self.stats["io"] += 1
        privop.io_write(self, port, size, data)

    def io_insn_start(self, vcpu, rip: int) -> int | None:
        """Where the port I/O instruction an exit left rip at or after
        starts: rip itself for a string form (KVM repeats those until rcx is
        spent), else the OUT that ends at rip (retired by KVM's emulator)."""
        from capstone import x86 as X
        strings = (X.X86_INS_OUTSB, X.X86_INS_OUTSW, X.X86_INS_OUTSD, X.X86_INS_INSB,
                   X.X86_INS_INSW, X.X86_INS_INSD)
        try:
            if self.decoder.decode(decode.fetch(vcpu, rip), rip).id in strings:
                return rip
        except (GuestFault, decode.DecodeError):
            pass
        end = rip
        outs = (X.X86_INS_OUT, X.X86_INS_OUTSB, X.X86_INS_OUTSW, X.X86_INS_OUTSD)
        for n in range(1, 16):
            try:
                insn = self.decoder.decode(decode.fetch(vcpu, end - n), end - n)
            except (GuestFault, decode.DecodeError):
                continue
            if insn.length == n and insn.id in outs:
                return end - n
        return None

    def emulate(self, vcpu, vec, err, rip, cs, rflags, rsp, ss) -> bool:
        try:
            if vec == 6:
                with self.locked():
                    return self.forced_invalid_op(vcpu, rip, cs, rflags, rsp, ss)
            if vec == 13 and privop.emulate_gp(self, vcpu, err, rip, cs, rflags, rsp, ss):
                return True
            if vec in (12, 13):
                fvec, ferr = faultfix.fix(self, vcpu, vec, err, rip, rsp)
                if (fvec, ferr) != (vec, err):
                    vcpu.inject_trap(fvec, ferr, rip, cs, rflags, rsp, ss)
                    return True
            return False
        except GuestCrash:
            raise
        except Exception as e:
            log.exception("emulation of vector %d failed at rip %#x", vec, rip)
            raise GuestCrash(f"internal error emulating an instruction at {rip:#x}: {e}")

    # --- #UD: the forced-emulation prefix (emul-inv-op.c) -----------------------------------
    def forced_invalid_op(self, vcpu, rip, cs, rflags, rsp, ss) -> bool:
        """`ud2; .ascii "xen"; cpuid` -> CPUID from the PV policy. The prefix
        before anything else is left as the #UD it is."""
        try:
            sig = vcpu.mem.read(rip, len(FORCED_EMULATION_PREFIX))
        except GuestFault:
            return False
        if sig != FORCED_EMULATION_PREFIX:
            return False
        at = rip + len(FORCED_EMULATION_PREFIX)
        try:
            op = vcpu.mem.read(at, len(CPUID_OPCODE))
        except GuestFault as f:
            # Xen: a #PF for the unreadable instruction bytes
            if vcpu.vcpu_info is not None:
                vcpu.vcpu_info.cr2 = f.va
            vcpu.inject_trap(14, 0 if vcpu.pv.kernel_mode else 4, rip, cs, rflags, rsp, ss)
            return True
        if op != CPUID_OPCODE:
            return False
        rf = RegFile(vcpu.regs, rsp, rip)
        privop._cpuid(self, vcpu, rf, forced=True)
        vcpu.regs_changed()
        self.stats["cpuid"] += 1
        vcpu.set_return(at + len(CPUID_OPCODE), rsp, rflags, cs, ss)
        return True


def install(domain, image=None) -> Emulator:
    """Hook instruction emulation into a Domain (call before build()).

    image: the KernelImage about to be built, if known; writable page tables
    are switched on (VMASST_TYPE_writable_pagetables) when it declares the
    feature, or when no image is given."""
    em = Emulator(domain)
    domain.emulator = em
    domain.emulate = em.emulate
    domain.emulate_pf = em.emulate_pf
    domain.supports_writable_pagetables = True
    wants = image is None
    if image is not None:
        feats = set(getattr(image, "features_required", ())) | \
            set(getattr(image, "features_supported", ()))
        wants = "writable_page_tables" in feats
    if wants:
        domain.vm_assist |= 1 << VMASST_WRITABLE_PAGETABLES
    return em
