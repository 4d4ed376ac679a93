/*
 * usermode - guest user mode: iret hypercall into user mode, SYSCALL via
 * the registered syscall callback, return with VGCF_in_syscall, a user-mode
 * page fault, and FS/GS bases set with set_segment_base.
 *
 * The kernel (runtime/user.c) pins a user L4 (a copy of the kernel L4's
 * guest slots), sets it with MMUEXT_NEW_USER_BASEPTR, registers a kernel
 * entry stack with stack_switch and a syscall callback with callback_op,
 * then irets to user_main() with CS = 0xe033 (RPL 3 = user mode).
 */
#include "minios.h"
#include "events.h"

#define FS_MAGIC        0xf5f5f5f5a5a5a5a5UL
#define GS_USER_MAGIC   0x6565656512121212UL
#define GS_KERNEL_MAGIC 0x4b4b4b4b34343434UL
#define EXIT_CODE       0x600d
#define PF_HANDLED      0xfa17UL

/* pyxen's window onto vCPU 0's vcpu_info page, for its syscall stubs
 * (hv/layout.py: PRIV_VIRT + VCPU_INFO_MAP_OFF): mapped in guest kernel
 * mode only, as the guest kernel's own memory is */
#define PYXEN_VCPU_INFO_WINDOW 0xffff808040800000UL
/* and its syscall stubs' PERCPU entry of vCPU 0 (KPERCPU_OFF): the window's
 * address, IOPL, the event callback's address; kernel mode only too */
#define PYXEN_KPERCPU 0xffff808040820000UL

enum {
    R_ADD, R_MAGIC, R_FS, R_GS, R_REGS, R_PF, R_CS, R_SS, R_VCPUOP, R_WINDOW, R_KPERCPU,
    R_COUNT
};

static volatile uint64_t fs_area[2] = { FS_MAGIC, 0 };
static volatile uint64_t gs_user_area[2] = { GS_USER_MAGIC, 0 };
static volatile uint64_t gs_kernel_area[2] = { GS_KERNEL_MAGIC, 0 };

/*
 * unsigned long user_regs_check(void): load known values into every GPR
 * except rax/rcx/r11/rsp, do a SYS_NOP syscall and return the OR of
 * (reg ^ expected) over those registers and the syscall result (0 = all
 * preserved, result 0).
 */
#define LOAD(reg, val)  "    movabs $" val ", %" reg "\n"
#define CMP(reg, val)   "    movabs $" val ", %rcx\n    xorq %rcx, %" reg "\n    orq %" reg ", %r11\n"
asm(".pushsection .text\n"
    ".globl user_regs_check\n"
    "user_regs_check:\n"
    "    pushq %rbx\n    pushq %rbp\n    pushq %r12\n    pushq %r13\n    pushq %r14\n    pushq %r15\n"
    LOAD("rbx", "0x1111111111111111") LOAD("rbp", "0x2222222222222222")
    LOAD("r12", "0x3333333333333333") LOAD("r13", "0x4444444444444444")
    LOAD("r14", "0x5555555555555555") LOAD("r15", "0x6666666666666666")
    LOAD("rdi", "0x7777777777777777") LOAD("rsi", "0x8888888888888888")
    LOAD("rdx", "0x9999999999999999") LOAD("r8",  "0xaaaaaaaaaaaaaaaa")
    LOAD("r9",  "0xbbbbbbbbbbbbbbbb") LOAD("r10", "0xcccccccccccccccc")
    "    movl $3, %eax\n"                 /* SYS_NOP */
    "    syscall\n"
    "    movq %rax, %r11\n"
    CMP("rbx", "0x1111111111111111") CMP("rbp", "0x2222222222222222")
    CMP("r12", "0x3333333333333333") CMP("r13", "0x4444444444444444")
    CMP("r14", "0x5555555555555555") CMP("r15", "0x6666666666666666")
    CMP("rdi", "0x7777777777777777") CMP("rsi", "0x8888888888888888")
    CMP("rdx", "0x9999999999999999") CMP("r8",  "0xaaaaaaaaaaaaaaaa")
    CMP("r9",  "0xbbbbbbbbbbbbbbbb") CMP("r10", "0xcccccccccccccccc")
    "    movq %r11, %rax\n"
    "    popq %r15\n    popq %r14\n    popq %r13\n    popq %r12\n    popq %rbp\n    popq %rbx\n"
    "    ret\n"

    /* unsigned long user_pf_probe(addr): read addr; the kernel's #PF
     * handler resumes at user_pf_after with rax = PF_HANDLED. */
    ".globl user_pf_probe\n"
    "user_pf_probe:\n"
    "    movq %rdi, %rdx\n"
    "    xorl %eax, %eax\n"
    ".globl user_pf_insn\n"
    "user_pf_insn:\n"
    "    movq (%rdx), %rax\n"
    ".globl user_pf_after\n"
    "user_pf_after:\n"
    "    ret\n"
    ".popsection\n");
