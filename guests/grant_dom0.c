/*
 * grant_dom0: grant a page to dom0 and wait for dom0 to write into it
 * (the test maps the grant from the hypervisor side while we run).
 * Prints "granted ref=<r>" and finishes once the page says "dom0 was here".
 */
#include "events.h"

#define GNTTABOP_setup_table 2
#define __HYPERVISOR_grant_table_op 20
static inline long HYPERVISOR_grant_table_op(unsigned int cmd, void *uop, unsigned int count)
{ return _HYPERCALL(__HYPERVISOR_grant_table_op, cmd, uop, count, 0, 0); }
struct setup_table { uint16_t dom; uint16_t pad; uint32_t nr_frames; int16_t status; uint16_t pad2[3]; uint64_t *frame_list; };
struct gnt_v1 { uint16_t flags, domid; uint32_t frame; };
static char table_va[4096] __page_aligned_bss;

void test_main(void)
{
    set_smp_id(0);
    check(map_shared_info() == 0 && mm_init() == 0, "init");
    uint64_t frames[1];
    struct setup_table st = { DOMID_SELF, 0, 1, 0, {0}, frames };
    check(HYPERVISOR_grant_table_op(GNTTABOP_setup_table, &st, 1) == 0, "setup_table");
    check(remap_page(table_va, frames[0], PTE_KERN_RW) == 0, "map the grant frame");
    unsigned long pfn = alloc_pfn();
    volatile char *page = pfn_to_virt(pfn);
    memcpy((char *)page, "guest data", 11);
    volatile struct gnt_v1 *g = (void *)table_va;
    g[12].domid = 0;
    g[12].frame = (uint32_t)pfn_to_mfn(pfn);
    barrier();
    g[12].flags = 1;                              /* GTF_permit_access, read-write */
    printk("granted ref=12\n");
    uint64_t end = xen_system_time() + 20000000000ULL;
    while (memcmp((const char *)page, "dom0 was here", 13) != 0 && xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    check(memcmp((const char *)page, "dom0 was here", 13) == 0, "dom0 wrote into the granted page");
    end = xen_system_time() + 5000000000ULL;
    while ((g[12].flags & (3 << 3)) && xen_system_time() < end)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    check((g[12].flags & (3 << 3)) == 0, "dom0 unmapped it (in-use bits clear)");
    g[12].flags = 0;                              /* revoke */
    test_finish();
}
