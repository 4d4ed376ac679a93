/*
 * maptrack: map the same page through grants of our own (device maps,
 * read-only: no PTE needed) over and over until the hypervisor refuses.
 * Xen tracks every mapping in the mapping domain's maptrack, at most
 * max_maptrack_frames frames of 256 handles (xl.cfg; Xen 4.17's default
 * 1024), and refuses a map past that with GNTST_no_space. A grant's pin
 * count holds up to 128 device read-only maps (127 are used), so the page is granted through
 * as many references as needed. Then: a freed handle is given out again,
 * and everything unmaps cleanly.
 * cmdline: domid=<this domain's id> expect=<number of handles>.
 */
#include "events.h"

#define __HYPERVISOR_grant_table_op 20
#define GNTTABOP_map_grant_ref   0
#define GNTTABOP_unmap_grant_ref 1
#define GNTTABOP_setup_table     2
#define GTF_permit_access 1
#define GTF_reading  (1 << 3)
#define GNTMAP_device_map 1
#define GNTMAP_readonly 4
#define GNTST_no_space -13
#define PER_REF 127
#define BATCH 512
#define MAX_HANDLES (1024 * 256)
#define TABLE_FRAMES 5

static inline long HYPERVISOR_grant_table_op(unsigned int cmd, void *uop, unsigned int count)
{ return _HYPERCALL(__HYPERVISOR_grant_table_op, cmd, uop, count, 0, 0); }

struct setup_table { uint16_t dom; uint16_t pad; uint32_t nr_frames; int16_t status; uint16_t pad2[3]; uint64_t *frame_list; };
struct map_ref { uint64_t host_addr; uint32_t flags, ref; uint16_t dom; int16_t status; uint32_t handle; uint64_t dev_bus_addr; };
struct unmap_ref { uint64_t host_addr, dev_bus_addr; uint32_t handle; int16_t status; uint16_t pad; };
struct gnt_v1 { uint16_t flags, domid; uint32_t frame; };

static char table_va[TABLE_FRAMES][4096] __page_aligned_bss;
static uint32_t handles[MAX_HANDLES + 1];
static struct map_ref mops[BATCH];
static struct unmap_ref uops[BATCH];

void test_main(void)
{
    check(traps_init() == 0 && mm_init() == 0, "init");
    uint16_t me = (uint16_t)cmdline_get_ulong("domid", 1);
    unsigned long expect = cmdline_get_ulong("expect", MAX_HANDLES);
    check(expect <= MAX_HANDLES, "expect=%lu", expect);
    unsigned long nrefs = expect / PER_REF + 2;
    check(nrefs < TABLE_FRAMES * 512, "%lu references fit the table", nrefs);
    uint64_t frames[TABLE_FRAMES];
    unsigned int nframes = (unsigned int)(nrefs / 512 + 1);
    struct setup_table st = { DOMID_SELF, 0, nframes, 0, {0}, frames };
    check(HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1) == 0 && st.status == 0,
          "setup_table, %u frames (%d)", nframes, st.status);
    for (unsigned int i = 0; i < nframes; i++)
        check(remap_page(table_va[i], frames[i], PTE_KERN_RW) == 0, "map grant frame %u", i);
    volatile struct gnt_v1 *g = (void *)table_va;

    unsigned long pfn = alloc_pfn(), mfn = pfn_to_mfn(pfn);
    for (unsigned long r = 1; r <= nrefs; r++) {
        g[r].domid = me;
        g[r].frame = (uint32_t)mfn;
        barrier();
        g[r].flags = GTF_permit_access;
    }

    /* map until refused */
    unsigned long n = 0, rc_bad = 0, after = 0;
    int16_t refused = 0;
    while (!refused && n <= MAX_HANDLES) {
        for (unsigned int i = 0; i < BATCH; i++)
            mops[i] = (struct map_ref){ 0, GNTMAP_device_map | GNTMAP_readonly,
                                        (uint32_t)(1 + (n + i) / PER_REF), me, 0, 0, 0 };
        rc_bad += HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, mops, BATCH) != 0;
        for (unsigned int i = 0; i < BATCH; i++) {
            if (refused)
                after += mops[i].status == 0;     /* nothing is freed meanwhile */
            else if (mops[i].status == 0)
                handles[n++] = mops[i].handle;
            else
                refused = mops[i].status;
        }
    }
    check(rc_bad == 0, "every map batch returned 0 (%lu did not)", rc_bad);
    check(after == 0, "nothing mapped after the refusal (%lu)", after);
    printk("maptrack: %lu mappings, then status %d\n", n, refused);
    check(refused == GNTST_no_space, "refused with GNTST_no_space (%d)", refused);
    check(n == expect, "%lu mappings before the refusal (expected %lu)", n, expect);

    /* a freed handle is given out again, and only that one */
    struct unmap_ref u = { 0, mfn << PAGE_SHIFT, handles[0], 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &u, 1) == 0 && u.status == 0,
          "unmap one (%d)", u.status);
    struct map_ref m = { 0, GNTMAP_device_map | GNTMAP_readonly, 1, me, 0, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &m, 1);
    check(m.status == 0 && m.handle == handles[0], "its handle is given out again (%d, %u)",
          m.status, m.handle);
    handles[0] = m.handle;
    HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &m, 1);
    check(m.status == GNTST_no_space, "and then the maptrack is full again (%d)", m.status);

    /* everything unmaps */
    unsigned long bad = 0;
    for (unsigned long done = 0; done < n; ) {
        unsigned int k = n - done < BATCH ? (unsigned int)(n - done) : BATCH;
        for (unsigned int i = 0; i < k; i++)
            uops[i] = (struct unmap_ref){ 0, mfn << PAGE_SHIFT, handles[done + i], 0, 0 };
        rc_bad += HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, uops, k) != 0;
        for (unsigned int i = 0; i < k; i++)
            bad += uops[i].status != 0;
        done += k;
    }
    check(bad == 0 && rc_bad == 0, "all %lu unmapped (%lu failed)", n, bad);
    unsigned long busy = 0;
    for (unsigned long r = 1; r <= nrefs; r++)
        busy += (g[r].flags & GTF_reading) != 0;
    check(busy == 0, "no grant left in use (%lu)", busy);
    test_finish();
}
