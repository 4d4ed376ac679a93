/*
 * The FIFO event-channel ABI for the pyxen mini-OS (Xen's event_fifo.c
 * seen from the guest, consumed the way Linux's events_fifo.c does).
 *
 * Chosen at run time by events_init() when the command line says
 * "abi=fifo".  The first vCPU that calls fifo_init_vcpu() allocates the
 * control blocks of all vCPUs and an event array that covers
 * NR_EVENT_PORTS ports; each vCPU then registers its own control block.
 */
#include "events.h"

#define FIFO_PENDING   31
#define FIFO_MASKED    30
#define FIFO_LINKED    29
#define FIFO_LINK_MASK ((1u << 17) - 1)
#define FIFO_PRIORITIES 16
#define WORDS_PER_PAGE (PAGE_SIZE / 4)
#define ARRAY_PAGES (NR_EVENT_PORTS / WORDS_PER_PAGE)

struct fifo_control_block {
    uint32_t ready;
    uint32_t rsvd;
    uint32_t head[FIFO_PRIORITIES];
};

struct init_control_args {
    uint64_t control_gfn;
    uint32_t offset;
    uint32_t vcpu;
    uint8_t link_bits;
    uint8_t pad[7];
};

static volatile struct fifo_control_block *control[MAX_GUEST_VCPUS];
static volatile uint32_t *array[ARRAY_PAGES];
static uint32_t local_head[MAX_GUEST_VCPUS][FIFO_PRIORITIES];
static unsigned long array_gfn[ARRAY_PAGES];
static volatile int array_ready;

static volatile uint32_t *word(uint32_t port)
{
    if (port >= NR_EVENT_PORTS)
        return 0;
    return &array[port / WORDS_PER_PAGE][port % WORDS_PER_PAGE];
}

int fifo_init_vcpu(unsigned int vcpu)
{
    if (vcpu >= MAX_GUEST_VCPUS)
        return -22;
    if (array_ready)
        return 0;
    /* The first call (vCPU 0, before any other vCPU is up) sets up every
     * vCPU's control block, as Linux does while preparing a CPU: an event
     * bound to a vCPU without one would only stay pending, unlinked. */
    if (mm_init())
        return -12;
    for (unsigned int i = 0; i < MAX_GUEST_VCPUS; i++) {
        unsigned long pfn = alloc_pfn();
        if (!pfn)
            return -12;
        control[i] = pfn_to_virt(pfn);
    }
    for (unsigned int i = 0; i < ARRAY_PAGES; i++) {
        unsigned long pfn = alloc_pfn();     /* zeroed: every port unmasked */
        if (!pfn)
            return -12;
        array[i] = pfn_to_virt(pfn);
        array_gfn[i] = pfn_to_mfn(pfn);
    }
    unsigned int n = smp_nr_vcpus();
    for (unsigned int i = 0; i < n; i++) {
        struct init_control_args ic = { virt_to_mfn((void *)control[i]), 0, i, 0, {0} };
        long rc = HYPERVISOR_event_channel_op(EVTCHNOP_init_control, &ic);
        if (rc)
            return (int)rc;
    }
    for (unsigned int i = 0; i < ARRAY_PAGES; i++) {
        uint64_t gfn = array_gfn[i];
        long rc = HYPERVISOR_event_channel_op(EVTCHNOP_expand_array, &gfn);
        if (rc)
            return (int)rc;
    }
    array_ready = 1;
    return 0;
}

bool fifo_is_pending(uint32_t port)
{
    volatile uint32_t *w = word(port);
    return w && ((*w >> FIFO_PENDING) & 1);
}

bool fifo_is_masked(uint32_t port)
{
    volatile uint32_t *w = word(port);
    return w && ((*w >> FIFO_MASKED) & 1);
}

void fifo_mask(uint32_t port)
{
    volatile uint32_t *w = word(port);
    if (w)
        __atomic_fetch_or(w, 1u << FIFO_MASKED, __ATOMIC_SEQ_CST);
}

bool fifo_clear(uint32_t port)
{
    volatile uint32_t *w = word(port);
    if (!w)
        return false;
    return (__atomic_fetch_and(w, ~(1u << FIFO_PENDING), __ATOMIC_SEQ_CST) >> FIFO_PENDING) & 1;
}

/* Clear LINKED and the link; return the link (the next port in the queue). */
static uint32_t clear_linked(volatile uint32_t *w)
{
    uint32_t old = *w, new;
    do {
        new = old & ~((1u << FIFO_LINKED) | FIFO_LINK_MASK);
    } while (!__atomic_compare_exchange_n(w, &old, new, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old & FIFO_LINK_MASK;
}

static void consume_one(unsigned int vcpu, unsigned int q, uint32_t *ready)
{
    volatile struct fifo_control_block *cb = control[vcpu];
    uint32_t port = local_head[vcpu][q];
    if (!port) {
        /* reached the tail last time: the hypervisor wrote a new head */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        port = cb->head[q];
    }
    volatile uint32_t *w = word(port);
    if (!port || !w) {
        *ready &= ~(1u << q);
        local_head[vcpu][q] = 0;
        return;
    }
    uint32_t next = clear_linked(w);
    if (!next)
        *ready &= ~(1u << q);          /* the queue is empty now */
    if (!((*w >> FIFO_MASKED) & 1) && fifo_clear(port)) {
        event_count[port]++;
        if (event_hook)
            event_hook(port);
    }
    local_head[vcpu][q] = next;
}

void fifo_dispatch(unsigned int vcpu)
{
    volatile struct fifo_control_block *cb = control[vcpu];
    if (!cb)
        return;
    uint32_t ready = __atomic_exchange_n(&cb->ready, 0, __ATOMIC_SEQ_CST);
    while (ready) {
        unsigned int q = __builtin_ctz(ready);     /* priority 0 is the highest */
        consume_one(vcpu, q, &ready);
        ready |= __atomic_exchange_n(&cb->ready, 0, __ATOMIC_SEQ_CST);
    }
}
