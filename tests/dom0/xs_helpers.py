"""Helpers for the xenstored tests: a recording store client, a tiny
socket client, a guest-side ring client and a daemon launcher."""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from pyxen.dom0.xenstore.store import XenStore

VENV_BIN = Path(sys.executable).parent


class Rec:
    """A store client that records its watch events."""

    def __init__(self, store: XenStore, domid: int, privileged=None):
        self.events: list[tuple[str, str]] = []
        self.c = store.new_client(domid, privileged,
                                  sink=lambda p, t: self.events.append((p, t)))

    def take(self) -> list[tuple[str, str]]:
        ev, self.events = self.events, []
        return ev


HDR = struct.Struct("<IIII")


class XsSocket:
    """Minimal blocking xenstore client over a Unix socket (for tests)."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.req_id = 0
        self.events: list[tuple[str, str]] = []
        self._buf = b""

    def close(self):
        self.sock.close()

    def _recv_msg(self):
        while True:
            if len(self._buf) >= 16:
                t, r, x, n = HDR.unpack_from(self._buf)
                if len(self._buf) >= 16 + n:
                    payload = self._buf[16:16 + n]
                    self._buf = self._buf[16 + n:]
                    return t, r, x, payload
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("xenstored closed the connection")
            self._buf += data

    def send_raw(self, data: bytes):
        self.sock.sendall(data)

    def request(self, msg_type: int, payload: bytes, tx: int = 0):
        self.req_id += 1
        self.sock.sendall(HDR.pack(msg_type, self.req_id, tx, len(payload)) + payload)
        while True:
            t, r, x, p = self._recv_msg()
            if t == 15:  # WATCH_EVENT
                path, token = p.split(b"\0")[:2]
                self.events.append((path.decode(), token.decode()))
                continue
            assert r == self.req_id and x == tx
            return t, p

    def wait_event(self, timeout: float = 5.0):
        if self.events:
            return self.events.pop(0)
        self.sock.settimeout(timeout)
        t, r, x, p = self._recv_msg()
        assert t == 15, (t, p)
        path, token = p.split(b"\0")[:2]
        return path.decode(), token.decode()


def wait_for_socket(path: Path, proc=None, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"xenstored exited with {proc.returncode}: "
                               f"{proc.stderr.read() if proc.stderr else ''}")
        if path.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.02)
    raise TimeoutError(f"xenstored did not create {path}")


class Daemon:
    """A pyxen-xenstored process in the foreground."""

    def __init__(self, sock: Path, state: Path | None, extra=()):
        self.sock, self.state = sock, state
        exe = VENV_BIN / "pyxen-xenstored"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m",
                                                "pyxen.dom0.xenstore.server"]
        cmd += ["--socket", str(sock), "-F"]
        if state is not None:
            cmd += ["--state", str(state)]
        cmd += list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        try:
            wait_for_socket(sock, self.proc)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def env(self) -> dict:
        env = dict(os.environ)
        env["XENSTORED_PATH"] = str(self.sock)
        env.pop("XENSTORE_DOMAIN_INTERFACE", None)
        return env

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        return self.proc.returncode


class GuestRing:
    """The guest's half of a xenstore ring page, in Python (as a PV
    frontend would drive it).  ``kick`` signals the server (it stands in for
    the event channel: normally ``transport.kick``)."""

    RING = 1024

    def __init__(self, page, kick=None):
        self.page = memoryview(page).cast("B") if not isinstance(page, memoryview) else page
        self.kick = kick
        self.rx = b""
        self.req_id = 0
        self.events: list[tuple[str, str]] = []

    def _get(self, off):
        return int.from_bytes(self.page[off:off + 4], "little")

    def _put(self, off, v):
        self.page[off:off + 4] = (v & 0xFFFFFFFF).to_bytes(4, "little")

    def set_indexes(self, req: int, rsp: int):
        for off, v in ((2048, req), (2052, req), (2056, rsp), (2060, rsp)):
            self._put(off, v)

    def write_some(self, data: bytes) -> int:
        """Copy as much of ``data`` into the request ring as fits."""
        cons, prod = self._get(2048), self._get(2052)
        space = self.RING - ((prod - cons) & 0xFFFFFFFF)
        n = 0
        while n < len(data) and space:
            start = prod % self.RING
            chunk = data[n:n + min(space, self.RING - start)]
            self.page[start:start + len(chunk)] = chunk
            prod += len(chunk)
            space -= len(chunk)
            n += len(chunk)
        self._put(2052, prod)
        return n

    def read_all(self) -> bytes:
        """Consume everything in the response ring."""
        cons, prod = self._get(2056), self._get(2060)
        out = b""
        while (prod - cons) & 0xFFFFFFFF:
            start = cons % self.RING
            n = min((prod - cons) & 0xFFFFFFFF, self.RING - start)
            out += bytes(self.page[1024 + start:1024 + start + n])
            cons += n
        self._put(2056, cons)
        return out

    def pump(self):
        self.rx += self.read_all()

    def messages(self):
        """Complete messages received so far (events are split off)."""
        out = []
        while len(self.rx) >= 16:
            t, r, x, n = HDR.unpack_from(self.rx)
            if len(self.rx) < 16 + n:
                break
            payload = self.rx[16:16 + n]
            self.rx = self.rx[16 + n:]
            if t == 15:
                p, tok = payload.split(b"\0")[:2]
                self.events.append((p.decode(), tok.decode()))
            else:
                out.append((t, r, x, payload))
        return out

    def send(self, data: bytes, timeout: float = 10.0):
        """Write ``data`` fully, kicking and draining responses as needed
        (the server may serve the ring from its own thread: wait a little
        when nothing moved)."""
        pending = []
        deadline = time.monotonic() + timeout
        while True:
            n = self.write_some(data)
            data = data[n:]
            self.kick()
            self.pump()
            pending += self.messages()
            if not data:
                return pending
            if time.monotonic() > deadline:
                raise TimeoutError("request ring never drained")
            if not n:
                time.sleep(0.0005)

    def request(self, msg_type: int, payload: bytes, tx: int = 0, timeout: float = 10.0):
        self.req_id += 1
        got = self.send(HDR.pack(msg_type, self.req_id, tx, len(payload)) + payload)
        deadline = time.monotonic() + timeout
        while True:
            for t, r, x, p in got:
                if r == self.req_id:
                    return t, p
            if time.monotonic() > deadline:
                raise TimeoutError("no reply")
            self.kick()
            self.pump()
            got = self.messages()
            if not got:
                time.sleep(0.0005)
