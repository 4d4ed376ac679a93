/*
 * fuzz: a hypercall fuzzer.  Both vCPUs (command line "seed=N calls=M
 * [seconds=S] [progress=P] [domid=D] [only=N,..] [skip=N,..] [portio=PCT]
 * [portkinds=MASK] [portforce=PORT]") issue pseudo-random hypercalls, each
 * from its own stream of the seed: every number 0..127 through the
 * hypercall page, numbers of any 64-bit value through `syscall` (which
 * pyxen, like Xen since XSA-466's Linux, takes as a hypercall in guest
 * kernel mode), every sub-op and out-of-range ones, with random structures
 * (scratch buffers filled with random bytes, then selected fields set to
 * boundary or meaningful values), pointers into its own memory (argument
 * buffers, text and page tables mapped read-only, the M2P), into the
 * hypervisor hole, non-canonical and unmapped addresses, and integers at
 * their boundaries (0, 1, -1, INT_MIN/MAX, 1<<63, page-aligned/unaligned).
 *
 * It prints per-hypercall counts of 0 / each -errno / positive results as it
 * goes and, at the end, every distinct (hypercall, sub-op, result) path it
 * saw ("paths:" lines, tokens NR.SUB=RESULTxCOUNT; SUB "-" = none, "x" = 64
 * or more, suffix "h" = the int-typed command had garbage in bits 32-63;
 * RESULT "+" positive, "g" negative outside -1..-4095, "i" an iret that
 * landed), then "Test result: SUCCESS".  It fails itself only for what it
 * sees of its own integrity: an unexpected trap, its text changed, a call
 * that restores its own state refused, the other vCPU stuck.  Whether each
 * result is an errno Xen could give is for tests/hv/fuzz_driver.py to judge.
 *
 * What the fuzzer must not do to itself, and how it is kept alive (the
 * calls are still made, against scratch state, or made and undone):
 *
 *  - SCHEDOP_shutdown / shutdown_code with a valid reason (the first ends
 *    the domain, the second latches the final reason), sched_op_compat
 *    block/shutdown, a watchdog that would fire: only invalid reasons,
 *    bad pointers, watchdog ids that do not exist.
 *  - SCHEDOP_block: made only with evtchn_upcall_pending already set, so it
 *    returns at once; SCHEDOP_poll: always with a timeout at most 200 us
 *    ahead (or in the past), never 0 (no timeout).
 *  - iret: made with a frame the fuzzer built (guest kernel mode, flat
 *    selectors, no TF/DF/AC/NT), directly, from a multicall batch and
 *    through `syscall`; it lands on a label and is counted as "i".  An
 *    iret to user mode or with a bad frame would crash the domain, as Xen.
 *  - set_trap_table, set_callbacks, callback_op, set_gdt, set_segment_base
 *    (GS kernel), fpu_taskswitch, set_debugreg, MMUEXT_SET_LDT,
 *    NEW_USER_BASEPTR: made with random arguments, then the fuzzer's own
 *    values are put back.  Its event callback only masks events again
 *    (events stay masked; an iret with IF or SCHEDOP_block may unmask).
 *  - MMUEXT_NEW_BASEPTR: only the live L4, a pinned copy of it (then back)
 *    or frames that are not the domain's.
 *  - Page tables: the live ones are never written, pinned or unpinned;
 *    frame numbers pyxen would write to (mmu_update, CLEAR_PAGE/COPY_PAGE
 *    destinations, update_descriptor, set_gdt frames, grant copy
 *    destinations, decrease_reservation, FIFO control blocks and event
 *    arrays) are scratch frames (a pool of 64 unmapped frames it builds
 *    L1-L4 tables in, its sink pages) or not the domain's at all.  Linear
 *    addresses pyxen would change a PTE for (update_va_mapping, grant maps)
 *    are in a 2 MiB window whose L1 is a scratch table hooked into the live
 *    L2, or where no L1 exists; the window maps its own frames writable
 *    only if they are sinks (never code, data or tables of its own).
 *  - Asynchronous writers (runstate and time areas) only point at sink
 *    pages; register_vcpu_info only at a page kept for it (the fuzzer
 *    follows its vcpu_info there).
 *  - VCPUOP_down of itself is excluded, and vCPU 1 never takes vCPU 0 down
 *    (both downing the other would stop the domain); vCPU 0 may take vCPU 1
 *    down and brings it up again.  VCPUOP_initialise only of initialised
 *    or missing vCPUs.
 *  - console_io writes no bytes (count 0, or buffers that fault), so the
 *    console stays readable.
 *  - Grant entries it writes name scratch frames (writable) or its own
 *    frames only read-only, laid out so that both the v1 and the v2 reading
 *    of the table stay so.
 *  - Port I/O (2% of the steps, portio=PCT): in/out of every size, string
 *    forms, to pyxen's own ports (0xe0 hypercall, 0xe2/0xe3 syscall: the
 *    TSS lets a CPL3 guest reach them) and to ports a domU has no access to
 *    (#GP, taken by the exception table; an IN from pyxen's own ports is
 *    a #GP too, as Xen has no such port: pyxen first lets KVM complete
 *    the IN it owes, then undoes it).  portkinds=MASK narrows the kinds.
 * Pointers that pyxen reads as requests (batches, frame lists, multicall
 * entries) point at buffers the fuzzer sanitized, whose end is an unmapped
 * guard page (a longer count faults), or at unmapped/hole addresses;
 * pointers pyxen writes to never point at those buffers.
 */
#include "events.h"

#define NV          2           /* fuzzing vCPUs */
#define IN_PAGES    6           /* argument buffers per vCPU, then a guard page */
#define OUT_PAGES   2           /* output sink per vCPU, then a guard page */
#define POOL        64          /* unmapped scratch frames (tables, targets) */
#define GNT_FRAMES  4           /* grant frames mapped for writing entries */
#define IN_SIZE     (IN_PAGES * 4096)
#define OUT_SIZE    (OUT_PAGES * 4096)
#define MAX_PAGES   65536       /* the frame map below covers 256 MiB */

#define __HYPERVISOR_iret_nr 23
#define XEN_M2P_START   0xffff808000000000UL
#define L1E_P   _PAGE_PRESENT
#define L1E_RW  _PAGE_RW

/* ------------------------------------------------------------------ */
/* memory the fuzzer owns                                             */
/* ------------------------------------------------------------------ */
static char in_area[NV][IN_PAGES + 1][4096] __page_aligned_bss;
static char out_area[NV][OUT_PAGES + 1][4096] __page_aligned_bss;
static char async_area[NV][4096] __page_aligned_bss;
static char vi_page[NV][4096] __page_aligned_bss;
static char grant_area[GNT_FRAMES][4096] __page_aligned_bss;
static char win_view[4096] __page_aligned_bss;      /* the window's L1, read-only */
static char ap_stack[16384] __aligned(16);
static char ap_ctx[5168] __aligned(16);

static unsigned long pool_mfn[POOL];
static unsigned long sink_mfn[NV * (OUT_PAGES + 1)];
static unsigned int nr_sink;
static unsigned long gnt_mfn[GNT_FRAMES];
static unsigned int nr_gnt;
static unsigned long live_l4, l4_copy, win_l1, shinfo_mfn;
static unsigned long win_va;                    /* 2 MiB window */
static unsigned long live_tables[64];
static unsigned int nr_live_tables;
static unsigned long text_sum;
static unsigned int self_domid = 1;
static unsigned int nvcpus = 1;            /* vCPUs fuzzing */
static unsigned int dom_vcpus = 1;         /* vCPUs the domain has */
static unsigned long self_nr_pages;

/* frame classes (pfn == mfn here; the fuzzer checks p2m at start) */
enum { FR_PROTECTED = 0, FR_SCRATCH = 1, FR_WINL1 = 2, FR_TABLE = 3 };
static uint8_t frame_class[MAX_PAGES];

static bool owned(uint64_t mfn) { return mfn < self_nr_pages; }
/* may pyxen write into this frame on the fuzzer's behalf (by frame number)? */
static bool write_target_ok(uint64_t mfn)
{
    return !owned(mfn) || frame_class[mfn] == FR_SCRATCH || frame_class[mfn] == FR_WINL1;
}
/* May the window map this frame writable?  Not the domain's: pyxen's
 * shared_info, grant and status frames (the only ones it can map) - never
 * writable, the fuzzer's own writes there (an output buffer in the window)
 * would put frames of its own into grant entries. */
static bool window_rw_ok(uint64_t mfn)
{
    return owned(mfn) && (frame_class[mfn] == FR_SCRATCH || frame_class[mfn] == FR_WINL1);
}

/* the vcpu_info each vCPU runs with now (moved by register_vcpu_info) */
static struct vcpu_info *volatile my_vi[NV];

volatile unsigned long fz_upcalls;

/* ------------------------------------------------------------------ */
/* time (pyxen publishes one fixed pvclock for the domain's life)     */
/* ------------------------------------------------------------------ */
static uint64_t t0_tsc, t0_ns;
static uint32_t t_mul;
static int8_t t_shift;

static uint64_t now_ns(void)
{
    uint64_t d = rdtsc_ordered() - t0_tsc;
    d = t_shift >= 0 ? d << t_shift : d >> -t_shift;
    return t0_ns + (uint64_t)(((unsigned __int128)d * t_mul) >> 32);
}

static void time_init(void)
{
    struct vcpu_time_info *t = &shared_info->vcpu_info[0].time;
    uint32_t v;
    do {
        v = t->version;
        barrier();
        t0_tsc = t->tsc_timestamp;
        t0_ns = t->system_time;
        t_mul = t->tsc_to_system_mul;
        t_shift = t->tsc_shift;
        barrier();
    } while ((v & 1) || v != t->version);
}

/* ------------------------------------------------------------------ */
/* random numbers                                                     */
/* ------------------------------------------------------------------ */
struct rng { uint64_t s; };

static uint64_t splitmix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t rnd(struct rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545f4914f6cdd1dULL;
}
static uint64_t below(struct rng *r, uint64_t n) { return n ? rnd(r) % n : 0; }
static bool chance(struct rng *r, unsigned int pct) { return below(r, 100) < pct; }

/* ------------------------------------------------------------------ */
/* results                                                            */
/* ------------------------------------------------------------------ */
#define NR_CODES    131          /* 0..127 through the page, 128: >= 128 through syscall */
#define NR_BIG      128
#define NR_GNTST    129          /* a grant operation's status (GNTST_*), sub-op = command */
#define NR_PORTIO   130          /* port I/O by the guest kernel, sub-op = kind; "g": it trapped */
#define SUB_NONE    65
#define SUB_BIG     64
#define SUB_HI      66           /* + base: garbage in bits 32-63 of the command */
#define RES_ZERO    0
#define RES_POS     1
#define RES_GARBAGE 2
#define RES_IRET    3
#define RES_ERRNO   4            /* + errno (1..255); larger errnos count as garbage */
#define NR_RES      (RES_ERRNO + 256)
#define PATHS       8192

struct path { uint32_t key, count; };

struct stats {
    uint32_t counts[NR_CODES][NR_RES];
    struct path paths[PATHS];
    unsigned long calls, nested, syscalls, distinct;
};
static struct stats stats[NV];

static unsigned int res_code(long ret)
{
    if (ret == 0)
        return RES_ZERO;
    if (ret > 0)
        return RES_POS;
    if (ret >= -255)
        return RES_ERRNO + (unsigned int)-ret;
    return RES_GARBAGE;
}

static void record(unsigned int id, unsigned long nr, unsigned int sub, unsigned int res)
{
    struct stats *s = &stats[id];
    unsigned int n = nr < NR_BIG || nr == NR_GNTST || nr == NR_PORTIO ? (unsigned int)nr : NR_BIG;
    s->counts[n][res]++;
    uint32_t key = (n << 20) | (sub << 10) | res;
    uint32_t h = (key * 2654435761u) & (PATHS - 1);
    for (unsigned int i = 0; i < PATHS; i++, h = (h + 1) & (PATHS - 1)) {
        if (s->paths[h].count == 0) {
            s->paths[h].key = key;
            s->paths[h].count = 1;
            s->distinct++;
            return;
        }
        if (s->paths[h].key == key) {
            s->paths[h].count++;
            return;
        }
    }
}

/* ------------------------------------------------------------------ */
/* one call                                                           */
/* ------------------------------------------------------------------ */
enum how { HOW_PAGE, HOW_SYSCALL, HOW_FRAMED_PAGE, HOW_IRET_PAGE, HOW_FRAMED_SYSCALL };

/* restore bits: what a call may have changed that the fuzzer puts back */
#define R_TRAPS     (1u << 0)
#define R_CALLBACKS (1u << 1)
#define R_GDT       (1u << 2)
#define R_SEGBASE   (1u << 3)
#define R_FPU       (1u << 4)
#define R_DEBUG     (1u << 5)
#define R_LDT       (1u << 6)
#define R_BASEPTR   (1u << 7)
#define R_USERBASE  (1u << 8)
#define R_VCPU1_UP  (1u << 9)
#define R_VCPUINFO  (1u << 10)    /* a register_vcpu_info may have moved one */

struct call {
    uint64_t nr;
    uint64_t a[5];
    unsigned int sub;
    unsigned int how;
    /* register_vcpu_info: which vCPU's, and where it would go */
    int vi_target;
    struct vcpu_info *vi_new;
};

/* what fz_framed() takes (offsets used by the assembly below) */
struct fz_frame {
    uint64_t nr;                             /* 0 */
    uint64_t a[5];                           /* 8 */
    uint64_t rax, r11, rcx, flags, cs, rflags, ss;   /* 48 .. 96 */
    uint64_t how;                            /* 104: 0 call, 1 jmp iret, 2 syscall */
    uint64_t landed;                         /* 112 */
    uint64_t ret;                            /* 120 */
};
_Static_assert(__builtin_offsetof(struct fz_frame, how) == 104, "fz_frame");
void fz_framed(struct fz_frame *fr);
long fz_port_io(unsigned long kind, unsigned long port, unsigned long value, unsigned long arg1,
                unsigned long buf);
extern char fz_port_io_end[];
long fz_syscall(uint64_t nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5);
extern char fz_event_entry[], fz_failsafe_entry[], fz_ap_entry[];

