/*
 * typedwrites: every way a guest can make the hypervisor (or dom0's rings)
 * write into one of its frames, tried against a frame in use as an L1, L2,
 * L3, L4 table and as a GDT (descriptor) page. Xen takes a writable type
 * reference for each such write, so it refuses all of them with its errno
 * and leaves the frame as it was: register_vcpu_info (-EINVAL),
 * GNTTABOP_copy to the frame or to a grant of it, writable grant maps
 * (host and device: GNTST_general_error), FIFO init_control and
 * expand_array (-EINVAL), MMUEXT_CLEAR_PAGE/COPY_PAGE and update_descriptor
 * (-EINVAL), set_gdt of a page table (-EINVAL, nothing fixed up in it),
 * the hypercall-page MSR (#GP); the runstate and time areas are written
 * through the guest's own page tables, so a read-only mapping of the
 * frame is not written (the call succeeds, as on Xen).
 *
 * Then the other way round: a frame Xen keeps writing into (a writable
 * grant map, the FIFO control block and event array, the xenstore and
 * console rings dom0 maps, the registered vcpu_info) cannot be pinned as
 * a page table of any level nor become a GDT page (-EINVAL) while the
 * reference is held; once let go (unmap, EVTCHNOP_reset) it can.
 *
 * cmdline: domid=<this domain's id>. With bounce=<L1|L2|L3|L4|GDT> the
 * guest instead puts its kernel stack on a read-only mapping of such a
 * frame and takes an exception: the bounce frame cannot be written, and
 * the domain is crashed (as Xen does) with the frame untouched.
 */
#include "emul.h"
#include "events.h"

#define __HYPERVISOR_set_gdt           2
#define __HYPERVISOR_update_descriptor 10
#define __HYPERVISOR_grant_table_op   20
#define VCPUOP_register_vcpu_info     10
#define VCPUOP_register_vcpu_time_memory_area 13
#define GNTTABOP_map_grant_ref   0
#define GNTTABOP_unmap_grant_ref 1
#define GNTTABOP_setup_table     2
#define GNTTABOP_copy            5
#define GTF_permit_access 1
#define GNTMAP_device_map 1
#define GNTMAP_host_map   2
#define GNTCOPY_dest_gref 2
#define GNTST_general_error -1
#define XEN_ENXIO 6
#define MSR_HYPERCALL_PAGE 0x40000000

/* a non-present entry that looks like a present data-segment descriptor
 * with DPL 0: a GDT check would "fix" it (DPL 3, accessed) if it ever
 * wrote into a page table */
#define PLANT ((1UL << 47) | (1UL << 44))
#define PLANT_IDX 5

#define TRY(insn)                                            \
    "1: " insn "\n2:\n"                                      \
    ".pushsection __ex_table, \"a\"\n.p2align 3\n"           \
    ".quad 1b, 3f\n.popsection\n"                            \
    ".pushsection .text.fixup, \"ax\"\n"                     \
    "3: movl $1, %k[flt]\n jmp 2b\n.popsection\n"

static int wrmsr_safe(uint32_t msr, uint64_t val)
{
    int flt = 0;
    asm volatile(TRY("wrmsr") : [flt] "+r"(flt)
                 : "c"(msr), "a"((uint32_t)val), "d"((uint32_t)(val >> 32)) : "memory");
    return flt;
}

static inline long HYPERVISOR_grant_table_op(unsigned int cmd, void *uop, unsigned int count)
{ return _HYPERCALL(__HYPERVISOR_grant_table_op, cmd, uop, count, 0, 0); }
static inline long set_gdt(unsigned long *frames, unsigned int entries)
{ return _HYPERCALL(__HYPERVISOR_set_gdt, frames, entries, 0, 0, 0); }
static inline long update_descriptor(uint64_t maddr, uint64_t desc)
{ return _HYPERCALL(__HYPERVISOR_update_descriptor, maddr, desc, 0, 0, 0); }

