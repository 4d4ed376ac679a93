"""pyxen's private memory (KVM slot 1): reserved page tables, exit stubs,
IDT, GDTs, TSSs, CPL0 stacks, the M2P table and shared_info.

It is a memfd like guest RAM, so dom0 services can map shared_info too.
"""
from __future__ import annotations

import struct

from ..kvm import GuestMemory
from . import layout as L
from .abi import FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS32, ERRCODE_VECTORS

_Q = struct.Struct("<Q")


def code_descriptor64(dpl: int) -> int:
    # P, S, type=code exec/read accessed, L=1, G=1, limit 0xfffff
    return 0x00AF9B000000FFFF | (dpl << 45)


def data_descriptor(dpl: int) -> int:
    return 0x00CF93000000FFFF | (dpl << 45)


def code_descriptor32(dpl: int) -> int:
    return 0x00CF9B000000FFFF | (dpl << 45)


def tss_descriptor(base: int, limit: int = 0x67) -> tuple[int, int]:
    low = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (0x89 << 40) \
        | (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56)
    return low, base >> 32


# How pyxen's CPL0 stubs that go back to the guest without an exit (the
# replay stubs below that return straight to it, GP_FAST_STUB, BP_FAST_STUB)
# return, with only the CPU's frame left on the CPL0 stack (rsp = the
# stack's top - 40, so the vCPU's flags byte, at the stack's bottom, is at
# -0x1fd8(%rsp)):
#      testb $FAST_MUST_EXIT,-0x1fd8(%rsp)
#   [fast_stub_tail(stub):] jnz 1f
#      iretq
#   1: out %al,$PORT_STUB_EXIT; hlt
# A kick can end KVM_RUN inside such a stub. When pyxen must then act
# before the guest runs on (a pause: a vCPU never parks at CPL0, whose
# state no save could restore; an upcall that became due), it sets
# FAST_MUST_EXIT: the stub exits instead of returning, and pyxen does its
# iretq (PVVcpu.must_run_on). At the jnz or the iretq the flag comes too
# late: there pyxen does the iretq itself.
FAST_MUST_EXIT = 4              # in the vCPU's flags byte (XenHeap.fast_flags_offset)
_MUST_EXIT_TEST = bytes.fromhex("f6842428e0ffff") + bytes([FAST_MUST_EXIT])
FAST_RETURN = _MUST_EXIT_TEST + bytes.fromhex("750248cf") + bytes([0xE6, L.PORT_STUB_EXIT, 0xF4])


def fast_stub_tail(stub: bytes) -> int:
    """Offset of the jnz of a returning stub's FAST_RETURN (its iretq follows;
    the exit it jumps to may be placed further down)."""
    at = stub.index(_MUST_EXIT_TEST) + len(_MUST_EXIT_TEST)
    exit_at = at + 2 + stub[at + 1]
    assert stub[at] == 0x75 and stub[at + 2:at + 4] == b"\x48\xcf" \
        and stub[exit_at:exit_at + 2] == bytes([0xE6, L.PORT_STUB_EXIT])
    return at


# CPL0 replay stub: rsi = list of (va, value) pairs, rcx = count.
#   1: mov (%rsi),%rdi; mov 8(%rsi),%rax; mov %rax,(%rdi); add $16,%rsi;
#      dec %rcx; jnz 1b; out %al,$PORT_APPLY; hlt
_APPLY_LOOP = bytes.fromhex("488b3e488b46084889074883c61048ffc975ed")
APPLY_STUB = _APPLY_LOOP + bytes([0xE6, L.PORT_APPLY, 0xF4])
# Back to the guest without an exit: the guest's rdi, rsi, rcx, rax sit on the
# CPL0 stack under an iretq frame. With rcx = 0 the write loop is skipped.
#   test %rcx,%rcx; jz 1f; <loop>; 1: [mov %cr3,%rax; mov %rax,%cr3]
#   pop %rdi; pop %rsi; pop %rcx; pop %rax; iretq
_SKIP = bytes.fromhex("4885c974") + bytes([len(_APPLY_LOOP)])
_RETURN = bytes.fromhex("5f5e5958") + FAST_RETURN
APPLY_IRET_STUB = _SKIP + _APPLY_LOOP + _RETURN
# the same, and a TLB flush (a CR3 reload, which also makes KVM resync its
# shadow of the guest's page tables) before returning: for the guest's
# MMUEXT_TLB_FLUSH / INVLPG and update_va_mapping's flush flags
APPLY_FLUSH_STUB = _SKIP + _APPLY_LOOP + bytes.fromhex("0f20d80f22d8") + _RETURN


# The #GP stub (IDT vector 13). A PV kernel's cli/sti is a no-op where Xen's
# iopl_ok holds (Xen's priv-op emulation ignores them), and Linux runs ~5,600
# of them per boot (this_cpu_cmpxchg16b_emu: pushf; cli; ...; popf, until its
# alternatives are patched). Answered here, in the guest, they cost no exit
# (issue 15). The vCPU's fast-path flags byte sits at the bottom of its CPL0
# stack (XenHeap.fast_flags_offset); pyxen keeps bit 0 = iopl_ok for the
# vCPU's current mode and IOPL (PVVcpu.sync_fast_flags). Anything else (a
# fault in pyxen's own CPL0 code, a nonzero error code, another instruction,
# cli/sti without I/O privilege) takes the usual exit with the usual frame.
#      testb $3,16(%rsp); jz slow         from pyxen's CPL0 code
#      cmpq $0,(%rsp); jne slow           #GP(0) only
#      push %rax; mov %rsp,%rax; and $~0x1fff,%rax
#      testb $1,(%rax); jz slow_pop       cli/sti not no-ops now
#      mov 16(%rsp),%rax
#   GP_FAST_READ:
#      movzbl (%rax),%eax; or $1,%al; cmp $0xfb,%al; jne slow_pop   cli (fa) / sti (fb)
#      incq 16(%rsp); pop %rax; add $8,%rsp                          past it
#      (FAST_RETURN)                                                  back
#   slow_pop: pop %rax
#   slow: push $13; out %al,$PORT_TRAP; hlt
GP_FAST_STUB = bytes.fromhex(
    "f644241003743e48833c24007537504889e0482500e0fffff600017427488b442410"
    "0fb6000c013cfb751948ff442410584883c408") + FAST_RETURN \
    + bytes.fromhex("586a0de6") + bytes([L.PORT_TRAP, 0xF4])
