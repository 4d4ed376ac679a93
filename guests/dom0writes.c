/*
 * dom0writes: the guest side of tests/hv/test_guest_writes.py's dom0 test.
 * Grants dom0 (writable) an L1, L2, L3, L4 and a GDT frame (refs 20-24), a
 * plain zeroed frame (ref 25) and a signal page (ref 26), prints
 * "granted: typed=20 plain=25 signal=26", and waits for dom0 to write
 * "mapped" into the signal page: dom0 then holds a writable map of the
 * plain frame, which therefore cannot become a table or descriptor page
 * (-EINVAL, as on Xen, where dom0's map holds a writable type reference).
 * After "pins refused" dom0 unmaps and writes "unmapped": now the frame may
 * become an L1. The typed frames are unchanged throughout.
 */
#include "events.h"

#define __HYPERVISOR_set_gdt          2
#define __HYPERVISOR_grant_table_op  20
#define GNTTABOP_setup_table 2
#define GTF_permit_access 1

static inline long HYPERVISOR_grant_table_op(unsigned int cmd, void *uop, unsigned int count)
{ return _HYPERCALL(__HYPERVISOR_grant_table_op, cmd, uop, count, 0, 0); }
static inline long set_gdt(unsigned long *frames, unsigned int entries)
{ return _HYPERCALL(__HYPERVISOR_set_gdt, frames, entries, 0, 0, 0); }

struct setup_table { uint16_t dom; uint16_t pad; uint32_t nr_frames; int16_t status; uint16_t pad2[3]; uint64_t *frame_list; };
struct gnt_v1 { uint16_t flags, domid; uint32_t frame; };

enum { K_L1, K_L2, K_L3, K_L4, K_GDT, NKINDS };
static const char *const kname[NKINDS] = { "L1", "L2", "L3", "L4", "GDT" };
static char table_va[4096] __page_aligned_bss;
static uint64_t snapshot[NKINDS][512];

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
    return k == K_GDT ? set_gdt(NULL, 0) : mmuext_simple(MMUEXT_UNPIN_TABLE, mfn, 0);
}

static bool wait_for(volatile const char *page, const char *text)
{
    uint64_t end = xen_system_time() + 20000000000ULL;
    while (memcmp((const char *)page, text, strlen(text) + 1) != 0 && xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    return memcmp((const char *)page, text, strlen(text) + 1) == 0;
}

void test_main(void)
{
    set_smp_id(0);
    check(traps_init() == 0 && mm_init() == 0, "init");
    uint64_t frames[1];
    struct setup_table st = { DOMID_SELF, 0, 1, 0, {0}, frames };
    check(HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1) == 0, "setup_table");
    check(remap_page(table_va, frames[0], PTE_KERN_RW) == 0, "map the grant frame");
    volatile struct gnt_v1 *g = (void *)table_va;

    unsigned long typed[NKINDS];
    for (int k = 0; k < NKINDS; k++) {
        unsigned long pfn = alloc_pfn();
        uint64_t *va = pfn_to_virt(pfn);
        typed[k] = pfn_to_mfn(pfn);
        check(make_page_readonly(va) == 0, "map the %s frame read-only", kname[k]);
        check(make_kind(typed[k], k) == 0, "make a frame an %s", kname[k]);
        memcpy(snapshot[k], va, 4096);
    }
    unsigned long ppfn = alloc_pfn(), spfn = alloc_pfn();
    uint64_t *plain = pfn_to_virt(ppfn);
    volatile char *sig = pfn_to_virt(spfn);
    unsigned long pmfn = pfn_to_mfn(ppfn);
    for (int i = 0; i < NKINDS + 2; i++) {
        unsigned long mfn = i < NKINDS ? typed[i] : i == NKINDS ? pmfn : pfn_to_mfn(spfn);
        g[20 + i].domid = 0;
        g[20 + i].frame = (uint32_t)mfn;
        barrier();
        g[20 + i].flags = GTF_permit_access;          /* read-write */
    }
    printk("granted: typed=20 plain=25 signal=26\n");
    check(wait_for(sig, "mapped"), "dom0 mapped the plain frame");
    check(make_page_readonly(plain) == 0, "map the plain frame read-only");
    for (int k = 0; k < NKINDS; k++) {
        long rc = make_kind(pmfn, k);
        check(rc == -XEN_EINVAL, "a frame dom0 maps writable cannot become %s (%ld)",
              kname[k], rc);
        if (rc == 0)
            unmake_kind(pmfn, k);
    }
    printk("pins refused\n");
    check(wait_for(sig, "unmapped"), "dom0 unmapped it");
    long rc = mmuext_simple(MMUEXT_PIN_L1_TABLE, pmfn, 0);
    check(rc == 0, "after dom0's unmap it may become an L1 (%ld)", rc);
    if (rc == 0)
        mmuext_simple(MMUEXT_UNPIN_TABLE, pmfn, 0);
    for (int k = 0; k < NKINDS; k++) {
        check(memcmp(mfn_to_virt(typed[k]), snapshot[k], 4096) == 0,
              "the %s frame is unchanged", kname[k]);
        check(unmake_kind(typed[k], k) == 0, "let the %s go", kname[k]);
    }
    for (int i = 0; i < NKINDS + 2; i++)
        check((g[20 + i].flags & (3 << 3)) == 0, "grant %d not in use (%#x)", 20 + i, g[20 + i].flags);
    test_finish();
}
