/*
 * entry.S - exception, syscall and user-mode transitions of the pyxen mini-OS.
 *
 * Xen 64-bit PV bounce frame, as found at %rsp on entry to a handler
 * registered with set_trap_table (lowest address first):
 *
 *     rcx, r11, [error code], rip, cs, rflags, rsp, ss
 *
 * - rcx/r11 hold the interrupted context's values: Xen re-enters the guest
 *   kernel with SYSRET, which destroys both registers.
 * - The error code word exists only for vectors in X86_EXC_HAVE_EC.
 * - cs: bits 0-15 are the selector, with RPL cleared (0xe030) when guest
 *   kernel mode was interrupted; bits 32-39 hold the saved upcall mask.
 * - rflags.IF is the inverse of the saved upcall mask.
 * - The frame is placed at the interrupted %rsp rounded down to 16 bytes
 *   (kernel mode) or at the stack registered with stack_switch (user mode).
 *
 * The syscall callback gets the same frame without an error code; there
 * rcx/r11 are what the SYSCALL instruction left (user rip and rflags).
 *
 * Return is via HYPERVISOR_iret: push the flags word (0, or VGCF_in_syscall)
 * on top of rip/cs/rflags/rsp/ss and jump (not call) to the iret entry of
 * the hypercall page with the values for rax, rcx and r11 in those
 * registers; the stub pushes rcx, r11, rax to complete struct iret_context.
 */
#include "xen_abi.h"

#define HYPERCALL_iret (hypercall_page + __HYPERVISOR_iret * HYPERCALL_STUB_SIZE)

/* Pseudo vector number the runtime stores for syscalls (TRAP_SYSCALL). */
#define TRAP_SYSCALL_VEC 0x100

#include "gprs.inc"

.macro TRAP_ENTRY vec:req
        .globl trap_entry_\vec
        .type trap_entry_\vec, @function
trap_entry_\vec:
        popq    %rcx                    /* interrupted rcx */
        popq    %r11                    /* interrupted r11 */
        .if ((1 << \vec) & X86_EXC_HAVE_EC) == 0
        pushq   $0                      /* uniform layout: dummy error code */
        .endif
        pushq   $\vec
        jmp     trap_common
        .size trap_entry_\vec, . - trap_entry_\vec
.endm

        .text
        TRAP_ENTRY 0
        TRAP_ENTRY 1
        TRAP_ENTRY 2                    /* NMI: registered by guests/nmi.c */
        TRAP_ENTRY 3
        TRAP_ENTRY 4
        TRAP_ENTRY 5
        TRAP_ENTRY 6
        TRAP_ENTRY 7
        TRAP_ENTRY 8
        TRAP_ENTRY 10
        TRAP_ENTRY 11
        TRAP_ENTRY 12
        TRAP_ENTRY 13
        TRAP_ENTRY 14
        TRAP_ENTRY 16
        TRAP_ENTRY 17
        TRAP_ENTRY 18
        TRAP_ENTRY 19

        .type trap_common, @function
trap_common:
        SAVE_GPRS
        cld
        movq    %rsp, %rdi              /* struct trap_regs * */
        movq    %rsp, %rbx              /* callee-saved copy */
        andq    $~15, %rsp              /* ABI alignment for the C handler */
        call    trap_dispatch
        movq    %rbx, %rsp
        RESTORE_GPRS
        addq    $16, %rsp               /* vector, error code */
        pushq   $0                      /* iret flags: plain iret */
        jmp     HYPERCALL_iret
        .size trap_common, . - trap_common

/*
 * Syscall callback (CALLBACKTYPE_syscall): a guest-user SYSCALL arrives
 * here in guest kernel mode, on the stack registered with stack_switch.
 */
        .globl syscall_entry
        .type syscall_entry, @function
syscall_entry:
        popq    %rcx                    /* user rip (from SYSCALL) */
        popq    %r11                    /* user rflags (from SYSCALL) */
        pushq   $0                      /* error code slot */
        pushq   $TRAP_SYSCALL_VEC
        SAVE_GPRS
        cld
        movq    %rsp, %rdi
        movq    %rsp, %rbx
        andq    $~15, %rsp
        call    syscall_dispatch
        movq    %rbx, %rsp
        RESTORE_GPRS
        addq    $16, %rsp
        pushq   $VGCF_in_syscall        /* return like SYSRET: rcx/r11 dead */
        jmp     HYPERCALL_iret
        .size syscall_entry, . - syscall_entry

/*
 * long user_enter(unsigned long rip, unsigned long rsp, unsigned long arg,
 *                 unsigned long rflags)
 * Save the kernel context, then iret (hypercall) to guest user mode at
 * rip with stack rsp and arg in %rdi.  Returns the value given to
 * user_leave() when the user task exits.
 */
        .globl user_enter
        .type user_enter, @function
user_enter:
        pushq   %rbx
        pushq   %rbp
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        movq    %rsp, user_kernel_rsp(%rip)

        pushq   $FLAT_USER_SS           /* ss */
        pushq   %rsi                    /* rsp */
        pushq   %rcx                    /* rflags */
        pushq   $FLAT_USER_CS           /* cs: RPL 3 -> switch to user mode */
        pushq   %rdi                    /* rip */
        pushq   $0                      /* flags */
        movq    %rdx, %rdi              /* argument for the user function */
        xorl    %eax, %eax
        xorl    %ebx, %ebx
        xorl    %ecx, %ecx
        xorl    %edx, %edx
        xorl    %esi, %esi
        xorl    %ebp, %ebp
        xorl    %r8d, %r8d
        xorl    %r9d, %r9d
        xorl    %r10d, %r10d
        xorl    %r11d, %r11d
        xorl    %r12d, %r12d
        xorl    %r13d, %r13d
        xorl    %r14d, %r14d
        xorl    %r15d, %r15d
        jmp     HYPERCALL_iret
        .size user_enter, . - user_enter

/*
 * void user_leave(long code): called in guest kernel mode (from the syscall
 * or trap handler, on the stack_switch stack); abandons that stack and
 * returns code from the pending user_enter().
 */
        .globl user_leave
        .type user_leave, @function
user_leave:
        movq    user_kernel_rsp(%rip), %rsp
        movq    %rdi, %rax
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbp
        popq    %rbx
        ret
        .size user_leave, . - user_leave

/* Fault-tolerant accessors; the exception table maps the access to a fixup. */
        .globl probe_read64
        .type probe_read64, @function
probe_read64:                           /* (va, uint64_t *out) -> 0 / 1 */
1:      movq    (%rdi), %rax
        movq    %rax, (%rsi)
        xorl    %eax, %eax
        ret
2:      movl    $1, %eax
        ret
        .size probe_read64, . - probe_read64
        .pushsection __ex_table, "a"
        .p2align 3
        .quad 1b, 2b
        .popsection

        .globl probe_write64
        .type probe_write64, @function
probe_write64:                          /* (va, val) -> 0 / 1 */
1:      movq    %rsi, (%rdi)
        xorl    %eax, %eax
        ret
2:      movl    $1, %eax
        ret
        .size probe_write64, . - probe_write64
        .pushsection __ex_table, "a"
        .p2align 3
        .quad 1b, 2b
        .popsection

        .data
        .p2align 3
user_kernel_rsp:
        .quad 0
