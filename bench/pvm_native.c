/*
 * pvm_native.c - can a userspace VMM run a vCPU's CPL0 code natively on this
 * host's kvm_pvm, and what do the round trips cost? (issue 15; bench/README.md,
 * "Native CPL0 on this host's PVM build")
 *   gcc -O2 -Wall -o bench/out/pvm_native bench/pvm_native.c
 *   bench/out/pvm_native suite 1      CPL0 made native by the guest's wrmsr of
 *                                     0x4b564d10 (a zeroed page's address)
 *   bench/out/pvm_native suite 0      CPL0 left emulated, for comparison
 * Each suite times: (D) a dec/jnz loop at CPL0, at CPL3 and in this process;
 * (C) an `out` exit to this process from CPL0 and from CPL3 (the C floor);
 * (A) where a user `syscall` lands; (B) a user ud2 / int3 through the IDT to
 * CPL0 and back with iretq; (E) the same with a CR3 switch at CPL0.
 * PVM_NATIVE_KFLAGS=1 maps the CPL0 code, stacks and data supervisor-only
 * (U=0), as pyxen maps its own: with native CPL0 the suite then hangs.
 * The `loop` and `try` subcommands are the probe's first explorations.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
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
/* dump KVM binary stats (names + values) for an fd (vm or vcpu) */
static void dump_stats(int fd, const char *filter)
{
    int sfd = ioctl(fd, KVM_GET_STATS_FD, NULL);
    if (sfd < 0) { perror("KVM_GET_STATS_FD"); return; }
    struct kvm_stats_header h;
    if (pread(sfd, &h, sizeof h, 0) != sizeof h) { perror("hdr"); close(sfd); return; }
    size_t dsz = sizeof(struct kvm_stats_desc) + h.name_size;
    char *descs = calloc(h.num_desc, dsz);
    pread(sfd, descs, h.num_desc * dsz, h.desc_offset);
    for (unsigned i = 0; i < h.num_desc; i++) {
        struct kvm_stats_desc *d = (void *)(descs + i * dsz);
        uint64_t val[4] = {0};
        pread(sfd, val, 8 * (d->size < 4 ? d->size : 4), h.data_offset + d->offset);
        if (filter && !strstr(d->name, filter)) continue;
        if (!filter && !val[0]) continue;
        printf("  stat %s = %llu\n", d->name, (unsigned long long)val[0]);
    }
    free(descs); close(sfd);
}


#define MEM_SIZE   (8ull << 20)
#define PML4_A     0x1000ull
#define PDPT_A     0x2000ull
#define PD_A       0x3000ull
#define PT0        0x4000ull
#define PT1        0x5000ull
#define PML4_B     0x6000ull
#define GDT_GPA    0x9000ull
#define TSS_GPA    0xA000ull
#define IDT_GPA    0xD000ull
#define TSS_LIMIT  (0x68 + 8192)
#define UCODE      0x10000ull
#define KSTUBS     0x12000ull
#define KCODE      0x20000ull
#define KLSTAR     0x24000ull
#define USTACK_TOP 0x30000ull
#define KSTACK_TOP 0x38000ull
#define DATA       0x40000ull
#define HI_BASE    0xffff880000000000ull   /* PML4 slot 272 alias of GPA 0.. */

#define PTE_P 1ull
#define PTE_W 2ull
#define PTE_U 4ull
#define PTE_PS 0x80ull

#define SEL_KCODE 0x10
#define SEL_KDATA 0x18
#define SEL_UCODE 0x33
#define SEL_UDATA 0x2b
#define SEL_TSS   0x40

#define BLOB(name, body)                                   \
    asm(".pushsection .rodata.guest,\"a\"\n"               \
        ".globl " #name "\n" #name ":\n" body "\n"         \
        ".globl " #name "_end\n" #name "_end:\n"           \
        ".popsection\n");                                  \
    extern const uint8_t name[], name##_end[];

/* CPL0: loop rdi times, then out 0xf2 (and again, forever) */
BLOB(k_loop, "1: mov %rdi, %rcx\n 2: dec %rcx\n jnz 2b\n out %al, $0xf2\n jmp 1b")
/* CPL0: out loop */
BLOB(k_out, "1: out %al, $0xf2\n jmp 1b")
/* CPL3: loop rdi times, then out 0xf0 */
BLOB(u_loop, "1: mov %rdi, %rcx\n 2: dec %rcx\n jnz 2b\n out %al, $0xf0\n jmp 1b")
BLOB(u_out, "1: out %al, $0xf0\n jmp 1b")
/* CPL0: probe state: cs, ss, rflags, then out 0xf3 */
BLOB(k_state, "mov %cs, %ebx\n mov %ss, %edx\n pushfq\n pop %rbp\n out %al, $0xf3\n ud2")