asm(
    ".text\n"
    /* long fz_syscall(nr, a1..a5): a hypercall by `syscall` (rax = any 64-bit number) */
    ".globl fz_syscall\n"
    "fz_syscall:\n"
    "  movq %rdi, %rax\n  movq %rsi, %rdi\n  movq %rdx, %rsi\n  movq %rcx, %rdx\n"
    "  movq %r8, %r10\n  movq %r9, %r8\n"
    "  syscall\n"
    "  ret\n"
    /* void fz_framed(struct fz_frame *): a hypercall with an iret frame
     * (ss, rsp, rflags, cs, rip = fz_landed, flags, rcx, r11, rax) right
     * above the stack pointer pyxen sees, so that an iret (direct, inside a
     * multicall, or through syscall) lands at fz_landed on this stack. */
    ".globl fz_framed\n"
    "fz_framed:\n"
    "  pushq %rbx\n  pushq %rbp\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rdi, %rbx\n"
    "  movq %rsp, %rbp\n"
    "  movq $0, 112(%rbx)\n"
    "  pushq 96(%rbx)\n"              /* ss */
    "  pushq %rbp\n"                  /* rsp */
    "  pushq 88(%rbx)\n"              /* rflags */
    "  pushq 80(%rbx)\n"              /* cs */
    "  leaq fz_landed(%rip), %rax\n"
    "  pushq %rax\n"                  /* rip */
    "  pushq 72(%rbx)\n"              /* flags */
    "  movq 104(%rbx), %rax\n"
    "  cmpq $1, %rax\n  je 1f\n"
    "  cmpq $2, %rax\n  je 2f\n"
    "  pushq 64(%rbx)\n"              /* rcx */
    "  pushq 56(%rbx)\n"              /* r11; the call pushes the rax slot */
    "  movq 8(%rbx), %rdi\n  movq 16(%rbx), %rsi\n  movq 24(%rbx), %rdx\n"
    "  movq 32(%rbx), %r10\n  movq 40(%rbx), %r8\n"
    "  movq (%rbx), %rax\n  shlq $5, %rax\n"
    "  leaq hypercall_page(%rip), %r11\n  addq %r11, %rax\n"
    "  call *%rax\n"
    "  jmp 3f\n"
    "1:\n"                            /* the page's iret entry pushes rcx, r11, rax */
    "  movq 64(%rbx), %rcx\n  movq 56(%rbx), %r11\n  movq 48(%rbx), %rax\n"
    "  jmp hypercall_page + 23 * 32\n"
    "2:\n"
    "  pushq 64(%rbx)\n  pushq 56(%rbx)\n  pushq 48(%rbx)\n"
    "  movq 8(%rbx), %rdi\n  movq 16(%rbx), %rsi\n  movq 24(%rbx), %rdx\n"
    "  movq 32(%rbx), %r10\n  movq 40(%rbx), %r8\n"
    "  movq (%rbx), %rax\n"
    "  syscall\n"
    "  jmp 3f\n"
    "fz_landed:\n"
    "  movq $1, 112(%rbx)\n"
    "3:\n"
    "  movq %rax, 120(%rbx)\n"
    "  movq %rbp, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbp\n  popq %rbx\n"
    "  ret\n"
    /* event callback: count, keep events masked (IF clear in the frame), iret */
    ".globl fz_event_entry\n"
    "fz_event_entry:\n"
    "  popq %rcx\n  popq %r11\n"
    "  andq $~0x200, 16(%rsp)\n"
    "  lock incq fz_upcalls(%rip)\n"
    "  pushq $0\n"
    "  jmp hypercall_page + 23 * 32\n"
    /* long fz_port_io(kind, port, value, arg1, buf): one in/out instruction
     * of the guest kernel.  pyxen's own ports (hypercall 0xe0, syscall 0xe2
     * and 0xe3) pass the TSS I/O bitmap: there rax is a harmless hypercall
     * number and rcx/r11 the return rip/rflags a syscall port takes; any
     * other port raises #GP, which the exception table turns into -9999
     * (PIT channel 2, 0x42, exits directly too: allowed with an IOPL, a
     * #GP at the instruction without). */
    ".globl fz_port_io\n"
    "fz_port_io:\n"
    "  pushq %rbx\n"
    "  movq %rdi, %r10\n"
    "  movq %rdx, %rax\n  movq %rsi, %rdx\n  movq %r8, %rbx\n"
    "  movq %rcx, %rdi\n  xorl %esi, %esi\n  movl $2, %r11d\n"
    "  leaq 9f(%rip), %rcx\n"
    "  jmp *fz_port_kinds(,%r10,8)\n"
    "0: outb %al, (%dx)\n  jmp 9f\n"
    "1: outw %ax, (%dx)\n  jmp 9f\n"
    "2: outl %eax, (%dx)\n  jmp 9f\n"
    "3: inb (%dx), %al\n  jmp 9f\n"
    "4: inw (%dx), %ax\n  jmp 9f\n"
    "5: inl (%dx), %eax\n  jmp 9f\n"
    "6: outb %al, $0xe0\n  jmp 9f\n"
    "7: outb %al, $0xe2\n  jmp 9f\n"
    "8: movq %rbx, %rsi\n  movl $1, %ecx\n"
    "81: rep outsb\n  jmp 9f\n"
    "10: movq %rbx, %rdi\n  movl $1, %ecx\n"
    "101: rep insb\n  jmp 9f\n"
    "9: popq %rbx\n  ret\n"
    "99: movq $-9999, %rax\n  popq %rbx\n  ret\n"
    ".globl fz_port_io_end\n"
    "fz_port_io_end:\n"
    ".pushsection .rodata\n"
    ".p2align 3\n"
    "fz_port_kinds: .quad 0b, 1b, 2b, 3b, 4b, 5b, 6b, 7b, 8b, 10b\n"
    ".popsection\n"
    ".pushsection __ex_table, \"a\"\n"
    ".p2align 3\n"
    ".quad 0b, 99b, 1b, 99b, 2b, 99b, 3b, 99b, 4b, 99b, 5b, 99b, 6b, 99b, 7b, 99b, 81b, 99b, 101b, 99b\n"
    ".popsection\n"
    ".globl fz_failsafe_entry\n"
    "fz_failsafe_entry:\n"
    "  ud2\n"
    ".globl fz_ap_entry\n"
    "fz_ap_entry:\n"
    "  call fz_ap_main\n"
    "  ud2\n");

/* ------------------------------------------------------------------ */
/* per-vCPU fuzzing state                                             */
/* ------------------------------------------------------------------ */
struct fz {
    unsigned int id;
    struct rng r;
    char *in, *out;
    size_t in_lo, in_hi;        /* bump allocators: up from 0, down from IN_SIZE */
    unsigned int restore;
    uint32_t ports[16];         /* ports the fuzzer got back lately */
    uint32_t handles[16];       /* grant handles */
    unsigned int nports, nhandles;
    unsigned long calls;
    uint64_t req_n;             /* elements the last req_array() wrote */
};
static struct fz fzs[NV];
static volatile int go, stop, ap_ready, ap_done;
static unsigned long port_pct = 2, port_kinds = 0x3ff;   /* portio=PCT portkinds=MASK */
static unsigned long port_force;                          /* portforce=PORT */
static unsigned long max_calls, progress_every, seconds;
static uint64_t deadline_ns;

static void fill_random(struct fz *f, void *p, size_t n)
{
    uint8_t *b = p;
    while (n >= 8) {
        uint64_t v = rnd(&f->r);
        memcpy(b, &v, 8);
        b += 8;
        n -= 8;
    }
    while (n--)
        *b++ = (uint8_t)rnd(&f->r);
}

/* a safe input buffer (anything pyxen reads here is harmless) */
static void *alloc_in(struct fz *f, size_t n)
{
    n = (n + 7) & ~7UL;
    if (f->in_lo + n > f->in_hi)
        return NULL;
    void *p = f->in + f->in_lo;
    f->in_lo += n;
    fill_random(f, p, n);
    return p;
}

/* a buffer pyxen reads as requests; the first one ends at the guard page */
static void *alloc_req(struct fz *f, size_t n, bool *at_guard)
{
    n = (n + 7) & ~7UL;
    if (f->in_hi < f->in_lo + n)
        return NULL;
    *at_guard = f->in_hi == IN_SIZE;
    f->in_hi -= n;
    void *p = f->in + f->in_hi;
    fill_random(f, p, n);
    return p;
}

/* ------------------------------------------------------------------ */
/* values                                                             */
/* ------------------------------------------------------------------ */
static const uint64_t boundary[] = {
    0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 511, 512, 1023, 1024,
    2047, 2048, 4095, 4096, 4097, 8191, 8192, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff,
    0x80000000, 0xffffffff, 0x100000000UL, 0xfffffffffUL, 0x7fffffffffffffffUL,
    0x8000000000000000UL, 0xffffffffffffffffUL, 0xfffffffffffffffeUL, 0xffffffff80000000UL,
    0xfffffffffffff000UL, 0x0000800000000000UL, 0xffff800000000000UL,
};

static uint64_t gen_int(struct fz *f)
{
    struct rng *r = &f->r;
    switch (below(r, 10)) {
    case 0: case 1: case 2: case 3:
        return boundary[below(r, ARRAY_SIZE(boundary))];
    case 4: case 5:
        return below(r, 64);
    case 6:
        return rnd(r);
    case 7:
        return (uint32_t)rnd(r);
    case 8:
        return rnd(r) & ~0xfffUL & 0xffffffffffUL;
    default:
        return -(int64_t)below(r, 64);
    }
}

static uint64_t gen_u32(struct fz *f) { return (uint32_t)gen_int(f); }

/* a command/sub-op: mostly defined ones, then out of range ones */
static uint64_t gen_cmd(struct fz *f, unsigned int ndefined)
{
    struct rng *r = &f->r;
    unsigned int p = (unsigned int)below(r, 100);
    if (p < 85)
        return below(r, ndefined);
    if (p < 95)
        return ndefined + below(r, 64 - ndefined + 4);
    return gen_u32(f);
}

static unsigned int sub_of(uint64_t cmd)
{
    unsigned int base = (uint32_t)cmd < 64 ? (unsigned int)(uint32_t)cmd : SUB_BIG;
    return base + (cmd >> 32 ? SUB_HI : 0);
}

/* Xen takes these commands as int: bits 32-63 are garbage it ignores */
static uint64_t maybe_hi(struct fz *f, uint64_t cmd)
{
    if (chance(&f->r, 4))
        cmd = (uint32_t)cmd | (rnd(&f->r) & 0xffffffff00000000UL) | (1UL << 32);
    return cmd;
}

static uint16_t gen_domid(struct fz *f)
{
    static const uint16_t ids[] = { 0x7ff0, 0x7ff0, 0x7ff0, 0, 2, 3, 0x7ff1, 0x7ff2, 0x7ff3,
                                    0x7ff4, 0x7fef, 0x7fff, 0xffff, 0x8000 };
    if (chance(&f->r, 25))
        return (uint16_t)self_domid;
    if (chance(&f->r, 10))
        return (uint16_t)rnd(&f->r);
    return ids[below(&f->r, ARRAY_SIZE(ids))];
}

static uint32_t gen_port(struct fz *f)
{
    static const uint32_t ports[] = { 0, 1, 2, 3, 4, 5, 63, 64, 1022, 1023, 1024, 4095, 4096,
                                      131071, 131072, 0xffffffff, 0x80000000 };
    unsigned int p = (unsigned int)below(&f->r, 100);
    if (p < 45 && f->nports)
        return f->ports[below(&f->r, f->nports)];
    if (p < 55)
        return p & 1 ? start_info->console.domU.evtchn : start_info->store_evtchn;
    if (p < 75)
        return (uint32_t)below(&f->r, 64);
    if (p < 90)
        return ports[below(&f->r, ARRAY_SIZE(ports))];
    return (uint32_t)gen_int(f);
}

static void note_port(struct fz *f, uint32_t port)
{
    f->ports[f->nports < 16 ? f->nports++ : below(&f->r, 16)] = port;
}

static uint32_t gen_vcpu(struct fz *f)
{
    static const uint32_t v[] = { 0, 1, 0, 1, 2, 3, 31, 32, 127, 0xffffffff, 0x80000000 };
    return v[below(&f->r, ARRAY_SIZE(v))];
}

static uint64_t pick_pool(struct fz *f) { return pool_mfn[below(&f->r, POOL)]; }

static uint64_t pick_scratch(struct fz *f)
{
    if (chance(&f->r, 85))
        return pick_pool(f);
    if (chance(&f->r, 30))
        return win_l1;
    return sink_mfn[below(&f->r, nr_sink)];
}

/* A frame number: scratch frames, the fuzzer's own tables and frames (the
 * caller decides whether those may be used), pyxen's frames, frames that
 * are not the domain's, boundary values. */
static uint64_t gen_mfn(struct fz *f)
{
    struct rng *r = &f->r;
    switch (below(r, 20)) {
    case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7:
        return pick_pool(f);
    case 8:
        return win_l1;
    case 9:
        return sink_mfn[below(r, nr_sink)];
    case 10:
        return live_tables[below(r, nr_live_tables)];
    case 11:
        return l4_copy;
    case 12:
        return below(r, self_nr_pages);          /* anything of ours */
    case 13:
        return shinfo_mfn;
    case 14:
        return nr_gnt ? gnt_mfn[below(r, nr_gnt)] + (chance(r, 20) ? 64 : 0) : 0;
    case 15:
        return self_nr_pages + below(r, 4);
    case 16: {
        static const uint64_t big[] = { 1UL << 20, 1UL << 32, (1UL << 40) - 1, 1UL << 40,
                                        0xffffffffUL, 0xfffffffffUL, ~0UL, 0x7ff0, 0xffffffffffUL };
        return big[below(r, ARRAY_SIZE(big))];
    }
    case 17:
        return below(r, 4);
    default:
        return gen_int(f);
    }
}

/* the frame, or a scratch frame if pyxen must not write into it */
static uint64_t target_mfn(struct fz *f, uint64_t mfn)
{
    return write_target_ok(mfn) ? mfn : pick_scratch(f);
}

static uint64_t gen_target_mfn(struct fz *f) { return target_mfn(f, gen_mfn(f)); }

static uint64_t gen_pte_flags(struct fz *f)
{
    static const uint64_t fl[] = {
        0x001, 0x003, 0x005, 0x007, 0x025, 0x027, 0x067, 0x063, 0x023, 0x065,
        0x087, 0x0a7, 0x107, 0x167, 0x00f, 0x017, 0x01f, 0x601, 0xe67,
        0x8000000000000067UL, 0x8000000000000025UL, 0x0010000000000067UL,
        0x4000000000000067UL, 0x7ff0000000000001UL, 0x000, 0x002, 0x066,
    };
    if (chance(&f->r, 10))
        return rnd(&f->r) & 0xfff0000000000fffUL;
    return fl[below(&f->r, ARRAY_SIZE(fl))];
}

static uint64_t gen_pte(struct fz *f)
{
    switch (below(&f->r, 10)) {
    case 0:
        return 0;
    case 1:
        return gen_int(f);
    default:
        return (gen_mfn(f) << 12 & PTE_ADDR_MASK) | gen_pte_flags(f);
    }
}

/* The pool is meant as page tables of one level each (so that pins and
 * hooks get past validation often): pool[0..31] L1s, [32..47] L2s,
 * [48..55] L3s, [56..63] L4s.  0 for frames outside the pool. */
static unsigned int pool_level(uint64_t mfn)
{
    for (unsigned int i = 0; i < POOL; i++)
        if (pool_mfn[i] == mfn)
            return i < 32 ? 1 : i < 48 ? 2 : i < 56 ? 3 : 4;
    return 0;
}

static uint64_t pool_of_level(struct fz *f, unsigned int level)
{
    static const unsigned int first[5] = { 0, 0, 32, 48, 56 }, n[5] = { 32, 32, 16, 8, 8 };
    return pool_mfn[first[level] + below(&f->r, n[level])];
}

/* A value for entry `idx` of the frame `mfn`: for a pool frame mostly an
 * entry its level accepts (a frame or table of the level below, or a
 * read-only linear entry), or empty; else anything gen_pte() makes. */
static uint64_t gen_pte_for(struct fz *f, uint64_t mfn)
{
    unsigned int level = pool_level(mfn);
    unsigned int k = (unsigned int)below(&f->r, 10);
    if (!level || k >= 7)
        return gen_pte(f);
    if (k < 3)
        return 0;
    uint64_t flags = _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED;
    uint64_t target;
    if (level == 1) {
        /* a sink writable, anything of ours (tables too) read-only */
        if (chance(&f->r, 40)) {
            target = sink_mfn[below(&f->r, nr_sink)];
            flags |= _PAGE_RW | _PAGE_DIRTY;
        } else {
            target = chance(&f->r, 50) ? pick_pool(f) : below(&f->r, self_nr_pages);
        }
        if (chance(&f->r, 20))
            flags |= 1UL << 63;             /* NX */
    } else {
        target = chance(&f->r, 85) ? pool_of_level(f, level - 1) : pool_of_level(f, level);
        if (pool_level(target) == level - 1 || chance(&f->r, 10))
            flags |= _PAGE_RW;              /* a linear entry must be read-only */
    }
    return target << 12 | flags;
}

/* a PTE value for an entry of the live window L1 */
static uint64_t window_safe_pte(uint64_t v)
{
    if ((v & L1E_P) && (v & L1E_RW) && !window_rw_ok((v & PTE_ADDR_MASK) >> 12))
        v &= ~L1E_RW;
    return v;
}

/* A machine address inside a frame pyxen may write to: entry-aligned
 * mostly.  (The frame is checked after the shift: a huge "frame number"
 * shifted left by 12 wraps around to a small one.) */
static uint64_t gen_maddr(struct fz *f, uint64_t mfn)
{
    struct rng *r = &f->r;
    uint64_t off;
    if (!write_target_ok((mfn << 12) >> 12) || !write_target_ok(mfn))
        mfn = pick_scratch(f);
    switch (below(r, 8)) {
    case 0: off = below(r, 4096); break;
    case 1: off = 256 * 8 + below(r, 16) * 8; break;     /* Xen's L4 slots */
    case 2: off = 4088; break;
    case 3: off = 0; break;
    default: off = below(r, 512) * 8; break;
    }
    return (mfn << 12) + off;
}

