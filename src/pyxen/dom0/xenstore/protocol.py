"""The xenstore wire protocol (xen/io/xs_wire.h).

Every message is a 16-byte header -- type, req_id, tx_id, len, each a
little-endian u32 -- followed by ``len`` (at most 4096) payload bytes,
mostly NUL-terminated strings.  Replies echo req_id and tx_id; failures
come back as type ERROR carrying the errno name; watch events are
unsolicited WATCH_EVENT messages with req_id = tx_id = 0.

:class:`Connection` is one client's endpoint: feed it received bytes with
:meth:`Connection.receive`, then drain replies and watch events with
:meth:`~Connection.peek_output` / :meth:`~Connection.consume_output` (or
:meth:`~Connection.take_output`).  It does no I/O itself, so the socket
server and the ring transport share it.
"""
from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Optional

from ...hv import abi
from ...hv.abi import (XS_CONTROL, XS_DEBUG, XS_DIRECTORY, XS_READ, XS_GET_PERMS,  # noqa: F401
                       XS_WATCH, XS_UNWATCH, XS_TRANSACTION_START, XS_TRANSACTION_END,
                       XS_INTRODUCE, XS_RELEASE, XS_GET_DOMAIN_PATH, XS_WRITE, XS_MKDIR, XS_RM,
                       XS_SET_PERMS, XS_WATCH_EVENT, XS_ERROR, XS_IS_DOMAIN_INTRODUCED,
                       XS_RESUME, XS_SET_TARGET, XS_RESET_WATCHES, XS_DIRECTORY_PART,
                       XS_TYPE_COUNT, XENSTORE_PAYLOAD_MAX as PAYLOAD_MAX)
from .core import XenStoreError, format_perm
from .store import XenStore

__all__ = [
    "XS_CONTROL", "XS_DEBUG", "XS_DIRECTORY", "XS_READ", "XS_GET_PERMS",
    "XS_WATCH", "XS_UNWATCH", "XS_TRANSACTION_START", "XS_TRANSACTION_END",
    "XS_INTRODUCE", "XS_RELEASE", "XS_GET_DOMAIN_PATH", "XS_WRITE",
    "XS_MKDIR", "XS_RM", "XS_SET_PERMS", "XS_WATCH_EVENT", "XS_ERROR",
    "XS_IS_DOMAIN_INTRODUCED", "XS_RESUME", "XS_SET_TARGET",
    "XS_RESET_WATCHES", "XS_DIRECTORY_PART", "XS_TYPE_COUNT",
    "TYPE_NAMES", "HEADER", "HEADER_SIZE",
    "Message", "ProtocolError", "Parser", "Connection",
    "encode_message", "split_strings", "dispatch",
]

log = logging.getLogger("pyxen.xenstored")

# the message types are abi.io_xs_wire's (XS_RESTRICT, 20, was removed)

TYPE_NAMES = {
    XS_CONTROL: "CONTROL", XS_DIRECTORY: "DIRECTORY", XS_READ: "READ",
    XS_GET_PERMS: "GET_PERMS", XS_WATCH: "WATCH", XS_UNWATCH: "UNWATCH",
    XS_TRANSACTION_START: "TRANSACTION_START",
    XS_TRANSACTION_END: "TRANSACTION_END", XS_INTRODUCE: "INTRODUCE",
    XS_RELEASE: "RELEASE", XS_GET_DOMAIN_PATH: "GET_DOMAIN_PATH",
    XS_WRITE: "WRITE", XS_MKDIR: "MKDIR", XS_RM: "RM",
    XS_SET_PERMS: "SET_PERMS", XS_WATCH_EVENT: "WATCH_EVENT",
    XS_ERROR: "ERROR", XS_IS_DOMAIN_INTRODUCED: "IS_DOMAIN_INTRODUCED",
    XS_RESUME: "RESUME", XS_SET_TARGET: "SET_TARGET",
    XS_RESET_WATCHES: "RESET_WATCHES", XS_DIRECTORY_PART: "DIRECTORY_PART",
}

HEADER = abi.checked_struct("<IIII", abi.XsdSockmsg, "type req_id tx_id len")   # xsd_sockmsg
HEADER_SIZE = HEADER.size

