"""Privileged instructions a PV guest executes at ring 3 and the hypervisor
emulates from the #GP(0) they raise (Xen's arch/x86/pv/emul-priv-op.c).

Guest kernel mode (Xen's "ring 0" for the emulator):
  mov from %cr0 (TS = the virtual CR0.TS), %cr2 (vcpu_info.arch.cr2),
  %cr3 (kernel L4 << 12), %cr4 (the guest's view: PAE|OSFXSR|OSXMMEXCPT
  from the real CR4, plus TSD/DE/FSGSBASE the guest set);
  mov to %cr0 (only TS may change: fpu_taskswitch), %cr2, %cr3 (like
  MMUEXT_NEW_BASEPTR), %cr4 (Xen's pv_fixup_guest_cr4; TSD and FSGSBASE
  reach the vCPU's real CR4); clts; mov to/from %dr0-7 (set/get_debugreg);
  rdmsr/wrmsr (see MSR_* below; anything else is #GP); wbinvd (no-op);
  hlt (SCHEDOP_block - a pyxen extension: Xen gives #GP); rdtsc/rdtscp
  when CR4.TSD makes them fault; xsetbv (Xen's handle_xsetbv with the
  offered leaf 0xd, xstate.py; #UD without the guest's CR4.OSXSAVE, in
  any mode).
Any mode, under the virtual IOPL (Xen's iopl_ok: kernel counts as CPL 1,
  or 0 with VMASST_TYPE_architectural_iopl; user as 3) or the
  PHYSDEVOP_set_iobitmap bitmap: in/out/ins/outs (with rep) - a domU owns
  no ports: reads give all ones, writes are dropped, except Xen's
  always-virtual ones (the CMOS index port 0x70 and the PCI CONFIG_ADDRESS
  dword at 0xcf8 are latched); cli/sti (like Xen: accepted and ignored,
  the event mask does not change); cpuid (if it ever faults).
Everything else - and all of the above outside their conditions - stays a
#GP for the guest.
"""
from __future__ import annotations

import struct

from capstone import x86_const as X

from ..abi import FLAT_KERNEL_CS, FLAT_RING3_CS32
from ..guestmem import GuestFault
from ..mm import PGT_WRITABLE, PGT_NONE, PageTableError
from .. import layout as L
from .decode import RegFile, decode_at, effective_address, DF, MASK64

CR0_TS = 1 << 3
CR4_TSD, CR4_DE, CR4_PAE, CR4_MCE = 1 << 2, 1 << 3, 1 << 5, 1 << 6
CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_FSGSBASE, CR4_OSXSAVE = 1 << 9, 1 << 10, 1 << 16, 1 << 18
CR4_GUEST_MASK = CR4_TSD | CR4_DE | CR4_FSGSBASE | CR4_OSXSAVE
CR4_GUEST_VISIBLE = CR4_PAE | CR4_MCE | CR4_OSFXSR | CR4_OSXMMEXCPT
CR4_TO_HARDWARE = CR4_TSD | CR4_FSGSBASE

MSR_TSC = 0x10
MSR_INTEL_PLATFORM_INFO = 0xCE
MSR_INTEL_MISC_FEATURES_ENABLES = 0x140
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_DEBUGCTL = 0x1D9
MSR_IA32_CR_PAT = 0x277
MSR_IA32_PERF_CAPABILITIES = 0x345
MSR_EFER = 0xC0000080
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_SHADOW_GS_BASE = 0xC0000102
MSR_TSC_AUX = 0xC0000103
MSR_XEN_HYPERCALL_PAGE = 0x40000000
AMD_ZERO_MSRS = frozenset({0xC0010041, 0xC0010042} | set(range(0xC0010061, 0xC001006C)))
AMD_FAM10_ZERO_MSRS = frozenset({0xC0010058, 0xC001001F})    # MMIO_CONF_BASE, NB_CFG
XEN_MSR_PAT = 0x050100070406

MISC_ENABLE_PERF_AVAIL = 1 << 7
MISC_ENABLE_MONITOR_ENABLE = 1 << 18
MISC_ENABLE_BTS_UNAVAIL = 1 << 11
MISC_ENABLE_PEBS_UNAVAIL = 1 << 12
MISC_ENABLE_XTPR_DISABLE = 1 << 23

