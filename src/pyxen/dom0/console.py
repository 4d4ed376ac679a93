"""Console backend (like xenconsoled): one domain's console ring
(struct xencons_interface: in[1024], out[2048], then in_cons, in_prod,
out_cons, out_prod) connected to an output sink, a log file and keyboard
input.

Limits, as xenconsoled (tools/console/daemon/io.c) has them:

- rate: at most RATE_LIMIT_ALLOWANCE (30) ring reads per RATE_LIMIT_PERIOD
  (200 ms) per console. A guest that notifies more often is not read until
  the next period: its ring fills and it waits; nothing it wrote is lost,
  and a flooding guest costs the daemon at most 150 reads a second.
- log: `guest-NAME.log` is reopened by reopen_log() (pyxend calls it on
  SIGHUP, for logrotate) and, unlike xenconsoled, also capped: past
  log_limit bytes (8 MiB) it is renamed to `.1` (replacing the previous
  one) and a new file is started.

ConsoleClient is one attached console client (`pyxen console`): output is
queued for it without ever blocking the thread that reads the ring, in a
bounded buffer; a client that stops reading is disconnected once
CLIENT_BUFFER bytes are waiting for it.
"""
from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

from ..hv.abi import XenconsInterface as _Ring

IN_SIZE, OUT_SIZE = _Ring.in_.size, _Ring.out.size
IN_OFF, OUT_OFF = _Ring.in_.offset, _Ring.out.offset
IDX_OFF = _Ring.in_cons.offset          # in_cons, in_prod, out_cons, out_prod: u32 each
IN_PROD_OFF, OUT_CONS_OFF = _Ring.in_prod.offset, _Ring.out_cons.offset
LOG_LIMIT = 8 * 1024 * 1024          # a flooding guest cannot fill the disk
DETACH = 0x1D                        # Ctrl-]
RATE_LIMIT_ALLOWANCE = 30            # xenconsoled: ring reads per period
RATE_LIMIT_PERIOD = 0.2              # seconds (xenconsoled: 200 ms)
CLIENT_BUFFER = 256 * 1024           # output a console client may leave unread


def _timer(delay: float, fn) -> None:
    t = threading.Timer(delay, fn)
    t.daemon = True
    t.start()


class ConsoleBackend:
    def __init__(self, page: memoryview, notify_guest, sink=None, log_path: str | None = None,
                 *, log_limit: int = LOG_LIMIT, defer=_timer, clock=time.monotonic,
                 allowance: int = RATE_LIMIT_ALLOWANCE, period: float = RATE_LIMIT_PERIOD):
        self.page = page
        self.notify_guest = notify_guest
        self.sink = sink
        self.lock = threading.Lock()          # the ring
        self.out_lock = threading.Lock()      # history and log
        self.log_path = log_path
        self.log_limit = log_limit
        self.log = None
        self.log_error: str | None = None
        if log_path:
            self._open_log()
        self.history = bytearray()        # recent output, shown to a console that attaches later
        # rate limit (xenconsoled's event_count / next_period)
        self.defer = defer                # defer(seconds, fn): run fn later, on another thread
        self.clock = clock
        self.allowance = allowance
        self.period = period
        self.event_count = 0
        self.next_period = clock() + period
        self.resume_pending = False
        self.reads = 0                    # ring reads done (for tests and `pyxen` diagnostics)
        self.throttled = 0                # notifications left for a later period

    def _idx(self):
        return struct.unpack_from("<IIII", self.page, IDX_OFF)

    def on_notify(self) -> None:
        """The guest signalled: move its output to the sink and the log,
        unless this console used up its reads for the current period (then
        read again at the start of the next one)."""
        with self.lock:
            if self.page is None:
                return
            now = self.clock()
            if now >= self.next_period:
                self.next_period = now + self.period
                self.event_count = 0
            if self.event_count >= self.allowance:
                self.throttled += 1
                if not self.resume_pending:
                    self.resume_pending = True
                    self.defer(max(self.next_period - now, 0.001), self._resume)
                return
            in_cons, in_prod, out_cons, out_prod = self._idx()
            n = (out_prod - out_cons) & 0xFFFFFFFF
            if n == 0:
                return
            self.event_count += 1
            self.reads += 1
            if n > OUT_SIZE:                 # a broken producer: take what the ring holds
                out_cons = (out_prod - OUT_SIZE) & 0xFFFFFFFF
                n = OUT_SIZE
            start = out_cons % OUT_SIZE
            first = min(n, OUT_SIZE - start)
            data = bytes(self.page[OUT_OFF + start:OUT_OFF + start + first])
            if first < n:
                data += bytes(self.page[OUT_OFF:OUT_OFF + n - first])
            struct.pack_into("<I", self.page, OUT_CONS_OFF, out_prod)
        self._emit(data)
        self.notify_guest()

    def drain(self) -> None:
        """Read what the guest left in the ring whatever the rate limit (the
        domain has stopped: this is the last read)."""
        with self.lock:
            self.event_count = 0
            self.next_period = self.clock() + self.period
        self.on_notify()

    def tail(self, lines: int = 40) -> str:
        """The last console lines, led by the guest's last panic/oops line
        when that scrolled out of them (for a crash report)."""
        with self.out_lock:
            text = bytes(self.history).decode(errors="replace").rstrip()
        all_lines = text.splitlines()
        out = all_lines[-lines:]
        panic = [x for x in all_lines if "Kernel panic" in x or "Oops:" in x]
        if panic and panic[-1] not in out:
            out = [panic[-1], "..."] + out
        return "\n".join(out)

    def _resume(self) -> None:
        with self.lock:
            self.resume_pending = False
        self.on_notify()

    def _emit(self, data: bytes) -> None:
        with self.out_lock:
            self.history += data
            if len(self.history) > 64 * 1024:
                del self.history[:-32 * 1024]
            if self.log is not None:
                try:
                    if self.log.tell() + len(data) > self.log_limit:
                        self._rotate()
                    self.log.write(data)
                    self.log.flush()
                except OSError as e:           # disk full: keep the console, drop the log
                    self._drop_log(e)
        if self.sink is not None:
            self.sink(data)

    def _open_log(self) -> None:
        try:
            self.log = open(self.log_path, "ab")
            self.log_error = None
        except OSError as e:
            self.log, self.log_error = None, str(e)

    def _drop_log(self, e: OSError) -> None:
        self.log_error = str(e)
        try:
            self.log.close()
        except OSError:
            pass
        self.log = None

    def _rotate(self) -> None:
        self.log.close()
        self.log = None
        os.replace(self.log_path, self.log_path + ".1")
        self._open_log()

    def reopen_log(self) -> None:
        """Close the log and open log_path again (after logrotate moved it;
        xenconsoled does this on SIGHUP)."""
        with self.out_lock:
            if self.log is not None:
                try:
                    self.log.close()
                except OSError:
                    pass
                self.log = None
            if self.log_path and self.page is not None:
                self._open_log()

    def write_input(self, data: bytes) -> int:
        """Queue keystrokes for the guest; returns how many fit in the ring."""
        with self.lock:
            if self.page is None:
                return 0
            in_cons, in_prod, _, _ = self._idx()
            space = IN_SIZE - ((in_prod - in_cons) & 0xFFFFFFFF)
            n = max(0, min(space, len(data)))
            for i in range(n):
                self.page[IN_OFF + (in_prod + i) % IN_SIZE] = data[i]
            struct.pack_into("<I", self.page, IN_PROD_OFF, (in_prod + n) & 0xFFFFFFFF)
        if n:
            self.notify_guest()
        return n

    def feed(self, data: bytes, alive=lambda: True) -> None:
        """write_input until all of data is in the guest's ring (it drains it),
        or until alive() says the guest is gone."""
        while data and self.page is not None and alive():
            n = self.write_input(data)
            data = data[n:]
            if data:
                time.sleep(0.01)

    def close(self) -> None:
        with self.lock:
            self.page = None
        with self.out_lock:
            if self.log is not None:
                self.log.close()
                self.log = None


