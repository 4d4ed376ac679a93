"""The read-only M2P at its ABI address (Xen's RO_MPT at MACH2PHYS_VIRT_START).

Xen's public headers fix where a 64-bit PV guest finds the machine-to-phys
table: MACH2PHYS_VIRT_START = 0xFFFF800000000000 (PML4 slot 256), mapped
read-only and user-readable in every guest L4. Guests may read it there
directly instead of asking XENMEM_machphys_mapping (XTF does).

Slot 256 cannot be mapped on this host's KVM (DESIGN.md section 2), so a load
from that range faults (#PF, not present). pyxen completes it: the
instruction is decoded, the bytes come from pyxen's own M2P (the table that
slot 257 maps, which XENMEM_machphys_mapping reports), the destination
register and flags are written and the guest resumes after the instruction.
What the guest sees is what Xen gives:

* a load inside the populated table returns the entries (mfn == pfn for the
  guest's own frames, INVALID_M2P_ENTRY for frames it gave back);
* a load past the populated table is the guest's #PF (not present), as on
  Xen, where the table ends at the machine's last frame;
* a store anywhere in the range is the guest's #PF with P|W set, as for
  Xen's read-only mapping; so is an instruction fetch.

Load forms completed: mov / movzx / movsx / movsxd into a register, cmp and
test against a register or immediate, and add/sub/and/or/xor/adc-free ALU
forms with a register destination. Anything else keeps its #PF.
"""
from __future__ import annotations

from capstone import x86_const as X

from .. import layout as L
from ..abi import MACH2PHYS_VIRT_START, MACH2PHYS_VIRT_END
from .decode import (MASK64, decode_at, effective_address, flags_add, flags_logic,
                     flags_sub, merge_flags)

PFEC_P, PFEC_W, PFEC_I = 1, 2, 16

_MOVES = {X.X86_INS_MOV, X.X86_INS_MOVABS, X.X86_INS_MOVZX, X.X86_INS_MOVSX, X.X86_INS_MOVSXD}
_ALU = {X.X86_INS_ADD: "add", X.X86_INS_SUB: "sub", X.X86_INS_AND: "and",
        X.X86_INS_OR: "or", X.X86_INS_XOR: "xor"}


def in_range(va: int) -> bool:
    return MACH2PHYS_VIRT_START <= va < MACH2PHYS_VIRT_END


def _sext(v: int, size: int) -> int:
    bits = size * 8
    return v - (1 << bits) if v >> (bits - 1) else v


def emulate_pf(em, vcpu, err: int, cr2: int, rip: int, cs: int, rflags: int,
               rsp: int, ss: int) -> bool:
    """Complete a load from the ABI M2P range, or give the guest Xen's fault.
    Returns True when the fault was dealt with (the guest resumes or was
    handed its #PF); False is only for addresses outside the range."""
    if not in_range(cr2):
        return False
    heap = vcpu.domain.heap
    limit = heap.m2p_pages * L.PAGE_SIZE           # bytes of populated table
    if err & (PFEC_W | PFEC_I):
        return _fault(vcpu, err | PFEC_P, cr2, rip, cs, rflags, rsp, ss)
    got = decode_at(em.decoder, vcpu, rip, rsp)
    if got is None:
        return _fault(vcpu, err, cr2, rip, cs, rflags, rsp, ss)
    insn, rf = got
    ops = insn.operands
    src = insn.mem_operand()
    if src is not None and ops[0].kind == "mem" and insn.id not in (X.X86_INS_CMP, X.X86_INS_TEST):
        # a store to the read-only table (the #PF said read: e.g. a
        # read-modify-write): Xen's write fault
        return _fault(vcpu, err | PFEC_P | PFEC_W, cr2, rip, cs, rflags, rsp, ss)
    if src is None or len(ops) != 2:
        vcpu.domain.trace(vcpu.id, "m2p", f"not completed at rip={rip:#x} ({insn})")
        return _fault(vcpu, err, cr2, rip, cs, rflags, rsp, ss)
    ea = effective_address(src, rf, insn, vcpu)
    size = src.size
    off = ea - MACH2PHYS_VIRT_START
    if not in_range(ea) or off + size > limit:
        # past the table's end (or straddling it): not present, as on Xen
        return _fault(vcpu, err, max(cr2, MACH2PHYS_VIRT_START + limit), rip, cs, rflags, rsp, ss)
    value = int.from_bytes(bytes(heap.mm[heap.m2p_off + off:heap.m2p_off + off + size]), "little")
    iid = insn.id
    if iid in _MOVES:
        dst = ops[0]
        if iid in (X.X86_INS_MOVSX, X.X86_INS_MOVSXD):
            value = _sext(value, size) & MASK64
        rf.write(dst.reg, value)
    elif iid in (X.X86_INS_CMP, X.X86_INS_TEST):
        other = ops[1] if ops[0].kind == "mem" else ops[0]
        b = other.imm if other.kind == "imm" else rf.read(other.reg)
        if ops[0].kind == "mem":
            a, b2 = value, b
        else:
            a, b2 = b, value
        if iid == X.X86_INS_CMP:
            rflags = merge_flags(rflags, flags_sub(a, b2, size))
        else:
            rflags = merge_flags(rflags, flags_logic(a & b2, size))
    elif iid in _ALU and ops[0].kind == "reg":
        a = rf.read(ops[0].reg)
        op = _ALU[iid]
        mask = (1 << (size * 8)) - 1
        if op == "add":
            res, fl = a + value, flags_add(a, value, size)
        elif op == "sub":
            res, fl = a - value, flags_sub(a, value, size)
        elif op == "and":
            res = a & value
            fl = flags_logic(res, size)
        elif op == "or":
            res = a | value
            fl = flags_logic(res, size)
        else:
            res = a ^ value
            fl = flags_logic(res, size)
        rf.write(ops[0].reg, res & mask)
        rflags = merge_flags(rflags, fl)
    else:
        vcpu.domain.trace(vcpu.id, "m2p", f"not completed at rip={rip:#x} ({insn})")
        return _fault(vcpu, err, cr2, rip, cs, rflags, rsp, ss)
    em.stats["m2p"] += 1
    if rf.dirty:
        vcpu.regs_changed()
    vcpu.set_return(insn.next_rip, rf.rsp, rflags, cs, ss)
    return True


def _fault(vcpu, err, cr2, rip, cs, rflags, rsp, ss) -> bool:
    if vcpu.vcpu_info is not None:
        vcpu.vcpu_info.cr2 = cr2
    vcpu.inject_trap(14, err, rip, cs, rflags, rsp, ss)
    return True
