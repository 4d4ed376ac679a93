"""Shorthands for the C types of Xen's public headers (x86-64, little-endian).

Every structure in this package names the C type it mirrors in ``_c_type_``;
``_c_names_`` maps a field whose pyxen name differs from Xen's to the C
member path (``"cr2": "arch.cr2"``). Fields whose name starts with ``_`` are
pyxen's own padding. tests/hv/test_abi_headers.py checks all of it against
/usr/include/xen.
"""
from __future__ import annotations

import ctypes

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
i8, i16, i32, i64 = ctypes.c_int8, ctypes.c_int16, ctypes.c_int32, ctypes.c_int64
char = ctypes.c_char
ulong = xen_pfn_t = xen_ulong_t = u64      # unsigned long on x86-64
domid_t, grant_ref_t, grant_handle_t, evtchn_port_t = u16, u32, u32, u32
handle = u64                               # XEN_GUEST_HANDLE(...): one pointer


class Struct(ctypes.LittleEndianStructure):
    _c_type_ = ""
    _c_names_: dict = {}


class Union(ctypes.Union):        # x86-64 is little-endian: the native union is Xen's
    _c_type_ = ""
    _c_names_: dict = {}
