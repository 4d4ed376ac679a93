/*
 * traps - exception delivery through the PV virtual IDT (set_trap_table)
 * and return through HYPERVISOR_iret.
 *
 * Triggers, in guest kernel mode: #UD (ud2), #BP (int3), #DE (div by 0),
 * #PF (read and write of unmapped addresses, write to a read-only page
 * table page) and #GP (non-canonical access).  For each one the handler
 * records the bounce frame and resumes; the test then checks vector, error
 * code, saved rip/cs/rflags/rsp/ss, CR2 (vcpu_info.arch.cr2) and that rcx
 * and r11 - which Xen's frame carries because it enters the handler with
 * SYSRET - survived the round trip.
 */
#include "minios.h"

#define MAGIC_RCX 0x1badc0de2badc0deUL
#define MAGIC_R11 0x0ddba11cafef00d5UL

/*
 * Each case function loads the magic values into rcx/r11, saves its %rsp,
 * executes one faulting instruction at <case>_insn and continues at
 * <case>_after.  It returns (rcx ^ MAGIC_RCX) | (r11 ^ MAGIC_R11), i.e. 0
 * when both registers came back intact.
 */
#define CASE_PROLOGUE(name)                          \
    ".globl " #name "\n"                             \
    ".type " #name ", @function\n"                   \
    #name ":\n"                                      \
    "    movabs $0x1badc0de2badc0de, %rcx\n"         \
    "    movabs $0x0ddba11cafef00d5, %r11\n"         \
    "    movq %rsp, case_rsp(%rip)\n"

#define CASE_INSN(name, insn)                        \
    ".globl " #name "_insn\n"                        \
    #name "_insn:\n"                                 \
    "    " insn "\n"                                 \
    ".globl " #name "_after\n"                       \
    #name "_after:\n"                                \
    "    jmp case_check\n"

asm(".pushsection .text\n"
    "case_check:\n"
    "    movabs $0x1badc0de2badc0de, %rax\n"
    "    xorq %rcx, %rax\n"
    "    movabs $0x0ddba11cafef00d5, %rdx\n"
    "    xorq %r11, %rdx\n"
    "    orq %rdx, %rax\n"
    "    ret\n"

    CASE_PROLOGUE(case_ud)
    CASE_INSN(case_ud, "ud2")

    CASE_PROLOGUE(case_bp)
    CASE_INSN(case_bp, "int3")

    CASE_PROLOGUE(case_de)
    "    xorl %edx, %edx\n"
    "    movl $1, %eax\n"
    "    xorl %r8d, %r8d\n"
    CASE_INSN(case_de, "divq %r8")

    CASE_PROLOGUE(case_pf_read)
    "    movl $0x1000, %edx\n"
    CASE_INSN(case_pf_read, "movq (%rdx), %rax")

    CASE_PROLOGUE(case_pf_write)
    "    movl $0x2000, %edx\n"
    "    xorl %eax, %eax\n"
    CASE_INSN(case_pf_write, "movq %rax, (%rdx)")

    /* rdi = address of a present, read-only page; rax = its current value
     * (so that even a wrongly emulated write would change nothing). */
    CASE_PROLOGUE(case_pf_ro)
    "    movq (%rdi), %rax\n"
    CASE_INSN(case_pf_ro, "movq %rax, (%rdi)")

    CASE_PROLOGUE(case_gp)
    "    movabs $0x8000000000000000, %rdx\n"
    CASE_INSN(case_gp, "movq (%rdx), %rax")
    ".popsection\n");

/* All take the same argument (only case_pf_ro uses it: the read-only va). */
unsigned long case_ud(unsigned long), case_bp(unsigned long), case_de(unsigned long),
    case_pf_read(unsigned long), case_pf_write(unsigned long), case_pf_ro(unsigned long),
    case_gp(unsigned long);
extern char case_ud_insn[], case_ud_after[], case_bp_insn[], case_bp_after[],
    case_de_insn[], case_de_after[], case_pf_read_insn[], case_pf_read_after[],
    case_pf_write_insn[], case_pf_write_after[], case_pf_ro_insn[], case_pf_ro_after[],
    case_gp_insn[], case_gp_after[];
unsigned long case_rsp;

