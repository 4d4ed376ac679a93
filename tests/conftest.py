"""Shared fixtures. Tests that need /dev/kvm fail (never skip) when it is missing."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "guests"))
sys.path.insert(0, str(ROOT / "tests"))     # daemon_helpers


@pytest.fixture(scope="session")
def kvm():
    from pyxen.kvm import Kvm, KvmUnavailable
    try:
        k = Kvm()
    except KvmUnavailable as e:
        pytest.fail(f"this test needs /dev/kvm: {e}")
    yield k
    k.close()


@pytest.fixture(scope="session")
def guest_elf():
    """Build a mini-OS guest by name (guests/<name>.c) and return its path."""
    import build as guest_build

    def get(name: str) -> Path:
        return guest_build.build_guest(name)
    return get


@pytest.fixture(scope="session")
def linux_images():
    """Debian's cloud kernel and pyxen's busybox initramfs (fetched through apt once)."""
    from pyxen.build.linux_guest import prepare_linux
    return prepare_linux()
