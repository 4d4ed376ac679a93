"""Instruction emulation for PV guests (pyxen.hv.emulate): writable page
tables, privileged operations on #GP, the forced-emulation CPUID on #UD.

The guest tests run pyxen's mini-OS guests (guests/ptwr.c, privop.c,
cpuid.c) on real KVM; the unit tests check the decoder, the store and
flag semantics and the CPUID policy without a VM."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

import guest_helpers

from pyxen.build.elf import load_kernel
from pyxen.hv import emulate
from pyxen.hv.emulate import cpuid as CP
from pyxen.hv.emulate import decode as D


def boot(kvm, elf, *, cmdline="", memory_mb=32, trace=None):
    with guest_helpers.domain(kvm, elf, cmdline=cmdline, memory_mb=memory_mb,
                              trace=trace) as (dom, out):
        result = guest_helpers.run(dom, 120)
        em = dom.emulator
    return result, out.text, em


def assert_success(result, console):
    lines = re.findall(r"^Test result: .*$", console, re.M)
    assert lines == ["Test result: SUCCESS"], console + "\n" + result.message
    assert result.reason == "poweroff", result.message


# --- guests -------------------------------------------------------------------------
def test_ptwr_guest(kvm, guest_elf):
    result, console, em = boot(kvm, guest_elf("ptwr"))
    assert_success(result, console)
    m = re.search(r"ptwr_store: stores=(\d+) cycles_per_store=(\d+) tsc_khz=(\d+) "
                  r"ns_per_store=(\d+)", console)
    assert m, console
    assert em.stats["ptwr"] >= int(m.group(1))
    print(f"\none writable-page-table store: {int(m.group(4)) / 1000:.1f} us "
          f"({m.group(2)} cycles at {m.group(3)} kHz)")


def test_ptwr_kernel_image_declares_the_feature(guest_elf):
    image = load_kernel(guest_elf("ptwr"))
    assert "writable_page_tables" in image.features_required


def test_privop_guest(kvm, guest_elf):
    result, console, em = boot(kvm, guest_elf("privop"))
    assert_success(result, console)
    assert em.stats["privop"] > 50 and em.stats["io"] > 10 and em.stats["hlt"] >= 1


def test_cpuid_guest(kvm, guest_elf):
    """The guest checks what holds on any host; what depends on the host
    (XSAVE, AVX, the offered XCR0 and leaf 0xd) is checked here against the
    host's own CPUID (_atomic.host_cpuid) and Xen's PV rules."""
    from pyxen import _atomic
    from cpuid_dumps import expected, std_size
    result, console, em = boot(kvm, guest_elf("cpuid"))
    assert_success(result, console)
    assert em.stats["cpuid"] >= 15
    exp = expected(_atomic.host_cpuid, _atomic.host_xcr0())
    num = r"(0x[0-9a-f]+|0)"
    m = re.search(rf"leaf 1: emulated ecx {num} ", console)
    ecx = int(m.group(1), 0)
    assert (ecx >> 26 & 1, ecx >> 27 & 1, ecx >> 28 & 1) == (exp.xsave, exp.xsave, exp.avx), \
        f"XSAVE/OSXSAVE/AVX in {ecx:#x}, host XCR0 {_atomic.host_xcr0():#x}"
    m = re.search(rf"xstate: leaf 0xd.0 {num} (\d+) (\d+) {num}, 0xd.1 {num} (\d+)", console)
    a, b, c, d, a1, b1 = (int(x, 0) for x in m.groups())
    if not exp.xsave:
        assert (a, b, c, d, a1, b1) == (0,) * 6
        return
    assert (a | d << 32, b, c, a1) == (exp.max_xcr0, 576, exp.max_size, exp.d1)
    m = re.search(r"xstate: (\d+) values accepted", console)
    assert int(m.group(1)) == len(exp.valid)
    # informational: an XSAVE mask past the guest's XCR0 reaches the host's
    # XCR0 (PVM keeps it), never more than the host's own size for it
    m = re.search(rf"xgetbv {num}; xsave with mask ~0 wrote (\d+) bytes .*XSTATE_BV {num}", console)
    if m:
        xgetbv, wrote, bv = (int(x, 0) for x in m.groups())
        host = _atomic.host_xcr0()
        assert exp.max_xcr0 & ~xgetbv == 0 and bv & ~xgetbv == 0
        assert wrote <= std_size(_atomic.host_cpuid, xgetbv)
        print(f"\nguest xgetbv {xgetbv:#x} (host process {host:#x}); xsave with mask ~0 wrote "
              f"{wrote} bytes where leaf 0xd offers {exp.max_size}")


# --- unit tests: decoder and flags ----------------------------------------------------------
from pyxen.kvm import structs as KS                                    # noqa: E402
from pyxen.hv.emulate import ptwr as PT                                # noqa: E402
from pyxen.hv.emulate import privop as PO                              # noqa: E402
from pyxen.hv.mm import MemoryManager, PageTableError, PGT_L1, PGT_WRITABLE  # noqa: E402

RIP = 0xFFFFFFFF80001000


def decode(hexcode: str, rip: int = RIP):
    return D.Decoder().decode(bytes.fromhex(hexcode) + b"\x90" * 8, rip)


@pytest.mark.parametrize("code, text, lock, size", [
    ("488907", "mov qword ptr [rdi], rax", False, 8),
    ("894704", "mov dword ptr [rdi + 4], eax", False, 4),
    ("f0480fb10f", "lock cmpxchg qword ptr [rdi], rcx", True, 8),
    ("f00fc70f", "lock cmpxchg8b qword ptr [rdi]", True, 8),
    ("f0480fba2f05", "lock bts qword ptr [rdi], 5", True, 8),
    ("c60763", "mov byte ptr [rdi], 0x63", False, 1),
])
def test_decoder_store_forms(code, text, lock, size):
    insn = decode(code)
    assert str(insn) == text
    assert insn.lock is lock
    assert insn.length == len(code) // 2
    assert insn.mem_operand().size == size
    assert insn.next_rip == RIP + insn.length


def test_decoder_cache_and_prefixes():
    d = D.Decoder()
    a = d.decode(bytes.fromhex("67f36c") + b"\x90" * 12, RIP)
    assert a.rep and a.addr32 and a.mem_operand().base == "edi"
    assert d.decode(bytes.fromhex("67f36c") + b"\x90" * 12, RIP) is a
    with pytest.raises(D.DecodeError):
        d.decode(b"\x0f", RIP)


def test_regfile_subregisters():
    r = KS.Regs()
    r.rax = 0x1122334455667788
    rf = D.RegFile(r, rsp=0x5000, rip=RIP)
    assert rf.read("eax") == 0x55667788 and rf.read("ah") == 0x77 and rf.read("ax") == 0x7788
    rf.write("al", 0xAA)
    assert r.rax == 0x11223344556677AA
    rf.write("ah", 0xBB)
    assert r.rax == 0x112233445566BBAA
    rf.write("eax", 0x1)                 # 32-bit writes zero-extend
    assert r.rax == 1 and rf.dirty
    assert rf.read("rsp") == 0x5000 and rf.read("esp") == 0x5000
    rf.write("rsp", 0x6000)
    assert rf.rsp == 0x6000 and r.rsp == 0


def test_flags():
    assert D.flags_sub(5, 5, 8) & D.ZF and not D.flags_sub(5, 5, 8) & D.CF
    assert D.flags_sub(1, 2, 8) & (D.CF | D.SF) == D.CF | D.SF
    assert D.flags_sub(0x80, 1, 1) & D.OF                     # -128 - 1 overflows
    assert D.flags_add(0xFF, 1, 1) & (D.CF | D.ZF | D.AF) == D.CF | D.ZF | D.AF
    assert D.flags_add(0x7F, 1, 1) & D.OF
    assert D.flags_logic(0, 8) == D.ZF | D.PF
    assert D.flags_logic(1 << 63, 8) == D.SF | D.PF
    assert D.flags_logic(0x3, 8) == D.PF and D.flags_logic(0x1, 8) == 0
    assert D.merge_flags(0x202 | D.CF, D.ZF) == 0x202 | D.ZF


# --- unit tests: page-table stores -------------------------------------------------------------
PTE = 0x67          # P|RW|U|A|D
L1 = 1


@pytest.fixture
def pt():
    """A 64-frame domain whose frame 1 is an L1 table, and a fake vCPU."""
    import logging
    mm = MemoryManager(memoryview(bytearray(64 * 4096)), 64,
                       SimpleNamespace(shared_info_gpa=1 << 40), logging.getLogger("t"))
    mm.get_type(L1, PGT_L1)
    regs = KS.Regs()
    vcpu = SimpleNamespace(domain=SimpleNamespace(mm=mm), regs=regs,
                           fetch_sregs=lambda: KS.Sregs())
    return SimpleNamespace(mm=mm, vcpu=vcpu, regs=regs)


def store(pt, code, ea, rflags=0x202):
    insn = decode(code)
    rf = D.RegFile(pt.regs, 0x9000, RIP)
    pt.regs.rdi = ea
    return PT._perform(pt.vcpu, insn, rf, ea, L1, rflags)


def entry(pt, i=0):
    return pt.mm.read_entry(L1, i)


def test_ptwr_mov_forms(pt):
    va = 0xFFFF888000001000
    pt.regs.rax = (5 << 12) | PTE
    store(pt, "488907", va)                          # mov [rdi], rax
    assert entry(pt) == (5 << 12) | PTE
    assert pt.mm.ptype[5] == PGT_WRITABLE and pt.mm.tcount[5] == 1
    pt.regs.rax = (6 << 12) | PTE
    store(pt, "8907", va)                            # mov [rdi], eax: the high half stays
    assert entry(pt) == (6 << 12) | PTE and pt.mm.tcount[5] == 0
    store(pt, "c7470400000080", va)                  # mov dword [rdi+4], 0x80000000 (NX)
    assert entry(pt) == (1 << 63) | (6 << 12) | PTE
    store(pt, "48c70700000000", va)                  # mov qword [rdi], 0
    assert entry(pt) == 0 and pt.mm.tcount[6] == 0
    store(pt, "c60725", va + 8)                      # mov byte [rdi], 0x25: entry 1
    assert entry(pt, 1) == 0x25


def test_ptwr_xchg_cmpxchg(pt):
    va = 0xFFFF888000001008
    pt.mm.update_entry((L1 << 12) + 8, (5 << 12) | PTE)
    pt.regs.rax = (6 << 12) | PTE
    store(pt, "488707", va)                          # xchg [rdi], rax
    assert entry(pt, 1) == (6 << 12) | PTE and pt.regs.rax == (5 << 12) | PTE
    pt.regs.rax, pt.regs.rcx = (6 << 12) | PTE, (7 << 12) | PTE
    fl = store(pt, "f0480fb10f", va)                 # lock cmpxchg [rdi], rcx: succeeds
    assert fl & D.ZF and entry(pt, 1) == (7 << 12) | PTE and pt.regs.rax == (6 << 12) | PTE
    fl = store(pt, "f0480fb10f", va)                 # fails: rax gets the entry
    assert not fl & D.ZF and pt.regs.rax == (7 << 12) | PTE and entry(pt, 1) == (7 << 12) | PTE
    pt.regs.rax, pt.regs.rdx = (7 << 12) | PTE, 0
    pt.regs.rbx, pt.regs.rcx = (8 << 12) | PTE, 0
    fl = store(pt, "f00fc70f", va)                   # lock cmpxchg8b: succeeds
    assert fl & D.ZF and entry(pt, 1) == (8 << 12) | PTE
    pt.regs.rax = pt.regs.rdx = 0xFFFFFFFF_00000000
    fl = store(pt, "f00fc70f", va)                   # fails: edx:eax = entry, zero-extended
    assert not fl & D.ZF and pt.regs.rax == (8 << 12) | PTE and pt.regs.rdx == 0


def test_ptwr_rmw_forms(pt):
    va = 0xFFFF888000001010
    pt.mm.update_entry((L1 << 12) + 16, (5 << 12) | PTE)
    fl = store(pt, "48810f00020000", va)             # or qword [rdi], 0x200
    assert entry(pt, 2) == (5 << 12) | PTE | 0x200
    assert fl & (D.ZF | D.CF | D.OF | D.SF) == 0
    fl = store(pt, "480fba3709", va)                 # btr qword [rdi], 9
    assert fl & D.CF and entry(pt, 2) == (5 << 12) | PTE
    fl = store(pt, "480fba3709", va)
    assert not fl & D.CF
    pt.regs.rax = 64 + 9                             # bts [rdi], rax: the next entry's bit 9
    fl = store(pt, "480fab07", va)
    assert entry(pt, 3) == 0x200 and not fl & D.CF and entry(pt, 2) == (5 << 12) | PTE
    pt.regs.rsi = 0x20
    fl = store(pt, "482937", va)                     # sub [rdi], rsi: clears A
    assert entry(pt, 2) == (5 << 12) | (PTE - 0x20)
    assert fl == (0x202 & ~D.ARITH_FLAGS) | D.flags_sub((5 << 12) | PTE, 0x20, 8)
    store(pt, "48830720", va)                        # add qword [rdi], 0x20
    store(pt, "48833700", va)                        # xor qword [rdi], 0
    fl = store(pt, "48832700", va)                   # and qword [rdi], 0 -> not present
    assert entry(pt, 2) == 0 and fl & D.ZF


def test_ptwr_refusals(pt):
    va = 0xFFFF888000001000
    pt.regs.rax = (64 << 12) | PTE                   # beyond the domain's frames
    with pytest.raises(PageTableError):
        store(pt, "488907", va)
    pt.regs.rax = (L1 << 12) | PTE                   # the L1 itself, writable
    with pytest.raises(PageTableError):
        store(pt, "488907", va)
    pt.regs.rax = 0
    with pytest.raises(PT.Unhandled):                # misaligned
        store(pt, "488907", va + 4)
    with pytest.raises(PT.Unhandled):                # no memory destination
        store(pt, "4889c7", va)
    insn = decode("488907")
    rf = D.RegFile(pt.regs, 0, RIP)
    pt.regs.rdi = va
    with pytest.raises(PT.Unhandled):                # not in the faulting page
        PT._perform(pt.vcpu, insn, rf, va + 0x1000, L1, 0)
    assert entry(pt) == 0


def test_ptwr_only_for_l1_present_readonly_kernel_writes(pt):
    calls = []

    class MM:
        def __getattr__(self, n):
            return getattr(pt.mm, n)

        def walk(self, l4, va):
            calls.append(va)
            return (L1 << 12) | (va & 0xFFF), False, True

    dom = SimpleNamespace(vm_assist=1 << 2, mm=MM(), trace=lambda *a: None)
    vcpu = SimpleNamespace(domain=dom, pv=SimpleNamespace(kernel_mode=True, kernel_l4=9))
    em = SimpleNamespace(decoder=D.Decoder(), stats={})
    args = (0xFFFFFFFF80000000, 0xE033, 0x202, 0x8000, 0xE02B)
    assert not PT.emulate_pf(em, vcpu, 0x2, 0x1000, *args)        # not present
    assert not PT.emulate_pf(em, vcpu, 0x1, 0x1000, *args)        # read
    assert not PT.emulate_pf(em, vcpu, 0x3 | 0x8, 0x1000, *args)  # reserved bit
    vcpu.pv.kernel_mode = False
    assert not PT.emulate_pf(em, vcpu, 0x7, 0x1000, *args)        # user mode
    vcpu.pv.kernel_mode = True
    dom.vm_assist = 0
    assert not PT.emulate_pf(em, vcpu, 0x3, 0x1000, *args)        # assist off
    assert calls == []
    dom.vm_assist = 1 << 2
    pt.mm.get_type(2, 2)                                          # an L2 page
    MM.walk = lambda self, l4, va: ((2 << 12), False, True)
    vcpu.mem = SimpleNamespace(read=lambda va, n: b"\x90" * n)
    assert not PT.emulate_pf(em, vcpu, 0x3, 0x1000, *args)        # L2: Xen emulates L1 only


# --- unit tests: CPUID policy ----------------------------------------------------------------
def kvm_entries(vendor=b"GenuineIntel", leaves=None):
    b, d, c = vendor[0:4], vendor[4:8], vendor[8:12]
    base = {(0, 0): (0x1F, int.from_bytes(b, "little"), int.from_bytes(c, "little"),
                     int.from_bytes(d, "little")),
            (1, 0): (0x000906EA | 0x3000, 0x05100800, 0xFFFAFBFF, 0xBFEBFBFF),
            (5, 0): (0x40, 0x40, 3, 0x11142120),
            (6, 0): (0x4F7, 2, 9, 0),
            (7, 0): (0, 0x029C6FBF, 0x40000000 | (1 << 3) | (1 << 4), 0xBC000400),
            (0xD, 0): (0x1F, 0x440, 0x440, 0),
            (0xB, 0): (1, 2, 0x100, 5),
            (0x80000000, 0): (0x80000008, 0, 0, 0),
            (0x80000001, 0): (0, 0, 0x121, 0x2C100800),
            (0x80000007, 0): (0, 0, 0, 0x100),
            (0x80000008, 0): (0x3027, 0, 0, 0),
            (0x40000000, 0): (0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D)}
    base.update(leaves or {})
    return [SimpleNamespace(function=f, index=i, flags=1 if f in (7, 0xB, 0xD) else 0,
                            eax=r[0], ebx=r[1], ecx=r[2], edx=r[3])
            for (f, i), r in base.items()]


def policy(vendor=b"GenuineIntel", leaves=None):
    return CP.CpuidPolicy.from_kvm(kvm_entries(vendor, leaves), xen_version=(4, 17), tsc_khz=2_000_000,
                                   nr_pages=8192)


def test_cpuid_hypervisor_leaves():
    p = policy()
    assert p.leaf(0x40000000) == (0x40000005, 0x566E6558, 0x65584D4D, 0x4D4D566E)
    assert b"".join(v.to_bytes(4, "little") for v in p.leaf(0x40000000)[1:]) == b"XenVMMXenVMM"
    assert p.leaf(0x40000001) == ((4 << 16) | 17, 0, 0, 0)
    assert p.leaf(0x40000002) == (1, 0x40000000, 1, 0)
    a, b, c, d = p.leaf(0x40000003, 0)
    assert c == 2_000_000 and a & 2          # tsc_khz; invariant TSC -> "host TSC is safe"
    assert p.leaf(0x40000003, 1)[2:] == (0x80000000, 0)      # 2 GHz: 0.5 ns per tick
    assert p.leaf(0x40000003, 2)[0] == 2_000_000
    assert p.leaf(0x40000004) == (0, 0, 0, 0)                # HVM only
    assert p.leaf(0x40000005)[1] == 13 + 12                  # 8192 frames -> 25 bits
    assert p.leaf(0x40000006) == (0, 0, 0, 0)
    assert p.leaf(0x40000100) == (0, 0, 0, 0)


@pytest.mark.parametrize("hz", [1_000_000_000, 2_600_000_000, 3_900_000_000, 800_000_000])
def test_cpuid_time_scale(hz):
    mul, shift = CP.time_scale(hz)
    ticks = hz // 1000                       # one millisecond of ticks
    scaled = ticks << shift if shift >= 0 else ticks >> -shift
    assert abs(((scaled * mul) >> 32) - 1_000_000) < 10


def test_cpuid_pv_policy_hides_what_xen_hides():
    p = policy()
    a, b, c, d = p.leaf(1)
    hidden_1c = {"DTES64": 2, "MONITOR": 3, "VMX": 5, "SMX": 6, "EIST": 7, "TM2": 8,
                 "PDCM": 15, "PCID": 17, "X2APIC": 21, "TSC_DEADLINE": 24, "XSAVE": 26,
                 "OSXSAVE": 27, "AVX": 28}
    for name, bitno in hidden_1c.items():
        assert not c >> bitno & 1, name
    assert c >> 31 & 1                                   # HYPERVISOR
    for bitno in (1, 3, 12, 13, 17, 21, 29, 31):         # VME PSE MTRR PGE PSE36 DS TM PBE
        assert not d >> bitno & 1, bitno
    for bitno in (0, 4, 5, 6, 8, 15, 24, 25, 26):        # FPU TSC MSR PAE CX8 CMOV FXSR SSE SSE2
        assert d >> bitno & 1, bitno
    assert b >> 24 == 0                                  # APIC ID
    assert a == 0x000906EA                               # processor type bits cleared
    assert p.leaf(0)[0] == 0xD                           # max basic leaf
    for leaf in (5, 6, 0xB, 0xD, 0xE):
        assert p.leaf(leaf) == (0, 0, 0, 0), leaf
    _, b7, c7, d7 = p.leaf(7, 0)
    for bitno in (1, 2, 7, 10, 14, 20, 5, 16):           # TSC_ADJ SGX SMEP INVPCID MPX SMAP AVX2 AVX512F
        assert not b7 >> bitno & 1, bitno
    assert b7 & 1 and b7 >> 3 & 1                        # FSGSBASE BMI1 kept
    assert not c7 >> 3 & 1 and not c7 >> 4 & 1           # PKU OSPKE
    assert not d7 >> 26 & 1 and not d7 >> 29 & 1         # IBRSB ARCH_CAPS (not virtualised)
    assert p.leaf(7, 3) == (0, 0, 0, 0)
    x = p.leaf(0x80000000)
    assert x[0] == 0x80000008 and x[1:] == (0, 0, 0)     # Intel: no vendor string here
    x1 = p.leaf(0x80000001)
    assert x1[3] >> 29 & 1 and x1[3] >> 20 & 1 and not x1[3] >> 26 & 1   # LM NX, no 1G pages
    assert p.leaf(0x80000007) == (0, 0, 0, 0)            # invariant TSC: 'a', hidden
    assert p.leaf(0x80000008)[2:] == (0, 0)
    assert p.leaf(0x80000009) == (0, 0, 0, 0)
    assert p.leaf(0xC0000000) == (0, 0, 0, 0)


def test_cpuid_amd_extended_leaves():
    p = policy(b"AuthenticAMD",
               {(0x80000000, 0): (0x80000021, 1, 2, 3),
                (0x80000001, 0): (0x00A00F11, 0x40ABCDEF, 0x75C237FF | 4, 0x2FD3FBFF),
                (0x8000000A, 0): (1, 0x8000, 0, 0x1EBFBCFF),
                (0x80000021, 0): (0x20045, 7, 6, 9)})
    assert p.amd
    x0 = p.leaf(0x80000000)
    assert x0[0] == 0x80000021 and x0[1:] == p.leaf(0)[1:]
    x1 = p.leaf(0x80000001)
    assert not x1[2] >> 2 & 1                          # SVM
    assert x1[1] == 0x40ABCDEF & 0xFF00FFFF
    assert x1[3] & 1                                   # FPU copied from leaf 1 (common bits)
    assert p.leaf(0x8000000A) == (0, 0, 0, 0)
    assert p.leaf(0x80000021) == (0x20045 & p.masks[11], 0, 6 & p.masks[18], 0)
    assert p.leaf(2) == (0, 0, 0, 0) and p.leaf(4) == (0, 0, 0, 0)


def test_cpuid_hidden_features_include_dependents():
    gone = CP.hidden_features(("XSAVE",))       # no host XSAVE information
    assert {"XSAVE", "AVX", "AVX2", "AVX512F", "AVX512VL", "FMA", "VAES"} <= gone
    assert "SSE2" not in gone and "FSGSBASE" not in gone
    m = CP.feature_masks(("XSAVE",))
    assert not m[1] >> 28 & 1 and m[1] >> 31 & 1       # AVX hidden, HYPERVISOR allowed
    assert {"XSAVEOPT", "XSAVEC", "XGETBV1"} <= gone
    assert not {"XSAVE", "XSAVEOPT", "XSAVEC", "XGETBV1"} & CP.hidden_features()  # Xen: 'A'
    assert {"AVX512F", "AVX512VL"} <= CP.hidden_features(("AVX512F",))


def test_cpuid_xsave_follows_the_host():
    """With the host's CPUID and XCR0, XSAVE/AVX/AVX512F come from the real
    CPU (not KVM's table) and leaf 0xd is Xen's PV one for that XCR0
    (tests/hv/test_xstate.py does this for recorded CPUs)."""
    host = {(0, 0): (0xD, 0, 0, 0), (1, 0): (0, 0, (1 << 26) | (1 << 27) | (1 << 28), 0),
            (7, 0): (0, 1 << 16, 0, 0), (0xD, 1): (0xF, 0, 0, 0),
            (0xD, 2): (256, 576, 0, 0), (0xD, 5): (64, 832, 0, 0), (0xD, 6): (512, 896, 0, 0),
            (0xD, 7): (1024, 1408, 0, 0), (0xD, 9): (8, 2432, 0, 0)}
    cpu = lambda l, s: host.get((l, s), (0, 0, 0, 0))                       # noqa: E731
    p = CP.CpuidPolicy.from_kvm(kvm_entries(leaves={(1, 0): (0x000906EA, 0, 0x80002000, 0)}),
                                host=(cpu, 0x2E7))
    c = p.leaf(1)[2]
    assert c >> 26 & 1 and c >> 28 & 1 and not c >> 27 & 1
    assert p.guest_leaf(1)[2] >> 27 & 1                        # leaked to the kernel
    assert p.leaf(7, 0)[1] >> 16 & 1
    assert p.leaf(0xD, 0) == (0xE7, 576, 2432, 0)              # no PKRU for PV
    assert p.guest_leaf(0xD, 0, xcr0=0xE7) == (0xE7, 2432, 2432, 0)
    assert p.guest_leaf(0xD, 1, xcr0=7) == (7, 832, 0, 0)      # no XSAVES; compacted size
    assert p.leaf(0xD, 5) == (64, 832, 0, 0) and p.leaf(0xD, 9) == (0, 0, 0, 0)
    # a host without AVX-512 state in XCR0: no AVX512F for the guest either
    p = CP.CpuidPolicy.from_kvm(kvm_entries(leaves={(1, 0): (0x000906EA, 0, 0x80002000, 0)}),
                                host=(cpu, 0x7))
    assert not p.leaf(7, 0)[1] >> 16 & 1 and p.leaf(0xD, 0)[0] == 0x7


# --- unit tests: privileged operations --------------------------------------------------------
@pytest.fixture
def priv():
    from pyxen.hv.vcpu import PVState, PVVcpu
    s = KS.Sregs()
    s.cr0, s.cr4, s.efer = 0x80050033, 0x620, 0xD01
    dom = SimpleNamespace(vm_assist=0, log_guest_error=lambda *a: None, nr_pages=8192,
                          cpuid_entries=kvm_entries(), trace=lambda *a: None, domid=1,
                          log=__import__("logging").getLogger("pyxen.test"))
    changed = []
    vcpu = SimpleNamespace(id=0, pv=PVState(), fetch_sregs=lambda: s,
                           sregs_changed=lambda: changed.append(1), regs=KS.Regs(),
                           kvcpu=SimpleNamespace(get_msrs=lambda idx: {i: 0x1234567890 for i in idx},
                                                 tsc_khz=lambda: 2_000_000),
                           domain=dom, vcpu_info=SimpleNamespace(cr2=0))
    vcpu.set_cr0_ts = lambda ts: PVVcpu.set_cr0_ts(vcpu, ts)     # the vCPU's one TS path
    vcpu.iopl_ok = lambda: PVVcpu.iopl_ok(vcpu)                   # and its one I/O privilege rule
    em = emulate.Emulator(dom)
    return SimpleNamespace(em=em, vcpu=vcpu, sregs=s, dom=dom, changed=changed)


def run_priv(priv, code):
    insn = decode(code)
    rf = D.RegFile(priv.vcpu.regs, 0x8000, RIP)
    return PO._dispatch(priv.em, priv.vcpu, insn, rf, 0x202)


def test_privop_rdtsc_under_tsd(priv):
    """CR4.TSD makes rdtsc fault where the hardware honours it (not on this
    host's PVM, where it runs natively): kernel mode is emulated, user mode
    keeps the #GP."""
    PO.set_cr4(priv.em, priv.vcpu, 0x620 | PO.CR4_TSD)
    assert priv.sregs.cr4 & PO.CR4_TSD
    nxt, _ = run_priv(priv, "0f31")
    assert nxt == RIP + 2 and priv.vcpu.regs.rax == 0x34567890 and priv.vcpu.regs.rdx == 0x12
    priv.vcpu.pv.kernel_mode = False
    with pytest.raises(PO.NotEmulated):
        run_priv(priv, "0f31")


def test_privop_control_registers(priv):
    assert PO.read_cr(priv.em, priv.vcpu, 0) == 0x80050033
    priv.vcpu.pv.cr0_ts = True
    assert PO.read_cr(priv.em, priv.vcpu, 0) == 0x8005003B
    priv.vcpu.regs.rax = 0x80050033 & ~0x10000            # clearing WP
    with pytest.raises(PO.NotEmulated):
        run_priv(priv, "0f22c0")                           # mov cr0, rax
    run_priv(priv, "0f06")                                 # clts
    assert not priv.vcpu.pv.cr0_ts and not priv.sregs.cr0 & 8
    assert PO.read_cr(priv.em, priv.vcpu, 4) == 0x620
    PO.set_cr4(priv.em, priv.vcpu, 0xFFFFFFFF)             # only TSD, DE, FSGSBASE, OSXSAVE stick
    osxsave = 0x40000 if PO.guest_cr4_fixup(priv.em, priv.vcpu, 0x40000) & 0x40000 else 0
    assert PO.read_cr(priv.em, priv.vcpu, 4) == 0x620 | 0x4 | 0x8 | 0x10000 | osxsave
    priv.vcpu.regs.rcx = 0
    with pytest.raises(PO.NotEmulated):
        run_priv(priv, "440f20c0")                         # mov rax, cr8
    priv.vcpu.pv.kernel_mode = False
    with pytest.raises(PO.NotEmulated):
        run_priv(priv, "0f20c0")                           # mov rax, cr0 from user mode


def test_privop_msrs(priv):
    v = priv.vcpu
    assert PO.read_msr(priv.em, v, PO.MSR_IA32_CR_PAT) == 0x050100070406
    assert PO.read_msr(priv.em, v, PO.MSR_EFER) == 0xD01
    assert PO.read_msr(priv.em, v, PO.MSR_IA32_MISC_ENABLE) & (3 << 11) == 3 << 11  # Intel
    v.regs.rcx, v.regs.rax, v.regs.rdx = PO.MSR_FS_BASE, 0x5000, 0x7FFF
    run_priv(priv, "0f30")                                 # wrmsr
    assert priv.sregs.fs.base == 0x7FFF00005000
    v.regs.rdx = 0x8000                                    # non-canonical
    with pytest.raises(PO.Fault) as f:
        run_priv(priv, "0f30")
    assert f.value.vector == 13 and f.value.error == 0
    v.regs.rcx = PO.MSR_SHADOW_GS_BASE
    v.regs.rdx = 0
    run_priv(priv, "0f30")
    assert v.pv.gs_base_user == 0x5000
    v.regs.rcx = 0xC0000082                                # LSTAR
    with pytest.raises(PO.Fault):
        run_priv(priv, "0f32")
    with pytest.raises(PO.Fault):
        PO.write_msr(priv.em, v, PO.MSR_INTEL_MISC_FEATURES_ENABLES, 1)
    with pytest.raises(PO.Fault):
        PO.write_msr(priv.em, v, PO.MSR_XEN_HYPERCALL_PAGE, (5 << 12) | 1)


def test_privop_io_rules(priv, monkeypatch):
    v = priv.vcpu
    assert not PO.iopl_ok(v)
    v.pv.iopl = 1
    assert PO.iopl_ok(v)                                   # kernel counts as CPL 1
    v.pv.kernel_mode = False
    assert not PO.iopl_ok(v)
    v.pv.iopl = 3
    assert PO.iopl_ok(v)
    v.pv.kernel_mode, v.pv.iopl = True, 0
    priv.dom.vm_assist = 1 << 4                            # architectural IOPL: kernel is CPL 0
    assert PO.iopl_ok(v)
    priv.dom.vm_assist = 0
    v.pv.iobitmap = (0x9000, 0x100)
    monkeypatch.setattr(PO, "_read_kernel", lambda vcpu, va, n: bytes([0xFE, 0xFF])[:n]
                        if va == 0x9000 else b"")
    assert PO.guest_io_okay(v, 0, 1) and not PO.guest_io_okay(v, 1, 1)
    assert not PO.guest_io_okay(v, 0, 2)
    assert not PO.guest_io_okay(v, 0x80, 1)                # unreadable bitmap bytes refuse
    em = priv.em
    assert PO.io_read(em, 0x80, 4) == 0xFFFFFFFF
    PO.io_write(em, 0x70, 2, 0x1234)
    assert em.io.cmos_idx == 0x34 and PO.io_read(em, 0x70, 2) == 0xFF34
    PO.io_write(em, 0xCF8, 4, 0x80000010)
    assert PO.io_read(em, 0xCF8, 4) == 0x80000010 and PO.io_read(em, 0xCF8, 2) == 0xFFFF


def test_privop_long_rep_restarts(priv):
    v = priv.vcpu
    v.pv.iopl = 1
    written = []
    v.mem = SimpleNamespace(write=lambda va, data: written.append((va, data)))
    v.regs.rcx, v.regs.rdi, v.regs.rdx = PO.MAX_REP + 5, 0x10000, 0x80
    nxt, _ = run_priv(priv, "f36c")                        # rep insb
    assert nxt == RIP and v.regs.rcx == 5 and v.regs.rdi == 0x10000 + PO.MAX_REP
    nxt, _ = run_priv(priv, "f36c")
    assert nxt == RIP + 2 and v.regs.rcx == 0 and len(written) == PO.MAX_REP + 5


def test_privop_xsetbv_on_this_host(priv):
    """The guest kernel's xsetbv with this host's policy: Xen's rules within
    the offered XCR0, whatever the host (tests/hv/test_xstate.py covers
    recorded CPUs). #UD before CR4.OSXSAVE, #GP for refused values and XCR1."""
    from pyxen import _atomic
    from cpuid_dumps import expected
    exp = expected(_atomic.host_cpuid, _atomic.host_xcr0())
    pol = priv.em.policy(priv.vcpu)
    assert (pol.xstate.max_xcr0 if pol.xstate else 0) == exp.max_xcr0
    r = priv.vcpu.regs
    r.rcx, r.rax, r.rdx = 0, 3, 0
    with pytest.raises(PO.Fault) as f:
        run_priv(priv, "0f01d1")                          # CR4.OSXSAVE not set yet
    assert f.value.vector == 6
    PO.set_cr4(priv.em, priv.vcpu, 0x620 | PO.CR4_OSXSAVE)
    if not exp.xsave:
        with pytest.raises(PO.Fault):
            run_priv(priv, "0f01d1")                      # no XSAVE: OSXSAVE cannot be set
        return
    for v in exp.valid:
        r.rax, r.rdx = v, 0
        nxt, _ = run_priv(priv, "0f01d1")
        assert nxt == RIP + 3 and priv.em.vstate(priv.vcpu).xcr0 == v
    for v in (0, 2, exp.max_xcr0 | 1 << 9, exp.max_xcr0 | 3 << 17, exp.max_xcr0 << 1):
        r.rax = v
        with pytest.raises(PO.NotEmulated):
            run_priv(priv, "0f01d1")
    r.rax, r.rcx = exp.max_xcr0, 1
    with pytest.raises(PO.NotEmulated):
        run_priv(priv, "0f01d1")                          # XCR1 does not exist
