/*
 * lib.c - C runtime of the pyxen mini-OS: libc subset, printk, console ring,
 * results, command line.
 */
#include "minios.h"

void mm_early_init(void);
void runtime_main(void) __noreturn;

/* ------------------------------------------------------------------ */
/* libc subset (the compiler may emit calls to mem* itself)           */
/* ------------------------------------------------------------------ */
void *memset(void *s, int c, size_t n)
{
    unsigned char *p = s;
    while (n--)
        *p++ = (unsigned char)c;
    return s;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    if (dp < sp) {
        while (n--)
            *dp++ = *sp++;
    } else {
        while (n--)
            dp[n] = sp[n];
    }
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

size_t strnlen(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (unsigned char)*a - (unsigned char)*b;
        if (!*a)
            break;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* vsnprintf: %d %i %u %x %X %p %s %c %% with l/ll/z/h, width, 0 - # */
/* ------------------------------------------------------------------ */
struct outbuf {
    char *buf;
    size_t size, len;
};

static void out_c(struct outbuf *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void out_pad(struct outbuf *o, char c, int n)
{
    while (n-- > 0)
        out_c(o, c);
}

static void out_num(struct outbuf *o, unsigned long v, unsigned int base,
                    bool upper, bool neg, int width, bool zero, bool left)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0;

    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);

    int len = n + (neg ? 1 : 0);
    if (!left && !zero)
        out_pad(o, ' ', width - len);
    if (neg)
        out_c(o, '-');
    if (!left && zero)
        out_pad(o, '0', width - len);
    while (n)
        out_c(o, tmp[--n]);
    if (left)
        out_pad(o, ' ', width - len);
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct outbuf o = { buf, size, 0 };

    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out_c(&o, *fmt);
            continue;
        }
        fmt++;
        bool zero = false, left = false, alt = false;
        int width = 0, lng = 0, prec = -1;
        for (;; fmt++) {
            if (*fmt == '0')
                zero = true;
            else if (*fmt == '-')
                left = true;
            else if (*fmt == '#')
                alt = true;
            else
                break;
        }
        if (*fmt == '*') {
            width = va_arg(ap, int);
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9')
                width = width * 10 + (*fmt++ - '0');
        }
        if (*fmt == '.') {
            fmt++;
            prec = 0;
            if (*fmt == '*') {
                prec = va_arg(ap, int);
                fmt++;
            } else {
                while (*fmt >= '0' && *fmt <= '9')
                    prec = prec * 10 + (*fmt++ - '0');
            }
        }
        for (;; fmt++) {
            if (*fmt == 'l' || *fmt == 'z')
                lng++;
            else if (*fmt != 'h')
                break;
        }

        switch (*fmt) {
        case 'd':
        case 'i': {
            long v = lng ? va_arg(ap, long) : va_arg(ap, int);
            unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
            out_num(&o, u, 10, false, v < 0, width, zero, left);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long v = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
            if (alt && *fmt != 'u') {
                out_c(&o, '0');
                out_c(&o, 'x');
                width -= 2;
            }
            out_num(&o, v, *fmt == 'u' ? 10 : 16, *fmt == 'X', false, width, zero, left);
            break;
        }
        case 'p': {
            unsigned long v = (unsigned long)va_arg(ap, void *);
            out_c(&o, '0');
            out_c(&o, 'x');
            out_num(&o, v, 16, false, false, 16, true, false);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = (int)(prec >= 0 ? strnlen(s, (size_t)prec) : strlen(s));
            if (!left)
                out_pad(&o, ' ', width - n);
            for (int i = 0; i < n; i++)
                out_c(&o, s[i]);
            if (left)
                out_pad(&o, ' ', width - n);
            break;
        }
        case 'c':
            out_c(&o, (char)va_arg(ap, int));
            break;
        case '%':
            out_c(&o, '%');
            break;
        case '\0':
            fmt--;
            break;
        default:
            out_c(&o, '%');
            out_c(&o, *fmt);
            break;
        }
    }
    if (o.size)
        o.buf[o.len < o.size ? o.len : o.size - 1] = '\0';
    return (int)o.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

/* ------------------------------------------------------------------ */
/* Console                                                            */
/* ------------------------------------------------------------------ */
static unsigned int console_sinks = CONSOLE_SINK_HYPERCALL;
static struct xencons_ring *cons_ring;
static evtchn_port_t cons_port;

void console_set_sink(unsigned int sinks)
{
    console_sinks = sinks;
}

struct xencons_ring *console_ring(void)
{
    return cons_ring;
}

/*
 * The console ring page is one of the bootstrap elements, so it is mapped
 * by the initial page tables at VIRT_BASE + pfn * 4096.  Verify that by
 * walking the live page tables before trusting it.
 */
int console_ring_init(void)
{
    unsigned long mfn = start_info->console.domU.mfn;
    struct pt_walk w;

    if (cons_ring)
        return 0;
    if (!mfn)
        return -1;
    unsigned long pfn = mfn_to_pfn(mfn);
    if (pfn == ~0UL)
        return -2;
    void *va = pfn_to_virt(pfn);
    if (pt_walk(current_l4_mfn(), (unsigned long)va, &w) != 0)
        return -3;
    if (((w.entry[1] & PTE_ADDR_MASK) >> PAGE_SHIFT) != mfn || !(w.entry[1] & _PAGE_RW))
        return -4;
    cons_ring = va;
    cons_port = start_info->console.domU.evtchn;
    return 0;
}

