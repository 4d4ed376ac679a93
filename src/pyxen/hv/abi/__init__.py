"""Xen's public x86-64 PV ABI as pyxen's own definitions: one module per
public header (xen.h, arch-x86, sched.h, memory.h, vcpu.h, callback.h,
event_channel.h, grant_table.h, physdev.h, version.h, features.h, errno.h,
io/ring.h, io/console.h, io/xs_wire.h, io/blkif.h, io/netif.h).

Structures are ctypes (little-endian, Xen's layout); each module names its
header in ``_HEADER``. tests/hv/test_abi_headers.py compiles the sizes,
offsets and constant values against /usr/include/xen. Code elsewhere takes
layouts and numbers from here instead of writing raw offsets: a field's
offset is ``Struct.field.offset``, and a fast struct.Struct format for a hot
path is made with ``checked_struct(fmt, Struct, "field ...")``, which checks
it against the ctypes layout.

Everything is re-exported here, so ``from pyxen.hv.abi import X`` works
for any X of any module.
"""
from __future__ import annotations

from ._types import (u8, u16, u32, u64, domid_t, grant_ref_t, grant_status_t,  # noqa: F401
                     xen_pfn_t, xen_ulong_t, checked_struct)
from .arch_x86_64 import *  # noqa: F401,F403
from .xen import *  # noqa: F401,F403
from .xen_errno import *  # noqa: F401,F403
from .sched import *  # noqa: F401,F403
from .version import *  # noqa: F401,F403
from .features import *  # noqa: F401,F403
from .callback import *  # noqa: F401,F403
from .memory import *  # noqa: F401,F403
from .vcpu import *  # noqa: F401,F403
from .physdev import *  # noqa: F401,F403
from .event_channel import *  # noqa: F401,F403
from .grant_table import *  # noqa: F401,F403
from .io_ring import *  # noqa: F401,F403
from .io_console import *  # noqa: F401,F403
from .io_xs_wire import *  # noqa: F401,F403
from .io_blkif import *  # noqa: F401,F403
from .io_netif import *  # noqa: F401,F403

MODULES = ("arch_x86_64", "xen", "xen_errno", "sched", "version", "features", "callback",
           "memory", "vcpu", "physdev", "event_channel", "grant_table", "io_ring",
           "io_console", "io_xs_wire", "io_blkif", "io_netif")
