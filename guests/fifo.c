/*
 * fifo: the FIFO event-channel ABI. init_control + expand_array, then
 * check event words, queue heads, links and READY bits as pyxen raises
 * events (upcalls stay masked; this guest reads the structures itself).
 */
#include "events.h"

#define PENDING (1u << 31)
#define MASKED  (1u << 30)
#define LINKED  (1u << 29)
#define LINK_MASK ((1u << 17) - 1)

struct control_block { uint32_t ready, rsvd; uint32_t head[16]; };

void test_main(void)
{
    check(traps_init() == 0, "traps_init");
    set_smp_id(0);
    check(mm_init() == 0, "mm_init");
    unsigned long cpfn = alloc_pfn(), apfn = alloc_pfn();
    check(cpfn && apfn, "two free pages");
    volatile struct control_block *cb = pfn_to_virt(cpfn);
    volatile uint32_t *words = pfn_to_virt(apfn);

    struct { uint64_t gfn; uint32_t offset, vcpu; uint8_t link_bits, pad[7]; } ic =
        { pfn_to_mfn(cpfn), 0, 0, 0, {0} };
    check(HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic) == 0, "init_control");
    check(ic.link_bits == 17, "link_bits %u", ic.link_bits);
    check(HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic) == -22, "second init_control refused");
    uint64_t ag = pfn_to_mfn(apfn);
    check(HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &ag) == 0, "expand_array");

    long p = evtchn_bind_ipi(0), q = evtchn_bind_ipi(0), r = evtchn_bind_ipi(0);
    check(p > 0 && q > 0 && r > 0, "three IPI ports %ld %ld %ld", p, q, r);
    check(evtchn_notify(p) == 0, "send p");
    check((words[p] & (PENDING | LINKED)) == (PENDING | LINKED), "p pending+linked (%#x)", words[p]);
    check(cb->ready & (1u << 7), "ready bit for default priority 7 (%#x)", cb->ready);
    check(cb->head[7] == p, "queue 7 head is p (%u)", cb->head[7]);
    check(this_vcpu_info()->evtchn_upcall_pending == 1, "upcall pending set");
    check(evtchn_notify(q) == 0, "send q");
    check((words[p] & LINK_MASK) == q, "p links to q (%#x)", words[p]);
    check(cb->head[7] == p, "head unchanged");
    evtchn_notify(p);
    check((words[p] & LINK_MASK) == q, "p raised again: not linked twice");

    struct { uint32_t port, prio; } sp = { r, 3 };
    check(HYPERVISOR_event_channel_op(EVTCHNOP_set_priority, &sp) == 0, "set_priority r=3");
    sp.prio = 16;
    check(HYPERVISOR_event_channel_op(EVTCHNOP_set_priority, &sp) == -22, "priority 16 refused");
    words[r] |= MASKED;
    evtchn_notify(r);
    check((words[r] & (PENDING | LINKED | MASKED)) == (PENDING | MASKED), "masked r: pending, not linked (%#x)", words[r]);
    check(!(cb->ready & (1u << 3)), "no ready bit for a masked event");
    check(evtchn_unmask(r) == 0, "unmask r");
    check((words[r] & (LINKED | MASKED)) == LINKED, "r linked after unmask (%#x)", words[r]);
    check(cb->ready & (1u << 3) && cb->head[3] == r, "queue 3 holds r");
    test_finish();
}
