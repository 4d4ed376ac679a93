"""pyxen's save file (docs/save-format.md): write and read it, streaming.

    header   magic "PYXENSAV", version, flags, JSON length, JSON CRC32, 0
    JSON     {"name", "uuid", "config", "nr_pages", "vcpus", "saved_at", "pyxen"}
    records  type, flags, payload length, payload CRC32 (24 bytes) + payload:
             STATE  the hypervisor state (hv/savestate.py) as JSON
             PAGES  pfn, count, kind (data / zero / absent) [+ count pages]
             END    records before it, file offset where it starts

Memory goes out and comes back in runs of at most RUN_PAGES frames, read
from and into the guest's memfd mapping: the image is never in memory as a
whole. `check_file` reads only the header and the END record at the tail,
so a foreign or truncated file is refused before anything is created; each
record's CRC is checked again as it is read.
"""
from __future__ import annotations

import errno
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass

MAGIC = b"PYXENSAV"
VERSION = 1
HEAD = struct.Struct("<8sIIII8x")          # magic, version, flags, json length, json crc
REC = struct.Struct("<IIQI4x")             # type, flags, length, crc
PAGES = struct.Struct("<QII")              # pfn, count, kind
END = struct.Struct("<QQ")                 # records before END, END's offset
R_STATE, R_PAGES, R_END = 1, 2, 0xFFFF
K_DATA, K_ZERO, K_ABSENT = 0, 1, 2
RUN_PAGES = 16                              # 64 KiB per PAGES record at most
MAX_JSON = 16 << 20
PAGE = 4096
_ZERO_RUN = bytes(RUN_PAGES * PAGE)
END_SIZE = REC.size + END.size


class SaveFileError(Exception):
    """The file is not a pyxen save file this pyxen can restore."""


@dataclass
class SaveHeader:
    version: int
    info: dict                  # the JSON header
    data_offset: int            # first record

    @property
    def config(self) -> dict:
        return self.info["config"]


# --- writing ---------------------------------------------------------------------------
def write_record(write, rtype: int, *parts) -> None:
    """One record (its header, then the payload in parts) through write()."""
    crc = 0
    length = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
        length += len(p)
    write(REC.pack(rtype, 0, length, crc))
    for p in parts:
        write(p)

class SaveWriter:
    def __init__(self, f, info: dict):
        self.f = f
        self.records = 0
        blob = json.dumps(info).encode()
        f.write(HEAD.pack(MAGIC, VERSION, 0, len(blob), zlib.crc32(blob)))
        f.write(blob)

    def record(self, rtype: int, *parts) -> None:
        write_record(self.f.write, rtype, *parts)
        self.records += 1

    def state(self, state: dict) -> None:
        self.record(R_STATE, json.dumps(state).encode())

    def memory(self, view, present, progress=None, fd: int | None = None) -> int:
        """Every frame of the guest (view: its RAM; present[pfn] 1 or 0),
        in runs: absent (ballooned out), all zero, or data. fd: the RAM's
        memfd, whose holes (frames never written) are zero runs without
        being read. Returns the bytes of page data written."""
        nr = len(present)
        written = 0
        pfn = 0
        extents = data_extents(fd, nr * PAGE) if fd is not None else None
        ext_i = 0
        while pfn < nr:
            here = present[pfn]
            end = pfn + 1
            while end < nr and end - pfn < RUN_PAGES and present[end] == here:
                end += 1
            count = end - pfn
            if not here:
                self.record(R_PAGES, PAGES.pack(pfn, count, K_ABSENT))
            else:
                hole = False
                if extents is not None:
                    while ext_i < len(extents) and extents[ext_i][1] <= pfn * PAGE:
                        ext_i += 1
                    hole = ext_i == len(extents) or extents[ext_i][0] >= end * PAGE
                data = b"" if hole else bytes(view[pfn * PAGE:end * PAGE])   # 64 KiB at most
                if hole or data == _ZERO_RUN[:count * PAGE]:
                    self.record(R_PAGES, PAGES.pack(pfn, count, K_ZERO))
                else:
                    self.record(R_PAGES, PAGES.pack(pfn, count, K_DATA), data)
                    written += count * PAGE
                data = None
            pfn = end
            if progress is not None:
                progress(pfn, nr)
        return written

    def end(self) -> None:
        off = self.f.tell()
        payload = END.pack(self.records, off)
        self.f.write(REC.pack(R_END, 0, len(payload), zlib.crc32(payload)))
        self.f.write(payload)
        self.f.flush()


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """The [start, end) byte ranges of a file that hold data (SEEK_DATA /
    SEEK_HOLE); everything else reads as zeros. The whole file when the
    file system cannot tell."""
    out = []
    off = 0
    try:
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:          # no data past off
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            out.append((start, end))
            off = end
    except OSError:
        return [(0, size)]
    return out


