"""Architectural CPU state for a PV vCPU on KVM: control registers, MSRs,
segment registers, and the selectors' cached descriptors."""
from __future__ import annotations

from ..kvm import structs as KS
from . import layout as L
from .abi import FLAT_RING3_CS64, FLAT_RING3_SS64

CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_AM, CR0_PG = 1, 2, 0x10, 0x20, 1 << 16, 1 << 18, 1 << 31
CR0_TS = 8
CR4_PAE, CR4_PGE, CR4_OSFXSR, CR4_OSXMMEXCPT = 1 << 5, 1 << 7, 1 << 9, 1 << 10
EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE = 1, 1 << 8, 1 << 10, 1 << 11

MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SFMASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102

RFLAGS_IF, RFLAGS_IOPL3, RFLAGS_TF, RFLAGS_DF, RFLAGS_NT, RFLAGS_AC = 0x200, 0x3000, 0x100, 0x400, 0x4000, 0x40000
RFLAGS_RESERVED1 = 0x2


def flat_segment(seg: KS.Segment, selector: int, code64: bool, dpl: int = 3) -> None:
    seg.base = 0
    seg.limit = 0xFFFFFFFF
    seg.selector = selector
    seg.present = 1
    seg.dpl = dpl
    seg.s = 1
    seg.g = 1
    seg.unusable = 0
    if code64:
        seg.type, seg.l, seg.db = 0xB, 1, 0
    else:
        seg.type, seg.l, seg.db = 0x3, 0, 1


def null_segment(seg: KS.Segment, base: int = 0) -> None:
    seg.base = base
    seg.limit = 0
    seg.selector = 0
    seg.type = 0
    seg.present = 0
    seg.dpl = 0
    seg.db = seg.s = seg.l = seg.g = seg.avl = 0
    seg.unusable = 1


def segment_from_descriptor(seg: KS.Segment, selector: int, desc: int) -> None:
    """Fill a KVM segment from an 8-byte GDT/LDT descriptor."""
    seg.selector = selector
    seg.base = ((desc >> 16) & 0xFFFFFF) | (((desc >> 56) & 0xFF) << 24)
    limit = (desc & 0xFFFF) | (((desc >> 48) & 0xF) << 16)
    seg.g = (desc >> 55) & 1
    seg.limit = (limit << 12) | 0xFFF if seg.g else limit
    seg.type = (desc >> 40) & 0xF
    seg.s = (desc >> 44) & 1
    seg.dpl = (desc >> 45) & 3
    seg.present = (desc >> 47) & 1
    seg.avl = (desc >> 52) & 1
    seg.l = (desc >> 53) & 1
    seg.db = (desc >> 54) & 1
    seg.unusable = 0 if seg.present else 1


def initial_sregs(sregs: KS.Sregs, cpu: int, gdt_base: int, tss_base: int, cr3: int) -> None:
    flat_segment(sregs.cs, FLAT_RING3_CS64, True)
    flat_segment(sregs.ss, FLAT_RING3_SS64, False)
    for s in (sregs.ds, sregs.es, sregs.fs, sregs.gs):
        null_segment(s)
    tr = sregs.tr
    tr.selector, tr.base, tr.limit, tr.type = L.TSS_SEL, tss_base, L.TSS_LIMIT, 0xB
    tr.present, tr.dpl, tr.s, tr.l, tr.db, tr.g, tr.unusable = 1, 0, 0, 0, 0, 0, 0
    null_segment(sregs.ldt)
    sregs.gdt.base, sregs.gdt.limit = gdt_base, L.GDT_SIZE - 1
    sregs.idt.base, sregs.idt.limit = L.priv(L.IDT_OFF), 256 * 16 - 1
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
    sregs.cr3 = cr3
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE
    sregs.cr2 = 0
    sregs.cr8 = 0
    for i in range(4):
        sregs.interrupt_bitmap[i] = 0


def initial_msrs(lstar: int, cstar: int) -> dict[int, int]:
    return {
        MSR_STAR: (L.HYP_CS << 32) | ((FLAT_RING3_CS64 - 16) << 48),
        MSR_LSTAR: lstar,
        MSR_CSTAR: cstar,
        MSR_SFMASK: RFLAGS_TF | RFLAGS_DF | RFLAGS_NT | RFLAGS_AC,
        MSR_KERNEL_GS_BASE: 0,
    }
