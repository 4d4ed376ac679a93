/*
 * evtpeer: an event channel between two domains (two domain processes).
 *   role=a peer=B : alloc_unbound for domain B, publish the port in data/port,
 *                   wait for B's event, answer it.
 *   role=b peer=A port=P : bind_interdomain to A's port P, send, wait for the answer.
 */
#include "xenstore.h"

static bool wait_pending(uint32_t port, uint64_t ms)
{
    uint64_t end = xen_system_time() + ms * 1000000ULL;
    while (xen_system_time() < end) {
        if (shared_info->evtchn_pending[port / 64] & (1ULL << (port % 64))) {
            __atomic_fetch_and(&shared_info->evtchn_pending[port / 64], ~(1ULL << (port % 64)),
                               __ATOMIC_SEQ_CST);
            return true;
        }
        uint32_t p = port;
        sched_poll(&p, 1, xen_system_time() + 100000000ULL);
    }
    return false;
}

void test_main(void)
{
    char role[8], buf[32];
    set_smp_id(0);
    check(map_shared_info() == 0, "shared_info");
    check(xs_init() == 0, "xenstore");
    check(cmdline_get("role", role, sizeof(role)), "role= given");
    unsigned long peer = cmdline_get_ulong("peer", 0);
    if (role[0] == 'a') {
        long port = evtchn_alloc_unbound((uint16_t)peer);
        check(port > 0, "alloc_unbound for domain %lu -> %ld", peer, port);
        evtchn_mask((uint32_t)port);
        snprintf(buf, sizeof(buf), "%ld", port);
        check(xs_write(0, "data/port", buf) >= 0, "published data/port = %s", buf);
        check(wait_pending((uint32_t)port, 60000), "event from domain %lu arrived", peer);
        check(evtchn_notify((uint32_t)port) == 0, "answered on the same channel");
        uint32_t st, vc;
        check(evtchn_status((uint32_t)port, &st, &vc) == 0 && st == EVTCHNSTAT_interdomain,
              "status interdomain (%u)", st);
    } else {
        unsigned long rport = cmdline_get_ulong("port", 0);
        check(evtchn_bind_interdomain((uint16_t)peer, 4000) < 0, "binding a port that is not unbound fails");
        long port = evtchn_bind_interdomain((uint16_t)peer, (uint32_t)rport);
        check(port > 0, "bind_interdomain to domain %lu port %lu -> %ld", peer, rport, port);
        evtchn_mask((uint32_t)port);
        wait_pending((uint32_t)port, 100);           /* Xen signals the binding end once */
        check(evtchn_notify((uint32_t)port) == 0, "send to domain %lu", peer);
        check(wait_pending((uint32_t)port, 30000), "the answer from domain %lu arrived", peer);
    }
    test_finish();
}
