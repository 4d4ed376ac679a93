"""pyxen's control protocol: JSON objects, one per line, over Unix sockets,
with file descriptors passed alongside (SCM_RIGHTS) where a message needs them.

Request:  {"id": N, "method": "name", "params": {...}}
Reply:    {"id": N, "result": ...}  or  {"id": N, "error": {"code": C, "message": "..."}}
The API (pyxend.sock) is versioned: the "version" method returns API_VERSION.
"""
from __future__ import annotations

import array
import json
import os
import socket

API_VERSION = 1
MAX_LINE = 4 << 20


class RpcError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Connection:
    """A framed JSON connection over a Unix stream socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.fds: list[int] = []

    @classmethod
    def connect(cls, path, timeout: float | None = None) -> "Connection":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            s.close()
            raise
        return cls(s)

    def send(self, obj, fds=()) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", fds))])
        else:
            self.sock.sendall(data)

    def recv(self):
        """The next message, or None at end of stream. Passed fds collect in .fds."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[:nl + 1]
                return json.loads(line)
            if len(self.buf) > MAX_LINE:
                raise RpcError("EPROTO", "message too long")
            fds = array.array("i")
            data, anc, _flags, _addr = self.sock.recvmsg(
                65536, socket.CMSG_SPACE(16 * fds.itemsize))
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                os.set_inheritable(fd, False)
            self.fds.extend(fds)
            if not data:
                return None
            self.buf += data

    def take_fds(self, n: int) -> list[int]:
        got, self.fds = self.fds[:n], self.fds[n:]
        return got

    def close_fds(self) -> None:
        """Close the descriptors received and not taken."""
        fds, self.fds = self.fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def call(self, method: str, _fds=(), **params):
        self.send({"id": 1, "method": method, "params": params}, fds=_fds)
        reply = self.recv()
        if reply is None:
            raise RpcError("EPIPE", "the other side closed the connection")
        if "error" in reply:
            raise RpcError(reply["error"].get("code", "ERROR"), reply["error"].get("message", ""))
        return reply.get("result")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def eventfd_poke(fd: int) -> None:
    """Signal the other end of an event-channel bridge (never raises)."""
    try:
        os.eventfd_write(fd, 1)
    except OSError:
        pass


def error_reply(req_id, code: str, message: str) -> dict:
    return {"id": req_id, "error": {"code": code, "message": message}}
