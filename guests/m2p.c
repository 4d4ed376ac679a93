/*
 * m2p - the read-only M2P at the address Xen's public headers fix for it
 * (MACH2PHYS_VIRT_START = 0xFFFF800000000000, PML4 slot 256).
 *
 * A 64-bit PV guest may read machine_to_phys_mapping there directly, as XTF
 * does, without asking XENMEM_machphys_mapping.  Loads of 8, 4, 2 and 1
 * bytes (mov, movzx, movsx), cmp against memory and add from memory return
 * the same entries as the table XENMEM_machphys_mapping reports (and the
 * mfn -> pfn identity this guest's p2m gives).  A store there is a #PF with
 * P|W (the mapping is read-only), a load past the populated table a #PF
 * without P, both with CR2 the address; the guest goes on afterwards.
 * The cost of one such load is printed.
 */
#include "emul.h"

#define M2P_ABI ((volatile uint64_t *)0xFFFF800000000000UL)

static uint64_t m2p_base, m2p_end;

static uint64_t via_mapping(unsigned long mfn)
{
    return ((volatile uint64_t *)m2p_base)[mfn];
}

static void forms(unsigned long mfn)
{
    uint64_t want = via_mapping(mfn);
    volatile uint64_t *p = &M2P_ABI[mfn];
    uint64_t v8 = *p;
    uint32_t v4 = *(volatile uint32_t *)p;
    uint16_t v2 = *(volatile uint16_t *)p;
    uint8_t v1 = *(volatile uint8_t *)p;
    uint64_t zx, sx, sum = 5;
    unsigned long eq;

    check(v8 == want, "mfn %#lx: 8-byte load %#lx, the table says %#lx", mfn,
          (unsigned long)v8, (unsigned long)want);
    check(v4 == (uint32_t)want && v2 == (uint16_t)want && v1 == (uint8_t)want,
          "mfn %#lx: 4/2/1-byte loads %#x %#x %#x", mfn, v4, v2, v1);
    asm volatile("movzbq (%1), %0" : "=r"(zx) : "r"(p) : "memory");
    asm volatile("movswq (%1), %0" : "=r"(sx) : "r"(p) : "memory");
    check(zx == (uint8_t)want && sx == (uint64_t)(int64_t)(int16_t)want,
          "mfn %#lx: movzx %#lx movsx %#lx", mfn, (unsigned long)zx, (unsigned long)sx);
    asm volatile("cmpq %2, (%1); sete %b0; movzbl %b0, %k0" : "=&r"(eq) : "r"(p), "r"(want)
                 : "memory", "cc");
    check(eq == 1, "mfn %#lx: cmp with memory sets ZF", mfn);
    asm volatile("addq (%1), %0" : "+r"(sum) : "r"(p) : "memory", "cc");
    check(sum == want + 5, "mfn %#lx: add from memory %#lx", mfn, (unsigned long)sum);
}

void test_main(void)
{
    struct xen_machphys_mapping mm = { 0 };

    check(traps_init() == 0, "traps_init");
    check(mm_init() == 0, "mm_init");
    check(HYPERVISOR_memory_op(XENMEM_machphys_mapping, &mm) == 0, "XENMEM_machphys_mapping");
    m2p_base = mm.v_start;
    m2p_end = mm.v_end;
    printk("machphys_mapping %#lx-%#lx max_mfn %#lx\n", (unsigned long)mm.v_start,
           (unsigned long)mm.v_end, (unsigned long)mm.max_mfn);

    const unsigned long sample[] = {
        0, 1, virt_to_pfn((void *)start_info->pt_base), virt_to_pfn(start_info),
        first_free_pfn, nr_pages - 1,
    };
    for (unsigned int i = 0; i < sizeof(sample) / sizeof(sample[0]); i++) {
        unsigned long mfn = pfn_to_mfn(sample[i]);
        forms(mfn);
        check(M2P_ABI[mfn] == sample[i], "M2P[%#lx] = %#lx, want pfn %#lx", mfn,
              (unsigned long)M2P_ABI[mfn], sample[i]);
    }

    /* read-only: a store is #PF with P|W, CR2 the address */
    unsigned long target = (unsigned long)&M2P_ABI[3];
    uint64_t before = M2P_ABI[3], dummy;
    check(probe_write64(target, 0x1234) == 1, "a store to the M2P faults");
    check(last_fault.vector == X86_EXC_PF && (last_fault.error_code & 3) == 3 &&
          last_fault.cr2 == target, "store: #PF err %#lx cr2 %#lx",
          (unsigned long)last_fault.error_code, (unsigned long)last_fault.cr2);
    check(M2P_ABI[3] == before, "the store changed nothing");

    /* past the populated table: not present */
    unsigned long past = (unsigned long)M2P_ABI + (m2p_end - m2p_base);
    check(probe_read64(past, &dummy) == 1, "a load past the table faults");
    check(last_fault.vector == X86_EXC_PF && !(last_fault.error_code & 1) &&
          last_fault.cr2 == past, "past the end: #PF err %#lx cr2 %#lx",
          (unsigned long)last_fault.error_code, (unsigned long)last_fault.cr2);

    /* the cost of one load completed by the hypervisor */
    const unsigned int n = 400;
    uint64_t acc = 0, t0 = rdtsc_ordered();
    for (unsigned int i = 0; i < n; i++)
        acc += M2P_ABI[i & 7];
    uint64_t cycles = (rdtsc_ordered() - t0) / n;
    uint32_t khz = xen_tsc_khz();
    printk("m2p_read: reads=%u cycles_per_read=%lu tsc_khz=%u ns_per_read=%lu (sum %lu)\n", n,
           (unsigned long)cycles, khz, khz ? (unsigned long)(cycles * 1000000UL / khz) : 0UL,
           (unsigned long)acc);
    test_finish();
}
