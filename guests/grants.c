/*
 * grants: grant tables v1 and v2 from the granting guest's side, mapping
 * its own grants (GNTTABOP_map/unmap_grant_ref, by linear address and with
 * GNTMAP_contains_pte, GNTTABOP_unmap_and_replace), GNTTABOP_copy,
 * swap_grant_ref, cache_flush, sizes and versions (reserved entries kept,
 * status frames taken back only when unmapped), and Xen's refusals with
 * its GNTST_* statuses. cmdline: domid=<this domain's id>.
 */
#include "events.h"

#define GNTTABOP_map_grant_ref   0
#define GNTTABOP_unmap_grant_ref 1
#define GNTTABOP_setup_table     2
#define GNTTABOP_transfer        4
#define GNTTABOP_copy            5
#define GNTTABOP_query_size      6
#define GNTTABOP_unmap_and_replace 7
#define GNTTABOP_set_version     8
#define GNTTABOP_get_status_frames 9
#define GNTTABOP_get_version    10
#define GNTTABOP_swap_grant_ref 11
#define GNTTABOP_cache_flush    12
#define GTF_permit_access 1
#define GTF_readonly (1 << 2)
#define GTF_reading  (1 << 3)
#define GTF_writing  (1 << 4)
#define GNTMAP_device_map 1
#define GNTMAP_host_map 2
#define GNTMAP_readonly 4
#define GNTMAP_contains_pte 16
#define GNTCOPY_source_gref 1
#define GNTCOPY_dest_gref 2
#define GNTTAB_CACHE_CLEAN 1
#define GNTTAB_CACHE_INVAL 2
#define GNTST_general_error    -1
#define GNTST_bad_domain       -2
#define GNTST_bad_gntref       -3
#define GNTST_bad_handle       -4
#define GNTST_bad_dev_addr     -6
#define GNTST_permission_denied -8
#define GNTST_bad_page         -9
#define GNTST_bad_copy_arg    -10
#define GNTST_eagain          -12
#define __HYPERVISOR_grant_table_op 20

static inline long HYPERVISOR_grant_table_op(unsigned int cmd, void *uop, unsigned int count)
{ return _HYPERCALL(__HYPERVISOR_grant_table_op, cmd, uop, count, 0, 0); }

struct setup_table { uint16_t dom; uint16_t pad; uint32_t nr_frames; int16_t status; uint16_t pad2[3]; uint64_t *frame_list; };
struct query_size { uint16_t dom; uint16_t pad; uint32_t nr_frames, max_nr_frames; int16_t status; uint16_t pad2; };
struct map_ref { uint64_t host_addr; uint32_t flags, ref; uint16_t dom; int16_t status; uint32_t handle; uint64_t dev_bus_addr; };
struct unmap_ref { uint64_t host_addr, dev_bus_addr; uint32_t handle; int16_t status; uint16_t pad; };
struct replace { uint64_t host_addr, new_addr; uint32_t handle; int16_t status; uint16_t pad; };
struct copy_ptr { uint64_t u; uint16_t domid, offset; uint32_t pad; };
struct copy { struct copy_ptr source, dest; uint16_t len, flags; int16_t status; uint16_t pad; };
struct swap { uint32_t ref_a, ref_b; int16_t status; uint16_t pad; };
struct cache_flush { uint64_t addr; uint16_t offset, length; uint32_t op; };
struct gnt_v1 { uint16_t flags, domid; uint32_t frame; };
struct gnt_v2 { uint16_t flags, domid; uint32_t pad; uint64_t frame; };
struct status_frames { uint32_t nr_frames; uint16_t dom; int16_t status; uint64_t *frame_list; };

static char table_va[4096] __page_aligned_bss;
static char status_va[4096] __page_aligned_bss;
static char map_va[4096] __page_aligned_bss;
static char spare_va[4096] __page_aligned_bss;

static struct map_ref map(unsigned long va, uint32_t flags, uint32_t ref, uint16_t dom)
{
    struct map_ref m = { va, flags, ref, dom, 0, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref, &m, 1) == 0, "map_grant_ref rc");
    return m;
}

static int16_t unmap(unsigned long va, uint64_t dev, uint32_t handle)
{
    struct unmap_ref u = { va, dev, handle, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref, &u, 1) == 0, "unmap_grant_ref rc");
    return u.status;
}

static long set_version(uint32_t *ver)
{
    return HYPERVISOR_grant_table_op(GNTTABOP_set_version, ver, 1);
}

