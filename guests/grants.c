/*
 * grants: grant tables v1 and v2 from the granting guest's side, mapping
 * its own grants (GNTTABOP_map/unmap_grant_ref), GNTTABOP_copy, sizes and
 * versions, and refusals. cmdline: domid=<this domain's id>.
 */
#include "events.h"

#define GNTTABOP_map_grant_ref   0
#define GNTTABOP_unmap_grant_ref 1
#define GNTTABOP_setup_table     2
#define GNTTABOP_transfer        4
#define GNTTABOP_copy            5
#define GNTTABOP_query_size      6
#define GNTTABOP_set_version     8
#define GNTTABOP_get_status_frames 9
#define GNTTABOP_get_version    10
#define GTF_permit_access 1
#define GTF_readonly (1 << 2)
#define GTF_reading  (1 << 3)
#define GTF_writing  (1 << 4)
#define GNTMAP_host_map 2
#define GNTMAP_readonly 4
#define GNTCOPY_source_gref 1
#define GNTCOPY_dest_gref 2
#define __HYPERVISOR_grant_table_op 20

static inline long HYPERVISOR_grant_table_op(unsigned int cmd, void *uop, unsigned int count)
{ return _HYPERCALL(__HYPERVISOR_grant_table_op, cmd, uop, count, 0, 0); }

struct setup_table { uint16_t dom; uint16_t pad; uint32_t nr_frames; int16_t status; uint16_t pad2[3]; uint64_t *frame_list; };
struct query_size { uint16_t dom; uint16_t pad; uint32_t nr_frames, max_nr_frames; int16_t status; uint16_t pad2; };
struct map_ref { uint64_t host_addr; uint32_t flags, ref; uint16_t dom; int16_t status; uint32_t handle; uint64_t dev_bus_addr; };
struct unmap_ref { uint64_t host_addr, dev_bus_addr; uint32_t handle; int16_t status; uint16_t pad; };
struct copy_ptr { uint64_t u; uint16_t domid, offset; uint32_t pad; };
struct copy { struct copy_ptr source, dest; uint16_t len, flags; int16_t status; uint16_t pad; };
struct gnt_v1 { uint16_t flags, domid; uint32_t frame; };
struct gnt_v2 { uint16_t flags, domid; uint32_t pad; uint64_t frame; };
struct status_frames { uint32_t nr_frames; uint16_t dom; int16_t status; uint64_t *frame_list; };

static char table_va[4096] __page_aligned_bss;
static char status_va[4096] __page_aligned_bss;
static char map_va[4096] __page_aligned_bss;