class ConsoleClient:
    """One attached console (a `pyxen console` connection). offer() queues
    output from whatever thread reads the ring and never blocks; serve()
    runs on the connection's own thread and moves bytes both ways with
    non-blocking I/O. More than `limit` bytes waiting for the client (it
    stopped reading) disconnects it: the daemon's shared event thread, which
    also serves every guest's xenstore ring, never waits for a client."""

    def __init__(self, sock: socket.socket, limit: int = CLIENT_BUFFER):
        self.sock = sock
        self.limit = limit
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.closed = False
        self.overflowed = False
        sock.setblocking(False)

    def offer(self, data: bytes) -> bool:
        """Queue output for the client; False once it is (being) disconnected."""
        with self.lock:
            if self.closed:
                return False
            if len(self.buf) + len(data) > self.limit:
                self.overflowed = self.closed = True
                self.buf.clear()
            else:
                self.buf += data
            self._poke()
            return not self.closed

    def _poke(self) -> None:
        """Wake serve(); called with self.lock held (the fd stays open)."""
        if self.wake >= 0:
            try:
                os.eventfd_write(self.wake, 1)
            except OSError:
                pass

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self._poke()

    def serve(self, write_input, alive=lambda: True, typed: bytes = b"") -> None:
        """Until the client goes away (or is disconnected, or alive() is
        false): send queued output as the socket takes it, and give what the
        client types (first `typed`, already read) to write_input(data) ->
        bytes taken; input the guest has no room for yet is retried, and the
        socket is not read meanwhile."""
        pending_in = typed
        try:
            while not self.closed and alive():
                with self.lock:
                    want_write = bool(self.buf)
                wake = self.wake
                rlist = [wake] + ([] if pending_in else [self.sock])
                r, w, _ = select.select(rlist, [self.sock] if want_write else [], [],
                                        0.05 if pending_in else 1.0)
                if wake in r:
                    try:
                        os.eventfd_read(wake)
                    except OSError:
                        pass
                if self.closed:
                    break
                if w:
                    with self.lock:
                        try:
                            n = self.sock.send(self.buf)
                        except (BlockingIOError, InterruptedError):
                            n = 0
                        del self.buf[:n]
                if self.sock in r:
                    data = self.sock.recv(4096)
                    if not data:
                        break
                    pending_in = data
                if pending_in:
                    n = write_input(pending_in)
                    pending_in = pending_in[n:]
        except OSError:
            pass
        finally:
            with self.lock:
                self.closed = True
                wake, self.wake = self.wake, -1
            os.close(wake)
