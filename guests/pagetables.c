/*
 * pagetables - the PV MMU interface: update_va_mapping, mmu_update,
 * mmuext_op (pin/unpin, new base pointer, TLB flush/invlpg, clear/copy
 * page), the M2P table and Xen's page-table safety rules, linear
 * (recursive) page tables included (Xen's default pv-linear-pt=true).
 *
 * Free frames come from the mapped padding after the bootstrap elements
 * (runtime/mm.c) and, when the domain has more memory than the bootstrap
 * region, from the never-mapped frames above it.  A page-aligned .bss page
 * ("window") is the test virtual address: its L1 entry is guaranteed to
 * exist, so update_va_mapping can point it anywhere.
 */
#include "minios.h"

static char window[4096] __page_aligned_bss;
#define WIN ((volatile uint64_t *)window)

static uint64_t pattern(uint64_t seed, unsigned int i)
{
    return seed * 0x9e3779b97f4a7c15UL + i;
}

static void fill(volatile uint64_t *p, uint64_t seed)
{
    for (unsigned int i = 0; i < 512; i++)
        p[i] = pattern(seed, i);
}

static bool matches(const volatile uint64_t *p, uint64_t seed)
{
    for (unsigned int i = 0; i < 512; i++)
        if (p[i] != pattern(seed, i))
            return false;
    return true;
}

static unsigned long must_alloc(void)
{
    unsigned long pfn = alloc_pfn();
    if (!pfn)
        test_error("out of free mapped frames");
    return pfn;
}

static bool pte_same(uint64_t a, uint64_t b)
{
    uint64_t ad = _PAGE_ACCESSED | _PAGE_DIRTY;
    return (a & ~ad) == (b & ~ad);
}

static unsigned long m2p_base = MACH2PHYS_VIRT_START;
static unsigned long max_mfn;

