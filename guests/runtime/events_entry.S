/*
 * Event callback (CALLBACKTYPE_event): Xen's bounce frame without an error
 * code; events are masked on entry. Save everything, scan, iret.
 */
#include "xen_abi.h"

#define HYPERCALL_iret (hypercall_page + __HYPERVISOR_iret * HYPERCALL_STUB_SIZE)

        .text
        .globl event_entry
        .type event_entry, @function
event_entry:
        popq    %rcx
        popq    %r11
        pushq   %rdi
        pushq   %rsi
        pushq   %rdx
        pushq   %rcx
        pushq   %rax
        pushq   %r8
        pushq   %r9
        pushq   %r10
        pushq   %r11
        pushq   %rbx
        pushq   %rbp
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        cld
        movq    %rsp, %rbx
        andq    $~15, %rsp
        call    event_dispatch
        movq    %rbx, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbp
        popq    %rbx
        popq    %r11
        popq    %r10
        popq    %r9
        popq    %r8
        popq    %rax
        popq    %rcx
        popq    %rdx
        popq    %rsi
        popq    %rdi
        pushq   $0                      /* iret flags */
        jmp     HYPERCALL_iret
        .size event_entry, . - event_entry

        .globl failsafe_entry
        .type failsafe_entry, @function
failsafe_entry:
        ud2
        .size failsafe_entry, . - failsafe_entry
