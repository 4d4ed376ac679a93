"""Writable page tables (Xen's arch/x86/pv/ro-page-fault.c, "ptwr").

A PV guest kernel stores straight into one of its own L1 page-table pages
through the read-only mapping Xen insists on. The store faults (#PF with
P|W); here the instruction is decoded, the new entry computed, validated
like mmu_update (mm.update_entry) and written; the guest resumes after the
instruction. Like Xen:

* only in guest kernel mode, only for a write to a present read-only
  mapping, only when VMASST_TYPE_writable_pagetables is on;
* only for L1 tables (Xen's VMASST doc: "Page-directory entries cannot be
  written"): a store into an L2/L3/L4 page is a #PF for the guest;
* only naturally aligned 1, 2, 4 or 8-byte stores (or cmpxchg8b) inside
  the faulting page; a smaller store is merged with the rest of its entry;
* an entry the validator refuses leaves memory unchanged and the guest
  gets the original #PF (Xen: X86EMUL_UNHANDLEABLE -> the fault stands).

Store forms emulated: mov (from a register or an immediate), xchg, cmpxchg
(any size, lock or not) and cmpxchg8b, and/or/xor/add/sub with a register
or immediate source, bts/btr/btc with a register or immediate bit offset.
"""
from __future__ import annotations

from capstone import x86_const as X

from ..mm import PGT_L1, PageTableError
from .decode import (RegFile, decode_at, effective_address, flags_add,
                     flags_logic, flags_sub, merge_flags, CF, ZF, MASK64)

PFEC_P, PFEC_W, PFEC_U, PFEC_RSVD, PFEC_I = 1, 2, 4, 8, 16
VMASST_WRITABLE_PAGETABLES = 2

_ARITH = {X.X86_INS_OR, X.X86_INS_AND, X.X86_INS_XOR, X.X86_INS_ADD, X.X86_INS_SUB}
_BITOPS = {X.X86_INS_BTS, X.X86_INS_BTR, X.X86_INS_BTC}


class Unhandled(Exception):
    """Not a store this emulator performs: the guest gets its #PF."""


def enabled(domain) -> bool:
    return bool(domain.vm_assist & (1 << VMASST_WRITABLE_PAGETABLES))


def emulate_pf(em, vcpu, err, cr2, rip, cs, rflags, rsp, ss) -> bool:
    dom = vcpu.domain
    if not enabled(dom) or not vcpu.pv.kernel_mode:
        return False
    if (err & (PFEC_P | PFEC_W | PFEC_RSVD | PFEC_I)) != (PFEC_P | PFEC_W):
        return False
    mm = dom.mm
    t = mm.walk(vcpu.pv.kernel_l4, cr2)
    if t is None:
        return False
    gpa, writable, _user = t
    mfn = gpa >> 12
    if writable or not mm.owns(mfn) or mm.tcount[mfn] == 0 or mm.ptype[mfn] != PGT_L1:
        return False
    got = decode_at(em.decoder, vcpu, rip, rsp)
    if got is None:
        return False
    insn, rf = got
    try:
        rflags = _perform(vcpu, insn, rf, cr2, mfn, rflags)
    except Unhandled as e:
        dom.trace(vcpu.id, "ptwr", f"not emulated at rip={rip:#x} ({insn}): {e}")
        return False
    except PageTableError as e:
        dom.trace(vcpu.id, "ptwr", f"refused at rip={rip:#x} ({insn}): {e}")
        return False
    em.stats["ptwr"] += 1
    if rf.dirty:
        vcpu.regs_changed()
    vcpu.set_return(insn.next_rip, rf.rsp, rflags, cs, ss)
    return True


def _source(op, rf: RegFile, size: int) -> int:
    if op.kind == "reg":
        return rf.read(op.reg)
    if op.kind == "imm":
        return op.imm & ((1 << (size * 8)) - 1)
    raise Unhandled("memory source")


