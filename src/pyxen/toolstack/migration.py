"""Live migration's stream (issue 16; docs/save-format.md, "Migration
stream"): a save file's header and records sent over a connection, with the
memory first and in rounds (pre-copy), then the state.

    header   as a save file's, flags = FLAG_STREAM
    rounds   PAGES records (any frames, in any order, a frame again when it
             changed), each round closed by a ROUND record
    STATE    once the domain is suspended (after the last dirty frames)
    VERIFY   (--debug) a CRC32 of every VERIFY_CHUNK frames, as the sender
             has them once suspended, frames that may change while it is
             suspended (hot frames, backends' mappings) counted as zeros:
             the receiver compares its own
    END      the number of records before it

`Sender` runs in the source's domain process (it has the memory and the
log-dirty mode, hv/dirtylog.py); `StreamReader` in the target's, as the
reader build_domain(restore=...) takes. pyxend on each side speaks the
hand-shake around them (daemon.py: READY, GO, DONE): the source is destroyed
only once the target says it runs.
"""
from __future__ import annotations

import json
import os
import select
import time
import zlib

from .savefile import (END, HEAD, K_ABSENT, K_DATA, K_ZERO, MAGIC, MAX_JSON, PAGE, PAGES,
                       R_END, R_PAGES, R_STATE, REC, RUN_PAGES, VERSION, SaveFileError,
                       data_extents, header_info, write_record)

FLAG_STREAM = 1
R_ROUND, R_VERIFY = 3, 4
IDLE_TIMEOUT = 120.0            # seconds the other end may stay silent
MAX_ROUNDS = 5                  # pre-copy rounds at most (libxc's max iterations)
DIRTY_THRESHOLD = 50            # fewer dirty frames than this: stop and copy
VERIFY_CHUNK = 256              # frames per checksum of a verify record (1 MiB)
_ZERO_CHUNK = bytes(VERIFY_CHUNK * PAGE)
_ZERO_CRC = zlib.crc32(_ZERO_CHUNK)
_ZERO_RUN = bytes(RUN_PAGES * PAGE)
_ZERO_PAGE_CRC = zlib.crc32(bytes(PAGE))


class MigrationError(Exception):
    """The migration cannot go on (the stream, the other end, the domain)."""


class Channel:
    """One end of a migration connection: a socket (rfd == wfd) or a pipe
    pair (ssh's standard input and output). Reads and writes whole buffers
    and gives up when the other end stays silent for `timeout` seconds."""

    def __init__(self, rfd: int, wfd: int | None = None, timeout: float = IDLE_TIMEOUT):
        self.rfd = rfd
        self.wfd = rfd if wfd is None else wfd
        self.timeout = timeout
        self.sent = 0
        self.received = 0

    def _wait(self, fd: int, write: bool, timeout: float | None = None) -> None:
        t = self.timeout if timeout is None else timeout
        r, w, _ = select.select([] if write else [fd], [fd] if write else [], [], t)
        if not (r or w):
            raise MigrationError(f"the other end was silent for {t:.0f} s")

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        while view:
            self._wait(self.wfd, True)
            try:
                n = os.write(self.wfd, view)
            except BrokenPipeError:
                raise MigrationError("the other end closed the connection") from None
            except OSError as e:
                raise MigrationError(f"sending: {e.strerror}") from None
            view = view[n:]
            self.sent += n

    def readinto(self, buf, what: str = "data") -> None:
        view = memoryview(buf).cast("B")
        while view:
            self._wait(self.rfd, False)
            try:
                n = os.readv(self.rfd, [view])
            except OSError as e:
                raise MigrationError(f"receiving: {e.strerror}") from None
            if n == 0:
                raise MigrationError(f"the stream ended early ({what}): the sender stopped")
            view = view[n:]
            self.received += n

    def read_exact(self, n: int, what: str = "data") -> bytes:
        buf = bytearray(n)
        self.readinto(buf, what)
        return bytes(buf)

    def readline(self, timeout: float | None = None, limit: int = 4096) -> str:
        """One hand-shake line ('' at end of stream), read a byte at a time
        so nothing after it is taken from the stream."""
        out = bytearray()
        while len(out) < limit:
            self._wait(self.rfd, False, timeout)
            try:
                b = os.read(self.rfd, 1)
            except OSError as e:
                raise MigrationError(f"receiving: {e.strerror}") from None
            if not b or b == b"\n":
                break
            out += b
        return out.decode(errors="replace")

    def say(self, line: str) -> None:
        self.write(line.encode() + b"\n")


