"""Instruction decoding for the emulators: capstone (x86-64, detail on),
digested into small plain records and cached by (address, bytes).

Also the guest register file as the emulators see it (the GPRs from the
vCPU's synced registers, %rsp/%rip/%rflags from the trap frame) and the
arithmetic-flag helpers the read-modify-write forms need.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_64, Cs, CsError
from capstone import x86_const as X

from ..guestmem import GuestFault

MAX_INSN = 15
MASK64 = (1 << 64) - 1

# arithmetic flags
CF, PF, AF, ZF, SF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800
ARITH_FLAGS = CF | PF | AF | ZF | SF | OF
DF = 0x400

PREFIX_LOCK, PREFIX_REP, PREFIX_REPNE = 0xF0, 0xF3, 0xF2
PREFIX_OPSIZE, PREFIX_ADDRSIZE = 0x66, 0x67


# --- registers -------------------------------------------------------------
_GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def _register_names() -> dict[str, tuple[str, int, int]]:
    """capstone register name -> (64-bit register, size in bytes, bit shift)."""
    m: dict[str, tuple[str, int, int]] = {}
    for r in _GPRS:
        m[r] = (r, 8, 0)
    for x in "abcd":
        full = f"r{x}x"
        m[f"e{x}x"] = (full, 4, 0)
        m[f"{x}x"] = (full, 2, 0)
        m[f"{x}l"] = (full, 1, 0)
        m[f"{x}h"] = (full, 1, 8)
    for x in ("sp", "bp", "si", "di"):
        full = f"r{x}"
        m[f"e{x}"] = (full, 4, 0)
        m[x] = (full, 2, 0)
        m[f"{x}l"] = (full, 1, 0)
    for i in range(8, 16):
        full = f"r{i}"
        m[f"r{i}d"] = (full, 4, 0)
        m[f"r{i}w"] = (full, 2, 0)
        m[f"r{i}b"] = (full, 1, 0)
    return m


REGISTERS = _register_names()


class RegFile:
    """The interrupted guest's registers: GPRs live in the vCPU's kvm_regs
    (shared kvm_run page); %rsp comes from the trap frame (the kvm_regs
    %rsp is pyxen's CPL0 stub stack at this point)."""

    def __init__(self, regs, rsp: int, rip: int):
        self.regs = regs
        self.rsp = rsp
        self.rip = rip
        self.dirty = False

    def get64(self, name: str) -> int:
        if name == "rsp":
            return self.rsp
        return getattr(self.regs, name)

    def set64(self, name: str, value: int) -> None:
        value &= MASK64
        if name == "rsp":
            self.rsp = value
        else:
            setattr(self.regs, name, value)
            self.dirty = True

    def read(self, reg: str) -> int:
        full, size, shift = REGISTERS[reg]
        return (self.get64(full) >> shift) & ((1 << (size * 8)) - 1)

    def write(self, reg: str, value: int) -> None:
        """Write a (sub-)register with x86-64 rules: a 32-bit write zero-extends,
        8/16-bit writes keep the other bits."""
        full, size, shift = REGISTERS[reg]
        value &= (1 << (size * 8)) - 1
        if size == 8 or size == 4:
            self.set64(full, value)
            return
        mask = ((1 << (size * 8)) - 1) << shift
        self.set64(full, (self.get64(full) & ~mask) | (value << shift))


# --- decoded instructions ------------------------------------------------------
@dataclass(frozen=True)
class Operand:
    kind: str                  # "reg", "imm" or "mem"
    size: int                  # bytes
    reg: str | None = None     # kind == "reg": capstone register name
    imm: int = 0               # kind == "imm": sign-extended value
    seg: str | None = None     # kind == "mem": segment override (fs/gs matter)
    base: str | None = None
    index: str | None = None
    scale: int = 1
    disp: int = 0


@dataclass(frozen=True)
class Insn:
    address: int
    length: int
    id: int                    # capstone X86_INS_*
    mnemonic: str
    text: str
    operands: tuple[Operand, ...]
    lock: bool
    rep: bool
    addr32: bool

    @property
    def next_rip(self) -> int:
        return (self.address + self.length) & MASK64

    def mem_operand(self) -> Operand | None:
        for op in self.operands:
            if op.kind == "mem":
                return op
        return None

    def __str__(self) -> str:
        return f"{self.mnemonic} {self.text}".strip()


class DecodeError(Exception):
    pass


class Decoder:
    """capstone in 64-bit mode with a small LRU cache of digested instructions
    (a decode costs ~16 us in Python; a cache hit a dictionary lookup)."""

    def __init__(self, cache_size: int = 512):
        self._cs = Cs(CS_ARCH_X86, CS_MODE_64)
        self._cs.detail = True
        self._cache: OrderedDict[tuple[int, bytes], Insn] = OrderedDict()
        self._cache_size = cache_size

    def decode(self, code: bytes, address: int) -> Insn:
        key = (address, code)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        insn = self._decode(code, address)
        self._cache[key] = insn
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return insn

    def _decode(self, code: bytes, address: int) -> Insn:
        try:
            ci = next(self._cs.disasm(code, address, 1), None)
        except CsError as e:
            raise DecodeError(str(e)) from None
        if ci is None:
            raise DecodeError(f"cannot decode {code.hex()} at {address:#x}")
        ops = []
        for o in ci.operands:
            if o.type == X.X86_OP_REG:
                ops.append(Operand("reg", o.size, reg=ci.reg_name(o.reg)))
            elif o.type == X.X86_OP_IMM:
                ops.append(Operand("imm", o.size, imm=o.imm))
            elif o.type == X.X86_OP_MEM:
                m = o.mem
                ops.append(Operand("mem", o.size,
                                   seg=ci.reg_name(m.segment) if m.segment else None,
                                   base=ci.reg_name(m.base) if m.base else None,
                                   index=ci.reg_name(m.index) if m.index else None,
                                   scale=m.scale, disp=m.disp))
            else:
                raise DecodeError(f"unsupported operand type in {ci.mnemonic} {ci.op_str}")
        prefix = list(ci.prefix)
        return Insn(address=address, length=ci.size, id=ci.id, mnemonic=ci.mnemonic,
                    text=ci.op_str, operands=tuple(ops), lock=prefix[0] == PREFIX_LOCK,
                    rep=prefix[0] in (PREFIX_REP, PREFIX_REPNE),
                    addr32=prefix[3] == PREFIX_ADDRSIZE)


def fetch(vcpu, rip: int) -> bytes:
    """Up to 15 instruction bytes at rip (fewer if the next page is not
    readable); raises GuestFault if not even the first byte is."""
    first = min(MAX_INSN, 0x1000 - (rip & 0xFFF))
    code = vcpu.mem.read(rip, first)
    if first < MAX_INSN:
        try:
            code += vcpu.mem.read((rip + first) & MASK64, MAX_INSN - first)
        except GuestFault:
            pass
    return code


def decode_at(decoder, vcpu, rip: int, rsp: int):
    """The instruction at rip and a register file for emulating it, or None
    when it cannot be read or decoded (the guest keeps its fault)."""
    try:
        insn = decoder.decode(fetch(vcpu, rip), rip)
    except (GuestFault, DecodeError):
        return None
    return insn, RegFile(vcpu.regs, rsp, rip)


def effective_address(op: Operand, rf: RegFile, insn: Insn, vcpu) -> int:
    """Linear address of a memory operand (64-bit mode: only %fs/%gs have a base)."""
    ea = op.disp
    if op.base is not None:
        ea += insn.next_rip if op.base == "rip" else rf.read(op.base)
    if op.index is not None:
        ea += rf.read(op.index) * op.scale
    if insn.addr32:
        ea &= 0xFFFFFFFF
    if op.seg in ("fs", "gs"):
        s = vcpu.fetch_sregs()
        ea += (s.fs if op.seg == "fs" else s.gs).base
    return ea & MASK64


# --- flags -----------------------------------------------------------------------
def _parity(v: int) -> int:
    return PF if bin(v & 0xFF).count("1") % 2 == 0 else 0


def _szp(result: int, size: int) -> int:
    bits = size * 8
    r = result & ((1 << bits) - 1)
    f = _parity(r)
    if r == 0:
        f |= ZF
    if r >> (bits - 1):
        f |= SF
    return f


def flags_logic(result: int, size: int) -> int:
    """and/or/xor/test: OF=CF=0, SF/ZF/PF from the result (AF undefined: 0)."""
    return _szp(result, size)


def flags_add(a: int, b: int, size: int) -> int:
    bits = size * 8
    mask = (1 << bits) - 1
    a &= mask
    b &= mask
    r = a + b
    f = _szp(r, size)
    if r >> bits:
        f |= CF
    if (a ^ b ^ r) & 0x10:
        f |= AF
    if (~(a ^ b) & (a ^ r)) >> (bits - 1) & 1:
        f |= OF
    return f


def flags_sub(a: int, b: int, size: int) -> int:
    """Flags of a - b (sub, cmp, cmpxchg)."""
    bits = size * 8
    mask = (1 << bits) - 1
    a &= mask
    b &= mask
    r = (a - b) & mask
    f = _szp(r, size)
    if a < b:
        f |= CF
    if (a ^ b ^ r) & 0x10:
        f |= AF
    if ((a ^ b) & (a ^ r)) >> (bits - 1) & 1:
        f |= OF
    return f


def merge_flags(rflags: int, new: int, which: int = ARITH_FLAGS) -> int:
    return (rflags & ~which) | (new & which)
