/*
 * hypercall.h - hypercall wrappers for the pyxen mini-OS.
 *
 * A 64-bit PV hypercall is a near call into the hypervisor-provided
 * hypercall page, entry nr at hypercall_page + 32 * nr.  Arguments go in
 * rdi, rsi, rdx, r10, r8 (r10, not rcx: the transfer stub uses SYSCALL,
 * which overwrites rcx/r11); the result comes back in rax.  The argument
 * registers may be clobbered, and we treat rcx, r11 (and r9) as clobbered too.
 */
#ifndef PYXEN_GUEST_HYPERCALL_H
#define PYXEN_GUEST_HYPERCALL_H

#include <stdint.h>
#include "xen_abi.h"

extern char hypercall_page[4096];

/* Out-of-line generic form (runtime/head.S); nr may be a run-time value. */
long hypercall5(unsigned long nr, unsigned long a1, unsigned long a2,
                unsigned long a3, unsigned long a4, unsigned long a5);

/* In-line form; nr must be a compile-time constant. */
#define _HYPERCALL(nr, a1, a2, a3, a4, a5)                                  \
    ({                                                                      \
        register unsigned long _r_a1 asm("rdi") = (unsigned long)(a1);      \
        register unsigned long _r_a2 asm("rsi") = (unsigned long)(a2);      \
        register unsigned long _r_a3 asm("rdx") = (unsigned long)(a3);      \
        register unsigned long _r_a4 asm("r10") = (unsigned long)(a4);      \
        register unsigned long _r_a5 asm("r8")  = (unsigned long)(a5);      \
        long _r_res;                                                        \
        asm volatile("call hypercall_page + %c[off]"                        \
                     : "=a"(_r_res), "+r"(_r_a1), "+r"(_r_a2), "+r"(_r_a3), \
                       "+r"(_r_a4), "+r"(_r_a5)                             \
                     : [off] "i"((nr) * HYPERCALL_STUB_SIZE)                \
                     : "rcx", "r9", "r11", "memory");                       \
        _r_res;                                                             \
    })

static inline long HYPERVISOR_set_trap_table(const struct trap_info *t)
{ return _HYPERCALL(__HYPERVISOR_set_trap_table, t, 0, 0, 0, 0); }

static inline long HYPERVISOR_mmu_update(struct mmu_update *req, unsigned int count,
                                         unsigned int *done, unsigned int domid)
{ return _HYPERCALL(__HYPERVISOR_mmu_update, req, count, done, domid, 0); }

static inline long HYPERVISOR_mmuext_op(struct mmuext_op *op, unsigned int count,
                                        unsigned int *done, unsigned int domid)
{ return _HYPERCALL(__HYPERVISOR_mmuext_op, op, count, done, domid, 0); }

static inline long HYPERVISOR_update_va_mapping(unsigned long va, uint64_t pte,
                                                unsigned long flags)
{ return _HYPERCALL(__HYPERVISOR_update_va_mapping, va, pte, flags, 0, 0); }

static inline long HYPERVISOR_stack_switch(unsigned long ss, unsigned long sp)
{ return _HYPERCALL(__HYPERVISOR_stack_switch, ss, sp, 0, 0, 0); }

static inline long HYPERVISOR_memory_op(unsigned int cmd, void *arg)
{ return _HYPERCALL(__HYPERVISOR_memory_op, cmd, arg, 0, 0, 0); }

static inline long HYPERVISOR_xen_version(unsigned int cmd, void *arg)
{ return _HYPERCALL(__HYPERVISOR_xen_version, cmd, arg, 0, 0, 0); }

static inline long HYPERVISOR_console_io(unsigned int cmd, unsigned int count,
                                         const char *buf)
{ return _HYPERCALL(__HYPERVISOR_console_io, cmd, count, buf, 0, 0); }

static inline long HYPERVISOR_set_segment_base(unsigned int which, unsigned long base)
{ return _HYPERCALL(__HYPERVISOR_set_segment_base, which, base, 0, 0, 0); }

static inline long HYPERVISOR_sched_op(unsigned int cmd, void *arg)
{ return _HYPERCALL(__HYPERVISOR_sched_op, cmd, arg, 0, 0, 0); }

/* SCHEDOP_shutdown(SHUTDOWN_suspend) also wants the start_info MFN in rdx. */
static inline long HYPERVISOR_sched_op3(unsigned int cmd, void *arg, unsigned long a3)
{ return _HYPERCALL(__HYPERVISOR_sched_op, cmd, arg, a3, 0, 0); }

static inline long HYPERVISOR_callback_op(unsigned int cmd, void *arg)
{ return _HYPERCALL(__HYPERVISOR_callback_op, cmd, arg, 0, 0, 0); }

static inline long HYPERVISOR_event_channel_op(unsigned int cmd, void *arg)
{ return _HYPERCALL(__HYPERVISOR_event_channel_op, cmd, arg, 0, 0, 0); }

/* Convenience forms. */
static inline long xen_shutdown(unsigned int reason)
{
    struct sched_shutdown s = { .reason = reason };
    return HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
}

static inline long evtchn_notify(evtchn_port_t port)
{
    struct evtchn_send s = { .port = port };
    return HYPERVISOR_event_channel_op(EVTCHNOP_send, &s);
}

static inline long mmuext_simple(unsigned int cmd, uint64_t arg1, uint64_t arg2)
{
    struct mmuext_op op = { .cmd = cmd };
    op.arg1.mfn = arg1;
    op.arg2.src_mfn = arg2;
    return HYPERVISOR_mmuext_op(&op, 1, 0, DOMID_SELF);
}

static inline long mmu_update1(uint64_t ptr, uint64_t val)
{
    struct mmu_update u = { .ptr = ptr, .val = val };
    return HYPERVISOR_mmu_update(&u, 1, 0, DOMID_SELF);
}

#endif /* PYXEN_GUEST_HYPERCALL_H */