PFEC_W, PFEC_U = 2, 4
RTC_PORT0 = 0x70
PCI_CF8 = 0xCF8
PIT_PORTS = (0x42, 0x43, 0x61)     # Xen's pv_pit_handler: channel 2 and the speaker port
MAX_REP = 4096

_IO_INSNS = {X.X86_INS_IN, X.X86_INS_OUT, X.X86_INS_INSB, X.X86_INS_INSW, X.X86_INS_INSD,
             X.X86_INS_OUTSB, X.X86_INS_OUTSW, X.X86_INS_OUTSD}


class Fault(Exception):
    """Deliver this exception to the guest instead of completing the instruction."""

    def __init__(self, vector: int, error: int | None = None, cr2: int | None = None):
        super().__init__(vector)
        self.vector, self.error, self.cr2 = vector, error, cr2


class NotEmulated(Exception):
    """Leave the #GP standing."""


def canonical(v: int) -> bool:
    return L.canonical(v)


def emulate_gp(em, vcpu, err, rip, cs, rflags, rsp, ss) -> bool:
    if err != 0:
        return False
    if not _code64(vcpu, cs):
        return False
    got = decode_at(em.decoder, vcpu, rip, rsp)
    if got is None:
        return False
    insn, rf = got
    with em.locked():
        try:
            next_rip, rflags = _dispatch(em, vcpu, insn, rf, rflags)
        except NotEmulated:
            return False
        except Fault as f:
            if rf.dirty:
                vcpu.regs_changed()
            if f.cr2 is not None and vcpu.vcpu_info is not None:
                vcpu.vcpu_info.cr2 = f.cr2
            vcpu.inject_trap(f.vector, f.error, rip, cs, rflags, rf.rsp, ss)
            return True
    em.stats["privop"] += 1
    if rf.dirty:
        vcpu.regs_changed()
    vcpu.domain.trace(vcpu.id, "emulate", f"{insn} rip={rip:#x}")
    if insn.id == X.X86_INS_HLT:
        # pyxen extension: a halting PV kernel waits for an event, as
        # SCHEDOP_block (which also re-enables event delivery); never
        # with the domain lock held
        em.stats["hlt"] += 1
        vcpu.domain.block(vcpu, None)
    vcpu.set_return(next_rip, rf.rsp, rflags, cs, ss)
    return True


def _code64(vcpu, cs: int) -> bool:
    sel = cs | 3
    if sel == FLAT_KERNEL_CS:
        return True
    if sel == FLAT_RING3_CS32:
        return False
    desc = vcpu.descriptor(sel)
    return desc is not None and bool((desc >> 53) & 1)


def _dispatch(em, vcpu, insn, rf: RegFile, rflags: int) -> tuple[int, int]:
    iid = insn.id
    kernel = vcpu.pv.kernel_mode
    nxt = insn.next_rip
    if iid in _IO_INSNS:
        return _io(em, vcpu, insn, rf, rflags)
    if iid in (X.X86_INS_CLI, X.X86_INS_STI):
        if not iopl_ok(vcpu):
            raise NotEmulated
        return nxt, rflags
    if iid == X.X86_INS_CPUID:
        _cpuid(em, vcpu, rf)
        return nxt, rflags
    if iid == X.X86_INS_XSETBV:
        _xsetbv(em, vcpu, rf)
        return nxt, rflags
    if iid in (X.X86_INS_RDTSC, X.X86_INS_RDTSCP):
        if not kernel and em.vstate(vcpu).cr4 & CR4_TSD:
            raise NotEmulated
        tsc = guest_tsc(vcpu)
        rf.write("eax", tsc & 0xFFFFFFFF)
        rf.write("edx", tsc >> 32)
        if iid == X.X86_INS_RDTSCP:
            rf.write("ecx", read_msr(em, vcpu, MSR_TSC_AUX) & 0xFFFFFFFF)
        return nxt, rflags
    if not kernel:
        raise NotEmulated          # the rest needs (virtual) ring 0
    if iid == X.X86_INS_MOV:
        _mov_cr_dr(em, vcpu, insn, rf)
        return nxt, rflags
    if iid == X.X86_INS_CLTS:
        vcpu.set_cr0_ts(False)
        return nxt, rflags
    if iid == X.X86_INS_RDMSR:
        v = read_msr(em, vcpu, rf.read("ecx"))
        rf.write("eax", v & 0xFFFFFFFF)
        rf.write("edx", v >> 32)
        return nxt, rflags
    if iid == X.X86_INS_WRMSR:
        write_msr(em, vcpu, rf.read("ecx"), (rf.read("edx") << 32) | rf.read("eax"))
        return nxt, rflags
    if iid == X.X86_INS_WBINVD:
        return nxt, rflags
    if iid == X.X86_INS_HLT:
        return nxt, rflags         # emulate_gp blocks, outside the lock
    raise NotEmulated


