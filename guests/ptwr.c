/*
 * ptwr - writable page tables (VMASST_TYPE_writable_pagetables, Xen's
 * arch/x86/pv/ro-page-fault.c).
 *
 * The kernel declares FEATURES "!writable_page_tables" and stores straight
 * into one of its own L1 page-table pages through the read-only mapping
 * every PV page table has.  A window VA (a spare mapped page) is retargeted
 * between two frames holding known values, once per store form: mov from a
 * register and from an immediate (8, 4 (low and high half) and 1 byte),
 * xchg, lock cmpxchg (success and failure), lock cmpxchg8b (success and
 * failure), or/and/xor/add/sub (register and immediate), bts/btr/btc
 * (immediate and register bit offset).  After each store the entry reads
 * back as computed by the same instruction run on an ordinary variable
 * (value, arithmetic flags, registers), and a read through the window sees
 * the frame the entry now maps.
 *
 * Refused stores must leave the entry alone and deliver the original #PF
 * (error P|W, CR2 = the entry's address): a frame beyond nr_pages, the L1
 * page itself mapped writable, a misaligned 8-byte store, a store into an
 * L2 page (Xen emulates L1 stores only), and any store while the guest has
 * switched the assist off with vm_assist.  Finally the cost of one emulated
 * store is measured.
 */
#include "emul.h"

XEN_GUEST_FEATURES("!writable_page_tables");

#define MAGIC_A 0xa11ce0000000000aUL
#define MAGIC_B 0xb0b000000000000bUL
#define MAGIC_W 0x77777777deadbeefUL
#define AVL9    (1UL << 9)           /* "available to software" PTE bits */
#define AVL10   (1UL << 10)
#define AVL11   (1UL << 11)
#define LOGIC_FLAGS (X86_ARITH_FLAGS & ~0x10UL)   /* AF is undefined after and/or/xor */

static volatile uint64_t *pte;     /* the window's L1 entry, via the read-only L1 mapping */
static volatile uint64_t *win;     /* the window */
static uint64_t eA, eB, eW;        /* entries mapping frame A, frame B, the window's own frame */
static unsigned long l1_mfn;

static void flush(void)
{
    check(mmuext_simple(MMUEXT_INVLPG_LOCAL, (unsigned long)win, 0) == 0, "INVLPG_LOCAL");
}

static uint64_t through_window(void)
{
    uint64_t v = 0;
    flush();
    if (probe_read64((unsigned long)win, &v))
        return ~0UL;
    return v;
}

static void set_entry(uint64_t e)
{
    *pte = e;                         /* a plain (emulated) 8-byte store */
}

/* ---- the store forms: each runs its instruction on *p -------------------- */
/* The address is always a plain register operand: (%[p]) and 4(%[p]). */
#define FLAGS_OUT "pushfq; popq %[f]"
#define RMW(name, insn)                                                              \
    static unsigned long name(volatile uint64_t *p)                                  \
    {                                                                                \
        unsigned long f;                                                             \
        asm volatile(insn "; " FLAGS_OUT : [f] "=r"(f) : [p] "r"(p) : "cc", "memory"); \
        return f;                                                                    \
    }
#define RMW_REG(name, insn)                                                          \
    static unsigned long name(volatile uint64_t *p, uint64_t v)                      \
    {                                                                                \
        unsigned long f;                                                             \
        asm volatile(insn "; " FLAGS_OUT : [f] "=r"(f) : [p] "r"(p), [v] "r"(v)      \
                     : "cc", "memory");                                              \
        return f;                                                                    \
    }

RMW_REG(f_or_reg, "orq %[v], (%[p])")
RMW(f_or_imm, "lock orq $0x200, (%[p])")
RMW(f_and_imm, "andq $~0x200, (%[p])")
RMW_REG(f_and_reg, "lock andq %[v], (%[p])")
RMW(f_xor_imm, "xorq $0x400, (%[p])")
RMW(f_add_imm, "addq $0x800, (%[p])")
RMW_REG(f_sub_reg, "subq %[v], (%[p])")
RMW(f_bts_imm, "lock btsq $9, (%[p])")
RMW_REG(f_btr_reg, "btrq %[v], (%[p])")
RMW(f_btc_imm, "btcq $10, (%[p])")

