/*
 * suspend - a counter that survives save/restore (pyxen save / restore).
 *
 * Prints "count N t=MS" (its system time) on the console ring every period_ms (command line,
 * default 50) and reads control/shutdown from XenStore between counts, as
 * a PV kernel's xenbus watch would.  On "suspend" it acknowledges (writes
 * ""), turns start_info's xenstore and console frames into pfns (Linux's
 * xen_pv_pre_suspend), and calls SCHEDOP_shutdown(SHUTDOWN_suspend) with its
 * start_info frame as the third argument (Linux's HYPERVISOR_suspend).
 * The hypercall returns 1 when the suspend was cancelled (a checkpoint: same
 * domain, frames back to mfns; this image has the SUSPEND_CANCEL note) and
 * 0 in a restored domain: the toolstack rewrote start_info, so the console
 * and xenstore channels are taken from it again.  "poweroff" (or count=N
 * reached) ends with SUCCESS.  bad_si=1 names a frame that is not its
 * start_info in the hypercall (the save must refuse it).
 */
#include "xenstore.h"

/* XEN_ELFNOTE_SUSPEND_CANCEL (14): this kernel understands a suspend
 * hypercall that returns 1 */
asm(".pushsection .note.Xen, \"a\", @note\n"
    ".p2align 2\n"
    ".long 4, 4, 14\n"
    ".asciz \"Xen\"\n"
    ".p2align 2\n"
    ".long 1\n"
    ".popsection\n");

static long do_suspend(void)
{
    struct sched_shutdown s = { SHUTDOWN_suspend };
    unsigned long si_mfn = virt_to_mfn(start_info);

    if (cmdline_get_ulong("bad_si", 0))
        si_mfn = 0x7fffffffffUL;    /* a lie the toolstack must not act on */

    start_info->store_mfn = mfn_to_pfn(start_info->store_mfn);
    start_info->console.domU.mfn = mfn_to_pfn(start_info->console.domU.mfn);
    long rc = HYPERVISOR_sched_op3(SCHEDOP_shutdown, &s, si_mfn);
    if (rc != 0) {
        /* cancelled (or refused): still the same domain */
        start_info->store_mfn = pfn_to_mfn(start_info->store_mfn);
        start_info->console.domU.mfn = pfn_to_mfn(start_info->console.domU.mfn);
        return rc;
    }
    console_ring_resume();
    xs_init();
    return 0;
}

void test_main(void)
{
    unsigned long limit = cmdline_get_ulong("count", 0);
    unsigned long period = cmdline_get_ulong("period_ms", 50);
    unsigned long n = 0;
    char buf[64];

    set_smp_id(0);
    check(map_shared_info() == 0, "shared_info");
    check(xs_init() == 0, "xenstore");
    check(console_ring_init() == 0, "console ring");
    console_set_sink(CONSOLE_SINK_RING);
    printk("suspend: ready\n");
    for (;;) {
        printk("count %lu t=%lu\n", n++, (unsigned long)(xen_system_time() / 1000000));
        if (limit && n > limit)
            break;
        long len = xs_read(0, "control/shutdown", buf, sizeof(buf) - 1);
        if (len > 0) {
            buf[len] = 0;
            if (strcmp(buf, "suspend") == 0) {
                xs_write(0, "control/shutdown", "");
                printk("suspend: suspending at count %lu\n", n);
                cons_ring_flush();
                long rc = do_suspend();
                printk("suspend: %s (rc %ld) at count %lu\n",
                       rc == 1 ? "cancelled, same domain" :
                       rc == 0 ? "resumed in a new domain" : "refused", rc, n);
            } else if (strcmp(buf, "poweroff") == 0) {
                xs_write(0, "control/shutdown", "");
                break;
            }
        }
        sched_poll(NULL, 0, xen_system_time() + period * 1000000ULL);
    }
    test_success();
}