GP_FAST_READ = 0x22             # offset of the guest-rip read (a #PF there is the guest's)
FAST_CLI_OK = 1




# The syscall stubs page (`syscall` reaches MSR_LSTAR at CPL3 here; the page
# is read/execute-only to the guest, pyxen writes it): one small LSTAR stub
# per vCPU (its MSR_LSTAR), the compat (CSTAR) stub, the code the LSTAR stubs
# share, and a PERCPU entry per vCPU that pyxen keeps up to date
# (PVVcpu.sync_fast_flags, at every change of what it holds). Only its mode
# byte is in this page, which user mode can read; the rest is in the
# KPERCPU page (L.KPERCPU_OFF), which only the kernel view of pyxen's slot
# maps (XenHeap.l4_entry_user), at the same offsets:
#   +0  the address of the vCPU's vcpu_info, mapped for the stubs
#       (vcpu_info_va; set_vcpu_info)
#   +8  FAST_IRET_OK | the virtual IOPL << 12
#   +16 the guest's event callback (0: none)
#   +24 FAST_KERNEL_MODE: the vCPU is in guest kernel mode (MODE_OFF + the
#       vCPU's id, in this page)
# A `syscall` in guest user mode is the guest kernel's, never answered here.
# In guest kernel mode these hypercalls are answered without an exit to
# pyxen (issue 15); whatever else the stubs see exits as before (out
# $PORT_SYSCALL with the registers as the guest left them, rax the number):
# - vcpu_op on a vCPU the domain does not have: -ENOENT whatever the command
#   (Xen's do_vcpu_op checks the id first). Linux asks VCPUOP_is_up of every
#   possible CPU (nr_cpu_ids: 8,192 for Debian's kernels) as it boots.
# - stack_switch, and set_segment_base(SEGBASE_FS): Linux makes the first at
#   every context switch (load_sp0), the second at every switch to a task
#   with a TLS. The shared code's int3 enters BP_FAST_STUB at CPL0, which
#   answers them in the guest or leaves rax as it was, and then the stub
#   exits with it.
# - iret back to guest kernel mode: Linux returns with it from every event
#   upcall and from exceptions in kernel mode (the iret part below).
# - xen_version(XENVER_version): Linux makes it to have pending events
#   delivered when it unmasks them (xen_force_evtchn_callback). Answered
#   with pyxen's version; with an event pending and events unmasked, the
#   upcall goes in here too, as Xen's create_bounce_frame builds it in
#   guest kernel mode: on the current stack aligned to 16, [rcx, r11, rip,
#   cs 0xe030 (saved mask 0), rflags (IF set, the virtual IOPL), rsp,
#   0xe02b], events masked, rax the version, rcx and r11 as they were; it
#   exits when the guest has no event callback.
# - vcpu_op(VCPUOP_set_singleshot_timer) on the calling vCPU, flags 0 (Linux
#   makes it in every timer tick): the deadline goes to the vCPU's slot in
#   the TSLOTS page (kernel view only), if it is after the floor pyxen
#   published there (PVVcpu.publish_timer_floor: none while a single-shot
#   timer is armed, which a new deadline must replace through pyxen; for a
#   moment after one fired, that moment, with a kick then; none otherwise),
#   and the vCPU's next exit arms it (take_answered_singleshot). A fault
#   reading the argument is pyxen's -EFAULT (SINGLESHOT_READS,
#   PVVcpu.handle_trap).
# rflags come back from r11 as set_return gives them (NT cleared), pushed on
# the guest kernel stack, where Xen too writes bounce frames at any moment
# (Xen's sysret writes nothing: if that push faults, pyxen makes the return
# itself, PVVcpu.handle_trap); a hypercall the stubs do not answer touches
# no guest memory (PV GRUB's relocator makes them with its stack read-only
# or unmapped).
#   per vCPU (LSTAR_SLOT each):
#      testb $FAST_KERNEL_MODE,PERCPU[vcpu]+24(%rip); jz slow     user mode
#      cmp $23,%rax; je 1f                      __HYPERVISOR_iret
#      cmp $17,%rax; je 2f                      __HYPERVISOR_xen_version
#      cmp $24,%rax; je 3f                      __HYPERVISOR_vcpu_op
#      jmp kernel
#   1: lea PERCPU[vcpu](%rip),%rcx; jmp iret
#   2: lea PERCPU[vcpu](%rip),%rax; jmp xen_version
#   3: cmp $vcpu,%esi; jne kernel               another vCPU's
#      mov $vcpu,%eax; jmp single
#   kernel:
#      rol $17,%rcx; lea 1(%rcx),%rcx; test $0x1fffe,%ecx     canonical rcx? (XTF
#      lea -1(%rcx),%rcx; ror $17,%rcx; jnz slow                xsa-7; no memory used)
#      cmp $3,%rax; je bp                       __HYPERVISOR_stack_switch
#      cmp $25,%rax; je bp                      __HYPERVISOR_set_segment_base
#      cmp $24,%rax; jne slow                   __HYPERVISOR_vcpu_op
#      cmp $NR_VCPUS,%esi; jb slow              a vCPU it has: pyxen's handler
#      push $-ENOENT; pop %rax
#   back: push %r11; andq $~NT,(%rsp); popfq; jmp *%rcx
#   bp: int3; [LSTAR_INT3_RET:] nop
#      test %rax,%rax; jz back                  answered: rax = 0
#   slow: out %al,$PORT_SYSCALL; hlt
#   xen_version:
#      test %rdi,%rdi; jnz xslow                XENVER_version only (rdi = 0)
#      (rcx canonical, as above, or xslow)
#      mov (%rax),%rdi                          the vcpu_info
#      cmpb $0,1(%rdi); jne plain               masked
#      cmpb $0,(%rdi); je plain                 nothing pending
#      cmpq $0,16(%rax); je xslow_rdi           no callback: pyxen
#      movb $1,1(%rdi)                          mask events
#      mov %rsp,%rdi; and $~15,%rdi; sub $56,%rdi                    the frame
#      mov %rcx,(%rdi); mov %r11,8(%rdi); mov %rcx,16(%rdi); movq $0xe030,24(%rdi)
#      mov %r11,32(%rdi); mov %rsp,40(%rdi); movq $0xe02b,48(%rdi)
#      andq $~(IF|IOPL|NT|VM),32(%rdi)
#      mov 8(%rax),%rcx; and $0x3000,%ecx; or $0x202,%ecx; or %rcx,32(%rdi)   IOPL, IF
#      mov 16(%rax),%rcx; mov %rcx,-8(%rdi); lea -8(%rdi),%rax     the callback
#      mov (%rdi),%rcx; xor %edi,%edi
#      mov %rax,%rsp; mov $VERSION,%eax; ret
#   plain: xor %edi,%edi; mov $VERSION,%eax; jmp back
#   xslow_rdi: xor %edi,%edi
#   xslow: mov $17,%eax; jmp slow
#   iret: (the iret part, below)
#   single:                                     rax = this vCPU's id
#      cmp $VCPUOP_set_singleshot_timer,%edi; jne sslow
#      (rcx canonical, as above, or sslow)
#      cmpl $0,8(%rdx); jne sslow               flags (a fault: pyxen's -EFAULT)
#      shl $4,%eax; movabs $TSLOTS,%rdi; add %rax,%rdi        the vCPU's slot
#      mov (%rdx),%rax                          the deadline (a fault: the same)
#      cmp (%rdi),%rax; jbe sslow_rdi           not after the floor: pyxen
#      mov %rax,8(%rdi); xor %edi,%edi; xor %eax,%eax; jmp back
#   sslow_rdi: mov $VCPUOP_set_singleshot_timer,%edi
#   sslow: mov $24,%eax; jmp slow
LSTAR_SLOT = 0x50               # per vCPU
CSTAR_OFF = 0xA00               # the compat stub, after L.MAX_VCPUS slots
COMMON_OFF = 0xA10              # the code the LSTAR stubs share
MODE_OFF = 0xF00                # a mode byte per vCPU (FAST_KERNEL_MODE)
PERCPU_SIZE = 32                # per vCPU in the KPERCPU page
FAST_KERNEL_MODE = 1
FAST_IRET_OK = 1                # no vm_assist makes iret change the IOPL
TSLOT_NO_ANSWER = (1 << 64) - 1  # a floor no deadline is after: the stub exits
_KERNEL, _SLOW, _XEN_VERSION, _IRET, _SINGLE = 0xA10, 0xA59, 0xA5C, 0xB16, 0xBEE
SYSCALL_BACK = 0xA45            # `back`: its push is the answers' one write to the stack
# the singleshot answer's reads of the guest's argument: a fault there is
# the hypercall's -EFAULT, made by pyxen (PVVcpu.handle_trap)
SINGLESHOT_READS = (0xC0B, 0xC21)
# the iret answer's writes under the target stack, which Xen's iret does
# not make: a fault there is the iret, made by pyxen (PVVcpu.handle_trap)
IRET_WRITES = (0xBC2, 0xBD0, 0xBD9)
# Just past the shared int3, a nop: BP_FAST_STUB checks the frame's rip is
# this, and returns past the nop, so a vCPU is never here but while KVM
# still owes the #BP's delivery (PVVcpu.may_redirect)
LSTAR_INT3_RET = 0xA53


