/*
 * fastpaths - the hypercalls pyxen answers inside the guest, made over and
 * over with `syscall` in guest kernel mode (as Linux makes them): at every
 * context switch stack_switch and set_segment_base(SEGBASE_FS), answered by
 * pyxen's CPL0 #BP stub, and at the end of every event upcall an iret back
 * to kernel mode, answered by the LSTAR stub itself. The tests around it
 * pause and kick the domain meanwhile: each pause must find the vCPU in the
 * guest's own state, never inside pyxen's CPL0 stubs (PVVcpu.must_run_on).
 * Checks that each call returns 0, that the FS base set last is the one %fs
 * reads, and that each iret restores rax/rcx/r11, rip and rsp from its frame
 * and sets the upcall mask to !IF. Every 100th iret finds an event pending
 * with events unmasked, which pyxen must see (tests/hv/test_minios.py counts
 * them). Command line `only=stack`, `only=fs` or `only=iret` for one kind,
 * `only=none` for none (bench/run.py times the calls against it).
 * First, with %rsp at an unmapped page, as PV GRUB's relocator makes its
 * hypercalls: xen_version (answered in the guest) and sched_op yield (by
 * pyxen) both return, as on Xen, which writes nothing to the guest stack.
 Then an iret back to kernel mode onto an unmapped stack, which Xen also
 * makes without writing there (it reaches pyxen: the test counts it).
 *
 * `only=timer`: VCPUOP_set_singleshot_timer with `syscall` (Linux's, in every
 * timer tick), which the LSTAR stub answers when the deadline is after
 * the floor pyxen publishes (PVVcpu.publish_timer_floor): a bad argument is
 * -EFAULT, a past deadline with VCPU_SSHOTTMR_future -ETIME, a second
 * deadline replaces the first, a deadline answered while the guest then
 * spins without any exit still fires, and TIMER_ROUNDS deadlines 1 ms out
 * each fire once (the test counts how few reached pyxen).
 */
#include "minios.h"
#include "events.h"

#define ROUNDS 20000
#define PENDING_EVERY 100
#define TIMER_ROUNDS 300
#define MS 1000000UL
#define UNMAPPED_HIGH 0xffffffffff000000UL   /* above the image and its stack: not mapped */

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

static long syscall_on_unmapped_stack(unsigned long nr, unsigned long a1)
{
    long ret;
    asm volatile("mov %%rsp, %%r12\n\t"
                 "mov $0x2000, %%rsp\n\t"     /* 0x1000-0x1fff is not mapped */
                 "syscall\n\t"
                 "mov %%r12, %%rsp"
                 : "=a"(ret) : "a"(nr), "D"(a1), "S"(0UL) : "rcx", "r11", "r12", "memory");
    return ret;
}

/* HYPERVISOR_iret with `syscall` (as Linux's xen_iret), to the next
 * instruction at the same stack; returns whether rax, rcx, r11, rip and rsp
 * came back from the frame. */
static bool iret_round(unsigned long rflags, unsigned long i)
{
    unsigned long rax, rcx, r11, rsp_before, rsp_after;
    asm volatile("mov %%rsp, %[before]\n\t"
                 "pushq $0xe02b\n\t"                /* ss */
                 "pushq %[before]\n\t"              /* rsp: where it was */
                 "pushq %[fl]\n\t"                  /* rflags */
                 "pushq $0xe030\n\t"                /* cs: kernel, RPL cleared */
                 "lea 1f(%%rip), %%rax\n\t"
                 "pushq %%rax\n\t"                  /* rip */
                 "pushq $0\n\t"                     /* flags */
                 "pushq %[c]\n\t"                   /* rcx */
                 "pushq %[r]\n\t"                   /* r11 */
                 "pushq %[a]\n\t"                   /* rax */
                 "mov $23, %%eax\n\t"
                 "syscall\n"
                 "1:\tmov %%rsp, %[after]\n\t"
                 "mov %%r11, %[r11]"
                 : "=&a"(rax), "=&c"(rcx), [r11] "=&r"(r11), [before] "=&r"(rsp_before),
                   [after] "=&r"(rsp_after)
                 : [fl] "r"(rflags), [a] "r"(0xa0000000UL + i), [c] "r"(0xc0000000UL + i),
                   [r] "r"(0xb0000000UL + i)
                 : "r11", "memory", "cc");
    return rax == 0xa0000000UL + i && rcx == 0xc0000000UL + i && r11 == 0xb0000000UL + i
        && rsp_after == rsp_before;
}

