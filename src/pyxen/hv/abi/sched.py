"""xen/include/public/sched.h: sched_op commands, shutdown reasons."""
from __future__ import annotations

from ._types import Struct, u32, u64, domid_t, handle

_HEADER = "xen/sched.h"

SCHEDOP_yield, SCHEDOP_block, SCHEDOP_shutdown, SCHEDOP_poll = 0, 1, 2, 3
SCHEDOP_remote_shutdown, SCHEDOP_shutdown_code, SCHEDOP_watchdog = 4, 5, 6
SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend = 0, 1, 2
SHUTDOWN_crash, SHUTDOWN_watchdog, SHUTDOWN_soft_reset = 3, 4, 5
SHUTDOWN_NAMES = {0: "poweroff", 1: "reboot", 2: "suspend", 3: "crash", 4: "watchdog",
                  5: "soft_reset"}


class SchedShutdown(Struct):
    _c_type_ = "struct sched_shutdown"
    _fields_ = [("reason", u32)]


class SchedPoll(Struct):
    _c_type_ = "struct sched_poll"
    _fields_ = [("ports", handle), ("nr_ports", u32), ("_pad", u32), ("timeout", u64)]


class SchedRemoteShutdown(Struct):
    _c_type_ = "struct sched_remote_shutdown"
    _fields_ = [("domain_id", domid_t), ("_pad", domid_t), ("reason", u32)]
