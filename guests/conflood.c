/*
 * conflood: a guest that floods its consoles.
 *   mode=io (default): console_io as Xen's debug build answers a domU:
 *     CONSOLEIO_read and unknown commands -EPERM, an unreadable buffer
 *     -EFAULT, a write of more than 16 KiB at once 0; then lines=N lines
 *     "flood NNNNNN ..." (100 bytes each) through CONSOLEIO_write as fast
 *     as it can, each answered 0 (the hypervisor drops what is over its
 *     rate, the guest is not told). The verdict goes to the console ring.
 *   mode=ring: lines=N lines "ring NNNNNN ..." through the console ring,
 *     with an event after every line; the backend reads at most 30 times
 *     per 200 ms (xenconsoled's rate), the guest waits for room, nothing
 *     is lost.
 */
#include "events.h"

#define EPERM 1
#define EFAULT 14

static char big[20000];

void test_main(void)
{
    char mode[8] = "io", line[128];
    set_smp_id(0);
    check(map_shared_info() == 0, "shared_info");
    check(console_ring_init() == 0, "console ring");
    cmdline_get("mode", mode, sizeof(mode));
    unsigned long n = cmdline_get_ulong("lines", 10000);

    if (mode[0] == 'i') {
        char rbuf[16];
        long r1 = HYPERVISOR_console_io(CONSOLEIO_read, sizeof(rbuf), rbuf);
        long r2 = HYPERVISOR_console_io(7, 1, rbuf);
        long r3 = HYPERVISOR_console_io(CONSOLEIO_write, 16, (const char *)0x10);
        const char esc[] = "\x1b[2Jesc\x07" "aped\r\n";
        long r4 = HYPERVISOR_console_io(CONSOLEIO_write, sizeof(esc) - 1, esc);
        for (unsigned long i = 0; i < sizeof(big); i++)
            big[i] = (i % 100 == 99) ? '\n' : 'b';
        long r5 = HYPERVISOR_console_io(CONSOLEIO_write, sizeof(big), big);
        unsigned long ok = 0, bytes = 0;
        for (unsigned long i = 0; i < n; i++) {
            int len = snprintf(line, sizeof(line), "flood %06lu %s\n", i,
                               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
            ok += HYPERVISOR_console_io(CONSOLEIO_write, (unsigned int)len, line) == 0;
            bytes += (unsigned long)len;
        }
        console_set_sink(CONSOLE_SINK_RING);
        check(r1 == -EPERM, "CONSOLEIO_read from a domU -> %ld (want -EPERM)", r1);
        check(r2 == -EPERM, "console_io command 7 -> %ld (want -EPERM)", r2);
        check(r3 == -EFAULT, "CONSOLEIO_write of an unreadable buffer -> %ld (want -EFAULT)", r3);
        check(r4 == 0, "CONSOLEIO_write with escape sequences -> %ld", r4);
        check(r5 == 0, "CONSOLEIO_write of %u bytes at once -> %ld", (unsigned int)sizeof(big), r5);
        check(ok == n, "%lu of %lu flood writes answered 0", ok, n);
        printk("conflood: wrote %lu lines, %lu bytes\n", n, bytes + sizeof(big));
    } else {
        console_set_sink(CONSOLE_SINK_RING);
        for (unsigned long i = 0; i < n; i++)
            printk("ring %06lu yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n", i);
        printk("conflood: wrote %lu ring lines\n", n);
    }
    test_finish();
}
