/*
 * block: set_timer_op + SCHEDOP_block.
 *  - wakes on time: 10 times, a 20 ms single-shot; the vCPU sleeps until
 *    the deadline (never wakes early, never much later) and the runstate
 *    shows it blocked;
 *  - wakes on an event already pending: block returns at once;
 *  - wakes on an event from another vCPU (2+ vCPUs): 300 times, with a
 *    5 s timer armed, another vCPU sends an IPI at a random moment around
 *    the block; the blocked vCPU must wake on the IPI, never on the timer
 *    (a lost wake-up shows as a 5 s sleep). How long a wake-up takes is
 *    printed, not judged: it depends on the host's load (4 vCPUs on 2
 *    loaded cores took 720 ms once).
 */
#include "events.h"

#define MS 1000000ULL
#define ROUNDS 300

static struct runstate_info runstate;
static long wake_port;                       /* IPI port that raises vCPU 0 */
static volatile unsigned long round_armed;   /* vCPU 0 is about to block in this round */
static volatile int sender_done[MAX_GUEST_VCPUS];
static unsigned int nr_vcpus;

static uint64_t rnd_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static void sender(unsigned int me)
{
    uint64_t seed = 0x9E3779B97F4A7C15ULL * (me + 1);
    for (unsigned long r = 1; r <= ROUNDS; r++) {
        if ((r % (nr_vcpus - 1)) + 1 != me)
            continue;
        while (round_armed < r)
            cpu_relax();
        seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        uint64_t until = rdtsc_ordered() + seed % 400000;   /* up to ~0.2 ms */
        while (rdtsc_ordered() < until)
            cpu_relax();
        evtchn_notify(wake_port);
    }
    sender_done[me] = 1;
}

void test_main(void)
{
    nr_vcpus = events_test_start();
    check(HYPERVISOR_vcpu_op(VCPUOP_register_runstate_memory_area, 0,
                             &(unsigned long){(unsigned long)&runstate}) == 0, "runstate area");
    long tp = timer_port();
    check(tp > 0, "VIRQ_TIMER port %ld", tp);

    /* 1. wake on time */
    unsigned int early = 0, late = 0, extra = 0;
    uint64_t worst = 0, blocked0 = runstate.time[RUNSTATE_blocked];
    for (int i = 0; i < 10; i++) {
        local_events_disable();
        unsigned long base = event_count[tp];
        uint64_t deadline = xen_system_time() + 20 * MS;
        HYPERVISOR_set_timer_op(deadline);
        while (event_count[tp] == base) {
            sched_block();
            local_events_disable();
        }
        uint64_t now = xen_system_time();
        if (now < deadline)
            early++;
        if (now - deadline > worst)
            worst = now - deadline;
        if (now > deadline + 200 * MS)
            late++;
        if (event_count[tp] != base + 1)
            extra++;
        local_events_enable();
    }
    check(!early && !late && !extra, "10 timed blocks: %u woke early, %u late, %u extra events; worst %lu us after the deadline",
          early, late, extra, (unsigned long)(worst / 1000));
    HYPERVISOR_vcpu_op(VCPUOP_get_runstate_info, 0, &runstate);
    check(runstate.time[RUNSTATE_blocked] - blocked0 >= 150 * MS,
          "runstate: %lu ms blocked in 200 ms of timed blocks",
          (unsigned long)((runstate.time[RUNSTATE_blocked] - blocked0) / MS));

    /* 2. an event that is already pending: block returns at once */
    long self = evtchn_bind_ipi(0);
    check(self > 0, "IPI to self %ld", self);
    local_events_disable();
    evtchn_notify(self);
    uint64_t t0 = xen_system_time();
    HYPERVISOR_set_timer_op(t0 + 1000 * MS);
    sched_block();
    uint64_t took = xen_system_time() - t0;
    HYPERVISOR_set_timer_op(0);
    check(event_count[self] == 1 && took < 100 * MS,
          "block with an event pending returned after %lu us (event seen %lu)",
          (unsigned long)(took / 1000), event_count[self]);

    /* 3. wake on an event sent by another vCPU while this one blocks */
    if (nr_vcpus < 2) {
        printk("1 vCPU: no cross-vCPU wake-ups\n");
        test_finish();
    }
    wake_port = evtchn_bind_ipi(0);
    check(wake_port > 0, "IPI port for vcpu0: %ld", wake_port);
    for (unsigned int i = 1; i < nr_vcpus; i++)
        check(smp_start_vcpu(i, sender) == 0, "start vcpu%u", i);
    unsigned long timer_wakes = 0, slow = 0;
    uint64_t slowest = 0;
    for (unsigned long r = 1; r <= ROUNDS; r++) {
        local_events_disable();
        unsigned long tbase = event_count[tp];
        uint64_t start = xen_system_time();
        HYPERVISOR_set_timer_op(start + 5000 * MS);
        round_armed = r;
        while (event_count[wake_port] < r && event_count[tp] == tbase) {
            sched_block();
            local_events_disable();
        }
        HYPERVISOR_set_timer_op(0);
        uint64_t d = xen_system_time() - start;
        if (d > slowest)
            slowest = d;
        if (event_count[tp] != tbase)
            timer_wakes++;
        if (d > 500 * MS)
            slow++;
        while (event_count[wake_port] < r) {      /* a lost wake-up: still count it */
            sched_block();
            local_events_disable();
        }
        local_events_enable();
        (void)rnd;
    }
    printk("ipi wake-ups: %lu over 500 ms, slowest %lu us\n", slow, (unsigned long)(slowest / 1000));
    check(timer_wakes == 0,
          "%u rounds: woken by the IPI every time (%lu by the timer; slowest %lu us)",
          ROUNDS, timer_wakes, (unsigned long)(slowest / 1000));
    check(event_count[wake_port] == ROUNDS, "%lu IPIs delivered (want %u)", event_count[wake_port], ROUNDS);
    test_finish();
}
