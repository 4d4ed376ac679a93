/*
 * fifo: the FIFO event-channel ABI. init_control + expand_array (refused
 * arguments first: they must leave no FIFO state behind, XSA-188), then
 * check event words, queue heads, links and READY bits as pyxen raises
 * events (upcalls stay masked; this guest reads the structures itself);
 * EVTCHNOP_reset goes back to the 2-level ABI.
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

    struct { uint64_t gfn; uint32_t offset, vcpu; uint8_t link_bits, pad[7]; } ic;
    uint64_t ag = pfn_to_mfn(apfn);
    long rc;
#define INIT_CONTROL(g, o, v) \
    (ic.gfn = (g), ic.offset = (o), ic.vcpu = (v), ic.link_bits = 0, \
     HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic))
#define NO_FIFO_YET(what) do { \
        rc = HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &ag); \
        check(rc == -XEN_EOPNOTSUPP, "expand_array after %s: still no FIFO ABI (%ld)", what, rc); \
    } while (0)

    NO_FIFO_YET("nothing");
    rc = INIT_CONTROL(~1UL, 0, 0);
    check(rc == -XEN_EINVAL, "init_control gfn -2 refused (%ld)", rc);
    NO_FIFO_YET("a bad gfn");
    rc = INIT_CONTROL(pfn_to_mfn(cpfn), 0, 99);
    check(rc == -XEN_ENOENT,
          "init_control for vCPU 99 refused (%ld)", rc);
    rc = INIT_CONTROL(pfn_to_mfn(cpfn), 4096 - 64, 0);
    check(rc == -XEN_EINVAL,
          "init_control crossing the page refused (%ld)", rc);
    rc = INIT_CONTROL(pfn_to_mfn(cpfn), 4, 0);
    check(rc == -XEN_EINVAL,
          "unaligned init_control refused (%ld)", rc);
    rc = INIT_CONTROL(current_l4_mfn(), 0, 0);
    check(rc == -XEN_EINVAL,
          "init_control on a page-table frame refused (%ld)", rc);
    NO_FIFO_YET("refused init_controls");

    check(INIT_CONTROL(pfn_to_mfn(cpfn), 0, 0) == 0, "init_control");
    check(ic.link_bits == 17, "link_bits %u", ic.link_bits);
    check(HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic) == -22, "second init_control refused");
    /* Xen holds a writable type reference on the control block's frame */
    check(make_page_readonly((void *)cb) == 0, "control block mapped read-only");
    rc = mmuext_simple(MMUEXT_PIN_L1_TABLE, pfn_to_mfn(cpfn), 0);
    check(rc == -XEN_EINVAL,
          "the control block's frame cannot become a page table (%ld)", rc);
    if (rc == 0)
        mmuext_simple(MMUEXT_UNPIN_TABLE, pfn_to_mfn(cpfn), 0);
    check(make_page_writable((void *)cb) == 0, "control block writable again");
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

    uint16_t self = DOMID_SELF;
    rc = HYPERVISOR_event_channel_op(EVTCHNOP_reset, &self);
    check(rc == 0, "EVTCHNOP_reset (%ld)", rc);
    NO_FIFO_YET("EVTCHNOP_reset");
    for (unsigned int i = 0; i < 1024; i++)
        words[i] = 0;
    check(make_page_readonly((void *)words) == 0, "event array page mapped read-only");
    rc = mmuext_simple(MMUEXT_PIN_L1_TABLE, pfn_to_mfn(apfn), 0);
    check(rc == 0,
          "after the reset its frame may become a page table (%ld)", rc);
    mmuext_simple(MMUEXT_UNPIN_TABLE, pfn_to_mfn(apfn), 0);
    check(INIT_CONTROL(pfn_to_mfn(cpfn), 0, 0) == 0, "init_control again after the reset");
    test_finish();
}
