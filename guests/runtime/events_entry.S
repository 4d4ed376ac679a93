/*
 * Event callback (CALLBACKTYPE_event): Xen's bounce frame without an error
 * code; events are masked on entry. Save everything, scan, iret.
 */
#include "xen_abi.h"
#include "gprs.inc"

#define HYPERCALL_iret (hypercall_page + __HYPERVISOR_iret * HYPERCALL_STUB_SIZE)

        .text
        .globl event_entry
        .type event_entry, @function
event_entry:
        popq    %rcx
        popq    %r11
        SAVE_GPRS
        cld
        movq    %rsp, %rbx
        andq    $~15, %rsp
        call    event_dispatch
        movq    %rbx, %rsp
        RESTORE_GPRS
        pushq   $0                      /* iret flags */
        jmp     HYPERCALL_iret
        .size event_entry, . - event_entry

        .globl failsafe_entry
        .type failsafe_entry, @function
failsafe_entry:
        ud2
        .size failsafe_entry, . - failsafe_entry