/* After a restore the toolstack rewrote start_info's console frame and
 * channel: take them again. */
int console_ring_resume(void)
{
    cons_ring = NULL;
    return console_ring_init();
}

#define RING_WAIT_LIMIT 200000

long cons_ring_write(const char *buf, size_t len)
{
    struct xencons_ring *r = cons_ring;
    volatile uint32_t *p_cons = &r->out_cons;
    size_t sent = 0;
    unsigned long waits = 0;

    if (!r)
        return -1;

    uint32_t prod = r->out_prod;
    while (sent < len) {
        uint32_t cons = *p_cons;
        barrier();
        if ((uint32_t)(prod - cons) >= sizeof(r->out)) {
            /* Ring full: publish what we have and let the backend drain. */
            barrier();
            *(volatile uint32_t *)&r->out_prod = prod;
            evtchn_notify(cons_port);
            if (++waits > RING_WAIT_LIMIT)
                break;
            HYPERVISOR_sched_op(SCHEDOP_yield, NULL);
            continue;
        }
        r->out[prod & (sizeof(r->out) - 1)] = buf[sent++];
        prod++;
    }
    barrier();  /* data before index; x86 keeps stores in order */
    *(volatile uint32_t *)&r->out_prod = prod;
    evtchn_notify(cons_port);
    return (long)sent;
}

void cons_ring_flush(void)
{
    struct xencons_ring *r = cons_ring;
    if (!r)
        return;
    for (unsigned long i = 0; i < RING_WAIT_LIMIT; i++) {
        if (*(volatile uint32_t *)&r->out_cons == *(volatile uint32_t *)&r->out_prod)
            return;
        evtchn_notify(cons_port);
        HYPERVISOR_sched_op(SCHEDOP_yield, NULL);
    }
}

static void console_write(const char *s, size_t len)
{
    if (console_sinks & CONSOLE_SINK_HYPERCALL)
        HYPERVISOR_console_io(CONSOLEIO_write, (unsigned int)len, s);
    if ((console_sinks & CONSOLE_SINK_RING) && cons_ring)
        cons_ring_write(s, len);
}

void vprintk(const char *fmt, va_list ap)
{
    char buf[512];
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    if (n > (int)sizeof(buf) - 1)
        n = sizeof(buf) - 1;
    console_write(buf, (size_t)n);
}

void printk(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintk(fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Results                                                            */
/* ------------------------------------------------------------------ */
void __noreturn xen_crash_loop(void)
{
    for (;;) {
        xen_shutdown(SHUTDOWN_crash);
        HYPERVISOR_sched_op(SCHEDOP_yield, NULL);
    }
}

void __noreturn test_result(const char *status, const char *reason)
{
    if (reason)
        printk("Test result: %s: %s\n", status, reason);
    else
        printk("Test result: %s\n", status);
    if (console_sinks & CONSOLE_SINK_RING)
        cons_ring_flush();
    xen_shutdown(SHUTDOWN_poweroff);
    /* The domain should be gone by now. */
    xen_crash_loop();
}

static unsigned int nr_failures;
static char first_failure[160];

void check(bool ok, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    printk("  [%s] %s\n", ok ? "ok" : "FAIL", msg);
    if (!ok) {
        if (!nr_failures)
            memcpy(first_failure, msg, sizeof(first_failure));
        nr_failures++;
    }
}

unsigned int check_failures(void)
{
    return nr_failures;
}

void __noreturn test_finish(void)
{
    if (!nr_failures)
        test_success();
    if (nr_failures > 1) {
        char msg[200];
        snprintf(msg, sizeof(msg), "%s (+%u more)", first_failure, nr_failures - 1);
        test_fail(msg);
    }
    test_fail(first_failure);
}

/* ------------------------------------------------------------------ */
/* Command line: whitespace separated key=value words                 */
/* ------------------------------------------------------------------ */
bool cmdline_get(const char *key, char *val, size_t len)
{
    const char *p = start_info->cmd_line;
    const char *end = p + strnlen(p, sizeof(start_info->cmd_line));
    size_t klen = strlen(key);

    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *w = p;
        while (p < end && *p != ' ' && *p != '\t')
            p++;
        if ((size_t)(p - w) > klen && !strncmp(w, key, klen) && w[klen] == '=') {
            size_t n = (size_t)(p - w) - klen - 1;
            if (len) {
                if (n > len - 1)
                    n = len - 1;
                memcpy(val, w + klen + 1, n);
                val[n] = '\0';
            }
            return true;
        }
    }
    return false;
}

unsigned long parse_ulong(const char *s, const char **endp)
{
    unsigned long v = 0;
    unsigned int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (;; s++) {
        unsigned int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else if (*s == '_')
            continue;
        else
            break;
        v = v * base + d;
    }
    if (endp)
        *endp = s;
    return v;
}

unsigned long cmdline_get_ulong(const char *key, unsigned long dflt)
{
    char buf[32];
    const char *end;
    if (!cmdline_get(key, buf, sizeof(buf)) || !buf[0])
        return dflt;
    unsigned long v = parse_ulong(buf, &end);
    return *end ? dflt : v;
}

/* ------------------------------------------------------------------ */
/* C entry from head.S                                                */
/* ------------------------------------------------------------------ */
void __noreturn runtime_main(void)
{
    mm_early_init();
    test_main();
    test_error("test_main returned");
}
