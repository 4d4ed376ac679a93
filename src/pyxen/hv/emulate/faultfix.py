"""Faults as the hardware (and so Xen) reports them, where this host's KVM
reports them differently.

PVM completes a #GP raised by guest code in its own instruction emulator
before it reaches pyxen's IDT, and that emulator differs from the CPU in
two ways a guest can see (XTF memop-seg and xsa-298 show both):

* an explicit %ss override on a non-canonical memory operand gives #SS(0)
  there, where the CPU (64-bit mode ignores the CS/DS/ES/SS overrides) gives
  #GP(0) unless the operand is %rsp/%rbp-based — measured on this host: the
  same `ss movl (%rax)` natively is SIGSEGV (#GP);
* a far call/jmp through a selector the guest has no descriptor for gives
  #GP(0), where the CPU (and Xen, which emulates gates for PV guests) gives
  #GP(selector).

fix() turns such a fault back into the CPU's; everything else is left as it
came. It runs only on #SS/#GP with error code 0 (rare: not on any hot path).
"""
from __future__ import annotations

from capstone import x86_const as X

from ..guestmem import GuestFault
from .decode import decode_at, effective_address

_STACK_BASES = {"rsp", "rbp", "esp", "ebp"}
_FAR = {X.X86_INS_LCALL, X.X86_INS_LJMP}
SEL_TI = 4


def fix(em, vcpu, vec: int, err: int, rip: int, rsp: int) -> tuple[int, int]:
    """(vector, error code) the CPU would have raised for this fault."""
    if err != 0 or vec not in (12, 13):
        return vec, err
    got = decode_at(em.decoder, vcpu, rip, rsp)
    if got is None:
        return vec, err
    insn, rf = got
    mem = insn.mem_operand()
    if vec == 12:
        if mem is not None and mem.seg == "ss" and mem.base not in _STACK_BASES and \
                insn.id not in (X.X86_INS_PUSH, X.X86_INS_POP):
            return 13, 0
        return vec, err
    if insn.id in _FAR and mem is not None:
        ea = effective_address(mem, rf, insn, vcpu)
        # m16:64 with REX.W on Intel; AMD ignores REX.W here (m16:32)
        off = 8 if mem.size == 10 and not em.policy(vcpu).amd else 4
        try:
            sel = int.from_bytes(vcpu.mem.read(ea + off, 2), "little")
        except GuestFault:
            return vec, err
        if sel & SEL_TI and (sel >> 3) >= vcpu.pv.ldt_entries:
            return 13, sel & ~3
    return vec, err
