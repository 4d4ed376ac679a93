/*
 * emul.h - what the instruction-emulation guests (ptwr, privop, cpuid) use
 * beyond minios.h: a per-guest FEATURES note, the forced-emulation CPUID,
 * and hypercall wrappers for vm_assist, physdev_op, fpu_taskswitch and the
 * debug registers.  Numbers from Xen's public xen.h / physdev.h /
 * arch-x86/cpuid.h (pyxen's own definitions).
 */
#ifndef PYXEN_GUEST_EMUL_H
#define PYXEN_GUEST_EMUL_H

#include "minios.h"

/*
 * An extra XEN_ELFNOTE_FEATURES note from a guest's own source.  The
 * runtime's head.S emits FEATURES ""; the guest's object is linked after
 * the runtime's, so a loader that keeps the last note (pyxen) sees this one,
 * and Xen's libelf, which ORs every FEATURES note together, sees both.
 */
#define XEN_GUEST_FEATURES(str)                                      \
    asm(".pushsection .note.Xen, \"a\", @note\n"                     \
        ".p2align 2\n"                                               \
        ".long 4\n"                                                  \
        ".long 8002f - 8001f\n"                                      \
        ".long 10\n"                    /* XEN_ELFNOTE_FEATURES */   \
        ".asciz \"Xen\"\n"                                           \
        ".p2align 2\n"                                               \
        "8001: .asciz \"" str "\"\n"                                 \
        "8002: .p2align 2\n"                                         \
        ".popsection\n")

#define __HYPERVISOR_fpu_taskswitch   5
#define __HYPERVISOR_set_debugreg     8
#define __HYPERVISOR_get_debugreg     9
#define __HYPERVISOR_physdev_op      33

#define VMASST_CMD_enable                0
#define VMASST_CMD_disable               1
#define VMASST_TYPE_writable_pagetables  2
#define VMASST_TYPE_architectural_iopl   4

#define PHYSDEVOP_set_iopl      6
#define PHYSDEVOP_set_iobitmap  7

struct physdev_set_iopl { uint32_t iopl; };
struct physdev_set_iobitmap { uint8_t *bitmap; uint32_t nr_ports; uint32_t pad; };

static inline long HYPERVISOR_vm_assist(unsigned int cmd, unsigned int type)
{ return _HYPERCALL(__HYPERVISOR_vm_assist, cmd, type, 0, 0, 0); }

static inline long HYPERVISOR_physdev_op(unsigned int cmd, void *arg)
{ return _HYPERCALL(__HYPERVISOR_physdev_op, cmd, arg, 0, 0, 0); }

static inline long HYPERVISOR_fpu_taskswitch(int set)
{ return _HYPERCALL(__HYPERVISOR_fpu_taskswitch, set, 0, 0, 0, 0); }

static inline long HYPERVISOR_set_debugreg(int reg, unsigned long value)
{ return _HYPERCALL(__HYPERVISOR_set_debugreg, reg, value, 0, 0, 0); }

static inline long set_iopl(unsigned int iopl)
{
    struct physdev_set_iopl a = { iopl };
    return HYPERVISOR_physdev_op(PHYSDEVOP_set_iopl, &a);
}

/* CPUID through Xen's forced-emulation prefix: ud2; .ascii "xen"; cpuid */
struct cpuid_res { uint32_t a, b, c, d; };
static inline struct cpuid_res xen_cpuid(uint32_t leaf, uint32_t subleaf)
{
    struct cpuid_res r;
    asm volatile("ud2a; .ascii \"xen\"; cpuid"
                 : "=a"(r.a), "=b"(r.b), "=c"(r.c), "=d"(r.d)
                 : "0"(leaf), "2"(subleaf));
    return r;
}

/* CPUID run natively (on this host it is not intercepted). */
static inline struct cpuid_res native_cpuid(uint32_t leaf, uint32_t subleaf)
{
    struct cpuid_res r;
    asm volatile("cpuid" : "=a"(r.a), "=b"(r.b), "=c"(r.c), "=d"(r.d)
                 : "0"(leaf), "2"(subleaf));
    return r;
}

/* The TSC frequency from Xen's time leaf (0x40000003 subleaf 0 ECX), kHz. */
static inline uint32_t xen_tsc_khz(void)
{
    return xen_cpuid(0x40000003, 0).c;
}

static inline unsigned long read_rflags(void)
{
    unsigned long f;
    asm volatile("pushfq; popq %0" : "=r"(f));
    return f;
}

#define X86_ARITH_FLAGS 0x8d5UL      /* CF PF AF ZF SF OF */
#define X86_FLAGS_CF    0x001UL
#define X86_FLAGS_ZF    0x040UL

#endif /* PYXEN_GUEST_EMUL_H */