# requests that ignore tx_id / need a privileged caller
_NO_TX = frozenset({XS_WATCH, XS_UNWATCH})
_PRIVILEGED = frozenset({XS_CONTROL, XS_INTRODUCE, XS_RELEASE,
                         XS_IS_DOMAIN_INTRODUCED, XS_RESUME, XS_SET_TARGET})


class ProtocolError(Exception):
    """The peer broke the framing (e.g. payload longer than 4096 bytes); the
    connection cannot continue."""


@dataclass
class Message:
    type: int
    req_id: int
    tx_id: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return encode_message(self.type, self.req_id, self.tx_id, self.payload)


def encode_message(msg_type: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    return HEADER.pack(msg_type, req_id, tx_id, len(payload)) + bytes(payload)


def split_strings(payload: bytes) -> list[bytes]:
    """The NUL-terminated strings of a payload (bytes after the last NUL
    are ignored, as xenstored does)."""
    return payload.split(b"\0")[:-1]


class Parser:
    """Incremental framing: bytes in, complete :class:`Message` s out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._len: Optional[int] = None     # payload length once header seen

    def wanted(self) -> int:
        """Bytes still needed to finish the message being received."""
        if self._len is None:
            return HEADER_SIZE - len(self._buf)
        return HEADER_SIZE + self._len - len(self._buf)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()
        self._len = None

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out = []
        while True:
            if self._len is None:
                if len(self._buf) < HEADER_SIZE:
                    break
                length = HEADER.unpack_from(self._buf)[3]
                if length > PAYLOAD_MAX:
                    raise ProtocolError(f"payload of {length} bytes")
                self._len = length
            end = HEADER_SIZE + self._len
            if len(self._buf) < end:
                break
            t, req, tx, _ = HEADER.unpack_from(self._buf)
            out.append(Message(t, req, tx, bytes(self._buf[HEADER_SIZE:end])))
            del self._buf[:end]
            self._len = None
        return out


def _str(b: bytes) -> str:
    return b.decode("latin-1")


def _onearg(payload: bytes) -> str:
    if not payload or payload.find(b"\0") != len(payload) - 1:
        raise XenStoreError("EINVAL", "expected one argument")
    return _str(payload[:-1])


def _args(payload: bytes, n: int) -> list[str]:
    strs = split_strings(payload)
    if len(strs) < n:
        raise XenStoreError("EINVAL", f"expected {n} arguments")
    return [_str(s) for s in strs]


def _atoi(text: str) -> int:
    digits = ""
    for ch in text.strip():
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    return int(digits) if digits else 0


_OK = b"OK\0"


def _strings(items) -> bytes:
    return b"".join(s.encode("latin-1") + b"\0" for s in items)


def dispatch(store: XenStore, client, msg: Message) -> tuple[int, bytes]:
    """Perform one request; returns the reply (type, payload).  Never raises
    for request errors: they become ERROR replies."""
    try:
        return msg.type, _dispatch(store, client, msg)
    except XenStoreError as e:
        return XS_ERROR, e.name.encode() + b"\0"


def _dispatch(store: XenStore, c, msg: Message) -> bytes:
    t, p, tx = msg.type, msg.payload, msg.tx_id
    if t not in TYPE_NAMES or t in (XS_WATCH_EVENT, XS_ERROR):
        raise XenStoreError("ENOSYS", f"unknown message type {t}")
    if t in _PRIVILEGED and not c.privileged:
        raise XenStoreError("EACCES", "privileged operation")
    if t in _NO_TX:
        tx = 0
    elif tx and tx not in c.transactions:
        raise XenStoreError("ENOENT", f"no transaction {tx}")

    if t == XS_READ:
        return store.read(c, _onearg(p), tx)
    if t == XS_WRITE:
        i = p.find(b"\0")
        if i < 0:
            raise XenStoreError("EINVAL", "no path")
        store.write(c, _str(p[:i]), p[i + 1:], tx)
        return _OK
    if t == XS_MKDIR:
        store.mkdir(c, _onearg(p), tx)
        return _OK
    if t == XS_RM:
        store.rm(c, _onearg(p), tx)
        return _OK
    if t == XS_DIRECTORY:
        return _strings(store.directory(c, _onearg(p), tx))
    if t == XS_DIRECTORY_PART:
        strs = split_strings(p)
        if len(strs) != 2:
            raise XenStoreError("EINVAL", "expected path and offset")
        return store.directory_part(c, _str(strs[0]), _atoi(_str(strs[1])), tx)
    if t == XS_GET_PERMS:
        return _strings(format_perm(x) for x in store.get_perms(c, _onearg(p), tx))
    if t == XS_SET_PERMS:
        args = _args(p, 2)
        store.set_perms(c, args[0], args[1:], tx)
        return _OK
    if t == XS_WATCH:
        args = _args(p, 2)
        depth = None
        if len(args) > 2 and args[2]:
            if not args[2].isdigit() or not args[2].isascii():
                raise XenStoreError("EINVAL", "bad depth")
            depth = int(args[2])
        store.watch(c, args[0], args[1], depth)
        return _OK
    if t == XS_UNWATCH:
        args = _args(p, 2)
        store.unwatch(c, args[0], args[1])
        return _OK
    if t == XS_TRANSACTION_START:
        if tx:
            raise XenStoreError("EBUSY", "nested transaction")
        return str(store.transaction_start(c)).encode() + b"\0"
    if t == XS_TRANSACTION_END:
        arg = _onearg(p)
        if arg not in ("T", "F"):
            raise XenStoreError("EINVAL", "expected T or F")
        store.transaction_end(c, tx, arg == "T")
        return _OK
    if t == XS_INTRODUCE:
        args = _args(p, 3)
        store.introduce(c, args[0], args[1], args[2])
        return _OK
    if t == XS_RELEASE:
        store.release(c, _onearg(p))
        return _OK
    if t == XS_RESUME:
        store.resume(c, _onearg(p))
        return _OK
    if t == XS_GET_DOMAIN_PATH:
        return store.get_domain_path(c, _onearg(p)).encode() + b"\0"
    if t == XS_IS_DOMAIN_INTRODUCED:
        return b"T\0" if store.is_domain_introduced(c, _onearg(p)) else b"F\0"
    if t == XS_SET_TARGET:
        args = _args(p, 2)
        store.set_target(c, args[0], args[1])
        return _OK
    if t == XS_RESET_WATCHES:
        store.reset_watches(c)
        return _OK
    if t == XS_CONTROL:
        args = _args(p, 1)
        return store.control(c, args).encode("latin-1") + b"\0"
    raise XenStoreError("ENOSYS", f"unhandled message type {t}")


class Connection:
    """One client of the store, speaking the wire protocol.

    Input: :meth:`feed` frames received bytes into requests without
    performing them; :meth:`process_pending` performs up to a given number
    of them (a transport's turn); :meth:`receive` does both for everything.

    Output: replies and watch events are queued, events after the reply of
    the request that caused them.  When ``durable`` is set (a callable
    giving the journal position that is on disk), an entry leaves only once
    the changes it may reflect are durable (group commit).  At most
    ``max_events`` watch events wait in the queue, an event identical to one
    still queued is not queued twice, events to an unprivileged domain over
    its memory quota are dropped (as xenstored drops them), and for such a
    domain an event not yet started is dropped after ``event_timeout``
    seconds (xenstored's watch-event timeout, 20 s).  An event counts as an
    outstanding request of the unprivileged client whose request caused it
    until it leaves the queue.
    """

    DEFAULT_MAX_EVENTS = 1024
    #: xenstored's --timeout watch-event default (seconds)
    WATCH_EVENT_TIMEOUT = 20.0

    def __init__(self, store: XenStore, domid: int = 0,
                 privileged: Optional[bool] = None, *,
                 max_events: Optional[int] = None, name: str = "",
                 event_timeout: Optional[float] = None):
        self.store = store
        self.name = name or f"dom{domid}"
        self.client = store.new_client(domid, privileged, sink=self._on_event)
        self.parser = Parser()
        self.max_events = self.DEFAULT_MAX_EVENTS if max_events is None else max_events
        if event_timeout is None and not self.client.privileged:
            event_timeout = self.WATCH_EVENT_TIMEOUT
        self.event_timeout = event_timeout or None
        #: () -> journal position on disk, or None: no holding back
        self.durable: Optional[Callable[[], int]] = None
        self._in: deque = deque()           # framed requests not performed yet
        self._in_bytes = 0
        # output entries: [data, is_reply, event key, lsn, origin, deadline]
        self._out: deque = deque()
        self._out_off = 0                   # bytes of _out[0] already sent
        self._out_bytes = 0
        self.replies_queued = 0
        self.events_queued = 0
        self._timed_events = 0
        self._event_keys: Counter = Counter()
        self._deferred: Optional[list] = None
        self.dropped_events = 0
        self.requests = 0                   # requests performed (for tests, stats)
        self.closed = False

    @property
    def domid(self) -> int:
        return self.client.domid

    # -------------------------------------------------------------- input

    def wanted(self) -> int:
        """Bytes needed to complete the message being received."""
        return self.parser.wanted()

    def feed(self, data: bytes) -> int:
        """Frame received bytes into requests (performed later by
        :meth:`process_pending`); returns how many requests are waiting.
        Raises :class:`ProtocolError` on a framing violation."""
        if self.closed:
            return 0
        for m in self.parser.feed(data):
            self._in.append(m)
            self._in_bytes += HEADER_SIZE + len(m.payload)
        return len(self._in)

    @property
    def pending_requests(self) -> int:
        return len(self._in)

    @property
    def input_size(self) -> int:
        """Bytes received and not performed yet (framed or not)."""
        return self._in_bytes + self.parser.buffered

    def process_pending(self, limit: int = 1 << 62) -> int:
        """Perform up to ``limit`` waiting requests; returns how many."""
        n = 0
        while self._in and n < limit and not self.closed:
            m = self._in.popleft()
            self._in_bytes -= HEADER_SIZE + len(m.payload)
            self.process(m)
            n += 1
        return n

    def receive(self, data: bytes) -> int:
        """Frame and perform every complete request in ``data``; returns
        how many were handled.  Raises :class:`ProtocolError` on a framing
        violation."""
        if self.closed:
            return 0
        self.feed(data)
        return self.process_pending()

    def process(self, msg: Message) -> None:
        self._deferred = []
        store = self.store
        prev_origin, store.origin = store.origin, self.client
        try:
            try:
                rtype, payload = dispatch(store, self.client, msg)
            except Exception:
                log.exception("%s: internal error handling %s", self.name,
                              TYPE_NAMES.get(msg.type, msg.type))
                rtype, payload = XS_ERROR, b"EIO\0"
        finally:
            store.origin = prev_origin
            deferred, self._deferred = self._deferred, None
        self.requests += 1
        if len(payload) > PAYLOAD_MAX:
            rtype, payload = XS_ERROR, b"E2BIG\0"
        if store.logging_enabled and log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s %r -> %s %r", self.name,
                      TYPE_NAMES.get(msg.type, msg.type), msg.payload[:80],
                      TYPE_NAMES.get(rtype, rtype), payload[:80])
        self._queue(encode_message(rtype, msg.req_id, msg.tx_id, payload), True, None, None)
        for path, token in deferred:
            self._queue_event(path, token, self.client)

    def _on_event(self, path: str, token: str) -> None:
        if self._deferred is not None:
            self._deferred.append((path, token))
        else:
            self._queue_event(path, token, self.store.origin)

    def _queue_event(self, path: str, token: str, origin) -> None:
        if self.closed:
            return
        payload = path.encode("latin-1") + b"\0" + token.encode("latin-1") + b"\0"
        if len(payload) > PAYLOAD_MAX:
            return
        key = payload if path[:1] != "@" else None
        if key is not None and self._event_keys[key]:
            return
        size = HEADER_SIZE + len(payload)
        if (self.events_queued >= self.max_events
                or (not self.client.privileged
                    and self.store.over_memory_quota(self.client.domid, size))):
            self.dropped_events += 1
            if self.dropped_events == 1 or self.dropped_events % 1000 == 0:
                log.warning("%s: watch event queue full, dropped %d events",
                            self.name, self.dropped_events)
            return
        if key is not None:
            self._event_keys[key] += 1
        if origin is not None and origin.privileged:
            origin = None
        if origin is not None:
            origin.events_pending += 1
        deadline = (time.monotonic() + self.event_timeout
                    if self.event_timeout is not None else None)
        self._queue(encode_message(XS_WATCH_EVENT, 0, 0, payload), False, key, origin,
                    deadline)

    def _queue(self, data: bytes, is_reply: bool, key, origin, deadline=None) -> None:
        self._out.append([data, is_reply, key, self.store.current_lsn(), origin, deadline])
        self._out_bytes += len(data)
        self.client.queued_bytes += len(data)
        if is_reply:
            self.replies_queued += 1
        else:
            self.events_queued += 1
            if deadline is not None:
                self._timed_events += 1

    def _forget(self, entry) -> None:
        """An output entry leaves the queue (sent, dropped or reset)."""
        data, is_reply, key, _lsn, origin, deadline = entry
        self._out_bytes -= len(data)
        self.client.queued_bytes -= len(data)
        if is_reply:
            self.replies_queued -= 1
            return
        self.events_queued -= 1
        if deadline is not None:
            self._timed_events -= 1
        if key is not None:
            self._event_keys[key] -= 1
            if not self._event_keys[key]:
                del self._event_keys[key]
        if origin is not None:
            origin.events_pending -= 1

    # ------------------------------------------------------------- output

    def has_output(self) -> bool:
        """Anything queued (durable or not)?"""
        return bool(self._out)

    def has_ready_output(self) -> bool:
        """Anything that may leave now?"""
        if not self._out:
            return False
        if self.durable is None or self._out_off:
            return True
        return self._out[0][3] <= self.durable()

    @property
    def output_size(self) -> int:
        return self._out_bytes - self._out_off

    def peek_output(self, limit: int) -> bytes:
        """Up to ``limit`` queued bytes that may leave now, without removing
        them."""
        parts = []
        need = limit
        off = self._out_off
        durable = self.durable() if self.durable is not None else None
        for entry in self._out:
            if need <= 0:
                break
            if durable is not None and not off and entry[3] > durable:
                break
            chunk = entry[0][off:off + need]
            parts.append(chunk)
            need -= len(chunk)
            off = 0
        return b"".join(parts)

    def consume_output(self, n: int) -> None:
        """Mark ``n`` bytes of the queue as sent."""
        while n > 0 and self._out:
            entry = self._out[0]
            left = len(entry[0]) - self._out_off
            if n < left:
                self._out_off += n
                return
            n -= left
            self._out.popleft()
            self._out_off = 0
            self._forget(entry)

    def take_output(self) -> bytes:
        data = self.peek_output(self.output_size)
        self.consume_output(len(data))
        return data

    @property
    def timed_events(self) -> int:
        """Queued events that expire (unprivileged receivers)."""
        return self._timed_events

    def expire_events(self, now: Optional[float] = None) -> int:
        """Drop queued watch events whose timeout passed and of which
        nothing was sent yet; returns how many."""
        if not self._timed_events:
            return 0
        now = time.monotonic() if now is None else now
        keep: deque = deque()
        dropped = 0
        for i, entry in enumerate(self._out):
            deadline = entry[5]
            if deadline is not None and deadline <= now and not (i == 0 and self._out_off):
                self._forget(entry)
                dropped += 1
            else:
                keep.append(entry)
        if dropped:
            self._out = keep
            self.dropped_events += dropped
            log.info("%s: %d watch events timed out", self.name, dropped)
        return dropped

    # ---------------------------------------------------------- lifetime

    def _clear_output(self) -> None:
        while self._out:
            self._forget(self._out.popleft())
        self._out_off = 0

    def reset(self) -> None:
        """Forget partial input, queued output, watches and transactions
        (ring reconnection)."""
        self.parser.reset()
        self._in.clear()
        self._in_bytes = 0
        self._clear_output()
        self.store.reset_watches(self.client)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._in.clear()
            self._in_bytes = 0
            self._clear_output()
            self.store.remove_client(self.client)
