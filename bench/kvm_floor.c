/*
 * kvm_floor.c - KVM exit-cost floor and PVM behaviour probes for pyxen.
 *
 * Standalone (gcc, libc + kernel uapi headers only):
 *     gcc -O2 -Wall -o bench/out/kvm_floor bench/kvm_floor.c
 *
 * Usage:
 *     kvm_floor exit N          one line: exit_us=<us per out round trip>
 *     kvm_floor native N        native_ns_per_iter=...
 *     kvm_floor guestloop N     guest_ns_per_iter=...
 *     kvm_floor sregs_resume N  (a) resume-path costs (ioctl vs sync regs, cr3)
 *     kvm_floor syscall N       (b) syscall round trips
 *     kvm_floor trap N          (c) ud2 -> IDT -> VMM -> CPL3 round trips
 *     kvm_floor iretq           (d) iretq/sysretq/mov cr3 at CPL0 + CPL0 insn table
 *     kvm_floor int80           (e) int $0x80 with DPL0 / DPL3 gate
 *     kvm_floor pf              (f) #PF frame + shadow-paging staleness probes
 *     kvm_floor maxphyaddr      (g) guest physical address width, high memslot
 *     kvm_floor iflags [N]      (i) cli/sti/popf at CPL3 under IOPL 3 and 0: exit or not, IF seen
 *     kvm_floor cold N          (h) what an exit leaves cold in the host process: data pages
 *                               (a walk, a pointer chase), code lines (a jump chain; on 2 MiB
 *                               pages with KVM_FLOOR_HUGE=1), an indirect-branch dispatch
 *     kvm_floor all N           everything
 *
 * Every probe builds a fresh VM (one vCPU, 64-bit long mode, guest at CPL3,
 * IOPL=3, IF=1).  The GDT mirrors the Linux x86-64 layout so the guest user
 * selectors (0x33/0x2b) equal the host's (PVM loads guest selectors into the
 * real hardware).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>

/* ------------------------------------------------------------------ */
/* Guest physical / virtual layout (identity mapped, 4 KiB pages).     */
/* ------------------------------------------------------------------ */
#define MEM_SIZE    (4ull << 20)
#define PML4_A      0x1000ull
#define PDPT_A      0x2000ull
#define PD_A        0x3000ull
#define PT0         0x4000ull      /* maps 0..2M   */
#define PT1         0x5000ull      /* maps 2M..4M  */
#define PML4_B      0x6000ull      /* 2nd root for cr3-switch tests */
#define PDPT_B      0x7000ull
#define PD_B        0x8000ull
#define GDT_GPA     0x9000ull
#define TSS_GPA     0xA000ull
#define IDT_GPA     0xD000ull      /* TSS + 8K IO bitmap occupy 0xA000..0xC069 */
#define TSS_LIMIT   (0x68 + 8192)  /* 104-byte TSS + IO bitmap + 0xff */
#define UCODE       0x10000ull     /* user code                      */
#define KSTUBS      0x12000ull     /* 256 IDT stubs, 32 bytes each   */
#define KLSTAR      0x14000ull     /* LSTAR target                   */
#define KCODE       0x15000ull     /* misc CPL0 code                 */
#define USTACK_TOP  0x20000ull
#define KSTACK_TOP  0x30000ull     /* TSS.rsp0                       */
#define DATA        0x40000ull
#define RO_PAGE     0x41000ull     /* mapped present, U/S, read-only */
#define REMAP_VA    0x42000ull
#define PAGE_A      0x43000ull
#define PAGE_B      0x44000ull
#define REMAP_VA2   0x46000ull
#define PD_HI       0x50000ull     /* PD for the high-GPA memslot test */
#define HI_VA       0x40000000ull  /* PDPT[1] */

#define MAGIC_A     0xAAAA1111AAAA1111ull
#define MAGIC_B     0xBBBB2222BBBB2222ull

#define PTE_P   1ull
#define PTE_W   2ull
#define PTE_U   4ull
#define PTE_PS  0x80ull

/* Linux-compatible GDT layout */
#define SEL_KCODE32 0x08
#define SEL_KCODE   0x10
#define SEL_KDATA   0x18
#define SEL_UCODE32 0x23
#define SEL_UDATA   0x2b
#define SEL_UCODE   0x33
#define SEL_TSS     0x40

#define RFLAGS_USER 0x3202ull   /* IOPL=3, IF=1, bit1 */

#define MSR_STAR    0xc0000081
#define MSR_LSTAR   0xc0000082
#define MSR_CSTAR   0xc0000083
#define MSR_FMASK   0xc0000084

/* ------------------------------------------------------------------ */
/* Guest code blobs (assembled by gcc, copied into guest memory).      */
/* ------------------------------------------------------------------ */
#define BLOB(name, body)                                                  \
    asm(".pushsection .rodata.guest,\"a\"\n"                              \
        ".globl " #name "\n" #name ":\n" body "\n"                        \
        ".globl " #name "_end\n" #name "_end:\n"                          \
        ".popsection\n");                                                 \
    extern const uint8_t name[], name##_end[];

/* user (CPL3) code */
BLOB(g_outloop, "1: out %al, $0xf0\n jmp 1b")
BLOB(g_ab, "out %al, $0xf0\n ud2\n .globl g_ab_b\n g_ab_b: out %al, $0xf0\n ud2")
extern const uint8_t g_ab_b[];
BLOB(g_cpuloop, "1: imul %rbx, %rax\n add %rcx, %rax\n dec %rcx\n jnz 1b\n"
                " out %al, $0xf0\n ud2")
BLOB(g_sys_user, "1: syscall\n .globl g_sys_user_ret\n g_sys_user_ret: dec %r12\n jnz 1b\n"
                 " out %al, $0xf0\n jmp 1b")
extern const uint8_t g_sys_user_ret[];
BLOB(g_ud_user, "1: ud2\n dec %r12\n jnz 1b\n out %al, $0xf0\n jmp 1b")
BLOB(g_ud_check, "ud2\n out %al, $0xf4\n ud2")
BLOB(g_sys_check, "syscall\n out %al, $0xf4\n ud2")
BLOB(g_int80_user, "int $0x80\n .globl g_int80_after\n g_int80_after: out %al, $0xf4\n ud2")
extern const uint8_t g_int80_after[];
BLOB(g_pf_user, "movq $1, 0x41000\n out %al, $0xf4\n ud2")
BLOB(g_pte_user, "1: mov (%rsi), %rax\n out %al, $0xf0\n jmp 1b\n"
                 ".globl g_pte_user_sys\n g_pte_user_sys: int3\n jmp 1b\n"
                 ".globl g_pte_user_wr\n g_pte_user_wr: mov %rdx, (%rdi)\n jmp 1b\n"
                 ".globl g_pte_user_wr_inv\n g_pte_user_wr_inv: mov %rdx, (%rdi)\n int3\n jmp 1b")
extern const uint8_t g_pte_user_wr[], g_pte_user_wr_inv[];
BLOB(g_int80_check, "int $0x80\n out %al, $0xf4\n ud2")
BLOB(g_int3_loop, "1: int3\n .globl g_int3_loop_ret\n g_int3_loop_ret: dec %r12\n jnz 1b\n"
                  " out %al, $0xf0\n jmp 1b")
extern const uint8_t g_int3_loop_ret[];
BLOB(g_int3_check, "int3\n out %al, $0xf4\n ud2")
extern const uint8_t g_pte_user_sys[];
BLOB(g_hi_user, "mov (%rsi), %rax\n movq $0x5a5a5a5a, (%rsi)\n out %al, $0xf4\n ud2")

/* kernel (CPL0) code */
BLOB(k_out_f2, "out %al, $0xf2\n ud2")
BLOB(k_out_f3, "out %al, $0xf3\n ud2")
BLOB(k_sysret, "sysretq")
BLOB(k_out_sysret, "out %al, $0xf3\n sysretq")
BLOB(k_iret_skip, "addq $2, (%rsp)\n iretq")
BLOB(k_out_iret_skip, "out %al, $0xf3\n addq $2, (%rsp)\n iretq")
BLOB(k_out_cr3_iret, "out %al, $0xf3\n mov $0x6000, %eax\n mov %rax, %cr3\n"
                     " addq $2, (%rsp)\n iretq")
BLOB(k_jmp_rcx, "jmp *%rcx")
BLOB(k_out_jmp_rcx, "out %al, $0xf3\n jmp *%rcx")
BLOB(k_readcs, "mov %cs, %ebx\n mov %ss, %edx\n pushfq\n pop %rbp\n out %al, $0xf2\n ud2")
BLOB(k_iret, "iretq")
BLOB(k_out_iret, "out %al, $0xf3\n iretq")
/* from an IDT frame [rip cs rflags rsp ss] (ud2 at rip): return to CPL3 with sysretq */
BLOB(k_out_sysret_from_idt, "out %al, $0xf3\n mov (%rsp), %rcx\n add $2, %rcx\n"
                            " mov 16(%rsp), %r11\n mov 24(%rsp), %rsp\n sysretq")
BLOB(k_invlpg_iret, "invlpg (%rsi)\n iretq")
BLOB(k_reloadcr3_iret, "mov %cr3, %rax\n mov %rax, %cr3\n iretq")
BLOB(k_ptewrite_iret, "mov %rdx, (%rdi)\n iretq")
BLOB(k_ptewrite_invlpg_iret, "mov %rdx, (%rdi)\n invlpg (%rsi)\n iretq")
/* from a generic stub's frame [vec err rip cs rflags rsp ss]: retry the faulting insn */
BLOB(k_pop2_iret, "add $16, %rsp\n iretq")

/* CPL0 instruction table: each is followed by "out $0xf3; ud2" */
BLOB(c_swapgs, "swapgs\n swapgs")
BLOB(c_rdmsr, "mov $0xc0000080, %ecx\n rdmsr")
BLOB(c_wrmsr, "mov $0xc0000082, %ecx\n rdmsr\n wrmsr")
BLOB(c_clisti, "cli\n sti")
BLOB(c_pushfpopf, "pushfq\n popfq")
BLOB(c_rdcr3, "mov %cr3, %rax")
BLOB(c_wrcr3, "mov %cr3, %rax\n mov %rax, %cr3")
BLOB(c_rdcr0, "mov %cr0, %rax")
BLOB(c_wrcr4, "mov %cr4, %rax\n mov %rax, %cr4")
BLOB(c_invlpg, "invlpg (%rsp)")
BLOB(c_rdtsc, "rdtsc")
BLOB(c_cpuid, "xor %eax, %eax\n cpuid")
BLOB(c_lgdt, "sub $16, %rsp\n sgdt (%rsp)\n lgdt (%rsp)\n add $16, %rsp")
BLOB(c_lidt, "sub $16, %rsp\n sidt (%rsp)\n lidt (%rsp)\n add $16, %rsp")
BLOB(c_memrw, "mov $0x40000, %edi\n mov (%rdi), %rax\n mov %rax, 8(%rdi)")
BLOB(c_repmovsb, "mov $0x40000, %edi\n mov $0x40100, %esi\n mov $64, %ecx\n rep movsb")
BLOB(c_lockcmpxchg, "mov $0x40000, %edi\n xor %eax, %eax\n lock cmpxchg %rcx, (%rdi)")
BLOB(c_xchg, "mov $0x40000, %edi\n xchg %rax, (%rdi)")
BLOB(c_callret, "call 1f\n 1: pop %rax")
BLOB(c_movdqu, "mov $0x40000, %edi\n movdqu (%rdi), %xmm0\n movdqu %xmm0, 16(%rdi)")
BLOB(c_fxsave, "mov $0x40000, %edi\n fxsave (%rdi)\n fxrstor (%rdi)")
BLOB(c_movss, "mov %ss, %eax\n mov %eax, %ds")
BLOB(c_hlt, "hlt")
BLOB(c_ud2, "ud2")
BLOB(c_wpfault, "movq $1, 0x41000")
BLOB(c_out_tail, "mov %cs, %ebx\n out %al, $0xf3\n ud2")

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */
static int g_kvm = -1;
static int g_verbose = 0;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fatal: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (errno=%d %s)\n", errno, strerror(errno));
    va_end(ap);
    exit(2);
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

struct vm {
    int fd, vcpu;
    struct kvm_run *run;
    size_t run_size;
    uint8_t *mem;
    struct kvm_sregs su;   /* CPL3 sregs as set up at creation */
    struct kvm_sregs sk;   /* same with CPL0 CS/SS             */
    struct kvm_regs r0;    /* initial regs                     */
    uint8_t *hi_mem;       /* optional high memslot            */
    size_t hi_size;
};

#define XIOCTL(fd, req, arg) xioctl((fd), (req), (arg), #req)
static int xioctl(int fd, unsigned long req, void *arg, const char *name)
{
    int r;
    do {
        r = ioctl(fd, req, arg);
    } while (r < 0 && (errno == EINTR || errno == EAGAIN) && req != KVM_RUN);
    if (r < 0) {
        fprintf(stderr, "ioctl %s failed: %s\n", name, strerror(errno));
    }
    return r;
}
#define CHK(fd, req, arg) do { if (XIOCTL(fd, req, arg) < 0) die("%s", #req); } while (0)

