"""xenstored's state on disk: a snapshot plus an append-only log.

``STATE`` (the ``--state`` file) is a JSON snapshot of the whole tree
(values, permissions, guests' watches), replaced atomically (temporary
file, fsync, rename, fsync of the directory).  ``STATE.log.<N>`` are logs
of the changes made since snapshot ``N`` was taken: a change costs an
append of the records describing the new state of the nodes it touched
(``XenStore.journal``), not a rewrite of the tree.

Log file format: frames of ``<u32 length><u32 crc32><payload>``; the
payload is a JSON array.  The first frame of a log is its header
``{"format": "pyxen-xenstore-log", "version": 1, "id": N}``; every other
frame is one batch of records (one group commit).  A frame whose length,
checksum or JSON is wrong ends the log: that is the torn tail of a write
cut by a crash, which nobody was told had succeeded (replies leave only
after the fsync that covers them).

Group commit: :meth:`StateLog.append` (under the store's lock) encodes the
records of a batch of requests; :meth:`StateLog.sync` (without it) writes
them and fsyncs once for the whole batch; the server sends the batch's
replies after that.

Compaction (:meth:`StateLog.begin_compaction`, under the lock, then
:meth:`StateLog.finish_compaction`, without it), when the log grew past
``max(compact_min, snapshot size)`` (``compact_min`` 1 MiB by default):

1. the current log ``N`` is synced and a new log ``N+1`` is created (its
   header fsynced) and receives all later appends;
2. the tree as of that moment is written as snapshot ``N+1``;
3. log ``N`` is deleted.

Loading reads the snapshot (its ``"log"`` field names its log, 0 for files
written before logs existed), then replays log ``N``, ``N+1``... while
they exist.  A crash between 1 and 2 leaves snapshot ``N`` with logs ``N``
and ``N+1`` (both replayed); between 2 and 3 a stale log ``N`` that is
ignored and removed.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import struct
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Optional, Union

from .core import format_perm, parse_perm
from .store import XenStore

__all__ = ["save_state", "load_state", "load_or_create", "StateLog", "log_path",
           "COMPACT_MIN"]

log = logging.getLogger("pyxen.xenstored")

PathLike = Union[str, os.PathLike]

_FRAME = struct.Struct("<II")
_MAX_FRAME = 1 << 30
LOG_FORMAT = "pyxen-xenstore-log"
#: compact when the log is larger than this and than the last snapshot
COMPACT_MIN = 1 << 20


def log_path(state: PathLike, log_id: int) -> Path:
    state = Path(state)
    return state.with_name(f"{state.name}.log.{log_id}")


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _write_atomic(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def save_state(store: XenStore, path: PathLike, log_id: int = 0) -> int:
    """Write ``store`` as a snapshot to ``path`` atomically and clear
    ``store.dirty``; returns the snapshot's size.  (Logs of an older
    snapshot are not removed: use :class:`StateLog` for a live store.)"""
    state = store.to_state()
    state["log"] = log_id
    data = json.dumps(state, separators=(",", ":")).encode()
    _write_atomic(Path(path), data)
    store.dirty = False
    return len(data)


# ------------------------------------------------------------ records

def _encode_record(rec) -> list:
    op = rec[0]
    if op == "P":
        return ["P", rec[1], base64.b64encode(rec[2]).decode("ascii"),
                [format_perm(p) for p in rec[3]]]
    if op == "S":
        return ["S", rec[1], [format_perm(p) for p in rec[2]]]
    return list(rec)


def _decode_record(item) -> tuple:
    if not isinstance(item, list) or not item or not isinstance(item[0], str):
        raise ValueError(f"bad log record {item!r}")
    op = item[0]
    if op == "P":
        _, path, value, perms = item
        return ("P", str(path), base64.b64decode(value, validate=True),
                tuple(parse_perm(p) for p in perms))
    if op == "S":
        return ("S", str(item[1]), tuple(parse_perm(p) for p in item[2]))
    if op == "D":
        return ("D", str(item[1]))
    if op == "O":
        return ("O", str(item[1]), [str(c) for c in item[2]])
    if op == "W+":
        _, domid, path, token, rel, pl, depth = item
        return ("W+", int(domid), str(path), str(token), bool(rel), int(pl),
                None if depth is None else int(depth))
    if op == "W-":
        return ("W-", int(item[1]), str(item[2]), str(item[3]))
    if op == "W0":
        return ("W0", int(item[1]))
    raise ValueError(f"unknown log record {op!r}")


def _frame(payload) -> bytes:
    data = json.dumps(payload, separators=(",", ":")).encode()
    return _FRAME.pack(len(data), zlib.crc32(data)) + data


def _read_frames(data: bytes):
    """(payload, end offset) of each intact frame; stops at a torn one."""
    off = 0
    while off + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, off)
        start = off + _FRAME.size
        end = start + length
        if length > _MAX_FRAME or end > len(data):
            return
        body = data[start:end]
        if zlib.crc32(body) != crc:
            return
        try:
            payload = json.loads(body)
        except ValueError:
            return
        yield payload, end
        off = end


def _replay_log(store: XenStore, path: Path, log_id: int) -> tuple[int, int, bool]:
    """Apply log ``log_id``; returns (records applied, bytes of intact
    frames, whether the file ended in a torn frame)."""
    data = path.read_bytes()
    frames = _read_frames(data)
    first = next(frames, None)
    if (first is None or not isinstance(first[0], dict)
            or first[0].get("format") != LOG_FORMAT or first[0].get("id") != log_id):
        raise ValueError(f"{path}: not log {log_id} of this state")
    good = first[1]
    count = 0
    for payload, end in frames:
        if not isinstance(payload, list):
            raise ValueError(f"{path}: bad frame at {good}")
        recs = [_decode_record(item) for item in payload]
        for rec in recs:
            store.apply_record(rec)
        count += len(recs)
        good = end
    return count, good, good < len(data)


def _load(path: Path, quotas: Optional[dict], soft_quotas: Optional[dict]):
    """(store, snapshot log id, ids of the logs replayed, stale log paths)."""
    with open(path, "rb") as f:
        state = json.loads(f.read())
    store = XenStore.from_state(state, quotas, soft_quotas)
    base = int(state.get("log", 0))
    replayed = []
    log_id = base
    while True:
        p = log_path(path, log_id)
        if not p.exists():
            break
        count, good, torn = _replay_log(store, p, log_id)
        if torn:
            log.warning("%s: torn record at byte %d ignored (an unacknowledged write "
                        "cut by a crash)", p, good)
        replayed.append(log_id)
        log_id += 1
    stale = [p for p in path.parent.glob(f"{path.name}.log.*")
             if p.name.rsplit(".", 1)[-1].isdigit()
             and int(p.name.rsplit(".", 1)[-1]) not in replayed]
    store._recount_memory()
    store.dirty = False
    return store, base, replayed, stale


def load_state(path: PathLike, quotas: Optional[dict] = None,
               soft_quotas: Optional[dict] = None) -> XenStore:
    """The state stored at ``path``: the snapshot with its logs replayed
    (the files are not changed)."""
    return _load(Path(path), quotas, soft_quotas)[0]


def load_or_create(path: Optional[PathLike], quotas: Optional[dict] = None,
                   soft_quotas: Optional[dict] = None) -> XenStore:
    """The stored state if ``path`` exists, else a fresh store."""
    if path is not None and os.path.exists(path):
        return load_state(path, quotas, soft_quotas)
    return XenStore(quotas, soft_quotas=soft_quotas)


# ---------------------------------------------------------- the live log

class StateLog:
    """The snapshot + log of one live store (see the module docstring).

    ``StateLog(path, store)`` takes over the files: it writes a snapshot of
    ``store`` (which should be what :func:`load_state` gave for ``path``),
    starts a fresh log and removes the old ones, then sets
    ``store.journal`` so the store records its changes.

    The owner drains ``store.journal`` into :meth:`append` while holding
    the store's lock, and calls :meth:`sync` (without it) before telling
    anyone those changes succeeded; ``durable_lsn`` is the ``store.op_seq``
    up to which everything is on disk.
    """

    def __init__(self, path: PathLike, store: XenStore, compact_min: int = COMPACT_MIN):
        self.path = Path(path)
        self.store = store
        self.compact_min = int(compact_min)
        self._buf: list[bytes] = []
        self._buf_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._appended_lsn = store.op_seq
        self.durable_lsn = store.op_seq
        self.fsyncs = 0
        self.bytes_written = 0
        self.log_bytes = 0
        self.snapshot_bytes = 0
        self._fd = -1
        self._header_bytes = 0
        old_ids = self._existing_ids()
        self.log_id = max([0, *old_ids]) + 1
        store.journal = None
        self._open_log(self.log_id)
        self.snapshot_bytes = save_state(store, self.path, self.log_id)
        for i in old_ids:
            self._unlink(log_path(self.path, i))
        store.journal = []

    # ------------------------------------------------------------ files

    def _existing_ids(self) -> list[int]:
        out = []
        for p in self.path.parent.glob(f"{self.path.name}.log.*"):
            tail = p.name.rsplit(".", 1)[-1]
            if tail.isdigit():
                out.append(int(tail))
        return sorted(out)

    @staticmethod
    def _unlink(p: Path) -> None:
        try:
            p.unlink()
        except FileNotFoundError:
            pass

    def _open_log(self, log_id: int) -> None:
        p = log_path(self.path, log_id)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                     0o600)
        header = _frame({"format": LOG_FORMAT, "version": 1, "id": log_id})
        os.write(fd, header)
        os.fsync(fd)
        _fsync_dir(self.path.parent if str(self.path.parent) else Path("."))
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self.log_bytes = self._header_bytes = len(header)

    # ---------------------------------------------------------- writing

    def drain(self) -> None:
        """Move the store's pending journal records into the write buffer
        (call with the store's lock held)."""
        store = self.store
        recs = store.journal
        if recs:
            store.journal = []
        self.append(recs or (), store.op_seq)

    def append(self, records, lsn: int) -> None:
        """Buffer one batch of records; ``lsn`` is the store's op_seq after
        them (call with the store's lock held)."""
        with self._buf_lock:
            if records:
                self._buf.append(_frame([_encode_record(r) for r in records]))
            self._appended_lsn = max(self._appended_lsn, lsn)

    @property
    def has_records(self) -> bool:
        """Does the current log hold changes (or are some on their way)?"""
        return self.log_bytes > self._header_bytes or bool(self._buf)

    @property
    def pending(self) -> bool:
        """Is anything appended not on disk yet?"""
        return self._appended_lsn > self.durable_lsn

    def sync(self) -> int:
        """Write what was appended and fsync it (once for all of it);
        returns the durable lsn.  Safe from any thread."""
        with self._io_lock:
            with self._buf_lock:
                data = b"".join(self._buf)
                self._buf.clear()
                lsn = self._appended_lsn
            if data:
                try:
                    if self._fd < 0:
                        raise OSError("xenstore state log is closed")
                    view = memoryview(data)
                    while view:
                        n = os.write(self._fd, view)
                        view = view[n:]
                    os.fsync(self._fd)
                except OSError:
                    # nothing of it counts: cut what was written, keep the
                    # records for the next attempt (their replies wait)
                    with self._buf_lock:
                        self._buf.insert(0, data)
                    if self._fd >= 0:
                        try:
                            os.ftruncate(self._fd, self.log_bytes)
                        except OSError:
                            pass
                    raise
                self.fsyncs += 1
                self.bytes_written += len(data)
                self.log_bytes += len(data)
            if lsn > self.durable_lsn:
                self.durable_lsn = lsn
            return self.durable_lsn

    # ------------------------------------------------------- compaction

    def wants_compaction(self) -> bool:
        return self.log_bytes > max(self.compact_min, self.snapshot_bytes)

    def begin_compaction(self) -> tuple[int, dict]:
        """Under the store's lock: sync the current log, start the next one
        and take the tree as it is now.  Then call
        :meth:`finish_compaction` (the lock may be released)."""
        self.drain()
        self.sync()
        with self._io_lock:
            self._open_log(self.log_id + 1)
            self.log_id += 1
        state = self.store.to_state()
        state["log"] = self.log_id
        return self.log_id, state

    def finish_compaction(self, job: tuple[int, dict]) -> None:
        """Write the snapshot taken by :meth:`begin_compaction` and drop
        the logs it makes redundant."""
        log_id, state = job
        data = json.dumps(state, separators=(",", ":")).encode()
        _write_atomic(self.path, data)
        self.snapshot_bytes = len(data)
        for i in self._existing_ids():
            if i < log_id:
                self._unlink(log_path(self.path, i))

    def compact(self) -> None:
        """Both steps at once (with the store's lock held)."""
        self.finish_compaction(self.begin_compaction())

    def close(self) -> None:
        """Final compaction (store lock held): the snapshot alone holds the
        state afterwards; the store stops journalling."""
        if self._fd < 0:
            return
        self.compact()
        self.store.journal = None
        with self._io_lock:
            os.close(self._fd)
            self._fd = -1
            # the snapshot holds everything: its (empty) log can go
            self._unlink(log_path(self.path, self.log_id))