/* CPL0 init: register the VIF page (guest wrmsr 0x4b564d10 = rax) -> native CPL0 */
BLOB(k_init, "mov $0x4b564d10, %ecx\n xor %edx, %edx\n wrmsr\n out %al, $0xf3\n ud2")
/* user: r12 syscalls, then out 0xf0 */
BLOB(u_sys, "1: syscall\n dec %r12\n jnz 1b\n out %al, $0xf0\n jmp 1b")
BLOB(u_ud, "1: ud2\n dec %r12\n jnz 1b\n out %al, $0xf0\n jmp 1b")
BLOB(u_int3, "1: int3\n dec %r12\n jnz 1b\n out %al, $0xf0\n jmp 1b")
BLOB(u_cs, "mov %cs, %ebx\n out %al, $0xf0\n ud2")
/* LSTAR handlers */
BLOB(h_sysret, "sysretq")
BLOB(h_jmprcx, "jmp *%rcx")
BLOB(h_cs, "mov %cs, %ebx\n mov %ss, %edx\n out %al, $0xf2\n sysretq")
BLOB(h_ud_iret, "addq $2, (%rsp)\n iretq")
BLOB(h_ud_cr3_iret, "push %rax\n mov %cr3, %rax\n xor $0x7000, %rax\n mov %rax, %cr3\n pop %rax\n addq $2, (%rsp)\n iretq")
BLOB(h_iret, "iretq")
BLOB(h_sys_cr3, "mov %cr3, %rax\n xor $0x7000, %rax\n mov %rax, %cr3\n sysretq")

static int g_kvm;
static size_t g_run_size;
static struct kvm_cpuid2 *g_cpuid;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fatal: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (errno=%d %s)\n", errno, strerror(errno));
    va_end(ap);
    exit(1);
}
#define CHK(fd, req, arg) do { if (ioctl(fd, req, arg) < 0) die(#req); } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct vm {
    int fd, vcpu;
    struct kvm_run *run;
    uint8_t *mem;
    struct kvm_sregs s0;
};

static uint64_t *q(struct vm *v, uint64_t gpa) { return (uint64_t *)(v->mem + gpa); }
static void put(struct vm *v, uint64_t gpa, const uint8_t *b, const uint8_t *e) { memcpy(v->mem + gpa, b, e - b); }

static struct kvm_segment seg(uint16_t sel, int code, int dpl, int l)
{
    struct kvm_segment s = {0};
    s.limit = 0xffffffff; s.selector = sel; s.type = code ? 11 : 3; s.present = 1;
    s.dpl = dpl; s.db = code ? !l : 1; s.s = 1; s.l = l; s.g = 1;
    return s;
}

static int set_msr(struct vm *v, uint32_t idx, uint64_t val)
{
    struct { struct kvm_msrs h; struct kvm_msr_entry e; } m = {{.nmsrs = 1}, {.index = idx, .data = val}};
    return ioctl(v->vcpu, KVM_SET_MSRS, &m);
}

static void dump(struct vm *v, const char *why)
{
    struct kvm_regs r; struct kvm_sregs s;
    ioctl(v->vcpu, KVM_GET_REGS, &r); ioctl(v->vcpu, KVM_GET_SREGS, &s);
    struct kvm_run *run = v->run;
    fprintf(stderr, "[%s] exit_reason=%u", why, run->exit_reason);
    if (run->exit_reason == KVM_EXIT_IO) fprintf(stderr, " io port=0x%x dir=%u", run->io.port, run->io.direction);
    if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
        fprintf(stderr, " suberror=%u ndata=%u", run->internal.suberror, run->internal.ndata);
        for (unsigned i = 0; i < run->internal.ndata && i < 8; i++) fprintf(stderr, " d%u=0x%llx", i, run->internal.data[i]);
    }
    if (run->exit_reason == KVM_EXIT_FAIL_ENTRY) fprintf(stderr, " hw=0x%llx", run->fail_entry.hardware_entry_failure_reason);
    if (run->exit_reason == KVM_EXIT_HYPERCALL) fprintf(stderr, " nr=%llu", run->hypercall.nr);
    fprintf(stderr, "\n  rip=0x%llx rsp=0x%llx rflags=0x%llx rax=0x%llx rbx=0x%llx rcx=0x%llx rdx=0x%llx rbp=0x%llx r11=0x%llx\n",
            r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rbp, r.r11);
    fprintf(stderr, "  cs=0x%x(dpl%u,l%u) ss=0x%x(dpl%u) cr0=0x%llx cr3=0x%llx cr4=0x%llx efer=0x%llx\n",
            s.cs.selector, s.cs.dpl, s.cs.l, s.ss.selector, s.ss.dpl, s.cr0, s.cr3, s.cr4, s.efer);
}

