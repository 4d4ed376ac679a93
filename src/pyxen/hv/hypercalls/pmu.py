"""xenpmu_op: virtual PMU. Disabled, as in Xen's default (vpmu=off), which
answers -EOPNOTSUPP; guests then fall back to software events."""
from __future__ import annotations

from ..abi import HC, EOPNOTSUPP


def xenpmu_op(vcpu, *_):
    return -EOPNOTSUPP


HANDLERS = {HC.xenpmu_op: xenpmu_op}
