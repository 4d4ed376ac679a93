/*
 * privop - privileged instructions a PV kernel executes at ring 3 and the
 * hypervisor emulates from their #GP (Xen's arch/x86/pv/emul-priv-op.c).
 *
 * Kernel mode: mov from/to %cr0 (TS only; clts; fpu_taskswitch shows up),
 * %cr2, %cr3 (switch to a read-only copy of the L4 and back; a writable
 * page is refused), %cr4 (guest-controllable bits only); mov from/to the
 * debug registers; rdmsr/wrmsr of FS_BASE, GS_BASE, SHADOW_GS_BASE (the
 * bases really change), EFER, PAT, TSC, PLATFORM_INFO,
 * MISC_FEATURES_ENABLES, MISC_ENABLE (Intel) and the hypercall-page MSR;
 * unknown MSRs and non-canonical bases give #GP; port I/O without I/O
 * privilege is #GP, with set_iopl(1) reads are all ones, writes are
 * dropped, the CMOS index and PCI CONFIG_ADDRESS latch, rep ins/outs move
 * rdi/rsi/rcx; the I/O bitmap of PHYSDEVOP_set_iobitmap; cli/sti (no
 * change to the event mask); wbinvd; hlt (waits for an event, like
 * SCHEDOP_block); rdtsc with CR4.TSD set; rdpmc, swapgs and invd stay #GP.
 * User mode: in/out under IOPL 3, #GP under IOPL 1; rdmsr, mov %cr0, cli,
 * wbinvd and hlt are #GP.
 */
#include "emul.h"
#include "events.h"

#define MS 1000000ULL

/* Run one instruction; a fault resumes after it with flt = 1 (exception table). */
#define TRY(insn)                                            \
    "1: " insn "\n2:\n"                                      \
    ".pushsection __ex_table, \"a\"\n.p2align 3\n"           \
    ".quad 1b, 3f\n.popsection\n"                            \
    ".pushsection .text.fixup, \"ax\"\n"                     \
    "3: movl $1, %k[flt]\n jmp 2b\n.popsection\n"

#define GP_EXPECTED(what, faulted)                                                     \
    check((faulted) && last_fault.vector == X86_EXC_GP && last_fault.error_code == 0,   \
          "%s: #GP(0) (faulted %d vector %lu ec %#lx)", what, (int)(faulted),           \
          last_fault.vector, last_fault.error_code)

