"""The XSAVE part of the PV CPU policy (pyxen.hv.emulate.xstate, cpuid,
privop's xsetbv) against recorded CPUID dumps of real CPUs
(tests/hv/cpuid_dumps): no particular host needed.

For each CPU: the offered leaves (AMX, PKU, XSAVES, XFD hidden; XSAVE,
OSXSAVE, AVX, AVX-512 as the hardware has and runs them), leaf 0xd
consistent with the hardware's offsets and following the guest's XCR0,
and xsetbv accepting exactly the values Xen's handle_xsetbv accepts."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

from cpuid_dumps import DUMPS, compacted_size, expected, load, std_size
from pyxen.hv import emulate
from pyxen.hv.emulate import cpuid as CP
from pyxen.hv.emulate import decode as D
from pyxen.hv.emulate import privop as PO
from pyxen.hv.emulate import xstate as XS
from pyxen.kvm import structs as KS

RIP = 0xFFFFFFFF80001000
XSETBV = bytes.fromhex("0f01d1")


def bit(v: int, n: int) -> bool:
    return bool(v >> n & 1)


def pvm_table(dump):
    """A KVM table like this host's PVM gives (no XSAVE, AVX, SSE4, AVX2...)
    with the dump's vendor and family: the XSAVE bits must come from the host."""
    v = dump.cpuid(0, 0)
    x = dump.cpuid(0x80000000, 0)
    regs = {(0, 0): (0x10, *v[1:]), (1, 0): (dump.cpuid(1, 0)[0], 0x20800, 0x81202000, 0x078BFBFF),
            (7, 0): (0, 0x1800002, 0x4, 0xA8000000), (0x80000000, 0): (0x80000008, *x[1:]),
            (0x80000001, 0): (0, 0, 0x121, 0x2C100800)}
    return [SimpleNamespace(function=f, index=i, flags=1 if f == 7 else 0,
                            eax=r[0], ebx=r[1], ecx=r[2], edx=r[3]) for (f, i), r in regs.items()]


def policy(dump, table="passthrough"):
    entries = dump.kvm_entries() if table == "passthrough" else pvm_table(dump)
    return CP.CpuidPolicy.from_kvm(entries, host=dump.host, tsc_khz=2_000_000, nr_pages=8192)


# --- the dumps themselves ---------------------------------------------------------------------
@pytest.mark.parametrize("name", DUMPS)
def test_dump_is_consistent_hardware(name):
    """The dump's own leaf 0xd agrees with its XCR0 (a typo in a written-down
    dump would show here)."""
    d = load(name)
    assert d.cpuid(0, 0)[0] >= 0xB and d.cpuid(0x80000000, 0)[0] >= 0x80000008
    c1 = d.cpuid(1, 0)[2]
    assert bit(c1, 27) == bool(d.xcr0), "OSXSAVE set exactly when there is an XCR0"
    if not d.xcr0:
        return
    assert bit(c1, 26)
    a, b, c, dd = d.cpuid(0xD, 0)
    assert d.xcr0 & ~((dd << 32) | a) == 0                  # XCR0 within what the CPU supports
    assert b == std_size(d.cpuid, d.xcr0)                    # EBX: size for the XCR0 in force
    assert c == std_size(d.cpuid, (dd << 32) | a)            # ECX: size for everything supported
    if d.cpuid(0xD, 1)[0] & 2 and not d.cpuid(0xD, 1)[2]:    # XSAVEC and no XSS states
        assert d.cpuid(0xD, 1)[1] == compacted_size(d.cpuid, d.xcr0)


def test_dumps_cover_the_cpus_that_matter():
    kinds = {n: expected(*load(n).host) for n in DUMPS}
    assert any(not e.xsave for e in kinds.values())                          # no XSAVE
    assert any(e.xsave and not e.avx for e in kinds.values())                # x87/SSE only
    assert any(e.avx and not e.avx512 for e in kinds.values())               # AVX2 parts
    assert any(e.avx512 for e in kinds.values())                             # AVX-512
    assert any(load(n).xcr0 & (3 << 17) for n in DUMPS)                      # AMX
    assert any(load(n).xcr0 & (1 << 9) for n in DUMPS)                       # PKRU in XCR0
    vendors = {load(n).cpuid(0, 0)[1] for n in DUMPS}
    assert vendors == {0x756E6547, 0x68747541}                               # Intel and AMD