static void set_gate(struct vm *v, int vec, uint64_t target, int dpl)
{
    uint8_t *g = v->mem + IDT_GPA + vec * 16;
    memset(g, 0, 16);
    g[0] = target; g[1] = target >> 8; g[2] = SEL_KCODE; g[3] = 0; g[4] = 0;
    g[5] = 0x8e | (dpl << 5); g[6] = target >> 16; g[7] = target >> 24;
    uint32_t hi = target >> 32; memcpy(g + 8, &hi, 4);
}

/* IDT stub: push vec; out 0xf1; ud2  (no err code normalisation: just report) */
static void write_stub(struct vm *v, int vec)
{
    uint8_t *p = v->mem + KSTUBS + vec * 16;
    p[0] = 0x68; uint32_t vv = vec; memcpy(p + 1, &vv, 4);  /* push imm32 */
    p[5] = 0xe6; p[6] = 0xf1;                               /* out %al, $0xf1 */
    p[7] = 0x0f; p[8] = 0x0b;                               /* ud2 */
}

static int kflags = 0; /* bit0: kernel pages U=0 */

static void vm_create(struct vm *v)
{
    memset(v, 0, sizeof *v);
    v->fd = ioctl(g_kvm, KVM_CREATE_VM, 0);
    if (v->fd < 0) die("KVM_CREATE_VM");
    v->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    struct kvm_userspace_memory_region reg = {.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE, .userspace_addr = (uint64_t)v->mem};
    CHK(v->fd, KVM_SET_USER_MEMORY_REGION, &reg);
    v->vcpu = ioctl(v->fd, KVM_CREATE_VCPU, 0);
    if (v->vcpu < 0) die("KVM_CREATE_VCPU");
    v->run = mmap(NULL, g_run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
    CHK(v->vcpu, KVM_SET_CPUID2, g_cpuid);

    /* page tables: identity 0..4M (4K pages) + PML4[272] alias */
    *q(v, PML4_A) = PDPT_A | PTE_P | PTE_W | PTE_U;
    *q(v, PML4_A + 272 * 8) = PDPT_A | PTE_P | PTE_W | PTE_U;
    *q(v, PDPT_A) = PD_A | PTE_P | PTE_W | PTE_U;
    *q(v, PD_A) = PT0 | PTE_P | PTE_W | PTE_U;
    *q(v, PD_A + 8) = PT1 | PTE_P | PTE_W | PTE_U;
    for (uint64_t i = 1; i < 512; i++) {
        uint64_t u = PTE_U;
        uint64_t a = i << 12;
        if ((kflags & 1) && (a >= KSTUBS && a < USTACK_TOP && !(a >= UCODE && a < KSTUBS))) u = 0;
        if ((kflags & 1) && (a >= 0x31000 && a < 0x40000)) u = 0;
        *q(v, PT0 + i * 8) = a | PTE_P | PTE_W | u;
    }
    for (uint64_t i = 0; i < 512; i++)
        *q(v, PT1 + i * 8) = ((2ull << 20) + (i << 12)) | PTE_P | PTE_W | PTE_U;
    memcpy(v->mem + PML4_B, v->mem + PML4_A, 4096);

    uint64_t *gdt = q(v, GDT_GPA);
    gdt[1] = 0x00cf9b000000ffffull; gdt[2] = 0x00af9b000000ffffull; gdt[3] = 0x00cf93000000ffffull;
    gdt[4] = 0x00cffb000000ffffull; gdt[5] = 0x00cff3000000ffffull; gdt[6] = 0x00affb000000ffffull;
    uint64_t tb = TSS_GPA, tl = TSS_LIMIT;
    gdt[8] = (tl & 0xffff) | ((tb & 0xffffff) << 16) | (0x89ull << 40) | (((tl >> 16) & 0xf) << 48) | (((tb >> 24) & 0xff) << 56);
    gdt[9] = tb >> 32;
    uint8_t *tss = v->mem + TSS_GPA;
    uint64_t rsp0 = KSTACK_TOP; memcpy(tss + 4, &rsp0, 8);
    uint16_t iomap = 0x68; memcpy(tss + 102, &iomap, 2);
    memset(tss + 0x68, 0, 8192); tss[0x68 + 8192] = 0xff;
    for (int i = 0; i < 256; i++) { write_stub(v, i); set_gate(v, i, KSTUBS + i * 16, 0); }

    struct kvm_sregs s;
    CHK(v->vcpu, KVM_GET_SREGS, &s);
    s.cr0 = 0x80050033; s.cr4 = 0x620; s.efer = 0xd01; s.cr3 = PML4_A;
    s.cs = seg(SEL_KCODE, 1, 0, 1); s.ss = seg(SEL_KDATA, 0, 0, 0);
    s.ds = s.es = seg(0, 0, 0, 0); s.ds.present = s.es.present = 0; s.ds.unusable = s.es.unusable = 1;
    s.fs = s.gs = s.ds;
    s.tr = (struct kvm_segment){.base = TSS_GPA, .limit = TSS_LIMIT, .selector = SEL_TSS, .type = 11, .present = 1};
    s.ldt = (struct kvm_segment){.type = 2, .unusable = 1};
    s.gdt.base = GDT_GPA; s.gdt.limit = 10 * 8 - 1;
    s.idt.base = IDT_GPA; s.idt.limit = 256 * 16 - 1;
    v->s0 = s;
    set_msr(v, 0xc0000081, ((uint64_t)0x20 << 48) | ((uint64_t)SEL_KCODE << 32));
    set_msr(v, 0xc0000082, KLSTAR);
    set_msr(v, 0xc0000084, 0x4700);
}

static void set_state(struct vm *v, int cpl, uint64_t rip, uint64_t rsp, uint64_t rdi)
{
    struct kvm_sregs s = v->s0;
    if (cpl == 3) {
        s.cs = seg(SEL_UCODE, 1, 3, 1); s.ss = seg(SEL_UDATA, 0, 3, 0); s.ds = s.es = s.ss;
    }
    CHK(v->vcpu, KVM_SET_SREGS, &s);
    struct kvm_regs r = {0};
    r.rip = rip; r.rsp = rsp; r.rdi = rdi; r.rflags = cpl == 3 ? 0x202 : 0x2;
    CHK(v->vcpu, KVM_SET_REGS, &r);
}

static int run(struct vm *v)
{
    if (ioctl(v->vcpu, KVM_RUN, 0) < 0) { if (errno == EINTR) return -1; die("KVM_RUN"); }
    return v->run->exit_reason;
}

static int expect_io(struct vm *v, int port, const char *why)
{
    for (;;) {
        int r = run(v);
        if (r == -1) continue;
        if (r == KVM_EXIT_IO && v->run->io.port == port) return 0;
        dump(v, why);
        return -1;
    }
}

static double native_loop(uint64_t n)
{
    double t0 = now();
    asm volatile("mov %0, %%rcx\n 1: dec %%rcx\n jnz 1b" :: "r"(n) : "rcx");
    return now() - t0;
}

/* time loop of n iters at cpl (code at base+off) ; returns seconds */
static double time_loop(int cpl, uint64_t base, uint64_t n)
{
    struct vm v; vm_create(&v);
    put(&v, KCODE, k_loop, k_loop_end);
    put(&v, UCODE, u_loop, u_loop_end);
    uint64_t rip = base + (cpl == 3 ? UCODE : KCODE);
    set_state(&v, cpl, rip, base + (cpl == 3 ? USTACK_TOP : KSTACK_TOP), n);
    int port = cpl == 3 ? 0xf0 : 0xf2;
    if (expect_io(&v, port, "loop warm")) return -1;
    double t0 = now();
    if (expect_io(&v, port, "loop")) return -1;
    double t = now() - t0;
    struct kvm_sregs s; ioctl(v.vcpu, KVM_GET_SREGS, &s);
    printf("  (cs=0x%x dpl%u at exit)\n", s.cs.selector, s.cs.dpl);
    close(v.vcpu); close(v.fd); munmap(v.mem, MEM_SIZE);
    return t;
}


#define VIF_GPA   0x41000ull
#define K_INIT    (KCODE + 0x2000)
#define K_OUT     (KCODE + 0x2100)
#define H_UD      (KCODE + 0x2200)
#define H_BP      (KCODE + 0x2300)
#define U_SYS     (UCODE + 0x100)
#define U_UD      (UCODE + 0x200)
#define U_INT3    (UCODE + 0x300)
#define U_CS      (UCODE + 0x400)

static void suite_vm(struct vm *v, int native, int ud_cr3, const char *lstar)
{
    vm_create(v);
    put(v, KCODE, k_loop, k_loop_end);
    put(v, K_INIT, k_init, k_init_end);
    put(v, K_OUT, k_out, k_out_end);
    put(v, UCODE, u_loop, u_loop_end);
    put(v, U_SYS, u_sys, u_sys_end);
    put(v, U_UD, u_ud, u_ud_end);
    put(v, U_INT3, u_int3, u_int3_end);
    put(v, U_CS, u_cs, u_cs_end);
    if (ud_cr3) put(v, H_UD, h_ud_cr3_iret, h_ud_cr3_iret_end); else put(v, H_UD, h_ud_iret, h_ud_iret_end);
    put(v, H_BP, h_iret, h_iret_end);
    set_gate(v, 6, H_UD, 0);
    set_gate(v, 3, H_BP, 3);
    if (!strcmp(lstar, "sysret")) put(v, KLSTAR, h_sysret, h_sysret_end);
    else if (!strcmp(lstar, "jmprcx")) put(v, KLSTAR, h_jmprcx, h_jmprcx_end);
    else if (!strcmp(lstar, "cs")) put(v, KLSTAR, h_cs, h_cs_end);
    else if (!strcmp(lstar, "cr3")) put(v, KLSTAR, h_sys_cr3, h_sys_cr3_end);
    set_state(v, 0, K_INIT, KSTACK_TOP, 0);
    if (native) {
        struct kvm_regs r; ioctl(v->vcpu, KVM_GET_REGS, &r); r.rax = VIF_GPA; ioctl(v->vcpu, KVM_SET_REGS, &r);
        if (expect_io(v, 0xf3, "init")) exit(1);
    }
}

static void go(struct vm *v, int cpl, uint64_t rip, uint64_t rdi, uint64_t r12)
{
    struct kvm_sregs s = v->s0; CHK(v->vcpu, KVM_GET_SREGS, &s);
    if (cpl == 3) { s.cs = seg(SEL_UCODE, 1, 3, 1); s.ss = seg(SEL_UDATA, 0, 3, 0); }
    else { s.cs = seg(SEL_KCODE, 1, 0, 1); s.ss = seg(SEL_KDATA, 0, 0, 0); }
    s.cr3 = PML4_A;
    CHK(v->vcpu, KVM_SET_SREGS, &s);
    struct kvm_regs r = {0};
    r.rip = rip; r.rdi = rdi; r.r12 = r12; r.rsp = cpl == 3 ? USTACK_TOP : KSTACK_TOP; r.rflags = cpl == 3 ? 0x202 : 0x2;
    CHK(v->vcpu, KVM_SET_REGS, &r);
}

/* one timed KVM_RUN ending in out to port; returns seconds or -1 */
static double timed(struct vm *v, int port, const char *why)
{
    double t0 = now();
    if (expect_io(v, port, why)) return -1;
    return now() - t0;
}

static void suite(int native, uint64_t nloop, uint64_t n, const char *lstar)
{
    struct vm v;
    printf("--- %s CPL0 (VIF registered via guest wrmsr 0x4b564d10: %s), LSTAR handler=%s\n",
           native ? "native" : "emulated", native ? "yes" : "no", lstar);
    suite_vm(&v, native, 0, lstar);
    uint64_t emN = native ? n : (n > 2000 ? 2000 : n);
    uint64_t lN = native ? nloop : 20000;

    /* D: loops */
    double nat = native_loop(nloop); printf("D native process loop: %.3f ns/iter (n=%llu)\n", nat / nloop * 1e9, (unsigned long long)nloop);
    go(&v, 0, KCODE, 1000, 0); timed(&v, 0xf2, "kloop warm");
    go(&v, 0, KCODE, lN, 0); double t = timed(&v, 0xf2, "kloop");
    printf("D CPL0 loop: %.3f ns/iter (n=%llu)\n", t / lN * 1e9, (unsigned long long)lN);
    go(&v, 3, UCODE, 1000, 0); timed(&v, 0xf0, "uloop warm");
    go(&v, 3, UCODE, nloop, 0); t = timed(&v, 0xf0, "uloop");
    printf("D CPL3 loop: %.3f ns/iter (n=%llu)\n", t / nloop * 1e9, (unsigned long long)nloop);

    /* C: exits to userspace from CPL0 and from CPL3 (floor) */
    for (int cpl = 0; cpl <= 3; cpl += 3) {
        go(&v, cpl, cpl ? (UCODE + 0x800) : K_OUT, 0, 0);
        put(&v, UCODE + 0x800, u_out, u_out_end);
        int port = cpl ? 0xf0 : 0xf2;
        for (int i = 0; i < 100; i++) if (expect_io(&v, port, "out warm")) return;
        double t0 = now();
        for (uint64_t i = 0; i < emN; i++) if (expect_io(&v, port, "out")) return;
        t = now() - t0;
        printf("C CPL%d out->VMM->KVM_RUN round trip: %.2f us (n=%llu)%s\n", cpl, t / emN * 1e6, (unsigned long long)emN,
               cpl ? "  [the C floor]" : "");
    }

    /* where does a user syscall land? */
    {
        struct vm w; suite_vm(&w, native, 0, "cs");
        go(&w, 3, U_SYS, 0, 1);
        int e = run(&w);
        struct kvm_regs r; ioctl(w.vcpu, KVM_GET_REGS, &r);
        struct kvm_sregs s; ioctl(w.vcpu, KVM_GET_SREGS, &s);
        if (e == KVM_EXIT_IO && w.run->io.port == 0xf2)
            printf("A user syscall lands at LSTAR with cs=0x%llx ss=0x%llx (sregs cs=0x%x dpl%u) rcx=0x%llx r11=0x%llx rsp=0x%llx\n",
                   r.rbx, r.rdx, s.cs.selector, s.cs.dpl, r.rcx, r.r11, r.rsp);
        else dump(&w, "syscall landing");
        close(w.vcpu); close(w.fd); munmap(w.mem, MEM_SIZE);
    }
    /* A: user syscall -> LSTAR handler -> back to user, no exit */
    go(&v, 3, U_SYS, 0, 10); if (timed(&v, 0xf0, "A warm") >= 0) {
        go(&v, 3, U_SYS, 0, emN); t = timed(&v, 0xf0, "A");
        if (t >= 0) printf("A user syscall -> LSTAR(%s) -> user: %.3f us/round trip (n=%llu, no exit)\n", lstar, t / emN * 1e6, (unsigned long long)emN);
    }
    /* B: user ud2 -> IDT #UD -> CPL0 'addq $2,(%%rsp); iretq' -> user */
    go(&v, 3, U_UD, 0, 10); if (timed(&v, 0xf0, "B warm") >= 0) {
        go(&v, 3, U_UD, 0, emN); t = timed(&v, 0xf0, "B");
        if (t >= 0) printf("B user ud2 -> IDT -> CPL0 addq/iretq -> user: %.3f us/round trip (n=%llu, no exit)\n", t / emN * 1e6, (unsigned long long)emN);
    }
    go(&v, 3, U_INT3, 0, 10); if (timed(&v, 0xf0, "B3 warm") >= 0) {
        go(&v, 3, U_INT3, 0, emN); t = timed(&v, 0xf0, "B3");
        if (t >= 0) printf("B user int3 -> IDT -> CPL0 iretq -> user: %.3f us/round trip (n=%llu, no exit)\n", t / emN * 1e6, (unsigned long long)emN);
    }
    dump_stats(v.vcpu, "insn_emulation"); dump_stats(v.vcpu, "exits");
    close(v.vcpu); close(v.fd); munmap(v.mem, MEM_SIZE);
    /* E: ud2 handler switching CR3 each time */
    suite_vm(&v, native, 1, lstar);
    go(&v, 3, U_UD, 0, 10); if (timed(&v, 0xf0, "E warm") >= 0) {
        go(&v, 3, U_UD, 0, emN); t = timed(&v, 0xf0, "E");
        if (t >= 0) printf("E user ud2 -> CPL0 (mov cr3 toggle) iretq -> user: %.3f us/round trip (n=%llu)\n", t / emN * 1e6, (unsigned long long)emN);
    }
    close(v.vcpu); close(v.fd); munmap(v.mem, MEM_SIZE);
}

int main(int argc, char **argv)
{
    alarm(120);
    g_kvm = open("/dev/kvm", O_RDWR);
    if (g_kvm < 0) die("open /dev/kvm");
    g_run_size = ioctl(g_kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    g_cpuid = calloc(1, sizeof(*g_cpuid) + 256 * sizeof(struct kvm_cpuid_entry2));
    g_cpuid->nent = 256;
    CHK(g_kvm, KVM_GET_SUPPORTED_CPUID, g_cpuid);
    const char *t = argc > 1 ? argv[1] : "loop";
    uint64_t n = argc > 2 ? strtoull(argv[2], 0, 0) : 100000;
    if (getenv("PVM_NATIVE_KFLAGS")) kflags = strtol(getenv("PVM_NATIVE_KFLAGS"), 0, 0);
    if (!strcmp(t, "suite")) {
        int native = argc > 2 ? atoi(argv[2]) : 1;
        uint64_t nl = argc > 3 ? strtoull(argv[3], 0, 0) : 200000000ull;
        uint64_t nn = argc > 4 ? strtoull(argv[4], 0, 0) : 20000;
        suite(native, nl, nn, argc > 5 ? argv[5] : "sysret");
        return 0;
    }
    if (!strcmp(t, "try")) {
        /* argv[2] = hex bytes of CPL0 code, followed automatically by out 0xf3; then time k_loop in same VM */
        struct vm v; vm_create(&v);
        put(&v, KCODE, k_loop, k_loop_end);
        const char *h = argv[2]; uint8_t *p = v.mem + KCODE + 0x1000; int k = 0;
        while (h[0] && h[1]) { unsigned b; sscanf(h, "%2x", &b); p[k++] = b; h += 2; while (*h == ' ') h++; }
        p[k++] = 0xe6; p[k++] = 0xf3; p[k++] = 0x0f; p[k++] = 0x0b;
        set_state(&v, 0, KCODE + 0x1000, KSTACK_TOP, 0);
        struct kvm_regs r; ioctl(v.vcpu, KVM_GET_REGS, &r);
        r.rbx = DATA; r.rdi = DATA; r.rsi = DATA + 0x1000; r.rdx = 0; r.rcx = 0; r.rax = argc > 3 ? strtoull(argv[3], 0, 0) : 0;
        ioctl(v.vcpu, KVM_SET_REGS, &r);
        for (int i = 0; i < 5; i++) { int e = run(&v); dump(&v, "try"); if (e == KVM_EXIT_IO && v.run->io.port == 0xf3) break; if (e != KVM_EXIT_IO && e != KVM_EXIT_HYPERCALL) break; }
        dump_stats(v.vcpu, "hypercalls"); dump_stats(v.vcpu, "insn_emulation");
        ioctl(v.vcpu, KVM_GET_REGS, &r); r.rip = KCODE; r.rdi = n ? 20000 : 20000; ioctl(v.vcpu, KVM_SET_REGS, &r);
        double t0 = now(); int e = run(&v); double dt = now() - t0;
        if (e != KVM_EXIT_IO) dump(&v, "loop after try");
        printf("cpl0 loop after try: %.3f ns/iter\n", dt / 20000 * 1e9);
        dump_stats(v.vcpu, "insn_emulation");
        return 0;
    }
    if (!strcmp(t, "loop")) {
        double nat = native_loop(n);
        printf("native: %.3f ns/iter\n", nat / n * 1e9);
        double a = time_loop(0, 0, n);
        printf("cpl0 low : %.3f ns/iter\n", a / n * 1e9);
        double b = time_loop(0, HI_BASE, n);
        printf("cpl0 high: %.3f ns/iter\n", b / n * 1e9);
        double c = time_loop(3, 0, n);
        printf("cpl3 low : %.3f ns/iter\n", c / n * 1e9);
    }
    return 0;
}