void test_main(void)
{
    uint16_t me = (uint16_t)cmdline_get_ulong("domid", 1);
    check(traps_init() == 0 && mm_init() == 0, "init");
    uint64_t frames[2];
    struct setup_table st = { DOMID_SELF, 0, 1, 0, {0}, frames };
    check(HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1) == 0 && st.status == 0,
          "setup_table (status %d)", st.status);
    check(remap_page(table_va, frames[0], PTE_KERN_RW) == 0, "map the grant frame");
    struct query_size qs = { DOMID_SELF, 0, 0, 0, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 1) == 0 && qs.nr_frames == 1 &&
          qs.max_nr_frames >= 32, "query_size %u/%u", qs.nr_frames, qs.max_nr_frames);

    volatile struct gnt_v1 *g = (void *)table_va;
    unsigned long data_pfn = alloc_pfn();
    uint64_t *data = pfn_to_virt(data_pfn);
    data[0] = 0x6772616e74ULL;
    g[5].domid = me;
    g[5].frame = pfn_to_mfn(data_pfn);
    barrier();
    g[5].flags = GTF_permit_access;

    struct map_ref m = { (unsigned long)map_va, GNTMAP_host_map, 5, DOMID_SELF, 0, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &m, 1) == 0 && m.status == 0,
          "map own grant (status %d)", m.status);
    check(((volatile uint64_t *)map_va)[0] == 0x6772616e74ULL, "the mapping shows the granted page");
    check((g[5].flags & (GTF_reading | GTF_writing)) == (GTF_reading | GTF_writing),
          "entry marked reading+writing while mapped (%#x)", g[5].flags);
    /* revoking a grant in use is noticed: the in-use bits make the cmpxchg fail */
    uint16_t expect = GTF_permit_access;
    check(!__atomic_compare_exchange_n(&g[5].flags, &expect, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST),
          "revoke while in use fails");
    struct unmap_ref u = { (unsigned long)map_va, 0, m.handle, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &u, 1) == 0 && u.status == 0, "unmap");
    check(g[5].flags == GTF_permit_access, "in-use bits cleared (%#x)", g[5].flags);
    u.status = 0;
    HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &u, 1);
    check(u.status == -4, "unmapping twice -> GNTST_bad_handle (%d)", u.status);

    g[6] = (struct gnt_v1){ GTF_permit_access | GTF_readonly, me, (uint32_t)pfn_to_mfn(data_pfn) };
    m = (struct map_ref){ (unsigned long)map_va, GNTMAP_host_map, 6, DOMID_SELF, 0, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &m, 1);
    check(m.status == -8, "writable map of a read-only grant -> permission denied (%d)", m.status);
    m = (struct map_ref){ (unsigned long)map_va, GNTMAP_host_map, 100000, DOMID_SELF, 0, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &m, 1);
    check(m.status == -3, "reference past the table -> bad_gntref (%d)", m.status);
    g[7] = (struct gnt_v1){ GTF_permit_access, (uint16_t)(me + 1), (uint32_t)pfn_to_mfn(data_pfn) };
    m = (struct map_ref){ (unsigned long)map_va, GNTMAP_host_map, 7, DOMID_SELF, 0, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &m, 1);
    check(m.status == -8, "grant for another domain -> permission denied (%d)", m.status);

    /* copy from a grant into a plain frame */
    unsigned long dst_pfn = alloc_pfn();
    struct copy c = { { 5, DOMID_SELF, 0, 0 }, { pfn_to_mfn(dst_pfn), DOMID_SELF, 8, 0 }, 8,
                      GNTCOPY_source_gref, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1) == 0 && c.status == 0, "copy (%d)", c.status);
    check(((uint64_t *)pfn_to_virt(dst_pfn))[1] == 0x6772616e74ULL, "copied bytes arrived");
    c.len = 4095;
    HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1);
    check(c.status == -10, "copy past the page -> bad_copy_arg (%d)", c.status);
    /* and the other way: from a plain frame into a granted page */
    ((uint64_t *)pfn_to_virt(dst_pfn))[2] = 0x7261626269740aULL;
    struct copy c2 = { { pfn_to_mfn(dst_pfn), DOMID_SELF, 16, 0 }, { 5, DOMID_SELF, 24, 0 }, 8,
                       GNTCOPY_dest_gref, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_copy, &c2, 1) == 0 && c2.status == 0,
          "copy into a grant (%d)", c2.status);
    check(data[3] == 0x7261626269740aULL, "bytes arrived in the granted page");

    check(HYPERVISOR_grant_table_op(GNTTABOP_transfer, &c, 1) == -95, "transfer refused (-EOPNOTSUPP)");

    /* version 2 */
    uint32_t ver = 2;
    check(HYPERVISOR_grant_table_op(GNTTABOP_set_version, &ver, 1) == 0, "set_version 2");
    struct { uint16_t dom, pad; uint32_t version; } gv = { DOMID_SELF, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1) == 0 && gv.version == 2, "get_version");
    HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1);
    check(remap_page(table_va, frames[0], PTE_KERN_RW) == 0, "remap the v2 frame");
    uint64_t sf[1];
    struct status_frames gs = { 1, DOMID_SELF, 0, sf };
    check(HYPERVISOR_grant_table_op(GNTTABOP_get_status_frames, &gs, 1) == 0 && gs.status == 0,
          "get_status_frames (%d)", gs.status);
    check(remap_page(status_va, sf[0], PTE_KERN_RW) != 0, "status frame cannot be mapped writable");
    check(remap_page(status_va, sf[0], PTE_KERN_RO) == 0, "status frame mapped read-only");
    volatile struct gnt_v2 *g2 = (void *)table_va;
    volatile uint16_t *status = (void *)status_va;
    g2[9].domid = me;
    g2[9].frame = pfn_to_mfn(data_pfn);
    barrier();
    g2[9].flags = GTF_permit_access;
    m = (struct map_ref){ (unsigned long)map_va, GNTMAP_host_map | GNTMAP_readonly, 9, DOMID_SELF, 0, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &m, 1) == 0 && m.status == 0,
          "v2 read-only map (%d)", m.status);
    check(status[9] == GTF_reading, "v2 status shows reading (%#x)", status[9]);
    u = (struct unmap_ref){ (unsigned long)map_va, 0, m.handle, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &u, 1);
    check(status[9] == 0, "v2 status cleared after unmap (%#x)", status[9]);
    test_finish();
}