struct setup_table { uint16_t dom; uint16_t pad; uint32_t nr_frames; int16_t status; uint16_t pad2[3]; uint64_t *frame_list; };
struct map_ref { uint64_t host_addr; uint32_t flags, ref; uint16_t dom; int16_t status; uint32_t handle; uint64_t dev_bus_addr; };
struct unmap_ref { uint64_t host_addr, dev_bus_addr; uint32_t handle; int16_t status; uint16_t pad; };
struct copy_ptr { uint64_t u; uint16_t domid, offset; uint32_t pad; };
struct copy { struct copy_ptr source, dest; uint16_t len, flags; int16_t status; uint16_t pad; };
struct gnt_v1 { uint16_t flags, domid; uint32_t frame; };
struct init_control { uint64_t gfn; uint32_t offset, vcpu; uint8_t link_bits, pad[7]; };
struct vcpu_info_reg { uint64_t mfn; uint32_t offset, rsvd; };

enum { K_L1, K_L2, K_L3, K_L4, K_GDT, NKINDS };
static const char *const kname[NKINDS] = { "L1", "L2", "L3", "L4", "GDT" };

static char table_va[4096] __page_aligned_bss;
static char map_va[4096] __page_aligned_bss;
static uint64_t snapshot[NKINDS][512];
static uint16_t me;
static volatile struct gnt_v1 *gnt;

struct frame { unsigned long pfn, mfn; uint64_t *va; };

static long make_kind(unsigned long mfn, int k)
{
    if (k == K_GDT) {
        unsigned long f = mfn;
        return set_gdt(&f, 512);
    }
    return mmuext_simple(MMUEXT_PIN_L1_TABLE + k, mfn, 0);
}

static long unmake_kind(unsigned long mfn, int k)
{
    if (k == K_GDT)
        return set_gdt(NULL, 0);
    return mmuext_simple(MMUEXT_UNPIN_TABLE, mfn, 0);
}

static struct frame new_frame(void)
{
    struct frame f;
    f.pfn = alloc_pfn();
    check(f.pfn != 0, "a free page");
    f.mfn = pfn_to_mfn(f.pfn);
    f.va = pfn_to_virt(f.pfn);
    return f;
}

/* A fresh frame of kind k (mapped read-only at its usual address). */
static struct frame typed_frame(int k)
{
    struct frame f = new_frame();
    f.va[PLANT_IDX] = PLANT;
    check(make_page_readonly(f.va) == 0, "map the %s frame read-only", kname[k]);
    long rc = make_kind(f.mfn, k);
    check(rc == 0, "make a frame an %s (%ld)", kname[k], rc);
    memcpy(snapshot[k], f.va, 4096);
    return f;
}

static void unchanged(const struct frame *f, int k, const char *after)
{
    check(memcmp(f->va, snapshot[k], 4096) == 0, "after %s the %s frame is unchanged",
          after, kname[k]);
}

/* The frame is in use for writing: no kind of table or descriptor page. */
static void pins_refused(void *va, unsigned long mfn, const char *what)
{
    check(make_page_readonly(va) == 0, "%s: map it read-only", what);
    for (int k = 0; k < NKINDS; k++) {
        long rc = make_kind(mfn, k);
        check(rc == -XEN_EINVAL, "%s: its frame cannot become %s (%ld)", what, kname[k], rc);
        if (rc == 0)
            unmake_kind(mfn, k);
    }
    check(make_page_writable(va) == 0, "%s: writable again", what);
}

/* ...and once let go, it can. */
static void pin_allowed(void *va, unsigned long mfn, const char *what)
{
    check(make_page_readonly(va) == 0, "%s: map it read-only", what);
    long rc = mmuext_simple(MMUEXT_PIN_L1_TABLE, mfn, 0);
    check(rc == 0, "%s: now its frame may become an L1 (%ld)", what, rc);
    if (rc == 0)
        mmuext_simple(MMUEXT_UNPIN_TABLE, mfn, 0);
    check(make_page_writable(va) == 0, "%s: writable again", what);
}