/* HYPERVISOR_iret with `syscall` back to kernel mode onto an unmapped
 * stack above the frame (UNMAPPED_HIGH, IF clear; a target stack under the
 * frame reaches pyxen anyway): Xen's iret writes nothing there, so it
 * returns; pyxen's answer writes under that stack, faults, and pyxen makes
 * the iret itself. Returns whether rax and rsp came from the frame. */
static bool iret_onto_unmapped_stack(void)
{
    unsigned long rax, rsp_after;
    asm volatile("mov %%rsp, %%r12\n\t"
                 "pushq $0xe02b\n\t"                /* ss */
                 "pushq %[target]\n\t"              /* rsp */
                 "pushq $2\n\t"                     /* rflags: IF clear */
                 "pushq $0xe030\n\t"                /* cs */
                 "lea 1f(%%rip), %%rax\n\t"
                 "pushq %%rax\n\t"                  /* rip */
                 "pushq $0\n\t"                     /* flags */
                 "pushq $0\n\t"                     /* rcx */
                 "pushq $0\n\t"                     /* r11 */
                 "pushq $0x5a5a\n\t"                /* rax */
                 "mov $23, %%eax\n\t"
                 "syscall\n"
                 "1:\tmov %%rsp, %[after]\n\t"
                 "mov %%r12, %%rsp"
                 : "=&a"(rax), [after] "=&r"(rsp_after) : [target] "r"(UNMAPPED_HIGH)
                 : "rcx", "r11", "r12", "memory", "cc");
    return rax == 0x5a5a && rsp_after == UNMAPPED_HIGH;
}

static long singleshot_syscall(unsigned long vcpu, const void *arg)
{
    long ret;
    asm volatile("syscall" : "=a"(ret) : "a"(24UL), "D"((unsigned long)VCPUOP_set_singleshot_timer),
                 "S"(vcpu), "d"(arg) : "rcx", "r11", "memory");
    return ret;
}

static void timer_checks(void)
{
    struct vcpu_set_singleshot_timer t = { 0 };
    long port;
    unsigned long before, early = 0, missed = 0;
    uint64_t t0, t1;

    events_test_start();
    port = timer_port();
    check(port > 0, "VIRQ_TIMER bound (%ld)", port);

    check(singleshot_syscall(0, (const void *)0x1000) == -XEN_EFAULT,
          "set_singleshot_timer with an unmapped argument: -EFAULT");
    t.timeout_abs_ns = 1;
    t.flags = VCPU_SSHOTTMR_future;
    check(singleshot_syscall(0, &t) == -62 /* ETIME */,
          "set_singleshot_timer in the past with VCPU_SSHOTTMR_future: -ETIME");
    t.flags = 0;

    /* a second deadline replaces the first */
    before = event_count[port];
    t0 = xen_system_time();
    t.timeout_abs_ns = t0 + 20 * MS;
    check(singleshot_syscall(0, &t) == 0, "set_singleshot_timer(+20 ms)");
    t.timeout_abs_ns = t0 + 60 * MS;
    check(singleshot_syscall(0, &t) == 0, "set_singleshot_timer(+60 ms) replaces it");
    wait_event_count(port, before + 1, 0);
    t1 = xen_system_time();
    check(t1 - t0 >= 60 * MS && event_count[port] == before + 1,
          "the timer fired once, at %lu ms (not before 60)", (unsigned long)((t1 - t0) / MS));

    /* a deadline set in the guest, then a spin with events on and no exit */
    local_events_enable();
    before = event_count[port];
    t0 = xen_system_time();
    t.timeout_abs_ns = t0 + 5 * MS;
    long rc = singleshot_syscall(0, &t);
    while (event_count[port] == before && xen_system_time() - t0 < 2000 * MS)
        ;
    t1 = xen_system_time();
    check(rc == 0 && event_count[port] == before + 1 && t1 - t0 >= 5 * MS
          && t1 - t0 < 1000 * MS, "set_singleshot_timer(+5 ms) (%ld), then a spin without an "
          "exit: the timer fired after %lu ms", rc, (unsigned long)((t1 - t0) / MS));

    for (unsigned int i = 0; i < TIMER_ROUNDS; i++) {
        before = event_count[port];
        t0 = xen_system_time();
        t.timeout_abs_ns = t0 + MS;
        if (singleshot_syscall(0, &t) != 0 || !wait_event_count(port, before + 1, 0)) {
            missed++;
            continue;
        }
        if (xen_system_time() < t0 + MS)
            early++;
    }
    check(missed == 0 && early == 0, "%d single-shot timers 1 ms out: %lu missed, %lu early",
          TIMER_ROUNDS, missed, early);
    test_finish();
}