# --- the offered leaves ----------------------------------------------------------------------
@pytest.mark.parametrize("table", ["passthrough", "pvm"])
@pytest.mark.parametrize("name", DUMPS)
def test_offered_leaves(name, table):
    d = load(name)
    exp = expected(*d.host)
    p = policy(d, table)
    _, _, c1, _ = p.leaf(1)
    assert bit(c1, 26) == exp.xsave and bit(c1, 28) == exp.avx
    assert not bit(c1, 27), "OSXSAVE is clear in the policy (set per vCPU)"
    assert bit(p.guest_leaf(1, kernel=True, forced=True)[2], 27) == exp.xsave   # Xen's PV leak
    assert not bit(p.guest_leaf(1, kernel=False, forced=True)[2], 27)
    assert not bit(p.guest_leaf(1, kernel=True, forced=False)[2], 27)
    assert bit(p.guest_leaf(1, cr4_osxsave=exp.xsave, kernel=False)[2], 27) == exp.xsave
    if not exp.avx:
        assert not (bit(c1, 12) or bit(c1, 29)), "FMA and F16C need AVX"
    _, b7, c7, d7 = p.leaf(7, 0)
    assert bit(b7, 16) == exp.avx512
    if not exp.avx512:
        assert not any(bit(b7, n) for n in (17, 21, 28, 30, 31)), "AVX-512 parts need AVX512F"
    if not exp.avx:
        assert not bit(b7, 5), "AVX2 needs AVX"
    assert not bit(c7, 3) and not bit(c7, 4), "PKU/OSPKE hidden"
    assert not any(bit(d7, n) for n in (22, 24, 25)), "AMX hidden"
    assert not bit(p.leaf(7, 1)[0], 21), "AMX-FP16 hidden"

    if not exp.xsave:
        assert p.xstate is None
        assert all(p.guest_leaf(0xD, i, xcr0=3) == (0, 0, 0, 0) for i in range(64))
        return
    xs = p.xstate
    assert xs.max_xcr0 == exp.max_xcr0 and xs.max_xcr0 & ~d.xcr0 == 0
    assert p.leaf(0xD, 0) == (exp.max_xcr0 & 0xFFFFFFFF, 576, exp.max_size, exp.max_xcr0 >> 32)
    a1, b1, c1d, d1d = p.leaf(0xD, 1)
    assert a1 == exp.d1 and not a1 & (XS.XSAVES | XS.XFD) and (c1d, d1d) == (0, 0)
    for i in range(2, 64):
        got = p.leaf(0xD, i)
        if exp.max_xcr0 >> i & 1:
            size, off, ecx, _ = d.cpuid(0xD, i)
            assert got == (size, off, ecx & 2 if exp.d1 & 2 else 0, 0), i
        else:
            assert got == (0, 0, 0, 0), i          # PKRU, AMX, MPX, PT, CET ...


# --- leaf 0xd follows the guest's XCR0 ---------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in DUMPS if expected(*load(n).host).xsave])
def test_leaf_0xd_sizes_follow_the_guest_xcr0(name):
    """Sub 0 EBX (standard format) and sub 1 EBX (compacted, with XSAVEC) are
    the sizes the hardware uses for the guest's XCR0: a guest kernel whose
    XSAVE* mask is its XCR0 (RFBM = mask & the host's XCR0 = its XCR0) writes
    no byte past a buffer sized from them."""
    d = load(name)
    exp = expected(*d.host)
    p = policy(d)
    assert p.guest_leaf(0xD, 0, xcr0=0)[1] == 576             # never set: x87|SSE
    for v in exp.valid:
        a, b, c, dd = p.guest_leaf(0xD, 0, xcr0=v)
        assert (a | dd << 32, c) == (exp.max_xcr0, exp.max_size)
        assert b == std_size(d.cpuid, v & d.xcr0) <= c
        b1 = p.guest_leaf(0xD, 1, xcr0=v)[1]
        assert b1 == (compacted_size(d.cpuid, v & d.xcr0) if exp.d1 & 2 else 0)
        # the compacted layout the guest computes from the offered subleaves
        assert b1 == (compacted_size(lambda l, s: p.leaf(l, s), v) if exp.d1 & 2 else 0)


# --- xsetbv -----------------------------------------------------------------------------------------
XCR0_VALUES = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 0xFFFFF),
                        st.sampled_from([0, 1, 2, 3, 5, 7, 0x27, 0x67, 0xE3, 0xE7, 0xFF, 0x1F, 0x207,
                                         0x2E7, 0x600E7, 0x200E7, 0x20007, 1 << 63 | 7]))


@pytest.mark.parametrize("name", DUMPS)
def test_xsetbv_valid_values_are_xens(name):
    d = load(name)
    exp = expected(*d.host)
    xs = policy(d).xstate
    assert (xs.valid_values() if xs else []) == exp.valid


@pytest.mark.parametrize("name", DUMPS)
@settings(max_examples=150, deadline=None)
@given(v=XCR0_VALUES)
def test_xsetbv_accepts_exactly_xens_set(name, v):
    d = load(name)
    xs = policy(d).xstate
    if xs is None:
        return
    assert xs.xsetbv_ok(v) == (v in expected(*d.host).valid)