static struct map_ref map(unsigned long va, uint32_t flags, uint32_t ref)
{
    struct map_ref m = { va, flags, ref, me, 0, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &m, 1) == 0, "map_grant_ref rc");
    return m;
}

static int16_t unmap(unsigned long va, uint64_t dev, uint32_t handle)
{
    struct unmap_ref u = { va, dev, handle, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &u, 1) == 0, "unmap_grant_ref rc");
    return u.status;
}

static void grant(unsigned int ref, unsigned long mfn)
{
    gnt[ref].domid = me;
    gnt[ref].frame = (uint32_t)mfn;
    barrier();
    gnt[ref].flags = GTF_permit_access;
}

static long init_control(unsigned long mfn)
{
    struct init_control ic = { mfn, 0, 0, 0, {0} };
    return HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic);
}

/* --- 1: writes into a typed frame, refused ------------------------------------------------- */
static void refused_writes(int k, struct frame *f, struct frame *plain)
{
    const char *n = kname[k];
    long rc;

    struct vcpu_info_reg vr = { f->mfn, 0, 0 };
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vr);
    check(rc == -XEN_EINVAL, "register_vcpu_info in an %s frame refused (%ld)", n, rc);
    unchanged(f, k, "register_vcpu_info");

    /* grant copy: to the frame by number, and to a grant of it */
    plain->va[0] = 0x0123456789abcdefUL;
    struct copy c = { { plain->mfn, DOMID_SELF, 0, 0 }, { f->mfn, DOMID_SELF, PLANT_IDX * 8, 0 },
                      8, 0, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1);
    check(c.status == GNTST_general_error, "grant copy into an %s frame refused (%d)", n, c.status);
    grant(20 + k, f->mfn);
    c.dest.u = 20 + k;
    c.dest.domid = me;
    c.flags = GNTCOPY_dest_gref;
    HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1);
    check(c.status == GNTST_general_error, "grant copy into a grant of an %s frame refused (%d)",
          n, c.status);
    unchanged(f, k, "GNTTABOP_copy");

    /* writable grant maps, host and device */
    struct map_ref m = map((unsigned long)map_va, GNTMAP_host_map, 20 + k);
    check(m.status == GNTST_general_error, "writable host map of an %s frame refused (%d)",
          n, m.status);
    if (m.status == 0)
        unmap((unsigned long)map_va, 0, m.handle);
    m = map(0, GNTMAP_device_map, 20 + k);
    check(m.status == GNTST_general_error, "writable device map of an %s frame refused (%d)",
          n, m.status);
    if (m.status == 0)
        unmap(0, f->mfn << PAGE_SHIFT, m.handle);
    check(gnt[20 + k].flags == GTF_permit_access, "the refused maps leave no in-use bits (%#x)",
          gnt[20 + k].flags);
    gnt[20 + k].flags = 0;

    rc = init_control(f->mfn);
    check(rc == -XEN_EINVAL, "FIFO control block in an %s frame refused (%ld)", n, rc);

    rc = mmuext_simple(MMUEXT_CLEAR_PAGE, f->mfn, 0);
    check(rc == -XEN_EINVAL, "MMUEXT_CLEAR_PAGE of an %s frame refused (%ld)", n, rc);
    rc = mmuext_simple(MMUEXT_COPY_PAGE, f->mfn, plain->mfn);
    check(rc == -XEN_EINVAL, "MMUEXT_COPY_PAGE onto an %s frame refused (%ld)", n, rc);
    unchanged(f, k, "CLEAR_PAGE/COPY_PAGE");

    if (k != K_GDT) {
        rc = update_descriptor((f->mfn << PAGE_SHIFT) + 8 * PLANT_IDX, 0x00cffa000000ffffUL);
        check(rc == -XEN_EINVAL, "update_descriptor into an %s frame refused (%ld)", n, rc);
        rc = make_kind(f->mfn, K_GDT);
        check(rc == -XEN_EINVAL, "set_gdt with an %s frame refused (%ld)", n, rc);
        unchanged(f, k, "update_descriptor/set_gdt");
    }

    /* areas written through the guest's own (here read-only) mapping */
    uint64_t va = (uint64_t)f->va;
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_runstate_memory_area, 0, &va);
    check(rc == 0, "runstate area on a read-only mapping of an %s frame (%ld)", n, rc);
    HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    va = 0;
    HYPERVISOR_vcpu_op(VCPUOP_register_runstate_memory_area, 0, &va);
    unchanged(f, k, "a runstate area on it");
    va = (uint64_t)f->va;
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_time_memory_area, 0, &va);
    check(rc == 0, "time area on a read-only mapping of an %s frame (%ld)", n, rc);
    HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    va = 0;
    HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_time_memory_area, 0, &va);
    unchanged(f, k, "a time area on it");

    check(wrmsr_safe(MSR_HYPERCALL_PAGE, f->mfn << PAGE_SHIFT) == 1 &&
          last_fault.vector == X86_EXC_GP, "hypercall page MSR on an %s frame: #GP", n);
    unchanged(f, k, "the hypercall page MSR");
}