static const char *exit_name(unsigned r)
{
    switch (r) {
    case KVM_EXIT_UNKNOWN: return "UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "EXCEPTION";
    case KVM_EXIT_IO: return "IO";
    case KVM_EXIT_HYPERCALL: return "HYPERCALL";
    case KVM_EXIT_DEBUG: return "DEBUG";
    case KVM_EXIT_HLT: return "HLT";
    case KVM_EXIT_MMIO: return "MMIO";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "IRQ_WINDOW_OPEN";
    case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
    case KVM_EXIT_INTR: return "INTR";
    case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "SYSTEM_EVENT";
    case KVM_EXIT_X86_RDMSR: return "X86_RDMSR";
    case KVM_EXIT_X86_WRMSR: return "X86_WRMSR";
    default: return "?";
    }
}

static const char *suberror_name(unsigned s)
{
    switch (s) {
    case KVM_INTERNAL_ERROR_EMULATION: return "EMULATION";
    case KVM_INTERNAL_ERROR_SIMUL_EX: return "SIMUL_EX";
    case KVM_INTERNAL_ERROR_DELIVERY_EV: return "DELIVERY_EV";
    case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: return "UNEXPECTED_EXIT_REASON";
    default: return "?";
    }
}

/* Short description of the last exit, into buf. */
static char *exit_desc(struct vm *v, char *buf, size_t n)
{
    struct kvm_run *run = v->run;
    int o = snprintf(buf, n, "exit=%s(%u)", exit_name(run->exit_reason), run->exit_reason);
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        o += snprintf(buf + o, n - o, " port=0x%x dir=%s size=%u", run->io.port,
                      run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in", run->io.size);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        o += snprintf(buf + o, n - o, " suberror=%s(%u) ndata=%u data=",
                      suberror_name(run->internal.suberror), run->internal.suberror,
                      run->internal.ndata);
        for (unsigned i = 0; i < run->internal.ndata && i < 16; i++)
            o += snprintf(buf + o, n - o, "%s0x%llx", i ? "," : "",
                          (unsigned long long)run->internal.data[i]);
        break;
    case KVM_EXIT_FAIL_ENTRY:
        o += snprintf(buf + o, n - o, " hw_reason=0x%llx",
                      (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        break;
    case KVM_EXIT_MMIO:
        o += snprintf(buf + o, n - o, " gpa=0x%llx write=%u",
                      (unsigned long long)run->mmio.phys_addr, run->mmio.is_write);
        break;
    case KVM_EXIT_EXCEPTION:
        o += snprintf(buf + o, n - o, " vector=%u err=0x%x", run->ex.exception, run->ex.error_code);
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        o += snprintf(buf + o, n - o, " type=%u", run->system_event.type);
        break;
    default:
        break;
    }
    return buf;
}

/* Dump an unexpected exit with full context to stderr. */
static void dump_exit(struct vm *v, const char *ctx)
{
    char b[512];
    struct kvm_regs r;
    struct kvm_sregs s;
    fprintf(stderr, "[%s] unexpected %s\n", ctx, exit_desc(v, b, sizeof b));
    if (ioctl(v->vcpu, KVM_GET_REGS, &r) == 0)
        fprintf(stderr, "  rip=0x%llx rsp=0x%llx rflags=0x%llx rax=0x%llx rcx=0x%llx r11=0x%llx\n",
                r.rip, r.rsp, r.rflags, r.rax, r.rcx, r.r11);
    if (ioctl(v->vcpu, KVM_GET_SREGS, &s) == 0)
        fprintf(stderr, "  cs=0x%x(dpl%u,l%u) ss=0x%x cr0=0x%llx cr2=0x%llx cr3=0x%llx cr4=0x%llx efer=0x%llx\n",
                s.cs.selector, s.cs.dpl, s.cs.l, s.ss.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
    /* If the guest went through an IDT stub, show the frame. */
    if (v->run->exit_reason == KVM_EXIT_IO && v->run->io.port == 0xf1 &&
        r.rsp + 56 <= MEM_SIZE) {
        uint64_t *f = (uint64_t *)(v->mem + r.rsp);
        fprintf(stderr, "  trap frame: vec=%llu err=0x%llx rip=0x%llx cs=0x%llx rflags=0x%llx rsp=0x%llx ss=0x%llx\n",
                (unsigned long long)f[0], (unsigned long long)f[1], (unsigned long long)f[2],
                (unsigned long long)f[3], (unsigned long long)f[4], (unsigned long long)f[5],
                (unsigned long long)f[6]);
    }
}

/* KVM_RUN once; returns 0 on a KVM exit, -1 on ioctl error. */
static int vrun(struct vm *v)
{
    for (;;) {
        int r = ioctl(v->vcpu, KVM_RUN, 0);
        if (r == 0)
            return 0;
        if (errno == EINTR || errno == EAGAIN)
            continue;
        fprintf(stderr, "KVM_RUN: %s\n", strerror(errno));
        return -1;
    }
}

static int is_out(struct vm *v, int port)
{
    return v->run->exit_reason == KVM_EXIT_IO && v->run->io.direction == KVM_EXIT_IO_OUT &&
           v->run->io.port == port;
}

/* Run; expect an OUT to port. Dumps and returns -1 otherwise. */
static int expect_out(struct vm *v, int port, const char *ctx)
{
    if (vrun(v) < 0)
        return -1;
    if (is_out(v, port))
        return 0;
    dump_exit(v, ctx);
    return -1;
}

static void put_blob(struct vm *v, uint64_t gpa, const uint8_t *b, const uint8_t *e)
{
    memcpy(v->mem + gpa, b, (size_t)(e - b));
}

static uint64_t *q(struct vm *v, uint64_t gpa) { return (uint64_t *)(v->mem + gpa); }

static struct kvm_segment seg(uint16_t sel, int code, int dpl, int l)
{
    struct kvm_segment s = {0};
    s.base = 0;
    s.limit = 0xffffffff;
    s.selector = sel;
    s.type = code ? 11 : 3;
    s.present = 1;
    s.dpl = dpl;
    s.db = code ? !l : 1;
    s.s = 1;
    s.l = l;
    s.g = 1;
    return s;
}

static int has_errcode(int v)
{
    return v == 8 || v == 10 || v == 11 || v == 12 || v == 13 || v == 14 || v == 17 ||
           v == 21 || v == 29 || v == 30;
}

static void set_gate(struct vm *v, int vec, uint64_t target, int dpl)
{
    uint8_t *g = v->mem + IDT_GPA + vec * 16;
    memset(g, 0, 16);
    g[0] = target & 0xff;
    g[1] = (target >> 8) & 0xff;
    g[2] = SEL_KCODE;
    g[3] = 0;
    g[4] = 0;                        /* IST */
    g[5] = 0x8e | (dpl << 5);        /* present, 64-bit interrupt gate */
    g[6] = (target >> 16) & 0xff;
    g[7] = (target >> 24) & 0xff;
    *(uint32_t *)(g + 8) = (uint32_t)(target >> 32);
}

/* Generic IDT stub for vector vec: uniform frame [vec, err, rip, cs, rflags, rsp, ss]. */
static void write_generic_stub(struct vm *v, int vec)
{
    uint8_t *p = v->mem + KSTUBS + vec * 32;
    int i = 0;
    if (!has_errcode(vec)) { p[i++] = 0x6a; p[i++] = 0x00; }              /* push $0 */
    if (vec < 128) { p[i++] = 0x6a; p[i++] = (uint8_t)vec; }             /* push $vec */
    else { p[i++] = 0x68; memcpy(p + i, &(uint32_t){vec}, 4); i += 4; }
    p[i++] = 0xe6; p[i++] = 0xf1;                                        /* out %al,$0xf1 */
    p[i++] = 0x0f; p[i++] = 0x0b;                                        /* ud2 */
}

static size_t g_run_size;

static void kvm_global_init(void)
{
    if (g_kvm >= 0)
        return;
    g_kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (g_kvm < 0)
        die("open /dev/kvm");
    int ver = ioctl(g_kvm, KVM_GET_API_VERSION, 0);
    if (ver != KVM_API_VERSION)
        die("KVM API version %d", ver);
    int sz = ioctl(g_kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sz <= 0)
        die("KVM_GET_VCPU_MMAP_SIZE");
    g_run_size = sz;
}

static struct kvm_cpuid2 *get_supported_cpuid(void)
{
    int n = 64;
    for (;;) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
        c->nent = n;
        if (ioctl(g_kvm, KVM_GET_SUPPORTED_CPUID, c) == 0)
            return c;
        free(c);
        if (errno != E2BIG)
            die("KVM_GET_SUPPORTED_CPUID");
        n *= 2;
    }
}

static void set_msrs(struct vm *v, int n, const uint32_t *idx, const uint64_t *val)
{
    struct { struct kvm_msrs h; struct kvm_msr_entry e[8]; } m;
    memset(&m, 0, sizeof m);
    m.h.nmsrs = n;
    for (int i = 0; i < n; i++) {
        m.e[i].index = idx[i];
        m.e[i].data = val[i];
    }
    int r = ioctl(v->vcpu, KVM_SET_MSRS, &m);
    if (r != n)
        die("KVM_SET_MSRS set %d of %d", r, n);
}

static void vm_create(struct vm *v)
{
    kvm_global_init();
    memset(v, 0, sizeof *v);
    v->fd = ioctl(g_kvm, KVM_CREATE_VM, 0);
    if (v->fd < 0)
        die("KVM_CREATE_VM");
    v->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (v->mem == MAP_FAILED)
        die("mmap guest memory");
    struct kvm_userspace_memory_region reg = {
        .slot = 0, .flags = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
        .userspace_addr = (uint64_t)v->mem,
    };
    CHK(v->fd, KVM_SET_USER_MEMORY_REGION, &reg);
    v->vcpu = ioctl(v->fd, KVM_CREATE_VCPU, 0);
    if (v->vcpu < 0)
        die("KVM_CREATE_VCPU");
    v->run_size = g_run_size;
    v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
    if (v->run == MAP_FAILED)
        die("mmap kvm_run");

    static struct kvm_cpuid2 *cpuid;
    if (!cpuid)
        cpuid = get_supported_cpuid();
    CHK(v->vcpu, KVM_SET_CPUID2, cpuid);

    /* --- page tables: root A and root B share PT0/PT1 --- */
    *q(v, PML4_A) = PDPT_A | PTE_P | PTE_W | PTE_U;
    *q(v, PDPT_A) = PD_A | PTE_P | PTE_W | PTE_U;
    *q(v, PD_A) = PT0 | PTE_P | PTE_W | PTE_U;
    *q(v, PD_A + 8) = PT1 | PTE_P | PTE_W | PTE_U;
    *q(v, PML4_B) = PDPT_B | PTE_P | PTE_W | PTE_U;
    *q(v, PDPT_B) = PD_B | PTE_P | PTE_W | PTE_U;
    *q(v, PD_B) = PT0 | PTE_P | PTE_W | PTE_U;
    *q(v, PD_B + 8) = PT1 | PTE_P | PTE_W | PTE_U;
    for (uint64_t i = 1; i < 512; i++)          /* page 0 left unmapped */
        *q(v, PT0 + i * 8) = (i << 12) | PTE_P | PTE_W | PTE_U;
    for (uint64_t i = 0; i < 512; i++)
        *q(v, PT1 + i * 8) = ((2ull << 20) + (i << 12)) | PTE_P | PTE_W | PTE_U;
    *q(v, PT0 + (RO_PAGE >> 12) * 8) = RO_PAGE | PTE_P | PTE_U;
    *q(v, PT0 + (REMAP_VA >> 12) * 8) = PAGE_A | PTE_P | PTE_W | PTE_U;
    *q(v, PT0 + (REMAP_VA2 >> 12) * 8) = PAGE_A | PTE_P | PTE_W | PTE_U;
    *q(v, PAGE_A) = MAGIC_A;
    *q(v, PAGE_B) = MAGIC_B;

    /* --- GDT (Linux layout) --- */
    uint64_t *gdt = q(v, GDT_GPA);
    gdt[1] = 0x00cf9b000000ffffull;  /* 0x08 kernel code32 */
    gdt[2] = 0x00af9b000000ffffull;  /* 0x10 kernel code64 */
    gdt[3] = 0x00cf93000000ffffull;  /* 0x18 kernel data   */
    gdt[4] = 0x00cffb000000ffffull;  /* 0x20 user code32   */
    gdt[5] = 0x00cff3000000ffffull;  /* 0x28 user data     */
    gdt[6] = 0x00affb000000ffffull;  /* 0x30 user code64   */
    uint64_t tb = TSS_GPA, tl = TSS_LIMIT;
    gdt[8] = (tl & 0xffff) | ((tb & 0xffffff) << 16) | (0x89ull << 40) |
             (((tl >> 16) & 0xf) << 48) | (((tb >> 24) & 0xff) << 56);
    gdt[9] = tb >> 32;

    /* --- TSS: rsp0, no IO bitmap --- */
    uint8_t *tss = v->mem + TSS_GPA;
    uint64_t rsp0 = KSTACK_TOP;
    memcpy(tss + 4, &rsp0, 8);
    uint16_t iomap = 0x68;
    memcpy(tss + 102, &iomap, 2);
    /* I/O permission bitmap: all ports allowed (bits 0) + terminating 0xff byte.
     * Needed on PVM: the hardware runs the guest with IOPL=0 whatever RFLAGS says
     * (guest pushf reads 0x202), so CPL3 "out" #GPs and the emulator then checks
     * the TSS bitmap. */
    memset(tss + 0x68, 0, 8192);
    tss[0x68 + 8192] = 0xff;

    /* --- IDT: generic stubs for all 256 vectors, DPL0 gates --- */
    for (int i = 0; i < 256; i++) {
        write_generic_stub(v, i);
        set_gate(v, i, KSTUBS + i * 32, 0);
    }

    /* --- sregs --- */
    struct kvm_sregs s;
    CHK(v->vcpu, KVM_GET_SREGS, &s);
    s.cr0 = 0x80050033;      /* PG WP NE ET MP PE */
    s.cr4 = 0x620;           /* OSXMMEXCPT OSFXSR PAE */
    s.efer = 0xd01;          /* NXE LMA LME SCE */
    s.cr3 = PML4_A;
    s.cs = seg(SEL_UCODE, 1, 3, 1);
    s.ss = seg(SEL_UDATA, 0, 3, 0);
    s.ds = s.es = s.ss;
    s.fs = s.gs = seg(0, 0, 3, 0);
    s.fs.present = s.gs.present = 0;
    s.fs.unusable = s.gs.unusable = 1;
    s.tr = (struct kvm_segment){.base = TSS_GPA, .limit = TSS_LIMIT, .selector = SEL_TSS,
                                .type = 11, .present = 1};
    s.ldt = (struct kvm_segment){.type = 2, .unusable = 1};
    s.gdt.base = GDT_GPA;
    s.gdt.limit = 10 * 8 - 1;
    s.idt.base = IDT_GPA;
    s.idt.limit = 256 * 16 - 1;
    CHK(v->vcpu, KVM_SET_SREGS, &s);
    v->su = s;
    v->sk = s;
    v->sk.cs = seg(SEL_KCODE, 1, 0, 1);
    v->sk.ss = seg(SEL_KDATA, 0, 0, 0);

    /* --- syscall MSRs --- */
    uint32_t mi[] = {MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_FMASK};
    uint64_t mv[] = {((uint64_t)0x20 << 48) | ((uint64_t)SEL_KCODE << 32), KLSTAR, KLSTAR, 0x4700};
    set_msrs(v, 4, mi, mv);

    /* --- regs --- */
    struct kvm_regs r;
    memset(&r, 0, sizeof r);
    r.rip = UCODE;
    r.rsp = USTACK_TOP;
    r.rflags = RFLAGS_USER;
    CHK(v->vcpu, KVM_SET_REGS, &r);
    v->r0 = r;

    put_blob(v, KLSTAR, k_out_f2, k_out_f2_end);
}

static void vm_destroy(struct vm *v)
{
    munmap(v->run, v->run_size);
    close(v->vcpu);
    close(v->fd);
    munmap(v->mem, MEM_SIZE);
    if (v->hi_mem)
        munmap(v->hi_mem, v->hi_size);
    memset(v, 0, sizeof *v);
}


/* ------------------------------------------------------------------ */
/* Statistics                                                          */
/* ------------------------------------------------------------------ */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *key, uint64_t total_ns, uint64_t *lat, long n, double per)
{
    qsort(lat, n, sizeof *lat, cmp_u64);
    printf("%s=%.2f p50=%.2f p99=%.2f min=%.2f n=%ld\n", key, total_ns / 1e3 / n / per,
           lat[n / 2] / 1e3 / per, lat[(long)(n * 0.99)] / 1e3 / per, lat[0] / 1e3 / per, n);
    fflush(stdout);
}

