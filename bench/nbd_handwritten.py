"""bench/nbd.py's baseline: pyxen's hand-written NBD client as it was before
QemuNbdImage moved to libnbd (src/pyxen/dom0/backends/nbd.py at 0cf2885),
kept so the same run can measure both. The original docstring follows.

Image formats other than raw (qcow2, qcow, vhd, qed) through QEMU's own
block layer: a `qemu-nbd` process (Debian's qemu-utils) serves the image on a
private Unix socket and blkback talks NBD to it. QEMU's format code is
well-kept and handles backing files, compression, snapshots and image
locking; pyxen does not parse these formats itself (Xen's qdisk backend
uses the same QEMU code).

The client speaks the fixed-newstyle handshake with NBD_OPT_GO and simple
replies (docs: the NBD protocol, proto.md)."""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

from pyxen.dom0.backends.image import ImageError, SECTOR

NBDMAGIC, IHAVEOPT = 0x4E42444D41474943, 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQ_MAGIC, SIMPLE_REPLY_MAGIC = 0x25609513, 0x67446698
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_GO = 7
REP_ACK, REP_INFO = 1, 3
INFO_EXPORT = 0
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
TFLAG_READ_ONLY, TFLAG_SEND_FLUSH, TFLAG_SEND_TRIM = 2, 4, 32
FORMATS = {"qcow2": "qcow2", "qcow": "qcow", "vhd": "vpc", "qed": "qed"}


class NbdError(OSError):
    pass


class HandwrittenNbdImage:
    """A disk image served by qemu-nbd; the same interface as RawImage."""
    is_block = False

    def __init__(self, path: str, fmt: str, readonly: bool, force: bool = False):
        self.path = path
        self.format = fmt
        self.readonly = readonly
        if not os.path.exists(path):
            raise ImageError(f"disk {path}: no such file or device")
        exe = shutil.which("qemu-nbd")
        if exe is None:
            raise ImageError(f"disk {path}: format {fmt} needs qemu-nbd (Debian: qemu-utils)")
        self.dir = tempfile.mkdtemp(prefix="pyxen-nbd-")
        sock_path = os.path.join(self.dir, "sock")
        args = [exe, "--format", FORMATS[fmt], "--socket", sock_path, "--persistent",
                "--shared", "1", "--cache", "writeback", "--discard", "unmap"]
        if readonly:
            args += ["--read-only"] + (["--force-share"] if force else [])
        args.append(path)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.lock = threading.Lock()
        self.sock = None
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise self._exited()
            if os.path.exists(sock_path):
                try:
                    self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    self.sock.connect(sock_path)
                    break
                except OSError:
                    self.sock.close()
                    self.sock = None
            if time.monotonic() > deadline:
                self._cleanup()
                raise ImageError(f"disk {path}: qemu-nbd did not start")
            time.sleep(0.02)
        try:
            self.size, self.tflags = self._handshake()
        except (OSError, ImageError) as e:
            # qemu-nbd may have made its socket before it failed to open the
            # image: then its own message says what is wrong
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.poll() is not None:
                raise self._exited() from None
            self._cleanup()
            raise ImageError(f"disk {path}: NBD handshake with qemu-nbd failed: {e}") from None
        self.sectors = self.size // SECTOR
        self.handle = 0

    # --- wire ----------------------------------------------------------------------------------------
    def _exited(self) -> ImageError:
        """The error for a qemu-nbd that exited, from what it printed."""
        err = self.proc.stderr.read().decode(errors="replace").strip()
        self._cleanup()
        if "lock" in err:
            return ImageError(f"disk {self.path} is already in use writable by another "
                              f"domain or program ({err.splitlines()[-1]})")
        return ImageError(f"disk {self.path}: cannot open it as {self.format}: "
                          f"{err.splitlines()[-1] if err else 'qemu-nbd failed'}")

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return bytes(buf)

    def _recv_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            k = self.sock.recv_into(view[got:])
            if k == 0:
                raise NbdError(5, "qemu-nbd closed the connection")
            got += k

    def _handshake(self) -> tuple[int, int]:
        magic, opt, hflags = struct.unpack(">QQH", self._recv(18))
        if magic != NBDMAGIC or opt != IHAVEOPT or not hflags & FLAG_FIXED_NEWSTYLE:
            raise ImageError("not a fixed-newstyle NBD server")
        self.sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | (hflags & FLAG_NO_ZEROES)))
        name = b""
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
        size = tflags = None
        while True:
            magic, _opt, rtype, length = struct.unpack(">QIII", self._recv(20))
            payload = self._recv(length) if length else b""
            if magic != OPT_REPLY_MAGIC:
                raise ImageError("bad option reply")
            if rtype & 0x80000000:
                raise ImageError(f"server refused the export: {payload.decode(errors='replace')}")
            if rtype == REP_INFO and struct.unpack(">H", payload[:2])[0] == INFO_EXPORT:
                size, tflags = struct.unpack(">QH", payload[2:12])
            if rtype == REP_ACK:
                break
        if size is None:
            raise ImageError("server did not say the export size")
        return size, tflags

    def _cmd(self, cmd: int, offset: int, length: int, payload=(), into=()) -> None:
        with self.lock:
            self.handle += 1
            h = self.handle
            hdr = struct.pack(">IHHQQI", REQ_MAGIC, 0, cmd, h, offset, length)
            self.sock.sendmsg([hdr, *payload])
            magic, err, rh = struct.unpack(">IIQ", self._recv(16))
            if magic != SIMPLE_REPLY_MAGIC or rh != h:
                raise NbdError(5, "NBD reply out of step")
            if err:
                raise NbdError(err, f"qemu-nbd: {os.strerror(err)}")
            for b in into:
                self._recv_into(b if isinstance(b, memoryview) else memoryview(b))

    # --- image interface -----------------------------------------------------------------------
    def readv(self, bufs: list, offset: int) -> None:
        self._cmd(CMD_READ, offset, sum(len(b) for b in bufs), into=bufs)

    def writev(self, bufs: list, offset: int) -> None:
        self._cmd(CMD_WRITE, offset, sum(len(b) for b in bufs), payload=bufs)

    def flush(self) -> None:
        self._cmd(CMD_FLUSH, 0, 0)

    def discard(self, offset: int, length: int) -> None:
        if self.tflags & TFLAG_SEND_TRIM:
            self._cmd(CMD_TRIM, offset, length)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_DISC, 0, 0, 0))
            except OSError:
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
