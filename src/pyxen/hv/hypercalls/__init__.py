"""Hypercalls, one module per family (like Xen's source tree), dispatched
from a table by number. A handler takes (vcpu, a1..a5) and returns an int:
>= 0 on success, -errno (Xen's) on failure (iret, and a multicall ending
in one, return exits.Exit.RETURNED instead: the registers are the frame's).

Each family's HANDLERS maps a number to its handler, or to a Hypercall
record when the entry's policy is not the default (run under the domain
lock, never blocks). Domain.hypercall dispatches by the record, and so does
a multicall for each of its entries.

To add a hypercall: write the handler in the family's module (or a new
module listed in FAMILIES), put it in that module's HANDLERS (a Hypercall
record if it may block or needs no lock), its name in abi.HYPERCALLS and,
if Xen's prototype has int/unsigned/domid_t arguments, a row in ARG_MASKS
below."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..abi import HYPERCALLS


@dataclass(frozen=True)
class Hypercall:
    """One entry of the hypercall table and its dispatch policy.

    locked: the handler runs under the domain lock (Xen's handlers take
      their own locks; pyxen takes one lock around the whole handler).
    may_block: the handler may sleep (SCHEDOP_block/poll); such a handler
      must not run under the domain lock, or no other vCPU could make a
      hypercall, and so wake it, until it returns."""
    nr: int
    handler: Callable
    name: str = ""
    locked: bool = True
    may_block: bool = False

    def __post_init__(self):
        assert not (self.locked and self.may_block), \
            f"hypercall {self.nr}: a handler that may block cannot hold the domain lock"
        if not self.name:
            object.__setattr__(self, "name", HYPERCALLS.get(self.nr, str(self.nr)))


from . import console, version, sched, memory, mmu, traps, descriptors, misc, physdev, \
    vcpu_op, multicall, evtchn, grant_table, pmu, control  # noqa: E402 (they import Hypercall)

FAMILIES = (console, version, sched, memory, mmu, traps, descriptors, misc, physdev, vcpu_op,
            multicall, evtchn, grant_table, pmu, control)


def build_table() -> dict[int, Hypercall]:
    table = {}
    for fam in FAMILIES:
        for nr, entry in fam.HANDLERS.items():
            assert nr not in table, f"hypercall {nr} defined twice"
            if not isinstance(entry, Hypercall):
                entry = Hypercall(nr, entry)
            assert entry.nr == nr, f"hypercall {nr} declared as {entry.nr}"
            table[nr] = entry
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