# --- control and debug registers -----------------------------------------------------
def _mov_cr_dr(em, vcpu, insn, rf: RegFile) -> None:
    if len(insn.operands) != 2 or any(o.kind != "reg" for o in insn.operands):
        raise NotEmulated
    dst, src = insn.operands[0].reg, insn.operands[1].reg
    if src[:2] in ("cr", "dr") and src[2:].isdigit():
        n = int(src[2:])
        rf.write(dst, read_cr(em, vcpu, n) if src[:2] == "cr" else read_dr(vcpu, n))
    elif dst[:2] in ("cr", "dr") and dst[2:].isdigit():
        n = int(dst[2:])
        (write_cr if dst[:2] == "cr" else write_dr)(em, vcpu, n, rf.read(src))
    else:
        raise NotEmulated


def read_cr(em, vcpu, n: int) -> int:
    if n == 0:
        cr0 = vcpu.fetch_sregs().cr0 & ~CR0_TS
        return cr0 | (CR0_TS if vcpu.pv.cr0_ts else 0)
    if n == 2:
        return vcpu.vcpu_info.cr2 if vcpu.vcpu_info is not None else 0
    if n == 3:
        return vcpu.pv.kernel_l4 << 12
    if n == 4:
        return em.vstate(vcpu).cr4
    raise NotEmulated


def write_cr(em, vcpu, n: int, val: int) -> None:
    if n == 0:
        if (val ^ vcpu.fetch_sregs().cr0) & ~CR0_TS & 0xFFFFFFFF or val >> 32:
            vcpu.domain.log_guest_error(vcpu, f"mov to cr0 {val:#x} changes more than TS")
            raise NotEmulated
        vcpu.set_cr0_ts(bool(val & CR0_TS))
    elif n == 2:
        if vcpu.vcpu_info is not None:
            vcpu.vcpu_info.cr2 = val
    elif n == 3:
        new_baseptr(vcpu, val >> 12)
    elif n == 4:
        set_cr4(em, vcpu, val)
    else:
        raise NotEmulated


def new_baseptr(vcpu, mfn: int) -> None:
    """mov to %cr3: Xen's new_guest_cr3, i.e. MMUEXT_NEW_BASEPTR (the
    vCPU's one baseptr switch); a refused table leaves the #GP standing."""
    try:
        vcpu.switch_baseptr(mfn)
    except PageTableError as e:
        vcpu.domain.log_guest_error(vcpu, f"mov to cr3 {mfn << 12:#x}: {e}")
        raise NotEmulated from None


def guest_cr4_fixup(em, vcpu, cr4: int) -> int:
    """Xen's pv_fixup_guest_cr4: the guest's choice of TSD/DE/FSGSBASE/OSXSAVE
    (as far as its CPUID allows) plus the hardware bits it may observe."""
    pol = em.policy(vcpu)
    if not pol.has("TSC"):
        cr4 &= ~CR4_TSD
    if not pol.has("DE"):
        cr4 &= ~CR4_DE
    if not pol.has("FSGSBASE"):
        cr4 &= ~CR4_FSGSBASE
    if not pol.has("XSAVE"):
        cr4 &= ~CR4_OSXSAVE
    return (cr4 & CR4_GUEST_MASK) | (vcpu.fetch_sregs().cr4 & CR4_GUEST_VISIBLE)


def set_cr4(em, vcpu, val: int) -> None:
    st = em.vstate(vcpu)
    st.cr4 = guest_cr4_fixup(em, vcpu, val)
    s = vcpu.fetch_sregs()
    s.cr4 = (s.cr4 & ~CR4_TO_HARDWARE) | (st.cr4 & CR4_TO_HARDWARE)
    vcpu.sregs_changed()


