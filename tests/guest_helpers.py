"""Booting a mini-OS guest (guests/*.c) in a test, built the way `pyxen
create` builds a domain: toolstack.builder.build_domain with in-process dom0
services (xenstored, console backend), the instruction emulator always in."""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager

from pyxen.toolstack.builder import LocalServices, build_domain, close_domain
from pyxen.toolstack.domconfig import DomainConfig


class Console(bytearray):
    """What the guest printed: console ring and console_io, in one buffer."""

    @property
    def text(self) -> str:
        return self.decode(errors="replace")


def build(kvm, elf, *, cmdline: str = "", memory_mb: int = 32, vcpus: int = 1, trace=None,
          name: str = "t", sink=None, **cfg):
    """A built (not yet running) domain and its Console; the caller closes
    it with close_domain(). sink: also receives the console ring's output."""
    out = Console()

    def ring(data: bytes) -> None:
        out.extend(data)
        if sink is not None:
            sink(data)
    c = DomainConfig(name=name, kernel=str(elf), cmdline=cmdline, memory=memory_mb,
                     vcpus=vcpus, **cfg)
    dom = build_domain(c, LocalServices(ring, devices=False), console_io=out.extend,
                       trace=trace, kvm=kvm)
    return dom, out


@contextmanager
def domain(kvm, elf, **kw):
    """build() as a context: the domain is closed on exit."""
    dom, out = build(kvm, elf, **kw)
    try:
        yield dom, out
    finally:
        close_domain(dom)


def run(dom, timeout: float | None = None):
    """Run a built domain to its end; a watchdog destroys it after `timeout`
    seconds, so a hang fails the test instead of hanging it."""
    timer = None
    if timeout is not None:
        timer = threading.Timer(timeout, dom.destroy)
        timer.daemon = True
        timer.start()
    try:
        return dom.run()
    finally:
        if timer is not None:
            timer.cancel()


def boot(kvm, elf, *, timeout: float | None = 120.0, **kw):
    """Build, run to the end and close: (DomainResult, console text)."""
    with domain(kvm, elf, **kw) as (dom, out):
        result = run(dom, timeout)
    return result, out.text


def assert_success(result, console: str) -> None:
    lines = re.findall(r"^Test result: .*$", console, re.M)
    assert lines == ["Test result: SUCCESS"], console + "\n" + result.message