static unsigned long rd_cr0(void) { unsigned long v; asm volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static unsigned long rd_cr2(void) { unsigned long v; asm volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static unsigned long rd_cr3(void) { unsigned long v; asm volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static unsigned long rd_cr4(void) { unsigned long v; asm volatile("mov %%cr4, %0" : "=r"(v)); return v; }

static int wr_cr0(unsigned long v)
{ int flt = 0; asm volatile(TRY("mov %[v], %%cr0") : [flt] "+r"(flt) : [v] "r"(v) : "memory"); return flt; }
static int wr_cr2(unsigned long v)
{ int flt = 0; asm volatile(TRY("mov %[v], %%cr2") : [flt] "+r"(flt) : [v] "r"(v) : "memory"); return flt; }
static int wr_cr3(unsigned long v)
{ int flt = 0; asm volatile(TRY("mov %[v], %%cr3") : [flt] "+r"(flt) : [v] "r"(v) : "memory"); return flt; }
static int wr_cr4(unsigned long v)
{ int flt = 0; asm volatile(TRY("mov %[v], %%cr4") : [flt] "+r"(flt) : [v] "r"(v) : "memory"); return flt; }
static int rd_cr8(unsigned long *v)
{ int flt = 0; asm volatile(TRY("mov %%cr8, %[v]") : [flt] "+r"(flt), [v] "=r"(*v) :: "memory"); return flt; }

static unsigned long rd_dr0(void) { unsigned long v; asm volatile("mov %%dr0, %0" : "=r"(v)); return v; }
static unsigned long rd_dr7(void) { unsigned long v; asm volatile("mov %%dr7, %0" : "=r"(v)); return v; }
static int wr_dr0(unsigned long v)
{ int flt = 0; asm volatile(TRY("mov %[v], %%dr0") : [flt] "+r"(flt) : [v] "r"(v)); return flt; }
static int wr_dr7(unsigned long v)
{ int flt = 0; asm volatile(TRY("mov %[v], %%dr7") : [flt] "+r"(flt) : [v] "r"(v)); return flt; }

static int rdmsr_safe(uint32_t msr, uint64_t *val)
{
    int flt = 0;
    uint32_t lo = 0, hi = 0;
    asm volatile(TRY("rdmsr") : [flt] "+r"(flt), "+a"(lo), "+d"(hi) : "c"(msr) : "memory");
    *val = ((uint64_t)hi << 32) | lo;
    return flt;
}

static int wrmsr_safe(uint32_t msr, uint64_t val)
{
    int flt = 0;
    asm volatile(TRY("wrmsr") : [flt] "+r"(flt)
                 : "c"(msr), "a"((uint32_t)val), "d"((uint32_t)(val >> 32)) : "memory");
    return flt;
}

static int inb_safe(uint16_t port, uint8_t *v)
{ int flt = 0; uint8_t r = 0; asm volatile(TRY("inb %%dx, %%al") : [flt] "+r"(flt), "+a"(r) : "d"(port)); *v = r; return flt; }
static int inw_safe(uint16_t port, uint16_t *v)
{ int flt = 0; uint16_t r = 0; asm volatile(TRY("inw %%dx, %%ax") : [flt] "+r"(flt), "+a"(r) : "d"(port)); *v = r; return flt; }
static int inl_safe(uint16_t port, uint32_t *v)
{ int flt = 0; uint32_t r = 0; asm volatile(TRY("inl %%dx, %%eax") : [flt] "+r"(flt), "+a"(r) : "d"(port)); *v = r; return flt; }
static int inb_imm80(uint8_t *v)
{ int flt = 0; uint8_t r = 0; asm volatile(TRY("inb $0x80, %%al") : [flt] "+r"(flt), "+a"(r)); *v = r; return flt; }
static int outb_safe(uint16_t port, uint8_t v)
{ int flt = 0; asm volatile(TRY("outb %%al, %%dx") : [flt] "+r"(flt) : "a"(v), "d"(port)); return flt; }
static int outl_safe(uint16_t port, uint32_t v)
{ int flt = 0; asm volatile(TRY("outl %%eax, %%dx") : [flt] "+r"(flt) : "a"(v), "d"(port)); return flt; }

static int simple(int which)
{
    int flt = 0;
    switch (which) {
    case 0: asm volatile(TRY("cli") : [flt] "+r"(flt) :: "memory"); break;
    case 1: asm volatile(TRY("sti") : [flt] "+r"(flt) :: "memory"); break;
    case 2: asm volatile(TRY("wbinvd") : [flt] "+r"(flt) :: "memory"); break;
    case 3: asm volatile(TRY("clts") : [flt] "+r"(flt) :: "memory"); break;
    case 4: asm volatile(TRY("swapgs") : [flt] "+r"(flt) :: "memory"); break;
    case 5: asm volatile(TRY("invd") : [flt] "+r"(flt) :: "memory"); break;
    case 6: { uint32_t a, d; asm volatile(TRY("rdpmc") : [flt] "+r"(flt), "=a"(a), "=d"(d) : "c"(0)); } break;
    }
    return flt;
}
enum { I_CLI, I_STI, I_WBINVD, I_CLTS, I_SWAPGS, I_INVD, I_RDPMC };

static uint64_t read_gs0(void) { uint64_t v; asm volatile("movq %%gs:0, %0" : "=r"(v)); return v; }
static uint64_t read_fs0(void) { uint64_t v; asm volatile("movq %%fs:0, %0" : "=r"(v)); return v; }

#define MSR_TSC             0x10
#define MSR_PLATFORM_INFO   0xce
#define MSR_MISC_FEATURES   0x140
#define MSR_SYSENTER_CS     0x174
#define MSR_MISC_ENABLE     0x1a0
#define MSR_PAT             0x277
#define MSR_EFER            0xc0000080
#define MSR_LSTAR           0xc0000082
#define MSR_FS_BASE         0xc0000100
#define MSR_GS_BASE         0xc0000101
#define MSR_SHADOW_GS_BASE  0xc0000102
#define MSR_HYPERCALL_PAGE  0x40000000

static volatile uint64_t fs_area[2] = { 0xf5f5f5f5a5a5a5a5UL, 0 };
static volatile uint64_t gs_area[2] = { 0x6565656512121212UL, 0 };

/* ---- control registers ---------------------------------------------------- */
static volatile unsigned long nm_seen, nm_cr0;

/* #NM with the virtual CR0.TS set: record what the guest sees in its handler
 * (Xen clears TS as it delivers the #NM) and resume after the FPU insn. */
static bool nm_hook(struct trap_regs *r, uint64_t cr2)
{
    (void)cr2;
    if (r->vector != 7)
        return false;
    if (nm_seen++ == 0)
        nm_cr0 = rd_cr0();
    else
        HYPERVISOR_fpu_taskswitch(0);    /* TS was left set: end the loop, the checks fail */
    return true;                 /* re-run the instruction: it must not fault again */
}

static void test_cr(void)
{
    unsigned long cr0 = rd_cr0();
    printk("cr0=%#lx cr2=%#lx cr3=%#lx cr4=%#lx\n", cr0, rd_cr2(), rd_cr3(), rd_cr4());
    check((cr0 & 0x80000001) == 0x80000001, "cr0 %#lx has PE and PG", cr0);
    check(!(cr0 & 8), "cr0.TS clear at start");

    check(HYPERVISOR_fpu_taskswitch(1) == 0, "fpu_taskswitch(1)");
    check(rd_cr0() & 8, "cr0.TS set by fpu_taskswitch");
    check(simple(I_CLTS) == 0, "clts");
    check(!(rd_cr0() & 8), "cr0.TS cleared by clts");
    check(wr_cr0(cr0 | 8) == 0, "mov to cr0 setting TS");
    check(rd_cr0() & 8, "cr0.TS set by mov to cr0");
    check(wr_cr0(cr0) == 0, "mov to cr0 clearing TS");
    check(!(rd_cr0() & 8), "cr0.TS clear again");
    check(HYPERVISOR_fpu_taskswitch(1) == 0, "fpu_taskswitch(1) again");
    trap_hook = nm_hook;
    asm volatile("fnop" ::: "memory");
    trap_hook = NULL;
    if (nm_seen == 0) {
        /* this host's PVM raises no #NM for the vCPU's CR0.TS (docs/design.md) */
        printk("no #NM for an FPU insn with cr0.TS set on this host\n");
        check(HYPERVISOR_fpu_taskswitch(0) == 0, "fpu_taskswitch(0)");
    } else {
        check(nm_seen == 1, "one #NM for an FPU insn with TS set (%lu)", nm_seen);
        check(!(nm_cr0 & 8), "the #NM handler sees cr0.TS clear, as Xen delivers it");
    }
    check(!(rd_cr0() & 8), "cr0.TS clear after the FPU insn");
    GP_EXPECTED("mov to cr0 clearing WP", wr_cr0(cr0 & ~(1UL << 16)));
    check(rd_cr0() == cr0, "cr0 unchanged after the refusal");

    uint64_t dummy;
    check(probe_read64(0x1000, &dummy) == 1, "read of 0x1000 faults");
    check(rd_cr2() == 0x1000, "cr2 after a #PF at 0x1000: %#lx", rd_cr2());
    check(wr_cr2(0x1234000) == 0 && rd_cr2() == 0x1234000, "mov to cr2 / from cr2");
    check(vcpu_info0->arch.cr2 == 0x1234000, "mov to cr2 updates vcpu_info.arch.cr2");

    unsigned long l4 = current_l4_mfn();
    check(rd_cr3() == l4 << PAGE_SHIFT, "cr3 %#lx == current L4 mfn %#lx << 12", rd_cr3(), l4);
    check(wr_cr3(rd_cr3()) == 0, "reload cr3 with the same value");

    /* a read-only copy of the L4 (not pinned: mov to cr3 validates it) */
    unsigned long pfn = alloc_pfn(), mfn = pfn_to_mfn(pfn);
    volatile uint64_t *copy = pfn_to_virt(pfn);
    const volatile uint64_t *cur = mfn_to_virt(l4);
    for (unsigned int i = 0; i < PT_ENTRIES; i++)
        if (i < L4_XEN_SLOT_FIRST || i > L4_XEN_SLOT_LAST)
            copy[i] = cur[i];
    GP_EXPECTED("mov to cr3 of a writable page", wr_cr3(mfn << PAGE_SHIFT));
    check(rd_cr3() == l4 << PAGE_SHIFT, "cr3 unchanged after the refusal");
    check(make_page_readonly((void *)copy) == 0, "remap the copy read-only");
    check(wr_cr3(mfn << PAGE_SHIFT) == 0, "mov to cr3: the copy");
    check(rd_cr3() == mfn << PAGE_SHIFT, "cr3 reads the copy (%#lx)", rd_cr3());
    set_current_l4_mfn(mfn);
    check(*(volatile uint64_t *)&fs_area[0] == 0xf5f5f5f5a5a5a5a5UL, "data readable on the copy");
    check(make_page_writable((void *)copy) != 0, "the live L4 cannot be made writable");
    check(wr_cr3(l4 << PAGE_SHIFT) == 0, "mov to cr3: back to the bootstrap L4");
    set_current_l4_mfn(l4);
    check(rd_cr3() == l4 << PAGE_SHIFT, "cr3 back (%#lx)", rd_cr3());
    check(make_page_writable((void *)copy) == 0, "the retired copy may be writable again");

    unsigned long cr4 = rd_cr4();
    check(cr4 == 0x620, "cr4 %#lx == PAE|OSFXSR|OSXMMEXCPT", cr4);
    check(wr_cr4(cr4 | 0x8 | 0x80) == 0, "mov to cr4 (DE, PGE)");
    check(rd_cr4() == (cr4 | 0x8), "cr4 %#lx: DE kept, PGE dropped", rd_cr4());
    check(wr_cr4(cr4) == 0 && rd_cr4() == cr4, "cr4 restored");
    unsigned long v;
    GP_EXPECTED("mov from cr8", rd_cr8(&v));
}

static void test_rdtsc_tsd(void)
{
    unsigned long cr4 = rd_cr4();
    check(wr_cr4(cr4 | 0x4) == 0 && (rd_cr4() & 0x4), "CR4.TSD set");
    uint64_t a = rdtsc_ordered(), b = rdtsc_ordered();
    check(b > a, "kernel rdtsc works with CR4.TSD (%#lx, %#lx)", (unsigned long)a, (unsigned long)b);
    uint32_t lo, hi, aux;
    asm volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
    uint64_t c = ((uint64_t)hi << 32) | lo;
    check(c > b, "kernel rdtscp works with CR4.TSD");
    check(wr_cr4(cr4) == 0 && !(rd_cr4() & 0x4), "CR4.TSD clear");
}

static void test_dr(void)
{
    check(wr_dr0(0x12345000) == 0 && rd_dr0() == 0x12345000, "mov to/from dr0 (%#lx)", rd_dr0());
    check(rd_dr7() == 0x400, "dr7 reads %#lx", rd_dr7());
    GP_EXPECTED("mov to dr7 with GD", wr_dr7(0x400 | (1 << 13)));
    check(wr_dr0(0) == 0, "dr0 cleared");
}

/* ---- MSRs --------------------------------------------------------------------------------- */
static void test_msr(void)
{
    uint64_t v = 0, v2 = 0;
    check(rdmsr_safe(MSR_EFER, &v) == 0 && (v & 0xd01) == 0xd01, "EFER %#lx has SCE LME LMA NXE",
          (unsigned long)v);
    check(rdmsr_safe(MSR_PAT, &v) == 0 && v == 0x050100070406UL, "PAT %#lx", (unsigned long)v);
    check(rdmsr_safe(MSR_PLATFORM_INFO, &v) == 0 && v == 0, "PLATFORM_INFO %#lx", (unsigned long)v);
    check(rdmsr_safe(MSR_MISC_FEATURES, &v) == 0 && v == 0, "MISC_FEATURES_ENABLES %#lx",
          (unsigned long)v);
    check(wrmsr_safe(MSR_MISC_FEATURES, 0) == 0, "MISC_FEATURES_ENABLES := 0");
    GP_EXPECTED("MISC_FEATURES_ENABLES := 1 (no CPUID faulting)", wrmsr_safe(MSR_MISC_FEATURES, 1));
    check(rdmsr_safe(MSR_TSC, &v) == 0 && rdmsr_safe(MSR_TSC, &v2) == 0 && v2 > v && v,
          "TSC reads increase (%#lx %#lx)", (unsigned long)v, (unsigned long)v2);
    uint64_t t = rdtsc_ordered();
    check(t > v2 && t - v2 < 1000000000UL, "TSC MSR close to rdtsc");

    struct cpuid_res vendor = xen_cpuid(0, 0);
    bool amd = vendor.b == 0x68747541;     /* "Auth" */
    int f = rdmsr_safe(MSR_MISC_ENABLE, &v);
    if (amd)
        GP_EXPECTED("MISC_ENABLE on AMD", f);
    else
        check(!f && (v & (3 << 11)) == (3 << 11), "MISC_ENABLE %#lx: BTS/PEBS unavailable",
              (unsigned long)v);

    GP_EXPECTED("rdmsr SYSENTER_CS", rdmsr_safe(MSR_SYSENTER_CS, &v));
    GP_EXPECTED("rdmsr LSTAR", rdmsr_safe(MSR_LSTAR, &v));
    GP_EXPECTED("wrmsr LSTAR", wrmsr_safe(MSR_LSTAR, 0xffffffff80000000UL));
    GP_EXPECTED("rdmsr 0x40000000 (write-only)", rdmsr_safe(MSR_HYPERCALL_PAGE, &v));

    /* FS / GS bases really change */
    check(wrmsr_safe(MSR_FS_BASE, (unsigned long)fs_area) == 0, "wrmsr FS_BASE");
    check(rdmsr_safe(MSR_FS_BASE, &v) == 0 && v == (unsigned long)fs_area, "rdmsr FS_BASE");
    check(read_fs0() == fs_area[0], "%%fs:0 reads the new FS area");
    GP_EXPECTED("non-canonical FS_BASE", wrmsr_safe(MSR_FS_BASE, 0x0000800000000000UL));
    check(rdmsr_safe(MSR_FS_BASE, &v) == 0 && v == (unsigned long)fs_area, "FS_BASE unchanged");

    uint64_t gs_saved;
    check(rdmsr_safe(MSR_GS_BASE, &gs_saved) == 0, "rdmsr GS_BASE");
    check(wrmsr_safe(MSR_GS_BASE, (unsigned long)gs_area) == 0, "wrmsr GS_BASE");
    check(rdmsr_safe(MSR_GS_BASE, &v) == 0 && v == (unsigned long)gs_area, "GS_BASE reads back");
    check(read_gs0() == gs_area[0], "%%gs:0 reads the new GS area");
    check(wrmsr_safe(MSR_GS_BASE, gs_saved) == 0, "GS_BASE restored");
    check(wrmsr_safe(MSR_SHADOW_GS_BASE, 0x7000123000UL) == 0, "wrmsr SHADOW_GS_BASE");
    check(rdmsr_safe(MSR_SHADOW_GS_BASE, &v) == 0 && v == 0x7000123000UL, "SHADOW_GS_BASE %#lx",
          (unsigned long)v);
    check(read_gs0() == smp_id(), "kernel %%gs unaffected by SHADOW_GS_BASE");

    /* the hypercall page through the MSR of CPUID 0x40000002 */
    struct cpuid_res hv = xen_cpuid(0x40000002, 0);
    check(hv.a == 1 && hv.b == MSR_HYPERCALL_PAGE, "CPUID 0x40000002: %u page(s), MSR %#x",
          hv.a, hv.b);
    unsigned long pfn = alloc_pfn();
    uint8_t *page = pfn_to_virt(pfn);
    GP_EXPECTED("hypercall-page MSR with a page index", wrmsr_safe(MSR_HYPERCALL_PAGE,
                (pfn_to_mfn(pfn) << PAGE_SHIFT) | 1));
    check(wrmsr_safe(MSR_HYPERCALL_PAGE, pfn_to_mfn(pfn) << PAGE_SHIFT) == 0,
          "wrmsr hypercall page");
    check(memcmp(page, hypercall_page, 4096) == 0, "the MSR wrote a hypercall page");
}

/* ---- port I/O --------------------------------------------------------------------------- */
static void test_io(void)
{
    uint8_t b = 0;
    uint16_t w = 0;
    uint32_t l = 0;

    check(set_iopl(0) == 0, "set_iopl(0)");
    GP_EXPECTED("inb without I/O privilege", inb_imm80(&b));
    GP_EXPECTED("outb without I/O privilege", outb_safe(0x80, 1));
    GP_EXPECTED("cli without I/O privilege", simple(I_CLI));
    GP_EXPECTED("sti without I/O privilege", simple(I_STI));

    /* the I/O bitmap: port 0x80 allowed, 0x81 not (a set bit refuses) */
    static uint8_t bitmap[0x20];
    memset(bitmap, 0xff, sizeof(bitmap));
    bitmap[0x80 / 8] &= ~1;
    struct physdev_set_iobitmap bm = { bitmap, 0x100, 0 };
    check(HYPERVISOR_physdev_op(PHYSDEVOP_set_iobitmap, &bm) == 0, "set_iobitmap");
    check(inb_safe(0x80, &b) == 0 && b == 0xff, "inb 0x80 allowed by the bitmap (%#x)", b);
    GP_EXPECTED("inb 0x81 refused by the bitmap", inb_safe(0x81, &b));
    GP_EXPECTED("inw 0x80 spans a refused port", inw_safe(0x80, &w));
    bm.nr_ports = 0;
    check(HYPERVISOR_physdev_op(PHYSDEVOP_set_iobitmap, &bm) == 0, "clear the iobitmap");
    GP_EXPECTED("inb 0x80 without bitmap", inb_safe(0x80, &b));

    check(set_iopl(1) == 0, "set_iopl(1)");
    check(inb_imm80(&b) == 0 && b == 0xff, "inb $0x80 -> %#x", b);
    check(inw_safe(0x80, &w) == 0 && w == 0xffff, "inw -> %#x", w);
    check(inl_safe(0x80, &l) == 0 && l == 0xffffffff, "inl -> %#x", l);
    check(outb_safe(0x80, 0x12) == 0, "outb dropped");
    check(outb_safe(0x70, 0x0a) == 0 && inb_safe(0x70, &b) == 0 && b == 0x0a,
          "CMOS index latches (%#x)", b);
    check(inb_safe(0x71, &b) == 0 && b == 0xff, "CMOS data reads %#x", b);
    check(outl_safe(0xcf8, 0x80001234) == 0 && inl_safe(0xcf8, &l) == 0 && l == 0x80001234,
          "PCI CONFIG_ADDRESS latches (%#x)", l);
    check(inl_safe(0xcfc, &l) == 0 && l == 0xffffffff, "PCI config data reads %#x", l);

    uint8_t buf[40];
    memset(buf, 0x5a, sizeof(buf));
    uint8_t *di = buf + 4;
    unsigned long cnt = 16;
    asm volatile("rep insb" : "+D"(di), "+c"(cnt) : "d"(0x80) : "memory");
    bool ok = cnt == 0 && di == buf + 20 && buf[3] == 0x5a && buf[20] == 0x5a;
    for (int i = 4; i < 20; i++)
        ok = ok && buf[i] == 0xff;
    check(ok, "rep insb: 16 bytes of 0xff, rdi advanced, rcx 0");
    const uint8_t *si = buf;
    cnt = 8;
    asm volatile("rep outsw" : "+S"(si), "+c"(cnt) : "d"(0x80) : "memory");
    check(cnt == 0 && si == buf + 16, "rep outsw: rsi advanced by 16, rcx 0");
    uint32_t *dl = (uint32_t *)(buf + 36);
    asm volatile("std; insl; cld" : "+D"(dl) : "d"(0x80) : "memory");
    check(dl == (uint32_t *)(buf + 32) && *(uint32_t *)(buf + 36) == 0xffffffff,
          "insl with DF set moves rdi down");

    uint8_t mask = vcpu_info0->evtchn_upcall_mask;
    check(simple(I_CLI) == 0 && simple(I_STI) == 0, "cli/sti with IOPL 1");
    /* what Linux's cmpxchg16b emulation does at boot; clisti=N rounds instead of
     * 200: tests/hv/test_minios.py pauses the guest meanwhile */
    unsigned long rounds = cmdline_get_ulong("clisti", 200);
    for (unsigned long i = 0; i < rounds; i++)
        asm volatile("pushfq; cli; popfq; sti" ::: "memory", "cc");
    check(vcpu_info0->evtchn_upcall_mask == mask, "cli/sti leave the event mask (%u)",
          vcpu_info0->evtchn_upcall_mask);
}

/* ---- odds and ends ------------------------------------------------------------------------- */
static void test_misc(void)
{
    check(simple(I_WBINVD) == 0, "wbinvd");
    GP_EXPECTED("rdpmc", simple(I_RDPMC));
    GP_EXPECTED("swapgs", simple(I_SWAPGS));
    GP_EXPECTED("invd", simple(I_INVD));
}

static void test_hlt(void)
{
    long port = evtchn_bind_virq(VIRQ_TIMER, 0);
    check(port > 0, "bind VIRQ_TIMER (%ld)", port);
    if (port <= 0)
        return;
    HYPERVISOR_vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL);   /* only our timer, please */
    uint64_t start = xen_system_time();
    check(HYPERVISOR_set_timer_op(start + 10 * MS) == 0, "set_timer_op");
    unsigned int halts = 0;
    while (event_count[port] == 0 && xen_system_time() < start + 2000 * MS && halts < 100) {
        asm volatile("hlt" ::: "memory");     /* emulated: blocks, events enabled */
        halts++;
    }
    uint64_t waited = xen_system_time() - start;
    local_events_disable();
    check(event_count[port] >= 1, "hlt: timer event delivered (%lu)", event_count[port]);
    check(waited >= 9 * MS && waited < 1000 * MS, "hlt waited %lu us for the 10 ms timer",
          (unsigned long)(waited / 1000));
    check(halts >= 1 && halts < 100, "hlt returned %u time(s)", halts);
}

/* ---- user mode ------------------------------------------------------------------------------- */
enum { U_IN, U_RDMSR, U_CR0, U_CLI, U_WBINVD, U_HLT, U_COUNT };
static volatile unsigned long user_gp[U_COUNT];

asm(".pushsection .text\n"
    ".globl user_ops\n"
    "user_ops:\n"                   /* rdi = 1: only the in */
    "u_in: inb $0x80, %al\n"
    "u_in_end:\n"
    "    movzbl %al, %eax\n"
    "    cmpq $1, %rdi\n"
    "    je 1f\n"
    "u_rdmsr: rdmsr\n"
    "u_rdmsr_end:\n"
    "u_cr0: mov %cr0, %rdx\n"
    "u_cr0_end:\n"
    "u_cli: cli\n"
    "u_cli_end:\n"
    "u_wbinvd: wbinvd\n"
    "u_wbinvd_end:\n"
    "u_hlt: hlt\n"
    "u_hlt_end:\n"
    "1:  ret\n"
    ".popsection\n");
extern char u_in[], u_in_end[], u_rdmsr[], u_rdmsr_end[], u_cr0[], u_cr0_end[], u_cli[],
    u_cli_end[], u_wbinvd[], u_wbinvd_end[], u_hlt[], u_hlt_end[];
unsigned long user_ops(unsigned long only_in);

static bool user_gp_hook(struct trap_regs *r, uint64_t cr2)
{
    static char *const at[U_COUNT][2] = {
        { u_in, u_in_end }, { u_rdmsr, u_rdmsr_end }, { u_cr0, u_cr0_end },
        { u_cli, u_cli_end }, { u_wbinvd, u_wbinvd_end }, { u_hlt, u_hlt_end },
    };
    if (r->vector != X86_EXC_GP || (r->cs & 3) != 3)
        return false;
    for (int i = 0; i < U_COUNT; i++)
        if (r->rip == (uint64_t)at[i][0]) {
            user_gp[i]++;
            r->rip = (uint64_t)at[i][1];
            return true;
        }
    return false;
}

static void user_main(unsigned long only_in)
{
    unsigned long v = user_ops(only_in);
    user_syscall(SYS_REPORT, 0, v);
    user_syscall(SYS_EXIT, 0, 0);
}

static void test_user(void)
{
    check(user_init() == 0, "user_init");
    trap_hook = user_gp_hook;
    check(set_iopl(3) == 0, "set_iopl(3)");
    user_reports[0] = 0;
    user_run(user_main, 1);
    check(user_gp[U_IN] == 0 && user_reports[0] == 0xff, "user inb with IOPL 3 -> %#lx",
          (unsigned long)user_reports[0]);
    check(set_iopl(1) == 0, "set_iopl(1)");
    user_run(user_main, 0);
    trap_hook = NULL;
    check(user_gp[U_IN] == 1, "user inb with IOPL 1: #GP");
    check(user_gp[U_RDMSR] == 1, "user rdmsr: #GP");
    check(user_gp[U_CR0] == 1, "user mov from cr0: #GP");
    check(user_gp[U_CLI] == 1, "user cli with IOPL 1: #GP");
    check(user_gp[U_WBINVD] == 1, "user wbinvd: #GP");
    check(user_gp[U_HLT] == 1, "user hlt: #GP");
}

void test_main(void)
{
    check(traps_init() == 0, "traps_init");
    check(mm_init() == 0, "mm_init");
    set_smp_id(0);
    check(events_init() == 0, "events_init");

    test_cr();
    test_rdtsc_tsd();
    test_dr();
    test_msr();
    test_io();
    test_misc();
    test_hlt();
    test_user();
    check(set_iopl(0) == 0, "set_iopl(0)");
    test_finish();
}
