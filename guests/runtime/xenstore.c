/* A tiny XenStore client over the xenstore ring (no threads, no upcalls:
 * it polls the store port with SCHEDOP_poll while it waits). */
#include "xenstore.h"

struct xs_ring {
    char req[1024];
    char rsp[1024];
    volatile uint32_t req_cons, req_prod, rsp_cons, rsp_prod;
};
struct xs_hdr { uint32_t type, req_id, tx_id, len; };

static struct xs_ring *ring;
static uint32_t port;
static uint32_t next_id = 1;
char xs_error[32];

/* watch events that arrived while waiting for a reply */
static char pending_ev[4][256];
static unsigned int pending_len[4];
static unsigned int pending_n;

uint32_t xs_port(void) { return port; }

int xs_init(void)
{
    if (!start_info->store_mfn)
        return -1;
    ring = (struct xs_ring *)pfn_to_virt(start_info->store_mfn);  /* pfn == mfn under pyxen */
    port = start_info->store_evtchn;
    return 0;
}

static void wait_port(uint64_t ms)
{
    uint32_t p = port;
    sched_poll(&p, 1, xen_system_time() + ms * 1000000ULL);
    /* the port stays pending; clear it so the next poll waits again */
    __atomic_fetch_and(&shared_info->evtchn_pending[p / 64], ~(1ULL << (p % 64)), __ATOMIC_SEQ_CST);
}

static void put(const void *data, unsigned long n)
{
    const char *d = data;
    while (n) {
        uint32_t used = ring->req_prod - ring->req_cons;
        if (used == sizeof(ring->req)) {
            evtchn_notify(port);
            wait_port(10);
            continue;
        }
        ring->req[ring->req_prod % sizeof(ring->req)] = *d++;
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        ring->req_prod++;
        n--;
    }
}

static int get(void *data, unsigned long n, uint64_t ms)
{
    char *d = data;
    uint64_t end = xen_system_time() + ms * 1000000ULL;
    while (n) {
        if (ring->rsp_prod == ring->rsp_cons) {
            if (xen_system_time() > end)
                return -1;
            wait_port(10);
            continue;
        }
        *d++ = ring->rsp[ring->rsp_cons % sizeof(ring->rsp)];
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        ring->rsp_cons++;
        n--;
    }
    evtchn_notify(port);
    return 0;
}

long xs_request(uint32_t type, uint32_t tx, const char *const *parts, unsigned int nparts,
                char *reply, unsigned long replen)
{
    struct xs_hdr h = { type, next_id++, tx, 0 };
    for (unsigned int i = 0; i < nparts; i++)
        h.len += strlen(parts[i]) + (type == XS_WRITE && i == nparts - 1 ? 0 : 1);
    put(&h, sizeof(h));
    for (unsigned int i = 0; i < nparts; i++)
        put(parts[i], strlen(parts[i]) + (type == XS_WRITE && i == nparts - 1 ? 0 : 1));
    evtchn_notify(port);
    for (;;) {
        struct xs_hdr r;
        if (get(&r, sizeof(r), 5000))
            return -1;
        char buf[4096];
        if (r.len > sizeof(buf) || get(buf, r.len, 5000))
            return -1;
        if (r.type == XS_WATCH_EVENT) {
            if (pending_n < 4 && r.len <= 256) {
                memcpy(pending_ev[pending_n], buf, r.len);
                pending_len[pending_n++] = r.len;
            }
            continue;
        }
        if (r.type == XS_ERROR) {
            unsigned long n = r.len < sizeof(xs_error) ? r.len : sizeof(xs_error) - 1;
            memcpy(xs_error, buf, n);
            xs_error[n] = 0;
            return -1;
        }
        unsigned long n = r.len < replen ? r.len : replen;
        if (reply)
            memcpy(reply, buf, n);
        if (reply && n < replen)
            reply[n] = 0;
        return r.len;
    }
}

long xs_read(uint32_t tx, const char *path, char *buf, unsigned long len)
{
    const char *p[] = { path };
    return xs_request(XS_READ, tx, p, 1, buf, len);
}

long xs_write(uint32_t tx, const char *path, const char *value)
{
    const char *p[] = { path, value };
    return xs_request(XS_WRITE, tx, p, 2, 0, 0);
}

long xs_watch(const char *path, const char *token)
{
    const char *p[] = { path, token };
    return xs_request(XS_WATCH, 0, p, 2, 0, 0);
}

long xs_tx_start(uint32_t *tx)
{
    char buf[32];
    const char *p[] = { "" };
    long n = xs_request(XS_TRANSACTION_START, 0, p, 1, buf, sizeof(buf) - 1);
    if (n < 0)
        return n;
    *tx = (uint32_t)parse_ulong(buf, 0);
    return 0;
}

long xs_tx_end(uint32_t tx, bool commit)
{
    const char *p[] = { commit ? "T" : "F" };
    return xs_request(XS_TRANSACTION_END, tx, p, 1, 0, 0);
}

int xs_wait_watch(char *path, unsigned long plen, char *token, unsigned long tlen, uint64_t ms)
{
    char buf[4096];
    unsigned int len;
    if (pending_n) {
        len = pending_len[0];
        memcpy(buf, pending_ev[0], len);
        for (unsigned int i = 1; i < pending_n; i++) {
            memcpy(pending_ev[i - 1], pending_ev[i], pending_len[i]);
            pending_len[i - 1] = pending_len[i];
        }
        pending_n--;
    } else {
        struct xs_hdr r;
        for (;;) {
            if (get(&r, sizeof(r), ms))
                return -1;
            if (r.len > sizeof(buf) || get(buf, r.len, 5000))
                return -1;
            if (r.type == XS_WATCH_EVENT)
                break;
        }
        len = r.len;
    }
    unsigned long pl = strnlen(buf, len);
    unsigned long n = pl < plen - 1 ? pl : plen - 1;
    memcpy(path, buf, n);
    path[n] = 0;
    const char *t = buf + pl + 1;
    unsigned long tl = pl + 1 < len ? strnlen(t, len - pl - 1) : 0;
    n = tl < tlen - 1 ? tl : tlen - 1;
    memcpy(token, t, n);
    token[n] = 0;
    return 0;
}

long cons_read(char *buf, unsigned long len)
{
    struct xencons_ring *c = console_ring();
    if (!c)
        return -1;
    unsigned long n = 0;
    while (n < len && c->in_cons != c->in_prod) {
        buf[n++] = c->in[c->in_cons % sizeof(c->in)];
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        c->in_cons++;
    }
    if (n)
        evtchn_notify(start_info->console.domU.evtchn);
    return (long)n;
}