/* --- 2: frames the hypervisor or dom0 keep writing into ------------------------------------ */
static void held_grant_maps(void)
{
    struct frame p = new_frame();
    grant(30, p.mfn);
    struct map_ref m = map((unsigned long)map_va, GNTMAP_host_map, 30);
    check(m.status == 0, "writable host map of a plain frame (%d)", m.status);
    pins_refused(p.va, p.mfn, "a frame mapped by a writable grant map");
    check(unmap((unsigned long)map_va, 0, m.handle) == 0, "unmap");
    pin_allowed(p.va, p.mfn, "after the unmap");

    m = map(0, GNTMAP_device_map, 30);
    check(m.status == 0, "writable device map of a plain frame (%d)", m.status);
    pins_refused(p.va, p.mfn, "a frame with a writable device map");
    check(unmap(0, p.mfn << PAGE_SHIFT, m.handle) == 0, "device unmap");
    pin_allowed(p.va, p.mfn, "after the device unmap");
    gnt[30].flags = 0;
}

static void held_fifo(struct frame typed[NKINDS])
{
    struct frame cb = new_frame(), arr = new_frame();
    long rc = init_control(cb.mfn);
    check(rc == 0, "init_control (%ld)", rc);
    for (int k = 0; k < NKINDS; k++) {
        uint64_t g = typed[k].mfn;
        rc = HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &g);
        check(rc == -XEN_EINVAL, "event array page in an %s frame refused (%ld)", kname[k], rc);
        unchanged(&typed[k], k, "expand_array");
    }
    uint64_t g = arr.mfn;
    check(HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &g) == 0, "expand_array");
    pins_refused(cb.va, cb.mfn, "the FIFO control block");
    pins_refused(arr.va, arr.mfn, "a FIFO event array page");
    uint16_t self = DOMID_SELF;
    check(HYPERVISOR_event_channel_op(EVTCHNOP_reset, &self) == 0, "EVTCHNOP_reset");
    pin_allowed(cb.va, cb.mfn, "the old control block after the reset");
    pin_allowed(arr.va, arr.mfn, "the old event array page after the reset");
}

static void held_rings(void)
{
    struct {
        const char *what;
        unsigned long mfn;
    } rings[2] = {
        { "the xenstore ring", start_info->store_mfn },
        { "the console ring", start_info->console.domU.mfn },
    };
    for (int i = 0; i < 2; i++) {
        uint64_t *va = mfn_to_virt(rings[i].mfn);
        check(va != NULL, "%s is mapped", rings[i].what);
        if (!va)
            continue;
        /* zeroed, it would make a valid table of any kind */
        memset(va, 0, 4096);
        pins_refused(va, rings[i].mfn, rings[i].what);
    }
}