def lstar_stub(cpu: int) -> bytes:
    at = cpu * LSTAR_SLOT
    kpercpu = (L.KPERCPU_OFF - L.SYSCALL_STUBS_OFF) + cpu * PERCPU_SIZE

    def rel(target: int, end: int) -> bytes:
        return struct.pack("<i", target - (at + end))
    code = (b"\xf6\x05" + rel(MODE_OFF + cpu, 0x7) + bytes([FAST_KERNEL_MODE])
            + b"\x0f\x84" + rel(_SLOW, 0xD)
            + bytes.fromhex("4883f81774114883f81174174883f818741d") + b"\xe9" + rel(_KERNEL, 0x24)
            + b"\x48\x8d\x0d" + rel(kpercpu, 0x2B) + b"\xe9" + rel(_IRET, 0x30)
            + b"\x48\x8d\x05" + rel(kpercpu, 0x37) + b"\xe9" + rel(_XEN_VERSION, 0x3C)
            + b"\x83\xfe" + bytes([cpu]) + b"\x0f\x85" + rel(_KERNEL, 0x45)
            + b"\xb8" + struct.pack("<I", cpu) + b"\xe9" + rel(_SINGLE, 0x4F))
    assert len(code) == 0x4F <= LSTAR_SLOT and L.MAX_VCPUS * LSTAR_SLOT <= CSTAR_OFF \
        and L.MAX_VCPUS <= 0x80
    return code