static uint64_t f_xchg(volatile uint64_t *p, uint64_t v)
{ asm volatile("xchgq %[v], (%[p])" : [v] "+r"(v) : [p] "r"(p) : "memory"); return v; }

struct cx { uint64_t rax; unsigned long flags; };
static struct cx f_cmpxchg(volatile uint64_t *p, uint64_t expected, uint64_t new)
{
    struct cx r;
    asm volatile("lock cmpxchgq %[n], (%[p]); " FLAGS_OUT
                 : "+a"(expected), [f] "=r"(r.flags) : [p] "r"(p), [n] "r"(new) : "cc", "memory");
    r.rax = expected;
    return r;
}
static struct cx f_cmpxchg32(volatile uint64_t *p, uint32_t expected, uint32_t new)
{
    struct cx r;
    asm volatile("lock cmpxchgl %[n], (%[p]); " FLAGS_OUT
                 : "+a"(expected), [f] "=r"(r.flags) : [p] "r"(p), [n] "r"(new) : "cc", "memory");
    r.rax = expected;
    return r;
}
struct cx8 { uint32_t eax, edx; unsigned long flags; };
static struct cx8 f_cmpxchg8b(volatile uint64_t *p, uint64_t expected, uint64_t new)
{
    struct cx8 r = { (uint32_t)expected, (uint32_t)(expected >> 32), 0 };
    asm volatile("lock cmpxchg8b (%[p]); " FLAGS_OUT
                 : "+a"(r.eax), "+d"(r.edx), [f] "=r"(r.flags)
                 : [p] "r"(p), "b"((uint32_t)new), "c"((uint32_t)(new >> 32)) : "cc", "memory");
    return r;
}

static void mov32_lo(volatile uint64_t *p, uint32_t v)
{ asm volatile("movl %[v], (%[p])" :: [p] "r"(p), [v] "r"(v) : "memory"); }
static void mov32_hi_imm_nx(volatile uint64_t *p)
{ asm volatile("movl $0x80000000, 4(%[p])" :: [p] "r"(p) : "memory"); }
static void mov32_hi_reg(volatile uint64_t *p, uint32_t v)
{ asm volatile("movl %[v], 4(%[p])" :: [p] "r"(p), [v] "r"(v) : "memory"); }
static void mov64_imm0(volatile uint64_t *p)
{ asm volatile("movq $0, (%[p])" :: [p] "r"(p) : "memory"); }
static void movb_imm(volatile uint64_t *p, bool read_only)
{
    if (read_only)
        asm volatile("movb $0x25, (%[p])" :: [p] "r"(p) : "memory");   /* P|U|A */
    else
        asm volatile("movb $0x67, (%[p])" :: [p] "r"(p) : "memory");   /* P|RW|U|A|D */
}

/* Run an RMW form on a plain variable and on the entry; compare. */
#define SAME_AS_NATIVE(what, mask, call_local, call_pte)                              \
    do {                                                                              \
        volatile uint64_t local = *pte;                                               \
        unsigned long fl = call_local, fp = call_pte;                                 \
        check(*pte == local, "%s: entry %#lx, native result %#lx", what,             \
              (unsigned long)*pte, (unsigned long)local);                             \
        check(((fl ^ fp) & (mask)) == 0, "%s: flags %#lx, native %#lx", what,         \
              fp & (mask), fl & (mask));                                              \
    } while (0)