_Static_assert(SYS_NOP == 3, "user_regs_check hard-codes SYS_NOP");

unsigned long user_regs_check(void);
unsigned long user_pf_probe(unsigned long addr);
extern char user_pf_insn[], user_pf_after[];

static void report(unsigned long idx, unsigned long val)
{
    user_syscall(SYS_REPORT, idx, val);
}

/* ---- runs in guest user mode: no hypercalls, no printk ---- */
static void user_main(unsigned long arg)
{
    unsigned long v;
    unsigned short sel;

    report(R_ADD, user_syscall6(SYS_ADD, arg, 2, 3, 4, 5, 6));
    report(R_MAGIC, user_syscall(SYS_GETMAGIC, 0, 0));
    asm volatile("movq %%fs:0, %0" : "=r"(v));
    report(R_FS, v);
    asm volatile("movq %%gs:0, %0" : "=r"(v));
    report(R_GS, v);
    report(R_REGS, user_regs_check());
    report(R_PF, user_pf_probe(0x1000));
    /* the guest kernel's vcpu_info through pyxen's window: not here */
    report(R_WINDOW, user_pf_probe(PYXEN_VCPU_INFO_WINDOW + 8));
    report(R_KPERCPU, user_pf_probe(PYXEN_KPERCPU + 16));
    asm volatile("mov %%cs, %0" : "=r"(sel));
    report(R_CS, sel);
    asm volatile("mov %%ss, %0" : "=r"(sel));
    report(R_SS, sel);
    /* a user `syscall` numbered like vcpu_op, on a vCPU the domain lacks: the
     * guest kernel's system call, never pyxen's in-guest vcpu_op answer */
    report(R_VCPUOP, user_syscall6(24, VCPUOP_is_up, 1000, 0, 0, 0, 0));
    user_syscall(SYS_EXIT, EXIT_CODE, 0);
    for (;;)
        ;
}

/* ---- kernel side ---- */
static volatile struct {
    unsigned int count;
    uint64_t vector, error_code, rip, cs, cr2, rsp;
} upf, window_pf, kpercpu_pf;

static bool user_fault_hook(struct trap_regs *r, uint64_t cr2)
{
    if (r->vector != X86_EXC_PF || r->rip != (uint64_t)user_pf_insn)
        return false;
    if (cr2 == PYXEN_VCPU_INFO_WINDOW + 8 || cr2 == PYXEN_KPERCPU + 16) {
        volatile typeof(window_pf) *p = cr2 == PYXEN_KPERCPU + 16 ? &kpercpu_pf : &window_pf;
        p->count++;
        p->error_code = r->error_code;
        r->rip = (uint64_t)user_pf_after;
        r->rax = PF_HANDLED;
        return true;
    }
    upf.count++;
    upf.vector = r->vector;
    upf.error_code = r->error_code;
    upf.rip = r->rip;
    upf.cs = r->cs;
    upf.cr2 = cr2;
    upf.rsp = r->rsp;
    r->rip = (uint64_t)user_pf_after;
    r->rax = PF_HANDLED;
    return true;
}

/* A hypercall the way Linux makes them: `syscall` in guest kernel mode. */
static long kernel_syscall_hypercall(unsigned long nr, unsigned long a1, unsigned long a2)
{
    long ret;
    asm volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a1), "S"(a2), "d"(0UL)
                 : "rcx", "r11", "memory");
    return ret;
}

#define ABSENT_VCPU_CALLS 64

/* the kernel stack set with stack_switch through `syscall`, and where user
 * mode's system calls left their frames */
static uint8_t alt_entry_stack[4096] __attribute__((aligned(16)));
static volatile unsigned long frames_on_alt, frames_elsewhere;

static bool frame_hook(struct trap_regs *r)
{
    uintptr_t a = (uintptr_t)r;
    if (a >= (uintptr_t)alt_entry_stack && a < (uintptr_t)alt_entry_stack + sizeof(alt_entry_stack))
        frames_on_alt++;
    else
        frames_elsewhere++;
    return false;
}

static uint64_t read_gs0(void)
{
    uint64_t v;
    asm volatile("movq %%gs:0, %0" : "=r"(v));
    return v;
}