def header_info(name: str, uuid: str, config: dict, nr_pages: int, vcpus: int) -> dict:
    from .. import __version__
    return {"name": name, "uuid": uuid, "config": config, "nr_pages": nr_pages,
            "vcpus": vcpus, "saved_at": time.time(), "pyxen": __version__}


def write_domain(dom, path: str | int, config: dict, progress=None,
                 extra: dict | None = None) -> dict:
    """Write a suspended domain (Domain.suspend, every vCPU parked) to path
    (a file name: created for its owner only, it holds the guest's memory;
    or a descriptor open for writing, which is taken and closed): the
    hypervisor state, then its memory straight from the memfd."""
    from ..hv import savestate
    if dom.suspended is None or not dom.wait_parked(10.0):
        raise savestate.SaveError("the domain is not suspended")
    state = savestate.capture(dom)          # before the file is created
    info = header_info(dom.name, str(dom.uuid), config, dom.nr_pages, len(dom.vcpus))
    info.update(extra or {})                # the toolstack's own (memory target, maximum)
    if isinstance(path, int):
        fd = path
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb", buffering=1 << 20) as f:
        w = SaveWriter(f, info)
        w.state(state)
        data = w.memory(dom.ram.view, dom.mm.present, progress, fd=dom.ram.fd)
        w.end()
        f.flush()
        size = f.tell()
        try:
            os.ftruncate(f.fileno(), size)      # a descriptor of a longer file
            os.fsync(f.fileno())
        except OSError:
            pass                                # not a regular file (a pipe)
    return {"bytes": size, "memory_bytes": data}


# --- reading ---------------------------------------------------------------------------
def _read_exact(f, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SaveFileError(f"the save file is truncated ({what})")
    return data


def read_header(f, path: str = "save file") -> SaveHeader:
    head = f.read(HEAD.size)
    if len(head) < len(MAGIC) or head[:len(MAGIC)] != MAGIC:
        raise SaveFileError(f"{path}: not a pyxen save file (bad magic)")
    if len(head) != HEAD.size:
        raise SaveFileError(f"{path}: the save file is truncated (header)")
    _, version, _flags, jlen, jcrc = HEAD.unpack(head)
    if version != VERSION:
        raise SaveFileError(f"{path}: save file version {version}; this pyxen reads "
                            f"version {VERSION}")
    if jlen > MAX_JSON:
        raise SaveFileError(f"{path}: corrupt header (length {jlen})")
    blob = _read_exact(f, jlen, "header")
    if zlib.crc32(blob) != jcrc:
        raise SaveFileError(f"{path}: corrupt header (checksum)")
    try:
        info = json.loads(blob)
    except ValueError:
        raise SaveFileError(f"{path}: corrupt header (not JSON)") from None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict) \
            or not isinstance(info.get("nr_pages"), int):
        raise SaveFileError(f"{path}: corrupt header (fields)")
    return SaveHeader(version, info, f.tell())


