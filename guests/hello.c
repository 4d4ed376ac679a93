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

    if (strncmp(si->magic, magic, sizeof(magic) - 1) != 0)
        test_fail("start_info magic does not start with \"xen-3.0-x86_64\"");
    test_success();
}