# --- the header -------------------------------------------------------------------------------
def write_header(ch: Channel, info: dict) -> None:
    blob = json.dumps(info).encode()
    ch.write(HEAD.pack(MAGIC, VERSION, FLAG_STREAM, len(blob), zlib.crc32(blob)) + blob)


def read_header(ch: Channel) -> dict:
    """The stream's JSON header; MigrationError for anything but a pyxen
    migration stream of this version."""
    head = ch.read_exact(HEAD.size, "header")
    magic, version, flags, jlen, jcrc = HEAD.unpack(head)
    if magic != MAGIC:
        raise MigrationError("not a pyxen migration stream (bad magic)")
    if version != VERSION or not flags & FLAG_STREAM:
        raise MigrationError(f"migration stream version {version} flags {flags:#x}; this "
                             f"pyxen reads version {VERSION} streams")
    if jlen > MAX_JSON:
        raise MigrationError(f"corrupt header (length {jlen})")
    blob = ch.read_exact(jlen, "header")
    if zlib.crc32(blob) != jcrc:
        raise MigrationError("corrupt header (checksum)")
    try:
        info = json.loads(blob)
    except ValueError:
        raise MigrationError("corrupt header (not JSON)") from None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict) \
            or not isinstance(info.get("nr_pages"), int):
        raise MigrationError("corrupt header (fields)")
    return info


# --- sending ----------------------------------------------------------------------------------
class StreamWriter:
    def __init__(self, ch: Channel, track: bool = False):
        self.ch = ch
        self.records = 0
        # --debug: the CRC32 of each frame as last sent (a frame changed
        # since without being logged dirty is a log-dirty bug, reported)
        self.sent_crc: dict[int, int] | None = {} if track else None

    def record(self, rtype: int, *parts) -> None:
        write_record(self.ch.write, rtype, *parts)
        self.records += 1

    def pages(self, view, present, pfns, holes=None, progress=None) -> int:
        """Send frames pfns (ascending) in runs; holes: [start, end) byte
        ranges of the memfd known to read as zeros. Returns the frames sent
        as data."""
        data_frames = 0
        i, n = 0, len(pfns)
        ext_i = 0
        while i < n:
            pfn = pfns[i]
            here = present[pfn]
            j = i + 1
            while j < n and j - i < RUN_PAGES and pfns[j] == pfn + (j - i) \
                    and present[pfns[j]] == here:
                j += 1
            count = j - i
            end = pfn + count
            if not here:
                self.record(R_PAGES, PAGES.pack(pfn, count, K_ABSENT))
            else:
                hole = False
                if holes is not None:
                    while ext_i < len(holes) and holes[ext_i][1] <= pfn * PAGE:
                        ext_i += 1
                    hole = ext_i == len(holes) or holes[ext_i][0] >= end * PAGE
                data = b"" if hole else bytes(view[pfn * PAGE:end * PAGE])
                if self.sent_crc is not None:
                    for k in range(count):
                        self.sent_crc[pfn + k] = _ZERO_PAGE_CRC if hole else \
                            zlib.crc32(data[k * PAGE:(k + 1) * PAGE])
                if hole or data == _ZERO_RUN[:count * PAGE]:
                    self.record(R_PAGES, PAGES.pack(pfn, count, K_ZERO))
                else:
                    self.record(R_PAGES, PAGES.pack(pfn, count, K_DATA), data)
                    data_frames += count
            i = j
            if progress is not None and i & 0x3FF < RUN_PAGES:
                progress(i)
        return data_frames

    def round(self, number: int, frames: int) -> None:
        self.record(R_ROUND, PAGES.pack(number, frames, 0))

    def state(self, state: dict) -> None:
        self.record(R_STATE, json.dumps(state).encode())

    def verify(self, skip: list[int], crcs: list[int]) -> None:
        self.record(R_VERIFY, json.dumps({"chunk": VERIFY_CHUNK, "skip": skip,
                                          "crcs": crcs}).encode())

    def end(self) -> None:
        payload = END.pack(self.records, 0)
        self.ch.write(REC.pack(R_END, 0, len(payload), zlib.crc32(payload)) + payload)


