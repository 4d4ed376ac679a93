/* xenstore.h - a tiny XenStore client over the guest's ring (xs_wire). */
#ifndef PYXEN_GUEST_XENSTORE_H
#define PYXEN_GUEST_XENSTORE_H
#include "events.h"

#define XS_DIRECTORY 1
#define XS_READ 2
#define XS_WATCH 4
#define XS_UNWATCH 5
#define XS_TRANSACTION_START 6
#define XS_TRANSACTION_END 7
#define XS_WRITE 11
#define XS_MKDIR 12
#define XS_RM 13
#define XS_WATCH_EVENT 15
#define XS_ERROR 16

int xs_init(void);
/* returns length of the reply payload (>= 0) or -1 with xs_error set */
long xs_request(uint32_t type, uint32_t tx, const char *const *parts, unsigned int nparts,
                char *reply, unsigned long replen);
long xs_read(uint32_t tx, const char *path, char *buf, unsigned long len);
long xs_write(uint32_t tx, const char *path, const char *value);
long xs_watch(const char *path, const char *token);
long xs_tx_start(uint32_t *tx);
long xs_tx_end(uint32_t tx, bool commit);
extern char xs_error[32];
/* waits (up to ms) for a watch event; fills path/token; 0 ok, -1 timeout */
int xs_wait_watch(char *path, unsigned long plen, char *token, unsigned long tlen, uint64_t ms);
/* console input ring */
long cons_read(char *buf, unsigned long len);
uint32_t xs_port(void);
#endif