/* step(v, ctx) performs one complete iteration (KVM_RUN + userspace work). */
typedef int (*step_fn)(struct vm *v, void *ctx);

static int bench_steps(struct vm *v, const char *key, long n, step_fn step, void *ctx, double per)
{
    long warm = n / 10 < 1000 ? (n < 1000 ? n : 1000) : n / 10;
    for (long i = 0; i < warm; i++)
        if (step(v, ctx) < 0) {
            printf("%s=FAIL (warm-up iteration %ld)\n", key, i);
            fflush(stdout);
            return -1;
        }
    uint64_t *lat = malloc(n * sizeof *lat);
    uint64_t t0 = now_ns(), prev = t0;
    for (long i = 0; i < n; i++) {
        if (step(v, ctx) < 0) {
            printf("%s=FAIL (iteration %ld)\n", key, i);
            fflush(stdout);
            free(lat);
            return -1;
        }
        uint64_t t = now_ns();
        lat[i] = t - prev;
        prev = t;
    }
    report(key, prev - t0, lat, n, per);
    free(lat);
    return 0;
}

/* ------------------------------------------------------------------ */
/* 1. floor: exit / native / guestloop                                 */
/* ------------------------------------------------------------------ */
static int step_plain(struct vm *v, void *ctx)
{
    (void)ctx;
    return expect_out(v, 0xf0, "exit");
}

static int cmd_exit(long n, int quiet)
{
    struct vm v;
    vm_create(&v);
    put_blob(&v, UCODE, g_outloop, g_outloop_end);
    long warm = n / 10 < 1000 ? 1000 : n / 10;
    for (long i = 0; i < warm; i++)
        if (step_plain(&v, NULL) < 0)
            return 1;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        if (step_plain(&v, NULL) < 0)
            return 1;
    uint64_t t = now_ns() - t0;
    printf("exit_us=%.3f\n", t / 1e3 / n);
    (void)quiet;
    vm_destroy(&v);
    return 0;
}

/* (h) what one exit leaves of the host process's TLB and caches: after each
 * exit, read one word from each of P pages of a buffer (P = 0,16,64,256,1024)
 * and time that walk; then walk them again with no exit between.  The extra
 * time of the first walk is what the world switch costs whatever code runs
 * after it (Python's interpreter touches hundreds of pages per exit). */