/* ---- addresses ---- */
static bool va_in_window(uint64_t va) { return va >= win_va && va < win_va + (2UL << 20); }

static uint64_t gen_window_va(struct fz *f)
{
    uint64_t va = win_va + below(&f->r, 512) * 4096;
    if (chance(&f->r, 30))
        va += below(&f->r, 4096);
    return va;
}

/* Would pyxen change a PTE of the live page tables (other than the
 * window's) for this linear address?  Walk the live tables (mapped
 * read-only): an L1 other than the window's in the way means yes. */
static bool va_hits_live_l1(uint64_t va)
{
    uint64_t top = va >> 47;
    if (top != 0 && top != 0x1ffff)
        return false;                           /* non-canonical */
    if (va >= HYPERVISOR_VIRT_START && va < HYPERVISOR_VIRT_END)
        return false;
    unsigned long mfn = live_l4;
    for (int level = 4; level >= 2; level--) {
        const volatile uint64_t *t = mfn_to_virt(mfn);
        if (!t)
            return true;                       /* cannot tell: assume it would */
        uint64_t e = t[(va >> (12 + 9 * (level - 1))) & 511];
        if (!(e & _PAGE_PRESENT))
            return false;
        mfn = (e & PTE_ADDR_MASK) >> 12;
        if (level == 2)
            return mfn != win_l1;
    }
    return true;
}

static uint64_t safe_linear(struct fz *f, uint64_t va)
{
    return va_hits_live_l1(va) ? gen_window_va(f) : va;
}

enum { P_IN, P_OUT };

/* A pointer.  P_IN: pyxen only reads (anything goes); P_OUT: pyxen may write
 * (never into argument buffers or the fuzzer's own data). */
static uint64_t gen_ptr(struct fz *f, int cls)
{
    struct rng *r = &f->r;
    unsigned int k = (unsigned int)below(r, 100);
    if (k < 30) {
        if (cls == P_IN)
            return (uint64_t)f->in + below(r, IN_SIZE) - (chance(r, 50) ? below(r, 8) & ~7UL : 0);
        return (uint64_t)f->out + below(r, OUT_SIZE);
    }
    if (k < 40)
        return (uint64_t)f->out + OUT_SIZE - 1 - below(r, 64);      /* into the guard page */
    if (k < 45)
        return (uint64_t)async_area[f->id] + below(r, 4096);
    if (k < 52)
        return (uint64_t)_text + below(r, (uint64_t)(_etext - _text));
    if (k < 57)
        return start_info->pt_base + below(r, start_info->nr_pt_frames * 4096);
    if (k < 62)
        return XEN_M2P_START + below(r, 1UL << 20) * 8;
    if (k < 72)
        return gen_window_va(f);
    if (k < 77)
        return HYPERVISOR_VIRT_START + (rnd(r) & 0x7ffffffffffUL);
    if (k < 80) {
        static const uint64_t edges[] = { 0xffff7fffffffffffUL, 0xffff800000000000UL,
                                          0xffff87ffffffffffUL, 0xffff880000000000UL,
                                          0xffff87fffffff000UL, 0x00007ffffffff000UL,
                                          0x00007fffffffffffUL };
        return edges[below(r, ARRAY_SIZE(edges))];
    }
    if (k < 85) {
        static const uint64_t nc[] = { 0x0000800000000000UL, 0x8000000000000000UL,
                                       0x7fff000000000000UL, 0x00ff000000000000UL,
                                       0xdead000000000000UL };
        return nc[below(r, ARRAY_SIZE(nc))] | (rnd(r) & 0xffffffffffUL);
    }
    if (k < 90)
        return below(r, 3) == 0 ? 0 : (rnd(r) & 0x3fffff);        /* NULL, low */
    if (k < 93)
        return VIRT_BASE + (self_nr_pages << 12) + below(r, 1UL << 20);  /* unmapped kernel VA */
    if (k < 95)
        return 0xffffffffc0000000UL + below(r, 1UL << 30);         /* no L2 there */
    uint64_t v = rnd(r);
    if (!va_hits_live_l1(v))
        return v;
    return 0;
}

static uint64_t gen_code_addr(struct fz *f)
{
    struct rng *r = &f->r;
    switch (below(r, 8)) {
    case 0: return 0;
    case 1: return (uint64_t)_text + below(r, (uint64_t)(_etext - _text));
    case 2: return HYPERVISOR_VIRT_START + below(r, 1UL << 40);
    case 3: return 0x0000800000000000UL + below(r, 4096);
    case 4: return 0xffff87fffffffff0UL + below(r, 32);
    default: return gen_ptr(f, P_IN);
    }
}

/* ------------------------------------------------------------------ */
/* grant entries (both the v1 and the v2 reading stay safe)            */
/* ------------------------------------------------------------------ */
/* A frame for a grant entry: scratch frames or frames that are not ours;
 * as 64-bit value its v1 reading (flags, domid, frame) must not grant
 * anything to us: its bits 16-31 are never our domid. */
static uint64_t grant_safe_frame(struct fz *f)
{
    static const uint64_t big[] = { 0xffffffffUL, 0xfffffffffffff0f0UL, 0x7ffffUL };
    uint64_t v;
    switch (below(&f->r, 6)) {
    case 0: v = big[below(&f->r, ARRAY_SIZE(big))]; break;
    case 1: v = self_nr_pages + below(&f->r, 16); break;
    case 2: v = sink_mfn[below(&f->r, nr_sink)]; break;
    default: v = pick_pool(f); break;
    }
    if (((v >> 16) & 0xffff) == self_domid)
        v = pick_pool(f);
    return v;
}

static void write_grant_entries(struct fz *f)
{
    if (!nr_gnt)
        return;
    unsigned int n = 1 + (unsigned int)below(&f->r, 16);
    for (unsigned int i = 0; i < n; i++) {
        /* mostly the first entries, where refs point */
        uint64_t slot = chance(&f->r, 70) ? below(&f->r, 64) : below(&f->r, nr_gnt * 256);
        volatile uint64_t *e = (volatile uint64_t *)(grant_area[slot / 256] + (slot % 256) * 16);
        static const uint16_t gflags[] = { 0x1, 0x1, 0x5, 0x101, 0x105, 0x3, 0x2, 0x0, 0x19,
                                           0x21, 0x1f, 0xffff };
        uint16_t flags = gflags[below(&f->r, ARRAY_SIZE(gflags))];
        uint16_t domid = chance(&f->r, 80) ? (uint16_t)self_domid : gen_domid(f);
        uint64_t x = grant_safe_frame(f);
        if (chance(&f->r, 15)) {
            /* One of its own page tables, read-only (the flags share the word).
             * Only page tables: once a map pinned an entry, its frame stays the
             * pinned one and a writable map only needs the entry to be writable
             * by then (Xen's map_grant_ref too), so a read-only grant of a frame
             * can become a writable mapping of it - which the type system
             * refuses for a page table only. */
            x = chance(&f->r, 80) ? live_tables[below(&f->r, nr_live_tables)] : l4_copy;
            flags |= 0x4;                  /* GTF_readonly */
        }
        if ((flags & 3) == 3 || (flags & 0x100)) {
            /* transitive (trans_domid, gref) or sub-page (offset, length) */
            uint64_t lo = chance(&f->r, 50) ? (uint16_t)rnd(&f->r) : (uint16_t)self_domid;
            uint64_t hi = below(&f->r, 4) ? below(&f->r, 4097) : (uint16_t)rnd(&f->r);
            if (!(flags & 0x4) && (lo | hi << 16) < self_nr_pages)
                lo |= 0x8000;              /* as a v1 frame: not ours */
            x = lo | hi << 16;
        }
        e[0] = flags | (uint64_t)domid << 16 | (x & 0xffffffff) << 32;
        e[1] = grant_safe_frame(f);
    }
}

/* ------------------------------------------------------------------ */
/* per-hypercall generators                                           */
/* ------------------------------------------------------------------ */
static void set_args(struct call *c, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
    c->a[0] = a1; c->a[1] = a2; c->a[2] = a3; c->a[3] = a4; c->a[4] = a5;
}

/* a pointer to n bytes of random input (or a random pointer) */
static uint64_t in_ptr(struct fz *f, size_t n)
{
    if (chance(&f->r, 15))
        return gen_ptr(f, P_IN);
    void *p = alloc_in(f, n);
    return p ? (uint64_t)p : gen_ptr(f, P_IN);
}

/* a pointer pyxen writes to */
static uint64_t out_ptr(struct fz *f) { return gen_ptr(f, P_OUT); }

/* a pointer to a request array of n elements, or one that faults */
static void *req_array(struct fz *f, size_t elem, uint64_t *count, uint64_t *ptr)
{
    bool at_guard = false;
    uint64_t want = *count;
    size_t n = want;
    if (n > 64 || n * elem > IN_SIZE / 2)
        n = 1 + below(&f->r, 8);
    void *p = alloc_req(f, n * elem, &at_guard);
    f->req_n = 0;
    if (!p || chance(&f->r, 4)) {
        static const uint64_t bad[] = { 0, 0xffff800000000000UL, 0x8000000000000000UL, 0x1000 };
        *ptr = bad[below(&f->r, ARRAY_SIZE(bad))];
        return NULL;
    }
    /* more than we wrote only when the array ends at the guard page (the
     * rest faults); batches count in 32 bits, so garbage above stays */
    if (!at_guard && (uint32_t)want > n)
        *count = n;
    *ptr = (uint64_t)p;
    f->req_n = n;
    return p;
}

static uint64_t gen_count(struct fz *f)
{
    static const uint64_t c[] = { 0, 1, 1, 2, 3, 4, 5, 8, 16, 64, 1024, 1025, 4096, 4097,
                                  0x7fffffff, 0x80000000, 0xffffffff, 0x100000001UL, ~0UL };
    if (chance(&f->r, 70))
        return 1 + below(&f->r, 6);
    return c[below(&f->r, ARRAY_SIZE(c))];
}

/* 0 set_trap_table */
static void g_set_trap_table(struct fz *f, struct call *c)
{
    uint64_t ptr = gen_ptr(f, P_IN);
    if (chance(&f->r, 75)) {
        unsigned int n = 1 + (unsigned int)below(&f->r, 8);
        struct trap_info *t = alloc_in(f, (n + 1) * sizeof(*t));
        if (t) {
            for (unsigned int i = 0; i < n; i++) {
                t[i].vector = (uint8_t)(chance(&f->r, 50) ? below(&f->r, 32) : rnd(&f->r));
                t[i].flags = (uint8_t)rnd(&f->r);
                t[i].cs = chance(&f->r, 50) ? FLAT_KERNEL_CS : (uint16_t)rnd(&f->r);
                t[i].address = gen_code_addr(f);
                if (!t[i].address)
                    t[i].address = (uint64_t)_text + 16;
            }
            if (chance(&f->r, 80))
                t[n].address = 0;
            ptr = (uint64_t)t;
        }
    } else if (chance(&f->r, 30)) {
        ptr = 0;
    }
    set_args(c, ptr, gen_int(f), 0, 0, 0);
    c->sub = SUB_NONE;
    f->restore |= R_TRAPS;
}

/* 1 mmu_update */
static void g_mmu_update(struct fz *f, struct call *c)
{
    uint64_t count = gen_count(f), ptr;
    struct mmu_update *u = req_array(f, sizeof(*u), &count, &ptr);
    unsigned int first = SUB_NONE;
    if (u) {
        for (uint64_t i = 0; i < f->req_n; i++) {
            uint64_t kind = below(&f->r, 10) < 7 ? 0 : below(&f->r, 4);
            uint64_t mfn = chance(&f->r, 60) ? pick_pool(f) : gen_target_mfn(f);
            uint64_t pa = gen_maddr(f, mfn);
            uint64_t val = gen_pte_for(f, pa >> 12);
            if ((pa >> 12) == win_l1)
                val = window_safe_pte(val);
            if (kind == 1)                   /* MMU_MACHPHYS_UPDATE: the M2P only */
                pa = gen_mfn(f) << 12;
            u[i].ptr = (pa & ~3UL) | kind;
            u[i].val = val;
            if (i == 0)
                first = (unsigned int)kind;
        }
    }
    uint64_t dom = chance(&f->r, 80) ? 0x7ff0 : gen_domid(f) | (chance(&f->r, 20) ? rnd(&f->r) << 16 : 0);
    set_args(c, ptr, count, chance(&f->r, 50) ? 0 : out_ptr(f), dom, gen_int(f));
    c->sub = first;
}

/* 2 set_gdt */
static void g_set_gdt(struct fz *f, struct call *c)
{
    static const uint64_t ents[] = { 0, 1, 2, 16, 511, 512, 513, 1024, 7168, 7169, 8192, ~0UL };
    uint64_t entries = chance(&f->r, 70) ? below(&f->r, 1100) : ents[below(&f->r, ARRAY_SIZE(ents))];
    uint64_t n = (entries + 511) / 512, ptr;
    if (entries > 7168)
        n = 1;
    uint64_t cnt = n ? n : 1;
    uint64_t *fr = req_array(f, 8, &cnt, &ptr);
    if (fr)
        for (uint64_t i = 0; i < f->req_n; i++)
            fr[i] = gen_target_mfn(f);
    set_args(c, ptr, entries, 0, 0, 0);
    c->sub = SUB_NONE;
    f->restore |= R_GDT;
}

/* 10 update_descriptor */
static void g_update_descriptor(struct fz *f, struct call *c)
{
    static const uint64_t descs[] = {
        0, 0x00af9b000000ffffUL, 0x00cf93000000ffffUL, 0x00affb000000ffffUL, 0x00cff3000000ffffUL,
        0x0000890000000067UL, 0x00008c0000000000UL, 0x00cf9b000000ffffUL, 0x0000e20000000000UL,
        0x00af1b000000ffffUL, 0xffffffffffffffffUL, 0x0000800000000000UL,
    };
    uint64_t ma = gen_maddr(f, gen_target_mfn(f));
    if (chance(&f->r, 10))
        ma |= below(&f->r, 8);
    uint64_t d = chance(&f->r, 70) ? descs[below(&f->r, ARRAY_SIZE(descs))] : rnd(&f->r);
    set_args(c, ma, d, 0, 0, 0);
    c->sub = SUB_NONE;
}

/* 12 memory_op */
struct xen_reservation { uint64_t extent_start, nr_extents; uint32_t extent_order, mem_flags;
                         uint16_t domid, pad[3]; };

static void gen_reservation(struct fz *f, struct xen_reservation *res, unsigned int op)
{
    static const uint32_t orders[] = { 0, 0, 0, 0, 1, 9, 10, 18, 31, 0xffffffff };
    uint64_t nr = chance(&f->r, 75) ? below(&f->r, 6) : gen_int(f);
    uint64_t ptr;
    if (op == 1) {
        /* decrease: the frames must be ones the fuzzer may give back */
        uint64_t cnt = nr;
        uint64_t *e = req_array(f, 8, &cnt, &ptr);
        if (e)
            for (uint64_t i = 0; i < f->req_n; i++)
                e[i] = chance(&f->r, 85) ? pick_pool(f) : target_mfn(f, gen_mfn(f));
        nr = cnt;
    } else {
        /* increase / populate: pyxen writes the frames back into the array */
        uint64_t cnt = nr;
        uint64_t *e = req_array(f, 8, &cnt, &ptr);
        if (e)
            for (uint64_t i = 0; i < f->req_n; i++)
                e[i] = gen_mfn(f);
        nr = cnt;
    }
    res->extent_start = ptr;
    res->nr_extents = nr;
    res->extent_order = orders[below(&f->r, ARRAY_SIZE(orders))];
    res->mem_flags = chance(&f->r, 70) ? 0 : (uint32_t)rnd(&f->r);
    res->domid = gen_domid(f);
}

