"""Booting Debian's stock kernel on pyxen: a session that drives the guest's
shell through its Xen console."""
from __future__ import annotations

import warnings

import pytest

from pyxen.toolstack.guestshell import GuestShell, PROMPT


@pytest.fixture
def boot_linux(kvm, linux_images):
    sessions = []

    def boot(**kw) -> GuestShell:
        s = GuestShell(linux_images, **kw)
        sessions.append(s)
        s.wait_for(PROMPT, timeout=180)
        s.quiet()
        # KNOWN BUG (closing note): the first process busybox re-executes through
        # /proc/self/exe after boot sometimes faults on its TLS. Run one such
        # process first, and report (not hide) the fault when it happens.
        s.known_faults = []
        for _ in range(3):
            out = s.run("seq 1 3 | wc -l")
            if out == "3":
                break
            assert "segfault" in out or "Segmentation fault" in out, out
            s.known_faults.append(out.splitlines()[0])
            warnings.warn("known TLS fault in a freshly exec'd busybox: " + out.splitlines()[0])
        assert out == "3", out
        return s
    yield boot
    for s in sessions:
        s.close()
