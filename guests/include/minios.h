/*
 * minios.h - runtime API of the pyxen mini-OS test guests.
 *
 * Every guest is one C file defining test_main(); the runtime (runtime/)
 * provides the entry point, hypercalls, printing, traps, memory helpers and
 * a tiny user-mode facility.  Guests end with test_result(), which prints
 * the single "Test result: ..." line and shuts the domain down.
 */
#ifndef PYXEN_GUEST_MINIOS_H
#define PYXEN_GUEST_MINIOS_H

#include <stdint.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>

#include "xen_abi.h"
#include "hypercall.h"

#define VIRT_BASE 0xffffffff80000000UL

#define __noreturn   __attribute__((noreturn))
#define __aligned(x) __attribute__((aligned(x)))
#define __page_aligned_bss __attribute__((section(".bss.page_aligned"), aligned(4096)))
#define barrier()    asm volatile("" ::: "memory")
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- entry / globals (runtime/head.S, runtime/lib.c) ---- */
void test_main(void);                  /* provided by each guest */
extern struct start_info *start_info;  /* %rsi at entry */
extern unsigned long boot_rsp;         /* %rsp at entry (top of the boot stack) */
extern char _text[], _etext[], _end[], __bss_start[], __bss_end[];

/* ---- libc subset (runtime/lib.c) ---- */
void *memset(void *s, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- console ---- */
enum console_sink {
    CONSOLE_SINK_HYPERCALL = 1,  /* HYPERVISOR_console_io(CONSOLEIO_write) */
    CONSOLE_SINK_RING      = 2,  /* start_info console ring + EVTCHNOP_send */
};
void printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vprintk(const char *fmt, va_list ap);
void console_set_sink(unsigned int sinks);
int  console_ring_init(void);            /* 0, or negative if no ring page */
int  console_ring_resume(void);          /* console_ring_init again (after a restore) */
long cons_ring_write(const char *buf, size_t len);  /* bytes queued, <0 error */
void cons_ring_flush(void);              /* wait (bounded) for the backend */
struct xencons_ring *console_ring(void); /* NULL until console_ring_init() */

/* ---- results ---- */
void __noreturn test_result(const char *status, const char *reason);
#define test_success()        test_result("SUCCESS", NULL)
#define test_fail(reason)     test_result("FAILURE", (reason))
#define test_skip(reason)     test_result("SKIP", (reason))
#define test_error(reason)    test_result("ERROR", (reason))
void __noreturn xen_crash_loop(void);

/* Keep a failure count; the first failure's message becomes the reason. */
void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
unsigned int check_failures(void);
void __noreturn test_finish(void);      /* SUCCESS if no check() failed */

/* ---- command line ---- */
/* Find "key=value" in start_info->cmd_line; copies value, returns true. */
bool cmdline_get(const char *key, char *val, size_t len);
unsigned long cmdline_get_ulong(const char *key, unsigned long dflt);
unsigned long parse_ulong(const char *s, const char **end);

/* ---- time ---- */
static inline uint64_t rdtsc_ordered(void)
{
    uint32_t lo, hi;
    asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
    return ((uint64_t)hi << 32) | lo;
}

/* ---- shared info / traps (runtime/traps.c, runtime/entry.S) ---- */
extern struct shared_info *shared_info;   /* NULL until map_shared_info() */
extern struct vcpu_info *vcpu_info0;
int map_shared_info(void);

/*
 * Register state saved by the runtime's exception/syscall entry code,
 * lowest address first.  rip..ss is the frame Xen built (after the
 * runtime popped Xen's rcx/r11 words into the rcx/r11 fields).
 */
struct trap_regs {
    uint64_t r15, r14, r13, r12, rbp, rbx, r11, r10;
    uint64_t r9, r8, rax, rcx, rdx, rsi, rdi;
    uint64_t vector;          /* runtime-defined: exception vector or TRAP_SYSCALL */
    uint64_t error_code;      /* 0 for vectors without one */
    uint64_t rip;
    uint64_t cs;              /* bits 0-15 CS; bits 32-39 saved upcall mask */
    uint64_t rflags;
    uint64_t rsp;
    uint64_t ss;
};
#define TRAP_SYSCALL 0x100

struct fault_info {
    uint64_t vector, error_code, rip, cr2, cs;
};
extern volatile struct fault_info last_fault;   /* last fault fixed up via extable */

/* A guest may hook traps; return true if handled (the frame may be edited). */
extern bool (*trap_hook)(struct trap_regs *regs, uint64_t cr2);
int traps_init(void);            /* map_shared_info + set_trap_table */
int traps_init_this_vcpu(void);  /* set_trap_table again, for a secondary vCPU */
const char *trap_name(unsigned int vector);

/* Fault-tolerant accessors: return 0, or 1 if the access faulted. */
int probe_read64(unsigned long va, uint64_t *out);
int probe_write64(unsigned long va, uint64_t val);

/* ---- memory (runtime/mm.c) ---- */
extern unsigned long *p2m;             /* start_info->mfn_list */
extern unsigned long nr_pages;
extern unsigned long first_free_pfn;   /* first pfn after all bootstrap elements */
extern unsigned long mapped_end_pfn;   /* pfns below are mapped at VIRT_BASE+pfn*4K */
int mm_init(void);
static inline void *pfn_to_virt(unsigned long pfn)
{ return (void *)(VIRT_BASE + (pfn << PAGE_SHIFT)); }
static inline unsigned long virt_to_pfn(const void *va)
{ return ((unsigned long)va - VIRT_BASE) >> PAGE_SHIFT; }
static inline unsigned long pfn_to_mfn(unsigned long pfn) { return p2m[pfn]; }
static inline unsigned long virt_to_mfn(const void *va) { return p2m[virt_to_pfn(va)]; }
unsigned long mfn_to_pfn(unsigned long mfn);       /* ~0UL if not ours */
void *mfn_to_virt(unsigned long mfn);              /* NULL if not mapped */
unsigned long alloc_pfn(void);          /* zeroed, mapped RW; 0 if none left */
unsigned long alloc_unmapped_pfn(void); /* never mapped; 0 if none */

struct pt_walk {
    int level;                  /* 4..1: level whose entry is absent; 0: mapped */
    uint64_t entry[5];          /* entry[4] = L4e ... entry[1] = L1e */
    uint64_t entry_maddr[5];    /* machine address of each entry */
    uint64_t table_mfn[5];      /* mfn of the L4/L3/L2/L1 tables */
};
/* Walk va through the L4 at machine frame l4_mfn (tables must be mapped). */
int pt_walk(unsigned long l4_mfn, unsigned long va, struct pt_walk *w);
unsigned long current_l4_mfn(void);            /* what the runtime believes */
void set_current_l4_mfn(unsigned long mfn);
int remap_page(void *va, unsigned long mfn, uint64_t flags);  /* update_va_mapping */
int make_page_readonly(void *va);
int make_page_writable(void *va);

/* ---- user mode (runtime/user.c, runtime/entry.S) ---- */
/* Syscall numbers understood by the runtime's syscall handler. */
#define SYS_EXIT    0      /* exit(code): ends user_run() */
#define SYS_ADD     1      /* returns a1+a2+a3+a4+a5+a6 */
#define SYS_REPORT  2      /* report(index, value): store into user_reports[] */
#define SYS_NOP     3      /* returns 0 */
#define SYS_GETMAGIC 4     /* returns USER_SYSCALL_MAGIC */
#define USER_SYSCALL_MAGIC 0x5ca11ab1e5ca11abUL
#define USER_NR_REPORTS 16
extern volatile uint64_t user_reports[USER_NR_REPORTS];
extern volatile uint64_t user_syscall_count;
extern volatile struct trap_regs user_last_syscall; /* copy of the last syscall frame */

int user_init(void);      /* user L4, kernel stack, syscall callback */
/* Run fn(arg) in guest user mode on the runtime's user stack; returns the
 * value passed to SYS_EXIT. */
long user_run(void (*fn)(unsigned long), unsigned long arg);
/* Custom syscall hook; return true if handled (set regs->rax). */
extern bool (*syscall_hook)(struct trap_regs *regs);

static inline long user_syscall6(unsigned long nr, unsigned long a1, unsigned long a2,
                                 unsigned long a3, unsigned long a4, unsigned long a5,
                                 unsigned long a6)
{
    register unsigned long r10 asm("r10") = a4;
    register unsigned long r8 asm("r8") = a5;
    register unsigned long r9 asm("r9") = a6;
    long ret;
    asm volatile("syscall"
                 : "=a"(ret), "+r"(r10), "+r"(r8), "+r"(r9)
                 : "a"(nr), "D"(a1), "S"(a2), "d"(a3)
                 : "rcx", "r11", "memory");
    return ret;
}
#define user_syscall(nr, a1, a2) user_syscall6(nr, a1, a2, 0, 0, 0, 0)

#endif /* PYXEN_GUEST_MINIOS_H */