/* What the handler saw. */
static volatile struct {
    unsigned int count;
    uint64_t vector, error_code, rip, cs, rflags, rsp, ss, cr2, rcx, r11;
    uint64_t frame_addr;        /* where Xen put the rip word */
} seen;
static unsigned long resume_rip;   /* 0: resume at the saved rip (+2 for #UD) */

static bool record_trap(struct trap_regs *r, uint64_t cr2)
{
    seen.count++;
    seen.vector = r->vector;
    seen.error_code = r->error_code;
    seen.rip = r->rip;
    seen.cs = r->cs;
    seen.rflags = r->rflags;
    seen.rsp = r->rsp;
    seen.ss = r->ss;
    seen.cr2 = cr2;
    seen.rcx = r->rcx;
    seen.r11 = r->r11;
    seen.frame_addr = (uint64_t)&r->rip;

    if (r->vector == X86_EXC_UD)
        r->rip += 2;              /* skip ud2 */
    else if (resume_rip)
        r->rip = resume_rip;      /* faults: skip the faulting instruction */
    /* #BP is a trap: the saved rip already points past int3. */
    return true;
}

struct trap_case {
    const char *name;
    unsigned long (*fn)(unsigned long);
    unsigned int vector;
    bool check_ec;
    uint64_t ec, ec_mask;
    const char *expect_rip, *after;
    bool skip_to_after;
    bool check_cr2;
    uint64_t cr2;
};

static void run_case(const struct trap_case *c, unsigned long arg)
{
    memset((void *)&seen, 0, sizeof(seen));
    resume_rip = c->skip_to_after ? (unsigned long)c->after : 0;

    unsigned long regs_diff = c->fn(arg);

    printk("%s: count=%u vector=%lu (%s) ec=%#lx rip=%p cs=%#lx rflags=%#lx rsp=%p ss=%#lx cr2=%#lx\n",
           c->name, seen.count, seen.vector, trap_name((unsigned int)seen.vector),
           seen.error_code, (void *)seen.rip, seen.cs, seen.rflags, (void *)seen.rsp,
           seen.ss, seen.cr2);

    check(seen.count == 1, "%s: handler ran once (%u)", c->name, seen.count);
    check(seen.vector == c->vector, "%s: vector %lu, expected %u", c->name, seen.vector, c->vector);
    if (c->check_ec)
        check((seen.error_code & c->ec_mask) == c->ec,
              "%s: error code %#lx (mask %#lx), expected %#lx", c->name,
              seen.error_code, c->ec_mask, c->ec);
    else
        check(seen.error_code == 0, "%s: no error code word (runtime slot = %#lx)",
              c->name, seen.error_code);
    check(seen.rip == (uint64_t)c->expect_rip, "%s: saved rip %p, expected %p",
          c->name, (void *)seen.rip, c->expect_rip);
    check((seen.cs & 0xffff) == FRAME_KERNEL_CS,
          "%s: saved cs %#lx, expected %#x (kernel mode, RPL cleared by Xen)",
          c->name, seen.cs & 0xffff, FRAME_KERNEL_CS);
    check(((seen.ss & 0xffff) | 3) == FLAT_KERNEL_SS, "%s: saved ss %#lx, expected %#x",
          c->name, seen.ss & 0xffff, FLAT_KERNEL_SS);
    check(seen.rsp == case_rsp, "%s: saved rsp %p, expected %p", c->name,
          (void *)seen.rsp, (void *)case_rsp);
    check((seen.rflags & X86_EFLAGS_FIXED) && !(seen.rflags & X86_EFLAGS_IF),
          "%s: saved rflags %#lx has bit 1 set and IF clear (events were masked)",
          c->name, seen.rflags);
    check(seen.rcx == MAGIC_RCX && seen.r11 == MAGIC_R11,
          "%s: frame rcx/r11 = %#lx/%#lx hold the interrupted values", c->name,
          seen.rcx, seen.r11);
    check(regs_diff == 0, "%s: rcx/r11 preserved across trap + iret (diff %#lx)",
          c->name, regs_diff);
    if (c->check_cr2)
        check(seen.cr2 == c->cr2, "%s: vcpu_info.arch.cr2 %#lx, expected %#lx", c->name,
              seen.cr2, c->cr2);
    unsigned long expect_frame = (case_rsp & ~15UL) - 40;
    if (seen.frame_addr != expect_frame)
        printk("  (info) %s: frame rip word at %p, Xen would use %p\n", c->name,
               (void *)seen.frame_addr, (void *)expect_frame);
    if ((seen.cs >> 32) & 0xff)
        printk("  (info) %s: saved upcall mask in cs bits 32-39 = %lu\n", c->name,
               (seen.cs >> 32) & 0xff);
}

