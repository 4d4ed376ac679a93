/*
 * head.S - entry point, Xen ELF notes and hypercall page of the pyxen mini-OS.
 *
 * Entry state (64-bit PV, as set up by the domain builder):
 *   ring 3, %cs = 0xe033, %ss = 0xe02b, guest kernel mode,
 *   %rsi = virtual address of start_info,
 *   %rsp = top of the boot stack page inside the bootstrap mapping,
 *   event upcalls masked (vcpu_info[0].evtchn_upcall_mask = 1).
 */
#include "xen_abi.h"

#define VIRT_BASE 0xffffffff80000000

/* One Xen ELF note: 4-byte aligned header, name "Xen", 4-byte aligned desc. */
.macro XEN_NOTE type:req, directive:req, value:vararg
        .pushsection .note.Xen, "a", @note
        .p2align 2
        .long 4                 /* namesz, "Xen" + NUL */
        .long 9002f - 9001f     /* descsz */
        .long \type
        .asciz "Xen"
        .p2align 2
9001:   \directive \value
9002:   .p2align 2
        .popsection
.endm

        XEN_NOTE XEN_ELFNOTE_GUEST_OS,      .asciz, "pyxen-minios"
        XEN_NOTE XEN_ELFNOTE_GUEST_VERSION, .asciz, "1"
        XEN_NOTE XEN_ELFNOTE_XEN_VERSION,   .asciz, "xen-3.0"
        XEN_NOTE XEN_ELFNOTE_LOADER,        .asciz, "generic"
        XEN_NOTE XEN_ELFNOTE_VIRT_BASE,     .quad,  VIRT_BASE
        /* ELF p_paddr = p_vaddr - VIRT_BASE (see minios.ld), so offset 0. */
        XEN_NOTE XEN_ELFNOTE_PADDR_OFFSET,  .quad,  0
        XEN_NOTE XEN_ELFNOTE_ENTRY,         .quad,  _start
        XEN_NOTE XEN_ELFNOTE_HYPERCALL_PAGE, .quad, hypercall_page
        /* No feature is required (in particular not writable_page_tables). */
        XEN_NOTE XEN_ELFNOTE_FEATURES,      .asciz, ""
        XEN_NOTE XEN_ELFNOTE_SUPPORTED_FEATURES, .long, 0

        .section .text.head, "ax", @progbits
        .code64
        .globl _start
        .type _start, @function
_start:
        cld
        /* Keep the builder-provided values before touching .bss. */
        movq    %rsi, start_info(%rip)
        movq    %rsp, boot_rsp(%rip)

        /* Zero .bss (the loader should have done it; do not rely on that). */
        leaq    __bss_start(%rip), %rdi
        leaq    __bss_end(%rip), %rcx
        subq    %rdi, %rcx
        xorl    %eax, %eax
        rep stosb

        /* Switch to our own 16 KiB stack in .bss. */
        leaq    boot_stack_top(%rip), %rsp
        xorl    %ebp, %ebp
        call    runtime_main            /* never returns */
1:      jmp     1b
        .size _start, . - _start

/*
 * long hypercall5(nr, a1, a2, a3, a4, a5)
 * C ABI in: rdi=nr rsi=a1 rdx=a2 rcx=a3 r8=a4 r9=a5
 * Xen ABI:  rdi=a1 rsi=a2 rdx=a3 r10=a4 r8=a5, result in rax.
 */
        .text
        .globl hypercall5
        .type hypercall5, @function
hypercall5:
        movq    %rdi, %rax
        shlq    $5, %rax
        leaq    hypercall_page(%rip), %r11
        addq    %r11, %rax
        movq    %rsi, %rdi
        movq    %rdx, %rsi
        movq    %rcx, %rdx
        movq    %r8,  %r10
        movq    %r9,  %r8
        call    *%rax
        ret
        .size hypercall5, . - hypercall5

/*
 * The hypercall page: one 4 KiB page-aligned page in .text whose contents
 * the hypervisor writes when it builds the domain.  Filled with int3 so an
 * unfilled page traps instead of running off.
 */
        .section .text.hypercall_page, "ax", @progbits
        .p2align 12
        .globl hypercall_page
        .type hypercall_page, @object
hypercall_page:
        .fill 4096, 1, 0xcc
        .size hypercall_page, 4096

        .data
        .p2align 3
        .globl start_info
start_info:
        .quad 0
        .globl boot_rsp
boot_rsp:
        .quad 0

        .section .bss.stack, "aw", @nobits
        .p2align 12
        .globl boot_stack
boot_stack:
        .skip 16384
        .globl boot_stack_top
boot_stack_top:
