/*
 * compute_loop.h - the integer workload shared by bench_compute (guest,
 * kernel and user mode) and native_compute (host), so that all three run
 * the same instruction stream.
 *
 * Each iteration is one xorshift64 step folded into an accumulator with a
 * multiply; every iteration depends on the previous one, so the compiler
 * can neither vectorise nor shorten the loop, and n is a run-time value.
 */
#ifndef PYXEN_GUEST_COMPUTE_LOOP_H
#define PYXEN_GUEST_COMPUTE_LOOP_H

#include <stdint.h>

#define COMPUTE_SEED 0x2545f4914f6cdd1dULL

static inline __attribute__((always_inline)) uint64_t
compute_loop(uint64_t n, uint64_t seed)
{
    uint64_t x = seed | 1, acc = 0;
    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = (acc ^ (acc >> 29)) + x * 0x9e3779b97f4a7c15ULL;
    }
    return acc ^ x;
}

#endif /* PYXEN_GUEST_COMPUTE_LOOP_H */