def read_dr(vcpu, n: int) -> int:
    from ..hypercalls.misc import get_debugreg
    return _dr_result(get_debugreg(vcpu, n))


def write_dr(em, vcpu, n: int, val: int) -> None:
    from ..hypercalls.misc import set_debugreg
    _dr_result(set_debugreg(vcpu, n, val))


def _dr_result(rc: int) -> int:
    """Xen's mapping of set/get_debugreg errors for a mov: -ENODEV is #UD
    (%dr4/5 with CR4.DE), anything else negative #GP(0)."""
    if rc == -19:
        raise Fault(6)
    if rc < 0 and rc > -4096:
        raise Fault(13, 0)
    return rc


# --- MSRs ----------------------------------------------------------------------------------
def guest_tsc(vcpu) -> int:
    return vcpu.kvcpu.get_msrs([MSR_TSC]).get(MSR_TSC, 0)


def guest_misc_enable(val: int) -> int:
    val &= ~(MISC_ENABLE_PERF_AVAIL | MISC_ENABLE_MONITOR_ENABLE)
    return val | MISC_ENABLE_BTS_UNAVAIL | MISC_ENABLE_PEBS_UNAVAIL | MISC_ENABLE_XTPR_DISABLE


def _family(pol) -> int:
    eax = pol.leaf(1)[0]
    fam = (eax >> 8) & 0xF
    return fam + ((eax >> 20) & 0xFF) if fam == 0xF else fam


def read_msr(em, vcpu, msr: int) -> int:
    """Xen's read_msr for a 64-bit PV guest; a #GP for everything not listed."""
    s = vcpu.fetch_sregs()
    pol = em.policy(vcpu)
    if msr == MSR_FS_BASE:
        return s.fs.base
    if msr == MSR_GS_BASE:
        return s.gs.base
    if msr == MSR_SHADOW_GS_BASE:
        return vcpu.pv.gs_base_user
    if msr == MSR_EFER:
        return s.efer
    if msr == MSR_TSC:
        return guest_tsc(vcpu)
    if msr == MSR_TSC_AUX:
        if not pol.has("RDTSCP"):
            return 0
        return vcpu.kvcpu.get_msrs([MSR_TSC_AUX]).get(MSR_TSC_AUX, 0)
    if msr == MSR_IA32_CR_PAT:
        return XEN_MSR_PAT
    if msr in (MSR_INTEL_PLATFORM_INFO, MSR_INTEL_MISC_FEATURES_ENABLES):
        return 0                 # no CPUID faulting on offer: native cpuid is untouchable here
    if msr in (MSR_IA32_PERF_CAPABILITIES, MSR_IA32_DEBUGCTL):
        return 0                 # DEBUGCTL: no LBR/BTF/BTS for a PV guest (XTF debug-regs)
    if msr == MSR_IA32_MISC_ENABLE and not pol.amd:
        v = vcpu.kvcpu.get_msrs([msr]).get(msr)
        if v is None:
            raise Fault(13, 0)
        return guest_misc_enable(v)
    if pol.amd and (msr in AMD_ZERO_MSRS or
                    (msr in AMD_FAM10_ZERO_MSRS and 0x10 <= _family(pol) < 0x17)):
        return 0
    raise Fault(13, 0)


def write_msr(em, vcpu, msr: int, val: int) -> None:
    s = vcpu.fetch_sregs()
    pv = vcpu.pv
    pol = em.policy(vcpu)
    if msr in (MSR_FS_BASE, MSR_GS_BASE, MSR_SHADOW_GS_BASE):
        if not canonical(val):
            raise Fault(13, 0)
        if msr == MSR_FS_BASE:
            s.fs.base = val
        elif msr == MSR_GS_BASE:
            s.gs.base = val
            pv.gs_base_kernel = val
        else:
            pv.gs_base_user = val
        vcpu.sregs_changed()
        return
    if msr in (MSR_INTEL_MISC_FEATURES_ENABLES, MSR_IA32_DEBUGCTL):
        if val:
            raise Fault(13, 0)
        return
    if msr == MSR_XEN_HYPERCALL_PAGE:
        _write_hypercall_page(vcpu, val)
        return
    if msr in (MSR_EFER, MSR_IA32_MISC_ENABLE) and not (msr == MSR_IA32_MISC_ENABLE and pol.amd):
        # Xen: a write of another value is logged and ignored
        if msr == MSR_EFER and val != s.efer:
            vcpu.domain.log_guest_error(vcpu, f"wrmsr EFER {val:#x} ignored")
        return
    if pol.amd and msr in AMD_ZERO_MSRS:
        return
    raise Fault(13, 0)