static void g_memory_op(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 30);
    unsigned int op = (uint32_t)cmd & 0x3f;
    uint64_t arg;
    switch (op) {
    case 0: case 1: case 6: {          /* increase, decrease, populate */
        struct xen_reservation *res = alloc_in(f, sizeof(*res));
        if (!res) { arg = 0; break; }
        gen_reservation(f, res, op);
        arg = (uint64_t)res;
        break;
    }
    case 3: case 4: case 14: {         /* current/maximum reservation, maximum_gpfn */
        uint16_t *d = alloc_in(f, 8);
        if (d)
            *d = gen_domid(f);
        arg = d ? (uint64_t)d : gen_ptr(f, P_IN);
        break;
    }
    case 5: {                          /* machphys_mfn_list: max, list (out), nr (out) */
        uint64_t *m = alloc_in(f, 24);
        if (!m) { arg = 0; break; }
        m[0] = gen_u32(f);
        m[1] = out_ptr(f);
        arg = (uint64_t)m;
        break;
    }
    case 9: case 10: case 13: {        /* memory_map, machine_memory_map, set_memory_map */
        uint64_t *m = alloc_in(f, 16);
        if (!m) { arg = 0; break; }
        m[0] = gen_u32(f);
        m[1] = out_ptr(f);
        arg = (uint64_t)m;
        break;
    }
    case 11: {                         /* exchange: in and out reservations */
        struct xen_reservation *x = alloc_in(f, 2 * sizeof(*x) + 8);
        if (!x) { arg = 0; break; }
        gen_reservation(f, &x[0], 1);
        gen_reservation(f, &x[1], 0);
        arg = (uint64_t)x;
        break;
    }
    case 7: case 15: case 23: {        /* add_to_physmap(_batch), remove_from_physmap */
        uint64_t *m = alloc_in(f, 64);
        if (!m) { arg = 0; break; }
        m[0] = gen_domid(f) | (uint64_t)below(&f->r, 8) << 32;
        m[1] = gen_target_mfn(f);
        m[2] = gen_target_mfn(f);
        m[3] = out_ptr(f);
        m[4] = out_ptr(f);
        arg = (uint64_t)m;
        break;
    }
    case 12:                           /* machphys_mapping: out */
        arg = out_ptr(f);
        break;
    default:
        arg = chance(&f->r, 50) ? out_ptr(f) : in_ptr(f, 64);
        break;
    }
    if (op <= 1 || op == 6) {
        /* a start extent in the bits above the command (continuations) */
        if (chance(&f->r, 5))
            cmd |= below(&f->r, 8) << 6;
    } else if (op != 2) {
        cmd = maybe_hi(f, cmd);
    }
    set_args(c, cmd, arg, gen_int(f), 0, 0);
    /* bits 6.. are a start extent (Xen's MEMOP_EXTENT_SHIFT): counted as "h" */
    c->sub = cmd >> 6 ? (unsigned int)(cmd & 0x3f) + SUB_HI : (unsigned int)cmd;
}

/* 14 / 22 update_va_mapping(_otherdomain) */
static void g_update_va_mapping(struct fz *f, struct call *c)
{
    uint64_t va = chance(&f->r, 75) ? gen_window_va(f) : safe_linear(f, gen_ptr(f, P_IN));
    uint64_t val = gen_pte(f);
    if (va_in_window(va))
        val = window_safe_pte(val);
    static const uint64_t fl[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x10, ~0UL };
    uint64_t flags = chance(&f->r, 80) ? fl[below(&f->r, ARRAY_SIZE(fl))]
                                       : (gen_ptr(f, P_IN) & ~7UL) | below(&f->r, 8);
    set_args(c, va, val, flags, c->nr == 22 ? gen_domid(f) : 0, 0);
    c->sub = SUB_NONE;
}

/* 13 multicall: filled in by g_multicall below (needs fuzz_gen) */

/* 15 set_timer_op */
static uint64_t gen_timeout(struct fz *f)
{
    switch (below(&f->r, 6)) {
    case 0: return 1;
    case 1: return now_ns() - below(&f->r, 1000000);
    case 2: return gen_int(f);
    default: return now_ns() + below(&f->r, 300000);
    }
}

/* 16 event_channel_op_compat, 32 event_channel_op */
static uint64_t gen_evtchn_arg(struct fz *f, unsigned int cmd, uint32_t *arg_out)
{
    (void)arg_out;
    uint32_t *a = alloc_in(f, 32);
    if (!a)
        return gen_ptr(f, P_IN);
    switch (cmd) {
    case 0:  /* bind_interdomain: remote_dom, remote_port, local_port (out) */
        a[0] = gen_domid(f);
        a[1] = gen_port(f);
        break;
    case 1:  /* bind_virq: virq, vcpu, port (out) */
        a[0] = chance(&f->r, 80) ? (uint32_t)below(&f->r, 26) : gen_u32(f);
        a[1] = gen_vcpu(f);
        break;
    case 3: case 4: case 9:    /* close, send, unmask */
        a[0] = gen_port(f);
        break;
    case 5:  /* status: dom, port */
        a[0] = chance(&f->r, 70) ? 0x7ff0 : gen_domid(f);
        a[1] = gen_port(f);
        break;
    case 6:  /* alloc_unbound: dom, remote_dom */
        a[0] = (uint32_t)(chance(&f->r, 70) ? 0x7ff0 : gen_domid(f)) | (uint32_t)gen_domid(f) << 16;
        break;
    case 7:  /* bind_ipi: vcpu */
        a[0] = gen_vcpu(f);
        break;
    case 8:  /* bind_vcpu: port, vcpu */
        a[0] = gen_port(f);
        a[1] = gen_vcpu(f);
        break;
    case 10: /* reset: dom */
        a[0] = chance(&f->r, 70) ? 0x7ff0 : gen_domid(f);
        break;
    case 11: { /* init_control: gfn, offset, vcpu, link_bits (out) */
        uint64_t gfn = chance(&f->r, 80) ? pick_pool(f) : gen_target_mfn(f);
        memcpy(a, &gfn, 8);
        static const uint32_t offs[] = { 0, 8, 64, 72, 4024, 4025, 4028, 4032, 4096, 0xffffffff };
        a[2] = chance(&f->r, 60) ? (uint32_t)below(&f->r, 64) * 64 : offs[below(&f->r, ARRAY_SIZE(offs))];
        a[3] = gen_vcpu(f);
        break;
    }
    case 12: { /* expand_array: gfn */
        uint64_t gfn = chance(&f->r, 80) ? pick_pool(f) : gen_target_mfn(f);
        memcpy(a, &gfn, 8);
        break;
    }
    case 13: /* set_priority: port, priority */
        a[0] = gen_port(f);
        a[1] = chance(&f->r, 80) ? (uint32_t)below(&f->r, 17) : gen_u32(f);
        break;
    default:
        break;
    }
    return (uint64_t)a;
}

/* The xenstore ring (struct xenstore_domain_interface: req[1024], rsp[1024],
 * req_cons, req_prod, rsp_cons, rsp_prod): requests that are half right,
 * random bytes or indexes that make no sense, for dom0's xenstored to read
 * when the fuzzer next notifies it.  (Its replies are never read: the ring
 * fills up, which xenstored must live with too.) */
static void scribble_store_ring(struct fz *f)
{
    unsigned long pfn = start_info->store_mfn;
    if (!start_info->store_mfn || pfn >= mapped_end_pfn)
        return;
    volatile char *ring = pfn_to_virt(pfn);
    volatile uint32_t *idx = (volatile uint32_t *)(ring + 2048);
    switch (below(&f->r, 4)) {
    case 0: {                                   /* a request of any type, path-like body */
        static const char *const words[] = { "/local/domain/1/", "data/", "control/shutdown",
                                             "device", "@introduceDomain", "/", "..", "fuzz" };
        char msg[96];
        uint32_t len = 0;
        while (len < 60) {
            const char *w = words[below(&f->r, ARRAY_SIZE(words))];
            while (*w && len < 60)
                msg[16 + len++] = *w++;
        }
        msg[16 + len++] = 0;
        if (chance(&f->r, 50))
            msg[16 + len++] = (char)('0' + below(&f->r, 10));
        uint32_t hdr[4] = { (uint32_t)below(&f->r, 32), (uint32_t)rnd(&f->r),
                            chance(&f->r, 80) ? 0 : (uint32_t)rnd(&f->r),
                            chance(&f->r, 80) ? len : (uint32_t)gen_int(f) };
        memcpy(msg, hdr, 16);
        uint32_t prod = idx[1];
        for (uint32_t i = 0; i < 16 + len; i++)
            ring[(prod + i) & 1023] = msg[i];
        barrier();
        idx[1] = prod + 16 + len;
        break;
    }
    case 1: {                                   /* random bytes as requests */
        uint32_t prod = idx[1], n = 1 + (uint32_t)below(&f->r, 200);
        for (uint32_t i = 0; i < n; i++)
            ring[(prod + i) & 1023] = (char)rnd(&f->r);
        barrier();
        idx[1] = prod + n;
        break;
    }
    case 2:                                     /* indexes */
        idx[below(&f->r, 4)] = (uint32_t)gen_int(f);
        break;
    default:                                    /* consume the replies */
        idx[2] = idx[3];
        break;
    }
}

static void g_event_channel_op(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 14);
    uint64_t arg = gen_evtchn_arg(f, (uint32_t)cmd, NULL);
    if ((uint32_t)cmd == 4 && chance(&f->r, 15) && arg >= (uint64_t)f->in &&
        arg + 4 <= (uint64_t)f->in + IN_SIZE) {
        scribble_store_ring(f);
        *(uint32_t *)arg = start_info->store_evtchn;
    }
    c->sub = sub_of(cmd);
    set_args(c, maybe_hi(f, cmd), arg, gen_int(f), 0, 0);
    c->sub = sub_of(c->a[0]);
}

static void g_event_channel_op_compat(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 14);
    uint32_t *op = alloc_in(f, 40);
    uint64_t inner = gen_evtchn_arg(f, (uint32_t)cmd, NULL);
    if (op) {
        op[0] = (uint32_t)cmd;
        if ((inner >= (uint64_t)f->in) && inner + 32 <= (uint64_t)f->in + IN_SIZE)
            memcpy(op + 2, (void *)inner, 32);
    }
    set_args(c, op ? (uint64_t)op : gen_ptr(f, P_IN), gen_int(f), 0, 0, 0);
    c->sub = sub_of(cmd);
}

/* 17 xen_version */
static void g_xen_version(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 11);
    uint64_t arg;
    if (cmd == 6) {                    /* get_features: idx in, word out (in place) */
        uint32_t *a = alloc_in(f, 8);
        if (a)
            a[0] = chance(&f->r, 70) ? (uint32_t)below(&f->r, 3) : gen_u32(f);
        arg = a ? (uint64_t)a : out_ptr(f);
    } else if (cmd == 10) {            /* build_id: len in, id out (in place) */
        uint32_t *a = alloc_in(f, 64);
        if (a)
            a[0] = (uint32_t)gen_int(f);
        arg = a && chance(&f->r, 70) ? (uint64_t)a : out_ptr(f);
    } else {
        arg = chance(&f->r, 80) ? out_ptr(f) : 0;
    }
    cmd = maybe_hi(f, cmd);
    set_args(c, cmd, arg, gen_int(f), 0, 0);
    c->sub = sub_of(cmd);
}

/* 18 console_io: never prints anything */
static void g_console_io(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 2);
    uint64_t count, buf;
    static const uint64_t bad[] = { 0, 0x1000, 0xffff800000000000UL, 0xffff87fffffff000UL,
                                    0x8000000000000000UL, 0x0000800000000000UL };
    if ((uint32_t)cmd == 1) {              /* read into a sink */
        count = chance(&f->r, 50) ? below(&f->r, 64) : gen_u32(f);
        buf = out_ptr(f);
    } else if (chance(&f->r, 40)) {
        count = 0;
        buf = gen_ptr(f, P_IN);
    } else {
        count = gen_int(f);
        buf = bad[below(&f->r, ARRAY_SIZE(bad))];
    }
    set_args(c, maybe_hi(f, cmd), count, buf, 0, 0);
    c->sub = sub_of(c->a[0]);
}

/* 20 grant_table_op */
struct gnt_map { uint64_t host_addr; uint32_t flags, ref; uint16_t dom; int16_t status;
                 uint32_t handle; uint64_t dev_bus_addr; };
struct gnt_unmap { uint64_t host_addr, dev_bus_addr; uint32_t handle; int16_t status; uint16_t pad; };
struct gnt_copy_ptr { uint64_t u; uint16_t domid, offset; uint32_t pad; };
struct gnt_copy { struct gnt_copy_ptr src, dst; uint16_t len, flags; int16_t status; uint16_t pad; };

static uint32_t gen_gref(struct fz *f)
{
    static const uint32_t refs[] = { 0, 1, 7, 8, 511, 512, 1023, 1024, 2047, 2048, 32767,
                                     32768, 0xffffffff };
    if (chance(&f->r, 70))
        return (uint32_t)below(&f->r, 64);
    return refs[below(&f->r, ARRAY_SIZE(refs))];
}

static uint32_t gen_handle(struct fz *f)
{
    if (f->nhandles && chance(&f->r, 60))
        return f->handles[below(&f->r, f->nhandles)];
    return chance(&f->r, 70) ? (uint32_t)below(&f->r, 32) : gen_u32(f);
}

/* a host address for a grant mapping: a window address, or the machine
 * address of an entry of a scratch L1 (GNTMAP_contains_pte) */
static uint64_t gen_host_addr(struct fz *f, uint32_t flags)
{
    if (flags & 16) {
        uint64_t mfn = chance(&f->r, 60) ? win_l1 : gen_target_mfn(f);
        return gen_maddr(f, mfn);
    }
    if (chance(&f->r, 75))
        return gen_window_va(f) & ~(chance(&f->r, 90) ? 0xfffUL : 0);
    return safe_linear(f, gen_ptr(f, P_IN));
}

