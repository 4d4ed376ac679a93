"""A small QEMU Machine Protocol client (JSON over a Unix socket).

QEMU's QMP (docs/interop/qmp-spec): on connect the server sends a greeting
({"QMP": {...}}); the client sends {"execute": "qmp_capabilities"} and then
commands, each {"execute": NAME, "arguments": {...}, "id": N}; the server
answers {"return": ..., "id": N} or {"error": {"class", "desc"}, "id": N},
and sends events ({"event": NAME, "data": {...}, "timestamp": ...}) at any
time. Here one reader thread matches replies to callers by id and hands
events to a callback, so a command can be sent from any thread while
events (SHUTDOWN, STOP, RESUME...) keep arriving.

(The qemu.qmp package on PyPI does the same over asyncio; pyxen's HVM
supervisor is a threaded process, and this is all it needs of QMP.)
"""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Callable

__all__ = ["QmpClient", "QmpError"]


class QmpError(Exception):
    """A command's error reply, or a lost connection."""

    def __init__(self, message: str, error_class: str = "GenericError"):
        super().__init__(message)
        self.error_class = error_class


class QmpClient:
    """One QMP connection. ``on_event(name, data)`` runs on the reader thread."""

    def __init__(self, path: str, on_event: Callable[[str, dict], None] | None = None,
                 timeout: float = 10.0):
        self.path = path
        self.on_event = on_event
        self.sock = self._connect(path, timeout)
        self.rfile = self.sock.makefile("rb")
        self._lock = threading.Lock()          # sending, and the pending table
        self._pending: dict[int, list] = {}    # id -> [event, reply]
        self._next_id = 0
        self.closed = threading.Event()
        greeting = json.loads(self.rfile.readline() or b"null")
        if not isinstance(greeting, dict) or "QMP" not in greeting:
            raise QmpError(f"{path}: not a QMP greeting: {greeting!r}")
        self.version = greeting["QMP"].get("version", {}).get("qemu", {})
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, daemon=True, name="qmp")
        self._reader.start()
        self.command("qmp_capabilities")

    @staticmethod
    def _connect(path: str, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.settimeout(timeout)
            try:
                s.connect(path)
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _read_loop(self) -> None:
        try:
            for line in self.rfile:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if "event" in msg:
                    if self.on_event is not None:
                        try:
                            self.on_event(msg["event"], msg.get("data") or {})
                        except Exception:       # an event handler must not end the reader
                            pass
                    continue
                with self._lock:
                    slot = self._pending.pop(msg.get("id"), None)
                if slot is not None:
                    slot[1] = msg
                    slot[0].set()
        except OSError:
            pass
        finally:
            self.closed.set()
            with self._lock:
                pending, self._pending = self._pending, {}
            for slot in pending.values():
                slot[0].set()

    def command(self, name: str, timeout: float = 30.0, _fds=(), **arguments):
        """Run one command; its "return" value, or QmpError. _fds: file
        descriptors sent with it (SCM_RIGHTS), as `getfd` takes one."""
        if self.closed.is_set():
            raise QmpError(f"QMP connection to {self.path} is closed", "Closed")
        msg: dict = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        with self._lock:
            self._next_id += 1
            msg["id"] = rid = self._next_id
            slot = self._pending[rid] = [threading.Event(), None]
            try:
                data = json.dumps(msg).encode() + b"\n"
                if _fds:
                    n = socket.send_fds(self.sock, [data], list(_fds))
                    if n < len(data):
                        self.sock.sendall(data[n:])
                else:
                    self.sock.sendall(data)
            except OSError as e:
                self._pending.pop(rid, None)
                raise QmpError(f"QMP {name}: {e}", "Closed") from None
        if not slot[0].wait(timeout):
            with self._lock:
                self._pending.pop(rid, None)
            raise QmpError(f"QMP {name}: no answer in {timeout:g} s", "Timeout")
        reply = slot[1]
        if reply is None:
            raise QmpError(f"QMP {name}: the connection closed", "Closed")
        if "error" in reply:
            err = reply["error"]
            raise QmpError(f"QMP {name}: {err.get('desc')}", err.get("class", "GenericError"))
        return reply.get("return")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
