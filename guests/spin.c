/* spin: burn CPU in guest kernel mode for ms=N milliseconds of system time. */
#include "events.h"

void test_main(void)
{
    set_smp_id(0);
    check(map_shared_info() == 0, "shared_info");
    uint64_t ms = cmdline_get_ulong("ms", 1000);
    uint64_t end = xen_system_time() + ms * 1000000ULL;
    unsigned long n = 0;
    while (xen_system_time() < end)
        n++;
    printk("spun %lu iterations\n", n);
    test_finish();
}
