"""xen/include/public/io/console.h: the console ring page."""
from __future__ import annotations

from ._types import Struct, char, u32

_HEADER = "xen/io/console.h"


class XenconsInterface(Struct):
    _c_type_ = "struct xencons_interface"
    _c_names_ = {"in_": "in"}
    _fields_ = [("in_", char * 1024), ("out", char * 2048), ("in_cons", u32), ("in_prod", u32),
                ("out_cons", u32), ("out_prod", u32)]
