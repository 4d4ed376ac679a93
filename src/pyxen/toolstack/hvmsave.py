"""Save files of HVM domains: QEMU's own migration stream in pyxen's save file.

An HVM domain's state is QEMU's (its RAM, the emulated CPU and devices), so
its save file carries what QEMU writes for a migration (QMP ``migrate`` to
an ``fd:`` URI, the descriptor handed over with ``getfd``), cut in QEMU
records (type 5, docs/save-format.md) of at most CHUNK bytes, each with its
CRC, between the usual header (config with type "hvm", nr_pages, vcpus)
and the END record - so ``savefile.check_file`` refuses a truncated or
foreign file before anything is created, as for a PV one. Restore gives the
chunks back to a QEMU started with ``-incoming defer`` (QMP
``migrate-incoming``). Nothing is held whole in memory: chunks go through a
pipe between QEMU and the file.
"""
from __future__ import annotations

import fcntl
import os
import time
import zlib

from . import savefile
from .savefile import REC, END, R_END, SaveFileError, SaveWriter, _read_exact

R_QEMU = 5                  # a chunk of QEMU's migration stream
CHUNK = 1 << 20             # at most this many bytes per QEMU record
F_SETPIPE_SZ = 1031


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass
    return r, w


def wait_migration(qmp, timeout: float = 3600.0) -> dict:
    """Poll query-migrate until QEMU says completed (its reply) or failed
    (RuntimeError with QEMU's reason)."""
    deadline = time.monotonic() + timeout
    while True:
        st = qmp.command("query-migrate") or {}
        status = st.get("status")
        if status == "completed":
            return st
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"QEMU's migration {status}: {st.get('error-desc', '')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"QEMU's migration did not complete ({status})")
        time.sleep(0.02)


