/*
 * hello - the smallest useful guest.
 *
 * Needs only: a correct entry state (%rsi = start_info), the hypercall page,
 * console_io(CONSOLEIO_write) and sched_op(SCHEDOP_shutdown).
 * Checks that start_info->magic starts with "xen-3.0-x86_64".
 */
#include "minios.h"

void test_main(void)
{
    const struct start_info *si = start_info;
    static const char magic[] = "xen-3.0-x86_64";

    printk("Hello from pyxen mini-OS\n");
    printk("start_info at %p\n", (const void *)si);
    printk("  magic        = \"%.32s\"\n", si->magic);
    printk("  nr_pages     = %lu\n", (unsigned long)si->nr_pages);
    printk("  shared_info  = %#lx (machine address)\n", (unsigned long)si->shared_info);
    printk("  flags        = %#x\n", si->flags);
    printk("  store        = mfn %#lx evtchn %u\n", (unsigned long)si->store_mfn, si->store_evtchn);
    printk("  console      = mfn %#lx evtchn %u\n", (unsigned long)si->console.domU.mfn,
           si->console.domU.evtchn);
    printk("  pt_base      = %#lx, nr_pt_frames = %lu\n", (unsigned long)si->pt_base,
           (unsigned long)si->nr_pt_frames);
    printk("  mfn_list     = %#lx\n", (unsigned long)si->mfn_list);
    printk("  mod_start    = %#lx, mod_len = %lu\n", (unsigned long)si->mod_start,
           (unsigned long)si->mod_len);
    printk("  cmd_line     = \"%.1024s\"\n", si->cmd_line);
    printk("  boot %%rsp    = %#lx\n", boot_rsp);
    {
        unsigned char h[16];
        if (HYPERVISOR_xen_version(XENVER_guest_handle, h) != 0)
            test_fail("XENVER_guest_handle failed");
        printk("  guest handle = %02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
               "%02x%02x%02x%02x%02x%02x\n", h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
               h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]);
    }

    if (strncmp(si->magic, magic, sizeof(magic) - 1) != 0)
        test_fail("start_info magic does not start with \"xen-3.0-x86_64\"");
    test_success();
}