static void g_grant_table_op(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 13);
    uint64_t count = gen_count(f), uop = 0;
    unsigned int op = (uint32_t)cmd;
    static const uint32_t mflags[] = { 2, 2, 6, 1, 3, 5, 7, 18, 22, 2 | 8, 0, 16, 2 | 0x30000, 0xffffffff };
    if (chance(&f->r, 30))
        write_grant_entries(f);
    switch (op) {
    case 0: {  /* map */
        struct gnt_map *m = req_array(f, sizeof(*m), &count, &uop);
        for (uint64_t i = 0; m && i < f->req_n; i++) {
            m[i].flags = mflags[below(&f->r, ARRAY_SIZE(mflags))];
            m[i].host_addr = gen_host_addr(f, m[i].flags);
            m[i].ref = gen_gref(f);
            m[i].dom = chance(&f->r, 80) ? (uint16_t)self_domid : gen_domid(f);
        }
        break;
    }
    case 1: case 7: {  /* unmap, unmap_and_replace */
        struct gnt_unmap *u = req_array(f, sizeof(*u), &count, &uop);
        for (uint64_t i = 0; u && i < f->req_n; i++) {
            u[i].host_addr = gen_host_addr(f, chance(&f->r, 30) ? 16 : 0);
            if (op == 7)
                u[i].dev_bus_addr = chance(&f->r, 30) ? 0 : gen_host_addr(f, 0);  /* new_addr */
            else
                u[i].dev_bus_addr = chance(&f->r, 50) ? 0 : gen_mfn(f) << 12;
            u[i].handle = gen_handle(f);
        }
        break;
    }
    case 2: {  /* setup_table: dom, nr_frames, status, frame_list (out) */
        uint64_t *s = alloc_in(f, 24);
        if (s) {
            static const uint32_t nf[] = { 0, 1, 2, 4, 8, 63, 64, 65, 0xffffffff };
            s[0] = gen_domid(f) | (uint64_t)(chance(&f->r, 70) ? (uint32_t)below(&f->r, 5)
                                             : nf[below(&f->r, ARRAY_SIZE(nf))]) << 32;
            s[2] = out_ptr(f);
        }
        uop = s ? (uint64_t)s : gen_ptr(f, P_IN);
        break;
    }
    case 4: {  /* transfer: mfn, domid, ref, status */
        uint64_t *t = req_array(f, 24, &count, &uop);
        for (uint64_t i = 0; t && i < f->req_n; i++) {
            t[3 * i] = chance(&f->r, 85) ? pick_pool(f) : gen_target_mfn(f);
            t[3 * i + 1] = gen_domid(f) | (uint64_t)gen_gref(f) << 32;
        }
        break;
    }
    case 5: {  /* copy */
        struct gnt_copy *g = req_array(f, sizeof(*g), &count, &uop);
        for (uint64_t i = 0; g && i < f->req_n; i++) {
            g[i].flags = (uint16_t)(chance(&f->r, 80) ? below(&f->r, 4) : rnd(&f->r));
            g[i].src.domid = chance(&f->r, 60) ? 0x7ff0 : (chance(&f->r, 60) ? (uint16_t)self_domid : gen_domid(f));
            g[i].dst.domid = chance(&f->r, 60) ? 0x7ff0 : (chance(&f->r, 60) ? (uint16_t)self_domid : gen_domid(f));
            g[i].src.u = g[i].flags & 1 ? gen_gref(f) : gen_mfn(f);
            g[i].dst.u = g[i].flags & 2 ? gen_gref(f) : gen_target_mfn(f);
            g[i].src.offset = (uint16_t)(chance(&f->r, 70) ? below(&f->r, 4097) : rnd(&f->r));
            g[i].dst.offset = (uint16_t)(chance(&f->r, 70) ? below(&f->r, 4097) : rnd(&f->r));
            g[i].len = (uint16_t)(chance(&f->r, 70) ? below(&f->r, 4097) : rnd(&f->r));
        }
        break;
    }
    case 6: case 10: {  /* query_size, get_version: dom (+ out in place) */
        uint16_t *q = alloc_in(f, 16);
        if (q)
            q[0] = gen_domid(f);
        uop = q ? (uint64_t)q : gen_ptr(f, P_IN);
        break;
    }
    case 8: {  /* set_version */
        uint32_t *v = alloc_in(f, 8);
        if (v)
            v[0] = chance(&f->r, 80) ? (uint32_t)below(&f->r, 4) : gen_u32(f);
        uop = v ? (uint64_t)v : gen_ptr(f, P_IN);
        break;
    }
    case 9: {  /* get_status_frames: nr, dom, status, list (out) */
        uint64_t *s = alloc_in(f, 16);
        if (s) {
            s[0] = (chance(&f->r, 70) ? below(&f->r, 4) : gen_u32(f)) | (uint64_t)gen_domid(f) << 32;
            s[1] = out_ptr(f);
        }
        uop = s ? (uint64_t)s : gen_ptr(f, P_IN);
        break;
    }
    case 11: {  /* swap_grant_ref */
        uint32_t *s = req_array(f, 12, &count, &uop);
        for (uint64_t i = 0; s && i < f->req_n; i++) {
            s[3 * i] = gen_gref(f);
            s[3 * i + 1] = gen_gref(f);
        }
        break;
    }
    case 12: {  /* cache_flush: addr/ref, offset, length, op */
        uint64_t *s = req_array(f, 16, &count, &uop);
        for (uint64_t i = 0; s && i < f->req_n; i++) {
            s[2 * i] = chance(&f->r, 50) ? gen_mfn(f) << 12 | below(&f->r, 4096) : gen_gref(f);
            s[2 * i + 1] = below(&f->r, 4097) | below(&f->r, 4097) << 16
                           | (chance(&f->r, 80) ? below(&f->r, 4) | (chance(&f->r, 20) ? 1UL << 31 : 0)
                                                : (uint64_t)(uint32_t)rnd(&f->r)) << 32;
        }
        break;
    }
    default:
        uop = in_ptr(f, 64);
        break;
    }
    if (chance(&f->r, 5))
        cmd |= below(&f->r, 16) << 12;          /* cache_flush continuation bits */
    set_args(c, cmd, uop, count, 0, 0);
    c->sub = (unsigned int)(cmd & 0xfff) < 64 ? (unsigned int)(cmd & 0xfff) : SUB_BIG;
    if (cmd & ~0xfffUL)
        c->sub += SUB_HI;
}

/* 24 vcpu_op */
static void g_vcpu_op(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 14);
    uint64_t vcpu = gen_vcpu(f);
    uint64_t arg = 0;
    c->vi_target = -1;
    switch ((uint32_t)cmd) {
    case 0:  /* initialise: only of vCPUs that are initialised or missing */
        if ((uint32_t)vcpu >= nvcpus && (uint32_t)vcpu < dom_vcpus)
            vcpu = 0;
        arg = in_ptr(f, 5168);
        break;
    case 2:  /* down: not itself; vCPU 1 never takes vCPU 0 down */
        if ((uint32_t)vcpu == f->id || (f->id == 1 && (uint32_t)vcpu == 0))
            vcpu = 32 + below(&f->r, 32);
        if (f->id == 0 && (uint32_t)vcpu == 1 && nvcpus >= 2)
            f->restore |= R_VCPU1_UP;
        if ((uint32_t)vcpu < nvcpus && vcpu >> 32)
            vcpu = 64;
        break;
    case 4: case 12:  /* get_runstate_info, get_physid: out */
        arg = out_ptr(f);
        break;
    case 5: case 13: { /* runstate / time area: written whenever pyxen likes */
        uint64_t *a = alloc_in(f, 8);
        if (a) {
            switch (below(&f->r, 5)) {
            case 0: *a = 0; break;
            case 1: *a = (uint64_t)async_area[below(&f->r, NV)] + below(&f->r, 4096 - 48); break;
            case 2: *a = (uint64_t)async_area[below(&f->r, NV)] + 4096 - below(&f->r, 48); break;
            case 3: *a = (uint64_t)f->out + OUT_SIZE - below(&f->r, 48); break;
            default: {
                static const uint64_t bad[] = { 0x1000, 0xffff800000000000UL, 0x8000000000000000UL,
                                                0xffff87fffffffff8UL, 0x0000800000000000UL,
                                                (uint64_t)_text, 7 };
                *a = bad[below(&f->r, ARRAY_SIZE(bad))];
                if (*a == (uint64_t)_text)
                    *a += below(&f->r, 4096);
            }
            }
        }
        arg = a ? (uint64_t)a : gen_ptr(f, P_IN);
        break;
    }
    case 6: {  /* set_periodic_timer */
        static const uint64_t per[] = { 0, 1, 999999, 1000000, 1000001, 10000000, 1000000000,
                                        ~0UL, 1UL << 63 };
        uint64_t *a = alloc_in(f, 8);
        if (a)
            *a = per[below(&f->r, ARRAY_SIZE(per))];
        arg = a ? (uint64_t)a : gen_ptr(f, P_IN);
        break;
    }
    case 8: {  /* set_singleshot_timer: timeout, flags */
        uint64_t *a = alloc_in(f, 16);
        if (a) {
            a[0] = gen_timeout(f);
            a[1] = chance(&f->r, 70) ? below(&f->r, 2) : gen_u32(f);
        }
        arg = a ? (uint64_t)a : gen_ptr(f, P_IN);
        break;
    }
    case 10: { /* register_vcpu_info: mfn, offset */
        uint64_t *a = alloc_in(f, 16);
        int t = (uint32_t)vcpu < NV ? (int)(uint32_t)vcpu : -1;
        if (a) {
            uint64_t off = chance(&f->r, 70) ? below(&f->r, 64) * 64 :
                           (chance(&f->r, 50) ? below(&f->r, 4096) : gen_u32(f));
            uint64_t mfn = gen_mfn(f);
            if (owned(mfn) && t >= 0)
                mfn = virt_to_mfn(vi_page[t]);
            else if (owned(mfn))
                mfn = self_nr_pages + 1;
            a[0] = mfn;
            a[1] = off;
            if (t >= 0 && mfn == virt_to_mfn(vi_page[t]) && off <= 4096 - 64) {
                c->vi_target = t;
                c->vi_new = (struct vcpu_info *)(vi_page[t] + off);
                f->restore |= R_VCPUINFO;
            }
            if (vcpu >> 32)
                a[0] = self_nr_pages + 2;      /* Xen takes the vCPU as 32-bit */
        }
        arg = a ? (uint64_t)a : gen_ptr(f, P_IN);
        break;
    }
    default:
        arg = gen_ptr(f, P_IN);
        break;
    }
    set_args(c, maybe_hi(f, cmd), vcpu, arg, gen_int(f), 0);
    c->sub = sub_of(c->a[0]);
}

/* 26 mmuext_op */
struct mmuext { uint32_t cmd, pad; uint64_t arg1, arg2; };

static void g_mmuext_op(struct fz *f, struct call *c)
{
    uint64_t count = gen_count(f), ptr;
    struct mmuext *o = req_array(f, sizeof(*o), &count, &ptr);
    unsigned int first = SUB_NONE;
    for (uint64_t i = 0; o && i < f->req_n; i++) {
        uint32_t cmd = (uint32_t)gen_cmd(f, 21);
        uint64_t a1 = 0, a2 = gen_int(f);
        switch (cmd) {
        case 0: case 1: case 2: case 3:      /* pin */
            a1 = chance(&f->r, 80) ? (chance(&f->r, 70) ? pool_of_level(f, cmd + 1) : pick_pool(f)) :
                 (chance(&f->r, 50) ? live_tables[below(&f->r, nr_live_tables)] : gen_target_mfn(f));
            if (chance(&f->r, 10))
                a1 = win_l1;
            break;
        case 4:                              /* unpin */
            a1 = chance(&f->r, 85) ? pick_pool(f) : gen_target_mfn(f);
            break;
        case 5: {                            /* new_baseptr */
            static const int which[] = { 0, 1, 1, 2 };
            switch (which[below(&f->r, 4)]) {
            case 0: a1 = live_l4; break;
            case 1: a1 = l4_copy; break;
            default: a1 = self_nr_pages + below(&f->r, 1000); break;
            }
            f->restore |= R_BASEPTR;
            break;
        }
        case 15:                             /* new_user_baseptr */
            a1 = chance(&f->r, 30) ? 0 : (chance(&f->r, 50) ? l4_copy : gen_target_mfn(f));
            if (chance(&f->r, 10))
                a1 = live_l4;
            f->restore |= R_USERBASE;
            break;
        case 6: case 7: case 8: case 9: case 10: case 11:   /* flushes */
            a1 = gen_ptr(f, P_IN);
            a2 = chance(&f->r, 50) ? gen_ptr(f, P_IN) : gen_int(f);
            break;
        case 13:                             /* set_ldt */
            a1 = chance(&f->r, 50) ? gen_ptr(f, P_IN) & ~0xfffUL : gen_int(f);
            a2 = chance(&f->r, 70) ? below(&f->r, 8200) : gen_int(f);
            f->restore |= R_LDT;
            break;
        case 16:                             /* clear_page */
            a1 = gen_target_mfn(f);
            break;
        case 17:                             /* copy_page: dst, src */
            a1 = gen_target_mfn(f);
            a2 = gen_mfn(f);
            break;
        default:
            a1 = gen_target_mfn(f);
            break;
        }
        o[i].cmd = cmd;
        o[i].arg1 = a1;
        o[i].arg2 = a2;
        if (i == 0)
            first = cmd < 64 ? cmd : SUB_BIG;
    }
    uint64_t dom = chance(&f->r, 85) ? 0x7ff0 : gen_domid(f);
    set_args(c, ptr, count, chance(&f->r, 50) ? 0 : out_ptr(f), dom, 0);
    c->sub = first;
}

/* 29 sched_op */
static void g_sched_op(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 8);
    uint64_t arg = 0;
    switch ((uint32_t)cmd) {
    case 1:  /* block: pending is set first, so it returns at once */
        arg = gen_int(f);
        break;
    case 2: case 5: {  /* shutdown, shutdown_code: invalid reasons only */
        uint32_t *a = alloc_in(f, 8);
        if (a && chance(&f->r, 80))
            a[0] = 6 + (uint32_t)(chance(&f->r, 50) ? below(&f->r, 10) : below(&f->r, 0xfffffff9UL));
        else if (a)
            a = NULL;
        arg = a ? (uint64_t)a : (chance(&f->r, 50) ? 0 : 0xffff800000000000UL);
        break;
    }
    case 3: {  /* poll: ports, nr_ports, timeout (never 0) */
        uint64_t *p = alloc_in(f, 24);
        if (!p) { arg = 0; break; }
        static const uint32_t nps[] = { 0, 1, 2, 4, 127, 128, 129, 0xffffffff };
        uint32_t np = chance(&f->r, 70) ? (uint32_t)below(&f->r, 5) : nps[below(&f->r, ARRAY_SIZE(nps))];
        uint32_t *ports = alloc_in(f, 4 * (np < 130 ? np : 1) + 4);
        if (ports)
            for (uint32_t i = 0; i < np && i < 130; i++)
                ports[i] = gen_port(f);
        p[0] = ports && chance(&f->r, 90) ? (uint64_t)ports : gen_ptr(f, P_IN);
        p[1] = np;
        uint64_t t = gen_timeout(f);
        if (t == 0 || t > now_ns() + 300000)
            t = now_ns() + 100000;
        p[2] = t;
        arg = (uint64_t)p;
        break;
    }
    case 4: {  /* remote_shutdown: domid, reason (refused to a domU, even for itself) */
        uint32_t *a = alloc_in(f, 8);
        if (a) {
            a[0] = gen_domid(f);
            a[1] = chance(&f->r, 50) ? (uint32_t)below(&f->r, 7) : gen_u32(f);
        }
        arg = a ? (uint64_t)a : gen_ptr(f, P_IN);
        break;
    }
    case 6: {  /* watchdog: never a new one (id 0 with a timeout) */
        uint32_t *a = alloc_in(f, 8);
        if (a) {
            a[0] = 1 + (uint32_t)(chance(&f->r, 50) ? below(&f->r, 4) : below(&f->r, 0xfffffffeUL));
            a[1] = chance(&f->r, 50) ? 0 : gen_u32(f);
        }
        arg = a ? (uint64_t)a : 0xffff800000000000UL;
        break;
    }
    default:
        arg = gen_ptr(f, P_IN);
        break;
    }
    /* garbage above the int command: Xen ignores it, so only commands that
     * are harmless either way get it */
    uint32_t lo = (uint32_t)cmd;
    if (lo == 0 || lo == 4 || lo >= 7)
        cmd = maybe_hi(f, cmd);
    set_args(c, cmd, arg, gen_int(f), 0, 0);
    c->sub = sub_of(cmd);
}

/* 30 callback_op */
static void g_callback_op(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 3);
    uint16_t *a = alloc_in(f, 16);
    if (a) {
        a[0] = (uint16_t)(chance(&f->r, 80) ? below(&f->r, 9) : rnd(&f->r));
        a[1] = (uint16_t)(chance(&f->r, 70) ? below(&f->r, 2) : rnd(&f->r));
        uint64_t addr = gen_code_addr(f);
        memcpy(a + 4, &addr, 8);
    }
    cmd = maybe_hi(f, cmd);
    set_args(c, cmd, a ? (uint64_t)a : gen_ptr(f, P_IN), 0, 0, 0);
    c->sub = sub_of(cmd);
    f->restore |= R_CALLBACKS;
}

/* 33 physdev_op, 19 physdev_op_compat */
static uint64_t gen_physdev_arg(struct fz *f, unsigned int cmd)
{
    uint32_t *a = alloc_in(f, 48);
    if (!a)
        return gen_ptr(f, P_IN);
    switch (cmd) {
    case 5: a[0] = gen_u32(f); break;                         /* irq_status_query */
    case 6: a[0] = chance(&f->r, 80) ? (uint32_t)below(&f->r, 5) : gen_u32(f); break;  /* set_iopl */
    case 7: {                                                 /* set_iobitmap */
        uint64_t p = gen_ptr(f, P_IN);
        memcpy(a, &p, 8);
        a[2] = chance(&f->r, 70) ? (uint32_t)below(&f->r, 65537) : gen_u32(f);
        break;
    }
    case 12: a[0] = gen_u32(f); break;                        /* eoi */
    case 17: case 28: {                                       /* pirq_eoi_gmfn: a frame pyxen may map */
        uint64_t g = gen_target_mfn(f);
        memcpy(a, &g, 8);
        break;
    }
    default:
        break;
    }
    return (uint64_t)a;
}

static void g_physdev_op(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 31);
    uint64_t arg = gen_physdev_arg(f, (uint32_t)cmd);
    cmd = maybe_hi(f, cmd);
    set_args(c, cmd, arg, gen_int(f), 0, 0);
    c->sub = sub_of(cmd);
}