def check_file(path: str, fd: int | None = None) -> SaveHeader:
    """The header of a complete save file: magic, version, header checksum,
    and an END record at the tail that names the file's length. Reads only
    the two ends of the file (path; or fd, a descriptor of it, path then
    only names it in messages)."""
    try:
        f = open(path, "rb") if fd is None else os.fdopen(os.dup(fd), "rb")
    except OSError as e:
        raise SaveFileError(f"{path}: {e.strerror}") from None
    with f:
        f.seek(0)                   # a descriptor shares its offset with its dups
        hdr = read_header(f, path)
        size = os.fstat(f.fileno()).st_size
        if size < hdr.data_offset + END_SIZE:
            raise SaveFileError(f"{path}: the save file is truncated (no end record)")
        f.seek(size - END_SIZE)
        rtype, _, length, crc = REC.unpack(f.read(REC.size))
        payload = f.read(END.size)
        if rtype != R_END or length != END.size or zlib.crc32(payload) != crc:
            raise SaveFileError(f"{path}: the save file is truncated or damaged (no end record)")
        _, off = END.unpack(payload)
        if off != size - END_SIZE:
            raise SaveFileError(f"{path}: the save file is truncated or damaged "
                                f"(end record at {off}, file ends at {size})")
    return hdr


class SaveReader:
    """Reads a checked save file's records in order, for Domain.restore."""

    def __init__(self, path: str, fd: int | None = None):
        """path: the file, or with fd (a descriptor of it, taken) its name."""
        self.path = path
        self.header = check_file(path, fd)
        self.f = open(path, "rb") if fd is None else os.fdopen(fd, "rb")
        self.f.seek(self.header.data_offset)
        self.records = 0

    def close(self) -> None:
        self.f.close()

    def prepare(self, dom) -> None:
        """Nothing to do before state() for a file (a migration stream
        fills the memory first: migration.StreamReader)."""

    def _next(self):
        rtype, _, length, crc = REC.unpack(_read_exact(self.f, REC.size, "record"))
        self.records += 1
        return rtype, length, crc

    def state(self) -> dict:
        rtype, length, crc = self._next()
        if rtype != R_STATE or length > MAX_JSON:
            raise SaveFileError(f"{self.path}: damaged file (no state record: type {rtype})")
        blob = _read_exact(self.f, length, "state")
        if zlib.crc32(blob) != crc:
            raise SaveFileError(f"{self.path}: the state record is damaged (checksum)")
        try:
            return json.loads(blob)
        except ValueError:
            raise SaveFileError(f"{self.path}: the state record is damaged") from None

    def load_memory(self, dom, progress=None) -> None:
        """Fill dom's RAM from the PAGES records (until END); ballooned-out
        frames are given back to the host as they were."""
        from ..hv.domain import punch_hole
        nr = dom.nr_pages
        view = dom.ram.view
        mm = dom.mm
        seen = 0
        while True:
            rtype, length, crc = self._next()
            if rtype == R_END:
                payload = _read_exact(self.f, END.size, "end")
                if zlib.crc32(payload) != crc or END.unpack(payload)[0] != self.records - 1:
                    raise SaveFileError(f"{self.path}: damaged file (the end record does "
                                        "not match)")
                break
            if rtype != R_PAGES or length < PAGES.size:
                raise SaveFileError(f"{self.path}: damaged record (type {rtype})")
            head = _read_exact(self.f, PAGES.size, "pages")
            pfn, count, kind = PAGES.unpack(head)
            if count < 1 or count > RUN_PAGES or pfn + count > nr or pfn != seen:
                raise SaveFileError(f"{self.path}: damaged page run {pfn:#x}+{count} (out of "
                                    f"order or outside the domain's {nr} pages)")
            want = PAGES.size + (count * PAGE if kind == K_DATA else 0)
            if kind not in (K_DATA, K_ZERO, K_ABSENT) or length != want:
                raise SaveFileError(f"{self.path}: damaged page run at {pfn:#x}")
            c = zlib.crc32(head)
            if kind == K_DATA:
                dest = view[pfn * PAGE:(pfn + count) * PAGE]
                if self.f.readinto(dest) != len(dest):
                    raise SaveFileError(f"{self.path}: the save file is truncated (memory)")
                c = zlib.crc32(dest, c)
                dest.release()
            elif kind == K_ABSENT:
                for p in range(pfn, pfn + count):
                    mm.present[p] = 0
                punch_hole(dom.ram.fd, pfn * PAGE, count * PAGE)
            if c != crc:
                raise SaveFileError(f"{self.path}: page run at {pfn:#x} is damaged (checksum)")
            seen = pfn + count
            if progress is not None:
                progress(seen, nr)
        if seen != nr:
            raise SaveFileError(f"{self.path}: memory ends at frame {seen:#x} of {nr:#x}")