static void step_m2p(void)
{
    struct xen_machphys_mapping mm = { 0 };
    long rc = HYPERVISOR_memory_op(XENMEM_machphys_mapping, &mm);

    printk("-- M2P: XENMEM_machphys_mapping rc=%ld v_start=%#lx v_end=%#lx max_mfn=%#lx\n",
           rc, (unsigned long)mm.v_start, (unsigned long)mm.v_end, (unsigned long)mm.max_mfn);
    check(rc == 0, "XENMEM_machphys_mapping succeeds (%ld)", rc);
    if (rc == 0) {
        m2p_base = mm.v_start;
        max_mfn = mm.max_mfn;
    }

    const unsigned long sample[] = {
        0, virt_to_pfn((void *)start_info->pt_base), virt_to_pfn(start_info),
        first_free_pfn, nr_pages - 1,
    };
    unsigned int good = 0;
    for (unsigned int i = 0; i < ARRAY_SIZE(sample); i++) {
        unsigned long pfn = sample[i], mfn = p2m[pfn];
        uint64_t v = ~0UL;
        int faulted = probe_read64(m2p_base + mfn * 8, &v);
        if (!faulted && v == pfn)
            good++;
        else
            printk("   M2P[%#lx] = %#lx (faulted %d), expected pfn %#lx\n", mfn, v, faulted, pfn);
    }
    check(good == ARRAY_SIZE(sample), "M2P[p2m[pfn]] == pfn for %u sample frames", good);

    /* MMU_MACHPHYS_UPDATE: rewrite our own M2P entry and put it back. */
    unsigned long pfn = must_alloc(), mfn = p2m[pfn];
    uint64_t v = ~0UL;
    rc = mmu_update1((mfn << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE, 0x12345);
    probe_read64(m2p_base + mfn * 8, &v);
    check(rc == 0 && v == 0x12345, "MMU_MACHPHYS_UPDATE sets M2P[%#lx] (rc %ld, now %#lx)",
          mfn, rc, v);
    rc = mmu_update1((mfn << PAGE_SHIFT) | MMU_MACHPHYS_UPDATE, pfn);
    probe_read64(m2p_base + mfn * 8, &v);
    check(rc == 0 && v == pfn, "MMU_MACHPHYS_UPDATE restores M2P[%#lx] (rc %ld, now %#lx)",
          mfn, rc, v);
}

static unsigned long pfn_u, pfn_v, mfn_u, mfn_v, window_orig_mfn;

/* (a) map a free frame at the window with update_va_mapping */
static void step_a(void)
{
    struct pt_walk w;

    pfn_u = alloc_unmapped_pfn();
    bool unmapped = pfn_u != 0;
    if (!unmapped)
        pfn_u = must_alloc();
    mfn_u = p2m[pfn_u];
    window_orig_mfn = virt_to_mfn(window);
    printk("-- (a) update_va_mapping: window %p (orig mfn %#lx) -> pfn %#lx mfn %#lx (%s)\n",
           window, window_orig_mfn, pfn_u, mfn_u, unmapped ? "never mapped" : "mapped alias");

    long rc = remap_page(window, mfn_u, PTE_KERN_RW);
    check(rc == 0, "update_va_mapping(window -> U, RW) (%ld)", rc);
    fill(WIN, 0xa);
    check(matches(WIN, 0xa), "write/read through the new mapping");
    int walked = pt_walk(current_l4_mfn(), (unsigned long)window, &w);
    check(walked == 0 && ((w.entry[1] & PTE_ADDR_MASK) >> PAGE_SHIFT) == mfn_u,
          "L1 entry of the window now holds mfn U (%#lx)", (unsigned long)w.entry[1]);
    if (!unmapped)
        check(matches(pfn_to_virt(pfn_u), 0xa), "data visible through U's own mapping");
}

/* (b) retarget the window with mmu_update + INVLPG_LOCAL */
static void step_b(void)
{
    struct pt_walk w;

    pfn_v = must_alloc();
    mfn_v = p2m[pfn_v];
    volatile uint64_t *v = pfn_to_virt(pfn_v);
    fill(v, 0xb);
    printk("-- (b) mmu_update: window -> pfn %#lx mfn %#lx\n", pfn_v, mfn_v);

    if (pt_walk(current_l4_mfn(), (unsigned long)window, &w) != 0)
        test_error("cannot walk the window mapping");
    uint64_t val = (mfn_v << PAGE_SHIFT) | PTE_KERN_RW;
    long rc = mmu_update1(w.entry_maddr[1] | MMU_NORMAL_PT_UPDATE, val);
    check(rc == 0, "MMU_NORMAL_PT_UPDATE on the window's L1 entry (%ld)", rc);
    long rc2 = mmuext_simple(MMUEXT_INVLPG_LOCAL, (unsigned long)window, 0);
    check(rc2 == 0, "MMUEXT_INVLPG_LOCAL (%ld)", rc2);
    check(matches(WIN, 0xb), "window shows V's contents");
    const volatile uint64_t *l1 = mfn_to_virt(w.table_mfn[1]);
    check(l1 && pte_same(l1[((unsigned long)window >> PAGE_SHIFT) & 511], val),
          "the L1 entry reads back as written (%#lx)",
          l1 ? (unsigned long)l1[((unsigned long)window >> PAGE_SHIFT) & 511] : 0UL);
    WIN[7] = 0x77777777;
    check(v[7] == 0x77777777, "write via window visible via V's own mapping");
    v[7] = pattern(0xb, 7);
}

/* (c) build, pin, hook, use, unhook and unpin a fresh L1 */
static void step_c(void)
{
    struct pt_walk w;
    long rc;

    unsigned long pfn_l1 = must_alloc(), mfn_l1 = p2m[pfn_l1];
    unsigned long pfn_w = must_alloc(), mfn_w = p2m[pfn_w];
    volatile uint64_t *l1 = pfn_to_virt(pfn_l1);
    fill(pfn_to_virt(pfn_w), 0xc);
    printk("-- (c) new L1 at pfn %#lx mfn %#lx\n", pfn_l1, mfn_l1);

    l1[0] = (mfn_u << PAGE_SHIFT) | PTE_KERN_RW;
    l1[1] = (mfn_v << PAGE_SHIFT) | PTE_KERN_RW;

    rc = mmuext_simple(MMUEXT_PIN_L1_TABLE, mfn_l1, 0);
    check(rc < 0, "pinning an L1 that is still mapped writable is refused (%ld)", rc);
    if (rc == 0)
        mmuext_simple(MMUEXT_UNPIN_TABLE, mfn_l1, 0);

    rc = make_page_readonly((void *)l1);
    check(rc == 0, "remap the L1 page read-only (%ld)", rc);
    rc = mmuext_simple(MMUEXT_PIN_L1_TABLE, mfn_l1, 0);
    check(rc == 0, "MMUEXT_PIN_L1_TABLE (%ld)", rc);
    if (rc)
        return;
    rc = make_page_writable((void *)l1);
    check(rc < 0, "a writable mapping of the pinned L1 is refused (%ld)", rc);

    /* Find an empty L2 slot next to the bootstrap region. */
    if (pt_walk(current_l4_mfn(), VIRT_BASE, &w) != 0)
        test_error("cannot walk VIRT_BASE");
    unsigned long l2_mfn = w.table_mfn[2];
    const volatile uint64_t *l2 = mfn_to_virt(l2_mfn);
    unsigned int idx;
    for (idx = (VIRT_BASE >> 21) & 511; idx < 512 && (l2[idx] & _PAGE_PRESENT); idx++)
        ;
    if (idx == 512)
        test_error("no free L2 slot");
    unsigned long hole = (VIRT_BASE & ~((1UL << 30) - 1)) + ((unsigned long)idx << 21);
    volatile uint64_t *h = (volatile uint64_t *)hole;
    printk("   hooking it into L2 mfn %#lx slot %u -> va %p\n", l2_mfn, idx, (void *)hole);

    uint64_t l2e_maddr = (l2_mfn << PAGE_SHIFT) + idx * 8;
    rc = mmu_update1(l2e_maddr | MMU_NORMAL_PT_UPDATE,
                     (mfn_l1 << PAGE_SHIFT) | PTE_KERN_RW);
    check(rc == 0, "hook the L1 into the L2 with mmu_update (%ld)", rc);
    if (rc)
        goto unpin;

    check(matches(h, 0xa), "hole+0 maps U");
    check(matches(h + 512, 0xb), "hole+4K maps V");
    h[512 + 9] = 0x99;
    check(WIN[9] == 0x99, "write via the new L1 visible via the window (same frame V)");
    WIN[9] = pattern(0xb, 9);

    /* Extend the pinned, live L1 through mmu_update. */
    rc = mmu_update1(((mfn_l1 << PAGE_SHIFT) + 2 * 8) | MMU_NORMAL_PT_UPDATE,
                     (mfn_w << PAGE_SHIFT) | PTE_KERN_RW);
    check(rc == 0, "mmu_update adds entry 2 to the pinned L1 (%ld)", rc);
    mmuext_simple(MMUEXT_INVLPG_LOCAL, hole + 2 * PAGE_SIZE, 0);
    check(rc == 0 && matches(h + 1024, 0xc), "hole+8K maps W");

    /* The L1 may not map itself writable. */
    rc = mmu_update1(((mfn_l1 << PAGE_SHIFT) + 3 * 8) | MMU_NORMAL_PT_UPDATE,
                     (mfn_l1 << PAGE_SHIFT) | PTE_KERN_RW);
    check(rc < 0, "an L1 entry mapping the L1 itself writable is refused (%ld)", rc);

    /* Unhook and flush; the hole must fault again. */
    rc = mmu_update1(l2e_maddr | MMU_NORMAL_PT_UPDATE, 0);
    check(rc == 0, "unhook the L1 (%ld)", rc);
    rc = mmuext_simple(MMUEXT_TLB_FLUSH_LOCAL, 0, 0);
    check(rc == 0, "MMUEXT_TLB_FLUSH_LOCAL (%ld)", rc);
    uint64_t dummy;
    last_fault.vector = ~0UL;
    int faulted = probe_read64(hole, &dummy);
    check(faulted && last_fault.vector == X86_EXC_PF && last_fault.cr2 == hole,
          "hole faults after unhook (faulted %d vector %ld cr2 %#lx)", faulted,
          (long)last_fault.vector, (unsigned long)last_fault.cr2);

unpin:
    rc = mmuext_simple(MMUEXT_UNPIN_TABLE, mfn_l1, 0);
    check(rc == 0, "MMUEXT_UNPIN_TABLE L1 (%ld)", rc);
    rc = make_page_writable((void *)l1);
    check(rc == 0, "the unpinned, unhooked L1 may be mapped writable again (%ld)", rc);
}

/* (d) frames that are not ours cannot be mapped */
static void step_d(void)
{
    const unsigned long candidates[] = { 0xfffffffUL, 0x7fffffffUL, max_mfn + 1 };
    unsigned long bad = 0;
    for (unsigned int i = 0; i < ARRAY_SIZE(candidates) && !bad; i++)
        if (candidates[i] && mfn_to_pfn(candidates[i]) == ~0UL)
            bad = candidates[i];
    printk("-- (d) mapping foreign/nonexistent mfn %#lx\n", bad);

    long rc = remap_page(window, bad, PTE_KERN_RW);
    check(rc < 0, "update_va_mapping to mfn %#lx refused (%ld)", bad, rc);
    struct pt_walk w;
    pt_walk(current_l4_mfn(), (unsigned long)window, &w);
    rc = mmu_update1(w.entry_maddr[1] | MMU_NORMAL_PT_UPDATE, (bad << PAGE_SHIFT) | PTE_KERN_RW);
    check(rc < 0, "mmu_update to mfn %#lx refused (%ld)", bad, rc);
    check(matches(WIN, 0xb), "window still maps V after the refused updates");
}

/* (e) page-table pages cannot be mapped writable, but may be read-only */
static void step_e(void)
{
    struct pt_walk w;
    static const char *const lname[] = { "", "L1", "L2", "L3", "L4" };

    printk("-- (e) writable mappings of live page tables\n");
    if (pt_walk(current_l4_mfn(), (unsigned long)window, &w) != 0)
        test_error("cannot walk the window mapping");
    for (int level = 4; level >= 1; level--) {
        long rc = remap_page(window, w.table_mfn[level], PTE_KERN_RW);
        check(rc < 0, "writable mapping of the %s (mfn %#lx) refused (%ld)", lname[level],
              (unsigned long)w.table_mfn[level], rc);
        if (rc == 0)
            remap_page(window, mfn_v, PTE_KERN_RW);
    }
    long rc = remap_page(window, w.table_mfn[4], PTE_KERN_RO);
    check(rc == 0, "read-only mapping of the L4 allowed (%ld)", rc);
    if (rc == 0) {
        const volatile uint64_t *l4 = mfn_to_virt(w.table_mfn[4]);
        bool same = true;
        for (unsigned int i = 0; i < 512; i++)
            if (i < L4_XEN_SLOT_FIRST || i > L4_XEN_SLOT_LAST)
                same &= WIN[i] == l4[i];
        check(same, "the window shows the L4's guest slots");
    }
    rc = remap_page(window, mfn_v, PTE_KERN_RW);
    check(rc == 0 && matches(WIN, 0xb), "window back on V (%ld)", rc);
}

/* (f) a copied L4: pin, switch to it, run, switch back, unpin */
static void step_f(void)
{
    unsigned long pfn_l4 = must_alloc(), mfn_l4 = p2m[pfn_l4];
    unsigned long old = current_l4_mfn();
    volatile uint64_t *l4 = pfn_to_virt(pfn_l4);
    const volatile uint64_t *cur = mfn_to_virt(old);
    long rc;

    printk("-- (f) L4 copy at pfn %#lx mfn %#lx (current L4 mfn %#lx)\n", pfn_l4, mfn_l4, old);
    for (unsigned int i = 0; i < 512; i++)
        if (i < L4_XEN_SLOT_FIRST || i > L4_XEN_SLOT_LAST)
            l4[i] = cur[i];

    rc = make_page_readonly((void *)l4);
    check(rc == 0, "remap the new L4 read-only (%ld)", rc);
    rc = mmuext_simple(MMUEXT_PIN_L4_TABLE, mfn_l4, 0);
    check(rc == 0, "MMUEXT_PIN_L4_TABLE (%ld)", rc);
    if (rc)
        return;
    unsigned int xen_slots = 0;
    for (unsigned int i = L4_XEN_SLOT_FIRST; i <= L4_XEN_SLOT_LAST; i++)
        xen_slots += (l4[i] & _PAGE_PRESENT) != 0;
    printk("   (info) %u hypervisor slots filled in at pin time\n", xen_slots);

    rc = mmuext_simple(MMUEXT_NEW_BASEPTR, mfn_l4, 0);
    check(rc == 0, "MMUEXT_NEW_BASEPTR to the copy (%ld)", rc);
    if (rc == 0) {
        set_current_l4_mfn(mfn_l4);
        printk("   running on the copied L4\n");
        check(matches(WIN, 0xb), "window still readable on the new L4");
        uint64_t v = ~0UL;
        int faulted = probe_read64(m2p_base + mfn_l4 * 8, &v);
        check(!faulted && v == pfn_l4, "M2P readable on the new L4 (faulted %d, %#lx)",
              faulted, v);
        rc = mmuext_simple(MMUEXT_NEW_BASEPTR, old, 0);
        check(rc == 0, "MMUEXT_NEW_BASEPTR back to the bootstrap L4 (%ld)", rc);
        if (rc)
            test_error("cannot switch back to the bootstrap L4");
        set_current_l4_mfn(old);
    }
    rc = mmuext_simple(MMUEXT_UNPIN_TABLE, mfn_l4, 0);
    check(rc == 0, "MMUEXT_UNPIN_TABLE L4 (%ld)", rc);
    rc = make_page_writable((void *)l4);
    check(rc == 0, "the retired L4 may be mapped writable again (%ld)", rc);
}

/* (g) MMUEXT_CLEAR_PAGE / MMUEXT_COPY_PAGE */
static void step_g(void)
{
    printk("-- (g) CLEAR_PAGE / COPY_PAGE on mfn %#lx\n", mfn_u);
    long rc = remap_page(window, mfn_u, PTE_KERN_RW);
    check(rc == 0, "window -> U (%ld)", rc);
    fill(WIN, 0xd);
    rc = mmuext_simple(MMUEXT_CLEAR_PAGE, mfn_u, 0);
    bool zero = true;
    for (unsigned int i = 0; i < 512; i++)
        zero &= WIN[i] == 0;
    check(rc == 0 && zero, "MMUEXT_CLEAR_PAGE zeroes U (%ld)", rc);
    rc = mmuext_simple(MMUEXT_COPY_PAGE, mfn_u, mfn_v);
    check(rc == 0 && matches(WIN, 0xb), "MMUEXT_COPY_PAGE copies V into U (%ld)", rc);
}

/* (h) unmap the window, expect a #PF, then restore the original frame */
static void step_h(void)
{
    printk("-- (h) unmap and restore the window\n");
    long rc = HYPERVISOR_update_va_mapping((unsigned long)window, 0, UVMF_INVLPG);
    check(rc == 0, "update_va_mapping(window, 0) (%ld)", rc);
    uint64_t dummy;
    last_fault.vector = ~0UL;
    int faulted = probe_read64((unsigned long)window, &dummy);
    check(faulted && last_fault.vector == X86_EXC_PF &&
          last_fault.cr2 == (unsigned long)window && !(last_fault.error_code & PFEC_PRESENT),
          "reading the unmapped window faults (vector %ld ec %#lx cr2 %#lx)",
          (long)last_fault.vector, (unsigned long)last_fault.error_code,
          (unsigned long)last_fault.cr2);
    rc = remap_page(window, window_orig_mfn, PTE_KERN_RW);
    check(rc == 0, "window back on its own frame (%ld)", rc);
    WIN[0] = 42;
    check(WIN[0] == 42, "window writable again");
}

/* (i) linear page tables: an L4/L2 entry mapping a table of its own level */
#define CANON(va) ((unsigned long)((long)((unsigned long)(va) << 16) >> 16))

/* The L1 entry of va, seen through L4 slot `slot` mapping an L4 read-only. */
static unsigned long linear_pte_va(unsigned int slot, unsigned long va)
{
    return CANON(((unsigned long)slot << 39) | (((va & ((1UL << 48) - 1)) >> 12) << 3));
}

static void step_i(void)
{
    unsigned long cur = current_l4_mfn(), win = (unsigned long)window;
    const volatile uint64_t *l4 = mfn_to_virt(cur);
    struct pt_walk w;
    unsigned int slots[3], n = 0;
    uint64_t v = 0;
    long rc;
    int faulted;

    printk("-- (i) linear page tables on L4 mfn %#lx\n", cur);
    if (!l4 || pt_walk(cur, win, &w) != 0)
        test_error("cannot walk the window mapping");
    for (unsigned int i = 1; i < L4_XEN_SLOT_FIRST && n < 3; i++)
        if (!(l4[i] & _PAGE_PRESENT))
            slots[n++] = i;
    if (n < 3)
        test_error("fewer than 3 free L4 slots");
    unsigned int ks = slots[0], kb = slots[1], kc = slots[2];
    uint64_t self = (cur << PAGE_SHIFT) + ks * 8, cur_ro = (cur << PAGE_SHIFT) | PTE_KERN_RO;

    rc = mmu_update1(self | MMU_NORMAL_PT_UPDATE, cur_ro | _PAGE_RW);
    check(rc == -XEN_EINVAL, "a writable recursive L4 entry is refused (%ld)", rc);
    rc = mmu_update1(self | MMU_NORMAL_PT_UPDATE, cur_ro);
    check(rc == 0, "a read-only recursive L4 entry (slot %u) is accepted (%ld)", ks, rc);
    if (rc)
        return;
    faulted = probe_read64(linear_pte_va(ks, win), &v);
    check(!faulted && pte_same(v, w.entry[1]),
          "the window's L1 entry read through the recursive slot (%#lx, want %#lx)",
          (unsigned long)v, (unsigned long)w.entry[1]);
    unsigned long self_va = CANON(((unsigned long)ks << 39) | ((unsigned long)ks << 30) |
                                  ((unsigned long)ks << 21) | ((unsigned long)ks << 12));
    faulted = probe_read64(self_va + ks * 8, &v);
    check(!faulted && (v & PTE_ADDR_MASK) == (cur << PAGE_SHIFT) && !(v & _PAGE_RW),
          "the L4 reads its own recursive entry at %#lx (%#lx)", self_va, (unsigned long)v);
    last_fault.vector = ~0UL;
    faulted = probe_write64(self_va + kc * 8, (mfn_v << PAGE_SHIFT) | PTE_KERN_RW);
    check(faulted && last_fault.vector == X86_EXC_PF && !(l4[kc] & _PAGE_PRESENT),
          "a store into the L4 through it faults (vector %ld), the L4 unchanged",
          (long)last_fault.vector);
    rc = mmu_update1(self | MMU_NORMAL_PT_UPDATE, cur_ro | _PAGE_RW | _PAGE_DIRTY);
    check(rc == -XEN_EINVAL && !(l4[ks] & _PAGE_RW),
          "it cannot be made writable by a flags-only update (%ld)", rc);
    rc = mmu_update1(self | MMU_PT_UPDATE_PRESERVE_AD, cur_ro | _PAGE_RW);
    check(rc == -XEN_EINVAL && !(l4[ks] & _PAGE_RW),
          "nor with MMU_PT_UPDATE_PRESERVE_AD (%ld)", rc);
    rc = mmu_update1(self | MMU_NORMAL_PT_UPDATE, cur_ro | _PAGE_DIRTY);
    check(rc == 0 && !(l4[ks] & _PAGE_RW), "its dirty bit may change (%ld)", rc);
    rc = HYPERVISOR_update_va_mapping(self_va, cur_ro, UVMF_INVLPG);
    check(rc == -XEN_EINVAL, "update_va_mapping where the 'L1' is the L4 is refused (%ld)", rc);

    /* A second L4, B: a copy of the guest slots without the recursive one. */
    unsigned long pfn_b = must_alloc(), mfn_b = p2m[pfn_b];
    volatile uint64_t *b = pfn_to_virt(pfn_b);
    for (unsigned int i = 0; i < 512; i++)
        if ((i < L4_XEN_SLOT_FIRST || i > L4_XEN_SLOT_LAST) && i != ks)
            b[i] = l4[i];
    uint64_t b_ro = (mfn_b << PAGE_SHIFT) | PTE_KERN_RO;
    uint64_t cur_kb = ((cur << PAGE_SHIFT) + kb * 8) | MMU_NORMAL_PT_UPDATE;
    uint64_t b_kc = ((mfn_b << PAGE_SHIFT) + kc * 8) | MMU_NORMAL_PT_UPDATE;
    rc = make_page_readonly((void *)b);
    if (rc == 0)
        rc = mmuext_simple(MMUEXT_PIN_L4_TABLE, mfn_b, 0);
    check(rc == 0, "pin a second L4 B at mfn %#lx (%ld)", mfn_b, rc);
    if (rc)
        return;
    rc = mmu_update1(cur_kb, b_ro | _PAGE_RW);
    check(rc == -XEN_EINVAL, "a writable entry mapping L4 B from the L4 is refused (%ld)", rc);
    rc = mmu_update1(cur_kb, b_ro);
    check(rc == 0, "the L4 maps L4 B read-only (%ld)", rc);
    faulted = probe_read64(linear_pte_va(kb, win), &v);
    check(!faulted && pte_same(v, w.entry[1]),
          "the window's L1 entry read through B (%#lx)", (unsigned long)v);
    rc = mmu_update1(b_kc, cur_ro);
    check(rc == -XEN_EINVAL, "B, mapped as a linear table, may not map another L4 (%ld)", rc);
    rc = mmu_update1(b_kc, b_ro);
    check(rc == 0, "but B may map itself (%ld)", rc);
    mmu_update1(b_kc, 0);
    rc = mmu_update1(cur_kb, 0);
    check(rc == 0, "unhook B (%ld)", rc);
    rc = mmu_update1(b_kc, cur_ro);
    check(rc == 0, "now B maps the L4 (%ld)", rc);
    rc = mmu_update1(cur_kb, b_ro);
    check(rc == -XEN_EINVAL, "and the L4, mapped as a linear table, may not map B (%ld)", rc);
    rc = mmu_update1(b_kc, 0);
    check(rc == 0, "unhook the L4 from B (%ld)", rc);
    rc = mmu_update1(cur_kb, b_ro);
    check(rc == 0, "the L4 maps B again (%ld)", rc);
    rc = mmuext_simple(MMUEXT_UNPIN_TABLE, mfn_b, 0);
    check(rc == 0, "unpin B (%ld)", rc);
    rc = make_page_writable((void *)b);
    check(rc < 0, "B is still an L4 while the linear entry holds it (%ld)", rc);
    rc = mmu_update1(cur_kb, 0);
    check(rc == 0, "drop the linear entry (%ld)", rc);
    last_fault.vector = ~0UL;
    faulted = probe_read64(linear_pte_va(kb, win), &v);
    check(faulted && last_fault.vector == X86_EXC_PF, "its slot faults again, without a flush");
    rc = make_page_writable((void *)b);
    check(rc == 0, "then B may be mapped writable again (%ld)", rc);

    /* An L2 mapping itself: its slot then shows the L1 tables as pages. */
    unsigned long l2_mfn = w.table_mfn[2];
    const volatile uint64_t *l2 = mfn_to_virt(l2_mfn);
    unsigned int s;
    for (s = 0; s < 512 && (l2[s] & _PAGE_PRESENT); s++)
        ;
    if (s == 512 || !l2)
        test_error("no free L2 slot");
    uint64_t l2e = ((l2_mfn << PAGE_SHIFT) + s * 8) | MMU_NORMAL_PT_UPDATE;
    rc = mmu_update1(l2e, (l2_mfn << PAGE_SHIFT) | PTE_KERN_RW);
    check(rc == -XEN_EINVAL, "a writable recursive L2 entry is refused (%ld)", rc);
    rc = mmu_update1(l2e, (l2_mfn << PAGE_SHIFT) | PTE_KERN_RO);
    check(rc == 0, "a read-only recursive L2 entry (slot %u) is accepted (%ld)", s, rc);
    unsigned long l1_va = (win & ~((1UL << 30) - 1)) | ((unsigned long)s << 21) |
                          (((win >> 21) & 511) << 12);
    faulted = probe_read64(l1_va + ((win >> 12) & 511) * 8, &v);
    check(!faulted && pte_same(v, w.entry[1]),
          "the window's L1 entry read through the L2 (%#lx)", (unsigned long)v);
    rc = mmu_update1(l2e, 0);
    check(rc == 0, "drop the recursive L2 entry (%ld)", rc);
    last_fault.vector = ~0UL;
    faulted = probe_read64(l1_va, &v);
    check(faulted && last_fault.vector == X86_EXC_PF, "its slot faults again, without a flush");

    rc = mmu_update1(self | MMU_NORMAL_PT_UPDATE, 0);
    check(rc == 0, "drop the recursive L4 entry (%ld)", rc);
    /* no flush here: Xen flushes the TLBs itself after an L2-L4 update */
    last_fault.vector = ~0UL;
    faulted = probe_read64(linear_pte_va(ks, win), &v);
    check(faulted && last_fault.vector == X86_EXC_PF, "the recursive slot faults again");
}

void test_main(void)
{
    if (traps_init())
        test_error("traps_init failed");
    if (mm_init())
        test_error("mm_init failed");

    printk("pagetables: nr_pages %lu, pt_base %#lx (%lu frames), mfn_list %#lx\n",
           nr_pages, (unsigned long)start_info->pt_base,
           (unsigned long)start_info->nr_pt_frames, (unsigned long)start_info->mfn_list);
    printk("  free mapped pfns [%#lx, %#lx), unmapped pfns [%#lx, %#lx), L4 mfn %#lx\n",
           first_free_pfn, mapped_end_pfn, mapped_end_pfn, nr_pages, current_l4_mfn());
    if (mapped_end_pfn - first_free_pfn < 16)
        test_error("fewer than 16 free mapped frames after the bootstrap region");

    step_m2p();
    step_a();
    step_b();
    step_c();
    step_d();
    step_e();
    step_f();
    step_g();
    step_h();
    step_i();
    test_finish();
}