static void g_physdev_op_compat(struct fz *f, struct call *c)
{
    uint64_t cmd = gen_cmd(f, 31);
    uint32_t *op = alloc_in(f, 56);
    uint64_t inner = gen_physdev_arg(f, (uint32_t)cmd);
    if (op) {
        op[0] = (uint32_t)cmd;
        if (inner >= (uint64_t)f->in && inner + 48 <= (uint64_t)f->in + IN_SIZE)
            memcpy(op + 2, (void *)inner, 48);
    }
    set_args(c, op ? (uint64_t)op : gen_ptr(f, P_IN), 0, 0, 0, 0);
    c->sub = sub_of(cmd);
}

/* control-domain hypercalls (sysctl, domctl, platform_op): cmd + version */
static void g_control(struct fz *f, struct call *c, uint32_t version)
{
    uint32_t *a = alloc_in(f, 256);
    if (a) {
        a[0] = (uint32_t)gen_cmd(f, 80);
        a[1] = chance(&f->r, 60) ? version : gen_u32(f);
        for (unsigned int i = 2; i < 64; i += 2) {
            uint64_t p = chance(&f->r, 50) ? out_ptr(f) : gen_int(f);
            memcpy(a + i, &p, 8);
        }
    }
    set_args(c, a && chance(&f->r, 90) ? (uint64_t)a : gen_ptr(f, P_IN), gen_int(f), gen_int(f), 0, 0);
    c->sub = a ? sub_of(a[0]) : SUB_NONE;
}

/* anything else: values of every kind, pointers are sinks or read-only */
static void g_generic(struct fz *f, struct call *c)
{
    uint64_t a[5];
    for (int i = 0; i < 5; i++) {
        switch (below(&f->r, 3)) {
        case 0: a[i] = gen_int(f); break;
        case 1: a[i] = out_ptr(f); break;
        default: a[i] = gen_cmd(f, 16); break;
        }
    }
    set_args(c, a[0], a[1], a[2], a[3], a[4]);
    c->sub = sub_of(a[0]);
}

/* 23 iret: built by fuzz_issue (the frame), arguments are ignored */

static const uint8_t weights[64] = {
    [0] = 2, [1] = 10, [2] = 2, [3] = 1, [4] = 2, [5] = 1, [6] = 1, [7] = 1, [8] = 2, [9] = 1,
    [10] = 3, [11] = 1, [12] = 9, [13] = 6, [14] = 8, [15] = 2, [16] = 2, [17] = 3, [18] = 2,
    [19] = 1, [20] = 12, [21] = 2, [22] = 2, [23] = 3, [24] = 9, [25] = 2, [26] = 12, [27] = 1,
    [28] = 1, [29] = 5, [30] = 3, [31] = 1, [32] = 12, [33] = 4, [34] = 1, [35] = 1, [36] = 1,
    [37] = 1, [38] = 1, [39] = 1, [40] = 1, [41] = 1, [42] = 1, [43] = 1, [44] = 1, [45] = 1,
    [46] = 1, [47] = 1, [48] = 1, [49] = 1, [50] = 1, [51] = 1, [52] = 1, [53] = 1, [54] = 1,
    [55] = 1, [56] = 1, [57] = 1, [58] = 1, [59] = 1, [60] = 1, [61] = 1, [62] = 1, [63] = 1,
};
static unsigned int weight_total;
static uint8_t weight[64];
static bool only_listed;             /* only= on the command line */

static void fuzz_gen(struct fz *f, struct call *c, int depth);

static unsigned long pick_nr(struct fz *f)
{
    uint64_t p = only_listed ? 1000 : below(&f->r, 1000);
    if (p < 25)
        return 64 + below(&f->r, 64);           /* beyond 63, through the page */
    if (p < 35) {                               /* any number, through syscall */
        static const uint64_t big[] = { 128, 255, 256, 4096, 0x7fffffff, 0x80000000, 0xffffffff,
                                        0x100000000UL, 0x100000018UL, 0x10000001dUL,
                                        0x8000000000000017UL, ~0UL };
        return chance(&f->r, 50) ? big[below(&f->r, ARRAY_SIZE(big))] : rnd(&f->r) | 128;
    }
    uint64_t w = below(&f->r, weight_total);
    for (unsigned int i = 0; i < 64; i++) {
        if (w < weight[i])
            return i;
        w -= weight[i];
    }
    return 0;
}

/* 13 multicall: a batch of generated calls (an iret ends it) */
struct mc_entry { uint64_t op, result, args[6]; };
#define MC_SENTINEL 0x5a5a5a5a5a5a5a5aUL
static struct { unsigned int n; uint8_t sub[64]; } mc_info[NV];

static void g_multicall(struct fz *f, struct call *c, int depth)
{
    uint64_t count = chance(&f->r, 85) ? 1 + below(&f->r, 8) : gen_count(f), ptr;
    struct mc_entry *e = depth ? NULL : req_array(f, sizeof(*e), &count, &ptr);
    mc_info[f->id].n = 0;
    if (depth)
        ptr = gen_ptr(f, P_IN);          /* a nested multicall is refused anyway */
    uint64_t n_entries = e ? f->req_n : 0;
    for (uint64_t i = 0; i < n_entries; i++) {
        struct call n;
        memset(&n, 0, sizeof(n));
        fuzz_gen(f, &n, depth + 1);
        e[i].op = n.nr;
        e[i].result = MC_SENTINEL;
        for (int j = 0; j < 5; j++)
            e[i].args[j] = n.a[j];
        e[i].args[5] = rnd(&f->r);
        mc_info[f->id].sub[i] = (uint8_t)n.sub;
        mc_info[f->id].n = (unsigned int)i + 1;
    }
    /* a batch that changes the callbacks must not unmask events (a
     * SCHEDOP_block or an iret with IF) before the fuzzer puts them back:
     * the upcall would go to the random callback */
    if (f->restore & R_CALLBACKS)
        for (uint64_t i = 0; i < n_entries; i++)
            if (e[i].op == 29 && (uint32_t)e[i].args[0] == 1)
                e[i].args[0] = 0;
    set_args(c, ptr, count | (chance(&f->r, 5) ? rnd(&f->r) << 32 : 0), gen_int(f), 0, 0);
    c->sub = SUB_NONE;
    c->how = chance(&f->r, 80) ? HOW_FRAMED_PAGE : HOW_FRAMED_SYSCALL;
}

static void fuzz_gen(struct fz *f, struct call *c, int depth)
{
    c->nr = pick_nr(f);
    c->how = HOW_PAGE;
    c->sub = SUB_NONE;
    c->vi_target = -1;
    switch (c->nr) {
    case 0: g_set_trap_table(f, c); break;
    case 1: g_mmu_update(f, c); break;
    case 2: g_set_gdt(f, c); break;
    case 3:
        set_args(c, chance(&f->r, 50) ? 0xe02b : gen_int(f), gen_ptr(f, P_IN), 0, 0, 0);
        break;
    case 4:
        set_args(c, gen_code_addr(f), gen_code_addr(f), gen_code_addr(f), gen_int(f), 0);
        f->restore |= R_CALLBACKS;
        break;
    case 5:
        set_args(c, gen_int(f), 0, 0, 0, 0);
        f->restore |= R_FPU;
        break;
    case 6: {   /* sched_op_compat: never block (1) or shutdown (2) */
        uint64_t cmd = gen_cmd(f, 8);
        if ((uint32_t)cmd == 1 || (uint32_t)cmd == 2)
            cmd = 0;
        set_args(c, cmd, gen_int(f), 0, 0, 0);
        c->sub = sub_of(cmd);
        break;
    }
    case 7: g_control(f, c, 0x03000001); break;
    case 8: {
        uint64_t reg = chance(&f->r, 85) ? below(&f->r, 9) : gen_int(f);
        set_args(c, reg, gen_int(f), 0, 0, 0);
        c->sub = sub_of(reg);
        f->restore |= R_DEBUG;
        break;
    }
    case 9: {
        uint64_t reg = chance(&f->r, 85) ? below(&f->r, 9) : gen_int(f);
        set_args(c, reg, 0, 0, 0, 0);
        c->sub = sub_of(reg);
        break;
    }
    case 10: g_update_descriptor(f, c); break;
    case 12: g_memory_op(f, c); break;
    case 13: g_multicall(f, c, depth); break;
    case 14: case 22: g_update_va_mapping(f, c); break;
    case 15: set_args(c, gen_timeout(f), 0, 0, 0, 0); break;
    case 16: g_event_channel_op_compat(f, c); break;
    case 17: g_xen_version(f, c); break;
    case 18: g_console_io(f, c); break;
    case 19: g_physdev_op_compat(f, c); break;
    case 20: g_grant_table_op(f, c); break;
    case 21: {
        static const uint64_t types[] = { 0, 1, 2, 3, 4, 5, 6, 31, 32, 33, 63, 64 };
        uint64_t cmd = chance(&f->r, 80) ? below(&f->r, 3) : gen_u32(f);
        set_args(c, maybe_hi(f, cmd), chance(&f->r, 80) ? types[below(&f->r, ARRAY_SIZE(types))] : gen_int(f),
                 0, 0, 0);
        c->sub = sub_of(c->a[0]);
        break;
    }
    case 23: {
        c->how = HOW_IRET_PAGE;
        set_args(c, gen_int(f), gen_int(f), 0, 0, 0);
        break;
    }
    case 24: g_vcpu_op(f, c); break;
    case 25: {
        uint64_t which = chance(&f->r, 85) ? below(&f->r, 5) : gen_int(f);
        set_args(c, which, chance(&f->r, 50) ? gen_ptr(f, P_IN) : gen_int(f), 0, 0, 0);
        c->sub = sub_of(which);
        f->restore |= R_SEGBASE;
        break;
    }
    case 26: g_mmuext_op(f, c); break;
    case 29: g_sched_op(f, c); break;
    case 30: g_callback_op(f, c); break;
    case 32: g_event_channel_op(f, c); break;
    case 33: g_physdev_op(f, c); break;
    case 35: g_control(f, c, 0x15); break;
    case 36: g_control(f, c, 0x15); break;
    default: g_generic(f, c); break;
    }
    if (c->nr >= 128)
        c->how = HOW_SYSCALL;
    /* a tenth of the calls go through `syscall` instead of the page */
    if (depth == 0 && c->how == HOW_PAGE && chance(&f->r, 10))
        c->how = HOW_SYSCALL;
}

/* ------------------------------------------------------------------ */
/* issuing, restoring, recording                                       */
/* ------------------------------------------------------------------ */
static void fail_restore(const char *what, long rc)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "could not restore %s: %ld", what, rc);
    test_fail(msg);
}

static long hc(uint64_t nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
    return hypercall5(nr, a1, a2, a3, a4, a5);
}

static void register_callbacks(void)
{
    struct { uint16_t type, flags; uint32_t pad; uint64_t address; } cb;
    cb.type = CALLBACKTYPE_event; cb.flags = 0; cb.pad = 0; cb.address = (uint64_t)fz_event_entry;
    long rc = HYPERVISOR_callback_op(CALLBACKOP_register, &cb);
    if (rc)
        fail_restore("the event callback", rc);
    cb.type = CALLBACKTYPE_failsafe; cb.address = (uint64_t)fz_failsafe_entry;
    rc = HYPERVISOR_callback_op(CALLBACKOP_register, &cb);
    if (rc)
        fail_restore("the failsafe callback", rc);
    static const uint16_t others[] = { 2, 4, 5, 7 };
    for (unsigned int i = 0; i < ARRAY_SIZE(others); i++) {
        uint16_t t[2] = { others[i], 0 };
        HYPERVISOR_callback_op(CALLBACKOP_unregister, t);
    }
}

static void restore(struct fz *f)
{
    unsigned int r = f->restore;
    long rc;
    f->restore = 0;
    if (r & R_BASEPTR) {
        rc = mmuext_simple(MMUEXT_NEW_BASEPTR, live_l4, 0);
        if (rc)
            fail_restore("the live L4", rc);
    }
    if (r & R_TRAPS) {
        HYPERVISOR_set_trap_table(NULL);
        rc = traps_init_this_vcpu();
        if (rc)
            fail_restore("the trap table", rc);
    }
    if (r & R_CALLBACKS)
        register_callbacks();
    if (r & R_GDT) {
        rc = hc(2, 0, 0, 0, 0, 0);
        if (rc)
            fail_restore("the GDT", rc);
    }
    if (r & R_SEGBASE) {
        set_smp_id(f->id);
        HYPERVISOR_set_segment_base(SEGBASE_FS, 0);
    }
    if (r & R_FPU)
        hc(5, 0, 0, 0, 0, 0);
    if (r & R_DEBUG) {
        for (unsigned int i = 0; i < 4; i++)
            hc(8, i, 0, 0, 0, 0);
        rc = hc(8, 7, 0x400, 0, 0, 0);
        if (rc)
            fail_restore("%dr7", rc);
    }
    if (r & R_LDT)
        mmuext_simple(13 /* MMUEXT_SET_LDT */, 0, 0);
    if (r & R_USERBASE)
        mmuext_simple(MMUEXT_NEW_USER_BASEPTR, 0, 0);
    if (r & R_VCPU1_UP) {
        rc = HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0);
        if (rc)
            fail_restore("vCPU 1 up", rc);
    }
    struct vcpu_info *vi = my_vi[f->id];
    vi->evtchn_upcall_mask = 1;
    barrier();
}

/* random (but safe) values for an iret frame: guest kernel mode */
static void iret_frame(struct fz *f, struct fz_frame *fr)
{
    static const uint64_t cs[] = { 0xe030, 0xe031, 0xe032, 0xe030 | 0xabcd00000000UL, 0x1e030 };
    static const uint64_t ss[] = { 0xe02b, 0xe028, 0xe02a, 0x1e02b };
    fr->cs = cs[below(&f->r, ARRAY_SIZE(cs))];
    fr->ss = ss[below(&f->r, ARRAY_SIZE(ss))];
    /* CF PF AF ZF SF IF OF, IOPL, ID; never TF, DF, AC, NT */
    fr->rflags = (rnd(&f->r) & (0x8d5 | 0x200 | 0x3000 | 0x200000)) | 2;
    fr->flags = chance(&f->r, 50) ? 0 : (chance(&f->r, 50) ? 0x100 : rnd(&f->r));
    fr->rax = rnd(&f->r);
    fr->r11 = rnd(&f->r);
    fr->rcx = rnd(&f->r);
}

static long issue(struct fz *f, struct call *c, bool *landed)
{
    *landed = false;
    /* a SCHEDOP_block (alone or in a batch) returns at once */
    my_vi[f->id]->evtchn_upcall_pending = 1;
    switch (c->how) {
    case HOW_SYSCALL:
        stats[f->id].syscalls++;
        return fz_syscall(c->nr, c->a[0], c->a[1], c->a[2], c->a[3], c->a[4]);
    case HOW_FRAMED_PAGE: case HOW_IRET_PAGE: case HOW_FRAMED_SYSCALL: {
        struct fz_frame fr;
        memset(&fr, 0, sizeof(fr));
        iret_frame(f, &fr);
        fr.nr = c->nr;
        for (int i = 0; i < 5; i++)
            fr.a[i] = c->a[i];
        fr.how = c->how == HOW_FRAMED_PAGE ? 0 : c->how == HOW_IRET_PAGE ? 1 : 2;
        if (f->restore & R_CALLBACKS)
            fr.rflags &= ~X86_EFLAGS_IF;        /* see g_multicall */
        if (c->how == HOW_IRET_PAGE && chance(&f->r, 30))
            fr.how = 2;                 /* the iret itself through syscall */
        if (fr.how == 2)
            stats[f->id].syscalls++;
        fz_framed(&fr);
        *landed = fr.landed != 0;
        return (long)fr.ret;
    }
    default:
        return hc(c->nr, c->a[0], c->a[1], c->a[2], c->a[3], c->a[4]);
    }
}

