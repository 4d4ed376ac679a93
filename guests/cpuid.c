/*
 * cpuid - CPUID through Xen's forced-emulation prefix (ud2; .ascii "xen";
 * cpuid), emulated from the #UD it raises (Xen's emul-inv-op.c).
 *
 * Xen's hypervisor leaves: 0x40000000 (max leaf, "XenVMMXenVMM"),
 * 0x40000001 (version = XENVER_version), 0x40000002 (one hypercall page,
 * MSR 0x40000000, MMU_PT_UPDATE_PRESERVE_AD), 0x40000003 (TSC kHz; its
 * tsc->ns scale agrees with the pvclock), 0x40000005 (machine address
 * width), nothing past the limit.  The PV policy: HYPERVISOR set, initial
 * APIC ID 0, no VMX/SVM, MONITOR, x2APIC, TSC-deadline, PCID/INVPCID,
 * SMEP/SMAP, PKU, PSE/PGE/MTRR/VME, 1 GiB pages; vendor string as the
 * hardware's.  The prefix works in user mode too.  A plain ud2, and the
 * prefix followed by something other than cpuid, still reach the guest's
 * #UD handler at the ud2.
 *
 * XSAVE (Xen's PV rules): leaf 0xd consistent in itself (sub 0 ECX = the
 * end of the last offered component, EBX = the size for the vCPU's XCR0,
 * 576 before any xsetbv; no XSAVES, no XFD); xsetbv #UD before
 * CR4.OSXSAVE, then accepted exactly for the values Xen's valid_xcr0
 * allows within the offered XCR0 (#GP otherwise, and for XCR1); EBX (and
 * sub 1 EBX with XSAVEC) follow each accepted value; XSAVE / XSAVEOPT /
 * XSAVEC with the guest's XCR0 as mask write nothing past those sizes.
 * Which bits are offered depends on the host: the "xstate:" lines are
 * checked against the host's CPUID by tests/hv/test_emulate.py.  Two
 * lines only inform (docs/design.md, "FPU state"): what an XSAVE with mask
 * ~0 writes (the host's XCR0 is in force), and whether PKRU, never
 * offered, is live anyway.
 */
#include "emul.h"
#include "events.h"

#define BIT(n) (1U << (n))

static volatile unsigned int ud_count;
static volatile uint64_t ud_rip;

/* plain_ud2: ud2; ret.  prefix_other: the prefix followed by nop nop
 * (not cpuid): Xen leaves that a #UD at the ud2. */
asm(".pushsection .text\n"
    ".globl plain_ud2, prefix_other, po_after\n"
    "plain_ud2: ud2\n"
    "    ret\n"
    "prefix_other: .byte 0x0f, 0x0b, 0x78, 0x65, 0x6e, 0x90, 0x90\n"
    "po_after: ret\n"
    ".popsection\n");
void plain_ud2(void), prefix_other(void);
extern char po_after[];

static bool ud_hook(struct trap_regs *r, uint64_t cr2)
{
    if (r->vector != X86_EXC_UD)
        return false;
    ud_count++;
    ud_rip = r->rip;
    r->rip = r->rip == (uint64_t)prefix_other ? (uint64_t)po_after : r->rip + 2;
    return true;
}

static void user_main(unsigned long arg)
{
    struct cpuid_res r = xen_cpuid(0x40000000, 0);
    user_syscall(SYS_REPORT, 0, r.b);
    user_syscall(SYS_REPORT, 1, r.a);
    user_syscall(SYS_REPORT, 2, xen_cpuid(1, 0).c);
    user_syscall(SYS_EXIT, 0, 0);
}

/* ---- XSAVE ---------------------------------------------------------------- */
#define XCR0_X87 1UL
#define XCR0_SSE 2UL
#define XCR0_YMM 4UL
#define XCR0_AVX512 0xe0UL
#define CR4_OSXSAVE (1UL << 18)
#define XSAVE_LEGACY 576U

/* Run one instruction; a fault resumes after it with flt = 1 (exception table). */
#define XTRY(insn)                                           \
    "1: " insn "\n2:\n"                                      \
    ".pushsection __ex_table, \"a\"\n.p2align 3\n"           \
    ".quad 1b, 3f\n.popsection\n"                            \
    ".pushsection .text.fixup, \"ax\"\n"                     \
    "3: movl $1, %k[flt]\n jmp 2b\n.popsection\n"

