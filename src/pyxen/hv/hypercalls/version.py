"""xen_version: what hypervisor this is and which features it offers."""
from __future__ import annotations

import struct

from .. import layout as L
from ..abi import (HC, EFAULT, EINVAL, ENOSYS, XENVER_version, XENVER_extraversion,
                   XENVER_compile_info, XENVER_capabilities, XENVER_changeset,
                   XENVER_platform_parameters, XENVER_get_features, XENVER_pagesize,
                   XENVER_guest_handle, XENVER_commandline, XENVER_build_id,
                   XENFEAT_writable_page_tables, XENFEAT_writable_descriptor_tables,
                   XENFEAT_pae_pgdir_above_4gb, XENFEAT_mmu_pt_update_preserve_ad,
                   XENFEAT_gnttab_map_avail_bits)
from ..guestmem import GuestFault

XEN_MAJOR, XEN_MINOR = 4, 17
EXTRAVERSION = b".0-pyxen"


def features_word(domain, index: int) -> int:
    if index != 0:
        return 0
    bits = (1 << XENFEAT_writable_descriptor_tables) | (1 << XENFEAT_pae_pgdir_above_4gb) \
        | (1 << XENFEAT_mmu_pt_update_preserve_ad) | (1 << XENFEAT_gnttab_map_avail_bits)
    if domain.supports_writable_pagetables:
        bits |= 1 << XENFEAT_writable_page_tables
    return bits


def _put(vcpu, arg, data: bytes) -> int:
    try:
        vcpu.mem.write(arg, data)
    except GuestFault:
        return -EFAULT
    return 0


def xen_version(vcpu, cmd, arg, *_):
    dom = vcpu.domain
    if cmd == XENVER_version:
        return (XEN_MAJOR << 16) | XEN_MINOR
    if cmd == XENVER_extraversion:
        return _put(vcpu, arg, EXTRAVERSION.ljust(16, b"\0"))
    if cmd == XENVER_compile_info:
        info = b"pyxen".ljust(64, b"\0") + b"python".ljust(16, b"\0") \
            + b"pyxen".ljust(32, b"\0") + b"2026-11-26".ljust(32, b"\0")
        return _put(vcpu, arg, info)
    if cmd == XENVER_capabilities:
        return _put(vcpu, arg, b"xen-3.0-x86_64".ljust(1024, b"\0"))
    if cmd == XENVER_changeset:
        return _put(vcpu, arg, b"pyxen".ljust(64, b"\0"))
    if cmd == XENVER_platform_parameters:
        return _put(vcpu, arg, struct.pack("<Q", L.M2P_VIRT_START))
    if cmd == XENVER_get_features:
        try:
            idx = struct.unpack("<I", vcpu.mem.read(arg, 4))[0]
            vcpu.mem.write(arg + 4, struct.pack("<I", features_word(dom, idx)))
        except GuestFault:
            return -EFAULT
        return 0
    if cmd == XENVER_pagesize:
        return L.PAGE_SIZE
    if cmd == XENVER_guest_handle:
        return _put(vcpu, arg, dom.uuid.bytes)
    if cmd == XENVER_commandline:
        return _put(vcpu, arg, b"".ljust(1024, b"\0"))
    if cmd == XENVER_build_id:
        return -EINVAL if arg else -EFAULT
    return -ENOSYS


HANDLERS = {HC.xen_version: xen_version}