def _perform(vcpu, insn, rf: RegFile, cr2: int, mfn: int, rflags: int) -> int:
    """Do the store; returns the new rflags."""
    mm = vcpu.domain.mm
    iid = insn.id
    ops = insn.operands
    dst = ops[0] if ops else None
    if iid == X.X86_INS_XCHG and dst is not None and dst.kind != "mem":
        ops = (ops[1], ops[0])            # xchg reg, mem: same thing
        dst = ops[0]
    if dst is None or dst.kind != "mem":
        raise Unhandled("no memory destination")
    size = dst.size
    ea = effective_address(dst, rf, insn, vcpu)
    if iid in _BITOPS:
        # bit-string addressing: a register offset may select another word
        bits = size * 8
        if ops[1].kind == "reg":
            off = rf.read(ops[1].reg)
            if off >> (bits - 1):
                off -= 1 << bits               # signed
            ea = (ea + (off >> (bits.bit_length() - 1)) * size) & MASK64
            bit = off & (bits - 1)
        else:
            bit = ops[1].imm & (bits - 1)
    if size not in (1, 2, 4, 8):
        raise Unhandled(f"{size}-byte store")
    if (ea ^ cr2) & ~0xFFF or ea & (size - 1):
        raise Unhandled(f"store to {ea:#x} is not aligned inside the faulting page {cr2:#x}")

    idx = (ea & 0xFFF) >> 3
    shift = (ea & 7) * 8
    mask = ((1 << (size * 8)) - 1) << shift
    full = mm.read_entry(mfn, idx)
    cur = (full & mask) >> shift

    def store(value: int) -> None:
        new_full = (full & ~mask) | ((value << shift) & mask)
        mm.update_entry((mfn << 12) | (idx << 3), new_full)

    if iid in (X.X86_INS_MOV, X.X86_INS_MOVABS):
        store(_source(ops[1], rf, size))
        return rflags
    if iid == X.X86_INS_XCHG:
        if ops[1].kind != "reg":
            raise Unhandled("xchg without a register")
        store(rf.read(ops[1].reg))
        rf.write(ops[1].reg, cur)
        return rflags
    if iid == X.X86_INS_CMPXCHG:
        acc = {1: "al", 2: "ax", 4: "eax", 8: "rax"}[size]
        expected = rf.read(acc)
        flags = flags_sub(expected, cur, size)
        if expected == cur:
            store(rf.read(ops[1].reg))
        else:
            rf.write(acc, cur)
        return merge_flags(rflags, flags)
    if iid == X.X86_INS_CMPXCHG8B:
        expected = (rf.read("edx") << 32) | rf.read("eax")
        if expected == cur:
            store((rf.read("ecx") << 32) | rf.read("ebx"))
            return rflags | ZF
        rf.write("eax", cur & 0xFFFFFFFF)
        rf.write("edx", cur >> 32)
        return rflags & ~ZF
    if iid in _ARITH:
        src = _source(ops[1], rf, size)
        if iid == X.X86_INS_OR:
            res, flags = cur | src, flags_logic(cur | src, size)
        elif iid == X.X86_INS_AND:
            res, flags = cur & src, flags_logic(cur & src, size)
        elif iid == X.X86_INS_XOR:
            res, flags = cur ^ src, flags_logic(cur ^ src, size)
        elif iid == X.X86_INS_ADD:
            res, flags = cur + src, flags_add(cur, src, size)
        else:
            res, flags = cur - src, flags_sub(cur, src, size)
        store(res)
        return merge_flags(rflags, flags)
    if iid in _BITOPS:
        old = (cur >> bit) & 1
        if iid == X.X86_INS_BTS:
            res = cur | (1 << bit)
        elif iid == X.X86_INS_BTR:
            res = cur & ~(1 << bit)
        else:
            res = cur ^ (1 << bit)
        store(res)
        return merge_flags(rflags, CF if old else 0, CF)
    raise Unhandled(f"instruction {insn.mnemonic}")
