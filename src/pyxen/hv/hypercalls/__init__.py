"""Hypercalls, one module per family (like Xen's source tree), dispatched
from a table by number. A handler takes (vcpu, a1..a5) and returns an int:
>= 0 on success, -errno (Xen's) on failure."""
from __future__ import annotations

from . import console, version, sched, memory, mmu, traps, descriptors, misc, physdev, \
    vcpu_op, multicall, evtchn, grant_table, pmu, control

FAMILIES = (console, version, sched, memory, mmu, traps, descriptors, misc, physdev, vcpu_op,
            multicall, evtchn, grant_table, pmu, control)


def build_table() -> dict:
    table = {}
    for fam in FAMILIES:
        for nr, fn in fam.HANDLERS.items():
            assert nr not in table, f"hypercall {nr} defined twice"
            table[nr] = fn
    return table


# Xen's prototypes (xen/include/hypercall-defs.c) take some arguments as int,
# unsigned int or domid_t: on x86-64 their bits above 32 (16) are never
# looked at, whatever the guest left in the register. The masks per
# argument, for the hypercalls that have such arguments.
_F, _32, _16 = (1 << 64) - 1, 0xFFFFFFFF, 0xFFFF
ARG_MASKS = {
    1: (_F, _32, _F, _32, _F),       # mmu_update(reqs, unsigned count, pdone, unsigned foreigndom)
    2: (_F, _32, _F, _F, _F),        # set_gdt(frames, unsigned entries)
    5: (_32, _F, _F, _F, _F),        # fpu_taskswitch(int set)
    6: (_32, _F, _F, _F, _F),        # sched_op_compat(int cmd, arg)
    8: (_32, _F, _F, _F, _F),        # set_debugreg(int reg, value)
    9: (_32, _F, _F, _F, _F),        # get_debugreg(int reg)
    13: (_F, _32, _F, _F, _F),       # multicall(list, unsigned nr_calls)
    17: (_32, _F, _F, _F, _F),       # xen_version(int cmd, arg)
    18: (_32, _32, _F, _F, _F),      # console_io(int cmd, unsigned count, buf)
    20: (_32, _F, _32, _F, _F),      # grant_table_op(unsigned cmd, uop, unsigned count)
    21: (_32, _32, _F, _F, _F),      # vm_assist(unsigned cmd, unsigned type)
    22: (_F, _F, _F, _16, _F),       # update_va_mapping_otherdomain(va, val, flags, domid_t)
    24: (_32, _32, _F, _F, _F),      # vcpu_op(int cmd, unsigned vcpuid, arg)
    25: (_32, _F, _F, _F, _F),       # set_segment_base(unsigned which, base)
    26: (_F, _32, _F, _32, _F),      # mmuext_op(ops, unsigned count, pdone, unsigned foreigndom)
    28: (_32, _F, _F, _F, _F),       # nmi_op(unsigned cmd, arg)
    29: (_32, _F, _F, _F, _F),       # sched_op(int cmd, arg)
    30: (_32, _F, _F, _F, _F),       # callback_op(int cmd, arg)
    31: (_32, _F, _F, _F, _F),       # xenoprof_op(int op, arg)
    32: (_32, _F, _F, _F, _F),       # event_channel_op(int cmd, arg)
    33: (_32, _F, _F, _F, _F),       # physdev_op(int cmd, arg)
    37: (_32, _F, _F, _F, _F),       # kexec_op(unsigned op, arg)
    40: (_32, _F, _F, _F, _F),       # xenpmu_op(unsigned op, arg)
    41: (_16, _32, _F, _F, _F),      # dm_op(domid_t, unsigned nr_bufs, bufs)
    42: (_32, _F, _F, _F, _F),       # hypfs_op(unsigned cmd, ...)
}