static int cmd_cold(long n)
{
    struct vm v;
    vm_create(&v);
    put_blob(&v, UCODE, g_outloop, g_outloop_end);
    size_t bsz = 1024 * 4096 + 4096;
    volatile uint8_t *buf = mmap(NULL, bsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < bsz; i += 64)
        buf[i] = 1;
    static const int ps[] = {0, 16, 64, 256, 1024};
    /* code: a chain of jumps through P pages (instruction TLB and cache) */
    uint8_t *code = mmap(NULL, bsz, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (getenv("KVM_FLOOR_HUGE")) {
        /* the same code on 2 MiB pages (THP) */
        uint8_t *raw = mmap(NULL, 8u << 20, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        code = (uint8_t *)(((uintptr_t)raw + (2u << 20) - 1) & ~(uintptr_t)((2u << 20) - 1));
        madvise(code, 4u << 20, MADV_HUGEPAGE);
        memset(code, 0xcc, 4u << 20);
    }
    /* branches: a 4096-step walk through an indirect-jump table driven by a pseudo-random byte
     * string (an interpreter's dispatch: the branch predictor's history) */
    static uint8_t ops[4096];
    for (int i = 0; i < 4096; i++)
        ops[i] = (uint8_t)((i * 2654435761u) >> 13) & 15;
    printf("# pages touched after an exit: ns for the walk right after the exit vs the same walk again\n");
    for (unsigned k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        int p = ps[k];
        uint64_t after = 0, again = 0, runs = 0;
        for (long i = 0; i < n; i++) {
            uint64_t t0 = now_ns();
            if (step_plain(&v, NULL) < 0)
                return 1;
            uint64_t t1 = now_ns();
            unsigned s = 0;
            for (int j = 0; j < p; j++)
                s += buf[(size_t)j * 4096 + (j % 64) * 64];
            uint64_t t2 = now_ns();
            for (int j = 0; j < p; j++)
                s += buf[(size_t)j * 4096 + (j % 64) * 64];
            uint64_t t3 = now_ns();
            (void)s;
            runs += t1 - t0; after += t2 - t1; again += t3 - t2;
        }
        printf("cold pages=%d exit_us=%.2f walk_after_exit_ns=%.0f walk_again_ns=%.0f per_page_extra_ns=%.1f\n",
               p, runs / 1e3 / n, (double)after / n, (double)again / n,
               p ? ((double)after - again) / n / p : 0.0);
    }
    /* data, dependent loads: a pointer chase through P pages (one line each), so
     * the misses cannot overlap as the walk's do */
    for (unsigned k = 1; k < sizeof ps / sizeof ps[0]; k++) {
        int p = ps[k];
        for (int j = 0; j < p; j++) {
            size_t at = (size_t)j * 4096 + (j % 64) * 64;
            size_t nx = (size_t)((j + 1) % p) * 4096 + (((j + 1) % p) % 64) * 64;
            *(volatile uint64_t *)(buf + at) = (uint64_t)(uintptr_t)(buf + nx);
        }
        uint64_t after = 0, again = 0;
        for (long i = 0; i < n; i++) {
            if (step_plain(&v, NULL) < 0)
                return 1;
            uint64_t t1 = now_ns();
            volatile uint8_t *q = buf;
            for (int j = 0; j < p; j++)
                q = (volatile uint8_t *)(uintptr_t)*(volatile uint64_t *)q;
            uint64_t t2 = now_ns();
            for (int j = 0; j < p; j++)
                q = (volatile uint8_t *)(uintptr_t)*(volatile uint64_t *)q;
            uint64_t t3 = now_ns();
            after += t2 - t1; again += t3 - t2;
        }
        printf("cold chase_pages=%d chase_after_exit_ns=%.0f chase_again_ns=%.0f per_page_extra_ns=%.1f\n",
               p, (double)after / n, (double)again / n, ((double)after - again) / n / p);
    }
    static const int cps[] = {16, 64, 256, 1024};
    for (unsigned k = 0; k < sizeof cps / sizeof cps[0]; k++) {
        int p = cps[k];
        for (int j = 0; j < p; j++) {
            uint8_t *at = code + (size_t)j * 4096 + (j % 64) * 64;
            if (j == p - 1) { at[0] = 0xc3; break; }
            uint8_t *nx = code + (size_t)(j + 1) * 4096 + ((j + 1) % 64) * 64;
            int32_t rel = (int32_t)(nx - (at + 5));
            at[0] = 0xe9; memcpy(at + 1, &rel, 4);
        }
        void (*fn)(void) = (void (*)(void))code;
        uint64_t after = 0, again = 0;
        for (long i = 0; i < n; i++) {
            if (step_plain(&v, NULL) < 0)
                return 1;
            uint64_t t1 = now_ns();
            fn();
            uint64_t t2 = now_ns();
            fn();
            uint64_t t3 = now_ns();
            after += t2 - t1; again += t3 - t2;
        }
        printf("cold code_pages=%d run_after_exit_ns=%.0f run_again_ns=%.0f per_page_extra_ns=%.1f\n",
               p, (double)after / n, (double)again / n, ((double)after - again) / n / p);
    }
    {
        uint64_t after = 0, again = 0;
        for (long i = 0; i < n; i++) {
            if (step_plain(&v, NULL) < 0)
                return 1;
            uint64_t ts[3];
            for (int r = 0; r < 2; r++) {
                ts[r] = now_ns();
                static void *tab[16] = {&&o0, &&o1, &&o2, &&o3, &&o4, &&o5, &&o6, &&o7,
                                        &&o8, &&o9, &&o10, &&o11, &&o12, &&o13, &&o14, &&o15};
                volatile unsigned acc = 0;
                int pc = 0;
#define NEXT() do { if (++pc == 4096) goto done; goto *tab[ops[pc]]; } while (0)
                goto *tab[ops[0]];
                o0: acc += 1; NEXT(); o1: acc ^= 3; NEXT(); o2: acc += 7; NEXT(); o3: acc -= 2; NEXT();
                o4: acc += 5; NEXT(); o5: acc ^= 9; NEXT(); o6: acc += 11; NEXT(); o7: acc -= 13; NEXT();
                o8: acc += 17; NEXT(); o9: acc ^= 19; NEXT(); o10: acc += 23; NEXT(); o11: acc -= 29; NEXT();
                o12: acc += 31; NEXT(); o13: acc ^= 37; NEXT(); o14: acc += 41; NEXT(); o15: acc -= 43; NEXT();
#undef NEXT
            done:
                (void)acc;
            }
            ts[2] = now_ns();
            after += ts[1] - ts[0]; again += ts[2] - ts[1];
        }
        printf("cold dispatch_4096_after_exit_ns=%.0f again_ns=%.0f\n", (double)after / n, (double)again / n);
    }
    vm_destroy(&v);
    return 0;
}

/* (i) cli/sti/popf at CPL3 with IOPL 3 and IOPL 0: which exit (none, #GP
 * through the IDT stub), and what RFLAGS.IF the guest and the VMM see. */
BLOB(g_iflags, "cli\n pushfq\n pop %rbx\n out %al, $0xf0\n"
               " sti\n pushfq\n pop %rbx\n out %al, $0xf0\n"
               " pushq $0x3002\n popfq\n pushfq\n pop %rbx\n out %al, $0xf0\n"
               " pushq $0x3202\n popfq\n pushfq\n pop %rbx\n out %al, $0xf0\n"
               "1: cli\n sti\n dec %r12\n jnz 1b\n out %al, $0xf0\n ud2")
static int cmd_iflags(long n)
{
    static const char *what[] = {"cli", "sti", "popf IF=0", "popf IF=1"};
    for (int iopl = 3; iopl >= 0; iopl -= 3) {
        struct vm v;
        vm_create(&v);
        for (int i = 0; i < 256; i++)
            write_generic_stub(&v, i);
        put_blob(&v, UCODE, g_iflags, g_iflags_end);
        struct kvm_regs r;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        r.rflags = ((uint64_t)iopl << 12) | 0x202;
        r.r12 = n;
        CHK(v.vcpu, KVM_SET_REGS, &r);
        for (int k = 0; k < 4; k++) {
            if (vrun(&v) < 0)
                return 1;
            CHK(v.vcpu, KVM_GET_REGS, &r);
            if (is_out(&v, 0xf0)) {
                printf("iflags iopl=%d %-9s no exit: guest pushf IF=%d, VMM rflags=%#llx\n", iopl, what[k],
                       (int)((r.rbx >> 9) & 1), r.rflags);
                continue;
            }
            if (is_out(&v, 0xf1)) {
                uint64_t *f = q(&v, r.rsp);
                printf("iflags iopl=%d %-9s trap vector %llu at rip %#llx\n", iopl, what[k],
                       (unsigned long long)f[0], (unsigned long long)f[2]);
            } else {
                dump_exit(&v, "iflags");
            }
            vm_destroy(&v);
            goto next;
        }
        {
            uint64_t t0 = now_ns();
            if (expect_out(&v, 0xf0, "iflags loop") < 0)
                return 1;
            printf("iflags iopl=%d cli+sti in the guest, no exit: %.3f us per pair\n", iopl,
                   (now_ns() - t0) / 1e3 / n);
        }
        vm_destroy(&v);
    next:;
    }
    return 0;
}

#define LOOP_MUL 0x9E3779B97F4A7C15ull

static uint64_t native_loop(uint64_t n)
{
    uint64_t a = 1, b = LOOP_MUL, c = n;
    asm volatile("1: imul %[b], %[a]\n add %[c], %[a]\n dec %[c]\n jnz 1b"
                 : [a] "+r"(a), [c] "+r"(c) : [b] "r"(b) : "cc");
    return a;
}

static int cmd_native(long n)
{
    native_loop(n / 10 + 1);
    uint64_t t0 = now_ns();
    uint64_t r = native_loop(n);
    uint64_t t = now_ns() - t0;
    printf("native_ns_per_iter=%.4f\n", (double)t / n);
    if (g_verbose)
        fprintf(stderr, "native result 0x%llx\n", (unsigned long long)r);
    return 0;
}

static int cmd_guestloop(long n)
{
    struct vm v;
    vm_create(&v);
    put_blob(&v, UCODE, g_cpuloop, g_cpuloop_end);
    uint64_t best = ~0ull;
    uint64_t res = 0;
    for (int rep = 0; rep < 3; rep++) {   /* first rep doubles as warm-up */
        struct kvm_regs r = v.r0;
        r.rip = UCODE;
        r.rax = 1;
        r.rbx = LOOP_MUL;
        r.rcx = n;
        CHK(v.vcpu, KVM_SET_REGS, &r);
        uint64_t t0 = now_ns();
        if (expect_out(&v, 0xf0, "guestloop") < 0)
            return 1;
        uint64_t t = now_ns() - t0;
        if (t < best)
            best = t;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        res = r.rax;
    }
    if (res != native_loop(n))
        fprintf(stderr, "warning: guest loop result mismatch\n");
    printf("guest_ns_per_iter=%.4f\n", (double)best / n);
    vm_destroy(&v);
    return 0;
}

/* ------------------------------------------------------------------ */
/* 2a. sregs_resume                                                    */
/* ------------------------------------------------------------------ */
enum rmode {
    R_PLAIN, R_GETREGS, R_SETREGS, R_GETSETREGS, R_SETREGS_SREGS, R_GETSET_ALL,
    R_SYNC_REGS, R_SYNC_ALL, R_SYNC_ALL_SETSREGS_IOCTL, R_CR3_SREGS, R_CR3_SYNC,
    R_COMPLETE_SETREGS, R_BOUNCE_SREGS, R_BOUNCE_SYNC, R_BOUNCE_CR3_SREGS, R_BOUNCE_CR3_SYNC,
};

struct rctx {
    enum rmode mode;
    int toggle;
    long iter;
    int rip_off;                 /* exit rip - out address (0 or 2) */
    struct kvm_regs regs;
    struct kvm_sregs su, sk;
};

static int check_rip(struct rctx *c, uint64_t rip, uint64_t expect_insn, const char *ctx)
{
    if (rip != expect_insn + c->rip_off) {
        fprintf(stderr, "[%s] exit rip 0x%llx, expected 0x%llx (+%d)\n", ctx,
                (unsigned long long)rip, (unsigned long long)expect_insn, c->rip_off);
        return -1;
    }
    return 0;
}

static int step_resume(struct vm *v, void *vc)
{
    struct rctx *c = vc;
    const uint64_t A = UCODE, B = UCODE + (g_ab_b - g_ab);
    uint64_t cur = c->toggle ? B : A;       /* where the guest should be now */
    uint64_t next = c->toggle ? A : B;
    uint64_t cr3n = c->toggle ? PML4_A : PML4_B;
    struct kvm_run *run = v->run;

    switch (c->mode) {
    case R_BOUNCE_SREGS:
    case R_BOUNCE_SYNC:
    case R_BOUNCE_CR3_SREGS:
    case R_BOUNCE_CR3_SYNC: {
        int sync = c->mode == R_BOUNCE_SYNC || c->mode == R_BOUNCE_CR3_SYNC;
        int cr3 = c->mode == R_BOUNCE_CR3_SREGS || c->mode == R_BOUNCE_CR3_SYNC;
        /* user exit at A -> VMM sends guest to CPL0 stub at KCODE -> exit -> back to A at CPL3 */
        if (expect_out(v, 0xf0, "bounce-user") < 0)
            return -1;
        if (sync) {
            if (check_rip(c, run->s.regs.regs.rip, A, "bounce-user") < 0)
                return -1;
            if (run->s.regs.sregs.cs.dpl != 3) {
                fprintf(stderr, "[bounce] expected CPL3 at user exit\n");
                return -1;
            }
            run->s.regs.regs.rip = KCODE;
            run->s.regs.regs.rsp = KSTACK_TOP;
            run->s.regs.sregs.cs = c->sk.cs;
            run->s.regs.sregs.ss = c->sk.ss;
            if (cr3)
                run->s.regs.sregs.cr3 = PML4_B;
            run->kvm_dirty_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
        } else {
            c->regs.rip = KCODE;
            c->regs.rsp = KSTACK_TOP;
            CHK(v->vcpu, KVM_SET_REGS, &c->regs);
            c->sk.cr3 = cr3 ? PML4_B : PML4_A;
            CHK(v->vcpu, KVM_SET_SREGS, &c->sk);
        }
        if (expect_out(v, 0xf3, "bounce-kernel") < 0)
            return -1;
        if (sync) {
            if (check_rip(c, run->s.regs.regs.rip, KCODE, "bounce-kernel") < 0)
                return -1;
            if (run->s.regs.sregs.cs.dpl != 0) {
                fprintf(stderr, "[bounce] expected CPL0 at kernel exit (cs=0x%x dpl=%u)\n",
                        run->s.regs.sregs.cs.selector, run->s.regs.sregs.cs.dpl);
                return -1;
            }
            run->s.regs.regs.rip = A;
            run->s.regs.regs.rsp = USTACK_TOP;
            run->s.regs.sregs.cs = c->su.cs;
            run->s.regs.sregs.ss = c->su.ss;
            if (cr3)
                run->s.regs.sregs.cr3 = PML4_A;
            run->kvm_dirty_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
        } else {
            c->regs.rip = A;
            c->regs.rsp = USTACK_TOP;
            CHK(v->vcpu, KVM_SET_REGS, &c->regs);
            CHK(v->vcpu, KVM_SET_SREGS, &c->su);
        }
        c->iter++;
        return 0;
    }
    default:
        break;
    }

    if (expect_out(v, 0xf0, "resume") < 0)
        return -1;
    switch (c->mode) {
    case R_PLAIN:
        break;
    case R_GETREGS:
        CHK(v->vcpu, KVM_GET_REGS, &c->regs);
        break;
    case R_SETREGS:
        c->regs.rip = next;
        c->regs.rsp = USTACK_TOP - 8 * c->toggle;
        CHK(v->vcpu, KVM_SET_REGS, &c->regs);
        break;
    case R_GETSETREGS:
        CHK(v->vcpu, KVM_GET_REGS, &c->regs);
        if (check_rip(c, c->regs.rip, cur, "getsetregs") < 0)
            return -1;
        c->regs.rip = next;
        c->regs.rsp = USTACK_TOP - 8 * c->toggle;
        CHK(v->vcpu, KVM_SET_REGS, &c->regs);
        break;
    case R_SETREGS_SREGS:
        c->regs.rip = next;
        c->regs.rsp = USTACK_TOP - 8 * c->toggle;
        CHK(v->vcpu, KVM_SET_REGS, &c->regs);
        CHK(v->vcpu, KVM_SET_SREGS, &c->su);
        break;
    case R_GETSET_ALL: {
        struct kvm_sregs s;
        CHK(v->vcpu, KVM_GET_REGS, &c->regs);
        CHK(v->vcpu, KVM_GET_SREGS, &s);
        if (check_rip(c, c->regs.rip, cur, "getset_all") < 0)
            return -1;
        c->regs.rip = next;
        c->regs.rsp = USTACK_TOP - 8 * c->toggle;
        s.cs = c->su.cs;
        s.ss = c->su.ss;
        CHK(v->vcpu, KVM_SET_REGS, &c->regs);
        CHK(v->vcpu, KVM_SET_SREGS, &s);
        break;
    }
    case R_SYNC_REGS:
        if (check_rip(c, run->s.regs.regs.rip, cur, "sync_regs") < 0)
            return -1;
        run->s.regs.regs.rip = next;
        run->s.regs.regs.rsp = USTACK_TOP - 8 * c->toggle;
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
        break;
    case R_SYNC_ALL:
        if (check_rip(c, run->s.regs.regs.rip, cur, "sync_all") < 0)
            return -1;
        run->s.regs.regs.rip = next;
        run->s.regs.regs.rsp = USTACK_TOP - 8 * c->toggle;
        run->s.regs.sregs.cs = c->su.cs;
        run->s.regs.sregs.ss = c->su.ss;
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
        break;
    case R_SYNC_ALL_SETSREGS_IOCTL:
        /* sync regs for GPRs, but sregs through the ioctl */
        if (check_rip(c, run->s.regs.regs.rip, cur, "sync_regs_ioctl_sregs") < 0)
            return -1;
        run->s.regs.regs.rip = next;
        run->s.regs.regs.rsp = USTACK_TOP - 8 * c->toggle;
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
        CHK(v->vcpu, KVM_SET_SREGS, &c->su);
        break;
    case R_CR3_SREGS:
        c->regs.rip = next;
        c->regs.rsp = USTACK_TOP - 8 * c->toggle;
        CHK(v->vcpu, KVM_SET_REGS, &c->regs);
        c->su.cr3 = cr3n;
        CHK(v->vcpu, KVM_SET_SREGS, &c->su);
        break;
    case R_CR3_SYNC:
        if (check_rip(c, run->s.regs.regs.rip, cur, "cr3_sync") < 0)
            return -1;
        if (run->s.regs.sregs.cr3 != (c->toggle ? PML4_B : PML4_A) && c->iter > 0) {
            fprintf(stderr, "[cr3_sync] cr3=0x%llx unexpected\n", run->s.regs.sregs.cr3);
            return -1;
        }
        run->s.regs.regs.rip = next;
        run->s.regs.regs.rsp = USTACK_TOP - 8 * c->toggle;
        run->s.regs.sregs.cr3 = cr3n;
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
        break;
    case R_COMPLETE_SETREGS:
        run->immediate_exit = 1;
        if (ioctl(v->vcpu, KVM_RUN, 0) == 0 || errno != EINTR) {
            fprintf(stderr, "[complete] immediate_exit run did not return EINTR\n");
            run->immediate_exit = 0;
            return -1;
        }
        run->immediate_exit = 0;
        c->regs.rip = next;
        c->regs.rsp = USTACK_TOP - 8 * c->toggle;
        CHK(v->vcpu, KVM_SET_REGS, &c->regs);
        break;
    default:
        break;
    }
    if (c->mode != R_PLAIN && c->mode != R_GETREGS)
        c->toggle ^= 1;
    c->iter++;
    return 0;
}

static int run_resume_mode(const char *key, enum rmode mode, long n)
{
    struct vm v;
    struct rctx c;
    vm_create(&v);
    memset(&c, 0, sizeof c);
    c.mode = mode;
    c.su = v.su;
    c.sk = v.sk;
    c.regs = v.r0;
    if (mode == R_PLAIN || mode == R_GETREGS)
        put_blob(&v, UCODE, g_outloop, g_outloop_end);
    else
        put_blob(&v, UCODE, g_ab, g_ab_end);
    put_blob(&v, KCODE, k_out_f3, k_out_f3_end);

    /* Determine where RIP points at an OUT exit (before or after the insn). */
    struct kvm_regs r;
    if (expect_out(&v, 0xf0, key) < 0) {
        printf("%s=FAIL (first exit)\n", key);
        vm_destroy(&v);
        return -1;
    }
    CHK(v.vcpu, KVM_GET_REGS, &r);
    c.rip_off = (int)(r.rip - UCODE);
    CHK(v.vcpu, KVM_SET_REGS, &v.r0);   /* restart cleanly at A */
    c.regs = v.r0;

    if (mode == R_SYNC_REGS || mode == R_SYNC_ALL_SETSREGS_IOCTL)
        v.run->kvm_valid_regs = KVM_SYNC_X86_REGS;
    if (mode == R_SYNC_ALL || mode == R_CR3_SYNC || mode == R_BOUNCE_SYNC || mode == R_BOUNCE_CR3_SYNC)
        v.run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    double per = 1.0;
    int rc = bench_steps(&v, key, n, step_resume, &c, per);
    vm_destroy(&v);
    return rc;
}

static int cmd_sregs_resume(long n)
{
    int sync = ioctl(g_kvm, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
    printf("# KVM_CAP_SYNC_REGS=0x%x (REGS=1 SREGS=2 EVENTS=4)\n", sync);
    {
        struct vm v;
        struct kvm_regs r;
        vm_create(&v);
        put_blob(&v, UCODE, g_outloop, g_outloop_end);
        if (expect_out(&v, 0xf0, "rip_at_exit") == 0) {
            CHK(v.vcpu, KVM_GET_REGS, &r);
            printf("rip_at_out_exit=%s\n", r.rip == UCODE ? "out_insn (not yet advanced)"
                                           : r.rip == UCODE + 2 ? "after_out (already advanced)"
                                                                : "other");
        }
        vm_destroy(&v);
    }
    printf("# per exit, us (mean p50 p99 min); every variant except plain/get_regs moves RIP to a\n"
           "# different out insn each exit (a stale RIP would hit ud2 and fail the run)\n");
    run_resume_mode("plain_us", R_PLAIN, n);
    run_resume_mode("get_regs_us", R_GETREGS, n);
    run_resume_mode("set_regs_us", R_SETREGS, n);
    run_resume_mode("get_set_regs_us", R_GETSETREGS, n);
    run_resume_mode("set_regs+set_sregs_us", R_SETREGS_SREGS, n);
    run_resume_mode("get_set_regs+get_set_sregs_us", R_GETSET_ALL, n);
    run_resume_mode("complete_io(immediate_exit)+set_regs_us", R_COMPLETE_SETREGS, n);
    run_resume_mode("sync_regs_us", R_SYNC_REGS, n);
    run_resume_mode("sync_regs+sync_sregs_us", R_SYNC_ALL, n);
    run_resume_mode("sync_regs+ioctl_set_sregs_us", R_SYNC_ALL_SETSREGS_IOCTL, n);
    run_resume_mode("cr3_switch_set_regs+set_sregs_us", R_CR3_SREGS, n);
    run_resume_mode("cr3_switch_sync_regs+sregs_us", R_CR3_SYNC, n);
    printf("# bounce: user exit -> VMM sets CPL0 CS/SS + RIP of a CPL0 stub (out) -> exit -> VMM\n"
           "# sets CPL3 CS/SS + RIP back; value is per round trip (= 2 exits)\n");
    run_resume_mode("bounce_cpl3_cpl0_cpl3_ioctl_us", R_BOUNCE_SREGS, n / 2 + 1);
    run_resume_mode("bounce_cpl3_cpl0_cpl3_sync_us", R_BOUNCE_SYNC, n / 2 + 1);
    run_resume_mode("bounce_with_cr3_switch_ioctl_us", R_BOUNCE_CR3_SREGS, n / 2 + 1);
    run_resume_mode("bounce_with_cr3_switch_sync_us", R_BOUNCE_CR3_SYNC, n / 2 + 1);
    return 0;
}

/* ------------------------------------------------------------------ */
/* 2b. syscall                                                         */
/* ------------------------------------------------------------------ */
/* resume modes: 0 ioctl GET/SET_REGS + SET_SREGS, 1 ioctl GET/SET_REGS only,
 *               2 sync regs only,                 3 sync regs + sync sregs */
struct sctx { int mode; long iter; int vec; uint64_t rip; int skip; };

static int step_syscall_resume(struct vm *v, void *vc)
{
    struct sctx *c = vc;
    const uint64_t ret = UCODE + (g_sys_user_ret - g_sys_user);
    struct kvm_run *run = v->run;
    if (expect_out(v, 0xf2, "syscall-lstar") < 0)
        return -1;
    struct kvm_regs rr, *r = c->mode >= 2 ? &run->s.regs.regs : &rr;
    if (c->mode < 2)
        CHK(v->vcpu, KVM_GET_REGS, &rr);
    if (r->rcx != ret) {
        fprintf(stderr, "[syscall] rcx=0x%llx expected 0x%llx\n", r->rcx, (unsigned long long)ret);
        return -1;
    }
    r->rip = r->rcx;
    r->rflags = r->r11 | RFLAGS_USER;
    switch (c->mode) {
    case 0:
        CHK(v->vcpu, KVM_SET_REGS, r);
        CHK(v->vcpu, KVM_SET_SREGS, &v->su);
        break;
    case 1:
        CHK(v->vcpu, KVM_SET_REGS, r);
        break;
    case 2:
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
        break;
    case 3:
        run->s.regs.sregs.cs = v->su.cs;
        run->s.regs.sregs.ss = v->su.ss;
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
        break;
    }
    c->iter++;
    return 0;
}

/* IDT-stub exit (port 0xf1, frame [vec err rip cs rflags rsp ss]) -> VMM resumes at CPL3. */
static int step_trap_resume(struct vm *v, void *vc)
{
    struct sctx *c = vc;
    struct kvm_run *run = v->run;
    if (expect_out(v, 0xf1, "trap") < 0)
        return -1;
    struct kvm_regs rr, *r = c->mode >= 2 ? &run->s.regs.regs : &rr;
    if (c->mode < 2)
        CHK(v->vcpu, KVM_GET_REGS, &rr);
    if (r->rsp + 56 > MEM_SIZE) {
        fprintf(stderr, "[trap] rsp 0x%llx out of range\n", r->rsp);
        return -1;
    }
    uint64_t *f = (uint64_t *)(v->mem + r->rsp);
    if (f[0] != (uint64_t)c->vec || f[2] != c->rip || f[3] != SEL_UCODE || f[6] != SEL_UDATA) {
        fprintf(stderr, "[trap] bad frame vec=%llu rip=0x%llx cs=0x%llx ss=0x%llx\n",
                (unsigned long long)f[0], (unsigned long long)f[2], (unsigned long long)f[3],
                (unsigned long long)f[6]);
        return -1;
    }
    r->rip = f[2] + c->skip;
    r->rflags = f[4] | RFLAGS_USER;
    r->rsp = f[5];
    if (c->mode >= 2) {
        run->s.regs.sregs.cs = v->su.cs;
        run->s.regs.sregs.ss = v->su.ss;
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    } else {
        CHK(v->vcpu, KVM_SET_REGS, r);
        CHK(v->vcpu, KVM_SET_SREGS, &v->su);
    }
    c->iter++;
    return 0;
}

static int step_out_f3(struct vm *v, void *c)
{
    (void)c;
    return expect_out(v, 0xf3, "out-f3");
}

/* Run a pure in-guest loop of n iterations (guest counts r12 down, then out 0xf0). */
static int pure_loop(struct vm *v, const char *key, long n)
{
    struct kvm_regs r = v->r0;
    long warm = n / 10 + 1;
    r.r12 = warm;
    CHK(v->vcpu, KVM_SET_REGS, &r);
    if (expect_out(v, 0xf0, key) < 0) {
        printf("%s=FAIL\n", key);
        return -1;
    }
    r = v->r0;
    r.r12 = n;
    CHK(v->vcpu, KVM_SET_REGS, &r);
    uint64_t t0 = now_ns();
    if (expect_out(v, 0xf0, key) < 0) {
        printf("%s=FAIL\n", key);
        return -1;
    }
    uint64_t t = now_ns() - t0;
    printf("%s=%.3f n=%ld (one KVM_RUN, no userspace exits)\n", key, t / 1e3 / n, n);
    fflush(stdout);
    return 0;
}

static void vm_set_r12(struct vm *v, uint64_t r12)
{
    struct kvm_regs r = v->r0;
    r.r12 = r12;
    CHK(v->vcpu, KVM_SET_REGS, &r);
}

static int cmd_syscall(long n)
{
    struct vm v;
    struct sctx c;
    /* Where does syscall land?  Guest reads %cs/%ss/rflags at LSTAR. */
    vm_create(&v);
    put_blob(&v, UCODE, g_sys_check, g_sys_check_end);
    put_blob(&v, KLSTAR, k_readcs, k_readcs_end);
    if (expect_out(&v, 0xf2, "syscall-where") == 0) {
        struct kvm_regs r;
        struct kvm_sregs s;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        CHK(v.vcpu, KVM_GET_SREGS, &s);
        printf("syscall_lands: rip=0x%llx guest_read_cs=0x%llx guest_read_ss=0x%llx "
               "guest_rflags=0x%llx rcx=0x%llx r11=0x%llx sregs.cs=0x%x(dpl%u) -> enters LSTAR at CPL%llu%s\n",
               r.rip - 2, r.rbx, r.rdx, r.rbp, r.rcx, r.r11, s.cs.selector, s.cs.dpl, r.rbx & 3,
               (r.rbp & 0x200) ? ", FMASK(IF) NOT applied" : "");
    }
    vm_destroy(&v);

    printf("# syscall -> LSTAR stub 'out 0xf2' -> VMM sets RIP=RCX, RFLAGS=R11 -> user; us per round trip\n");
    static const char *keys[] = {
        "syscall_out_vmm_resume_ioctl_regs+sregs_us", "syscall_out_vmm_resume_ioctl_regs_us",
        "syscall_out_vmm_resume_sync_regs_us", "syscall_out_vmm_resume_sync_regs+sregs_us"};
    for (int mode = 0; mode < 4; mode++) {
        vm_create(&v);
        memset(&c, 0, sizeof c);
        c.mode = mode;
        put_blob(&v, UCODE, g_sys_user, g_sys_user_end);
        put_blob(&v, KLSTAR, k_out_f2, k_out_f2_end);
        vm_set_r12(&v, 1ull << 62);
        if (mode == 2)
            v.run->kvm_valid_regs = KVM_SYNC_X86_REGS;
        if (mode == 3)
            v.run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
        bench_steps(&v, keys[mode], n, step_syscall_resume, &c, 1);
        vm_destroy(&v);
    }
    /* stub: out; sysretq -- expected to #GP here since LSTAR code runs at CPL3 */
    vm_create(&v);
    put_blob(&v, UCODE, g_sys_user, g_sys_user_end);
    put_blob(&v, KLSTAR, k_out_sysret, k_out_sysret_end);
    vm_set_r12(&v, 1ull << 62);
    if (expect_out(&v, 0xf3, "sysret") == 0) {
        char b[256];
        vrun(&v);
        if (is_out(&v, 0xf0) || is_out(&v, 0xf3))
            printf("syscall_out_guest_sysretq=works\n");
        else if (is_out(&v, 0xf1)) {
            struct kvm_regs r;
            CHK(v.vcpu, KVM_GET_REGS, &r);
            uint64_t *f = q(&v, r.rsp);
            printf("syscall_out_guest_sysretq=FAILS: sysretq at LSTAR raises vec=%llu err=0x%llx "
                   "(frame cs=0x%llx: LSTAR code is CPL3)\n", (unsigned long long)f[0],
                   (unsigned long long)f[1], (unsigned long long)f[3]);
        } else
            printf("syscall_out_guest_sysretq=FAILS (%s)\n", exit_desc(&v, b, sizeof b));
    }
    vm_destroy(&v);
    /* stub: out; jmp *%rcx  (user-level return, since LSTAR runs at CPL3) */
    vm_create(&v);
    put_blob(&v, UCODE, g_sys_user, g_sys_user_end);
    put_blob(&v, KLSTAR, k_out_jmp_rcx, k_out_jmp_rcx_end);
    vm_set_r12(&v, 1ull << 62);
    bench_steps(&v, "syscall_out_guest_jmp_rcx_us", n, step_out_f3, NULL, 1);
    vm_destroy(&v);
    /* pure: LSTAR stub is 'jmp *%rcx', no exits -> cost of the in-kernel syscall redirect */
    vm_create(&v);
    put_blob(&v, UCODE, g_sys_user, g_sys_user_end);
    put_blob(&v, KLSTAR, k_jmp_rcx, k_jmp_rcx_end);
    pure_loop(&v, "syscall_jmp_rcx_in_guest_us", n);
    vm_destroy(&v);

    printf("# real CPL3->CPL0 entry: int3 -> vector 3 gate -> CPL0 stub (int $0x80 gives #UD here)\n");
    for (int mode = 0; mode < 4; mode += 3) {
        vm_create(&v);
        memset(&c, 0, sizeof c);
        c.mode = mode;
        c.vec = 3;
        c.rip = UCODE + (g_int3_loop_ret - g_int3_loop);
        c.skip = 0;
        put_blob(&v, UCODE, g_int3_loop, g_int3_loop_end);
        set_gate(&v, 3, KSTUBS + 3 * 32, 3);
        vm_set_r12(&v, 1ull << 62);
        if (mode == 3)
            v.run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
        bench_steps(&v, mode ? "int3_out_vmm_resume_sync_regs+sregs_us"
                             : "int3_out_vmm_resume_ioctl_regs+sregs_us", n, step_trap_resume, &c, 1);
        vm_destroy(&v);
    }
    vm_create(&v);
    put_blob(&v, UCODE, g_int3_loop, g_int3_loop_end);
    put_blob(&v, KCODE, k_out_iret, k_out_iret_end);
    set_gate(&v, 3, KCODE, 3);
    vm_set_r12(&v, 1ull << 62);
    bench_steps(&v, "int3_out_guest_iretq_us", n, step_out_f3, NULL, 1);
    vm_destroy(&v);
    vm_create(&v);
    put_blob(&v, UCODE, g_int3_loop, g_int3_loop_end);
    put_blob(&v, KCODE, k_iret, k_iret_end);
    set_gate(&v, 3, KCODE, 3);
    pure_loop(&v, "int3_iretq_in_guest_us", n);
    vm_destroy(&v);
    return 0;
}

/* ------------------------------------------------------------------ */
/* 2c. trap                                                            */
/* ------------------------------------------------------------------ */
static int cmd_trap(long n)
{
    struct vm v;
    struct sctx c;
    printf("# ud2 at CPL3 -> IDT gate (DPL0 int gate) -> CPL0 stub push $6; out 0xf1; us per round trip\n");
    /* frame check, verbose once */
    vm_create(&v);
    put_blob(&v, UCODE, g_ud_user, g_ud_user_end);
    if (expect_out(&v, 0xf1, "trap-frame") == 0) {
        struct kvm_regs r;
        struct kvm_sregs s;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        CHK(v.vcpu, KVM_GET_SREGS, &s);
        uint64_t *f = q(&v, r.rsp);
        printf("trap_frame: rsp=0x%llx vec=%llu err=%llu rip=0x%llx cs=0x%llx rflags=0x%llx "
               "rsp=0x%llx ss=0x%llx  (stub cs=0x%x dpl=%u)\n",
               r.rsp, (unsigned long long)f[0], (unsigned long long)f[1], (unsigned long long)f[2],
               (unsigned long long)f[3], (unsigned long long)f[4], (unsigned long long)f[5],
               (unsigned long long)f[6], s.cs.selector, s.cs.dpl);
        printf("trap_frame_ok=%s\n",
               (r.rsp == KSTACK_TOP - 56 && f[0] == 6 && f[2] == UCODE && f[3] == SEL_UCODE &&
                f[5] == USTACK_TOP && f[6] == SEL_UDATA && s.cs.dpl == 0) ? "yes" : "no");
    }
    vm_destroy(&v);

    for (int mode = 0; mode < 4; mode += 3) {
        vm_create(&v);
        memset(&c, 0, sizeof c);
        c.mode = mode;
        c.vec = 6;
        c.rip = UCODE;
        c.skip = 2;
        put_blob(&v, UCODE, g_ud_user, g_ud_user_end);
        vm_set_r12(&v, 1ull << 62);
        if (mode == 3)
            v.run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
        bench_steps(&v, mode ? "trap_vmm_resume_sync_regs+sregs_us"
                             : "trap_vmm_resume_ioctl_regs+sregs_us", n, step_trap_resume, &c, 1);
        vm_destroy(&v);
    }
    /* stub: out; addq $2,(%rsp); iretq */
    vm_create(&v);
    put_blob(&v, UCODE, g_ud_user, g_ud_user_end);
    put_blob(&v, KSTUBS + 6 * 32, k_out_iret_skip, k_out_iret_skip_end);
    {
        struct kvm_regs r = v.r0;
        r.r12 = 1ull << 62;
        CHK(v.vcpu, KVM_SET_REGS, &r);
    }
    bench_steps(&v, "trap_out_guest_iretq_us", n, step_out_f3, NULL, 1);
    vm_destroy(&v);
    /* pure: stub addq $2,(%rsp); iretq */
    vm_create(&v);
    put_blob(&v, UCODE, g_ud_user, g_ud_user_end);
    put_blob(&v, KSTUBS + 6 * 32, k_iret_skip, k_iret_skip_end);
    pure_loop(&v, "trap_iretq_in_guest_us", n);
    vm_destroy(&v);
    return 0;
}

/* ------------------------------------------------------------------ */
/* 2d. iretq / sysretq / mov cr3 at CPL0, and a CPL0 instruction table */
/* ------------------------------------------------------------------ */
/* Run until port 0xf3 (CPL0 stub), then again expecting 0xf4 at CPL3. */
static void check_return(const char *key, const uint8_t *ub, const uint8_t *ue, uint64_t kaddr,
                         const uint8_t *kb, const uint8_t *ke, uint64_t expect_cr3)
{
    struct vm v;
    char b[512];
    vm_create(&v);
    put_blob(&v, UCODE, ub, ue);
    put_blob(&v, kaddr, kb, ke);
    set_gate(&v, 3, KSTUBS + 3 * 32, 3);
    if (vrun(&v) < 0 || !is_out(&v, 0xf3)) {
        printf("%s=FAIL (did not reach CPL0 stub: %s)\n", key, exit_desc(&v, b, sizeof b));
        dump_exit(&v, key);
        vm_destroy(&v);
        return;
    }
    if (vrun(&v) < 0) {
        printf("%s=FAIL (KVM_RUN error)\n", key);
        vm_destroy(&v);
        return;
    }
    if (!is_out(&v, 0xf4)) {
        printf("%s=FAIL (%s)\n", key, exit_desc(&v, b, sizeof b));
        dump_exit(&v, key);
        vm_destroy(&v);
        return;
    }
    struct kvm_regs r;
    struct kvm_sregs s;
    CHK(v.vcpu, KVM_GET_REGS, &r);
    CHK(v.vcpu, KVM_GET_SREGS, &s);
    int ok = s.cs.selector == SEL_UCODE && s.cs.dpl == 3 && s.ss.selector == SEL_UDATA &&
             r.rsp == USTACK_TOP && (r.rflags & 0x200);   /* IOPL reads 0 at CPL3 on PVM */
    if (expect_cr3)
        ok = ok && s.cr3 == expect_cr3;
    printf("%s=%s (cs=0x%x dpl=%u ss=0x%x rsp=0x%llx rflags=0x%llx cr3=0x%llx)\n", key,
           ok ? "works" : "WRONG_STATE", s.cs.selector, s.cs.dpl, s.ss.selector, r.rsp, r.rflags,
           s.cr3);
    fflush(stdout);
    vm_destroy(&v);
}

struct insn { const char *name; const uint8_t *b, *e; };

static void cpl0_insn(const struct insn *in)
{
    struct vm v;
    char b[512];
    vm_create(&v);
    put_blob(&v, UCODE, g_int3_check, g_int3_check_end);
    size_t len = in->e - in->b;
    put_blob(&v, KCODE, in->b, in->e);
    put_blob(&v, KCODE + len, c_out_tail, c_out_tail_end);
    set_gate(&v, 3, KCODE, 3);
    *q(&v, DATA) = 0x1234;
    uint64_t t0 = now_ns();
    int rr = vrun(&v);
    uint64_t t = now_ns() - t0;
    if (rr < 0) {
        printf("cpl0_%s=FAIL (KVM_RUN error)\n", in->name);
    } else if (is_out(&v, 0xf3)) {
        struct kvm_regs r;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        printf("cpl0_%s=ok (guest-read cs=0x%llx; first KVM_RUN of a fresh VM took %.0f us)\n", in->name, r.rbx, t / 1e3);
    } else if (is_out(&v, 0xf1)) {
        struct kvm_regs r;
        struct kvm_sregs s;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        CHK(v.vcpu, KVM_GET_SREGS, &s);
        uint64_t *f = q(&v, r.rsp);
        printf("cpl0_%s=exception vec=%llu err=0x%llx rip=0x%llx cs=0x%llx cr2=0x%llx\n", in->name,
               (unsigned long long)f[0], (unsigned long long)f[1], (unsigned long long)f[2],
               (unsigned long long)f[3], s.cr2);
    } else {
        printf("cpl0_%s=%s\n", in->name, exit_desc(&v, b, sizeof b));
    }
    fflush(stdout);
    vm_destroy(&v);
}

static int cmd_iretq(void)
{
    printf("# CPL3 -> CPL0 via ud2 or int3 through the IDT; CPL0 stub does out 0xf3 then returns itself;\n"
           "# 'works' = next exit is out 0xf4 from CPL3 with correct cs/ss/rsp/rflags\n");
    check_return("iretq_cpl0_to_cpl3", g_ud_check, g_ud_check_end, KSTUBS + 6 * 32, k_out_iret_skip,
                 k_out_iret_skip_end, 0);
    check_return("sysretq_cpl0_to_cpl3", g_ud_check, g_ud_check_end, KSTUBS + 6 * 32,
                 k_out_sysret_from_idt, k_out_sysret_from_idt_end, 0);
    check_return("int3_then_iretq_to_cpl3", g_int3_check, g_int3_check_end,
                 KSTUBS + 3 * 32, k_out_iret, k_out_iret_end, 0);
    check_return("mov_cr3_then_iretq_to_cpl3", g_ud_check, g_ud_check_end, KSTUBS + 6 * 32,
                 k_out_cr3_iret, k_out_cr3_iret_end, PML4_B);
    printf("# CPL0 instruction table (entered via int3 -> vector 3 gate; each insn followed by\n"
           "# mov %%cs,%%ebx; out 0xf3). ok = reached the out; exception = IDT stub hit\n");
#define I(n) {#n, c_##n, c_##n##_end}
    static const struct insn tab[] = {
        I(swapgs), I(rdmsr), I(wrmsr), I(clisti), I(pushfpopf), I(rdcr3), I(wrcr3), I(rdcr0),
        I(wrcr4), I(invlpg), I(rdtsc), I(cpuid), I(lgdt), I(lidt), I(memrw), I(repmovsb),
        I(lockcmpxchg), I(xchg), I(callret), I(movdqu), I(fxsave), I(movss), I(hlt), I(ud2),
        I(wpfault),
    };
#undef I
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        cpl0_insn(&tab[i]);
    return 0;
}

/* ------------------------------------------------------------------ */
/* 2e. int $0x80                                                       */
/* ------------------------------------------------------------------ */
static void int80_case(int dpl)
{
    struct vm v;
    char b[512];
    vm_create(&v);
    put_blob(&v, UCODE, g_int80_user, g_int80_user_end);
    set_gate(&v, 0x80, KSTUBS + 0x80 * 32, dpl);
    const char *key = dpl ? "int80_dpl3_gate" : "int80_dpl0_gate";
    if (vrun(&v) < 0 || !is_out(&v, 0xf1)) {
        printf("%s=FAIL (%s)\n", key, exit_desc(&v, b, sizeof b));
        dump_exit(&v, key);
        vm_destroy(&v);
        return;
    }
    struct kvm_regs r;
    struct kvm_sregs s;
    CHK(v.vcpu, KVM_GET_REGS, &r);
    CHK(v.vcpu, KVM_GET_SREGS, &s);
    uint64_t *f = q(&v, r.rsp);
    uint64_t after = UCODE + (g_int80_after - g_int80_user);
    int ok;
    if (dpl == 0)
        ok = f[0] == 13 && f[1] == 0x80 * 8 + 2 && f[2] == UCODE;
    else
        ok = f[0] == 0x80 && f[2] == after;
    printf("%s: vector=%llu err=0x%llx frame_rip=0x%llx (int at 0x%llx, next 0x%llx) cs=0x%llx "
           "stub_cpl=%u -> %s\n", key, (unsigned long long)f[0], (unsigned long long)f[1],
           (unsigned long long)f[2], (unsigned long long)UCODE, (unsigned long long)after,
           (unsigned long long)f[3], s.cs.dpl,
           ok ? (dpl ? "CONFIRMED direct entry" : "CONFIRMED #GP(0x402)")
              : (f[0] == 6 && f[2] == UCODE) ? "NOT CONFIRMED: #UD at the int insn" : "UNEXPECTED");
    fflush(stdout);
    vm_destroy(&v);
}

static void int_scan(int vec, int dpl, int use_cc)
{
    struct vm v;
    char b[512];
    vm_create(&v);
    uint8_t code[] = {0xcd, (uint8_t)vec, 0xe6, 0xf4, 0x0f, 0x0b};
    uint8_t cc[] = {0xcc, 0xe6, 0xf4, 0x0f, 0x0b};
    if (use_cc)
        memcpy(v.mem + UCODE, cc, sizeof cc);
    else
        memcpy(v.mem + UCODE, code, sizeof code);
    set_gate(&v, vec, KSTUBS + vec * 32, dpl);
    if (use_cc)
        printf("scan: int3(0xcc) dpl%d gate -> ", dpl);
    else
        printf("scan: int $0x%02x dpl%d gate -> ", vec, dpl);
    if (vrun(&v) == 0 && is_out(&v, 0xf1)) {
        struct kvm_regs r;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        uint64_t *f = q(&v, r.rsp);
        printf("vector=%llu err=0x%llx frame_rip=0x%llx (insn at 0x%llx)\n", (unsigned long long)f[0],
               (unsigned long long)f[1], (unsigned long long)f[2], (unsigned long long)UCODE);
    } else {
        printf("%s\n", exit_desc(&v, b, sizeof b));
    }
    vm_destroy(&v);
}

static int cmd_int80(void)
{
    int80_case(0);
    int80_case(3);
    static const int vecs[] = {0x03, 0x20, 0x80, 0x81, 0xff};
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++)
        for (int dpl = 0; dpl <= 3; dpl += 3)
            int_scan(vecs[i], dpl, 0);
    int_scan(3, 0, 1);
    int_scan(3, 3, 1);
    return 0;
}

/* ------------------------------------------------------------------ */
/* 2f. page faults and shadow-paging coherence                         */
/* ------------------------------------------------------------------ */
enum pmethod {
    P_NONE, P_SREGS_SAME, P_SREGS_CR3_OTHER, P_SREGS_CR3_ROUNDTRIP, P_SREGS_CR4_TOGGLE,
    P_CPL0_INVLPG, P_CPL0_RELOAD_CR3, P_CPL0_PTE_WRITE, P_CPL0_PTE_WRITE_INVLPG, P_CPL3_PTE_WRITE,
    P_CPL3_PTE_WRITE_CPL0_INVLPG, P_MEMSLOT_READD, P_FRESH_VA,
};
static const char *pmethod_name[] = {
    "no_flush", "set_sregs_same_cr3", "set_sregs_cr3_other_root", "set_sregs_cr3_roundtrip",
    "set_sregs_cr4_pge_toggle", "guest_cpl0_invlpg", "guest_cpl0_mov_cr3_reload",
    "guest_cpl0_writes_pte", "guest_cpl0_writes_pte+invlpg", "guest_cpl3_writes_pte(W alias)",
    "guest_cpl3_writes_pte+cpl0_invlpg",
    "memslot_delete_readd",
    "never_accessed_va",
};

/* Ask the guest to run a CPL0 routine: user does int3 (vector 3 gate -> KCODE, CPL0),
 * the routine ends with iretq back to the user loop. */
static int guest_cpl0_call(struct vm *v, const uint8_t *kb, const uint8_t *ke, uint64_t rdi,
                           uint64_t rdx)
{
    struct kvm_regs r;
    put_blob(v, KCODE, kb, ke);
    set_gate(v, 3, KCODE, 3);
    CHK(v->vcpu, KVM_GET_REGS, &r);
    r.rip = UCODE + (g_pte_user_sys - g_pte_user);
    r.rdi = rdi;
    r.rdx = rdx;
    CHK(v->vcpu, KVM_SET_REGS, &r);
    return 0;
}

/* A fresh VM whose user loop has read REMAP_VA once (page A, so KVM now shadows its
 * PTE), stopped at the loop's out; r holds its registers. -1 (FAIL printed, VM gone)
 * if that did not happen. */
static int pte_first_read(struct vm *v, const char *key, struct kvm_regs *r)
{
    vm_create(v);
    put_blob(v, UCODE, g_pte_user, g_pte_user_end);
    *r = v->r0;
    r->rsi = REMAP_VA;
    CHK(v->vcpu, KVM_SET_REGS, r);
    if (expect_out(v, 0xf0, key) < 0) {
        printf("%s=FAIL (first)\n", key);
        vm_destroy(v);
        return -1;
    }
    CHK(v->vcpu, KVM_GET_REGS, r);
    if (r->rax != MAGIC_A) {
        printf("%s=FAIL (initial read 0x%llx)\n", key, r->rax);
        vm_destroy(v);
        return -1;
    }
    return 0;
}

/* change: 0 = remap REMAP_VA to PAGE_B, 1 = unmap (PTE=0) */
static void pte_case(enum pmethod m, int unmap)
{
    struct vm v;
    char key[128], b[512];
    snprintf(key, sizeof key, "pte_%s_%s", unmap ? "unmap" : "remap", pmethod_name[m]);
    struct kvm_regs r;
    if (pte_first_read(&v, key, &r) < 0)
        return;
    uint64_t va = m == P_FRESH_VA ? REMAP_VA2 : REMAP_VA;
    uint64_t pte_gpa = PT0 + (va >> 12) * 8;
    uint64_t newpte = unmap ? 0 : (PAGE_B | PTE_P | PTE_W | PTE_U);
    if (m != P_CPL0_PTE_WRITE && m != P_CPL0_PTE_WRITE_INVLPG && m != P_CPL3_PTE_WRITE &&
        m != P_CPL3_PTE_WRITE_CPL0_INVLPG)
        *q(&v, pte_gpa) = newpte;              /* VMM writes the PTE through its mapping */
    if (m == P_FRESH_VA) {
        r.rsi = REMAP_VA2;
        CHK(v.vcpu, KVM_SET_REGS, &r);
    }

    struct kvm_sregs s;
    int extra = 0;    /* number of extra out-0xf0 exits caused by the method */
    switch (m) {
    case P_NONE:
    case P_FRESH_VA:
        break;
    case P_SREGS_SAME:
        CHK(v.vcpu, KVM_GET_SREGS, &s);
        CHK(v.vcpu, KVM_SET_SREGS, &s);
        break;
    case P_SREGS_CR3_OTHER:
        CHK(v.vcpu, KVM_GET_SREGS, &s);
        s.cr3 = PML4_B;
        CHK(v.vcpu, KVM_SET_SREGS, &s);
        break;
    case P_SREGS_CR3_ROUNDTRIP:
        CHK(v.vcpu, KVM_GET_SREGS, &s);
        s.cr3 = PML4_B;
        CHK(v.vcpu, KVM_SET_SREGS, &s);
        s.cr3 = PML4_A;
        CHK(v.vcpu, KVM_SET_SREGS, &s);
        break;
    case P_SREGS_CR4_TOGGLE:
        CHK(v.vcpu, KVM_GET_SREGS, &s);
        s.cr4 ^= 0x80;
        CHK(v.vcpu, KVM_SET_SREGS, &s);
        s.cr4 ^= 0x80;
        CHK(v.vcpu, KVM_SET_SREGS, &s);
        break;
    case P_CPL0_INVLPG:
        guest_cpl0_call(&v, k_invlpg_iret, k_invlpg_iret_end, 0, 0);
        break;
    case P_CPL0_RELOAD_CR3:
        guest_cpl0_call(&v, k_reloadcr3_iret, k_reloadcr3_iret_end, 0, 0);
        break;
    case P_CPL0_PTE_WRITE:
        guest_cpl0_call(&v, k_ptewrite_iret, k_ptewrite_iret_end, pte_gpa, newpte);
        break;
    case P_CPL0_PTE_WRITE_INVLPG:
        guest_cpl0_call(&v, k_ptewrite_invlpg_iret, k_ptewrite_invlpg_iret_end, pte_gpa, newpte);
        break;
    case P_CPL3_PTE_WRITE:
        /* PT0 is itself mapped user+writable at VA 0x4000 (identity); the guest writes it at CPL3 */
        CHK(v.vcpu, KVM_GET_REGS, &r);
        r.rip = UCODE + (g_pte_user_wr - g_pte_user);
        r.rdi = pte_gpa;
        r.rdx = newpte;
        CHK(v.vcpu, KVM_SET_REGS, &r);
        break;
    case P_CPL3_PTE_WRITE_CPL0_INVLPG:
        guest_cpl0_call(&v, k_invlpg_iret, k_invlpg_iret_end, pte_gpa, newpte);
        CHK(v.vcpu, KVM_GET_REGS, &r);
        r.rip = UCODE + (g_pte_user_wr_inv - g_pte_user);
        CHK(v.vcpu, KVM_SET_REGS, &r);
        break;
    case P_MEMSLOT_READD: {
        struct kvm_userspace_memory_region reg = {
            .slot = 0, .guest_phys_addr = 0, .memory_size = 0, .userspace_addr = (uint64_t)v.mem};
        CHK(v.fd, KVM_SET_USER_MEMORY_REGION, &reg);
        reg.memory_size = MEM_SIZE;
        CHK(v.fd, KVM_SET_USER_MEMORY_REGION, &reg);
        break;
    }
    }
    (void)extra;
    if (vrun(&v) < 0) {
        printf("%s=FAIL (KVM_RUN)\n", key);
    } else if (is_out(&v, 0xf0)) {
        CHK(v.vcpu, KVM_GET_REGS, &r);
        if (unmap)
            printf("%s=STALE (read 0x%llx, no #PF)\n", key, r.rax);
        else
            printf("%s=%s (read 0x%llx)\n", key,
                   r.rax == MAGIC_B ? "NEW" : r.rax == MAGIC_A ? "STALE" : "??", r.rax);
    } else if (is_out(&v, 0xf1)) {
        struct kvm_sregs s2;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        CHK(v.vcpu, KVM_GET_SREGS, &s2);
        uint64_t *f = q(&v, r.rsp);
        printf("%s=%s (vec=%llu err=0x%llx cr2=0x%llx)\n", key,
               (unmap && f[0] == 14) ? "NEW (#PF)" : "UNEXPECTED_TRAP", (unsigned long long)f[0],
               (unsigned long long)f[1], s2.cr2);
    } else {
        printf("%s=FAIL (%s)\n", key, exit_desc(&v, b, sizeof b));
        dump_exit(&v, key);
    }
    fflush(stdout);
    vm_destroy(&v);
}

/* A guest entry cleared by a guest CPL0 write (what pyxen's replay stub does), the
 * VA touched while not present (#PF), then set present again by the VMM alone:
 * whether the guest sees it without a replay (pyxen skips the replay of a write
 * to an entry that was not present, issue 15). */
static void pte_cleared_then_vmm_set(void)
{
    struct vm v;
    char b[512];
    const char *key = "pte_cleared_by_guest_then_set_by_vmm_only";
    uint64_t pte_gpa = PT0 + (REMAP_VA >> 12) * 8;
    struct kvm_regs r;
    if (pte_first_read(&v, key, &r) < 0)
        return;
    guest_cpl0_call(&v, k_ptewrite_iret, k_ptewrite_iret_end, pte_gpa, 0);
    if (vrun(&v) < 0 || !is_out(&v, 0xf1)) {
        printf("%s=FAIL (no #PF after the guest's clear: %s)\n", key, exit_desc(&v, b, sizeof b));
        vm_destroy(&v);
        return;
    }
    CHK(v.vcpu, KVM_GET_REGS, &r);
    if (*q(&v, r.rsp) != 14) {
        printf("%s=FAIL (vector %llu)\n", key, (unsigned long long)*q(&v, r.rsp));
        vm_destroy(&v);
        return;
    }
    *q(&v, pte_gpa) = PAGE_B | PTE_P | PTE_W | PTE_U;  /* the VMM alone: no replay */
    put_blob(&v, KCODE, k_pop2_iret, k_pop2_iret_end);
    r.rip = KCODE;
    CHK(v.vcpu, KVM_SET_REGS, &r);
    if (vrun(&v) == 0 && is_out(&v, 0xf0)) {
        CHK(v.vcpu, KVM_GET_REGS, &r);
        printf("%s=%s (read 0x%llx)\n", key,
               r.rax == MAGIC_B ? "NEW" : r.rax == MAGIC_A ? "STALE" : "??", r.rax);
    } else {
        printf("%s=FAIL (%s)\n", key, exit_desc(&v, b, sizeof b));
    }
    fflush(stdout);
    vm_destroy(&v);
}

/* Cost of making a VMM-side PTE change visible, per update (each iteration flips the
 * PTE of REMAP_VA between page A and page B and checks the guest reads the new value). */
enum umethod { U_CPL3_WRITE, U_CPL0_WRITE, U_MEMSLOT };
struct uctx { enum umethod m; int flip; struct vm *v; };

static int step_pte_update(struct vm *v, void *vc)
{
    struct uctx *c = vc;
    struct kvm_run *run = v->run;
    struct kvm_regs *r = &run->s.regs.regs;
    uint64_t pte_gpa = PT0 + (REMAP_VA >> 12) * 8;
    uint64_t page = c->flip ? PAGE_A : PAGE_B;
    uint64_t want = c->flip ? MAGIC_A : MAGIC_B;
    uint64_t newpte = page | PTE_P | PTE_W | PTE_U;
    /* guest is stopped at the loop's out (rax = last read) */
    switch (c->m) {
    case U_CPL3_WRITE:
        r->rip = UCODE + (g_pte_user_wr_inv - g_pte_user);
        r->rdi = pte_gpa;
        r->rdx = newpte;
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
        break;
    case U_CPL0_WRITE:
        r->rip = UCODE + (g_pte_user_sys - g_pte_user);
        r->rdi = pte_gpa;
        r->rdx = newpte;
        run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
        break;
    case U_MEMSLOT: {
        *q(v, pte_gpa) = newpte;
        struct kvm_userspace_memory_region reg = {
            .slot = 0, .guest_phys_addr = 0, .memory_size = 0, .userspace_addr = (uint64_t)v->mem};
        CHK(v->fd, KVM_SET_USER_MEMORY_REGION, &reg);
        reg.memory_size = MEM_SIZE;
        CHK(v->fd, KVM_SET_USER_MEMORY_REGION, &reg);
        break;
    }
    }
    if (expect_out(v, 0xf0, "pte_update") < 0)
        return -1;
    if (r->rax != want) {
        fprintf(stderr, "[pte_update] guest read 0x%llx, want 0x%llx\n", r->rax,
                (unsigned long long)want);
        return -1;
    }
    c->flip ^= 1;
    return 0;
}

static void pte_update_costs(long n)
{
    static const char *keys[] = {"pte_update_via_guest_cpl3_write+int3_cpl0_invlpg_iretq_us",
                                 "pte_update_via_guest_cpl0_write_int3_iretq_us",
                                 "pte_update_via_memslot_readd_us"};
    printf("# per PTE update made visible: VMM exit + update method + guest re-read (compare\n"
           "# with plain exit ~26 us); memslot re-add zaps all shadow pages (scales with VM size)\n");
    for (int m = U_CPL3_WRITE; m <= U_MEMSLOT; m++) {
        struct vm v;
        struct uctx c = {.m = m, .flip = 0};
        vm_create(&v);
        put_blob(&v, UCODE, g_pte_user, g_pte_user_end);
        if (m == U_CPL3_WRITE)
            put_blob(&v, KCODE, k_invlpg_iret, k_invlpg_iret_end);
        else
            put_blob(&v, KCODE, k_ptewrite_iret, k_ptewrite_iret_end);
        set_gate(&v, 3, KCODE, 3);
        struct kvm_regs r = v.r0;
        r.rsi = REMAP_VA;
        CHK(v.vcpu, KVM_SET_REGS, &r);
        v.run->kvm_valid_regs = KVM_SYNC_X86_REGS;
        if (expect_out(&v, 0xf0, keys[m]) == 0)
            bench_steps(&v, keys[m], m == U_MEMSLOT ? (n < 500 ? n : 500) : n, step_pte_update, &c, 1);
        vm_destroy(&v);
    }
}

static int cmd_pf(long n)
{
    struct vm v;
    char b[512];
    /* (1) write to a read-only user page */
    vm_create(&v);
    put_blob(&v, UCODE, g_pf_user, g_pf_user_end);
    if (vrun(&v) == 0 && is_out(&v, 0xf1)) {
        struct kvm_regs r;
        struct kvm_sregs s;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        CHK(v.vcpu, KVM_GET_SREGS, &s);
        uint64_t *f = q(&v, r.rsp);
        printf("pf_ro_write: vector=%llu err=0x%llx sregs.cr2=0x%llx frame_rip=0x%llx cs=0x%llx "
               "stub_cpl=%u -> %s\n", (unsigned long long)f[0], (unsigned long long)f[1], s.cr2,
               (unsigned long long)f[2], (unsigned long long)f[3], s.cs.dpl,
               (f[0] == 14 && f[1] == 7 && s.cr2 == RO_PAGE && f[2] == UCODE) ? "CONFIRMED"
                                                                           : "UNEXPECTED");
    } else {
        printf("pf_ro_write=FAIL (%s)\n", exit_desc(&v, b, sizeof b));
        dump_exit(&v, "pf");
    }
    vm_destroy(&v);
    /* (2) not-present user page read (REMAP_VA PTE cleared before first touch) */
    vm_create(&v);
    put_blob(&v, UCODE, g_pte_user, g_pte_user_end);
    *q(&v, PT0 + (REMAP_VA >> 12) * 8) = 0;
    {
        struct kvm_regs r = v.r0;
        r.rsi = REMAP_VA;
        CHK(v.vcpu, KVM_SET_REGS, &r);
    }
    if (vrun(&v) == 0 && is_out(&v, 0xf1)) {
        struct kvm_regs r;
        struct kvm_sregs s;
        CHK(v.vcpu, KVM_GET_REGS, &r);
        CHK(v.vcpu, KVM_GET_SREGS, &s);
        uint64_t *f = q(&v, r.rsp);
        printf("pf_notpresent_read: vector=%llu err=0x%llx sregs.cr2=0x%llx -> %s\n",
               (unsigned long long)f[0], (unsigned long long)f[1], s.cr2,
               (f[0] == 14 && f[1] == 4 && s.cr2 == REMAP_VA) ? "CONFIRMED" : "UNEXPECTED");
    } else {
        printf("pf_notpresent_read=FAIL (%s)\n", exit_desc(&v, b, sizeof b));
    }
    vm_destroy(&v);

    printf("# Shadow-paging coherence: guest reads VA 0x42000 (PTE->page A) once; the VMM then\n"
           "# rewrites the PTE in guest memory (remap->page B, or unmap) and applies <method>;\n"
           "# NEW = guest sees the change, STALE = guest still uses the old translation\n");
    for (int unmap = 0; unmap < 2; unmap++)
        for (int m = P_NONE; m <= P_FRESH_VA; m++)
            pte_case(m, unmap);
    pte_cleared_then_vmm_set();
    pte_update_costs(n);
    return 0;
}

/* ------------------------------------------------------------------ */
/* 2g. maxphyaddr                                                      */
/* ------------------------------------------------------------------ */
static void hi_slot_case(uint64_t gpa)
{
    struct vm v;
    char b[512], key[64];
    snprintf(key, sizeof key, "memslot_gpa_2^%d", __builtin_ctzll(gpa));
    vm_create(&v);
    v.hi_size = 2ull << 20;
    v.hi_mem = mmap(NULL, v.hi_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (v.hi_mem == MAP_FAILED)
        die("mmap hi");
    *(uint64_t *)v.hi_mem = MAGIC_B;
    struct kvm_userspace_memory_region reg = {
        .slot = 1, .guest_phys_addr = gpa, .memory_size = v.hi_size,
        .userspace_addr = (uint64_t)v.hi_mem};
    if (ioctl(v.fd, KVM_SET_USER_MEMORY_REGION, &reg) < 0) {
        printf("%s: register=FAIL (%s)\n", key, strerror(errno));
        vm_destroy(&v);
        return;
    }
    *q(&v, PDPT_A + 8) = PD_HI | PTE_P | PTE_W | PTE_U;
    *q(&v, PD_HI) = gpa | PTE_P | PTE_W | PTE_U | PTE_PS;
    put_blob(&v, UCODE, g_hi_user, g_hi_user_end);
    struct kvm_regs r = v.r0;
    r.rsi = HI_VA;
    CHK(v.vcpu, KVM_SET_REGS, &r);
    if (vrun(&v) < 0) {
        printf("%s: register=ok guest_access=FAIL (KVM_RUN)\n", key);
    } else if (is_out(&v, 0xf4)) {
        CHK(v.vcpu, KVM_GET_REGS, &r);
        int rd = r.rax == MAGIC_B, wr = *(uint64_t *)v.hi_mem == 0x5a5a5a5a;
        printf("%s: register=ok guest_read=%s guest_write=%s\n", key, rd ? "ok" : "WRONG",
               wr ? "ok" : "WRONG");
    } else if (is_out(&v, 0xf1)) {
        CHK(v.vcpu, KVM_GET_REGS, &r);
        uint64_t *f = q(&v, r.rsp);
        printf("%s: register=ok guest_access=TRAP vec=%llu err=0x%llx\n", key,
               (unsigned long long)f[0], (unsigned long long)f[1]);
    } else {
        printf("%s: register=ok guest_access=FAIL (%s)\n", key, exit_desc(&v, b, sizeof b));
        dump_exit(&v, key);
    }
    fflush(stdout);
    vm_destroy(&v);
}

static int cmd_maxphyaddr(void)
{
    kvm_global_init();
    struct kvm_cpuid2 *c = get_supported_cpuid();
    int phys = -1;
    for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (e->function == 0x80000008) {
            phys = e->eax & 0xff;
            printf("supported_cpuid_0x80000008_eax=0x%x maxphyaddr=%u linear_bits=%u guest_phys=%u\n",
                   e->eax, e->eax & 0xff, (e->eax >> 8) & 0xff, (e->eax >> 16) & 0xff);
        }
        if (e->function == 0x40000000)
            printf("cpuid_0x40000000: eax=0x%x sig=%.4s%.4s%.4s\n", e->eax, (char *)&e->ebx,
                   (char *)&e->ecx, (char *)&e->edx);
    }
    free(c);
    int slots = ioctl(g_kvm, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);
    printf("nr_memslots=%d\n", slots);
    hi_slot_case(1ull << 32);
    hi_slot_case(1ull << 38);
    if (phys > 0) {
        if (phys - 1 != 38 && phys - 1 > 32)
            hi_slot_case(1ull << (phys - 1));
        if (phys < 52)
            hi_slot_case(1ull << phys);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s exit|native|guestloop|sregs_resume|syscall|trap N\n"
                        "       %s iretq|int80|pf|maxphyaddr\n       %s all [N]\n",
                argv[0], argv[0], argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_verbose = getenv("KVM_FLOOR_VERBOSE") != NULL;
    const char *cmd = argv[1];
    long n = argc > 2 ? atol(argv[2]) : 0;
    if (!strcmp(cmd, "native"))
        return cmd_native(n > 0 ? n : 100000000);
    kvm_global_init();
    if (!strcmp(cmd, "exit"))
        return cmd_exit(n > 0 ? n : 20000, 0);
    if (!strcmp(cmd, "iflags"))
        return cmd_iflags(n > 0 ? n : 100000);
    if (!strcmp(cmd, "cold"))
        return cmd_cold(n > 0 ? n : 5000);
    if (!strcmp(cmd, "guestloop"))
        return cmd_guestloop(n > 0 ? n : 100000000);
    if (!strcmp(cmd, "sregs_resume"))
        return cmd_sregs_resume(n > 0 ? n : 20000);
    if (!strcmp(cmd, "syscall"))
        return cmd_syscall(n > 0 ? n : 20000);
    if (!strcmp(cmd, "trap"))
        return cmd_trap(n > 0 ? n : 20000);
    if (!strcmp(cmd, "iretq"))
        return cmd_iretq();
    if (!strcmp(cmd, "int80"))
        return cmd_int80();
    if (!strcmp(cmd, "pf"))
        return cmd_pf(n > 0 ? n : 2000);
    if (!strcmp(cmd, "maxphyaddr"))
        return cmd_maxphyaddr();
    if (!strcmp(cmd, "all")) {
        long m = n > 0 ? n : 20000;
        cmd_exit(m, 0);
        cmd_native(100000000);
        cmd_guestloop(100000000);
        cmd_sregs_resume(m);
        cmd_syscall(m);
        cmd_trap(m);
        cmd_iretq();
        cmd_int80();
        cmd_pf(m / 10);
        cmd_maxphyaddr();
        return 0;
    }
    fprintf(stderr, "unknown command %s\n", cmd);
    return 2;
}
