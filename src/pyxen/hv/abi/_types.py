"""Shorthands for the C types of Xen's public headers (x86-64, little-endian).

Every structure in this package names the C type it mirrors in ``_c_type_``;
``_c_names_`` maps a field whose pyxen name differs from Xen's to the C
member path (``"cr2": "arch.cr2"``). Fields whose name starts with ``_`` are
pyxen's own padding. tests/hv/test_abi_headers.py checks all of it against
/usr/include/xen.
"""
from __future__ import annotations

import ctypes
import re
import struct

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
i8, i16, i32, i64 = ctypes.c_int8, ctypes.c_int16, ctypes.c_int32, ctypes.c_int64
char = ctypes.c_char
ulong = xen_pfn_t = xen_ulong_t = u64      # unsigned long on x86-64
domid_t, grant_ref_t, grant_handle_t, evtchn_port_t = u16, u32, u32, u32
grant_status_t = u16
handle = u64                               # XEN_GUEST_HANDLE(...): one pointer


class Struct(ctypes.LittleEndianStructure):
    _c_type_ = ""
    _c_names_: dict = {}


class Union(ctypes.Union):        # x86-64 is little-endian: the native union is Xen's
    _c_type_ = ""
    _c_names_: dict = {}


_ITEM = re.compile(r"\s*(\d*)([xcbB?hHiIlLqQefds])")


def _field(cls, path: str) -> tuple[int, type]:
    """(offset, ctypes type) of a field of `cls`; "hdr.flags" for a nested one."""
    off = 0
    for name in path.split("."):
        types = dict((f[0], f[1]) for f in cls._fields_)
        if name not in types:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        off += getattr(cls, name).offset
        cls = types[name]
    return off, cls


def checked_struct(fmt: str, cls, names: str) -> struct.Struct:
    """struct.Struct(fmt), after checking that the little-endian format `fmt`
    unpacks the fields `names` (space-separated, in order; "hdr.flags" for a
    nested one) of the ctypes structure `cls`: each item at the field's
    offset, with its size and signedness ("x" padding is skipped; an array
    field takes as many items as it has elements, a char array one "s").
    Fast struct formats on hot paths, layouts from here."""
    if not fmt.startswith("<"):
        raise ValueError(f"{fmt!r}: Xen's layout is little-endian without alignment, use '<'")
    items, pos, i = [], 0, 1
    while i < len(fmt):
        m = _ITEM.match(fmt, i)
        if not m:
            raise ValueError(f"{fmt!r}: cannot parse at {fmt[i:]!r}")
        n, code = int(m.group(1) or 1), m.group(2)
        size = struct.calcsize("<" + code)
        if code == "s":
            items.append((pos, n, code))
            pos += n
        elif code == "x":
            pos += n
        else:
            items.extend((pos + k * size, size, code) for k in range(n))
            pos += n * size
        i = m.end()
    want = []
    for path in names.split():
        off, ctype = _field(cls, path)
        if issubclass(ctype, ctypes.Array) and ctype._type_ is not ctypes.c_char:
            esize = ctypes.sizeof(ctype._type_)
            want.extend((f"{path}[{k}]", off + k * esize, ctype._type_)
                        for k in range(ctype._length_))
        else:
            want.append((path, off, ctype))
    if len(want) != len(items):
        raise ValueError(f"{fmt!r} has {len(items)} items, {cls.__name__} fields "
                         f"{names!r} are {len(want)}")
    for (pos, size, code), (path, off, ctype) in zip(items, want):
        signed = getattr(ctype, "_type_", None) in ("b", "h", "i", "l", "q")
        if (pos, size) != (off, ctypes.sizeof(ctype)) or (
                code in "bBhHiIlLqQ" and signed != code.islower()):
            raise ValueError(f"{fmt!r}: item {code!r} at {pos} (size {size}) is not "
                             f"{cls.__name__}.{path} at {off} (size {ctypes.sizeof(ctype)}, "
                             f"{'signed' if signed else 'unsigned'})")
    return struct.Struct(fmt)