def memory_crcs(view, fd: int, nr_pages: int, skip=()) -> list[int]:
    """A CRC32 of every VERIFY_CHUNK frames of the RAM, the frames in skip
    counted as zeros (the memfd's holes are not read: they are zeros)."""
    ext = data_extents(fd, nr_pages * PAGE)
    skip = sorted(skip)
    out = []
    ext_i = skip_i = 0
    for start in range(0, nr_pages, VERIFY_CHUNK):
        end = min(start + VERIFY_CHUNK, nr_pages)
        while ext_i < len(ext) and ext[ext_i][1] <= start * PAGE:
            ext_i += 1
        mine = []
        while skip_i < len(skip) and skip[skip_i] < end:
            if skip[skip_i] >= start:
                mine.append(skip[skip_i])
            skip_i += 1
        if (end - start == VERIFY_CHUNK and
                (ext_i == len(ext) or ext[ext_i][0] >= end * PAGE)):
            out.append(_ZERO_CRC)
        elif mine:
            chunk = bytearray(view[start * PAGE:end * PAGE])
            for pfn in mine:
                chunk[(pfn - start) * PAGE:(pfn - start + 1) * PAGE] = bytes(PAGE)
            out.append(zlib.crc32(chunk))
        else:
            out.append(zlib.crc32(view[start * PAGE:end * PAGE]))
    return out