def _write_hypercall_page(vcpu, val: int) -> None:
    """MSR 0x40000000 (CPUID 0x40000002): write the hypercall page into a frame."""
    if val & 0xFFF:                 # page index: Xen has one hypercall page
        raise Fault(13, 0)
    mfn = val >> 12
    dom = vcpu.domain
    mm = dom.mm
    if not mm.owns(mfn) or (mm.tcount[mfn] and mm.ptype[mfn] not in (PGT_WRITABLE, PGT_NONE)):
        raise Fault(13, 0)
    from ...build.x86_64 import hypercall_page
    page = hypercall_page(L.PORT_HYPERCALL)
    mm.ram[mfn << 12:(mfn << 12) + len(page)] = page
    mm.mark_dirty(mfn)


# --- XCR0 -----------------------------------------------------------------------------------------
def _xsetbv(em, vcpu, rf: RegFile) -> None:
    """xsetbv as Xen emulates it for a PV guest (x86_emulate + handle_xsetbv):
    #UD without the guest's CR4.OSXSAVE, #GP from user mode, for an XCR other
    than 0, or for a value outside the offered leaf 0xd or against the
    architectural dependencies (xstate.valid_xcr0). An accepted value becomes
    the vCPU's XCR0, which leaf 0xd's sizes follow. The hardware's XCR0 stays
    the host's (PVM keeps it in force): docs/design.md, "FPU state"."""
    st = em.vstate(vcpu)
    if not st.cr4 & CR4_OSXSAVE:
        raise Fault(6)
    if not vcpu.pv.kernel_mode:
        raise NotEmulated
    val = (rf.read("edx") & 0xFFFFFFFF) << 32 | (rf.read("eax") & 0xFFFFFFFF)
    xs = em.policy(vcpu).xstate
    if rf.read("ecx") & 0xFFFFFFFF != 0 or xs is None or not xs.xsetbv_ok(val):
        vcpu.domain.log_guest_error(vcpu, f"xsetbv {rf.read('ecx') & 0xFFFFFFFF} {val:#x}: #GP "
                                    f"(offered XCR0 {xs.max_xcr0 if xs else 0:#x})")
        raise NotEmulated
    st.xcr0 = val
    declined = xs.max_xcr0 & ~val & ~st.warned_unsaved
    if declined:
        # offered state guest user space uses natively (CPUID and XCR0 are the
        # host's to it) that this kernel will not save at its task switches
        vcpu.domain.log.warning("d%dv%d: xsetbv %#x leaves out offered state %#x that guest "
                                "user space can use (host XCR0 %#x): it is not saved at task "
                                "switches", vcpu.domain.domid, vcpu.id, val, declined,
                                xs.host_xcr0)
        st.warned_unsaved |= declined


# --- cpuid -------------------------------------------------------------------------------------
def _cpuid(em, vcpu, rf: RegFile, forced: bool = False) -> None:
    """forced: asked through the forced-emulation prefix (#UD), not a #GP."""
    st = em.vstate(vcpu)
    a, b, c, d = em.policy(vcpu).guest_leaf(rf.read("eax"), rf.read("ecx"), xcr0=st.xcr0,
                                            cr4_osxsave=bool(st.cr4 & CR4_OSXSAVE),
                                            kernel=vcpu.pv.kernel_mode, forced=forced)
    rf.write("eax", a)
    rf.write("ebx", b)
    rf.write("ecx", c)
    rf.write("edx", d)


# --- port I/O ----------------------------------------------------------------------------------
def iopl_ok(vcpu) -> bool:
    return vcpu.iopl_ok()


