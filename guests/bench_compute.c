/*
 * bench_compute - the same integer loop in guest kernel mode and in guest
 * user mode, timed with rdtsc (native at ring 3 unless the hypervisor sets
 * CR4.TSD).  native_compute.c runs the identical loop on the host.
 *
 * Command line: "n=<iterations>" (default 10000000).  Output lines:
 *   n=<N>  kernel_cycles=<c>  user_cycles=<c>  checksum=<hex>
 */
#include "minios.h"
#include "compute_loop.h"

static volatile uint64_t seed = COMPUTE_SEED;

/* noipa: GCC must not treat the call as a pure function and move it out of
 * the timed region. */
static __attribute__((noipa)) uint64_t run_loop(uint64_t n, uint64_t s)
{
    return compute_loop(n, s);
}

/* Runs in guest user mode. */
static void user_bench(unsigned long n)
{
    uint64_t s = seed;
    uint64_t t0 = rdtsc_ordered();
    uint64_t sum = run_loop(n, s);
    uint64_t t1 = rdtsc_ordered();
    user_syscall(SYS_REPORT, 0, t1 - t0);
    user_syscall(SYS_REPORT, 1, sum);
    user_syscall(SYS_EXIT, 0, 0);
}

void test_main(void)
{
    unsigned long n = cmdline_get_ulong("n", 10000000);
    printk("n=%lu\n", n);

    uint64_t s = seed;
    uint64_t t0 = rdtsc_ordered();
    uint64_t sum_k = run_loop(n, s);
    uint64_t t1 = rdtsc_ordered();
    printk("kernel_cycles=%lu\n", (unsigned long)(t1 - t0));

    if (user_init())
        test_error("user_init failed");
    long code = user_run(user_bench, n);
    uint64_t sum_u = user_reports[1];
    printk("user_cycles=%lu\n", (unsigned long)user_reports[0]);
    printk("checksum=%#lx\n", (unsigned long)sum_k);

    check(code == 0, "user task exited with 0 (%ld)", code);
    check(sum_u == sum_k, "user checksum %#lx matches kernel checksum", (unsigned long)sum_u);
    test_finish();
}