class Sender:
    """The source's side, in its domain process: pre-copy rounds while the
    guest runs (precopy), then, once pyxend has suspended it, the last
    dirty frames and the state (final)."""

    def __init__(self, dom, ch: Channel, config: dict, extra: dict | None = None,
                 progress_path: str | None = None, debug: bool = False):
        from ..hv.dirtylog import DirtyLog
        self.dom = dom
        self.ch = ch
        self.w = StreamWriter(ch, track=debug)
        self.info = header_info(dom.name, str(dom.uuid), config, dom.nr_pages, len(dom.vcpus))
        self.info.update(extra or {})
        self.log = DirtyLog(dom)
        self.progress_path = progress_path
        self.debug = debug
        self.pending: list[int] = []
        self.rounds: list[dict] = []
        self._last_progress = 0.0
        self.status = {"phase": "precopy", "round": 0, "total": dom.nr_pages * PAGE,
                       "sent": 0, "frames": 0, "done": 0, "dirty": 0, "dirty_rate": 0.0}

    def _progress(self, force: bool = False, **kw) -> None:
        self.status.update(kw)
        self.status["sent"] = self.ch.sent
        now = time.monotonic()
        if self.progress_path is None or (not force and now - self._last_progress < 0.2):
            return
        self._last_progress = now
        tmp = self.progress_path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.status, f)
            os.replace(tmp, self.progress_path)
        except OSError:
            pass

    def precopy(self, live: bool = True) -> dict:
        dom = self.dom
        nr = dom.nr_pages
        t0 = time.monotonic()
        self.log.start()
        write_header(self.ch, self.info)
        holes_inv = data_extents(dom.ram.fd, nr * PAGE)
        self._progress(True, round=1, frames=nr)
        sent = self.w.pages(dom.ram.view, dom.mm.present, range(nr), holes_inv,
                            progress=lambda i: self._progress(done=i))
        self.w.round(1, nr)
        self.rounds.append({"round": 1, "frames": nr, "data": sent,
                            "seconds": time.monotonic() - t0})
        if not live:
            return self.summary()
        for number in range(2, MAX_ROUNDS + 1):
            t = time.monotonic()
            dirty = self.log.harvest()
            rate = len(dirty) / max(t - t0, 1e-3)
            if len(dirty) < DIRTY_THRESHOLD:
                self.pending = dirty
                self._progress(True, dirty=len(dirty), dirty_rate=rate)
                break
            t0 = t
            self._progress(True, round=number, frames=len(dirty), done=0, dirty=len(dirty),
                           dirty_rate=rate)
            sent = self.w.pages(dom.ram.view, dom.mm.present, dirty,
                                progress=lambda i: self._progress(done=i))
            self.w.round(number, len(dirty))
            self.rounds.append({"round": number, "frames": len(dirty), "data": sent,
                                "seconds": time.monotonic() - t, "dirty_rate": rate})
        else:
            self.pending = []           # the rest is harvested once suspended
        return self.summary()

    def final(self) -> dict:
        """The domain is suspended (every vCPU parked): its last dirty frames,
        its state, (--debug) the checksums, END."""
        from ..hv import savestate
        dom = self.dom
        if dom.suspended is None or not dom.wait_parked(10.0):
            raise savestate.SaveError("the domain is not suspended")
        t = time.monotonic()
        dirty = sorted(set(self.pending) | set(self.log.harvest()))
        self._progress(True, phase="stop-and-copy", round=len(self.rounds) + 1,
                       frames=len(dirty), done=0, dirty=len(dirty))
        sent = self.w.pages(dom.ram.view, dom.mm.present, dirty)
        self.w.round(len(self.rounds) + 1, len(dirty))
        self.rounds.append({"round": len(self.rounds) + 1, "frames": len(dirty), "data": sent,
                            "seconds": time.monotonic() - t, "final": True})
        self.w.state(savestate.capture(dom))
        if self.debug:
            self._report_missed()
            skip = sorted(self.log.volatile_frames())
            self.w.verify(skip, memory_crcs(dom.ram.view, dom.ram.fd, dom.nr_pages, skip))
        self.w.end()
        self.log.stop()
        self._progress(True, phase="sent")
        return self.summary()

    def _report_missed(self) -> None:
        """--debug: frames whose content differs from what was sent of them
        though nothing may write them now (log-dirty missed a write)."""
        import logging
        dom = self.dom
        view = dom.ram.view
        mm = dom.mm
        volatile = self.log.volatile_frames()
        for pfn, crc in sorted(self.w.sent_crc.items()):
            if pfn not in volatile and mm.present[pfn] and \
                    zlib.crc32(view[pfn * PAGE:(pfn + 1) * PAGE]) != crc:
                logging.getLogger("pyxen.migration").warning(
                    "frame %#x changed after it was sent: type %d count %d pinned %d "
                    "dom0 writers %d: %r", pfn, mm.ptype[pfn], mm.tcount[pfn],
                    mm.pinned[pfn], mm.frefs.writers(pfn) if mm.frefs else -1,
                    bytes(view[pfn * PAGE:pfn * PAGE + 32]))

    def abort(self) -> None:
        self.log.stop()

    def summary(self) -> dict:
        return {"rounds": self.rounds, "sent": self.ch.sent}