static int xsetbv_try(uint32_t xcr, uint64_t v)
{
    int flt = 0;
    asm volatile(XTRY("xsetbv") : [flt] "+r"(flt)
                 : "c"(xcr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
    return flt;
}

static int rdpkru_try(uint32_t *v)
{
    int flt = 0;
    uint32_t a = 0, d = 0;
    asm volatile(XTRY("rdpkru") : [flt] "+r"(flt), "+a"(a), "+d"(d) : "c"(0) : "memory");
    *v = a;
    return flt;
}

static unsigned long rd_cr4(void) { unsigned long v; asm volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static void wr_cr4(unsigned long v) { asm volatile("mov %0, %%cr4" :: "r"(v) : "memory"); }

/* Xen's valid_xcr0 */
static bool xcr0_valid(uint64_t v)
{
    if (!(v & XCR0_X87) || ((v & XCR0_YMM) && !(v & XCR0_SSE)))
        return false;
    if ((v & XCR0_AVX512) && (!(v & XCR0_YMM) || (v & XCR0_AVX512) != XCR0_AVX512))
        return false;
    if (!(v & (1UL << 3)) != !(v & (1UL << 4)))
        return false;
    if (!(v & (1UL << 17)) != !(v & (1UL << 18)))
        return false;
    return true;
}

static uint8_t xarea[16384] __attribute__((aligned(64)));

/* Fill xarea with a pattern, the XSAVE header (bytes 512-575) with zeros:
 * XSAVE writes only the XSTATE_BV bits of the components it saves. */
static void xarea_fill(void)
{
    memset(xarea, 0xa5, sizeof(xarea));
    memset(xarea + 512, 0, 64);
}

/* The offset one past the last byte of xarea that differs from the fill
 * pattern (the header counts as written). */
static unsigned int xarea_end(void)
{
    unsigned int end = 0;
    for (unsigned int i = 0; i < sizeof(xarea); i++)
        if (xarea[i] != 0xa5 || (i >= 512 && i < 576))
            end = i + 1;
    return end;
}

#define XSAVE_OP(op, mask)                                                    \
    asm volatile(op " %0" : "+m"(xarea) : "a"((uint32_t)(mask)),              \
                 "d"((uint32_t)((mask) >> 32)) : "memory")

/* the sizes leaf 0xd gives for an XCR0, from its subleaves */
static unsigned int std_size(uint64_t v)
{
    unsigned int size = XSAVE_LEGACY;
    for (unsigned int i = 2; i < 63; i++)
        if (v >> i & 1) {
            struct cpuid_res c = xen_cpuid(0xd, i);
            if (c.b + c.a > size)
                size = c.b + c.a;
        }
    return size;
}

static unsigned int compacted_size(uint64_t v)
{
    unsigned int size = XSAVE_LEGACY;
    for (unsigned int i = 2; i < 63; i++)
        if (v >> i & 1) {
            struct cpuid_res c = xen_cpuid(0xd, i);
            if (c.c & 2)
                size = (size + 63) & ~63U;
            size += c.a;
        }
    return size;
}

static void test_xstate(struct cpuid_res e1)
{
    struct cpuid_res d0 = xen_cpuid(0xd, 0), d1 = xen_cpuid(0xd, 1);
    uint64_t max = d0.a | (uint64_t)d0.d << 32;
    printk("xstate: leaf 0xd.0 %#x %u %u %#x, 0xd.1 %#x %u %#x %#x\n",
           d0.a, d0.b, d0.c, d0.d, d1.a, d1.b, d1.c, d1.d);
    if (!(e1.c & BIT(26))) {
        check(!d0.a && !d0.b && !d0.c && !d0.d && !d1.a, "leaf 0xd empty (no XSAVE)");
        wr_cr4(rd_cr4() | CR4_OSXSAVE);
        check(!(rd_cr4() & CR4_OSXSAVE), "CR4.OSXSAVE cannot be set without XSAVE");
        check(xsetbv_try(0, 3) && last_fault.vector == X86_EXC_UD, "xsetbv without XSAVE: #UD");
        return;
    }
    check((max & 3) == 3 && xcr0_valid(max), "leaf 0xd offers a valid XCR0 %#lx", (unsigned long)max);
    check(d0.b == XSAVE_LEGACY, "leaf 0xd.0 EBX %u: the size for x87|SSE before any xsetbv", d0.b);
    check(d0.c == std_size(max), "leaf 0xd.0 ECX %u = the end of the last component (%u)",
          d0.c, std_size(max));
    for (unsigned int i = 2; i < 63; i++) {
        struct cpuid_res c = xen_cpuid(0xd, i);
        if (max >> i & 1)
            check(c.a && c.b >= XSAVE_LEGACY && !(c.c & ~2U) && !c.d,
                  "leaf 0xd.%u: size %u offset %u ecx %#x", i, c.a, c.b, c.c);
        else
            check(!c.a && !c.b && !c.c && !c.d, "leaf 0xd.%u empty (not offered)", i);
    }
    check(!(d1.a & ~7U) && !d1.c && !d1.d, "leaf 0xd.1: no XSAVES, XFD, XSS (%#x)", d1.a);
    check((d1.a & 2) ? d1.b == compacted_size(3) : d1.b == 0, "leaf 0xd.1 EBX %u", d1.b);

    /* xsetbv: #UD before CR4.OSXSAVE, then Xen's rules */
    check(xsetbv_try(0, max) && last_fault.vector == X86_EXC_UD, "xsetbv before CR4.OSXSAVE: #UD");
    wr_cr4(rd_cr4() | CR4_OSXSAVE);
    check(rd_cr4() & CR4_OSXSAVE, "CR4.OSXSAVE set");
    check(xen_cpuid(1, 0).c & BIT(27), "OSXSAVE with CR4.OSXSAVE");
    static const uint64_t tries[] = {
        0, 1, 2, 3, 4, 5, 6, 7, 0x27, 0x67, 0xe3, 0xe5, 0xe7, 0x207, 0x2e7, 0x1f, 0x600e7,
        0x200e7, 0x8000000000000007UL, 0x100000007UL,
    };
    unsigned int accepted = 0;
    for (unsigned int n = 0; n < sizeof(tries) / sizeof(tries[0]) + 1; n++) {
        uint64_t v = n < sizeof(tries) / sizeof(tries[0]) ? tries[n] : max | (max << 1);
        bool ok = !(v & ~max) && xcr0_valid(v);
        last_fault.vector = 0;
        int flt = xsetbv_try(0, v);
        check(ok ? !flt : (flt && last_fault.vector == X86_EXC_GP),
              "xsetbv %#lx: %s (faulted %d vector %lu)", (unsigned long)v,
              ok ? "accepted" : "#GP", flt, last_fault.vector);
        if (ok && !flt) {
            accepted++;
            struct cpuid_res a = xen_cpuid(0xd, 0), b = xen_cpuid(0xd, 1);
            check(a.b == std_size(v) && a.c == d0.c && a.a == d0.a,
                  "after xsetbv %#lx: leaf 0xd.0 EBX %u (want %u)", (unsigned long)v, a.b,
                  std_size(v));
            check((d1.a & 2) ? b.b == compacted_size(v) : b.b == 0,
                  "after xsetbv %#lx: leaf 0xd.1 EBX %u", (unsigned long)v, b.b);
        }
    }
    check(xsetbv_try(1, max) && last_fault.vector == X86_EXC_GP, "xsetbv XCR1: #GP");
    check(!xsetbv_try(0, max), "xsetbv of the offered XCR0 %#lx", (unsigned long)max);
    printk("xstate: %u values accepted; guest XCR0 %#lx\n", accepted, (unsigned long)max);

    /* what the hardware writes with the guest's XCR0 as the mask */
    unsigned int size = xen_cpuid(0xd, 0).b;
    xarea_fill();
    XSAVE_OP("xsave64", max);
    unsigned int end = xarea_end();
    uint64_t bv = *(uint64_t *)(xarea + 512);
    check(end <= size && !(bv & ~max), "xsave: wrote %u bytes of %u, XSTATE_BV %#lx",
          end, size, (unsigned long)bv);
    asm volatile("xrstor64 %0" :: "m"(xarea), "a"((uint32_t)max), "d"((uint32_t)(max >> 32))
                 : "memory");
    if (d1.a & 1) {
        xarea_fill();
        XSAVE_OP("xsaveopt64", max);
        end = xarea_end();
        check(end <= size, "xsaveopt: wrote %u bytes of %u", end, size);
    }
    if (d1.a & 2) {
        unsigned int csize = xen_cpuid(0xd, 1).b;
        xarea_fill();
        XSAVE_OP("xsavec64", max);
        end = xarea_end();
        uint64_t comp = *(uint64_t *)(xarea + 520);
        check(end <= csize && comp == (max | 1UL << 63),
              "xsavec: wrote %u bytes of %u, XCOMP_BV %#lx", end, csize, (unsigned long)comp);
        asm volatile("xrstor64 %0" :: "m"(xarea), "a"((uint32_t)max),
                     "d"((uint32_t)(max >> 32)) : "memory");
    }
    /* A mask past the guest's XCR0 reaches the host's XCR0 here (PVM keeps
     * it): informational, checked against the host by the test. */
    uint32_t lo, hi;
    asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    struct cpuid_res n0 = native_cpuid(0xd, 0);
    if (n0.c <= sizeof(xarea)) {
        xarea_fill();
        XSAVE_OP("xsave64", ~0UL);
        bv = *(uint64_t *)(xarea + 512);
        printk("xstate: xgetbv %#lx; xsave with mask ~0 wrote %u bytes (leaf 0xd EBX %u), "
               "XSTATE_BV %#lx\n", (unsigned long)lo | (unsigned long)hi << 32, xarea_end(),
               size, (unsigned long)bv);
    }
    /* PKRU (never offered to a PV guest) is live when the host runs CR4.PKE:
     * informational, see docs/design.md */
    uint32_t pkru;
    if (rdpkru_try(&pkru))
        printk("xstate: rdpkru faults (vector %lu)\n", last_fault.vector);
    else {
        asm volatile("wrpkru" :: "a"(0x5555555cU), "c"(0), "d"(0) : "memory");
        HYPERVISOR_xen_version(0, NULL);
        uint32_t after;
        rdpkru_try(&after);
        asm volatile("wrpkru" :: "a"(pkru), "c"(0), "d"(0) : "memory");
        printk("xstate: rdpkru %#x; after wrpkru 0x5555555c and a hypercall %#x\n", pkru, after);
    }
}

void test_main(void)
{
    check(traps_init() == 0, "traps_init");
    set_smp_id(0);                    /* xen_system_time() finds its vcpu_info via %gs */

    /* hypervisor leaves */
    struct cpuid_res r = xen_cpuid(0x40000000, 0);
    printk("0x40000000: %#x %.4s%.4s%.4s\n", r.a, (char *)&r.b, (char *)&r.c, (char *)&r.d);
    check(r.b == 0x566e6558 && r.c == 0x65584d4d && r.d == 0x4d4d566e, "signature XenVMMXenVMM");
    check(r.a >= 0x40000002 && r.a <= 0x400000ff, "max hypervisor leaf %#x", r.a);
    unsigned int max = r.a;

    long ver = HYPERVISOR_xen_version(XENVER_version, NULL);
    r = xen_cpuid(0x40000001, 0);
    check(r.a == (uint32_t)ver, "0x40000001 version %#x == XENVER_version %#lx", r.a, ver);

    r = xen_cpuid(0x40000002, 0);
    check(r.a == 1 && r.b == 0x40000000 && (r.c & 1), "0x40000002: pages %u msr %#x feat %#x",
          r.a, r.b, r.c);

    r = xen_cpuid(0x40000003, 0);
    uint32_t khz = r.c;
    check(khz > 100000, "0x40000003: tsc_khz %u", khz);
    check(xen_cpuid(0x40000003, 2).a == khz, "0x40000003.2: cpu_khz");
    struct cpuid_res sc = xen_cpuid(0x40000003, 1);
    int8_t shift = (int8_t)sc.d;
    check(sc.c != 0, "0x40000003.1: tsc->ns mul_frac %#x shift %d", sc.c, shift);
    uint64_t s0 = xen_system_time(), t0 = rdtsc_ordered();
    while (xen_system_time() - s0 < 20000000ULL)
        ;
    uint64_t dsys = xen_system_time() - s0, dtsc = rdtsc_ordered() - t0;
    uint64_t scaled = shift >= 0 ? dtsc << shift : dtsc >> -shift;
    uint64_t ns = (uint64_t)(((unsigned __int128)scaled * sc.c) >> 32);
    check(ns > dsys * 95 / 100 && ns < dsys * 105 / 100,
          "tsc scale: %lu ns by CPUID vs %lu ns by the pvclock", (unsigned long)ns,
          (unsigned long)dsys);

    if (max >= 0x40000005) {
        r = xen_cpuid(0x40000005, 0);
        check(r.b > 12 && r.b <= 64, "0x40000005: machine address width %u", r.b);
    }
    r = xen_cpuid(max + 1, 0);
    check(!r.a && !r.b && !r.c && !r.d, "leaf past the limit is empty");
    r = xen_cpuid(0x40000100, 0);
    check(!r.a && !r.b && !r.c && !r.d, "0x40000100 is empty");

    /* the PV policy */
    struct cpuid_res n0 = native_cpuid(0, 0), e0 = xen_cpuid(0, 0);
    check(e0.b == n0.b && e0.c == n0.c && e0.d == n0.d, "vendor string as the hardware's");
    check(e0.a >= 1 && e0.a <= 0xd, "max basic leaf %#x", e0.a);
    struct cpuid_res e1 = xen_cpuid(1, 0), n1 = native_cpuid(1, 0);
    printk("leaf 1: emulated ecx %#x edx %#x ebx %#x / native ecx %#x edx %#x\n",
           e1.c, e1.d, e1.b, n1.c, n1.d);
    check(e1.c & BIT(31), "HYPERVISOR bit set");
    check(!(e1.c & (BIT(3) | BIT(5) | BIT(17) | BIT(21) | BIT(24))),
          "no MONITOR, VMX, PCID, x2APIC, TSC-deadline (ecx %#x)", e1.c);
    /* XSAVE/OSXSAVE: the host's XSAVE, OSXSAVE leaked to the kernel (Xen's
     * PV quirk); checked against the host's CPUID by the test */
    check(!(e1.c & BIT(26)) == !(e1.c & BIT(27)), "OSXSAVE leaked with XSAVE (ecx %#x)", e1.c);
    check(!(e1.d & (BIT(1) | BIT(3) | BIT(12) | BIT(13) | BIT(17))),
          "no VME, PSE, MTRR, PGE, PSE36 (edx %#x)", e1.d);
    check((e1.d & (BIT(0) | BIT(4) | BIT(8) | BIT(24) | BIT(26))) ==
          (n1.d & (BIT(0) | BIT(4) | BIT(8) | BIT(24) | BIT(26))),
          "FPU, TSC, CX8, FXSR, SSE2 as the hardware's");
    check((e1.b >> 24) == 0, "initial APIC ID 0 (ebx %#x)", e1.b);
    check(e1.a == (n1.a & 0x0fff0fff), "family/model/stepping %#x (native %#x)", e1.a, n1.a);
    if (e0.a >= 7) {
        struct cpuid_res e7 = xen_cpuid(7, 0);
        check(!(e7.b & (BIT(7) | BIT(10) | BIT(20))), "no SMEP, INVPCID, SMAP (ebx %#x)", e7.b);
        check(!(e7.c & (BIT(3) | BIT(4))), "no PKU/OSPKE (ecx %#x)", e7.c);
        check(e7.a <= 2, "leaf 7 max subleaf %u", e7.a);
    }
    struct cpuid_res x0 = xen_cpuid(0x80000000, 0), x1 = xen_cpuid(0x80000001, 0);
    check(x0.a >= 0x80000001, "max extended leaf %#x", x0.a);
    check(!(x1.c & BIT(2)), "no SVM (0x80000001 ecx %#x)", x1.c);
    check((x1.d & (BIT(29) | BIT(20))) == (BIT(29) | BIT(20)), "LM and NX (edx %#x)", x1.d);
    check(!(x1.d & BIT(26)), "no 1 GiB pages");
    test_xstate(e1);
    r = xen_cpuid(5, 0);
    check(!r.a && !r.b && !r.c && !r.d, "leaf 5 (MONITOR) empty");

    /* #UD that is not the forced-emulation CPUID */
    trap_hook = ud_hook;
    ud_count = 0;
    plain_ud2();
    check(ud_count == 1 && ud_rip == (uint64_t)plain_ud2, "plain ud2 reaches the #UD handler");
    ud_count = 0;
    prefix_other();
    check(ud_count == 1 && ud_rip == (uint64_t)prefix_other,
          "prefix + nop (not cpuid): #UD at the ud2 (%u, %#lx)", ud_count, (unsigned long)ud_rip);
    trap_hook = NULL;

    /* user mode */
    check(user_init() == 0, "user_init");
    user_run(user_main, 0);
    check(user_reports[0] == 0x566e6558 && user_reports[1] == max,
          "forced cpuid from user mode (%#lx)", (unsigned long)user_reports[0]);
    check(!(user_reports[2] & BIT(27)) == !(rd_cr4() & CR4_OSXSAVE),
          "user mode: OSXSAVE as the guest's CR4.OSXSAVE (ecx %#lx)",
          (unsigned long)user_reports[2]);
    test_finish();
}