void test_main(void)
{
    long rc;

    if (user_init())
        test_error("user_init failed");

    /* a first FS base through the hypercall page; the one user mode reads
     * comes later, made with `syscall` */
    rc = HYPERVISOR_set_segment_base(SEGBASE_FS, (unsigned long)gs_user_area);
    check(rc == 0, "set_segment_base(FS) (%ld)", rc);
    rc = HYPERVISOR_set_segment_base(SEGBASE_GS_USER, (unsigned long)gs_user_area);
    check(rc == 0, "set_segment_base(GS_USER) (%ld)", rc);
    rc = HYPERVISOR_set_segment_base(SEGBASE_GS_KERNEL, (unsigned long)gs_kernel_area);
    check(rc == 0, "set_segment_base(GS_KERNEL) (%ld)", rc);
    check(read_gs0() == GS_KERNEL_MAGIC, "kernel %%gs:0 reads the kernel GS area (%#lx)",
          read_gs0());

    /* stack_switch made with `syscall`, as Linux makes it at every context
     * switch (pyxen answers it in the guest): user mode enters on the new
     * stack from now on */
    check(kernel_syscall_hypercall(3, FLAT_KERNEL_SS, (unsigned long)alt_entry_stack
                                   + sizeof(alt_entry_stack)) == 0, "stack_switch via syscall");
    syscall_hook = frame_hook;
    /* set_segment_base(SEGBASE_FS) with `syscall` (Linux's, at every switch to
     * a task with a TLS; pyxen answers it in the guest): a non-canonical base
     * is -EINVAL; the base set replaces the first, and user mode reads it
     * through %fs */
    check(kernel_syscall_hypercall(25, SEGBASE_FS, 0x8000000000000000UL) == -XEN_EINVAL,
          "set_segment_base(FS, non-canonical) via syscall: -EINVAL");
    check(kernel_syscall_hypercall(25, SEGBASE_FS, (unsigned long)fs_area) == 0,
          "set_segment_base(FS) via syscall");

    /* pyxen's window onto this vCPU's vcpu_info is there in kernel mode
     * (the syscall stubs' answers read and write it) */
    check(((volatile struct vcpu_info *)(PYXEN_VCPU_INFO_WINDOW
                                         + ((uintptr_t)vcpu_info0 & 0xfff)))->evtchn_upcall_mask
          == vcpu_info0->evtchn_upcall_mask,
          "kernel mode: pyxen's vcpu_info window shows vcpu_info");
    check(*(volatile uint64_t *)PYXEN_KPERCPU
          == PYXEN_VCPU_INFO_WINDOW + ((uintptr_t)vcpu_info0 & 0xfff),
          "kernel mode: pyxen's PERCPU entry names the window");

    trap_hook = user_fault_hook;
    printk("entering user mode\n");
    long code = user_run(user_main, 1);
    trap_hook = NULL;
    printk("back in kernel mode: exit code %#lx after %lu syscalls\n", code,
           (unsigned long)user_syscall_count);

    syscall_hook = NULL;
    check(code == EXIT_CODE, "user task exit code %#lx", code);
    check(frames_on_alt == R_COUNT + 5 && frames_elsewhere == 0,
          "user syscalls entered on the stack_switch stack (%lu there, %lu elsewhere)",
          frames_on_alt, frames_elsewhere);
    check(user_syscall_count == R_COUNT + 5,
          "syscall count %lu (expected %u)", (unsigned long)user_syscall_count, R_COUNT + 5);
    check(user_reports[R_VCPUOP] == (uint64_t)-XEN_ENOSYS,
          "user syscall 24 reaches the guest kernel (%ld)", (long)user_reports[R_VCPUOP]);
    check(user_reports[R_ADD] == 21, "SYS_ADD(1..6) = %lu (6 arguments in rdi rsi rdx r10 r8 r9)",
          (unsigned long)user_reports[R_ADD]);
    check(user_reports[R_MAGIC] == USER_SYSCALL_MAGIC, "64-bit syscall return value %#lx",
          (unsigned long)user_reports[R_MAGIC]);
    check(user_reports[R_FS] == FS_MAGIC, "user %%fs:0 = %#lx (SEGBASE_FS)",
          (unsigned long)user_reports[R_FS]);
    check(user_reports[R_GS] == GS_USER_MAGIC, "user %%gs:0 = %#lx (SEGBASE_GS_USER)",
          (unsigned long)user_reports[R_GS]);
    check(user_reports[R_REGS] == 0,
          "GPRs preserved across syscall + iret(VGCF_in_syscall) (diff %#lx)",
          (unsigned long)user_reports[R_REGS]);
    check((user_reports[R_CS] & 3) == 3 /* PVM shows 0x33, Xen 0xe033 */, "user mode runs with cs %#lx",
          (unsigned long)user_reports[R_CS]);
    check((user_reports[R_SS] & 3) == 3, "user mode runs with ss %#lx",
          (unsigned long)user_reports[R_SS]);

    /* The user-mode page fault. */
    printk("user #PF: count=%u ec=%#lx rip=%p cs=%#lx cr2=%#lx rsp=%p\n", upf.count,
           (unsigned long)upf.error_code, (void *)upf.rip, (unsigned long)upf.cs,
           (unsigned long)upf.cr2, (void *)upf.rsp);
    check(upf.count == 1 && user_reports[R_PF] == PF_HANDLED,
          "user #PF delivered once and resumed in user mode");
    check((upf.error_code & (PFEC_PRESENT | PFEC_WRITE | PFEC_USER)) == PFEC_USER,
          "user #PF error code %#lx has U set, P/W clear", (unsigned long)upf.error_code);
    check(upf.cr2 == 0x1000, "user #PF cr2 %#lx", (unsigned long)upf.cr2);
    check((upf.cs & 0xffff) == FLAT_USER_CS, "user #PF frame cs %#lx (RPL 3: user mode)",
          (unsigned long)(upf.cs & 0xffff));

    /* The guest kernel's vcpu_info through pyxen's window, from user mode:
     * a #PF, not present (nothing mapped there in the user view). */
    check(window_pf.count == 1 && user_reports[R_WINDOW] == PF_HANDLED,
          "user mode cannot read the vcpu_info window (%u faults)", window_pf.count);
    check((window_pf.error_code & (PFEC_PRESENT | PFEC_USER)) == PFEC_USER,
          "window #PF error code %#lx: user, not present", (unsigned long)window_pf.error_code);
    check(kpercpu_pf.count == 1 && user_reports[R_KPERCPU] == PF_HANDLED,
          "user mode cannot read pyxen's PERCPU entry (%u faults)", kpercpu_pf.count);

    /* The frame of the last syscall (SYS_EXIT). */
    const volatile struct trap_regs *s = &user_last_syscall;
    printk("last syscall frame: rip=%p cs=%#lx rflags=%#lx rsp=%p ss=%#lx rcx=%#lx r11=%#lx\n",
           (void *)s->rip, (unsigned long)s->cs, (unsigned long)s->rflags, (void *)s->rsp,
           (unsigned long)s->ss, (unsigned long)s->rcx, (unsigned long)s->r11);
    check((s->cs & 3) == 3, "syscall frame cs %#lx has RPL 3", (unsigned long)(s->cs & 0xffff));
    check(s->rcx == s->rip, "syscall frame rcx == rip (SYSCALL semantics)");
    check(s->rax == SYS_EXIT && s->rdi == EXIT_CODE, "syscall frame carries rax/rdi");

    check(read_gs0() == GS_KERNEL_MAGIC, "kernel %%gs:0 still the kernel GS area (%#lx)",
          read_gs0());

    /* vcpu_op through `syscall` in kernel mode: vCPU 0 is up; an absent one
     * is -ENOENT whatever the command (pyxen answers those in the guest);
     * the vCPU id is 32 bits, as Xen reads it */
    check(kernel_syscall_hypercall(24, VCPUOP_is_up, 0) == 1, "vcpu_op(is_up, 0) via syscall");
    check(kernel_syscall_hypercall(24, VCPUOP_is_up, 1UL << 32) == 1,
          "vcpu_op(is_up, 1 << 32) is vCPU 0");
    for (int i = 0; i < ABSENT_VCPU_CALLS; i++) {
        long rc = kernel_syscall_hypercall(24, i & 1 ? VCPUOP_is_up : 0xdead, 1000 + i);
        if (rc != -XEN_ENOENT) {
            check(false, "vcpu_op on absent vCPU %d: %ld", 1000 + i, rc);
            break;
        }
    }
    check(kernel_syscall_hypercall(24, VCPUOP_is_up, (7UL << 32) | 4000) == -XEN_ENOENT,
          "vcpu_op(is_up, 4000 | 7 << 32): -ENOENT");
    check(vcpu_info0->evtchn_upcall_mask == 1, "event upcalls still masked (%u)",
          vcpu_info0->evtchn_upcall_mask);
    test_finish();
}