def save(qmp, out_fd: int, info: dict) -> dict:
    """QEMU (stopped) writes its migration stream; it goes to out_fd (taken,
    closed) as QEMU records between the header info and END."""
    r, w = _pipe()
    try:
        try:
            qmp.command("getfd", fdname="pyxen-save", _fds=(w,))
        finally:
            os.close(w)
        # QEMU's default bandwidth limit (32 MiB/s in 7.2) would make the save slow
        qmp.command("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        qmp.command("migrate", uri="fd:pyxen-save")
        with os.fdopen(out_fd, "wb", buffering=CHUNK) as f:
            wr = SaveWriter(f, info)
            stream = 0
            while True:
                data = os.read(r, CHUNK)       # EOF: QEMU closed its end (done or failed)
                if not data:
                    break
                wr.record(R_QEMU, data)
                stream += len(data)
            wait_migration(qmp)
            wr.end()
            f.flush()
            size = f.tell()
            try:
                os.ftruncate(f.fileno(), size)
                os.fsync(f.fileno())
            except OSError:
                pass
    finally:
        os.close(r)
    return {"bytes": size, "memory_bytes": stream}


class QemuStreamReader:
    """The QEMU records of a checked save file, in order, CRCs checked."""

    def __init__(self, path: str, fd: int):
        self.path = path
        self.header = savefile.check_file(path, fd)
        if self.header.config.get("type") != "hvm":
            raise SaveFileError(f"{path}: a PV domain's save file, not an HVM one")
        self.f = os.fdopen(fd, "rb")
        self.f.seek(self.header.data_offset)

    def chunks(self):
        records = 0
        while True:
            rtype, _, length, crc = REC.unpack(_read_exact(self.f, REC.size, "record"))
            if rtype == R_END:
                payload = _read_exact(self.f, END.size, "end")
                if zlib.crc32(payload) != crc or END.unpack(payload)[0] != records:
                    raise SaveFileError(f"{self.path}: damaged file (the end record does "
                                        "not match)")
                return
            if rtype != R_QEMU or length > CHUNK:
                raise SaveFileError(f"{self.path}: damaged file (record type {rtype} in an "
                                    "HVM save file)")
            data = _read_exact(self.f, length, "QEMU stream")
            if zlib.crc32(data) != crc:
                raise SaveFileError(f"{self.path}: QEMU stream record {records} is damaged "
                                    "(checksum)")
            records += 1
            yield data

    def close(self) -> None:
        self.f.close()


def restore(qmp, path: str, fd: int) -> dict:
    """Feed the save file on fd (taken) to QEMU waiting with -incoming
    defer; returns once QEMU has loaded it (the guest stays paused)."""
    reader = QemuStreamReader(path, fd)
    try:
        r, w = _pipe()
        try:
            qmp.command("getfd", fdname="pyxen-restore", _fds=(r,))
        finally:
            os.close(r)
        try:
            qmp.command("migrate-incoming", uri="fd:pyxen-restore")
            n = 0
            try:
                for data in reader.chunks():
                    view = memoryview(data)
                    while view:
                        k = os.write(w, view)
                        view = view[k:]
                    n += len(data)
            except BrokenPipeError:
                pass                          # QEMU gave up: wait_migration says why
        finally:
            os.close(w)                       # EOF: QEMU fails on a short stream
        wait_migration(qmp)
        return {"info": reader.header.info, "bytes": n}
    finally:
        reader.close()


def header(cfg, config: dict, extra: dict | None, qemu_version: dict) -> dict:
    """The save file's JSON header for the running DomainConfig cfg, with
    config (the dict to restore from: cfg's, or the one given to save)."""
    info = savefile.header_info(cfg.name, cfg.uuid, config, cfg.memory * 256, cfg.maxvcpus)
    info["device_model"] = {"qemu": qemu_version}
    info.update(extra or {})
    return info




# --- live migration (pyxen migrate of an HVM domain) -------------------------------------------
def send_stream(qmp, ch, info: dict, progress=None) -> int:
    """QEMU's migration stream over a migration Channel ch (relocation.py's
    connection): the stream header (flags: a stream), QEMU records, END
    (offset 0). QEMU migrates live when it runs (it stops the guest itself
    for the last part) and ends stopped (postmigrate). Returns the bytes of
    QEMU's stream; MigrationError / RuntimeError when it fails (QEMU then
    carries on as it was: the caller resumes it)."""
    from .migration import write_header
    from .savefile import write_record
    write_header(ch, info)
    r, w = _pipe()
    records = n = 0
    try:
        try:
            qmp.command("getfd", fdname="pyxen-migrate", _fds=(w,))
        finally:
            os.close(w)
        qmp.command("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
        qmp.command("migrate", uri="fd:pyxen-migrate")
        while True:
            data = os.read(r, CHUNK)
            if not data:
                break
            write_record(ch.write, R_QEMU, data)
            records += 1
            n += len(data)
            if progress is not None:
                progress(n)
    except BaseException:
        try:
            qmp.command("migrate_cancel")
        except Exception:
            pass
        raise
    finally:
        os.close(r)
    wait_migration(qmp, timeout=60)
    write_record(ch.write, R_END, END.pack(records, 0))
    return n


def receive_stream(qmp, ch) -> int:
    """The QEMU records of a migration stream on Channel ch (its header read
    already) into QEMU waiting with -incoming defer, up to END; returns
    once QEMU has loaded it (the guest stays paused)."""
    from .migration import MigrationError
    r, w = _pipe()
    try:
        qmp.command("getfd", fdname="pyxen-incoming", _fds=(r,))
    finally:
        os.close(r)
    n = records = 0
    try:
        qmp.command("migrate-incoming", uri="fd:pyxen-incoming")
        try:
            while True:
                rtype, _, length, crc = REC.unpack(ch.read_exact(REC.size, "record"))
                if rtype == R_END:
                    payload = ch.read_exact(END.size, "end")
                    if zlib.crc32(payload) != crc or END.unpack(payload)[0] != records:
                        raise MigrationError("damaged stream (the end record does not match)")
                    break
                if rtype != R_QEMU or length > CHUNK:
                    raise MigrationError(f"damaged stream (record type {rtype} in an HVM "
                                         "domain's stream)")
                data = ch.read_exact(length, "QEMU stream")
                if zlib.crc32(data) != crc:
                    raise MigrationError(f"QEMU stream record {records} is damaged (checksum)")
                records += 1
                view = memoryview(data)
                while view:
                    view = view[os.write(w, view):]
                n += length
        except BrokenPipeError:
            pass
    finally:
        os.close(w)
    wait_migration(qmp, timeout=60)
    return n