void test_main(void)
{
    unsigned short cs, ss;
    asm volatile("mov %%cs, %0; mov %%ss, %1" : "=r"(cs), "=r"(ss));
    printk("traps: running with cs=%#x ss=%#x\n", cs, ss);
    /* Reading %cs/%ss shows the host's ring-3 selectors under KVM PVM
     * (0x33/0x2b), not Xen's 0xe033/0xe02b; both are ring 3. */
    check((cs & 3) == 3, "guest kernel runs with cs %#x (expected RPL 3)", cs);
    check((ss & 3) == 3, "guest kernel runs with ss %#x (expected RPL 3)", ss);

    if (traps_init())
        test_error("traps_init failed");
    printk("shared_info mapped at %p, upcall mask %u\n", (void *)shared_info,
           vcpu_info0->evtchn_upcall_mask);
    trap_hook = record_trap;

    /* A present but read-only page: the bootstrap L4 (its slot 0 is unused). */
    unsigned long ro_va = start_info->pt_base;

    const struct trap_case cases[] = {
        { "#UD ud2", case_ud, X86_EXC_UD, false, 0, 0,
          case_ud_insn, case_ud_after, false, false, 0 },
        { "#BP int3", case_bp, X86_EXC_BP, false, 0, 0,
          case_bp_after, case_bp_after, false, false, 0 },
        { "#DE div0", case_de, X86_EXC_DE, false, 0, 0,
          case_de_insn, case_de_after, true, false, 0 },
        /* Kernel-mode faults: Xen clears PFEC_USER (the guest kernel is
         * "supervisor" from the guest's point of view). */
        { "#PF read 0x1000", case_pf_read, X86_EXC_PF, true, 0,
          PFEC_PRESENT | PFEC_WRITE | PFEC_USER | PFEC_RSVD,
          case_pf_read_insn, case_pf_read_after, true, true, 0x1000 },
        { "#PF write 0x2000", case_pf_write, X86_EXC_PF, true, PFEC_WRITE,
          PFEC_PRESENT | PFEC_WRITE | PFEC_USER | PFEC_RSVD,
          case_pf_write_insn, case_pf_write_after, true, true, 0x2000 },
        { "#PF write read-only L4", case_pf_ro, X86_EXC_PF, true,
          PFEC_PRESENT | PFEC_WRITE, PFEC_PRESENT | PFEC_WRITE | PFEC_USER | PFEC_RSVD,
          case_pf_ro_insn, case_pf_ro_after, true, true, ro_va },
        { "#GP non-canonical", case_gp, X86_EXC_GP, true, 0, ~0UL,
          case_gp_insn, case_gp_after, true, false, 0 },
    };

    for (unsigned int i = 0; i < ARRAY_SIZE(cases); i++)
        run_case(&cases[i], ro_va);

    /* int3s=N: N more int3s, each taken once, past the int3 (tests/hv/
     * test_minios.py kicks the vCPU meanwhile, with TLB flushes owed) */
    unsigned long n = cmdline_get_ulong("int3s", 0), wrong = 0;
    memset((void *)&seen, 0, sizeof(seen));
    resume_rip = 0;
    for (unsigned long i = 0; i < n; i++) {
        if (case_bp(0) != 0 || seen.vector != X86_EXC_BP
            || seen.rip != (uint64_t)case_bp_after)
            wrong++;
    }
    check(seen.count == n && wrong == 0, "%lu more int3s: %u taken, %lu wrong", n,
          seen.count, wrong);

    trap_hook = NULL;
    check(vcpu_info0->evtchn_upcall_mask == 1,
          "event upcalls still masked after the iret hypercalls (mask %u)",
          vcpu_info0->evtchn_upcall_mask);
    test_finish();
}
