"""xen/include/public/callback.h: callback_op."""
from __future__ import annotations

from ._types import Struct, u16, u64

_HEADER = "xen/callback.h"

CALLBACKTYPE_event, CALLBACKTYPE_failsafe, CALLBACKTYPE_syscall = 0, 1, 2
CALLBACKTYPE_sysenter_deprecated, CALLBACKTYPE_nmi, CALLBACKTYPE_sysenter = 3, 4, 5
CALLBACKTYPE_syscall32 = 7
CALLBACKOP_register, CALLBACKOP_unregister = 0, 1
CALLBACKF_mask_events = 1 << 0


class CallbackRegister(Struct):
    _c_type_ = "struct callback_register"
    _fields_ = [("type", u16), ("flags", u16), ("_pad", u16 * 2), ("address", u64)]


class CallbackUnregister(Struct):
    _c_type_ = "struct callback_unregister"
    _fields_ = [("type", u16), ("_pad", u16)]
