/*
 * evtpeer: event channels between two domains (two domain processes).
 *   role=a peer=B [channels=N] : alloc_unbound N ports for domain B (they
 *                   come out consecutive: the lowest free port each time),
 *                   publish the first in data/port, wait for B's event on
 *                   each, answer it.
 *   role=b peer=A port=P [channels=N] : bind_interdomain to A's ports
 *                   P..P+N-1; with N > 1 write data/bound = N and wait for
 *                   data/release (the toolstack looks at the domain
 *                   processes meanwhile); send on each, wait for the answers.
 */
#include "xenstore.h"

#define MAX_CHANNELS 256

static long ports[MAX_CHANNELS];

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

static bool wait_node(const char *path, uint64_t ms)
{
    char buf[16];
    uint64_t end = xen_system_time() + ms * 1000000ULL;
    while (xen_system_time() < end) {
        if (xs_read(0, path, buf, sizeof(buf)) >= 0)
            return true;
        uint32_t p = 0;
        sched_poll(&p, 0, xen_system_time() + 50000000ULL);
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
    unsigned long n = cmdline_get_ulong("channels", 1);
    if (n < 1 || n > MAX_CHANNELS)
        test_error("channels= must be 1..256");
    if (role[0] == 'a') {
        unsigned long ok = 1;
        for (unsigned long i = 0; i < n; i++) {
            ports[i] = evtchn_alloc_unbound((uint16_t)peer);
            ok &= ports[i] > 0 && ports[i] == ports[0] + (long)i;
            evtchn_mask((uint32_t)ports[i]);
        }
        check(ok, "alloc_unbound %lu ports for domain %lu -> %ld..%ld", n, peer, ports[0],
              ports[n - 1]);
        snprintf(buf, sizeof(buf), "%ld", ports[0]);
        check(xs_write(0, "data/port", buf) >= 0, "published data/port = %s", buf);
        unsigned long got = 0, answered = 0;
        for (unsigned long i = 0; i < n; i++) {
            if (!wait_pending((uint32_t)ports[i], 60000))
                continue;
            got++;
            answered += evtchn_notify((uint32_t)ports[i]) == 0;
        }
        check(got == n, "events from domain %lu arrived on %lu of %lu channels", peer, got, n);
        check(answered == n, "answered on the same channels (%lu)", answered);
        uint32_t st, vc;
        check(evtchn_status((uint32_t)ports[0], &st, &vc) == 0 && st == EVTCHNSTAT_interdomain,
              "status interdomain (%u)", st);
    } else {
        unsigned long rport = cmdline_get_ulong("port", 0);
        check(evtchn_bind_interdomain((uint16_t)peer, 4000) < 0, "binding a port that is not unbound fails");
        unsigned long bound = 0;
        for (unsigned long i = 0; i < n; i++) {
            ports[i] = evtchn_bind_interdomain((uint16_t)peer, (uint32_t)(rport + i));
            if (ports[i] > 0) {
                bound++;
                evtchn_mask((uint32_t)ports[i]);
            }
        }
        check(bound == n, "bind_interdomain to domain %lu ports %lu.. -> %lu of %lu bound",
              peer, rport, bound, n);
        for (unsigned long i = 0; i < n; i++)
            if (ports[i] > 0)
                wait_pending((uint32_t)ports[i], 100);     /* Xen signals the binding end once */
        if (n > 1) {
            snprintf(buf, sizeof(buf), "%lu", bound);
            check(xs_write(0, "data/bound", buf) >= 0, "published data/bound = %s", buf);
            check(wait_node("data/release", 60000), "released by the toolstack");
        }
        unsigned long sent = 0, answers = 0;
        for (unsigned long i = 0; i < n; i++)
            if (ports[i] > 0)
                sent += evtchn_notify((uint32_t)ports[i]) == 0;
        check(sent == n, "sent to domain %lu on %lu channels", peer, sent);
        for (unsigned long i = 0; i < n; i++)
            if (ports[i] > 0)
                answers += wait_pending((uint32_t)ports[i], 30000);
        check(answers == n, "the answers from domain %lu arrived on %lu of %lu", peer, answers, n);
    }
    test_finish();
}
