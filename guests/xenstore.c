/*
 * xenstore: a guest's own XenStore use over its ring: read its name and
 * domid, write/read/watch keys under its home, a transaction conflict
 * retried, and permission denied on another domain's path.
 */
#include "xenstore.h"

void test_main(void)
{
    char buf[256], path[128], tok[64];
    set_smp_id(0);
    check(map_shared_info() == 0, "shared_info");
    check(xs_init() == 0, "xenstore ring");
    long n = xs_read(0, "domid", buf, sizeof(buf) - 1);
    check(n > 0, "read domid (%ld)", n);
    unsigned long me = parse_ulong(buf, 0);
    printk("xenstore: I am domain %lu\n", me);
    check(xs_read(0, "name", buf, sizeof(buf) - 1) > 0, "read name: %s", buf);

    check(xs_write(0, "data/greeting", "hello from the ring") >= 0, "write data/greeting (%s)", xs_error);
    check(xs_read(0, "data/greeting", buf, sizeof(buf) - 1) == 19 &&
          strcmp(buf, "hello from the ring") == 0, "read it back: %s", buf);

    check(xs_watch("data/watched", "tok1") >= 0, "watch data/watched");
    check(xs_wait_watch(path, sizeof(path), tok, sizeof(tok), 2000) == 0 &&
          strcmp(tok, "tok1") == 0, "initial watch event (%s %s)", path, tok);
    xs_write(0, "data/watched", "1");
    check(xs_wait_watch(path, sizeof(path), tok, sizeof(tok), 2000) == 0 &&
          strcmp(tok, "tok1") == 0, "watch fires on write (%s)", path);

    /* transaction conflict: someone (us, outside the transaction) changes the key */
    xs_write(0, "data/counter", "0");
    int attempts = 0;
    bool done = false;
    while (!done && attempts < 5) {
        uint32_t tx;
        attempts++;
        check(xs_tx_start(&tx) == 0, "transaction start");
        xs_read(tx, "data/counter", buf, sizeof(buf) - 1);
        unsigned long v = parse_ulong(buf, 0);
        if (attempts == 1)
            xs_write(0, "data/counter", "100");      /* the conflicting write */
        snprintf(buf, sizeof(buf), "%lu", v + 1);
        xs_write(tx, "data/counter", buf);
        if (xs_tx_end(tx, true) >= 0)
            done = true;
        else
            check(strcmp(xs_error, "EAGAIN") == 0, "conflict reported as EAGAIN (%s)", xs_error);
    }
    check(done && attempts == 2, "transaction retried once and committed (%d attempts)", attempts);
    check(xs_read(0, "data/counter", buf, sizeof(buf) - 1) > 0 && strcmp(buf, "101") == 0,
          "counter is 101 (%s)", buf);

    check(xs_read(0, "/local/domain/0/name", buf, sizeof(buf) - 1) < 0 &&
          (strcmp(xs_error, "EACCES") == 0 || strcmp(xs_error, "ENOENT") == 0),
          "dom0's node is not readable (%s)", xs_error);
    snprintf(path, sizeof(path), "/local/domain/%lu/x", me + 1000);
    check(xs_write(0, path, "nope") < 0 && strcmp(xs_error, "EACCES") == 0,
          "writing another domain's path is denied (%s)", xs_error);
    check(xs_write(0, "/tool/x", "nope") < 0 && strcmp(xs_error, "EACCES") == 0,
          "writing /tool is denied (%s)", xs_error);
    test_finish();
}