# The iret part: HYPERVISOR_iret made with `syscall` in guest kernel mode,
# returning to guest kernel mode (rcx = the vCPU's PERCPU entry). Xen's
# do_iret, for the frame [rax, r11, rcx, flags, rip, cs, rflags, rsp, ss]
# at %rsp: the upcall mask becomes !rflags.IF, and a pending event with
# events now unmasked is delivered at once. Here it exits to pyxen (its
# do_iret) for all but the plain case: vm_assist that makes iret change
# IOPL, flags (VGCF_in_syscall), a cs other than the flat kernel one with
# RPL 0-2 (RPL 3 goes to user mode), an ss other than the flat kernel one,
# rflags.TF (the single step would come one instruction late), a target
# stack inside or under the frame, a non-canonical rip or rsp (the return
# faults, which pyxen hands the guest as Xen does: XTF xsa-7), or an event
# pending once unmasked. The return writes rcx, rflags and rip under the
# target stack (a kernel stack: no red zone), which Xen does not: if one of
# those writes faults, pyxen makes the iret itself (IRET_WRITES,
# PVVcpu.handle_trap), which writes nothing there, as Xen's. A frame the
# guest cannot read crashes the domain, as Xen's do_iret does.
#      testb $FAST_IRET_OK,8(%rcx); jz slow
#      cmpq $0,0x18(%rsp); jne slow                     flags
#      movzwl 0x28(%rsp),%r11d; xor $0xe030,%r11d; cmp $2,%r11d; ja slow    cs
#      movzwl 0x40(%rsp),%r11d; or $3,%r11d; cmp $0xe02b,%r11d; jne slow     ss
#      testl $TF,0x30(%rsp); jnz slow
#      lea 0x48(%rsp),%r11; cmp %r11,0x38(%rsp); jb slow                   rsp
#      mov 0x20(%rsp),%r11; sar $47,%r11; inc %r11; cmp $1,%r11; ja slow   canonical rip
#      mov 0x38(%rsp),%r11; sar $47,%r11; inc %r11; cmp $1,%r11; ja slow   and rsp
#      mov (%rcx),%rcx                                  this vCPU's vcpu_info
#      testl $IF,0x30(%rsp); jz masked
#      movb $0,1(%rcx); cmpb $0,(%rcx); jne slow        mask 0; pending: pyxen
#      jmp done
#   masked: movb $1,1(%rcx)
#   done: mov 0x38(%rsp),%rcx; sub $24,%rcx             rcx, rflags, rip
#      mov 0x20(%rsp),%r11; mov %r11,16(%rcx)           under the new stack
#      mov 0x30(%rsp),%r11; btr $NT,%r11; mov %r11,8(%rcx)
#      mov 0x10(%rsp),%r11; mov %r11,(%rcx)
#      mov 0x8(%rsp),%r11; mov (%rsp),%rax
#      mov %rcx,%rsp; pop %rcx; popfq; ret
#   islow: out %al,$PORT_SYSCALL; hlt                    rax is still 23


def syscall_common(nr_vcpus: int, version: int) -> bytes:
    """The code the LSTAR stubs share (at COMMON_OFF): kernel, xen_version, iret."""
    code = bytearray.fromhex(
        "48c1c111488d4901f7c1feff0100488d49ff48c1c91175314883f80374244883f819741e4883f818"
        "751f81fe4433221172176afe58415348812424ffbfffff9dffe1cc904885c074ece6e2f44885ff0f"
        "85a700000048c1c111488d4901f7c1feff0100488d49ff48c1c9110f858b000000488b38807f0100"
        "7574803f00746f48837810007474c64701014889e74883e7f04883ef3848890f4c895f0848894f10"
        "48c7471830e000004c895f204889672848c747302be0000048816720ff8dfdff488b480881e10030"
        "000081c90202000048094f20488b481048894ff8488d47f8488b0f31ff4889c4b888776655c331ff"
        "b888776655e93bffffff31ffb811000000e943fffffff64108010f84cb00000048837c2418000f85"
        "bf000000440fb75c24284181f330e000004183fb020f87a8000000440fb75c24404183cb034181fb"
        "2be000000f8591000000f7442430000100000f85830000004c8d5c24484c395c243872774c8b5c24"
        "2049c1fb2f49ffc34983fb0177654c8b5c243849c1fb2f49ffc34983fb017753488b09f744243000"
        "020000740bc6410100803900753deb04c6410101488b4c24384883e9184c8b5c24204c8959104c8b"
        "5c2430490fbaf30e4c8959084c8b5c24104c89194c8b5c2408488b04244889cc599dc3e6e2f4"
        # single (_SINGLE)
        "83ff08754848c1c111488d4901f7c1feff0100488d49ff48c1c9117530837a0800752ac1e004"
        "48bf00ffeeddccbbaa994801c7488b02483b07760d4889470831ff31c0e90ffeffffbf08000000"
        "b818000000e914feffff")
    for mark, value, count in ((b"\x44\x33\x22\x11", nr_vcpus, 1),
                               (b"\x88\x77\x66\x55", version, 2)):    # the immediates
        assert code.count(mark) == count
        code = code.replace(mark, struct.pack("<I", value))
    mark = bytes.fromhex("00ffeeddccbbaa99")                            # movabs $TSLOTS
    assert code.count(mark) == 1
    code = code.replace(mark, struct.pack("<Q", L.priv(L.TSLOTS_OFF)))
    for at, insn in zip(SINGLESHOT_READS + IRET_WRITES,
                        (b"\x83\x7a\x08\x00", b"\x48\x8b\x02",       # cmpl $0,8(%rdx); mov (%rdx),%rax
                         b"\x4c\x89\x59\x10", b"\x4c\x89\x59\x08", b"\x4c\x89\x19")):  # mov %r11,16/8/0(%rcx)
        assert code[at - COMMON_OFF:at - COMMON_OFF + len(insn)] == insn
    assert code[LSTAR_INT3_RET - COMMON_OFF - 1:LSTAR_INT3_RET - COMMON_OFF + 1] == b"\xcc\x90"
    assert code[_SLOW - COMMON_OFF:_SLOW - COMMON_OFF + 2] == bytes([0xE6, L.PORT_SYSCALL])
    assert code[SYSCALL_BACK - COMMON_OFF:SYSCALL_BACK - COMMON_OFF + 2] == b"\x41\x53"
    assert code[_SINGLE - COMMON_OFF:_SINGLE - COMMON_OFF + 3] == b"\x83\xff\x08"   # VCPUOP_set_singleshot_timer
    assert COMMON_OFF + len(code) <= MODE_OFF and MODE_OFF + L.MAX_VCPUS <= L.PAGE_SIZE
    return bytes(code)


# A vCPU's CPL0 stack data: the bottom of its CPL0 stack (8 KiB aligned, so
# `and $~0x1fff` of any CPL0 %rsp finds it), far below the frames its stubs
# push. pyxen owns it; the guest cannot reach it.
STACK_DATA_FLAGS = 0            # byte: FAST_CLI_OK | FAST_KERNEL_CPL0 (sync_fast_flags)
STACK_DATA_KERNEL_SP = 8        # the guest's kernel stack (stack_switch): PVState.kernel_sp
STACK_DATA_KERNEL_SS = 16       # its selector, RPL 3: PVState.kernel_ss
STACK_DATA_INT3_RIP = 24        # lstar(cpu) + LSTAR_INT3_RET
FAST_KERNEL_CPL0 = 2            # the flags byte's copy of the mode byte, for CPL0 stubs


