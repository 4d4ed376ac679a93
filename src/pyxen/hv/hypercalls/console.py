"""console_io: the hypervisor's own console (Xen's drivers/char/console.c).

Xen 4.17 lets a domU use it only in a debug build: xsm_console_io() of the
default policy allows CONSOLEIO_write for any domain when
CONFIG_VERBOSE_DEBUG is set (the default of debug builds) and refuses
everything else, and everything in release builds, with -EPERM unless the
domain is privileged. pyxen answers as the debug build: pyxen's own test
guests and XTF write their verdicts there (a release Xen drops them; they
also write to their PV console ring). CONSOLEIO_read and any other command
are -EPERM.

What a guest writes is treated as guest_console_write() treats a domU's
output: bytes other than printable ASCII and tab are dropped (no terminal
escape sequences reach the log or an administrator's terminal), and
output is cut into lines of at most 199 characters (Xen's
DOMAIN_PBUF_SIZE buffer). Xen's debug build prints every such line; pyxen
bounds them with a per-domain token bucket (BURST bytes at once,
RATE bytes a second after that; lines that do not fit are dropped and
counted, and the next line that fits says how many), so a guest that
floods console_io neither fills the hypervisor log (`pyxen dmesg`, the
domain's log file) nor costs the host more than RATE bytes a second.
"""
from __future__ import annotations

import threading
import time

from ..abi import HC, CONSOLEIO_write, EFAULT, EPERM
from ..guestmem import GuestFault

PBUF_SIZE = 200                    # Xen's DOMAIN_PBUF_SIZE (a line is at most 199 bytes)
BURST = 256 * 1024                 # bytes a domain may write at once
RATE = 4 * 1024                    # bytes a second after that
CHUNK = 4096                       # guest memory is read in pieces of this size
_NONPRINT = bytes(c for c in range(256) if not (0x20 <= c < 0x7F or c == 0x09))


class GuestConsole:
    """One domain's console_io output: line buffer and rate limit."""

    def __init__(self, emit, *, burst: int = BURST, rate: int = RATE, clock=time.monotonic):
        self.emit = emit
        self.burst, self.rate, self.clock = burst, rate, clock
        self.tokens = float(burst)
        self.last = clock()
        self.pbuf = bytearray()
        self.lock = threading.Lock()
        self.emitted = 0                     # bytes passed on
        self.suppressed_lines = 0            # since the last notice
        self.suppressed_total = 0            # bytes dropped, ever

    def write(self, data: bytes) -> None:
        with self.lock:
            parts = data.split(b"\n")
            for i, part in enumerate(parts):
                self.pbuf += part.translate(None, _NONPRINT)
                while len(self.pbuf) >= PBUF_SIZE - 1:
                    self._line(bytes(self.pbuf[:PBUF_SIZE - 1]))
                    del self.pbuf[:PBUF_SIZE - 1]
                if i < len(parts) - 1:           # a newline ended this part
                    self._line(bytes(self.pbuf))
                    self.pbuf.clear()

    def _line(self, text: bytes) -> None:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        cost = len(text) + 1
        if self.tokens < cost:
            self.suppressed_lines += 1
            self.suppressed_total += cost
            return
        self.tokens -= cost
        if self.suppressed_lines:
            self.emit(b"(console_io: %d lines suppressed)\n" % self.suppressed_lines)
            self.suppressed_lines = 0
        self.emitted += cost
        self.emit(text + b"\n")


def guest_console(dom) -> GuestConsole:
    gc = dom.__dict__.get("guest_console_io")
    if gc is None:
        gc = dom.__dict__.setdefault(
            "guest_console_io",
            GuestConsole(lambda data: dom.console_write(data, source="console_io")))
    return gc


def console_io(vcpu, cmd, count, buf, *_):
    if cmd != CONSOLEIO_write:
        return -EPERM            # Xen's XSM: only a privileged domain reads (or anything else)
    count &= 0xFFFFFFFF          # unsigned int in Xen
    gc = guest_console(vcpu.domain)
    done = 0
    while done < count:
        n = min(CHUNK, count - done)
        try:
            data = vcpu.mem.read(buf + done, n)
        except GuestFault:
            return -EFAULT       # what came before the fault was written, as in Xen
        gc.write(data)
        done += n
    return 0


HANDLERS = {HC.console_io: console_io}
