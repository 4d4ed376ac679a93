/*
 * nmi - NMIs for a PV guest, as Xen delivers them (xen/arch/x86/x86_64/
 * entry.S process_nmi, pv/callback.c register_guest_nmi_callback):
 * - the NMI callback (CALLBACKOP_register, CALLBACKTYPE_nmi) takes an NMI
 *   sent with VCPUOP_send_nmi as vector 2 with the usual bounce frame, events
 *   masked on entry;
 * - a second NMI sent from the handler waits until the handler's iret, and
 *   then comes at once;
 * - VCPUOP_send_nmi with a non-NULL argument is -EINVAL, to a vCPU the
 *   domain lacks -ENOENT;
 * - with the callback unregistered an NMI is lost (not kept for later);
 * - an NMI wakes a vCPU blocked in SCHEDOP_block (Xen's vcpu_kick).
 * Command line `external=N`: then waits up to N seconds, blocked, for one
 * more NMI from outside (the toolstack's `trigger <domain> nmi`).
 */
#include "minios.h"
#include "events.h"

extern char trap_entry_2[];

static volatile unsigned long nmis, nested_seen = ~0UL, masked_on_entry;
static volatile bool send_from_handler;

static long send_nmi(unsigned int vcpu, void *arg)
{
    return HYPERVISOR_vcpu_op(VCPUOP_send_nmi, vcpu, arg);
}

static bool nmi_hook(struct trap_regs *regs, uint64_t cr2)
{
    (void)cr2;
    if (regs->vector != 2)
        return false;
    nmis++;
    if (vcpu_info0->evtchn_upcall_mask)
        masked_on_entry++;
    if (send_from_handler) {
        send_from_handler = false;
        send_nmi(0, NULL);
        nested_seen = nmis;         /* unchanged: NMIs are masked until the iret */
    }
    return true;
}

static long nmi_callback(unsigned int cmd)
{
    struct callback_register cb = { CALLBACKTYPE_nmi, 0, 0, (unsigned long)trap_entry_2 };
    return HYPERVISOR_callback_op(cmd, &cb);
}

void test_main(void)
{
    unsigned long external = cmdline_get_ulong("external", 0);
    events_test_start();                /* traps, events (the pvclock for the wait) */
    trap_hook = nmi_hook;
    vcpu_info0->evtchn_upcall_mask = 0;

    check(nmi_callback(CALLBACKOP_register) == 0, "CALLBACKTYPE_nmi registered");
    long rc = send_nmi(0, NULL);
    check(rc == 0 && nmis == 1, "VCPUOP_send_nmi: the callback ran (%ld, %lu NMIs)", rc, nmis);
    check(masked_on_entry == 1 && vcpu_info0->evtchn_upcall_mask == 0,
          "events masked in the handler, unmasked again after its iret");

    send_from_handler = true;
    rc = send_nmi(0, NULL);
    check(rc == 0 && nested_seen == 2 && nmis == 3,
          "an NMI sent from the handler waits for its iret (%lu seen inside, %lu after)",
          nested_seen, nmis);

    check(send_nmi(0, (void *)0x1000) == -XEN_EINVAL, "VCPUOP_send_nmi with an argument: -EINVAL");
    check(send_nmi(7, NULL) == -XEN_ENOENT, "VCPUOP_send_nmi to a vCPU the domain lacks: -ENOENT");

    check(nmi_callback(CALLBACKOP_unregister) == 0, "CALLBACKTYPE_nmi unregistered");
    rc = send_nmi(0, NULL);
    check(rc == 0 && nmis == 3, "no handler: the NMI is lost (%ld, %lu NMIs)", rc, nmis);
    check(nmi_callback(CALLBACKOP_register) == 0 && nmis == 3,
          "registered again: nothing was kept pending");

    if (external) {
        uint64_t end = xen_system_time() + external * 1000000000UL;
        printk("waiting for an NMI from the toolstack\n");
        while (nmis == 3 && xen_system_time() < end) {
            struct vcpu_set_singleshot_timer t = { xen_system_time() + 100000000UL, 0, 0 };
            HYPERVISOR_vcpu_op(VCPUOP_set_singleshot_timer, 0, &t);
            HYPERVISOR_sched_op(SCHEDOP_block, NULL);
            vcpu_info0->evtchn_upcall_mask = 0;
        }
        check(nmis == 4, "an NMI from the toolstack woke the blocked vCPU (%lu NMIs)", nmis);
    }
    test_finish();
}