# --- receiving --------------------------------------------------------------------------------
class StreamReader:
    """The target's side, in its domain process, for build_domain(restore=):
    prepare(dom) takes the records (after the header, which pyxend read)
    into the new domain's memory until END; state() is the source's state."""

    path = "migration stream"

    def __init__(self, ch: Channel, debug: bool = False):
        self.ch = ch
        self.debug = debug
        self.records = 0
        self._state: dict | None = None
        self.verified = False

    def close(self) -> None:
        for fd in {self.ch.rfd, self.ch.wfd}:
            try:
                os.close(fd)
            except OSError:
                pass

    def _fail(self, msg: str):
        raise SaveFileError(f"{self.path}: {msg}")

    def prepare(self, dom) -> None:
        from ..hv.domain import punch_hole
        nr = dom.nr_pages
        view = dom.ram.view
        present = dom.mm.present
        seen = bytearray(nr)
        verify = None
        try:
            while True:
                rtype, _, length, crc = REC.unpack(self.ch.read_exact(REC.size, "record"))
                self.records += 1
                if rtype == R_END:
                    payload = self.ch.read_exact(END.size, "end")
                    if zlib.crc32(payload) != crc or END.unpack(payload)[0] != self.records - 1:
                        self._fail("the end record does not match")
                    break
                if rtype == R_PAGES:
                    if length < PAGES.size:
                        self._fail("damaged page record")
                    head = self.ch.read_exact(PAGES.size, "pages")
                    pfn, count, kind = PAGES.unpack(head)
                    if count < 1 or count > RUN_PAGES or pfn + count > nr:
                        self._fail(f"page run {pfn:#x}+{count} outside the domain's {nr} pages")
                    want = PAGES.size + (count * PAGE if kind == K_DATA else 0)
                    if kind not in (K_DATA, K_ZERO, K_ABSENT) or length != want:
                        self._fail(f"damaged page run at {pfn:#x}")
                    c = zlib.crc32(head)
                    if kind == K_DATA:
                        dest = view[pfn * PAGE:(pfn + count) * PAGE]
                        self.ch.readinto(dest, "memory")
                        c = zlib.crc32(dest, c)
                        dest.release()
                    elif any(seen[pfn:pfn + count]):    # never written: zero already
                        punch_hole(dom.ram.fd, pfn * PAGE, count * PAGE)
                    if c != crc:
                        self._fail(f"page run at {pfn:#x} is damaged (checksum)")
                    present[pfn:pfn + count] = (b"\x00" if kind == K_ABSENT else b"\x01") * count
                    seen[pfn:pfn + count] = b"\x01" * count
                    continue
                if length > MAX_JSON:
                    self._fail(f"record of {length} bytes")
                payload = self.ch.read_exact(length, "record")
                if zlib.crc32(payload) != crc:
                    self._fail(f"record type {rtype} is damaged (checksum)")
                if rtype == R_STATE:
                    self._state = json.loads(payload)
                elif rtype == R_VERIFY:
                    verify = json.loads(payload)
                elif rtype != R_ROUND:
                    self._fail(f"unknown record type {rtype}")
        except ValueError:
            self._fail("the state record is damaged")
        if seen.find(0) >= 0:
            self._fail(f"frame {seen.find(0):#x} never came")
        if self._state is None:
            self._fail("no state record")
        if verify is not None:
            crcs = verify.get("crcs")
            skip = [p for p in verify.get("skip", ()) if isinstance(p, int) and 0 <= p < nr]
            if verify.get("chunk") != VERIFY_CHUNK or not isinstance(crcs, list):
                self._fail("damaged verify record")
            mine = memory_crcs(view, dom.ram.fd, nr, skip)
            bad = [i for i, (a, b) in enumerate(zip(crcs, mine)) if a != b]
            if len(crcs) != len(mine) or bad:
                where = ", ".join(f"{i * VERIFY_CHUNK:#x}" for i in bad[:8])
                self._fail(f"verify: memory differs from the sender's in {len(bad)} of "
                           f"{len(mine)} chunks of {VERIFY_CHUNK} frames (at frames {where})")
            self.verified = True

    def state(self) -> dict:
        if self._state is None:
            self._fail("no state record")
        return self._state

    def load_memory(self, dom, progress=None) -> None:
        """prepare() has filled the memory and its present frames already."""