/* what a returned port / handle is, for the next calls */
static void learn(struct fz *f, struct call *c, long ret)
{
    if (ret != 0)
        return;
    if (c->nr == 32) {
        uint32_t cmd = (uint32_t)c->a[0];
        uint64_t a = c->a[1];
        if (a < (uint64_t)f->in || a + 12 > (uint64_t)f->in + IN_SIZE)
            return;
        if (cmd == 0 || cmd == 1)
            note_port(f, ((uint32_t *)a)[2]);
        else if (cmd == 6 || cmd == 7)
            note_port(f, ((uint32_t *)a)[1]);
    } else if (c->nr == 24 && c->vi_target >= 0 && (uint32_t)c->a[0] == 10 && !(c->a[0] >> 32)) {
        my_vi[c->vi_target] = c->vi_new;
    } else if (c->nr == 20 && c->a[0] == 0) {
        uint64_t a = c->a[1];
        if (a < (uint64_t)f->in || a + 32 > (uint64_t)f->in + IN_SIZE)
            return;
        struct gnt_map *m = (struct gnt_map *)a;
        if (m->status == 0)
            f->handles[f->nhandles < 16 ? f->nhandles++ : below(&f->r, 16)] = m->handle;
    }
}

/* the per-operation status of a grant batch (in place in each op) */
static void record_grant_status(struct fz *f, struct call *c)
{
    static const uint8_t size[13] = { 32, 24, 24, 0, 24, 40, 16, 24, 0, 16, 0, 12, 0 };
    static const uint8_t off[13] = { 18, 20, 8, 0, 16, 36, 12, 20, 0, 6, 0, 8, 0 };
    uint64_t cmd = c->a[0], uop = c->a[1], count = c->a[2] & 0xffffffff;
    if (cmd >= 13 || !size[cmd] || uop < (uint64_t)f->in)
        return;
    if (cmd == 2 || cmd == 6 || cmd == 9)
        count = 1;
    for (uint64_t i = 0; i < count && i < 64; i++) {
        uint64_t a = uop + i * size[cmd];
        if (a + size[cmd] > (uint64_t)f->in + IN_SIZE)
            break;
        int16_t st = *(int16_t *)(a + off[cmd]);
        record(f->id, NR_GNTST, (unsigned int)cmd, res_code(st));
    }
}

/* clear a pending 2-level port (the fuzzer's own IPI before it fuzzes) */
static void evtchn_clear_2l(uint32_t port)
{
    __atomic_fetch_and(&shared_info->evtchn_pending[port / 64], ~(1ULL << (port % 64)),
                       __ATOMIC_SEQ_CST);
}

#define LAST 8
static void check_text(void);
struct last { uint64_t nr, a[5], ret; unsigned int how; };
static struct last last[NV][LAST];
static unsigned int last_pos[NV];


/* One in/out of the guest kernel: pyxen's own ports (which the TSS lets
 * through: hypercall, syscall), ports a domU may not use (#GP, or emulated
 * with an IOPL from PHYSDEVOP_set_iopl / set_iobitmap), string forms. */
static void port_io(struct fz *f)
{
    static const uint16_t ports[] = { 0xe0, 0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xdf, 0x70, 0x71,
                                      0x80, 0xcf8, 0xcfc, 0x3f8, 0x0, 0xffff, 0x42, 0x42 };
    unsigned long kind = below(&f->r, 10);
    if (!((port_kinds >> kind) & 1))
        return;
    unsigned long port = chance(&f->r, 80) ? ports[below(&f->r, ARRAY_SIZE(ports))] : (uint16_t)rnd(&f->r);
    if (port_force)
        port = port_force & 0xffff;
    if (kind == 6)
        port = 0xe0;
    if (kind == 7)
        port = 0xe2;
    if ((kind == 8 || kind == 9) && (port == 0xe2 || port == 0xe3))
        port = 0xe0;                    /* a syscall port takes rcx as the rip */
    /* as a hypercall (0xe0, 0xe2, 0xe3): harmless numbers only */
    static const unsigned long nrs[] = { 17, 17, 9, 64, 127, 0xffffffff, 1UL << 40 };
    unsigned long nr = nrs[below(&f->r, ARRAY_SIZE(nrs))];
    unsigned long arg1 = chance(&f->r, 50) ? 0 : 7;
    unsigned long buf = kind == 9 ? (uint64_t)f->out + below(&f->r, OUT_SIZE - 8)
                                  : (uint64_t)f->in + below(&f->r, IN_SIZE - 8);
    long ret = fz_port_io(kind == 9 ? 9 : kind, port, nr, arg1, buf);
    record(f->id, NR_PORTIO, (unsigned int)kind, ret == -9999 ? RES_GARBAGE : RES_ZERO);
}

static void fuzz_one(struct fz *f)
{
    struct call c;
    if (chance(&f->r, port_pct)) {
        port_io(f);
        restore(f);
        stats[f->id].calls++;
        f->calls++;
        return;
    }
    memset(&c, 0, sizeof(c));
    f->in_lo = 0;
    f->in_hi = IN_SIZE;
    fuzz_gen(f, &c, 0);
    bool landed;
    struct last *l = &last[f->id][last_pos[f->id]++ % LAST];
    l->nr = c.nr;
    memcpy(l->a, c.a, sizeof(l->a));
    l->how = c.how + 1;
    long ret = issue(f, &c, &landed);
    l->ret = (uint64_t)ret;
    unsigned int res = landed ? RES_IRET : res_code(ret);
    record(f->id, c.nr, c.sub, res);
    learn(f, &c, ret);
    if (c.nr == 20 && ret == 0 && !landed && c.how != HOW_FRAMED_PAGE)
        record_grant_status(f, &c);
    if (c.nr == 13 && !(c.how == HOW_PAGE || c.how == HOW_SYSCALL)) {
        /* the calls inside the batch, as far as they ran */
        struct mc_entry *e = (struct mc_entry *)c.a[0];
        unsigned int n = mc_info[f->id].n;
        for (unsigned int i = 0; i < n; i++) {
            if (e[i].result == MC_SENTINEL)
                break;
            unsigned int r2 = e[i].op == __HYPERVISOR_iret_nr ? RES_IRET : res_code((long)e[i].result);
            record(f->id, e[i].op, mc_info[f->id].sub[i], r2);
            stats[f->id].nested++;
            if (e[i].op == 24 && (uint32_t)e[i].args[0] == 10 && (long)e[i].result == 0 &&
                e[i].args[1] < NV && e[i].args[2] >= (uint64_t)f->in &&
                e[i].args[2] + 16 <= (uint64_t)f->in + IN_SIZE) {
                uint64_t *a = (uint64_t *)e[i].args[2];
                unsigned int t = (unsigned int)e[i].args[1];
                if (a[0] == virt_to_mfn(vi_page[t]) && (uint32_t)a[1] <= 4096 - 64)
                    my_vi[t] = (struct vcpu_info *)(vi_page[t] + (uint32_t)a[1]);
            }
        }
    }
    restore(f);
    stats[f->id].calls++;
    f->calls++;
    if (f->id == 0)
        check_text();
}

/* ------------------------------------------------------------------ */
/* reporting                                                           */
/* ------------------------------------------------------------------ */
static const char *const hc_names[64] = {
    "set_trap_table", "mmu_update", "set_gdt", "stack_switch", "set_callbacks",
    "fpu_taskswitch", "sched_op_compat", "platform_op", "set_debugreg", "get_debugreg",
    "update_descriptor", "11", "memory_op", "multicall", "update_va_mapping", "set_timer_op",
    "event_channel_op_compat", "xen_version", "console_io", "physdev_op_compat",
    "grant_table_op", "vm_assist", "update_va_mapping_otherdomain", "iret", "vcpu_op",
    "set_segment_base", "mmuext_op", "xsm_op", "nmi_op", "sched_op", "callback_op",
    "xenoprof_op", "event_channel_op", "physdev_op", "hvm_op", "sysctl", "domctl", "kexec_op",
    "tmem_op", "argo_op", "xenpmu_op", "dm_op", "hypfs_op",
};

static void res_str(char *buf, size_t len, unsigned int res)
{
    if (res == RES_ZERO) snprintf(buf, len, "0");
    else if (res == RES_POS) snprintf(buf, len, "+");
    else if (res == RES_GARBAGE) snprintf(buf, len, "g");
    else if (res == RES_IRET) snprintf(buf, len, "i");
    else snprintf(buf, len, "-%u", res - RES_ERRNO);
}

static unsigned long total_calls(void)
{
    unsigned long n = 0;
    for (unsigned int i = 0; i < NV; i++)
        n += stats[i].calls;
    return n;
}

/* per hypercall: how many calls gave 0, each -errno, a positive value...
 * (lines stay under Xen's 199 characters) */
static void print_counts(void)
{
    char line[200], r[16], tok[40];
    for (unsigned int nr = 0; nr < NR_CODES; nr++) {
        const char *name = nr < 64 && hc_names[nr] ? hc_names[nr] : nr == NR_BIG ? "syscall>=128" :
                           nr == NR_GNTST ? "(grant op status)" : nr == NR_PORTIO ? "(port I/O)" : "-";
        size_t pos = 0;
        line[0] = 0;
        for (unsigned int res = 0; res < NR_RES; res++) {
            unsigned long n = 0;
            for (unsigned int v = 0; v < NV; v++)
                n += stats[v].counts[nr][res];
            if (!n)
                continue;
            res_str(r, sizeof(r), res);
            snprintf(tok, sizeof(tok), " %s:%lu", r, n);
            if (pos + strlen(tok) > 140) {
                printk("  hc %3u %-24s%s\n", nr, name, line);
                pos = 0;
            }
            memcpy(line + pos, tok, strlen(tok) + 1);
            pos += strlen(tok);
        }
        if (pos)
            printk("  hc %3u %-24s%s\n", nr, name, line);
    }
}

static void print_paths(void)
{
    char line[220], tok[64], r[16], sub[8];
    size_t pos = 0;
    unsigned long distinct = 0;
    /* merge the vCPUs' tables into vCPU 0's view, printing each key once */
    for (unsigned int v = 0; v < NV; v++) {
        for (unsigned int i = 0; i < PATHS; i++) {
            struct path *p = &stats[v].paths[i];
            if (!p->count)
                continue;
            uint32_t count = p->count;
            if (v == 1) {
                /* skip keys vCPU 0 has (they were printed with both counts) */
                bool dup = false;
                uint32_t h = (p->key * 2654435761u) & (PATHS - 1);
                for (unsigned int k = 0; k < PATHS; k++, h = (h + 1) & (PATHS - 1)) {
                    if (!stats[0].paths[h].count)
                        break;
                    if (stats[0].paths[h].key == p->key) { dup = true; break; }
                }
                if (dup)
                    continue;
            } else {
                uint32_t h = (p->key * 2654435761u) & (PATHS - 1);
                for (unsigned int k = 0; k < PATHS; k++, h = (h + 1) & (PATHS - 1)) {
                    if (!stats[1].paths[h].count)
                        break;
                    if (stats[1].paths[h].key == p->key) { count += stats[1].paths[h].count; break; }
                }
            }
            unsigned int nr = p->key >> 20, s = (p->key >> 10) & 1023, res = p->key & 1023;
            unsigned int base = s >= SUB_HI ? s - SUB_HI : s;
            if (base == SUB_NONE) snprintf(sub, sizeof(sub), "-");
            else if (base == SUB_BIG) snprintf(sub, sizeof(sub), "x");
            else snprintf(sub, sizeof(sub), "%u", base);
            res_str(r, sizeof(r), res);
            snprintf(tok, sizeof(tok), " %u.%s%s=%sx%u", nr, sub, s >= SUB_HI ? "h" : "", r, count);
            if (pos + strlen(tok) >= 180) {
                printk("paths:%s\n", line);
                pos = 0;
            }
            memcpy(line + pos, tok, strlen(tok) + 1);
            pos += strlen(tok);
            distinct++;
        }
    }
    if (pos)
        printk("paths:%s\n", line);
    printk("distinct paths: %lu\n", distinct);
}

#define TEXT_PAGES_MAX 64
static unsigned long page_sum[TEXT_PAGES_MAX];

static unsigned long checksum_page(const char *va)
{
    unsigned long s = 0;
    for (const uint64_t *p = (const uint64_t *)va; p < (const uint64_t *)(va + 4096) &&
         p < (const uint64_t *)_etext; p++)
        s = (s ^ *p) * 0x100000001b3UL;
    return s;
}

static unsigned long checksum_text(void)
{
    unsigned long s = 0;
    unsigned int i = 0;
    for (const char *va = _text; va < _etext; va += 4096, i++) {
        unsigned long ps = checksum_page(va);
        if (!text_sum && i < TEXT_PAGES_MAX)
            page_sum[i] = ps;
        s = (s ^ ps) * 0x100000001b3UL;
    }
    return s;
}

/* what changed in the text (where and what, so a trace can be searched) */
static char text_copy[TEXT_PAGES_MAX * 4096];
static volatile int text_bad;

static void print_last_calls(unsigned int id)
{
    for (unsigned int i = 0; i < LAST; i++) {
        struct last *l = &last[id][(last_pos[id] + i) % LAST];
        if (l->how || l->nr)
            printk("  call: v%u nr=%#lx how=%u (%#lx, %#lx, %#lx, %#lx, %#lx) = %#lx\n", id, l->nr,
                   l->how, l->a[0], l->a[1], l->a[2], l->a[3], l->a[4], l->ret);
    }
}

/* after each call of vCPU 0 (cheap next to a hypercall): did the text
 * change, does the window map a frame writable that it must not? */
static void check_text(void)
{
    if (text_bad || !text_copy[0])
        return;
    const volatile uint64_t *wl1 = (const volatile uint64_t *)win_view;
    for (unsigned int i = 0; i < 512; i++) {
        uint64_t e = wl1[i];
        if ((e & L1E_P) && (e & L1E_RW) && !window_rw_ok((e & PTE_ADDR_MASK) >> 12)) {
            text_bad = 1;
            printk("fuzz: window entry %u = %#lx maps a frame of its own writable, after:\n", i, e);
            print_last_calls(0);
            print_last_calls(1);
            return;
        }
    }
    const uint64_t *p = (const uint64_t *)_text, *q = (const uint64_t *)text_copy;
    const uint64_t *end = (const uint64_t *)((uintptr_t)_etext & ~7UL);
    while (p < end && *p == *q)
        p++, q++;
    if (p == end)
        return;
    text_bad = 1;
    printk("fuzz: the text changed during these calls:\n");
    print_last_calls(0);
    print_last_calls(1);
}

static void text_changed(void)
{
    unsigned int shown = 0;
    for (const uint64_t *p = (const uint64_t *)_text, *q = (const uint64_t *)text_copy;
         p < (const uint64_t *)_etext && shown < 8; p++, q++)
        if (*p != *q) {
            printk("fuzz: text %p (mfn %#lx +%#lx) was %016lx, is %016lx\n", (void *)p,
                   virt_to_mfn((void *)p), (unsigned long)p & 0xfff, *q, *p);
            shown++;
        }
    test_fail("the fuzzer's text changed under it");
}

static void progress(void)
{
    unsigned long n = total_calls();
    printk("progress: calls=%lu (v0=%lu v1=%lu) nested=%lu syscalls=%lu upcalls=%lu t=%lums\n",
           n, stats[0].calls, stats[1].calls, stats[0].nested + stats[1].nested,
           stats[0].syscalls + stats[1].syscalls, fz_upcalls, (now_ns() - t0_ns) / 1000000);
    print_counts();
    if (checksum_text() != text_sum)
        text_changed();
    if (HYPERVISOR_xen_version(XENVER_version, 0) <= 0)
        test_fail("xen_version stopped working");
}