static void held_vcpu_info(void)
{
    struct frame p = new_frame();
    struct vcpu_info_reg vr = { p.mfn, 4096 - 63, 0 };
    long rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vr);
    check(rc == -XEN_ENXIO, "vcpu_info crossing the page end -> -ENXIO (%ld)", rc);
    vr.offset = 4;
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vr);
    check(rc == -XEN_ENXIO, "misaligned vcpu_info -> -ENXIO (%ld)", rc);
    vr.offset = 64;
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vr);
    check(rc == 0, "register_vcpu_info in a plain frame (%ld)", rc);
    if (rc)
        return;
    struct vcpu_info *vi = (struct vcpu_info *)((char *)p.va + 64);
    vcpu_info0 = vi;                       /* the runtime reads cr2 from here now */
    rc = HYPERVISOR_vcpu_op(VCPUOP_register_vcpu_info, 0, &vr);
    check(rc == -XEN_EINVAL, "a second register_vcpu_info -> -EINVAL (%ld)", rc);
    pins_refused(p.va, p.mfn, "the vcpu_info frame");
    uint64_t v;
    check(probe_read64(0x2000, &v) == 1 && last_fault.cr2 == 0x2000,
          "a page fault's cr2 arrives in the new vcpu_info (%#lx)", (unsigned long)last_fault.cr2);
    check(vi->arch.cr2 == 0x2000, "vcpu_info.arch.cr2 %#lx", (unsigned long)vi->arch.cr2);
}

static int kind_of(const char *s)
{
    for (int k = 0; k < NKINDS; k++)
        if (strcmp(s, kname[k]) == 0)
            return k;
    return -1;
}

static void bounce_attack(int k)
{
    struct frame f = typed_frame(k);
    printk("bounce: kind=%s mfn=%#lx\n", kname[k], f.mfn);
    /* an exception with the kernel stack on the frame's read-only mapping:
     * the bounce frame cannot be written, the domain is crashed */
    asm volatile("mov %0, %%rsp\n\tud2" :: "r"((unsigned long)f.va + 4096) : "memory");
    test_fail("the exception returned");
}

void test_main(void)
{
    check(traps_init() == 0 && mm_init() == 0, "init");
    char arg[8];
    if (cmdline_get("bounce", arg, sizeof(arg))) {
        int k = kind_of(arg);
        check(k >= 0, "bounce=%s", arg);
        if (k >= 0)
            bounce_attack(k);
        test_finish();
    }
    me = (uint16_t)cmdline_get_ulong("domid", 1);
    uint64_t frames[1];
    struct setup_table st = { DOMID_SELF, 0, 1, 0, {0}, frames };
    check(HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1) == 0 && st.status == 0,
          "setup_table (status %d)", st.status);
    check(remap_page(table_va, frames[0], PTE_KERN_RW) == 0, "map the grant frame");
    gnt = (void *)table_va;

    struct frame typed[NKINDS], plain = new_frame();
    for (int k = 0; k < NKINDS; k++)
        typed[k] = typed_frame(k);
    for (int k = 0; k < NKINDS; k++)
        refused_writes(k, &typed[k], &plain);

    held_grant_maps();
    held_fifo(typed);
    held_rings();
    for (int k = 0; k < NKINDS; k++)
        unchanged(&typed[k], k, "everything");
    for (int k = 0; k < NKINDS; k++) {
        check(unmake_kind(typed[k].mfn, k) == 0, "let the %s go", kname[k]);
        check(make_page_writable(typed[k].va) == 0, "its page writable again");
    }
    held_vcpu_info();                      /* last: it moves vcpu_info for good */
    test_finish();
}
