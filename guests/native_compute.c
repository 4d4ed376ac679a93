/*
 * native_compute - host reference for bench_compute: the same loop
 * (include/compute_loop.h) as a normal hosted program.
 *
 * Usage: native_compute [n=<iterations> | <iterations>]   (default 10000000)
 * Output: n=<N>  native_cycles=<c>  checksum=<hex>
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute_loop.h"

static volatile uint64_t seed = COMPUTE_SEED;

/* noipa: GCC must not treat the call as a pure function and move it out of
 * the timed region. */
static __attribute__((noipa)) uint64_t run_loop(uint64_t n, uint64_t s)
{
    return compute_loop(n, s);
}

static inline uint64_t rdtsc_ordered(void)
{
    uint32_t lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return ((uint64_t)hi << 32) | lo;
}

int main(int argc, char **argv)
{
    uint64_t n = 10000000;
    if (argc > 1) {
        const char *arg = argv[1];
        if (!strncmp(arg, "n=", 2))
            arg += 2;
        char *end;
        n = strtoull(arg, &end, 0);
        if (*end) {
            fprintf(stderr, "usage: %s [n=<iterations>]\n", argv[0]);
            return 2;
        }
    }
    uint64_t s = seed;
    uint64_t t0 = rdtsc_ordered();
    uint64_t sum = run_loop(n, s);
    uint64_t t1 = rdtsc_ordered();
    printf("n=%llu\n", (unsigned long long)n);
    printf("native_cycles=%llu\n", (unsigned long long)(t1 - t0));
    printf("checksum=%#llx\n", (unsigned long long)sum);
    return 0;
}