/* ------------------------------------------------------------------ */
/* set-up                                                              */
/* ------------------------------------------------------------------ */
static bool trap_hook_fn(struct trap_regs *regs, uint64_t cr2)
{
    (void)cr2;
    if (regs->vector == X86_EXC_DB)
        return true;               /* a breakpoint the fuzzer set before it was cleared */
    if (regs->rip >= (uint64_t)fz_port_io && regs->rip < (uint64_t)fz_port_io_end)
        return false;              /* port I/O: the exception table takes it */
    unsigned int id = smp_id() < NV ? smp_id() : 0;
    printk("fuzz: unexpected trap on vcpu%u (its cr2 %#lx), calls so far: v0=%lu v1=%lu\n", id,
           my_vi[id] ? my_vi[id]->arch.cr2 : 0, stats[0].calls, stats[1].calls);
    printk("  r8=%#lx r9=%#lx r10=%#lx r11=%#lx r12=%#lx r13=%#lx r14=%#lx r15=%#lx rbp=%#lx\n",
           regs->r8, regs->r9, regs->r10, regs->r11, regs->r12, regs->r13, regs->r14, regs->r15,
           regs->rbp);
    for (unsigned int i = 0; i < LAST; i++) {
        struct last *l = &last[id][(last_pos[id] + i) % LAST];
        if (l->how || l->nr)
            printk("  call: nr=%#lx how=%u (%#lx, %#lx, %#lx, %#lx, %#lx) = %#lx\n", l->nr, l->how,
                   l->a[0], l->a[1], l->a[2], l->a[3], l->a[4], l->ret);
    }
    return false;
}

static void setup_fail(const char *what, long rc)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "set-up: %s: %ld", what, rc);
    test_error(msg);
}

static void unmap_page(void *va)
{
    long rc = HYPERVISOR_update_va_mapping((unsigned long)va, 0, UVMF_INVLPG);
    if (rc)
        setup_fail("unmap a guard page", rc);
}

static void set_frame_class(void *va, uint8_t cls)
{
    unsigned long mfn = virt_to_mfn(va);
    if (mfn < MAX_PAGES)
        frame_class[mfn] = cls;
}

static void setup_memory(void)
{
    long rc;
    self_nr_pages = nr_pages < MAX_PAGES ? nr_pages : MAX_PAGES;
    for (unsigned long pfn = 0; pfn < self_nr_pages; pfn++)
        if (p2m[pfn] != pfn)
            setup_fail("needs mfn == pfn", (long)pfn);
    live_l4 = current_l4_mfn();
    shinfo_mfn = start_info->shared_info >> 12;

    /* the builder maps the kernel image writable: make the text read-only,
     * so that pointers into it are pointers pyxen cannot write through */
    for (char *va = _text; va < _etext; va += 4096) {
        rc = HYPERVISOR_update_va_mapping((unsigned long)va, (virt_to_mfn(va) << 12) | PTE_KERN_RO,
                                          UVMF_INVLPG);
        if (rc)
            setup_fail("map the text read-only", rc);
    }

    /* the live page tables: every table reachable from the L4 in the
     * bootstrap region (all of them are mapped read-only there) */
    for (unsigned long i = 0; i < start_info->nr_pt_frames && nr_live_tables < ARRAY_SIZE(live_tables); i++) {
        unsigned long mfn = virt_to_mfn((void *)(start_info->pt_base + i * 4096));
        live_tables[nr_live_tables++] = mfn;
        frame_class[mfn] = FR_TABLE;
    }

    /* guard pages after the argument and output areas */
    for (unsigned int v = 0; v < NV; v++) {
        unmap_page(in_area[v][IN_PAGES]);
        unmap_page(out_area[v][OUT_PAGES]);
        for (unsigned int p = 0; p < OUT_PAGES; p++) {
            set_frame_class(out_area[v][p], FR_SCRATCH);
            sink_mfn[nr_sink++] = virt_to_mfn(out_area[v][p]);
        }
        set_frame_class(async_area[v], FR_SCRATCH);
        sink_mfn[nr_sink++] = virt_to_mfn(async_area[v]);
        my_vi[v] = &shared_info->vcpu_info[v];
    }

    /* the scratch pool: unmapped frames, zeroed */
    for (unsigned int i = 0; i < POOL; i++) {
        unsigned long pfn = alloc_unmapped_pfn();
        if (!pfn)
            setup_fail("no unmapped frames left for the pool", i);
        pool_mfn[i] = pfn_to_mfn(pfn);
        frame_class[pool_mfn[i]] = FR_SCRATCH;
        rc = mmuext_simple(MMUEXT_CLEAR_PAGE, pool_mfn[i], 0);
        if (rc)
            setup_fail("clear a pool frame", rc);
    }

    /* a pinned copy of the live L4 (for NEW_BASEPTR) */
    unsigned long pfn = alloc_unmapped_pfn();
    if (!pfn)
        setup_fail("no frame for the L4 copy", 0);
    l4_copy = pfn_to_mfn(pfn);
    rc = mmuext_simple(MMUEXT_COPY_PAGE, l4_copy, live_l4);
    if (!rc)
        rc = mmuext_simple(MMUEXT_PIN_L4_TABLE, l4_copy, 0);
    if (rc)
        setup_fail("copy and pin the L4", rc);
    frame_class[l4_copy] = FR_TABLE;

    /* the window: an empty L2 slot of the live L2 covering VIRT_BASE,
     * above everything mapped, with a scratch L1 of its own */
    struct pt_walk w;
    if (pt_walk(live_l4, VIRT_BASE, &w) != 0)
        setup_fail("walk VIRT_BASE", 0);
    const volatile uint64_t *l2 = mfn_to_virt(w.table_mfn[2]);
    if (!l2)
        setup_fail("the live L2 is not mapped", 0);
    unsigned int first = (unsigned int)((VIRT_BASE >> 21) & 511), slot = 0;
    for (unsigned int s = first + 1; s < 512; s++) {
        bool free_after = true;
        for (unsigned int t = s; t < 512 && t < s + 1; t++)
            free_after = free_after && !(l2[t] & _PAGE_PRESENT);
        if (free_after && !(l2[s - 1] & _PAGE_PRESENT)) { slot = s; break; }
    }
    if (!slot)
        setup_fail("no free L2 slot for the window", 0);
    pfn = alloc_unmapped_pfn();
    if (!pfn)
        setup_fail("no frame for the window L1", 0);
    win_l1 = pfn_to_mfn(pfn);
    rc = mmuext_simple(MMUEXT_CLEAR_PAGE, win_l1, 0);
    if (!rc)
        rc = mmuext_simple(MMUEXT_PIN_L1_TABLE, win_l1, 0);
    if (!rc)
        rc = mmu_update1((w.table_mfn[2] << 12) + slot * 8,
                         (win_l1 << 12) | _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED);
    if (!rc)
        rc = mmuext_simple(MMUEXT_TLB_FLUSH_ALL, 0, 0);
    if (rc)
        setup_fail("hook the window L1", rc);
    frame_class[win_l1] = FR_WINL1;
    win_va = (VIRT_BASE & ~((1UL << 30) - 1)) + ((unsigned long)slot << 21);
    rc = remap_page(win_view, win_l1, PTE_KERN_RO);
    if (rc)
        setup_fail("map the window L1 read-only", rc);

    /* grant frames, mapped over .bss pages to write entries */
    struct { uint16_t dom, pad; uint32_t nr_frames; int16_t status; uint16_t pad2[3];
             uint64_t frame_list; } setup = { 0x7ff0, 0, GNT_FRAMES, 0, {0}, 0 };
    static uint64_t frames[GNT_FRAMES];
    setup.frame_list = (uint64_t)frames;
    rc = hc(20, 2, (uint64_t)&setup, 1, 0, 0);
    if (rc || setup.status)
        printk("fuzz: no grant frames (%ld/%d): grant entries stay empty\n", rc, setup.status);
    else {
        for (unsigned int i = 0; i < GNT_FRAMES; i++) {
            gnt_mfn[i] = frames[i];
            rc = remap_page(grant_area[i], frames[i], PTE_KERN_RW);
            if (rc)
                setup_fail("map a grant frame", rc);
        }
        nr_gnt = GNT_FRAMES;
    }
}

/* Waits with the farthest deadlines there are (before the fuzzing, so that
 * nothing else touches the port): vCPU 1 polls its IPI port with a timeout
 * of ~0 and 1<<63, and blocks with its single-shot timer at ~0; vCPU 0 wakes
 * it each time by sending on the port.  (A wait that long must neither end
 * early nor break the hypervisor's own timeouts.) */
static volatile long far_port, far_step;
static volatile long far_result[3];

static void far_waits_vcpu1(void)
{
    struct { uint32_t vcpu, port; } ipi = { 1, 0 };
    long rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_ipi, &ipi);
    if (rc) {
        far_step = -1;
        return;
    }
    far_port = ipi.port;
    static const uint64_t timeouts[2] = { ~0UL, 1UL << 63 };
    for (int i = 0; i < 2; i++) {
        uint32_t ports[1] = { ipi.port };
        struct { uint32_t *ports; uint32_t nr, pad; uint64_t timeout; } poll = { ports, 1, 0, timeouts[i] };
        far_step = 1 + i;
        far_result[i] = HYPERVISOR_sched_op(SCHEDOP_poll, &poll);
        uint32_t p = ipi.port;
        evtchn_clear_2l(p);
    }
    HYPERVISOR_set_timer_op(~0UL);
    my_vi[1]->evtchn_pending_sel = 0;
    my_vi[1]->evtchn_upcall_pending = 0;
    barrier();
    far_step = 3;
    far_result[2] = HYPERVISOR_sched_op(SCHEDOP_block, 0);
    my_vi[1]->evtchn_upcall_mask = 1;
    HYPERVISOR_set_timer_op(0);
    struct { uint32_t port; } cl = { ipi.port };
    HYPERVISOR_event_channel_op(EVTCHNOP_close, &cl);
    far_step = 4;
}

static void far_waits_vcpu0(void)
{
    for (long step = 1; step <= 3; step++) {
        uint64_t until = now_ns() + 5000000000ULL;
        while (far_step != step && far_step >= 0 && now_ns() < until)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
        if (far_step < 0) {
            printk("fuzz: far waits skipped (no IPI port)\n");
            return;
        }
        if (far_step != step)
            test_fail("vcpu1 did not get to its far wait");
        uint64_t t = now_ns() + 2000000;
        while (now_ns() < t)
            cpu_relax();
        struct { uint32_t port; } send = { (uint32_t)far_port };
        HYPERVISOR_event_channel_op(EVTCHNOP_send, &send);
    }
    uint64_t until = now_ns() + 5000000000ULL;
    while (far_step != 4 && now_ns() < until)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    if (far_step != 4)
        test_fail("vcpu1 did not wake from a far wait");
    printk("fuzz: far waits: poll(~0)=%ld poll(1<<63)=%ld block(timer ~0)=%ld\n",
           far_result[0], far_result[1], far_result[2]);
    if (far_result[0] || far_result[1] || far_result[2])
        test_fail("a far wait did not return 0");
}

void fz_ap_main(unsigned long id)
{
    set_smp_id((unsigned int)id);
    traps_init_this_vcpu();
    register_callbacks();
    far_waits_vcpu1();
    ap_ready = 1;
    while (!go)
        HYPERVISOR_sched_op(SCHEDOP_yield, 0);
    struct fz *f = &fzs[id];
    while (!stop && f->calls < max_calls)
        fuzz_one(f);
    ap_done = 1;
    for (;;)
        HYPERVISOR_vcpu_op(VCPUOP_down, (unsigned int)id, 0);
}

static void fz_init(struct fz *f, unsigned int id, uint64_t seed)
{
    f->id = id;
    f->r.s = splitmix(seed + 0x632be59bd9b4e019ULL * (id + 1)) | 1;
    f->in = in_area[id][0];
    f->out = out_area[id][0];
}

void test_main(void)
{
    uint64_t seed = cmdline_get_ulong("seed", 1);
    max_calls = cmdline_get_ulong("calls", 20000);
    seconds = cmdline_get_ulong("seconds", 0);
    progress_every = cmdline_get_ulong("progress", 5000);
    self_domid = (unsigned int)cmdline_get_ulong("domid", 1);
    port_pct = cmdline_get_ulong("portio", 2);
    port_kinds = cmdline_get_ulong("portkinds", 0x3ff);
    port_force = cmdline_get_ulong("portforce", 0);
    printk("fuzz: seed=%lu calls=%lu seconds=%lu\n", (unsigned long)seed, max_calls, seconds);

    if (traps_init())
        test_error("traps_init");
    trap_hook = trap_hook_fn;
    set_smp_id(0);
    time_init();
    if (mm_init())
        test_error("mm_init");
    /* only=N,N,...: fuzz these hypercalls only (for narrowing a failure down);
     * skip=N,N,...: all but these */
    char list[128];
    /* the hypercalls a PV domU has get three times the weight of numbers
     * that are no hypercall (or only -ENOSYS/-EPERM for a domU) */
    for (unsigned int i = 0; i < 64; i++)
        weight[i] = (uint8_t)(weights[i] * (i <= 33 && i != 11 && i != 27 && i != 31 ? 3 : 1));
    if (cmdline_get("only", list, sizeof(list))) {
        only_listed = true;
        memset(weight, 0, sizeof(weight));
        for (const char *p = list; *p;) {
            const char *end;
            unsigned long n = parse_ulong(p, &end);
            if (n < 64)
                weight[n] = weights[n] ? weights[n] : 1;
            p = *end ? end + 1 : end;
        }
    }
    if (cmdline_get("skip", list, sizeof(list))) {
        for (const char *p = list; *p;) {
            const char *end;
            unsigned long n = parse_ulong(p, &end);
            if (n < 64)
                weight[n] = 0;
            p = *end ? end + 1 : end;
        }
    }
    for (unsigned int i = 0; i < 64; i++)
        weight_total += weight[i];
    if (!weight_total)
        test_error("only=/skip= left no hypercall");
    setup_memory();
    register_callbacks();
    text_sum = checksum_text();
    if ((size_t)(_etext - _text) <= sizeof(text_copy))
        memcpy(text_copy, _text, (size_t)(_etext - _text));
    printk("fuzz: %lu pages, window %#lx (L1 %#lx), L4 %#lx copy %#lx, pool %#lx.., "
           "grant frames %u\n", self_nr_pages, win_va, win_l1, live_l4, l4_copy, pool_mfn[0], nr_gnt);

    for (unsigned int v = 0; v < NV; v++)
        fz_init(&fzs[v], v, seed);
    dom_vcpus = smp_nr_vcpus();
    nvcpus = dom_vcpus >= 2 ? 2 : 1;
    if (nvcpus >= 2) {
        smp_fill_context(ap_ctx, (void (*)(void))fz_ap_entry, 1, ap_stack + sizeof(ap_stack) - 8);
        long rc = HYPERVISOR_vcpu_op(VCPUOP_initialise, 1, ap_ctx);
        if (!rc)
            rc = HYPERVISOR_vcpu_op(VCPUOP_up, 1, 0);
        if (rc)
            setup_fail("start vcpu1", rc);
        far_waits_vcpu0();
        uint64_t until = now_ns() + 5000000000ULL;
        while (!ap_ready && now_ns() < until)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
        if (!ap_ready)
            test_error("vcpu1 did not start");
        printk("fuzz: 2 vCPUs fuzzing\n");
    } else {
        printk("fuzz: 1 vCPU fuzzing\n");
        nvcpus = 1;
    }
    if (seconds)
        deadline_ns = now_ns() + seconds * 1000000000ULL;
    go = 1;

    struct fz *f = &fzs[0];
    unsigned long next_progress = progress_every;
    while (f->calls < max_calls) {
        fuzz_one(f);
        if (progress_every && f->calls >= next_progress) {
            next_progress += progress_every;
            progress();
        }
        if (deadline_ns && (f->calls & 63) == 0 && now_ns() >= deadline_ns)
            break;
    }
    stop = 1;
    if (nvcpus >= 2) {
        uint64_t until = now_ns() + 60000000000ULL;
        while (!ap_done && now_ns() < until)
            HYPERVISOR_sched_op(SCHEDOP_yield, 0);
        if (!ap_done)
            test_fail("vcpu1 did not finish its calls");
    }
    printk("summary: seed=%lu calls=%lu (v0=%lu v1=%lu) nested=%lu syscalls=%lu upcalls=%lu "
           "seconds=%lu.%03lu\n", (unsigned long)seed, total_calls(), stats[0].calls, stats[1].calls,
           stats[0].nested + stats[1].nested, stats[0].syscalls + stats[1].syscalls, fz_upcalls,
           (now_ns() - t0_ns) / 1000000000, (now_ns() - t0_ns) / 1000000 % 1000);
    print_counts();
    print_paths();
    if (checksum_text() != text_sum)
        text_changed();
    test_success();
}
