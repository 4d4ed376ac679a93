/*
 * bench_hypercall - N round trips of the cheapest hypercall.
 *
 * Command line: "n=<count>" (default 100000).  Calls
 * HYPERVISOR_xen_version(XENVER_version, NULL) N times and prints the
 * rdtsc delta; the harness can also time runs with different N.
 */
#include "minios.h"

void test_main(void)
{
    unsigned long n = cmdline_get_ulong("n", 100000);

    long version = HYPERVISOR_xen_version(XENVER_version, NULL);
    printk("xen_version=%ld.%ld (%#lx)\n", version >> 16, version & 0xffff, version);
    if (version < 0)
        test_fail("XENVER_version failed");

    unsigned long mismatches = 0;
    uint64_t t0 = rdtsc_ordered();
    for (unsigned long i = 0; i < n; i++)
        mismatches += HYPERVISOR_xen_version(XENVER_version, NULL) != version;
    uint64_t t1 = rdtsc_ordered();

    printk("n=%lu\n", n);
    printk("cycles=%lu\n", (unsigned long)(t1 - t0));
    if (n)
        printk("cycles_per_call=%lu\n", (unsigned long)((t1 - t0) / n));
    if (mismatches)
        test_fail("XENVER_version result changed during the loop");
    test_success();
}
