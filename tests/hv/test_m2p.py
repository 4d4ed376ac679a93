"""The M2P at Xen's ABI address (MACH2PHYS_VIRT_START, PML4 slot 256, which
this host cannot map): loads there are completed by pyxen with the values Xen
gives, stores and loads past the table fault as on Xen (guests/m2p.c)."""
from __future__ import annotations

import re

from test_emulate import assert_success, boot

from pyxen.hv.emulate import m2p


def test_m2p_guest(kvm, guest_elf):
    result, console, em = boot(kvm, guest_elf("m2p"))
    assert_success(result, console)
    m = re.search(r"m2p_read: reads=(\d+) cycles_per_read=(\d+) tsc_khz=(\d+) ns_per_read=(\d+)",
                  console)
    assert m, console
    assert em.stats["m2p"] >= int(m.group(1))
    print(f"\none M2P load at the ABI address: {int(m.group(4)) / 1000:.1f} us")


def test_abi_range():
    # xen/include/public/arch-x86/xen-x86_64.h: 256 GiB from slot 256
    assert m2p.MACH2PHYS_VIRT_START == 0xFFFF800000000000
    assert m2p.MACH2PHYS_VIRT_END - m2p.MACH2PHYS_VIRT_START == 256 << 30
    assert m2p.in_range(0xFFFF800000000000) and not m2p.in_range(0xFFFF804000000000)
    assert not m2p.in_range(0xFFFF7FFFFFFFFFFF)
