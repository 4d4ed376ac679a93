/*
 * fastpaths - the hypercalls pyxen answers inside the guest, made over and
 * over with `syscall` in guest kernel mode (as Linux makes them at every
 * context switch): stack_switch and set_segment_base(SEGBASE_FS), answered
 * by pyxen's CPL0 #BP stub. The test around it pauses and unpauses the
 * domain meanwhile: each pause must find the vCPU in the guest's own state,
 * never inside pyxen's stub (PVVcpu.must_run_on). Checks that each call
 * returns 0 and that the FS base set last is the one %fs reads.
 */
#include "minios.h"

#define ROUNDS 20000

static uint8_t stack_a[256] __attribute__((aligned(16)));
static uint8_t stack_b[256] __attribute__((aligned(16)));
static volatile uint64_t fs_a[1] = { 0xa5a5a5a5a5a5a5a5UL };
static volatile uint64_t fs_b[1] = { 0xb6b6b6b6b6b6b6b6UL };

static long kernel_syscall_hypercall(unsigned long nr, unsigned long a1, unsigned long a2)
{
    long ret;
    asm volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a1), "S"(a2), "d"(0UL)
                 : "rcx", "r11", "memory");
    return ret;
}

static uint64_t read_fs0(void)
{
    uint64_t v;
    asm volatile("movq %%fs:0, %0" : "=r"(v));
    return v;
}

void test_main(void)
{
    unsigned long bad = 0;
    char only[8] = "";
    bool ss, fs_too;

    /* only=stack or only=fs: one of the two (bench: what each costs) */
    cmdline_get("only", only, sizeof(only));
    ss = strcmp(only, "fs") != 0;
    fs_too = strcmp(only, "stack") != 0;

    for (unsigned long i = 0; i < ROUNDS; i++) {
        unsigned long stack = (unsigned long)(i & 1 ? stack_b : stack_a) + 256;
        volatile uint64_t *fs = i & 1 ? fs_b : fs_a;
        if (ss && kernel_syscall_hypercall(3, FLAT_KERNEL_SS, stack) != 0)
            bad++;
        if (fs_too && (kernel_syscall_hypercall(25, SEGBASE_FS, (unsigned long)fs) != 0
                       || read_fs0() != fs[0]))
            bad++;
    }
    check(bad == 0, "%d rounds of stack_switch and set_segment_base(FS) via syscall: "
          "%lu wrong", ROUNDS, bad);
    test_finish();
}
