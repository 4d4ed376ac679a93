"""xen/include/public/vcpu.h: vcpu_op, runstate, vcpu_info registration."""
from __future__ import annotations

from ._types import Struct, i32, u32, u64

_HEADER = "xen/vcpu.h"

VCPUOP_initialise, VCPUOP_up, VCPUOP_down, VCPUOP_is_up = 0, 1, 2, 3
VCPUOP_get_runstate_info, VCPUOP_register_runstate_memory_area = 4, 5
VCPUOP_set_periodic_timer, VCPUOP_stop_periodic_timer = 6, 7
VCPUOP_set_singleshot_timer, VCPUOP_stop_singleshot_timer = 8, 9
VCPUOP_register_vcpu_info, VCPUOP_send_nmi, VCPUOP_get_physid = 10, 11, 12
VCPUOP_register_vcpu_time_memory_area = 13
RUNSTATE_running, RUNSTATE_runnable, RUNSTATE_blocked, RUNSTATE_offline = 0, 1, 2, 3
XEN_RUNSTATE_UPDATE = 1 << 63
VCPU_SSHOTTMR_future = 1 << 0


class VcpuRunstateInfo(Struct):
    _c_type_ = "struct vcpu_runstate_info"
    _fields_ = [("state", i32), ("_pad", u32), ("state_entry_time", u64), ("time", u64 * 4)]


class VcpuRegisterRunstateMemoryArea(Struct):
    _c_type_ = "struct vcpu_register_runstate_memory_area"
    _c_names_ = {"addr": "addr.p"}
    _fields_ = [("addr", u64)]


class VcpuSetPeriodicTimer(Struct):
    _c_type_ = "struct vcpu_set_periodic_timer"
    _fields_ = [("period_ns", u64)]


class VcpuSetSingleshotTimer(Struct):
    _c_type_ = "struct vcpu_set_singleshot_timer"
    _fields_ = [("timeout_abs_ns", u64), ("flags", u32), ("_pad", u32)]


class VcpuRegisterVcpuInfo(Struct):
    _c_type_ = "struct vcpu_register_vcpu_info"
    _fields_ = [("mfn", u64), ("offset", u32), ("rsvd", u32)]


class VcpuRegisterTimeMemoryArea(Struct):
    _c_type_ = "struct vcpu_register_time_memory_area"
    _c_names_ = {"addr": "addr.p"}
    _fields_ = [("addr", u64)]
