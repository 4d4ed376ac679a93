/*
 * console_ring - output through the PV console ring instead of console_io.
 *
 * The console page (start_info->console.domU.mfn) is a bootstrap element,
 * so it is mapped at VIRT_BASE + pfn * 4096 (pfn found through the p2m;
 * the mapping is verified by a page-table walk).  Bytes go into out[] at
 * out_prod, out_prod is published after the data, and the backend is
 * kicked with EVTCHNOP_send on console.domU.evtchn.  Everything this guest
 * prints after setup, including the result line, goes through the ring.
 */
#include "minios.h"

void test_main(void)
{
    int rc = console_ring_init();
    if (rc) {
        /* Still on console_io here. */
        printk("console ring unavailable (mfn %#lx, rc %d)\n",
               (unsigned long)start_info->console.domU.mfn, rc);
        if (!start_info->console.domU.mfn)
            test_skip("start_info has no console ring");
        test_error("console ring page not mapped where expected");
    }

    struct xencons_ring *r = console_ring();
    console_set_sink(CONSOLE_SINK_RING);     /* from here on: ring only */

    uint32_t prod0 = r->out_prod;
    static const char line[] = "console ring works\n";
    long n = cons_ring_write(line, sizeof(line) - 1);
    uint32_t prod1 = r->out_prod;

    printk("ring at %p (pfn %#lx), evtchn %u, out_prod %u -> %u, out_cons %u\n",
           (void *)r, virt_to_pfn(r), start_info->console.domU.evtchn, prod0, prod1,
           *(volatile uint32_t *)&r->out_cons);
    check(n == (long)sizeof(line) - 1, "queued %ld bytes", n);
    check(prod1 - prod0 == sizeof(line) - 1, "out_prod advanced by the line length");
    long erc = evtchn_notify(start_info->console.domU.evtchn);
    check(erc == 0, "EVTCHNOP_send on the console port (%ld)", erc);
    cons_ring_flush();
    uint32_t cons = *(volatile uint32_t *)&r->out_cons;
    if (cons != r->out_prod)
        printk("(info) backend has not consumed everything yet: out_cons %u out_prod %u\n",
               cons, r->out_prod);
    test_finish();      /* result line through the ring, flushed, then shutdown */
}