# The #BP stub (IDT vector 3, DPL 3). The int3 of the vCPU's LSTAR stub, in
# guest kernel mode, is a hypercall made with `syscall` (lstar_stub):
# - stack_switch (rax 3): stores rsi as the kernel stack and rdi | 3 as its
#   selector, as Xen's do_stack_switch does (no check of the stack on 64-bit);
# - set_segment_base (rax 25) with SEGBASE_FS (edi 0) and a canonical base:
#   writes MSR_FS_BASE, as Xen does; other kinds, and -EINVAL, are pyxen's;
# and returns rax = 0; anything else it returns with rax as it was. Any other
# int3 (the guest's own breakpoints, Linux's text_poke_bp; a guest jumping to
# the LSTAR stub's int3 from user mode) takes the usual exit with the usual
# frame, and pyxen bounces #BP to the guest.
#      push %rax; mov %rsp,%rax; and $~0x1fff,%rax     the stack data
#      testb $FAST_KERNEL_CPL0,(%rax); jz slow_pop
#      push %rcx; mov 16(%rsp),%rcx; cmp STACK_DATA_INT3_RIP(%rax),%rcx; jne slow_pop2
#      cmpq $3,8(%rsp); jne segbase
#      mov %rsi,STACK_DATA_KERNEL_SP(%rax)
#      movzwl %di,%ecx; or $3,%ecx; mov %rcx,STACK_DATA_KERNEL_SS(%rax)
#   done: pop %rcx; pop %rax; xor %eax,%eax
#   back: incq (%rsp)                                   past the LSTAR stub's nop
#      (FAST_RETURN, its exit placed further down)
#   segbase: cmpq $25,8(%rsp); jne not_handled; test %edi,%edi; jnz not_handled
#      mov %rsi,%rcx; shl $16,%rcx; sar $16,%rcx; cmp %rsi,%rcx; jne not_handled
#      push %rdx; mov %esi,%eax; mov %rsi,%rdx; shr $32,%rdx
#      mov $MSR_FS_BASE,%ecx; wrmsr; pop %rdx; jmp done
#   not_handled: pop %rcx; pop %rax; jmp back
#   slow_pop2: pop %rcx
#   slow_pop: pop %rax; push $0; push $3; out %al,$PORT_TRAP; hlt
BP_FAST_STUB = bytes.fromhex(
    "504889e0482500e0fffff60002746e51488b4c2410483b4818756148837c2408037522488970080fb7cf"
    "83c90348894810595831c048ff0424f6842428e0ffff04753648cf48837c240819752885ff75244889f1"
    "48c1e11048c1f9104839f175145289f04889f248c1ea20b9000100c00f305aebbc5958ebbce6") \
    + bytes([L.PORT_STUB_EXIT, 0xF4]) + bytes.fromhex("59586a006a03e6") \
    + bytes([L.PORT_TRAP, 0xF4])



def exception_stub(vector: int) -> bytes:
    code = b""
    if vector not in ERRCODE_VECTORS:
        code += b"\x6a\x00"                       # push $0 (uniform frame)
    code += bytes([0x6A, vector]) if vector < 0x80 else b"\x68" + struct.pack("<I", vector)
    code += bytes([0xE6, L.PORT_TRAP])            # out %al, $PORT_TRAP
    code += b"\xf4"                               # hlt: never reached
    assert len(code) <= 16
    return code.ljust(16, b"\xf4")


# the private area's L2 index of the vcpu_info windows (only in the kernel view)
_VCPU_INFO_L2I = (L.VCPU_INFO_MAP_OFF >> 21) & 511
assert L.VCPU_INFO_MAP_OFF & ((1 << 21) - 1) == 0 and L.MAX_VCPUS <= 512


