"""Fixtures for the xenstored tests (helpers live in xs_helpers.py)."""
from __future__ import annotations

import shutil
import signal

import pytest

from pyxen.dom0.xenstore.store import XenStore
from xs_helpers import Daemon, Rec, XsSocket


@pytest.fixture
def store():
    return XenStore()


@pytest.fixture
def dom0(store):
    return Rec(store, 0)


@pytest.fixture
def domu(store):
    """Factory: domu(domid) -> Rec for an unprivileged domain."""
    def make(domid: int) -> Rec:
        return Rec(store, domid)
    return make


@pytest.fixture
def xs_socket():
    opened = []

    def connect(path):
        c = XsSocket(str(path))
        opened.append(c)
        return c
    yield connect
    for c in opened:
        c.close()


@pytest.fixture
def xenstored(tmp_path):
    """Factory starting pyxen-xenstored; every daemon is stopped at the end."""
    started: list[Daemon] = []

    def start(state: bool = True, extra=()) -> Daemon:
        d = Daemon(tmp_path / "xs.sock", tmp_path / "xs-state.json" if state else None,
                   extra)
        started.append(d)
        return d
    yield start
    for d in started:
        d.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def xs_tools():
    tools = {}
    for name in ("read", "write", "ls", "rm", "list", "exists", "chmod", "watch"):
        path = shutil.which(f"xenstore-{name}")
        if path is None:
            pytest.fail(f"xenstore-{name} missing: install Debian's xenstore-utils (./dev setup)")
        tools[name] = path
    return tools
