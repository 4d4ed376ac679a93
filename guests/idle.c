/*
 * idle: a long-running guest that behaves like a PV OS toward the
 * toolstack: it watches control/shutdown and obeys poweroff / reboot /
 * crash requests, and echoes console input back ("echo: ..." per line).
 */
#include "xenstore.h"

void test_main(void)
{
    char buf[128], line[256], path[128], tok[32];
    unsigned long llen = 0;
    set_smp_id(0);
    check(map_shared_info() == 0, "shared_info");
    check(xs_init() == 0, "xenstore");
    check(console_ring_init() == 0, "console ring");
    console_set_sink(3);
    xs_watch("control/shutdown", "shutdown");
    xs_wait_watch(path, sizeof(path), tok, sizeof(tok), 2000);   /* the initial event */
    printk("idle: ready\n");
    for (;;) {
        uint32_t ports[2] = { xs_port(), start_info->console.domU.evtchn };
        sched_poll(ports, 2, xen_system_time() + 200000000ULL);
        for (int i = 0; i < 2; i++)
            __atomic_fetch_and(&shared_info->evtchn_pending[ports[i] / 64],
                               ~(1ULL << (ports[i] % 64)), __ATOMIC_SEQ_CST);
        long n;
        while ((n = cons_read(buf, sizeof(buf))) > 0) {
            for (long i = 0; i < n; i++) {
                char ch = buf[i];
                if (ch == '\r' || ch == '\n') {
                    line[llen] = 0;
                    printk("echo: %s\n", line);
                    llen = 0;
                } else if (llen < sizeof(line) - 1) {
                    line[llen++] = ch;
                }
            }
        }
        struct xs_ring_peek { char req[1024], rsp[1024]; volatile uint32_t a, b, c, d; };
        if (xs_wait_watch(path, sizeof(path), tok, sizeof(tok), 0) == 0) {
            xs_read(0, "control/shutdown", buf, sizeof(buf) - 1);
            if (buf[0]) {
                printk("idle: asked to %s\n", buf);
                unsigned int reason = strcmp(buf, "reboot") == 0 ? SHUTDOWN_reboot :
                                      strcmp(buf, "crash") == 0 ? SHUTDOWN_crash :
                                      SHUTDOWN_poweroff;
                xs_write(0, "control/shutdown", "");
                struct sched_shutdown s = { reason };
                HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
            }
        }
    }
}