static void expect_refused(const char *what, unsigned long va, uint64_t value)
{
    uint64_t before = *pte;
    memset((void *)&last_fault, 0, sizeof(last_fault));
    int faulted = probe_write64(va, value);
    check(faulted == 1, "%s: store was accepted", what);
    if (faulted) {
        check(last_fault.vector == X86_EXC_PF, "%s: vector %lu", what, last_fault.vector);
        check((last_fault.error_code & 0x1f) == 3, "%s: #PF error %#lx, want P|W",
              what, last_fault.error_code);
        check(last_fault.cr2 == va, "%s: cr2 %#lx, want %#lx", what, last_fault.cr2, va);
    }
    check(*pte == before, "%s: entry changed to %#lx", what, (unsigned long)*pte);
}

static void timing(void)
{
    const unsigned int n = 400;
    set_entry(eA);
    uint64_t t0 = rdtsc_ordered();
    for (unsigned int i = 0; i < n; i++) {
        *pte = eB;
        *pte = eA;
    }
    uint64_t cycles = (rdtsc_ordered() - t0) / (2 * n);
    uint32_t khz = xen_tsc_khz();
    unsigned long ns = khz ? (unsigned long)(cycles * 1000000UL / khz) : 0;
    printk("ptwr_store: stores=%u cycles_per_store=%lu tsc_khz=%u ns_per_store=%lu\n",
           2 * n, (unsigned long)cycles, khz, ns);
    check(through_window() == MAGIC_A, "window maps A after the timing loop");
}

