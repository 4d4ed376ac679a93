/*
 * shutdown - shut down with the reason named on the command line.
 *
 * Command line: "reason=<r> [code=<c>]" where <r>/<c> is poweroff, reboot,
 * suspend, crash, watchdog, soft_reset or a number.  Default: poweroff.
 * With code=<c> the guest first latches <c> with SCHEDOP_shutdown_code;
 * Xen then reports <c> (not <r>) as the shutdown reason, because the first
 * latched code wins.  "Test result: SUCCESS" is printed before the final
 * SCHEDOP_shutdown call; the harness checks the reported reason.
 */
#include "minios.h"

static const char *const reason_names[] = {
    "poweroff", "reboot", "suspend", "crash", "watchdog", "soft_reset",
};

static bool parse_reason(const char *s, unsigned int *out)
{
    for (unsigned int i = 0; i < ARRAY_SIZE(reason_names); i++)
        if (!strcmp(s, reason_names[i])) {
            *out = i;
            return true;
        }
    const char *end;
    if (*s < '0' || *s > '9')
        return false;
    unsigned long v = parse_ulong(s, &end);
    if (*end || v > 0xffffffffUL)
        return false;
    *out = (unsigned int)v;
    return true;
}

static const char *reason_name(unsigned int r)
{
    return r < ARRAY_SIZE(reason_names) ? reason_names[r] : "?";
}

void test_main(void)
{
    char buf[32];
    unsigned int reason = SHUTDOWN_poweroff, code = 0;
    bool have_code = false;

    printk("shutdown: cmd_line \"%.1024s\"\n", start_info->cmd_line);
    if (cmdline_get("reason", buf, sizeof(buf)) && !parse_reason(buf, &reason))
        test_error("bad reason= value");
    if (cmdline_get("code", buf, sizeof(buf))) {
        if (!parse_reason(buf, &code))
            test_error("bad code= value");
        have_code = true;
    }

    printk("requested shutdown reason: %s (%u)\n", reason_name(reason), reason);
    if (have_code) {
        struct sched_shutdown sc = { .reason = code };
        long rc = HYPERVISOR_sched_op(SCHEDOP_shutdown_code, &sc);
        printk("SCHEDOP_shutdown_code(%s (%u)) = %ld\n", reason_name(code), code, rc);
        if (rc == 0)
            printk("expected reported reason: %s (%u)\n", reason_name(code), code);
    } else {
        printk("expected reported reason: %s (%u)\n", reason_name(reason), reason);
    }

    printk("Test result: SUCCESS\n");

    struct sched_shutdown s = { .reason = reason };
    long rc;
    if (reason == SHUTDOWN_suspend) {
        /* x86 PV suspend passes the start_info MFN as the third argument. */
        rc = HYPERVISOR_sched_op3(SCHEDOP_shutdown, &s, virt_to_mfn(start_info));
        printk("SCHEDOP_shutdown(suspend) returned %ld (%s); powering off\n", rc,
               rc ? "cancelled" : "resumed");
        xen_shutdown(SHUTDOWN_poweroff);
    } else {
        rc = HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
        printk("SCHEDOP_shutdown returned %ld\n", rc);
    }
    xen_crash_loop();
}
