"""Console backend (like xenconsoled): one domain's console ring
(struct xencons_interface: in[1024], out[2048], then in_cons, in_prod,
out_cons, out_prod) connected to an output sink, a log file and keyboard
input."""
from __future__ import annotations

import os
import struct
import threading
import time

IN_SIZE, OUT_SIZE = 1024, 2048
IN_OFF, OUT_OFF = 0, 1024
IDX_OFF = 3072
LOG_LIMIT = 8 * 1024 * 1024          # a flooding guest cannot fill the disk
DETACH = 0x1D                        # Ctrl-]


class ConsoleBackend:
    def __init__(self, page: memoryview, notify_guest, sink=None, log_path: str | None = None):
        self.page = page
        self.notify_guest = notify_guest
        self.sink = sink
        self.lock = threading.Lock()
        self.log = open(log_path, "ab") if log_path else None
        self.log_path = log_path
        self.history = bytearray()        # recent output, shown to a console that attaches later
        self.log_error: str | None = None

    def _idx(self):
        return struct.unpack_from("<IIII", self.page, IDX_OFF)

    def on_notify(self) -> None:
        """The guest signalled: move its output to the sink and the log."""
        with self.lock:
            in_cons, in_prod, out_cons, out_prod = self._idx()
            n = (out_prod - out_cons) & 0xFFFFFFFF
            if n == 0:
                return
            if n > OUT_SIZE:                 # a broken producer: take what the ring holds
                out_cons = (out_prod - OUT_SIZE) & 0xFFFFFFFF
                n = OUT_SIZE
            start = out_cons % OUT_SIZE
            first = min(n, OUT_SIZE - start)
            data = bytes(self.page[OUT_OFF + start:OUT_OFF + start + first])
            if first < n:
                data += bytes(self.page[OUT_OFF:OUT_OFF + n - first])
            struct.pack_into("<I", self.page, IDX_OFF + 8, out_prod)
        self._emit(data)
        self.notify_guest()

    def _emit(self, data: bytes) -> None:
        self.history += data
        if len(self.history) > 64 * 1024:
            del self.history[:-32 * 1024]
        if self.sink is not None:
            self.sink(data)
        if self.log is not None:
            try:
                if self.log.tell() > LOG_LIMIT:
                    self._rotate()
                self.log.write(data)
                self.log.flush()
            except OSError as e:           # disk full: keep the console, drop the log
                self.log_error = str(e)
                try:
                    self.log.close()
                except OSError:
                    pass
                self.log = None

    def _rotate(self) -> None:
        self.log.close()
        os.replace(self.log_path, self.log_path + ".1")
        self.log = open(self.log_path, "ab")

    def write_input(self, data: bytes) -> int:
        """Queue keystrokes for the guest; returns how many fit in the ring."""
        with self.lock:
            in_cons, in_prod, _, _ = self._idx()
            space = IN_SIZE - ((in_prod - in_cons) & 0xFFFFFFFF)
            n = min(space, len(data))
            for i in range(n):
                self.page[IN_OFF + (in_prod + i) % IN_SIZE] = data[i]
            struct.pack_into("<I", self.page, IDX_OFF + 4, (in_prod + n) & 0xFFFFFFFF)
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
        if self.log is not None:
            self.log.close()
            self.log = None
        self.page = None