static uint64_t l1e_maddr(void *va)
{
    struct pt_walk w;
    int r = pt_walk(current_l4_mfn(), (unsigned long)va, &w);
    check(r == 0 || r == 1, "walk to the L1 entry of %p (%d)", va, r);
    return w.entry_maddr[1];
}

void test_main(void)
{
    uint16_t me = (uint16_t)cmdline_get_ulong("domid", 1);
    check(traps_init() == 0 && mm_init() == 0, "init");
    uint64_t frames[2];
    struct setup_table st = { DOMID_SELF, 0, 1, 0, {0}, frames };
    check(HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1) == 0 && st.status == 0,
          "setup_table (status %d)", st.status);
    check(HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 2) == -XEN_EINVAL,
          "setup_table takes exactly one op");
    check(remap_page(table_va, frames[0], PTE_KERN_RW) == 0, "map the grant frame");
    struct query_size qs = { DOMID_SELF, 0, 0, 0, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 1) == 0 && qs.nr_frames == 1 &&
          qs.max_nr_frames >= 32, "query_size %u/%u", qs.nr_frames, qs.max_nr_frames);
    qs = (struct query_size){ 0, 0, 0, 0, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 1);
    check(qs.status == GNTST_permission_denied, "query_size of domain 0 -> permission denied (%d)",
          qs.status);
    qs = (struct query_size){ 999, 0, 0, 0, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_query_size, &qs, 1);
    check(qs.status == GNTST_bad_domain, "query_size of no domain -> bad_domain (%d)", qs.status);

    volatile struct gnt_v1 *g = (void *)table_va;
    unsigned long data_pfn = alloc_pfn();
    uint64_t *data = pfn_to_virt(data_pfn);
    unsigned long data_mfn = pfn_to_mfn(data_pfn);
    data[0] = 0x6772616e74ULL;
    g[5].domid = me;
    g[5].frame = data_mfn;
    barrier();
    g[5].flags = GTF_permit_access;

    struct map_ref m = map((unsigned long)map_va, GNTMAP_host_map, 5, DOMID_SELF);
    check(m.status == GNTST_bad_domain, "a map names the granting domain by id: DOMID_SELF "
          "-> bad_domain (%d)", m.status);
    m = map((unsigned long)map_va, GNTMAP_host_map, 5, me);
    check(m.status == 0, "map own grant (status %d)", m.status);
    check(m.dev_bus_addr == data_mfn << 12, "dev_bus_addr is the frame's (%#lx)",
          (unsigned long)m.dev_bus_addr);
    check(((volatile uint64_t *)map_va)[0] == 0x6772616e74ULL, "the mapping shows the granted page");
    check((g[5].flags & (GTF_reading | GTF_writing)) == (GTF_reading | GTF_writing),
          "entry marked reading+writing while mapped (%#x)", g[5].flags);
    /* revoking a grant in use is noticed: the in-use bits make the cmpxchg fail */
    uint16_t expect = GTF_permit_access;
    check(!__atomic_compare_exchange_n(&g[5].flags, &expect, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST),
          "revoke while in use fails");
    check(unmap((unsigned long)spare_va, 0, m.handle) == GNTST_general_error,
          "unmap at an address that does not map the grant -> general_error");
    check(unmap(0, 0x1000, m.handle) == 0, "a device address on a host-only mapping is ignored");
    check(unmap((unsigned long)map_va, 0, m.handle) == 0, "unmap");
    check(g[5].flags == GTF_permit_access, "in-use bits cleared (%#x)", g[5].flags);
    check(unmap((unsigned long)map_va, 0, m.handle) == GNTST_bad_handle,
          "unmapping twice -> bad_handle");
    uint64_t v;
    check(probe_read64((unsigned long)map_va, &v) == 1, "the unmapped address faults");

    /* refusals, with Xen's statuses */
    m = map((unsigned long)map_va, 0, 5, me);
    check(m.status == GNTST_bad_gntref, "neither host nor device map -> bad_gntref (%d)", m.status);
    g[6] = (struct gnt_v1){ GTF_permit_access | GTF_readonly, me, (uint32_t)data_mfn };
    m = map((unsigned long)map_va, GNTMAP_host_map, 6, me);
    check(m.status == GNTST_general_error, "writable map of a read-only grant (%d)", m.status);
    m = map((unsigned long)map_va, GNTMAP_host_map, 100000, me);
    check(m.status == GNTST_bad_gntref, "reference past the table -> bad_gntref (%d)", m.status);
    g[7] = (struct gnt_v1){ GTF_permit_access, (uint16_t)(me + 1), (uint32_t)data_mfn };
    m = map((unsigned long)map_va, GNTMAP_host_map, 7, me);
    check(m.status == GNTST_general_error, "grant for another domain (%d)", m.status);
    g[8] = (struct gnt_v1){ GTF_permit_access, me, (uint32_t)nr_pages + 1000 };
    m = map((unsigned long)map_va, GNTMAP_host_map, 8, me);
    check(m.status == GNTST_bad_page, "grant of a frame not ours -> bad_page (%d)", m.status);
    check(g[8].flags == GTF_permit_access, "and its in-use bits are cleared (%#x)", g[8].flags);
    m = map((unsigned long)map_va, GNTMAP_host_map, 8, 0);
    check(m.status == GNTST_general_error, "domain 0 grants us nothing (%d)", m.status);
    m = map((unsigned long)map_va, GNTMAP_host_map, 100000, 0);
    check(m.status == GNTST_bad_gntref, "past domain 0's table (%d)", m.status);
    m = map((unsigned long)map_va, GNTMAP_host_map, 5, 999);
    check(m.status == GNTST_bad_domain, "no such domain (%d)", m.status);
    m = map(0xFFFF800000001000UL, GNTMAP_host_map, 5, me);
    check(m.status == GNTST_general_error, "a hypervisor address (%d)", m.status);
    check(g[5].flags == GTF_permit_access, "failed maps leave no in-use bits (%#x)", g[5].flags);

    /* GNTMAP_contains_pte: host_addr is the machine address of the PTE */
    uint64_t pte = l1e_maddr(map_va);
    m = map(pte + 2, GNTMAP_host_map | GNTMAP_contains_pte, 5, me);
    check(m.status == GNTST_general_error, "misaligned PTE address (%d)", m.status);
    m = map(data_mfn << 12, GNTMAP_host_map | GNTMAP_contains_pte, 5, me);
    check(m.status == GNTST_general_error, "a PTE address outside any L1 table (%d)", m.status);
    m = map(pte, GNTMAP_host_map | GNTMAP_contains_pte | GNTMAP_readonly, 5, me);
    check(m.status == 0, "map through the PTE's machine address (%d)", m.status);
    check(((volatile uint64_t *)map_va)[0] == 0x6772616e74ULL, "it maps the granted page");
    check(g[5].flags == (GTF_permit_access | GTF_reading), "read-only: reading only (%#x)",
          g[5].flags);
    check(probe_write64((unsigned long)map_va, 1) == 1, "a read-only mapping refuses writes");
    check(unmap((unsigned long)map_va, 0, m.handle) == GNTST_general_error,
          "a contains_pte mapping is unmapped by PTE address");
    check(unmap(pte, 0, m.handle) == 0, "unmap by PTE address");
    check(g[5].flags == GTF_permit_access, "in-use bits cleared (%#x)", g[5].flags);

    /* host + device mapping, taken down one at a time (XSA-224) */
    m = map((unsigned long)map_va, GNTMAP_host_map | GNTMAP_device_map, 5, me);
    check(m.status == 0, "host+device map (%d)", m.status);
    check(unmap((unsigned long)map_va, 0, m.handle) == 0, "host part unmapped");
    check((g[5].flags & (GTF_reading | GTF_writing)) == (GTF_reading | GTF_writing),
          "the device mapping still uses the grant (%#x)", g[5].flags);
    check(unmap(0, 0x1000, m.handle) == GNTST_bad_dev_addr, "wrong device address -> bad_dev_addr");
    check(unmap(0, data_mfn << 12, m.handle) == 0, "device part unmapped");
    check(g[5].flags == GTF_permit_access, "in-use bits cleared (%#x)", g[5].flags);
    check(unmap(0, data_mfn << 12, m.handle) == GNTST_bad_handle, "handle gone");

    /* unmap_and_replace: the PTE of new_addr moves to host_addr */
    uint64_t *spare = (uint64_t *)spare_va;
    spare[0] = 0x7370617265ULL;
    m = map((unsigned long)map_va, GNTMAP_host_map | GNTMAP_readonly, 5, me);
    check(m.status == 0, "read-only map (%d)", m.status);
    struct replace r = { (unsigned long)map_va, (unsigned long)spare_va, m.handle, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_unmap_and_replace, &r, 1) == 0 && r.status == 0,
          "unmap_and_replace (%d)", r.status);
    check(((volatile uint64_t *)map_va)[0] == 0x7370617265ULL, "host_addr now maps new_addr's page");
    check(probe_read64((unsigned long)spare_va, &v) == 1, "new_addr is left unmapped");
    check(g[5].flags == GTF_permit_access, "in-use bits cleared (%#x)", g[5].flags);
    check(remap_page(spare_va, virt_to_mfn(spare_va), PTE_KERN_RW) == 0, "put new_addr back");
    check(HYPERVISOR_grant_table_op(GNTTABOP_unmap_and_replace, &r, 1) == 0 &&
          r.status == GNTST_bad_handle, "replace with the handle gone (%d)", r.status);

    /* swap_grant_ref */
    g[10] = (struct gnt_v1){ GTF_permit_access, me, 10 };
    g[11] = (struct gnt_v1){ GTF_permit_access | GTF_readonly, me, 11 };
    struct swap sw = { 10, 11, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_swap_grant_ref, &sw, 1) == 0 && sw.status == 0 &&
          g[10].frame == 11 && g[11].frame == 10 && (g[10].flags & GTF_readonly),
          "swap two entries (%d)", sw.status);
    m = map((unsigned long)map_va, GNTMAP_host_map, 5, me);
    sw = (struct swap){ 5, 10, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_swap_grant_ref, &sw, 1);
    check(sw.status == GNTST_eagain, "an entry in use cannot be swapped (%d)", sw.status);
    check(unmap((unsigned long)map_va, 0, m.handle) == 0, "unmap");
    sw = (struct swap){ 5, 100000, 0, 0 };
    HYPERVISOR_grant_table_op(GNTTABOP_swap_grant_ref, &sw, 1);
    check(sw.status == GNTST_bad_gntref, "swap past the table (%d)", sw.status);

    /* copy from a grant into a plain frame */
    unsigned long dst_pfn = alloc_pfn();
    struct copy c = { { 5, DOMID_SELF, 0, 0 }, { pfn_to_mfn(dst_pfn), DOMID_SELF, 8, 0 }, 8,
                      GNTCOPY_source_gref, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1) == 0 && c.status == 0, "copy (%d)", c.status);
    check(((uint64_t *)pfn_to_virt(dst_pfn))[1] == 0x6772616e74ULL, "copied bytes arrived");
    c.len = 4095;
    HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1);
    check(c.status == GNTST_bad_copy_arg, "copy past the page -> bad_copy_arg (%d)", c.status);
    c.len = 8;
    c.dest.domid = me;
    HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1);
    check(c.status == GNTST_permission_denied, "only DOMID_SELF names a frame (%d)", c.status);
    c.dest.domid = DOMID_SELF;
    c.dest.u = current_l4_mfn();
    HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1);
    check(c.status == GNTST_general_error, "no copy into a page table (%d)", c.status);
    c.dest.u = nr_pages + 1000;
    HYPERVISOR_grant_table_op(GNTTABOP_copy, &c, 1);
    check(c.status == GNTST_bad_page, "no copy into a frame not ours (%d)", c.status);
    /* and the other way: from a plain frame into a granted page */
    ((uint64_t *)pfn_to_virt(dst_pfn))[2] = 0x7261626269740aULL;
    struct copy c2 = { { pfn_to_mfn(dst_pfn), DOMID_SELF, 16, 0 }, { 5, me, 24, 0 }, 8,
                       GNTCOPY_dest_gref, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_copy, &c2, 1) == 0 && c2.status == 0,
          "copy into a grant (%d)", c2.status);
    check(data[3] == 0x7261626269740aULL, "bytes arrived in the granted page");
    c2.dest.u = 6;
    HYPERVISOR_grant_table_op(GNTTABOP_copy, &c2, 1);
    check(c2.status == GNTST_general_error, "no copy into a read-only grant (%d)", c2.status);
    check(g[5].flags == GTF_permit_access && g[6].flags == (GTF_permit_access | GTF_readonly),
          "copies leave no in-use bits (%#x %#x)", g[5].flags, g[6].flags);

    check(HYPERVISOR_grant_table_op(GNTTABOP_transfer, &c, 1) == -95, "transfer refused (-EOPNOTSUPP)");

    /* cache_flush: nothing to do on x86 for a frame of ours */
    struct cache_flush cf = { data_mfn << 12, 0, 4096, GNTTAB_CACHE_CLEAN | GNTTAB_CACHE_INVAL };
    check(HYPERVISOR_grant_table_op(GNTTABOP_cache_flush, &cf, 1) == 0, "cache_flush clean+inval");
    cf.op = GNTTAB_CACHE_INVAL;
    check(HYPERVISOR_grant_table_op(GNTTABOP_cache_flush, &cf, 1) == -95,
          "invalidate without clean is not offered (-EOPNOTSUPP)");
    cf.op = 4;
    check(HYPERVISOR_grant_table_op(GNTTABOP_cache_flush, &cf, 1) == -XEN_EINVAL,
          "unknown cache_flush op -> -EINVAL");

    /* version 2; reserved entries 0-7 survive the change, others do not */
    uint32_t ver = 3;
    check(set_version(&ver) == -XEN_EINVAL && ver == 1, "version 3 -> -EINVAL (version %u)", ver);
    g[1] = (struct gnt_v1){ GTF_permit_access, me, (uint32_t)data_mfn };
    ver = 2;
    check(set_version(&ver) == 0 && ver == 2, "set_version 2");
    struct { uint16_t dom, pad; uint32_t version; } gv = { DOMID_SELF, 0, 0 };
    check(HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1) == 0 && gv.version == 2, "get_version");
    gv.dom = 999;
    check(HYPERVISOR_grant_table_op(GNTTABOP_get_version, &gv, 1) == -3, "get_version of no domain -> -ESRCH");
    HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1);
    check(remap_page(table_va, frames[0], PTE_KERN_RW) == 0, "remap the v2 frame");
    volatile struct gnt_v2 *g2 = (void *)table_va;
    check(g2[1].flags == GTF_permit_access && g2[1].domid == me && g2[1].frame == data_mfn,
          "reserved entry 1 carried over to v2 (%#x %u %#lx)", g2[1].flags, g2[1].domid,
          (unsigned long)g2[1].frame);
    check(g2[5].flags == GTF_permit_access && g2[5].frame == data_mfn, "so is entry 5");
    check(g2[8].flags == 0 && g2[10].flags == 0 && g2[11].flags == 0,
          "entries past the reserved ones are cleared");
    uint64_t sf[2];
    struct status_frames gs = { 2, DOMID_SELF, 0, sf };
    HYPERVISOR_grant_table_op(GNTTABOP_get_status_frames, &gs, 1);
    check(gs.status == GNTST_general_error, "more status frames than there are (%d)", gs.status);
    gs = (struct status_frames){ 1, DOMID_SELF, 0, sf };
    check(HYPERVISOR_grant_table_op(GNTTABOP_get_status_frames, &gs, 1) == 0 && gs.status == 0,
          "get_status_frames (%d)", gs.status);
    check(remap_page(status_va, sf[0], PTE_KERN_RW) == 0, "status frame mapped writable, as Xen shares it");
    check(remap_page(status_va, sf[0], PTE_KERN_RO) == 0, "status frame mapped read-only");
    volatile uint16_t *status = (void *)status_va;
    g2[9].domid = me;
    g2[9].frame = data_mfn;
    barrier();
    g2[9].flags = GTF_permit_access;
    m = map((unsigned long)map_va, GNTMAP_host_map | GNTMAP_readonly, 9, me);
    check(m.status == 0, "v2 read-only map (%d)", m.status);
    check(status[9] == GTF_reading, "v2 status shows reading (%#x)", status[9]);
    ver = 1;
    check(set_version(&ver) == -XEN_EBUSY && ver == 2, "no version change with a grant mapped");
    check(unmap((unsigned long)map_va, 0, m.handle) == 0, "unmap");
    check(status[9] == 0, "v2 status cleared after unmap (%#x)", status[9]);
    ver = 1;
    check(set_version(&ver) == -XEN_EBUSY && ver == 2,
          "no version change while a status frame is mapped (XSA-255)");
    check(HYPERVISOR_update_va_mapping((unsigned long)status_va, 0, UVMF_INVLPG) == 0,
          "unmap the status frame");
    ver = 1;
    check(set_version(&ver) == 0 && ver == 1, "back to version 1");
    check(g[1].flags == GTF_permit_access && g[1].domid == me && g[1].frame == data_mfn,
          "reserved entry 1 carried back to v1 (%#x)", g[1].flags);
    gs = (struct status_frames){ 1, DOMID_SELF, 0, sf };
    HYPERVISOR_grant_table_op(GNTTABOP_get_status_frames, &gs, 1);
    check(gs.status == GNTST_general_error, "no status frames at v1 (%d)", gs.status);
    check(remap_page(status_va, sf[0], PTE_KERN_RO) != 0, "the old status frame is not ours any more");
    test_finish();
}