def _read_kernel(vcpu, va: int, n: int) -> bytes | None:
    """Read through the guest kernel's page tables (the I/O bitmap is a kernel
    address even when user mode asks)."""
    mm = vcpu.domain.mm
    out = bytearray()
    for i in range(n):
        t = mm.walk(vcpu.pv.kernel_l4, (va + i) & MASK64)
        if t is None or t[0] >= mm.nr_pages << 12:
            return bytes(out)
        out += bytes(mm.ram[t[0]:t[0] + 1])
    return bytes(out)


def guest_io_okay(vcpu, port: int, size: int) -> bool:
    if iopl_ok(vcpu):
        return True
    bm = getattr(vcpu.pv, "iobitmap", None)
    if bm and bm[1] > port + size:
        got = _read_kernel(vcpu, bm[0] + (port >> 3), 2) or b""
        got = got + b"\xff" * (2 - len(got))
        mask = struct.unpack("<H", got)[0]
        return (mask & (((1 << size) - 1) << (port & 7))) == 0
    return False


def io_read(em, port: int, size: int) -> int:
    """Xen's guest_io_read for a domain without I/O ports (PIT channel 2: pit.py)."""
    io = em.io
    data, shift = 0, 0
    while size:
        sub = 0xFF
        if port == RTC_PORT0:
            sub = io.cmos_idx
        elif port in PIT_PORTS:
            sub = io.pit.read(port)
        elif port == PCI_CF8 and size == 4:
            return io.pci_cf8
        data |= (sub & 0xFF) << shift
        shift += 8
        port += 1
        size -= 1
    return data


def io_write(em, port: int, size: int, data: int) -> None:
    io = em.io
    while size:
        if port == RTC_PORT0:
            io.cmos_idx = data & 0xFF
        elif port in PIT_PORTS:
            io.pit.write(port, data)
        elif port == PCI_CF8 and size == 4:
            io.pci_cf8 = data & 0xFFFFFFFF
            return
        port += 1
        size -= 1
        data >>= 8


def _io(em, vcpu, insn, rf: RegFile, rflags: int) -> tuple[int, int]:
    iid = insn.id
    ops = insn.operands
    if iid in (X.X86_INS_IN, X.X86_INS_OUT):
        data_op, port_op = (ops[0], ops[1]) if iid == X.X86_INS_IN else (ops[1], ops[0])
        port = port_op.imm & 0xFF if port_op.kind == "imm" else rf.read("dx")
        size = data_op.size
        if not guest_io_okay(vcpu, port, size):
            raise NotEmulated
        em.stats["io"] += 1
        if iid == X.X86_INS_IN:
            rf.write(data_op.reg, io_read(em, port, size))
        else:
            io_write(em, port, size, rf.read(data_op.reg))
        return insn.next_rip, rflags
    # ins / outs: string forms, port in %dx
    port = rf.read("dx")
    mem = insn.mem_operand()
    size = mem.size
    if not guest_io_okay(vcpu, port, size):
        raise NotEmulated
    em.stats["io"] += 1
    areg = mem.base                       # rdi/edi (ins) or rsi/esi (outs)
    creg = "ecx" if insn.addr32 else "rcx"
    count = rf.read(creg) if insn.rep else 1
    step = -size if rflags & DF else size
    done = 0
    is_in = iid in (X.X86_INS_INSB, X.X86_INS_INSW, X.X86_INS_INSD)
    while done < count and done < MAX_REP:
        addr = effective_address(mem, rf, insn, vcpu)
        try:
            if is_in:
                vcpu.mem.write(addr, io_read(em, port, size).to_bytes(size, "little"))
            else:
                io_write(em, port, size, int.from_bytes(vcpu.mem.read(addr, size), "little"))
        except GuestFault as f:
            ec = (PFEC_W if is_in else 0) | (0 if vcpu.pv.kernel_mode else PFEC_U)
            if insn.rep:
                rf.write(creg, count - done)
            raise Fault(14, ec, f.va) from None
        rf.write(areg, rf.read(areg) + step)
        done += 1
    if not insn.rep:
        return insn.next_rip, rflags
    rf.write(creg, count - done)
    # a long rep is split like an interrupted one: resume at the instruction
    return (insn.next_rip if done == count else insn.address), rflags
