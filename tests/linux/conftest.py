"""Booting Debian's stock kernel on pyxen: a session that drives the guest's
shell through its Xen console."""
from __future__ import annotations

import pytest

from pyxen.toolstack.guestshell import GuestShell


@pytest.fixture
def boot_linux(kvm, linux_images):
    sessions = []

    def boot(**kw) -> GuestShell:
        s = GuestShell(linux_images, **kw)
        sessions.append(s)
        s.settle()
        return s
    yield boot
    for s in sessions:
        s.close()
