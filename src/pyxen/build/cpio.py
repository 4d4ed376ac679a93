"""Writer for "newc" (SVR4, magic ``070701``) cpio archives, as used by initramfs.

Each member is a 110-byte ASCII header (the magic and 13 eight-digit hex
fields), the NUL-terminated path name, padding to a multiple of 4 bytes
(counted from the start of the header), then the file data, padded to a
multiple of 4 bytes.  The archive ends with a member named ``TRAILER!!!``.

Paths are stored relative (no leading ``/``), which is what both the kernel's
initramfs unpacker and ``cpio -i`` expect.
"""

from __future__ import annotations

import gzip as _gzip
import stat
from dataclasses import dataclass

__all__ = ["CpioWriter", "CpioEntry", "TRAILER", "NEWC_MAGIC"]

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_MAX32 = 0xFFFFFFFF


def _pad4(n: int) -> int:
    return (-n) & 3


def _norm(path: str) -> str:
    if not isinstance(path, str):
        raise TypeError(f"cpio path must be str, not {type(path).__name__}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"cpio path {path!r} contains '..'")
    if not parts:
        raise ValueError(f"cpio path {path!r} names the archive root")
    name = "/".join(parts)
    if "\0" in name:
        raise ValueError(f"cpio path {path!r} contains a NUL byte")
    if name == TRAILER:
        raise ValueError(f"cpio path {TRAILER!r} is reserved for the archive trailer")
    return name


@dataclass(frozen=True)
class CpioEntry:
    """One archive member, as it will be written."""

    name: str
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    data: bytes
    rdevmajor: int = 0
    rdevminor: int = 0

    def encode(self) -> bytes:
        name = self.name.encode("utf-8") + b"\0"
        fields = (
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            len(self.data),
            0,  # devmajor (of the file system the file was on)
            0,  # devminor
            self.rdevmajor,
            self.rdevminor,
            len(name),
            0,  # check (only for the "070702" crc format)
        )
        for v in fields:
            if not 0 <= v <= _MAX32:
                raise ValueError(f"cpio field value {v} of {self.name!r} does not fit 32 bits")
        header = NEWC_MAGIC + b"".join(b"%08X" % v for v in fields)
        head = header + name
        return head + b"\0" * _pad4(len(head)) + self.data + b"\0" * _pad4(len(self.data))


class CpioWriter:
    """Collects members and produces a newc cpio archive with :meth:`finish`.

    Parent directories that were not added explicitly are created (mode
    0755) before their first child unless ``auto_parents=False``.
    Adding the same path twice raises :class:`ValueError`.
    """

    def __init__(self, *, uid: int = 0, gid: int = 0, mtime: int = 0, auto_parents: bool = True) -> None:
        self._entries: list[CpioEntry] = []
        self._names: dict[str, int] = {}  # name -> mode
        self._next_ino = 1
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.auto_parents = auto_parents
        self._finished = False

    # -- helpers ---------------------------------------------------------
    def _add(
        self,
        path: str,
        mode: int,
        data: bytes = b"",
        *,
        nlink: int = 1,
        uid: int | None = None,
        gid: int | None = None,
        mtime: int | None = None,
        rdev: tuple[int, int] = (0, 0),
    ) -> CpioEntry:
        if self._finished:
            raise RuntimeError("CpioWriter.finish() was already called")
        name = _norm(path)
        if name in self._names:
            raise ValueError(f"cpio path {name!r} added twice")
        if self.auto_parents:
            parts = name.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                pmode = self._names.get(parent)
                if pmode is None:
                    self._add(parent, stat.S_IFDIR | 0o755, nlink=2)
                elif not stat.S_ISDIR(pmode):
                    raise ValueError(f"cpio path {name!r}: parent {parent!r} is not a directory")
        entry = CpioEntry(
            name=name,
            ino=self._next_ino,
            mode=mode,
            uid=self.uid if uid is None else uid,
            gid=self.gid if gid is None else gid,
            nlink=nlink,
            mtime=self.mtime if mtime is None else mtime,
            data=bytes(data),
            rdevmajor=rdev[0],
            rdevminor=rdev[1],
        )
        self._next_ino += 1
        self._names[name] = mode
        self._entries.append(entry)
        return entry

    @staticmethod
    def _perm(mode: int, ftype: int) -> int:
        """Permission bits of *mode*, which may also carry the file type *ftype* (only)."""
        if mode < 0 or mode & ~0o177777 or stat.S_IFMT(mode) not in (0, ftype):
            raise ValueError(f"invalid mode {mode:#o} for this kind of cpio member")
        return mode & 0o7777

    # -- public API ------------------------------------------------------
    def add_dir(self, path: str, mode: int = 0o755, **kw) -> CpioEntry:
        """Add a directory (*mode* holds permission bits; S_IFDIR is implied)."""
        return self._add(path, stat.S_IFDIR | self._perm(mode, stat.S_IFDIR), nlink=2, **kw)

    def add_file(self, path: str, data: bytes, mode: int = 0o644, **kw) -> CpioEntry:
        """Add a regular file with contents *data*."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("file data must be bytes")
        return self._add(path, stat.S_IFREG | self._perm(mode, stat.S_IFREG), bytes(data), **kw)

    def add_symlink(self, path: str, target: str, **kw) -> CpioEntry:
        """Add a symbolic link *path* -> *target* (stored as the member's data)."""
        if not target:
            raise ValueError("symlink target must not be empty")
        return self._add(path, stat.S_IFLNK | 0o777, target.encode("utf-8"), **kw)

    def add_device(self, path: str, mode: int, major: int, minor: int, *, block: bool = False, **kw) -> CpioEntry:
        """Add a device node.

        *mode* may carry S_IFCHR or S_IFBLK; without a type bit the node is a
        character device, or a block device when ``block=True``.
        """
        ftype = stat.S_IFMT(mode)
        if ftype == 0:
            ftype = stat.S_IFBLK if block else stat.S_IFCHR
        elif ftype not in (stat.S_IFCHR, stat.S_IFBLK):
            raise ValueError(f"device mode {mode:#o} is neither a character nor a block device")
        if major < 0 or minor < 0:
            raise ValueError("device numbers must be non-negative")
        return self._add(path, ftype | self._perm(mode, ftype), rdev=(major, minor), **kw)

    def add_fifo(self, path: str, mode: int = 0o644, **kw) -> CpioEntry:
        """Add a named pipe."""
        return self._add(path, stat.S_IFIFO | self._perm(mode, stat.S_IFIFO), **kw)

    @property
    def entries(self) -> list[CpioEntry]:
        return list(self._entries)

    def __contains__(self, path: str) -> bool:
        return _norm(path) in self._names

    def finish(self, *, gzip: bool = False, compresslevel: int = 9) -> bytes:
        """Return the archive (gzip-compressed when *gzip* is true).  The writer is then closed."""
        out = bytearray()
        for e in self._entries:
            out += e.encode()
        out += CpioEntry(TRAILER, 0, 0, 0, 0, 1, 0, b"").encode()
        self._finished = True
        data = bytes(out)
        if gzip:
            return _gzip.compress(data, compresslevel=compresslevel, mtime=0)
        return data