void test_main(void)
{
    unsigned long bad = 0, bad_iret = 0, bad_mask = 0, pended = 0;
    char only[8] = "";
    bool ss, fs_too, iret;

    cmdline_get("only", only, sizeof(only));
    if (!strcmp(only, "timer"))
        timer_checks();
    ss = !only[0] || !strcmp(only, "stack");
    fs_too = !only[0] || !strcmp(only, "fs");
    iret = !only[0] || !strcmp(only, "iret");
    if (iret && traps_init())
        test_error("traps_init failed");

    long version = syscall_on_unmapped_stack(17, 0), yield = syscall_on_unmapped_stack(29, 0);
    check(version == 0x40011 && yield == 0, "xen_version and sched_op(yield) with an unmapped "
          "stack: %#lx, %ld", version, yield);
    if (iret)
        check(iret_onto_unmapped_stack() && vcpu_info0->evtchn_upcall_mask == 1,
              "an iret to kernel mode onto an unmapped stack returns (IF clear: masked)");

    for (unsigned long i = 0; i < ROUNDS; i++) {
        unsigned long stack = (unsigned long)(i & 1 ? stack_b : stack_a) + 256;
        volatile uint64_t *fs = i & 1 ? fs_b : fs_a;
        if (ss && kernel_syscall_hypercall(3, FLAT_KERNEL_SS, stack) != 0)
            bad++;
        if (fs_too && (kernel_syscall_hypercall(25, SEGBASE_FS, (unsigned long)fs) != 0
                       || read_fs0() != fs[0]))
            bad++;
        if (iret) {
            /* alternately IF set and clear; every 100th with an event pending */
            bool on = (i & 1) || i % PENDING_EVERY == 0;
            if (i % PENDING_EVERY == 0) {
                vcpu_info0->evtchn_upcall_pending = 1;
                pended++;
            }
            if (!iret_round(X86_EFLAGS_FIXED | (on ? X86_EFLAGS_IF : 0), i))
                bad_iret++;
            if (vcpu_info0->evtchn_upcall_mask != !on)
                bad_mask++;
            vcpu_info0->evtchn_upcall_pending = 0;
            vcpu_info0->evtchn_upcall_mask = 1;
        }
    }
    check(bad == 0, "%d rounds of stack_switch and set_segment_base(FS) via syscall: "
          "%lu wrong", ROUNDS, bad);
    check(bad_iret == 0 && bad_mask == 0, "%d irets via syscall (%lu with an event pending): "
          "%lu with wrong registers, %lu with a wrong upcall mask", iret ? ROUNDS : 0, pended,
          bad_iret, bad_mask);
    test_finish();
}