void test_main(void)
{
    struct pt_walk w;

    check(traps_init() == 0, "traps_init");
    check(mm_init() == 0, "mm_init");

    unsigned long pa = alloc_pfn(), pb = alloc_pfn(), pw = alloc_pfn();
    if (!pa || !pb || !pw)
        test_error("no free frames");
    *(volatile uint64_t *)pfn_to_virt(pa) = MAGIC_A;
    *(volatile uint64_t *)pfn_to_virt(pb) = MAGIC_B;
    *(volatile uint64_t *)pfn_to_virt(pw) = MAGIC_W;
    win = pfn_to_virt(pw);
    if (pt_walk(current_l4_mfn(), (unsigned long)win, &w) != 0)
        test_error("window not mapped");
    l1_mfn = w.table_mfn[1];
    volatile uint64_t *l1 = mfn_to_virt(l1_mfn);
    if (!l1)
        test_error("the L1 table is not mapped in the bootstrap region");
    pte = &l1[((unsigned long)win >> PAGE_SHIFT) & (PT_ENTRIES - 1)];
    eW = *pte;
    eA = (pfn_to_mfn(pa) << PAGE_SHIFT) | PTE_KERN_RW;
    eB = (pfn_to_mfn(pb) << PAGE_SHIFT) | PTE_KERN_RW;
    printk("window %p entry at %p (L1 mfn %#lx) = %#lx\n", (void *)win, (void *)pte, l1_mfn,
           (unsigned long)eW);
    check((eW & (PTE_ADDR_MASK | _PAGE_PRESENT)) == ((pfn_to_mfn(pw) << PAGE_SHIFT) | 1),
          "window entry maps its own frame");

    /* mov r64: enabled by the FEATURES note alone (no vm_assist call yet) */
    set_entry(eA);
    check(*pte == eA, "mov r64: entry %#lx", (unsigned long)*pte);
    check(through_window() == MAGIC_A, "mov r64: window shows frame A");

    /* mov imm (8 bytes): clear -> not present */
    mov64_imm0(pte);
    check(*pte == 0, "mov $0: entry %#lx", (unsigned long)*pte);
    uint64_t dummy;
    flush();
    check(probe_read64((unsigned long)win, &dummy) == 1 && last_fault.vector == X86_EXC_PF,
          "mov $0: the window is unmapped");

    /* mov r32 (low half; the high half stays) */
    mov32_lo(pte, (uint32_t)eB);
    check(*pte == eB, "mov r32: entry %#lx", (unsigned long)*pte);
    check(through_window() == MAGIC_B, "mov r32: window shows frame B");

    /* mov imm32 into the high half: NX on, then mov r32 there: NX off */
    mov32_hi_imm_nx(pte);
    check(*pte == (eB | _PAGE_NX), "mov imm32 (high half): entry %#lx", (unsigned long)*pte);
    check(through_window() == MAGIC_B, "NX mapping still readable");
    mov32_hi_reg(pte, 0);
    check(*pte == eB, "mov r32 (high half): entry %#lx", (unsigned long)*pte);

    /* mov imm8: flags byte -> read-only, then back */
    movb_imm(pte, true);
    check(*pte == ((eB & ~0xffUL) | 0x25), "movb: entry %#lx", (unsigned long)*pte);
    flush();
    check(probe_write64((unsigned long)win, 1) == 1, "movb: window is read-only now");
    movb_imm(pte, false);
    check(*pte == ((eB & ~0xffUL) | 0x67), "movb back: entry %#lx", (unsigned long)*pte);
    set_entry(eB);

    /* xchg */
    uint64_t old = f_xchg(pte, eA);
    check(old == eB, "xchg: old %#lx", (unsigned long)old);
    check(*pte == eA, "xchg: entry %#lx", (unsigned long)*pte);
    check(through_window() == MAGIC_A, "xchg: window shows frame A");

    /* lock cmpxchg: success, then failure */
    volatile uint64_t local = eA;
    struct cx rl = f_cmpxchg(&local, eA, eB), rp = f_cmpxchg(pte, eA, eB);
    check(*pte == eB && rp.rax == eA, "cmpxchg success: entry %#lx rax %#lx",
          (unsigned long)*pte, (unsigned long)rp.rax);
    check(((rl.flags ^ rp.flags) & X86_ARITH_FLAGS) == 0 && (rp.flags & X86_FLAGS_ZF),
          "cmpxchg success: flags %#lx native %#lx", rp.flags, rl.flags);
    check(through_window() == MAGIC_B, "cmpxchg: window shows frame B");
    local = eB;
    rl = f_cmpxchg(&local, eA, eW);
    rp = f_cmpxchg(pte, eA, eW);
    check(*pte == eB && rp.rax == eB, "cmpxchg failure: entry %#lx rax %#lx",
          (unsigned long)*pte, (unsigned long)rp.rax);
    check(((rl.flags ^ rp.flags) & X86_ARITH_FLAGS) == 0 && !(rp.flags & X86_FLAGS_ZF),
          "cmpxchg failure: flags %#lx native %#lx", rp.flags, rl.flags);

    /* lock cmpxchg (4 bytes, low half) */
    local = eB;
    rl = f_cmpxchg32(&local, (uint32_t)eB, (uint32_t)eA);
    rp = f_cmpxchg32(pte, (uint32_t)eB, (uint32_t)eA);
    check(*pte == eA && ((rl.flags ^ rp.flags) & X86_ARITH_FLAGS) == 0,
          "cmpxchg32: entry %#lx flags %#lx native %#lx", (unsigned long)*pte, rp.flags, rl.flags);
    check(through_window() == MAGIC_A, "cmpxchg32: window shows frame A");

    /* lock cmpxchg8b: success, then failure (edx:eax gets the entry) */
    struct cx8 c8 = f_cmpxchg8b(pte, eA, eB);
    check(*pte == eB && (c8.flags & X86_FLAGS_ZF), "cmpxchg8b success: entry %#lx",
          (unsigned long)*pte);
    check(through_window() == MAGIC_B, "cmpxchg8b: window shows frame B");
    c8 = f_cmpxchg8b(pte, eA, eW);
    check(*pte == eB && !(c8.flags & X86_FLAGS_ZF) &&
          (((uint64_t)c8.edx << 32) | c8.eax) == eB,
          "cmpxchg8b failure: entry %#lx edx:eax %#x:%#x", (unsigned long)*pte, c8.edx, c8.eax);

    /* read-modify-write forms, checked against the same instruction natively */
    SAME_AS_NATIVE("or r64", LOGIC_FLAGS, f_or_reg(&local, AVL11), f_or_reg(pte, AVL11));
    SAME_AS_NATIVE("lock or imm", LOGIC_FLAGS, f_or_imm(&local), f_or_imm(pte));
    SAME_AS_NATIVE("and imm", LOGIC_FLAGS, f_and_imm(&local), f_and_imm(pte));
    SAME_AS_NATIVE("lock and r64", LOGIC_FLAGS, f_and_reg(&local, ~AVL11), f_and_reg(pte, ~AVL11));
    SAME_AS_NATIVE("xor imm", LOGIC_FLAGS, f_xor_imm(&local), f_xor_imm(pte));
    SAME_AS_NATIVE("add imm", X86_ARITH_FLAGS, f_add_imm(&local), f_add_imm(pte));
    SAME_AS_NATIVE("sub r64", X86_ARITH_FLAGS, f_sub_reg(&local, AVL11), f_sub_reg(pte, AVL11));
    SAME_AS_NATIVE("xor imm again", LOGIC_FLAGS, f_xor_imm(&local), f_xor_imm(pte));
    check(*pte == eB, "after the arithmetic the entry is back to %#lx (%#lx)",
          (unsigned long)eB, (unsigned long)*pte);
    SAME_AS_NATIVE("lock bts imm", X86_FLAGS_CF, f_bts_imm(&local), f_bts_imm(pte));
    SAME_AS_NATIVE("bts imm again (CF=1)", X86_FLAGS_CF, f_bts_imm(&local), f_bts_imm(pte));
    SAME_AS_NATIVE("btr r64", X86_FLAGS_CF, f_btr_reg(&local, 9), f_btr_reg(pte, 9));
    SAME_AS_NATIVE("btc imm", X86_FLAGS_CF, f_btc_imm(&local), f_btc_imm(pte));
    SAME_AS_NATIVE("btc imm back", X86_FLAGS_CF, f_btc_imm(&local), f_btc_imm(pte));
    check(*pte == eB, "after the bit operations the entry is %#lx", (unsigned long)*pte);
    check(through_window() == MAGIC_B, "window still shows frame B");

    /* refused: the guest gets the #PF and the entry does not change */
    unsigned long ea = (unsigned long)pte;
    expect_refused("frame beyond nr_pages", ea, ((nr_pages + 16) << PAGE_SHIFT) | PTE_KERN_RW);
    expect_refused("the L1 itself writable", ea, (l1_mfn << PAGE_SHIFT) | PTE_KERN_RW);
    expect_refused("misaligned 8-byte store", ea + 4, 0);
    volatile uint64_t *l2 = mfn_to_virt(w.table_mfn[2]);
    if (l2) {
        volatile uint64_t *l2e = &l2[((unsigned long)win >> 21) & (PT_ENTRIES - 1)];
        uint64_t l2v = *l2e, before = *pte;
        memset((void *)&last_fault, 0, sizeof(last_fault));
        check(probe_write64((unsigned long)l2e, l2v) == 1 && last_fault.vector == X86_EXC_PF &&
              last_fault.cr2 == (unsigned long)l2e, "a store into an L2 page is a #PF");
        check(*l2e == l2v && *pte == before, "L2 entry unchanged");
    } else {
        check(false, "L2 table not mapped");
    }
    check(through_window() == MAGIC_B, "window still shows frame B after the refusals");

    /* vm_assist switches the emulation off and on */
    check(HYPERVISOR_vm_assist(VMASST_CMD_disable, VMASST_TYPE_writable_pagetables) == 0,
          "vm_assist disable");
    expect_refused("store with the assist off", ea, eA);
    check(HYPERVISOR_vm_assist(VMASST_CMD_enable, VMASST_TYPE_writable_pagetables) == 0,
          "vm_assist enable");
    check(probe_write64(ea, eA) == 0 && *pte == eA, "store with the assist back on");

    timing();

    set_entry(eW);
    check(through_window() == MAGIC_W, "window restored");
    test_finish();
}