class XenHeap:
    """Allocates and fills pyxen's private pages, and builds the reserved
    page tables that every guest L4 gets in slot PYXEN_L4_SLOT."""

    def __init__(self, max_ram_pages: int, nr_vcpus: int, xen_version: int):
        # xen_version: what XENVER_version answers (the syscall stubs answer it too)
        m2p_pages = (max_ram_pages * 8 + L.PAGE_SIZE - 1) // L.PAGE_SIZE
        if m2p_pages * L.PAGE_SIZE > L.M2P_VIRT_SIZE:
            raise ValueError("guest too large for the M2P area")
        self.nr_vcpus = nr_vcpus
        fixed = 64 + 2 * L.MAX_VCPUS + 4 * L.MAX_VCPUS + L.APPLY_LIST_PAGES * nr_vcpus
        fref_pages = (max_ram_pages * 4 + L.PAGE_SIZE - 1) // L.PAGE_SIZE
        npages = fixed + m2p_pages + (m2p_pages + 511) // 512 + 16 + 64 + 16 \
            + (max_ram_pages * 4096 >> 30) + 8 \
            + fref_pages                         # grant frames, direct-map tables, FrameRefs
        self.mem = GuestMemory(npages * L.PAGE_SIZE, name="pyxen-xenheap")
        self.mm = self.mem.mm
        self._next = 0
        self._limit = npages
        # Two views of slot PYXEN_L4_SLOT, as Xen's fill_ro_mpt/zap_ro_mpt
        # give kernel and user page tables different reserved slots: the
        # kernel view (l4_entry) maps everything; the user view
        # (l4_entry_user), which every L4 the guest uses only as a user
        # page-table base gets (mm.set_l4_view), shares the same tables but
        # for the private area's L2, which leaves out the vcpu_info windows
        # (VCPU_INFO_MAP_OFF's 2 MiB region): the guest kernel's vcpu_info,
        # and the page it lives in, stay out of guest user mode's reach.
        self.l3 = self.alloc()
        l3_user = self.alloc()
        l2_m2p = self.alloc()
        l2_priv = self.alloc()
        self._l2_priv_user = self.alloc()
        self.l4_entry = self.gpa(self.l3) | L.PTE_P | L.PTE_RW | L.PTE_US | L.PTE_A
        self.l4_entry_user = self.gpa(l3_user) | L.PTE_P | L.PTE_RW | L.PTE_US | L.PTE_A
        for l3, priv in ((self.l3, l2_priv), (l3_user, self._l2_priv_user)):
            self._w64(l3 * L.PAGE_SIZE, self.gpa(l2_m2p) | L.PTE_P | L.PTE_US | L.PTE_A)
            self._w64(l3 * L.PAGE_SIZE + 8,
                      self.gpa(priv) | L.PTE_P | L.PTE_RW | L.PTE_US | L.PTE_A)
        self._l2 = {0: l2_m2p, 1: l2_priv}
        self._l1: dict[tuple[int, int], int] = {}
        # M2P: read-only to the guest
        # the M2P pages are contiguous in the heap (set_m2p indexes them as one array)
        self.m2p_first = self._next
        self.m2p_pages = m2p_pages
        pages = [self.alloc() for _ in range(m2p_pages)]
        for i, p in enumerate(pages):
            self.map(L.M2P_VIRT_START + i * L.PAGE_SIZE, p, L.PTE_P | L.PTE_US)
        self.m2p_off = self.m2p_first * L.PAGE_SIZE
        self.max_ram_pages = max_ram_pages
        # a word per guest frame shared with dom0 (mm.FrameRefs); never mapped
        # for the guest
        self.frame_refs_off = self._next * L.PAGE_SIZE
        for _ in range(fref_pages):
            self.alloc()
        # shared_info and the zero page (backs unused guest GDT pages)
        self.shared_info_page = self.alloc()
        self.zero_page = self.alloc()
        # exit stubs and IDT
        stubs = self.alloc()
        sys_stubs = self.alloc()
        idt = self.alloc()
        self.map(L.priv(L.STUBS_OFF), stubs, L.PTE_P)
        # syscall stubs are user-executable: on this host `syscall` reaches
        # LSTAR without leaving CPL3 (bench/README.md), so the stub's `out`
        # must work from CPL3 too (its ports are open in the I/O bitmap)
        self.map(L.priv(L.SYSCALL_STUBS_OFF), sys_stubs, L.PTE_P | L.PTE_US)
        self.map(L.priv(L.IDT_OFF), idt, L.PTE_P)
        for v in range(256):
            self.write(self.gpa(stubs) + v * 16, exception_stub(v))
        self.cstar = L.priv(L.SYSCALL_STUBS_OFF + CSTAR_OFF)
        for cpu in range(nr_vcpus):
            self.write(self.gpa(sys_stubs) + cpu * LSTAR_SLOT, lstar_stub(cpu))
        self.write(self.gpa(sys_stubs) + CSTAR_OFF, bytes([0xE6, L.PORT_SYSCALL32, 0xF4]))
        self.write(self.gpa(sys_stubs) + COMMON_OFF,
                   syscall_common(nr_vcpus, xen_version))
        self.mode_off = (self.gpa(sys_stubs) - L.XEN_GPA) + MODE_OFF
        kpercpu = self.alloc()
        self.map(L.priv(L.KPERCPU_OFF), kpercpu, L.PTE_P | L.PTE_US)    # kernel view only
        self.percpu_off = self.gpa(kpercpu) - L.XEN_GPA
        # the singleshot answer's slots (TSLOTS_OFF), writable in the kernel
        # view: per vCPU the floor pyxen sets and the deadline the stub leaves
        tslots = self.alloc()
        self.map(L.priv(L.TSLOTS_OFF), tslots, L.PTE_P | L.PTE_RW | L.PTE_US)
        self.tslots_off = self.gpa(tslots) - L.XEN_GPA
        for cpu in range(nr_vcpus):
            _Q.pack_into(self.mm, self.tslot(cpu), TSLOT_NO_ANSWER)
        # each vCPU's vcpu_info, writable at CPL3 for the syscall stubs in
        # guest kernel mode (the kernel view only: see l4_entry_user): the
        # shared_info page until the guest registers one (set_vcpu_info)
        for cpu in range(nr_vcpus):
            self.map(self.vcpu_info_va(cpu), self.shared_info_page, L.PTE_P | L.PTE_RW | L.PTE_US)
            _Q.pack_into(self.mm, self.percpu(cpu), self.vcpu_info_va(cpu) + cpu * 64)
        for v in range(256):
            target = {13: L.priv(L.GP_FAST_OFF), 3: L.priv(L.BP_FAST_OFF)}.get(
                v, L.priv(L.STUBS_OFF) + v * 16)
            dpl = 3 if v in (3, 4) else 0
            low = (target & 0xFFFF) | (L.HYP_CS << 16) | ((0x8E | (dpl << 5)) << 40) \
                | (((target >> 16) & 0xFFFF) << 48)
            high = target >> 32
            self._w64(self.gpa(idt) - L.XEN_GPA + v * 16, low)
            self._w64(self.gpa(idt) - L.XEN_GPA + v * 16 + 8, high)
        self.idt_base = L.priv(L.IDT_OFF)
        # the page-table replay stub and its list (one list per vCPU)
        apply = self.alloc()
        self.map(L.priv(L.APPLY_OFF), apply, L.PTE_P)
        self.write(self.gpa(apply), APPLY_STUB)
        self.write(self.gpa(apply) + (L.APPLY_IRET_OFF - L.APPLY_OFF), APPLY_IRET_STUB)
        self.write(self.gpa(apply) + (L.APPLY_FLUSH_OFF - L.APPLY_OFF), APPLY_FLUSH_STUB)
        self.write(self.gpa(apply) + (L.GP_FAST_OFF - L.APPLY_OFF), GP_FAST_STUB)
        self.write(self.gpa(apply) + (L.BP_FAST_OFF - L.APPLY_OFF), BP_FAST_STUB)
        self.apply_lists = []            # first heap page of each vCPU's list (contiguous)
        for cpu in range(nr_vcpus):
            pages = [self.alloc() for _ in range(L.APPLY_LIST_PAGES)]
            for k, pg in enumerate(pages):
                self.map(L.priv(L.APPLY_LIST_OFF) + cpu * L.APPLY_LIST_STRIDE + k * L.PAGE_SIZE,
                         pg, L.PTE_P | L.PTE_RW)
            self.apply_lists.append(pages[0])
        self.directmap_l4 = {}

        # per-vCPU GDT (guest part backed by the zero page until set_gdt), TSS, stack
        self.gdt_guest_ptes: list[list[int]] = []
        for cpu in range(nr_vcpus):
            gdt_va = self.gdt_base(cpu)
            for pg in range(L.GDT_SIZE // L.PAGE_SIZE - 2):
                self.map(gdt_va + pg * L.PAGE_SIZE, self.zero_page, L.PTE_P)
            tss_va = self.tss_base(cpu)
            stack_va = L.priv(L.STACK_OFF) + cpu * L.STACK_SIZE
            r0 = self.alloc()
            r1 = self.alloc()
            tss = self.alloc()
            tss_extra = [self.alloc(), self.alloc()]
            self.map(gdt_va + 14 * L.PAGE_SIZE, r0, L.PTE_P | L.PTE_RW)
            self.map(gdt_va + 15 * L.PAGE_SIZE, r1, L.PTE_P | L.PTE_RW)
            self.map(tss_va, tss, L.PTE_P | L.PTE_RW)
            for k, pg in enumerate(tss_extra):
                self.map(tss_va + (k + 1) * L.PAGE_SIZE, pg, L.PTE_P | L.PTE_RW)
            for s in range(L.STACK_SIZE // L.PAGE_SIZE):
                self.map(stack_va + s * L.PAGE_SIZE, self.alloc(), L.PTE_P | L.PTE_RW | L.PTE_NX)
            base = self.gpa(r0)
            self._w64(base - L.XEN_GPA + (L.HYP_CS & 0xFF8) , code_descriptor64(0))
            self._w64(base - L.XEN_GPA + (L.HYP_DS & 0xFF8), data_descriptor(0))
            self._w64(base - L.XEN_GPA + (FLAT_RING3_CS32 & 0xFF8), code_descriptor32(3))
            self._w64(base - L.XEN_GPA + (FLAT_RING3_DS32 & 0xFF8), data_descriptor(3))
            self._w64(base - L.XEN_GPA + (FLAT_RING3_CS64 & 0xFF8), code_descriptor64(3))
            lo, hi = tss_descriptor(tss_va, L.TSS_LIMIT)
            self._w64(base - L.XEN_GPA + (L.TSS_SEL & 0xFF8), lo)
            self._w64(base - L.XEN_GPA + (L.TSS_SEL & 0xFF8) + 8, hi)
            # TSS: rsp0, and an I/O bitmap that lets the guest reach pyxen's
            # own ports and the hot emulated ones as an I/O exit (every other
            # port raises #GP to pyxen)
            self._w64(self.gpa(tss) - L.XEN_GPA + 4, stack_va + L.STACK_SIZE)
            self.write(self.gpa(tss) + 102, struct.pack("<H", L.TSS_IOMAP_OFF))
            bitmap = bytearray(b"\xff" * (8192 + 1))
            for port in (L.PORT_HYPERCALL, L.PORT_SYSCALL, L.PORT_SYSCALL32, *L.PORTS_DIRECT):
                bitmap[port // 8] &= ~(1 << (port % 8))
            self.tss_pages = (tss, *tss_extra)
            self._write_tss(cpu, L.TSS_IOMAP_OFF, bytes(bitmap))

    def _write_tss(self, cpu: int, off: int, data: bytes) -> None:
        base = self.tss_base(cpu)
        for i, b in enumerate(data):  # small, once per vCPU at build time
            va = base + off + i
            self.mm[self.stack_offset(cpu, va)] = b

    # --- allocation and access -------------------------------------------------
    def alloc(self) -> int:
        """Allocate one zeroed page; returns its index in the heap."""
        if self._next >= self._limit:
            raise MemoryError("pyxen xen heap exhausted")
        p = self._next
        self._next += 1
        return p

    @staticmethod
    def gpa(page: int) -> int:
        return L.XEN_GPA + page * L.PAGE_SIZE

    def contains(self, gpa: int) -> bool:
        return L.XEN_GPA <= gpa < L.XEN_GPA + self.mem.size

    def _w64(self, off: int, value: int) -> None:
        _Q.pack_into(self.mm, off, value)

    def write(self, gpa: int, data: bytes) -> None:
        off = gpa - L.XEN_GPA
        self.mm[off:off + len(data)] = data

    def read(self, gpa: int, n: int) -> bytes:
        off = gpa - L.XEN_GPA
        return self.mm[off:off + n]

    def map(self, va: int, page: int, flags: int) -> None:
        """Map heap page `page` at va inside slot PYXEN_L4_SLOT."""
        assert L.l4_index(va) == L.PYXEN_L4_SLOT
        l3i = (va >> 30) & 511
        l2i = (va >> 21) & 511
        l1i = (va >> 12) & 511
        l2 = self._l2[l3i]
        l1 = self._l1.get((l3i, l2i))
        if l1 is None:
            l1 = self._l1[(l3i, l2i)] = self.alloc()
            up = L.PTE_P | L.PTE_A | L.PTE_US | (0 if l3i == 0 else L.PTE_RW)
            self._w64(l2 * L.PAGE_SIZE + l2i * 8, self.gpa(l1) | up)
            if l3i == 1 and l2i != _VCPU_INFO_L2I:        # the user view shares it
                self._w64(self._l2_priv_user * L.PAGE_SIZE + l2i * 8, self.gpa(l1) | up)
        self._w64(l1 * L.PAGE_SIZE + l1i * 8, self.gpa(page) | flags | L.PTE_A | L.PTE_D)

    def build_directmaps(self, ram_bytes: int) -> None:
        """Supervisor-only 2 MiB mappings of all guest RAM and of this heap."""
        for slot_va, base, size in ((L.DIRECTMAP_RAM, 0, ram_bytes),
                                    (L.DIRECTMAP_HEAP, L.XEN_GPA, self.mem.size)):
            l3 = self.alloc()
            self.directmap_l4[L.l4_index(slot_va)] = self.gpa(l3) | L.PTE_P | L.PTE_RW | L.PTE_A
            l2s = {}
            for off in range(0, size, 1 << 21):
                l3i = off >> 30
                if l3i not in l2s:
                    l2s[l3i] = self.alloc()
                    self._w64(l3 * L.PAGE_SIZE + l3i * 8,
                              self.gpa(l2s[l3i]) | L.PTE_P | L.PTE_RW | L.PTE_A)
                self._w64(l2s[l3i] * L.PAGE_SIZE + ((off >> 21) & 511) * 8,
                          (base + off) | L.PTE_P | L.PTE_RW | L.PTE_A | L.PTE_D | L.PTE_PSE)

    @staticmethod
    def directmap_va(gpa: int) -> int:
        if gpa >= L.XEN_GPA:
            return L.DIRECTMAP_HEAP + gpa - L.XEN_GPA
        return L.DIRECTMAP_RAM + gpa

    def map_gpa(self, va: int, gpa: int, flags: int) -> int:
        """Point an already-mapped private-area page at any guest-physical page
        (used for the guest's GDT frames). Returns the PTE's guest-physical
        address, which the caller must have replayed (see mm.note_write)."""
        off = self.pte_offset(va)
        _Q.pack_into(self.mm, off, gpa | flags | L.PTE_A | L.PTE_D)
        return L.XEN_GPA + off

    def pte_offset(self, va: int) -> int:
        """Heap offset of the L1 entry that maps va (private area only)."""
        l1 = self._l1[((va >> 30) & 511, (va >> 21) & 511)]
        return l1 * L.PAGE_SIZE + ((va >> 12) & 511) * 8

    # --- per-vCPU addresses -----------------------------------------------------
    @staticmethod
    def gdt_base(cpu: int) -> int:
        return L.priv(L.GDT_OFF) + cpu * L.GDT_SIZE

    @staticmethod
    def stack_top(cpu: int) -> int:
        return L.priv(L.STACK_OFF) + cpu * L.STACK_SIZE + L.STACK_SIZE

    @staticmethod
    def tss_base(cpu: int) -> int:
        return L.priv(L.TSS_OFF) + cpu * L.TSS_STRIDE

    @staticmethod
    def vcpu_info_va(cpu: int) -> int:
        """Where vCPU `cpu`'s vcpu_info page is mapped for the syscall stubs."""
        return L.priv(L.VCPU_INFO_MAP_OFF) + cpu * L.PAGE_SIZE

    def set_vcpu_info(self, cpu: int, gpa: int) -> int:
        """VCPUOP_register_vcpu_info moved vCPU `cpu`'s vcpu_info to guest
        address `gpa`: the syscall stubs use it there from now on. Returns the
        PTE's guest-physical address, which the caller must have replayed,
        with a TLB flush (mm.note_write)."""
        va = self.vcpu_info_va(cpu)
        _Q.pack_into(self.mm, self.percpu(cpu), va + (gpa & 0xFFF))
        return self.map_gpa(va, gpa & ~0xFFF, L.PTE_P | L.PTE_RW | L.PTE_US)

    def percpu(self, cpu: int) -> int:
        """Heap offset of vCPU `cpu`'s PERCPU entry (the kernel view's
        KPERCPU page; its mode byte is in the syscall stubs page)."""
        return self.percpu_off + cpu * PERCPU_SIZE

    def set_fast_state(self, cpu: int, kernel_mode: bool, iret_ok: bool, iopl: int,
                       event_callback: int) -> None:
        """What the syscall stubs answer by (PERCPU): PVVcpu.sync_fast_flags."""
        at = self.percpu(cpu)
        _Q.pack_into(self.mm, at + 8, (FAST_IRET_OK if iret_ok else 0) | (iopl << 12))
        _Q.pack_into(self.mm, at + 16, event_callback)
        self.mm[self.mode_off + cpu] = FAST_KERNEL_MODE if kernel_mode else 0

    def tslot(self, cpu: int) -> int:
        """Heap offset of vCPU `cpu`'s singleshot slot: the floor (+0), the
        deadline answered in the guest (+8, 0: none)."""
        return self.tslots_off + cpu * 16

    @staticmethod
    def lstar(cpu: int) -> int:
        """vCPU `cpu`'s MSR_LSTAR: its own syscall stub (lstar_stub)."""
        return L.priv(L.SYSCALL_STUBS_OFF) + cpu * LSTAR_SLOT

    def fast_flags_offset(self, cpu: int) -> int:
        """Heap offset of vCPU `cpu`'s fast-path flags byte: the bottom of its
        CPL0 stack, where the #GP stub finds it (GP_FAST_STUB)."""
        return self.stack_offset(cpu, self.stack_top(cpu) - L.STACK_SIZE)

    def stack_offset(self, cpu: int, va: int) -> int:
        """Heap offset of a byte on vCPU `cpu`'s CPL0 stack, given its virtual address."""
        page_va = va & ~0xFFF
        pte = _Q.unpack_from(self.mm, self.pte_offset(page_va))[0]
        return (pte & L.PTE_ADDR_MASK) - L.XEN_GPA + (va & 0xFFF)

    # --- M2P -----------------------------------------------------------------------
    def set_m2p(self, mfn: int, pfn: int) -> None:
        _Q.pack_into(self.mm, self.m2p_off + mfn * 8, pfn)

    def set_m2p_identity(self, present) -> None:
        """The whole M2P at once: frame n -> n where present[n], else
        INVALID_M2P_ENTRY (a restore)."""
        from array import array
        table = array("Q", range(len(present)))
        absent = present.find(0)
        while absent >= 0:
            table[absent] = (1 << 64) - 1
            absent = present.find(0, absent + 1)
        raw = table.tobytes()
        self.mm[self.m2p_off:self.m2p_off + len(raw)] = raw

    def is_m2p(self, gpa: int) -> bool:
        off = gpa - L.XEN_GPA
        return self.m2p_off <= off < self.m2p_off + self.m2p_pages * L.PAGE_SIZE

    def get_m2p(self, mfn: int) -> int:
        return _Q.unpack_from(self.mm, self.m2p_off + mfn * 8)[0]

    @property
    def shared_info_gpa(self) -> int:
        return self.gpa(self.shared_info_page)

    @property
    def shared_info_off(self) -> int:
        return self.shared_info_page * L.PAGE_SIZE
