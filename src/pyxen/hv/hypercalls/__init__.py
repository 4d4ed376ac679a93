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