def fake_vcpu(dump, kernel=True):
    s = KS.Sregs()
    s.cr0, s.cr4, s.efer = 0x80050033, 0x620, 0xD01
    from pyxen.hv.vcpu import PVState
    dom = SimpleNamespace(vm_assist=0, log_guest_error=lambda *a: None, nr_pages=8192, domid=7,
                          log=logging.getLogger("pyxen.test_xstate"), trace=lambda *a: None,
                          cpuid_entries=dump.kvm_entries())
    vcpu = SimpleNamespace(id=0, pv=PVState(), fetch_sregs=lambda: s, sregs_changed=lambda: None,
                           regs=KS.Regs(), domain=dom, vcpu_info=SimpleNamespace(cr2=0))
    vcpu.pv.kernel_mode = kernel
    em = emulate.Emulator(dom)
    em._policy = policy(dump)
    return em, vcpu


def xsetbv(em, vcpu, value: int, xcr: int = 0):
    r = vcpu.regs
    r.rcx, r.rax, r.rdx = xcr, value & 0xFFFFFFFF, value >> 32
    insn = D.Decoder().decode(XSETBV + b"\x90" * 8, RIP)
    return PO._dispatch(em, vcpu, insn, D.RegFile(r, 0x8000, RIP), 0x202)


def guest_cpuid(em, vcpu, leaf, sub=0, forced=True):
    r = vcpu.regs
    r.rax, r.rcx = leaf, sub
    PO._cpuid(em, vcpu, D.RegFile(r, 0x8000, RIP), forced=forced)
    return r.rax, r.rbx, r.rcx, r.rdx


@pytest.mark.parametrize("name", DUMPS)
@settings(max_examples=60, deadline=None)
@given(values=st.lists(XCR0_VALUES, min_size=1, max_size=6))
def test_xsetbv_emulated(name, values):
    """The guest kernel's xsetbv through the #GP emulation: accepted values
    become the vCPU's XCR0 and leaf 0xd's EBX follows; refused ones leave the
    #GP (NotEmulated) and change nothing."""
    d = load(name)
    exp = expected(*d.host)
    em, vcpu = fake_vcpu(d)
    with pytest.raises(PO.Fault) as f:
        xsetbv(em, vcpu, 3)
    assert f.value.vector == 6, "#UD before CR4.OSXSAVE"
    PO.set_cr4(em, vcpu, 0x620 | PO.CR4_OSXSAVE)
    if not exp.xsave:
        assert not em.vstate(vcpu).cr4 & PO.CR4_OSXSAVE
        with pytest.raises(PO.Fault):
            xsetbv(em, vcpu, 3)
        return
    cur = 0
    for v in values:
        if v in exp.valid:
            assert xsetbv(em, vcpu, v) == (RIP + 3, 0x202)
            cur = v
        else:
            with pytest.raises(PO.NotEmulated):
                xsetbv(em, vcpu, v)
        assert em.vstate(vcpu).xcr0 == cur
        assert guest_cpuid(em, vcpu, 0xD, 0)[1] == std_size(d.cpuid, cur or 3)
    with pytest.raises(PO.NotEmulated):
        xsetbv(em, vcpu, exp.max_xcr0, xcr=1)           # XCR1: #GP
    vcpu.pv.kernel_mode = False
    with pytest.raises(PO.NotEmulated):
        xsetbv(em, vcpu, exp.max_xcr0)                  # user mode: #GP
    assert em.vstate(vcpu).xcr0 == cur


@pytest.mark.parametrize("name", DUMPS)
def test_cpuid_osxsave_per_vcpu(name):
    d = load(name)
    exp = expected(*d.host)
    em, vcpu = fake_vcpu(d)
    assert bit(guest_cpuid(em, vcpu, 1)[2], 27) == exp.xsave            # kernel, forced: leaked
    assert not bit(guest_cpuid(em, vcpu, 1, forced=False)[2], 27)       # a faulting cpuid
    vcpu.pv.kernel_mode = False
    assert not bit(guest_cpuid(em, vcpu, 1)[2], 27)                     # user, CR4 clear
    PO.set_cr4(em, vcpu, 0x620 | PO.CR4_OSXSAVE)
    assert bit(guest_cpuid(em, vcpu, 1)[2], 27) == exp.xsave            # user, CR4 set


@pytest.mark.parametrize("name", [n for n in DUMPS if expected(*load(n).host).avx])
def test_xsetbv_below_the_offer_is_logged(name, caplog):
    """Guest user space sees the host's XCR0 (native xgetbv/CPUID): a kernel
    setting less than offered will not save state its processes use."""
    em, vcpu = fake_vcpu(load(name))
    PO.set_cr4(em, vcpu, 0x620 | PO.CR4_OSXSAVE)
    with caplog.at_level(logging.WARNING, logger="pyxen.test_xstate"):
        xsetbv(em, vcpu, em._policy.xstate.max_xcr0)
        assert not caplog.records
        xsetbv(em, vcpu, 3)
        assert "leaves out offered state" in caplog.text
