"""Disk images behind blkback: raw files and host block devices, opened
with Linux's open-file-description locks (like QEMU's image locking) so that
one image is never writable in two domains at once, nor in a domain and any
other pyxen process, unless the administrator forces it."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import struct

SECTOR = 512
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
BLKGETSIZE64 = 0x80081272
BLKDISCARD = 0x1277
F_OFD_SETLK = 37
QCOW_MAGIC = b"QFI\xfb"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


class ImageError(Exception):
    """A disk image cannot be used (the message names it and says why)."""


def _ofd_lock(fd: int, exclusive: bool) -> bool:
    # struct flock: l_type, l_whence (short), l_start, l_len (off_t), l_pid (int)
    lk = struct.pack("hhqqi4x", fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK, 0, 0, 0, 0)
    try:
        fcntl.fcntl(fd, F_OFD_SETLK, lk)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


class RawImage:
    """A raw image file or a host block device."""
    format = "raw"

    def __init__(self, path: str, readonly: bool, force: bool = False):
        self.path = path
        self.readonly = readonly
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ImageError(f"disk {path}: no such file or device") from None
        except OSError as e:
            raise ImageError(f"disk {path}: {e.strerror}") from None
        self.is_block = stat.S_ISBLK(st.st_mode)
        if not (self.is_block or stat.S_ISREG(st.st_mode)):
            raise ImageError(f"disk {path}: not a regular file or a block device")
        try:
            self.fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        except OSError as e:
            raise ImageError(f"disk {path}: cannot open {'read-only' if readonly else 'read-write'}:"
                             f" {e.strerror}") from None
        self.locked = False
        if not force and not self.lock():
            os.close(self.fd)
            self.fd = -1
            what = "writable" if not readonly else "read-only"
            raise ImageError(f"disk {path} is already in use writable by another domain or "
                             f"program; cannot attach it {what} (force with access 'w!' or "
                             f"'rw!')")
        if self.is_block:
            buf = fcntl.ioctl(self.fd, BLKGETSIZE64, b"\0" * 8)
            self.size = struct.unpack("<Q", buf)[0]
        else:
            self.size = st.st_size
        self.sectors = self.size // SECTOR

    def lock(self) -> bool:
        """Take the image's lock (exclusive when writable); False while
        another domain or program holds it."""
        if not self.locked:
            self.locked = _ofd_lock(self.fd, exclusive=not self.readonly)
        return self.locked

    def readv(self, bufs: list, offset: int) -> None:
        want = sum(len(b) for b in bufs)
        got = os.preadv(self.fd, bufs, offset)
        if got < want:                            # a short read past EOF reads zeros
            skip = got
            for b in bufs:
                if skip >= len(b):
                    skip -= len(b)
                    continue
                b[skip:] = bytes(len(b) - skip)
                skip = 0

    def writev(self, bufs: list, offset: int) -> None:
        want = sum(len(b) for b in bufs)
        done = os.pwritev(self.fd, bufs, offset)
        if done != want:
            raise OSError(errno.EIO, f"short write ({done} of {want} bytes)")

    def flush(self) -> None:
        os.fdatasync(self.fd)

    def discard(self, offset: int, length: int) -> None:
        if self.is_block:
            fcntl.ioctl(self.fd, BLKDISCARD, struct.pack("<QQ", offset, length))
            return
        if _libc.fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           offset, length) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_image(path: str, fmt: str, readonly: bool, force: bool = False):
    """Open a disk target in the format the disk spec names."""
    if fmt == "raw":
        return RawImage(path, readonly, force)
    if fmt in ("qcow2", "qcow", "vhd", "qed"):
        from .nbd import QemuNbdImage
        return QemuNbdImage(path, fmt, readonly, force)
    raise ImageError(f"disk {path}: pyxen cannot read format {fmt!r}")
