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
    user_syscall(SYS_EXIT, 0, 0);
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
    /* XSAVE as the real CPU runs it (guest user space sees the host's XCR0) */
    check((e1.c & (BIT(26) | BIT(27))) == (n1.c & (BIT(26) | BIT(27))),
          "XSAVE/OSXSAVE as the hardware's (ecx %#x, native %#x)", e1.c, n1.c);
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
    r = xen_cpuid(0xd, 0);
    if (e1.c & BIT(27)) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        check(r.a == lo && r.d == hi, "leaf 0xd offers the XCR0 in force (%#x, xgetbv %#x)",
              r.a, lo);
        check(r.b == r.c && r.b >= 576, "leaf 0xd size %u", r.b);
        struct cpuid_res r1 = xen_cpuid(0xd, 1);
        check(!(r1.a & 0xf), "no XSAVEOPT/XSAVEC/XGETBV1/XSAVES (%#x)", r1.a);
    } else {
        check(!r.a && !r.b && !r.c && !r.d, "leaf 0xd empty (no XSAVE)");
    }
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
    test_finish();
}
